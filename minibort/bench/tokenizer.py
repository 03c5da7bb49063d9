"""Tokenizer benchmark: minibort vs the Rust `tokenizers` package vs transformers 4.57's pure-Python
RobertaTokenizer, on Python's own docs (`pydoc_data.topics`), one line per call; plus load and training time.

    python -m minibort.bench.tokenizer [--vocab-dir amazon/bort] [--hf457-python V/bin/python] [--train]

transformers 5.x has no pure-Python RoBERTa tokenizer, so 4.57 runs in its own venv V, as a subprocess;
make one with `python3 -m venv V && V/bin/pip install transformers==4.57.6 tokenizers numpy regex`
(no torch needed). Whatever cannot be measured (no such venv, no `tokenizers`) is reported as such.

Every tokenizer starts cold (fresh object, empty word cache); pass 1 is "cold", the best of the
following passes is "warm" (the steady state of a long run: all three tokenizers cache words).
The ids of every line are checked to agree across tokenizers.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from minibort.bpe_train import train_bpe
from minibort.tokenizer import Tokenizer

# Run by the transformers-4.57 python: same protocol as `time_passes` below, results as JSON on stdout.
HF457_SCRIPT = r"""
import hashlib, json, sys, time
vocab, merges, units_file, passes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
units = json.load(open(units_file, encoding="utf-8"))
import transformers
from transformers import RobertaTokenizer
t = time.perf_counter()
tok = RobertaTokenizer(vocab, merges)
load = time.perf_counter() - t
times, digest = [], None
for _ in range(passes):
    t = time.perf_counter()
    ids = [tok.encode(u) for u in units]
    times.append(time.perf_counter() - t)
    digest = digest or hashlib.sha256(json.dumps(ids).encode()).hexdigest()
print(json.dumps({"version": transformers.__version__, "load": load, "times": times, "digest": digest}))
"""


def topics_text() -> str:
    """Python's pydoc topics (the text of `help('topics')`): English prose with some code."""
    from pydoc_data.topics import topics
    return "".join(topics.values())


def python_docs_corpus(mb: float) -> list[str]:
    """About `mb` MB of Python's docs: the pydoc topics, then the standard library's docstrings."""
    texts, size = [topics_text()], len(topics_text().encode("utf-8"))
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if size >= mb * 1e6:
            break
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    texts.append(doc + "\n")
                    size += len(doc.encode("utf-8")) + 1
    return texts


