"""Write tests/fixtures/gluon/: a scaled-down Bort built and run by the original GluonNLP 0.8.3.

Runs only in a separate MXNet environment (MXNet needs an old NumPy):

    python3 -m venv mxvenv            # any folder outside the checkout
    mxvenv/bin/pip install numpy==1.23.5 mxnet==1.9.1 gluonnlp==0.8.3
    mxvenv/bin/python tests/reference/make_gluon_fixture.py

The model is built as alexa/bort's `bort/bort.py` builds Bort (bort-facts section 3): a post-LN
`BERTEncoder` with exact GELU and LayerNorm eps 1e-5 inside a `BERTModel` without token types or
pooler, whose MLM decoder (Dense -> GELU -> LayerNorm eps 1e-12 -> Dense tied to the word
embeddings) is kept. Shapes are Bort's scaled down: 4 layers and 8 heads as in Bort, width 32,
FFN 24 (narrower than the width, as in Bort), vocabulary 300, 32 positions. Every LayerNorm gamma,
beta and bias is random (not 1 / 0), so the test catches a dropped bias or LayerNorm affine.

Files written (no pickles anywhere):
- bort.params: `net.save_parameters`, the same NDArray-list format as the real bort.params;
- config.json: the matching BortConfig (transformers' field names, mlm_layer_norm_eps 1e-12);
- reference.npz: input_ids (B, T), valid_length (B,), masked_positions (B, P), GluonNLP's
  hidden_states (B, T, H) and mlm_logits (B, P, V), float32, plus format_version and versions.
tests/test_gluon_fixture.py reads them with no MXNet.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")                # MXNet 1.9 warns about NumPy aliases and optimizers
import gluonnlp
import mxnet as mx
from gluonnlp.model.bert import BERTEncoder, BERTModel

FORMAT_VERSION = 1
OUT = Path(__file__).resolve().parents[1] / "fixtures" / "gluon"
UNITS, FFN, LAYERS, HEADS, VOCAB, MAX_LEN = 32, 24, 4, 8, 300, 32
B, T, P = 2, 24, 5


def build() -> BERTModel:
    """Bort's GluonNLP construction (alexa/bort bort/bort.py), scaled down."""
    encoder = BERTEncoder(attention_cell="multi_head", num_layers=LAYERS, units=UNITS, hidden_size=FFN,
                          max_length=MAX_LEN, num_heads=HEADS, scaled=True, dropout=0.1, use_residual=True,
                          activation="gelu", layer_norm_eps=1e-5)
    net = BERTModel(encoder, vocab_size=VOCAB, token_type_vocab_size=None, units=UNITS, embed_size=UNITS,
                    embed_dropout=0.1, word_embed=None, use_pooler=False, use_decoder=True,
                    use_classifier=False, use_token_type_embed=False)
    net.initialize(mx.init.Normal(0.1))
    return net


def main() -> None:
    mx.random.seed(0)
    rng = np.random.default_rng(0)
    net = build()
    ids = rng.integers(0, VOCAB, (B, T))
    valid_length = np.array([T, 17])
    masked = np.stack([rng.choice(v, P, replace=False) for v in valid_length])
    net(mx.nd.array(ids), [], mx.nd.array(valid_length), mx.nd.array(masked))   # creates the parameters

    # Random LayerNorm affines and biases (initialisers would give 1 and 0).
    for name, p in net._collect_params_with_prefix().items():
        shape = p.shape
        if name.endswith("gamma"):
            p.set_data(mx.nd.array(1.0 + rng.normal(0, 0.2, shape)))
        elif name.endswith(("beta", "bias")):
            p.set_data(mx.nd.array(rng.normal(0, 0.2, shape)))

    # Inference (no autograd.record): dropout is off.
    hidden, logits = net(mx.nd.array(ids), [], mx.nd.array(valid_length, dtype="float32"),
                         mx.nd.array(masked, dtype="float32"))
    OUT.mkdir(parents=True, exist_ok=True)
    net.save_parameters(str(OUT / "bort.params"))
    config = {"model_type": "bert", "architectures": ["BertForMaskedLM"], "vocab_size": VOCAB,
              "hidden_size": UNITS, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "intermediate_size": FFN, "hidden_act": "gelu", "max_position_embeddings": MAX_LEN,
              "type_vocab_size": 1, "layer_norm_eps": 1e-5, "mlm_layer_norm_eps": 1e-12, "pad_token_id": 1}
    (OUT / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    np.savez(OUT / "reference.npz", format_version=np.array(FORMAT_VERSION),
             mxnet_version=np.array(mx.__version__), gluonnlp_version=np.array(gluonnlp.__version__),
             input_ids=ids.astype(np.int64), valid_length=valid_length.astype(np.int64),
             masked_positions=masked.astype(np.int64),
             hidden_states=hidden.asnumpy().astype(np.float32), mlm_logits=logits.asnumpy().astype(np.float32))
    names = sorted(net._collect_params_with_prefix())
    print(f"wrote {OUT}: {len(names)} parameters ({names[0]} ... {names[-1]}), "
          f"hidden {hidden.shape}, logits {logits.shape}")


if __name__ == "__main__":
    main()
