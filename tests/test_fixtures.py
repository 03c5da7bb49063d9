"""minibort against transformers' recorded outputs (tests/fixtures/forward_*.npz), numpy only.

Each intermediate is compared on unpadded positions (padded query rows are garbage in both), with an
absolute tolerance of 1e-10 in float64 and 1e-5 in float32; a failure names the intermediate.
To regenerate the fixtures: python tests/reference/make_fixtures.py (needs the reference extra).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES

from minibort import BortConfig, BortForMaskedLM, BortModel

FORMAT_VERSION = 1
TOL = {"float64": 1e-10, "float32": 1e-5}
NAMES = sorted(p.stem for p in FIXTURES.glob("forward_*.npz"))


def load_fixture(name: str):
    data = np.load(FIXTURES / f"{name}.npz")
    meta = json.loads(str(data["meta"]))
    assert meta["format_version"] == FORMAT_VERSION, (
        f"{name}.npz has format {meta['format_version']}, the tests read {FORMAT_VERSION}: "
        "re-run tests/reference/make_fixtures.py")
    weights = {k[len("weights/"):]: data[k] for k in data.files if k.startswith("weights/")}
    return data, meta, weights


def test_fixtures_exist():
    assert NAMES == ["forward_odd", "forward_small"], f"found {NAMES}"


def test_fixture_records_versions():
    for name in NAMES:
        _, meta, _ = load_fixture(name)
        assert meta["torch"] and meta["transformers"], name


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", NAMES)
def test_every_intermediate_matches_transformers(name, dtype):
    data, meta, weights = load_fixture(name)
    config = BortConfig(**meta["config"])
    ids, mask = data["input_ids"], data["attention_mask"]
    valid = mask.astype(bool)                                   # (B, T) unpadded positions
    model = BortModel(config, weights, dtype=dtype)
    mine = model.intermediates(ids, mask)
    mine["logits"] = BortForMaskedLM(config, weights, dtype=dtype)(ids, mask)
    expected = {k[len(dtype) + 1:]: data[k] for k in data.files if k.startswith(dtype + "/")}
    assert set(mine) == set(expected), set(mine) ^ set(expected)
    report = []
    for key in sorted(expected):
        got, want = mine[key], expected[key]
        assert got.dtype == np.dtype(dtype), f"{key}: minibort computed {got.dtype}, asked for {dtype}"
        assert got.shape == want.shape, f"{key}: shape {got.shape} != {want.shape}"
        if key.endswith("attention_probs"):                     # (B, N, T, T): unpadded query rows
            err = np.abs(got - want).transpose(0, 2, 1, 3)[valid].max()
        else:                                                   # (B, T, ...)
            err = np.abs(got - want)[valid].max()
        report.append(f"{key}: max error {err:.2e} (tolerance {TOL[dtype]:.0e})")
        assert err <= TOL[dtype], f"{name} {dtype} {key}: max error {err:.3e} > {TOL[dtype]:.0e}"
    print("\n".join(report))


def test_attention_to_padding_is_zero():
    data, meta, weights = load_fixture("forward_small")
    out = BortModel(BortConfig(**meta["config"]), weights, dtype="float64")(
        data["input_ids"], data["attention_mask"], output_attentions=True)
    pad_keys = ~data["attention_mask"].astype(bool)             # (B, T)
    for probs in out["attentions"]:                             # (B, N, T, T), keys on the last axis
        at_pad = np.broadcast_to(pad_keys[:, None, None, :], probs.shape)
        assert np.all(probs[at_pad] == 0.0)
