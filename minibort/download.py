"""Fetch Bort's weights and tokenizer files, and write a memory-mappable model.safetensors copy.

    python -m minibort.download amazon/bort [--dtype float32|float16] [--out DIR]
    python -m minibort.download original    [--dtype float32|float16] [--out DIR]

`amazon/bort` fetches config.json, vocab.json, merges.txt and pytorch_model.bin (255 MB, float16)
from the hub (`HF_ENDPOINT` names a mirror) into the cache (see `minibort.hub`), then writes
model.safetensors in `--dtype` next to them (by default in the cache folder of the repository, so
that `BortModel.from_pretrained("amazon/bort")` then memory-maps it instead of converting the .bin
each time). The copy drops what the model does not use: the `position_ids` buffer and the hub's
random decoder (`cls.predictions.decoder.*`: the decoder is tied to the word embeddings). Note that
amazon/bort's MLM head on the hub was never trained; config.json in `--out` records that, so that
loading it warns.

`original` fetches the original MXNet release, https://alexa-saif-bort.s3.amazonaws.com/bort.params
(`--url` to use another address), with amazon/bort's tokenizer files beside it, and converts it
the same way, keeping Bort's own MLM head (`cls.predictions.transform.*`, `cls.predictions.bias`)
with its LayerNorm eps of 1e-12 in config.json. Default folder: `<cache>/_original` (no hub
owner's name starts with "_", so it never meets a repository's cache folder).

Every file is written atomically with the user's umask permissions (`minibort._files`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from . import checkpoint
from ._files import write_bytes_atomic
from .checkpoint import (
    GLUON_MLM_LAYER_NORM_EPS,
    UNTRAINED_MLM_HEAD_KEY,
    config_from_state_dict,
    decoder_is_untied,
    load_state_dict,
)
from .config import BortConfig
from .formats.safetensors import save_file
from .hub import HubError, cache_root, download_url, hf_hub_download, sha256_file, write_sidecar

ORIGINAL_URL = "https://alexa-saif-bort.s3.amazonaws.com/bort.params"
TOKENIZER_FILES = ("vocab.json", "merges.txt")
OPTIONAL_FILES = ("special_tokens_map.json", "tokenizer_config.json")


def clean_state_dict(state: dict[str, np.ndarray], dtype: np.dtype) -> dict[str, np.ndarray]:
    """`checkpoint.clean_state_dict` (the one cleanup rule), then floating tensors cast to `dtype`."""
    return {name: value.astype(dtype) if value.dtype.kind == "f" else value
            for name, value in checkpoint.clean_state_dict(state).items()}


def copy_file(source: str | os.PathLike, dest: Path) -> None:
    """Copy a (small) tokenizer or config file atomically."""
    write_bytes_atomic(dest, Path(source).read_bytes())


def write_safetensors(state: dict[str, np.ndarray], path: Path, source: str) -> None:
    """Write model.safetensors with a sidecar (size, sha256), as the hub cache does for its files."""
    save_file(state, path, metadata={"format": "pt", "converted_by": "minibort.download", "source": source})
    write_sidecar(path, path.stat().st_size, sha256_file(path), source=source)


def fetch_hub(repo_id: str, revision: str, dtype: np.dtype, out: Path | None) -> Path:
    """amazon/bort (or any BERT repo with pytorch_model.bin): fetch and convert. Returns the model folder."""
    files = {name: hf_hub_download(repo_id, name, revision) for name in ("config.json", *TOKENIZER_FILES)}
    for name in OPTIONAL_FILES:                       # nice to have; minibort's tokenizer does without them
        try:
            files[name] = hf_hub_download(repo_id, name, revision)
        except HubError:
            pass
    weights = hf_hub_download(repo_id, "pytorch_model.bin", revision)
    state = load_state_dict(weights, dtype=None)
    untrained = decoder_is_untied(state) or repo_id == "amazon/bort"
    cache_dir = Path(weights).parent
    out = cache_dir if out is None else out
    out.mkdir(parents=True, exist_ok=True)
    config = BortConfig.from_json(files["config.json"])
    if out != cache_dir:                          # the cache keeps the hub's files untouched
        for name, path in files.items():
            if name != "config.json":
                copy_file(path, out / name)
        if untrained:
            config.extra[UNTRAINED_MLM_HEAD_KEY] = True
        config.to_json(out / "config.json")
    write_safetensors(clean_state_dict(state, dtype), out / "model.safetensors",
                      f"{repo_id}@{revision}/pytorch_model.bin")
    return out


def fetch_original(url: str, tokenizer_repo: str, dtype: np.dtype, out: Path | None) -> Path:
    """The original MXNet bort.params with its trained MLM head: fetch and convert. Returns the folder."""
    out = cache_root() / "_original" if out is None else out
    out.mkdir(parents=True, exist_ok=True)
    params = out / "bort.params"
    if not params.is_file():
        try:
            download_url(url, params)
        except HubError as e:
            raise HubError(f"{e} To work offline, download bort.params by hand into {out}/ and run this "
                           "again.", url=url, status=e.status) from None
    for name in TOKENIZER_FILES:
        copy_file(hf_hub_download(tokenizer_repo, name), out / name)
    state = load_state_dict(params, dtype=None)   # Gluon names mapped to transformers' ones
    config = config_from_state_dict(state, mlm_layer_norm_eps=GLUON_MLM_LAYER_NORM_EPS)
    config.architectures = ["BertForMaskedLM"]
    config.to_json(out / "config.json")
    write_safetensors(clean_state_dict(state, dtype), out / "model.safetensors", url)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: `python -m minibort.download {REPO_ID | original} [--dtype] [--out] [--revision] [--url]`."""
    p = argparse.ArgumentParser(prog="python -m minibort.download", description=__doc__.split("\n\n")[0])
    p.add_argument("source", nargs="?", default="amazon/bort",
                   help="a hub repository id (default amazon/bort), or 'original' for the MXNet release")
    p.add_argument("--original", action="store_true", help="same as the source 'original'")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="dtype of the model.safetensors copy (default float32)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the converted model (default: the repository's cache folder, or "
                        "<cache>/_original)")
    p.add_argument("--revision", default="main", help="hub revision (branch, tag or commit)")
    p.add_argument("--url", default=ORIGINAL_URL, help="where to fetch bort.params from (with 'original')")
    p.add_argument("--tokenizer-repo", default="amazon/bort",
                   help="hub repository for vocab.json and merges.txt (with 'original')")
    args = p.parse_args(argv)
    dtype = np.dtype(args.dtype)
    try:
        if args.original or args.source == "original":
            out = fetch_original(args.url, args.tokenizer_repo, dtype, args.out)
        else:
            out = fetch_hub(args.source, args.revision, dtype, args.out)
    except (HubError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{out}: config.json, {', '.join(TOKENIZER_FILES)}, model.safetensors "
          f"({os.path.getsize(out / 'model.safetensors') / 2 ** 20:.1f} MiB, {args.dtype})")
    print(f'load it with: minibort.BortModel.from_pretrained("{out}")')
    return 0


if __name__ == "__main__":
    sys.exit(main())
