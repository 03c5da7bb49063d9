"""Bort at full size: a random Bort-config transformers model (LayerNorm and biases perturbed),
saved with transformers' save_pretrained, loaded by minibort; and minibort's save_pretrained loaded
by transformers. float32, within 1e-4. Plus the real amazon/bort check when its files are present.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from minibort import BortConfig, BortForMaskedLM, BortModel

torch = pytest.importorskip("torch", reason="needs torch (pip install torch==2.13.0 and the reference extra)")
transformers = pytest.importorskip("transformers", reason="needs transformers (reference extra)")

TOL = 1e-4


@pytest.fixture(scope="module")
def bort_dir(tmp_path_factory):
    """transformers' BertForMaskedLM with Bort's config, perturbed, written by save_pretrained."""
    torch.manual_seed(0)
    cfg = transformers.BertConfig(**{k: v for k, v in BortConfig.bort().to_dict().items()},
                                  attn_implementation="eager")
    tm = transformers.BertForMaskedLM(cfg).float().eval()
    with torch.no_grad():
        for name, p in tm.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    d = tmp_path_factory.mktemp("bort")
    tm.save_pretrained(d)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, cfg.vocab_size, size=(2, 40))
    ids[:, 0] = 0
    mask = np.ones_like(ids)
    mask[1, 25:] = 0
    ids[1, 25:] = 1
    with torch.no_grad():
        ti, tmask = torch.tensor(ids), torch.tensor(mask)
        hidden = tm.bert(ti, attention_mask=tmask).last_hidden_state.numpy()
        logits = tm(ti, attention_mask=tmask).logits.numpy()
    del tm
    return d, ids, mask, hidden, logits


def test_transformers_checkpoint_loads_and_matches(bort_dir):
    d, ids, mask, hidden, logits = bort_dir
    assert (d / "model.safetensors").exists()
    valid = mask.astype(bool)
    m = BortModel.from_pretrained(d)
    err_h = np.abs(m(ids, mask) - hidden)[valid].max()
    del m
    mlm = BortForMaskedLM.from_pretrained(d)
    out = mlm(ids, mask)
    assert out.dtype == np.float32
    err_l = np.abs(out - logits)[valid].max()
    print(f"Bort size float32: last_hidden_state max error {err_h:.2e}, logits {err_l:.2e} (tolerance {TOL:.0e})")
    assert err_h <= TOL and err_l <= TOL


def test_minibort_save_pretrained_loads_in_transformers(bort_dir, tmp_path):
    d, ids, mask, _hidden, logits = bort_dir
    mlm = BortForMaskedLM.from_pretrained(d)
    mlm.save_pretrained(tmp_path)
    del mlm
    tm = transformers.BertForMaskedLM.from_pretrained(tmp_path, attn_implementation="eager",
                                                      torch_dtype=torch.float32).eval()
    with torch.no_grad():
        out = tm(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    err = np.abs(out - logits)[mask.astype(bool)].max()
    print(f"minibort-saved checkpoint in transformers: logits max error {err:.2e}")
    assert err <= TOL


# The integration check from transformers' own Bort test, on the real weights.
REAL_IDS = [[0, 18077, 4082, 7804, 8606, 6195, 2457, 3321, 11, 10489, 16, 269, 2579, 328, 2]]
REAL_SLICE = [[-0.0349, 0.0436, -1.8654], [-0.6964, 0.0835, -1.7393], [-0.9819, 0.2956, -0.2868]]


def test_real_amazon_bort():
    """Set MINIBORT_BORT_DIR to a folder with amazon/bort's config.json and pytorch_model.bin (or a
    converted model.safetensors), e.g. the one `python -m minibort.download amazon/bort` writes."""
    d = os.environ.get("MINIBORT_BORT_DIR")
    if not d or not os.path.isdir(d):
        pytest.skip("the real amazon/bort weights are not here (the hub is unreachable from this machine): "
                    "set MINIBORT_BORT_DIR to a folder holding them to run this check")
    out = BortModel.from_pretrained(d)(np.array(REAL_IDS))
    assert out.shape == (1, 15, 1024)
    np.testing.assert_allclose(out[0, :3, :3], REAL_SLICE, atol=1e-4)