def digest(ids: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()


def time_passes(encode, units: list[str], passes: int) -> tuple[list[float], str]:
    """Seconds per pass over `units` (one call per unit), and a digest of the ids of the first pass."""
    times, first = [], None
    for _ in range(passes):
        t = time.perf_counter()
        ids = [encode(u) for u in units]
        times.append(time.perf_counter() - t)
        first = first or digest([list(x) for x in ids])
    return times, first


def rust_roberta(vocab_file: str, merges_file: str, add_prefix_space: bool = False):
    """The Rust tokenizer as transformers builds RoBERTa's: ByteLevel BPE, RobertaProcessing, all the
    specials added, <mask> with lstrip (the reference tests compare against this one too). Offsets are
    not trimmed, so they can be compared exactly."""
    import tokenizers
    from tokenizers import AddedToken, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    tok = tokenizers.Tokenizer(BPE.from_file(vocab_file, merges_file))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=add_prefix_space,
                                                      trim_offsets=False)
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", AddedToken("<mask>", lstrip=True)])
    return tok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m minibort.bench.tokenizer", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--vocab-dir", default="amazon/bort",
                   help="the vocabulary: a hub id (default: %(default)s, RoBERTa's 50265 tokens), a folder "
                        "holding vocab.json + merges.txt, or bort-tiny")
    p.add_argument("--hf457-python", default=os.environ.get("MINIBORT_HF457_PYTHON"),
                   help="the python of a venv with transformers 4.57 (default: $MINIBORT_HF457_PYTHON); make "
                        "one with: python3 -m venv V && V/bin/pip install transformers==4.57.6 tokenizers "
                        "numpy regex, then pass V/bin/python")
    p.add_argument("--passes", type=int, default=3, help="passes over the text per tokenizer (1 cold + warm)")
    p.add_argument("--copies", type=int, default=1, help="concatenate the topics text this many times")
    p.add_argument("--unit", choices=["line", "paragraph"], default="line", help="what one call encodes")
    p.add_argument("--train", action="store_true", help="also time train_bpe")
    p.add_argument("--train-vocab", type=int, default=4096, help="vocab size for --train")
    p.add_argument("--train-mb", type=float, default=3.0, help="MB of Python docs for --train")
    args = p.parse_args(argv)
    from minibort.checkpoint import CheckpointError, resolve
    try:
        folder = resolve(args.vocab_dir, need="tokenizer")
    except (CheckpointError, OSError) as e:          # OSError: HubError, offline without a cached copy
        print(f"error: cannot find the vocabulary {args.vocab_dir!r}: {e}", file=sys.stderr)
        return 1
    files = [str(Path(folder) / n) for n in ("vocab.json", "merges.txt")]

    text = topics_text() * args.copies
    units = [u for u in (text.splitlines() if args.unit == "line" else text.split("\n\n")) if u.strip()]
    mb = sum(len(u.encode("utf-8")) for u in units) / 1e6
    print(f"text: pydoc_data.topics x{args.copies}, {mb:.3f} MB in {len(units)} {args.unit}s "
          f"(Python {sys.version.split()[0]}); {args.passes} passes each, one call per {args.unit}")

    # load time: the first load, then the best of 5 (file already in the OS cache)
    # (CPU time too: on a shared machine it is what a busy neighbour changes least)
    loads, cpu = [], []
    for _ in range(6):
        t, c = time.perf_counter(), time.process_time()
        tok = Tokenizer.from_files(*files)
        loads.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    print(f"\nload of the {len(tok)}-entry vocab: minibort first {loads[0]:.3f} s (CPU {cpu[0]:.3f} s), "
          f"best of 5 {min(loads[1:]):.3f} s (CPU {min(cpu[1:]):.3f} s)")

    rows = {}   # name -> (cold MB/s, warm MB/s, digest)

    def record(name: str, times: list[float], dig: str | None) -> None:
        warm = min(times[1:]) if len(times) > 1 else times[0]
        rows[name] = (mb / times[0], mb / warm, dig)

    times, dig = time_passes(tok.encode, units, args.passes)
    record("minibort (pure Python)", times, dig)

    try:
        import tokenizers
    except ImportError:
        print("not measured: Rust `tokenizers` (not importable here)")
    else:
        t = time.perf_counter()
        rust = rust_roberta(*files)
        rust_load = time.perf_counter() - t
        print(f"load: Rust tokenizers {tokenizers.__version__} {rust_load:.3f} s")
        times, dig = time_passes(lambda u: rust.encode(u).ids, units, args.passes)
        record(f"Rust tokenizers {tokenizers.__version__}, one at a time", times, dig)
        rust = rust_roberta(*files)
        batched = []
        for _ in range(args.passes):
            t = time.perf_counter()
            encodings = rust.encode_batch(units)
            batched.append(time.perf_counter() - t)
        record(f"Rust tokenizers, encode_batch ({os.cpu_count()} cores)", batched,
               digest([e.ids for e in encodings]))

    if not args.hf457_python:
        print("not measured: transformers 4.57 pure-Python RobertaTokenizer (pass --hf457-python)")
    elif not Path(args.hf457_python).exists():
        print(f"not measured: transformers 4.57 ({args.hf457_python} does not exist)")
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
            json.dump(units, f)
        try:
            env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
            run = subprocess.run([args.hf457_python, "-c", HF457_SCRIPT, *files, f.name, str(args.passes)],
                                 check=False, capture_output=True, text=True, env=env)
        finally:
            os.remove(f.name)
        if run.returncode != 0:
            print(f"not measured: transformers 4.57 subprocess failed:\n{run.stderr[-2000:]}")
        else:
            out = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"load: transformers {out['version']} RobertaTokenizer {out['load']:.3f} s")
            record(f"transformers {out['version']} RobertaTokenizer (pure Python)", out["times"], out["digest"])

    ours = rows["minibort (pure Python)"]
    print(f"\n{'':58s} {'cold MB/s':>10s} {'warm MB/s':>10s}  minibort is (warm)  ids")
    for name, (cold, warm, dig) in rows.items():
        same = "same" if dig == ours[2] else "DIFFERENT"
        print(f"{name:58s} {cold:10.2f} {warm:10.2f}  {ours[1] / warm:8.2f}x          {same}")

    if args.train:
        corpus = python_docs_corpus(args.train_mb)
        size = sum(len(t.encode("utf-8")) for t in corpus) / 1e6
        t = time.perf_counter()
        trained = train_bpe(corpus, args.train_vocab)
        took = time.perf_counter() - t
        print(f"\ntrain_bpe: vocab {len(trained)} ({len(trained.merges)} merges) on {size:.2f} MB of Python docs "
              f"({len(corpus)} texts) in {took:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
