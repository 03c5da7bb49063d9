"""The package reads as a table of contents: no import circles, no module importing one that comes
later in the reading order below, and no module much over 600 lines. Imports inside functions
count too (they are how a circle hides)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minibort"

# The reading order, lowest first. A module may import only modules of its own or an earlier row.
LAYERS = [
    ["_files", "_memory", "_threads", "_watchdog"],
    ["layers", "config", "inputs"],
    ["formats", "formats.common", "formats.safetensors", "formats.torch_zip", "formats.mxnet"],
    ["hub"],
    ["checkpoint"],
    ["bpe", "tokenizer", "bpe_train"],
    ["model"],
    ["optim", "trainer"],
    ["corpus", "masking", "pretrain"],
    ["data", "metrics", "bow", "batches"],
    ["finetune"],
    ["generate"],
    ["neighbours", "grids", "agora_models", "agora"],
    ["download", "tutorials"],
    ["__init__", "__main__"],
]
RANK = {m: i for i, row in enumerate(LAYERS) for m in row}
MAX_LINES = 650


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "bench" not in p.parts}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The minibort modules `path` imports, at any depth of the file (functions included)."""
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" and "." in name else name
    if path.name != "__init__.py" and "." not in name:
        package = ""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("minibort"):
                mod = node.module.removeprefix("minibort").lstrip(".")
            else:
                continue
            targets = [f"{mod}.{a.name}".lstrip(".") for a in node.names] + [mod]
        elif isinstance(node, ast.Import):
            targets = [a.name.removeprefix("minibort").lstrip(".") for a in node.names
                       if a.name.startswith("minibort")]
        for t in targets:
            while t and t not in known:
                t = t.rsplit(".", 1)[0] if "." in t else ""
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods) | {"weights"}
    return {name: imports_of(name, path, known) - {"weights"} for name, path in mods.items()}


def test_every_module_has_a_place_in_the_reading_order():
    missing = sorted(set(modules()) - set(RANK))
    assert missing == [], f"add these modules to LAYERS (and to the README's reading order): {missing}"


def test_no_import_circles():
    g = graph()
    cycles = []

    def visit(node, stack, seen):
        for nxt in g.get(node, ()):
            if nxt in stack:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in seen:
                seen.add(nxt)
                visit(nxt, stack + [nxt], seen)

    for start in g:
        visit(start, [start], {start})
    assert cycles == [], "import circles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_no_module_imports_a_later_one():
    upward = [f"{m} imports {t}" for m, targets in graph().items() for t in targets
              if m in RANK and t in RANK and RANK[t] > RANK[m] and m not in ("__init__", "__main__")]
    assert upward == [], "upward imports:\n  " + "\n  ".join(sorted(upward))


def test_no_module_is_much_over_600_lines():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (lines): {long}"
