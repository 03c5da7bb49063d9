"""minibort against the original GluonNLP 0.8.3 Bort, with no MXNet.

tests/fixtures/gluon/ was written by tests/reference/make_gluon_fixture.py (run it in an MXNet venv
to regenerate): a scaled-down Bort's `bort.params` as `save_parameters` wrote it, and GluonNLP's
hidden states and MLM logits at masked positions for the inputs stored beside them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from minibort import BortForMaskedLM, BortModel
from minibort.checkpoint import load_pretrained
from minibort.formats.mxnet import load_mxnet_params

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "gluon"
FORMAT_VERSION = 1
TOL = 1e-5


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "reference.npz", allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    assert int(data["format_version"]) == FORMAT_VERSION, (
        "tests/fixtures/gluon is out of date: re-run tests/reference/make_gluon_fixture.py in an MXNet venv")
    data["attention_mask"] = (np.arange(data["input_ids"].shape[1])[None] < data["valid_length"][:, None])
    return data


def report(name: str, err: float, tol: float) -> None:
    print(f"{name}: max abs error {err:.3g} (tolerance {tol:g})")
    assert err < tol, f"{name}: max abs error {err} exceeds {tol}"


def test_params_file_holds_gluon_names_and_tied_decoder():
    raw = load_mxnet_params(FIXTURE / "bort.params")
    assert "encoder.transformer_cells.0.attention_cell.proj_query.weight" in raw
    np.testing.assert_array_equal(raw["decoder.3.weight"], raw["word_embed.0.weight"])
    config, state = load_pretrained(FIXTURE)
    assert config.mlm_layer_norm_eps == 1e-12 and config.num_attention_heads == 8
    np.testing.assert_array_equal(state["bert.embeddings.token_type_embeddings.weight"],
                                  np.zeros((1, config.hidden_size), np.float32))


def test_hidden_states_match_gluonnlp(ref):
    model = BortModel.from_pretrained(FIXTURE)
    h = model(ref["input_ids"], ref["attention_mask"].astype(np.int64))
    valid = ref["attention_mask"]                  # GluonNLP computes padded rows too; compare the rest
    report("hidden states vs GluonNLP 0.8.3", float(np.abs(h - ref["hidden_states"])[valid].max()), TOL)


def test_mlm_logits_match_gluonnlp(ref):
    model = BortForMaskedLM.from_pretrained(FIXTURE)
    logits = model(ref["input_ids"], ref["attention_mask"].astype(np.int64), positions=ref["masked_positions"])
    assert logits.shape == ref["mlm_logits"].shape
    report("MLM logits at masked positions vs GluonNLP 0.8.3", float(np.abs(logits - ref["mlm_logits"]).max()), TOL)


def test_wrong_mlm_eps_is_caught(ref):
    """Negative control: the transformers default eps in the MLM head (1e-5, not 1e-12) must fail."""
    model = BortForMaskedLM.from_pretrained(FIXTURE, mlm_layer_norm_eps=1e-5)
    logits = model(ref["input_ids"], ref["attention_mask"].astype(np.int64), positions=ref["masked_positions"])
    err = float(np.abs(logits - ref["mlm_logits"]).max())
    print(f"MLM logits with eps 1e-5 instead of 1e-12: max abs error {err:.3g} (must exceed {TOL:g})")
    assert err > TOL
