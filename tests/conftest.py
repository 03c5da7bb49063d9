"""Shared test set-up.

The reference tier (tests that compare with torch, transformers, safetensors or tokenizers) skips
where those packages are absent, saying why. CI sets MINIBORT_REQUIRE_REFERENCE=1: there a missing
reference package, or any test skipped for lack of one, fails the run instead of passing quietly.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REFERENCE_PACKAGES = ("torch", "transformers", "safetensors", "tokenizers")
REQUIRE_REFERENCE = os.environ.get("MINIBORT_REQUIRE_REFERENCE") == "1"
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"          # ../shared beside the checkout (CI has it; a user's clone does not)
FIXTURES = ROOT / "tests" / "fixtures"

_reference_skips: list[str] = []


def pytest_configure(config):
    if REQUIRE_REFERENCE:
        missing = [p for p in REFERENCE_PACKAGES if importlib.util.find_spec(p) is None]
        if missing:
            raise pytest.UsageError(
                f"MINIBORT_REQUIRE_REFERENCE=1 but {', '.join(missing)} cannot be imported: install "
                "torch==2.13.0 and the project's `reference` extra")


def pytest_runtest_logreport(report):
    if REQUIRE_REFERENCE and report.skipped:
        reason = str(report.longrepr)
        if any(p in reason for p in REFERENCE_PACKAGES) or "hub-mirror" in reason or "shared" in reason:
            _reference_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if REQUIRE_REFERENCE and _reference_skips:
        print("\nCI requires the reference tier, but these tests skipped:\n  " + "\n  ".join(_reference_skips))
        session.exitstatus = 1


# Environment variables that change where minibort looks or what it may do. Many users export some
# of them (HF_HUB_OFFLINE=1 on machines without a network); every test starts with none of them set
# and sets what it needs with monkeypatch, so the suite gives the same result in any shell.
USER_ENVIRONMENT = ("HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_TOKEN", "MINIBORT_CACHE", "XDG_CACHE_HOME",
                    "MINIBORT_HUB_TIMEOUT", "MINIBORT_HUB_DEADLINE", "MINIBORT_HUB_MIN_RATE",
                    "TRANSFORMERS_OFFLINE")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch, tmp_path_factory):
    """Clear the user's hub and cache settings; point the cache at a fresh folder of this session."""
    for name in USER_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MINIBORT_CACHE", str(tmp_path_factory.getbasetemp() / "minibort-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")       # the discard port: nothing answers


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (it sits beside the checkout in CI and on the team's machines)")
    return SHARED


@pytest.fixture(scope="session")
def mirror_dir(shared_dir) -> Path:
    d = shared_dir / "hub-mirror" / "amazon" / "bort" / "resolve" / "main"
    if not d.is_dir():
        pytest.skip(f"{d} is absent: the hub-mirror holds amazon/bort's config and tokenizer files")
    return d
