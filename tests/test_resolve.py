"""checkpoint.resolve, the one owner of "a name -> a model folder": the embedded bort-tiny (installed
or in a clone), folders, folders without a tokenizer, hub ids offline and online, and clear errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from minibort import BortForMaskedLM, BortForSequenceClassification, BortModel, CheckpointError, Tokenizer
from minibort.checkpoint import embedded_dir, resolve
from minibort.hub import HubError

ROOT = Path(__file__).resolve().parents[1]
TINY = embedded_dir("bort-tiny")
pytestmark = pytest.mark.skipif(not (TINY / "model.safetensors").exists(), reason="weights/bort-tiny is absent")


def test_embedded_name_loads_the_shipped_model_in_python():
    for cls in (BortModel, BortForMaskedLM, BortForSequenceClassification):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                 # the classifier's head is new: it warns so
            model = cls.from_pretrained("bort-tiny")
        assert model.config.hidden_size == 256
    tok = Tokenizer.from_pretrained("bort-tiny")
    assert tok.vocab_size == 4096
    direct = BortForMaskedLM.from_pretrained(str(TINY))
    named = BortForMaskedLM.from_pretrained("bort-tiny")
    ids = np.array([tok.encode("Return the <mask> of items.")])
    assert np.array_equal(direct(ids), named(ids))


def test_embedded_models_are_found_in_a_clone_without_the_installed_package(tmp_path):
    """In a source checkout `minibort.weights` does not exist (pyproject maps it only when installing):
    the resolver then uses the weights/ folder beside minibort/."""
    code = ("import sys; sys.modules['minibort.weights'] = None\n"
            "from minibort import BortForMaskedLM, Tokenizer\n"
            "from minibort.checkpoint import embedded_root\n"
            "m = BortForMaskedLM.from_pretrained('bort-tiny'); t = Tokenizer.from_pretrained('bort-tiny')\n"
            "print(embedded_root().name, m.config.hidden_size, t.vocab_size)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["weights", "256", "4096"]


def test_a_folder_saved_without_its_tokenizer_says_how_to_add_one(tmp_path):
    model = BortForMaskedLM.from_pretrained("bort-tiny")
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match=r"no tokenizer .*tok\.save_pretrained"):
        Tokenizer.from_pretrained(tmp_path / "m")
    r = subprocess.run([sys.executable, "-m", "minibort.generate", "a <mask>", "--model", str(tmp_path / "m")],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "no tokenizer" in r.stderr and "save_pretrained" in r.stderr
    Tokenizer.from_pretrained("bort-tiny").save_pretrained(tmp_path / "m")
    assert Tokenizer.from_pretrained(tmp_path / "m").vocab_size == 4096


@pytest.mark.parametrize("name,message", [
    ("./no/such/folder", "no such folder"),
    ("/no/such/folder", "no such folder"),
    ("a/b/c", "no such folder"),
    ("bort-tny", "unknown model 'bort-tny'"),
    ("not a name", "unknown model"),
])
def test_bad_names_are_refused_clearly(name, message):
    with pytest.raises(CheckpointError, match=message):
        resolve(name)


def test_a_file_is_not_a_folder(tmp_path):
    f = tmp_path / "model.safetensors"
    shutil.copy(TINY / "model.safetensors", f)
    with pytest.raises(CheckpointError, match="pass the folder"):
        resolve(f)


def _cache_repo(cache: Path, repo: str, files: dict[str, Path]) -> Path:
    folder = cache / repo / "main"
    folder.mkdir(parents=True)
    for name, src in files.items():
        shutil.copy(src, folder / name)
    return folder


def test_offline_uses_a_cached_pytorch_model_bin_when_no_safetensors_was_ever_seen(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 with only pytorch_model.bin cached: the model loads from the cache instead of
    failing for want of model.safetensors."""
    from minibort.formats.torch_zip import save_torch_zip
    cache = tmp_path / "cache"
    folder = _cache_repo(cache, "someone/bort-bin", {n: TINY / n for n in ("config.json", "vocab.json", "merges.txt")})
    model = BortForMaskedLM.from_pretrained("bort-tiny")
    save_torch_zip(model.state_dict(), folder / "pytorch_model.bin")
    monkeypatch.setenv("MINIBORT_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = BortForMaskedLM.from_pretrained("someone/bort-bin")
    tok = Tokenizer.from_pretrained("someone/bort-bin")
    ids = np.array([tok.encode("Return the <mask> of items.")])
    np.testing.assert_array_equal(loaded(ids), model(ids))


def test_offline_with_nothing_cached_names_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIBORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError) as e:
        BortForMaskedLM.from_pretrained("someone/absent")
    assert str(tmp_path / "cache") in str(e.value)
    assert "config.json" in str(e.value)


def test_unreachable_endpoint_falls_back_to_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    _cache_repo(cache, "someone/tiny", {n: TINY / n for n in ("config.json", "model.safetensors",
                                                               "vocab.json", "merges.txt")})
    monkeypatch.setenv("MINIBORT_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")       # nothing listens there
    assert BortForMaskedLM.from_pretrained("someone/tiny").config.hidden_size == 256
    assert Tokenizer.from_pretrained("someone/tiny").vocab_size == 4096


def test_original_release_folder_borrows_amazon_borts_vocabulary(tmp_path, monkeypatch, mirror_dir):
    """A folder with bort.params alone: its tokenizer is amazon/bort's (RoBERTa's), said in a warning."""
    (tmp_path / "orig").mkdir()
    (tmp_path / "orig" / "bort.params").write_bytes(b"")
    cache = tmp_path / "cache"
    _cache_repo(cache, "amazon/bort", {n: mirror_dir / n for n in ("vocab.json", "merges.txt")})
    monkeypatch.setenv("MINIBORT_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.warns(UserWarning, match="amazon/bort's vocabulary"):
        tok = Tokenizer.from_pretrained(tmp_path / "orig")
    assert tok.encode("Hello world") == [0, 31414, 232, 2]


def test_the_notebooks_and_commands_do_not_find_models_on_their_own():
    """Only checkpoint.py knows where models live: nothing else reads minibort.weights' path."""
    users = []
    for path in list((ROOT / "minibort").rglob("*.py")) + list((ROOT / "tutorials").glob("*.ipynb")):
        text = path.read_text(encoding="utf-8")
        if "minibort.weights" in text and path.name != "checkpoint.py":
            users.append(os.path.relpath(path, ROOT))
    assert users == []
