"""A pretraining corpus from Python's own words: the standard library's docstrings and, where
installed, Python's documentation.

Three kinds of document, gathered without importing anything but `pydoc_data.topics` (a plain dict):

1. the documentation topics `pydoc_data.topics.topics` (what `help("with")` shows), one document each
   ("topic:<key>");
2. the docstrings of the pure-Python standard-library modules, one document per module ("module:<name>"):
   the module's docstring, then every class's, function's and method's, in source order. Modules are
   found with `pkgutil.iter_modules` on the folder `sysconfig.get_paths()["stdlib"]` (no import) and
   parsed with `ast` (importing a module runs its code; parsing does not);
3. if Debian's `python3.X-doc` package is installed (`apt-get install python3.11-doc`), the reST
   sources of docs.python.org's tutorial, library and language reference, HOWTOs, FAQ and glossary,
   one document per page ("doc:<path>"), with the markup stripped by the rules stated above
   `DOCS_SECTIONS`. About 3x the text of 1 and 2. Without the package the corpus is 1 and 2 alone,
   byte for byte what it was before this source existed, and the command says how to add it.

Everything is deterministic: modules and pages are visited in sorted order, tests, GUI code, vendored
packages and installers are skipped (`SKIP`), whitespace is normalised (each paragraph becomes one
line with single spaces), and each document goes to the training or held-out split by a hash of its
name (`heldout_fraction` of the names), so a document never straddles the split; `split_documents`
states the further rules that keep held-out text out of the training split.

The output folder holds `train.txt` and `heldout.txt` (one paragraph per line, a blank line between
documents) and `corpus.json` (sizes, the sha256 of both files, the Python version, the sources with
the documentation sources' own checksum). The checksum depends on the Python version, since each
release edits its docstrings and documentation.

    python -m minibort.corpus --out /tmp/corpus              # with the documentation if installed
    python -m minibort.corpus --out /tmp/corpus --no-docs    # the standard library alone
    python -m minibort.corpus --out /tmp/corpus --repeat doc:tutorial/=4   # the tutorial 4x in train.txt
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import pkgutil
import re
import sys
import sysconfig
import warnings

from ._files import write_bytes_atomic, write_text_atomic

# Top-level packages and modules left out: tests, GUI and demo code, vendored or installer
# packages, and files that are data rather than prose.
SKIP = frozenset({
    "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages",
    "lib-dynload", "__pycache__", "pydoc_data", "__phello__", "__hello__", "antigravity", "this",
    "_sysconfigdata__linux_x86_64-linux-gnu", "turtle", "venv",
})

HELDOUT_FRACTION = 0.05
FORMAT_VERSION = 2


def _skip(dotted: str) -> bool:
    parts = dotted.split(".")
    if parts[0] in SKIP or parts[0].startswith("_sysconfigdata"):
        return True
    # test packages and modules deeper down (e.g. `unittest.test`, `ctypes.test`, `test_*`)
    return any(p in ("test", "tests") or p.startswith("test_") for p in parts)


def stdlib_modules(stdlib_dir: str | None = None) -> list[tuple[str, str]]:
    """Sorted (dotted name, source path) of the pure-Python stdlib modules, found without importing."""
    stdlib_dir = stdlib_dir or sysconfig.get_paths()["stdlib"]
    found: list[tuple[str, str]] = []

    def walk(folder: str, prefix: str) -> None:
        for info in pkgutil.iter_modules([folder]):     # reads file names only, imports nothing
            dotted = prefix + info.name
            if _skip(dotted):
                continue
            if info.ispkg:
                sub = os.path.join(folder, info.name)
                found.append((dotted, os.path.join(sub, "__init__.py")))
                walk(sub, dotted + ".")
            else:
                path = os.path.join(folder, info.name + ".py")
                if os.path.isfile(path):                # extension modules (.so) have no source
                    found.append((dotted, path))

    walk(stdlib_dir, "")
    return sorted(found)


def normalise(text: str) -> list[str]:
    """Split on blank lines into paragraphs; each becomes one line with single spaces."""
    paragraphs = re.split(r"\n\s*\n", text.replace("\r\n", "\n"))
    out = []
    for p in paragraphs:
        p = " ".join(p.split())
        if p:
            out.append(p)
    return out


def module_docstrings(source: str) -> list[str]:
    """Docstrings of a module, its classes, functions and methods, in source order (via ast)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # invalid escape sequences in old sources
        tree = ast.parse(source)
    docs = []
    for node in [tree] + sorted(
            (n for n in ast.walk(tree)
             if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))),
            key=lambda n: (n.lineno, n.col_offset)):
        doc = ast.get_docstring(node, clean=True)
        if doc:
            docs.append(doc)
    return docs


def gather(stdlib_dir: str | None = None) -> list[tuple[str, list[str]]]:
    """All documents as sorted (name, paragraphs): "topic:<key>" and "module:<dotted name>"."""
    # a dict of strings; importing it has no side effects
    from pydoc_data.topics import topics
    docs = []
    for key in sorted(topics):
        paras = normalise(topics[key])
        if paras:
            docs.append((f"topic:{key}", paras))
    for dotted, path in stdlib_modules(stdlib_dir):
        try:
            with open(path, "rb") as f:
                source = f.read()
            texts = module_docstrings(source)
        except (OSError, SyntaxError, ValueError):
            continue
        paras = [p for t in texts for p in normalise(t)]
        if paras:
            docs.append((f"module:{dotted}", paras))
    return sorted(docs)


# ------------------------------------------------------------------------------------ Python's documentation
#
# Debian's python3.X-doc package ships the reST sources of docs.python.org as *.rst.txt files.
# `rst_to_paragraphs` turns one of them into plain paragraphs by these rules, applied line by line:
#
# - Section titles are kept as paragraphs of their own; their under- and overlines are dropped.
# - Comments, hyperlink targets (`.. _label:`), footnotes and substitution definitions are dropped
#   (a `|name|` reference is replaced by its `replace::` text, or by `name`).
# - Code is dropped: literal blocks after `::` (a paragraph's closing "text::" becomes "text:", a
#   lone "::" or " ::" disappears, as Sphinx renders them), doctest blocks (`>>>`), and the
#   directives in DROP_DIRECTIVES (code-block, doctest, productionlist, ...).
# - Tables are dropped (grid tables `+---+`, simple tables `=== ===`, list-table, csv-table), as are
#   index entries, toctrees, images, includes, module/author metadata and audit events.
# - Object descriptions (DESCRIBE_DIRECTIVES: function, method, class, data, ...) keep their
#   signature as a paragraph, then their body as text.
# - versionadded / versionchanged / deprecated / deprecated-removed become Sphinx's sentences
#   ("New in version 3.2.", "Changed in version 3.3: ...", "Deprecated since version 3.4: ...").
# - Every other directive (note, warning, seealso, impl-detail, rubric, topic, ...) keeps its body as
#   text; rubric, topic and sidebar also keep their title; availability becomes "Availability: ...".
# - List items become paragraphs of their own, without their bullets or numbers; indented blocks
#   (block quotes, definitions) are read by the same rules; a definition's term is its own paragraph.
# - Inline markup keeps only its text: :role:`text` -> text, :role:`title <target>` -> title,
#   :role:`~a.b.c` -> c, :role:`!x` -> x, and :func: / :meth: (also :c:func:) add "()" as Sphinx
#   does; :pep:`8` -> PEP 8, :rfc:`2822` -> RFC 2822, :samp:`{x}` -> x; ``literal``, *emphasis*,
#   **strong**, `interpreted` -> their text; `link <url>`_ -> link; footnote references [#]_ vanish;
#   backslash escapes keep the escaped character ("\ " vanishes).
# - Field lists (":Author: name", directive options such as ":noindex:") keep only their values;
#   paragraphs without a letter are dropped.

DOCS_SECTIONS = ("tutorial", "library", "reference", "howto", "faq", "glossary.rst.txt")
DROP_DIRECTIVES = frozenset({
    "code-block", "sourcecode", "code", "literalinclude", "doctest", "testcode", "testoutput",
    "testsetup", "testcleanup", "productionlist", "highlight", "index", "toctree", "include", "image",
    "figure", "raw", "list-table", "csv-table", "table", "tabularcolumns", "module", "currentmodule",
    "sectionauthor", "moduleauthor", "program", "audit-event", "audit-event-table", "contents",
    "opcode-table", "literal", "role", "default-role", "c:namespace", "c:namespace-push", "c:namespace-pop",
    "limited-api-list", "miscnews", "include-file",
})
DESCRIBE_DIRECTIVES = frozenset({
    "function", "method", "class", "data", "attribute", "exception", "decorator", "decoratormethod",
    "classmethod", "staticmethod", "abstractmethod", "coroutinefunction", "coroutinemethod",
    "awaitablefunction", "awaitablemethod", "opcode", "cmdoption", "option", "describe", "object",
    "pdbcommand", "envvar", "2to3fixer", "property",
})
TITLED_DIRECTIVES = frozenset({"rubric", "topic", "sidebar"})

_DIRECTIVE = re.compile(r"\.\.\s+([\w:+-]+)::\s*(.*)$")
_SUBSTITUTION = re.compile(r"^\.\.\s+\|([^|]+)\|\s+replace::\s*(.*)$", re.MULTILINE)
_ADORNMENT = re.compile(r"""^([=\-~^"'`#*+_:.<>])\1{2,}\s*$""")
_SIMPLE_TABLE = re.compile(r"^=+(\s+=+)+\s*$")
_BULLET = re.compile(r"^(?:[-*+\u2022]|\d+[.)]|#\.|\(?[a-zA-Z0-9]\)|[a-zA-Z]\.)\s+(?=\S)")
_INLINE = re.compile(
    r"``(?P<literal>.+?)``(?!\w)"
    r"|(?P<role>:[\w:+.-]+:)`(?P<role_text>(?:\\`|[^`])+?)`"
    r"|`(?P<ref>(?:\\`|[^`])+?)`(?:__?)?"
    r"|(?<![\w*\\])\*\*(?P<strong>\S(?:.*?\S)?)\*\*(?![\w*])"
    r"|(?<![\w*\\])\*(?P<emph>[^\s*](?:[^*]*?[^\s*\\])?)\*(?![\w*])"
    r"|\s?\[(?:#\w*|\d+)\]_"
    r"|\|(?P<subst>[^|\s][^|]*)\|_{0,2}"
    r"|\\(?P<escaped>.)")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _dedent(lines: list[str]) -> list[str]:
    width = min((_indent(x) for x in lines if x.strip()), default=0)
    return [x[width:] for x in lines]


def _block(lines: list[str], i: int, first_indent: int) -> int:
    """The end of the block starting at line i: lines indented more than `first_indent`, or blank."""
    j = i + 1
    while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > first_indent):
        j += 1
    while j > i + 1 and not lines[j - 1].strip():
        j -= 1
    return j


def render_inline(text: str, substitutions: dict[str, str] | None = None) -> str:
    """reST inline markup -> plain text, by the rules above (one left-to-right pass)."""
    subs = substitutions or {}

    def one(m: re.Match) -> str:
        if m["literal"] is not None:
            return m["literal"]
        if m["role"] is not None:
            role, body = m["role"].strip(":"), m["role_text"].replace("\\`", "`")
            title = re.match(r"(.*?)\s*<([^<>]*)>$", body, re.DOTALL)
            if title and title.group(1):
                return title.group(1)
            body = body.lstrip("!")
            if body.startswith("~"):
                body = body[1:].rsplit(".", 1)[-1]
            if role in ("pep", "rfc"):
                return f"{role.upper()} {body}"
            if role == "samp":
                return body.replace("{", "").replace("}", "")
            if role in ("func", "meth", "c:func", "py:func", "py:meth") and not body.endswith(")"):
                return body + "()"
            return body
        if m["ref"] is not None:
            title = re.match(r"(.*?)\s*<([^<>]*)>$", m["ref"], re.DOTALL)
            return title.group(1) if title and title.group(1) else m["ref"]
        if m["strong"] is not None:
            return m["strong"]
        if m["emph"] is not None:
            return m["emph"]
        if m["subst"] is not None:
            return subs.get(m["subst"], m["subst"])
        if m["escaped"] is not None:
            return "" if m["escaped"] == " " else m["escaped"]
        return ""                                            # a footnote reference
    return _INLINE.sub(one, text)


def _version_sentence(name: str, args: str, body: str) -> str:
    v = args.split()
    if name == "versionadded":
        head = f"New in version {v[0] if v else ''}"
    elif name == "versionchanged":
        head = f"Changed in version {v[0] if v else ''}"
    elif name == "deprecated":
        head = f"Deprecated since version {v[0] if v else ''}"
    else:                                                    # deprecated-removed X Y
        head = f"Deprecated since version {v[0] if v else ''}, will be removed in version " \
               f"{v[1] if len(v) > 1 else ''}"
    rest = " ".join((" ".join(args.split()[1 if name != "deprecated-removed" else 2:]) + " " + body).split())
    return f"{head}: {rest}" if rest else f"{head}."


def rst_to_paragraphs(text: str) -> tuple[list[str], list[str]]:
    """One reST document -> (plain paragraphs, module names its `.. module::` directives declare)."""
    substitutions = {k: render_inline(v.strip()) for k, v in _SUBSTITUTION.findall(text)}
    modules: list[str] = []
    raw = _paragraphs(text.replace("\r\n", "\n").replace("\t", "        ").split("\n"), modules)
    out = []
    for p in raw:
        p = " ".join(render_inline(p, substitutions).split())
        if re.search(r"[^\W\d_]", p):                         # at least one letter
            out.append(p)
    return out, modules


def _paragraphs(lines: list[str], modules: list[str]) -> list[str]:
    """The paragraphs (markup still inline) of a block of reST lines starting at indent 0."""
    out: list[str] = []
    cur: list[str] = []
    literal_next = False                                     # the last paragraph ended with "::"

    def flush() -> None:
        nonlocal literal_next
        if cur:
            para = " ".join(x.strip() for x in cur)
            literal_next = para.endswith("::")
            if literal_next:                                 # "text::" -> "text:"; " ::" and "::" vanish
                before = para[:-2]
                para = before.rstrip() if not before or before.endswith(" ") else before + ":"
            out.append(para)
            cur.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            flush()
            i += 1
            continue
        ind = _indent(line)
        if ind > 0:                                          # an indented block after a paragraph
            end = _block(lines, i, ind - 1)
            flush()
            if not literal_next:
                out.extend(_paragraphs(_dedent(lines[i:end]), modules))
            literal_next = False
            i = end
            continue
        if stripped.startswith(".."):                        # explicit markup: directive or comment
            flush()
            end = _block(lines, i, 0)
            out.extend(_directive(lines[i:end], modules))
            literal_next = False
            i = end
            continue
        if _ADORNMENT.match(stripped) and not _SIMPLE_TABLE.match(stripped):
            if cur:                                          # underline: the title is a paragraph
                flush()
            literal_next = False
            i += 1
            continue
        if _SIMPLE_TABLE.match(stripped) or stripped.startswith(("+-", "+=")):
            flush()
            i = _skip_table(lines, i)
            literal_next = False
            continue
        if stripped.startswith(">>>"):                       # a doctest block runs to a blank line
            flush()
            while i < len(lines) and lines[i].strip():
                i += 1
            continue
        field = re.match(r":[\w -]+:(?:\s+|$)", line)
        if field:                                            # a field list line: its value only
            flush()
            cur.append(line[field.end():])
            i += 1
            continue
        bullet = _BULLET.match(line)
        if bullet and not cur:                               # a list item: its own paragraph(s)
            flush()
            end = _block(lines, i, 0)
            item = [" " * bullet.end() + line[bullet.end():]] + lines[i + 1:end]
            out.extend(_paragraphs(_dedent(item), modules))
            literal_next = False
            i = end
            continue
        cur.append(line)
        i += 1
    flush()
    return out


def _skip_table(lines: list[str], i: int) -> int:
    """The line after a grid table (to a blank line) or a simple table (to a border before a blank)."""
    if lines[i].strip().startswith("+"):
        while i < len(lines) and lines[i].strip():
            i += 1
        return i
    i += 1
    while i < len(lines):
        if _SIMPLE_TABLE.match(lines[i].strip()) and (i + 1 == len(lines) or not lines[i + 1].strip()):
            return i + 1
        i += 1
    return i


def _directive(block: list[str], modules: list[str]) -> list[str]:
    """Paragraphs of one explicit-markup block (`.. name:: args` + options + body), by the rules."""
    m = _DIRECTIVE.match(block[0].strip())
    if m is None:                                            # comment, target, footnote, substitution
        return []
    name, args = m.group(1), m.group(2).strip()
    body = _dedent(block[1:])
    k = 0
    while name in DESCRIBE_DIRECTIVES and k < len(body) and body[k].strip() and \
            not re.match(r"\s*:[\w -]+:", body[k]):
        args += "\n" + body[k].strip()                        # more signatures of the same object
        k += 1
    while k < len(body) and re.match(r"\s*:[\w -]+:", body[k]):  # directive options
        k += 1
    body = body[k:]
    if name == "module" and args:
        modules.append(args.split()[0])
    if name in DROP_DIRECTIVES:
        return []
    text = _paragraphs(body, modules)
    if name in ("versionadded", "versionchanged", "deprecated", "deprecated-removed"):
        return [_version_sentence(name, args, " ".join(text))]
    if name in DESCRIBE_DIRECTIVES:
        return [s for s in args.split("\n") if s] + text
    if name in TITLED_DIRECTIVES and args:
        return [args] + text
    if name == "availability":
        return [f"Availability: {args}."] + text
    return text


def docs_folder() -> str | None:
    """The `html/_sources` folder of this Python's Debian documentation package, if installed."""
    path = f"/usr/share/doc/python{sys.version_info[0]}.{sys.version_info[1]}/html/_sources"
    return path if os.path.isdir(path) else None


def docs_package() -> str:
    return f"python{sys.version_info[0]}.{sys.version_info[1]}-doc"


def gather_docs(folder: str) -> list[tuple[str, list[str], list[str]]]:
    """Sorted (name "doc:<path without .rst.txt>", paragraphs, declared modules) of DOCS_SECTIONS."""
    paths = []
    for section in DOCS_SECTIONS:
        top = os.path.join(folder, section)
        if os.path.isfile(top):
            paths.append(top)
        for root, dirs, files in os.walk(top):
            dirs.sort()
            paths.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(".rst.txt"))
    docs = []
    for path in sorted(paths):
        with open(path, encoding="utf-8") as f:
            paras, modules = rst_to_paragraphs(f.read())
        rel = os.path.relpath(path, folder).replace(os.sep, "/")[:-len(".rst.txt")]
        if paras:
            docs.append((f"doc:{rel}", paras, modules))
    return docs


def is_heldout(name: str, fraction: float = HELDOUT_FRACTION) -> bool:
    """Split by document: the first 8 hex digits of sha256(name), as a fraction of 16^8."""
    h = int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:8], 16)
    return h < fraction * 16 ** 8


def render(docs: list[tuple[str, list[str]]]) -> str:
    """One paragraph per line, a blank line between documents."""
    return "".join("\n".join(paras) + "\n\n" for _, paras in docs)


AUTO = "auto"
OVERLAP_WORDS = 12


def _shingles(paragraph: str, n: int = OVERLAP_WORDS) -> set[tuple[str, ...]]:
    """The runs of n consecutive words (lower-cased letters and digits) of a paragraph."""
    words = re.findall(r"\w+", paragraph.lower())
    return {tuple(words[k:k + n]) for k in range(len(words) - n + 1)}


def split_documents(stdlib_docs: list[tuple[str, list[str]]],
                    doc_docs: list[tuple[str, list[str], list[str]]],
                    heldout_fraction: float = HELDOUT_FRACTION) -> tuple[list, list, dict]:
    """-> (train, held-out, exclusions) for the two sources, by these rules in order:

    1. every document whose name hashes into `heldout_fraction` is held out (`is_heldout`; the
       standard-library documents split exactly as they did before the documentation was added);
    2. a documentation page that declares a held-out module (`.. module:: doctest` while
       "module:doctest" is held out) is held out with it, since it describes the same code;
    3. a documentation page whose text equals a held-out document's is left out of both splits;
    4. from the documentation pages in the training split, every paragraph that shares a run of
       OVERLAP_WORDS consecutive words with the held-out split is dropped (the reference manual is
       also the source of the pydoc topics, so held-out topics reappear there almost verbatim).
    """
    held_modules = {n[len("module:"):] for n, _ in stdlib_docs if is_heldout(n, heldout_fraction)}
    train = [(n, p) for n, p in stdlib_docs if not is_heldout(n, heldout_fraction)]
    held = [(n, p) for n, p in stdlib_docs if is_heldout(n, heldout_fraction)]
    by_module = []
    for name, paras, modules in doc_docs:
        if is_heldout(name, heldout_fraction):
            held.append((name, paras))
        elif set(modules) & held_modules:
            held.append((name, paras))
            by_module.append(name)
    held_texts = {"\n".join(p) for _, p in held}
    seen = {s for _, paras in held for p in paras for s in _shingles(p)}
    same_text, dropped = [], 0
    for name, paras, _ in doc_docs:
        if is_heldout(name, heldout_fraction) or name in by_module:
            continue
        if "\n".join(paras) in held_texts:
            same_text.append(name)
            continue
        kept = [p for p in paras if not (_shingles(p) & seen)]
        dropped += len(paras) - len(kept)
        if kept:
            train.append((name, kept))
    exclusions = {"heldout_by_module": by_module, "same_text_as_heldout": same_text,
                  "paragraphs_overlapping_heldout": dropped}
    return sorted(train), sorted(held), exclusions


def _folder_digest(folder: str) -> tuple[int, str]:
    """(files, sha256 over each DOCS_SECTIONS *.rst.txt file's relative name and bytes, sorted)."""
    h, n = hashlib.sha256(), 0
    for section in DOCS_SECTIONS:
        top = os.path.join(folder, section)
        paths = [top] if os.path.isfile(top) else sorted(
            os.path.join(r, f) for r, _, fs in os.walk(top) for f in fs if f.endswith(".rst.txt"))
        for path in paths:
            with open(path, "rb") as f:
                h.update(os.path.relpath(path, folder).replace(os.sep, "/").encode() + b"\0" + f.read())
            n += 1
    return n, h.hexdigest()


def repeat_documents(train: list[tuple[str, list[str]]], repeat: dict[str, int]) -> tuple[list, dict]:
    """Weight kinds of text: each training document whose name starts with a key of `repeat` (the
    first that matches) appears that many times, so each epoch trains on it that often, with fresh
    masks. The held-out split is never repeated. -> (documents, {key: {"times", "documents"}})
    """
    out, record = [], {key: {"times": n, "documents": 0} for key, n in repeat.items()}
    for name, paras in train:
        key = next((k for k in repeat if name.startswith(k)), None)
        if key is not None:
            record[key]["documents"] += 1
        out += [(name, paras)] * (repeat[key] if key is not None else 1)
    for key, r in record.items():
        if r["documents"] == 0:
            raise ValueError(f"--repeat {key} matches no training document; names start with module:, "
                             "topic: or doc: (doc:tutorial/, doc:reference/, doc:faq/, doc:glossary, ...)")
    return out, record


def build(out_dir: str, stdlib_dir: str | None = None, heldout_fraction: float = HELDOUT_FRACTION,
          docs: str | None = AUTO, repeat: dict[str, int] | None = None) -> dict:
    """Write train.txt, heldout.txt and corpus.json into `out_dir`; return the record.

    `docs` is the `html/_sources` folder of Python's documentation: AUTO finds the Debian package's
    (`docs_folder()`) and, where it is not installed, says how to get it and builds the
    standard-library corpus alone; None leaves the documentation out. `repeat` weights kinds of
    training text (`repeat_documents`).
    """
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be between 0 and 1 (exclusive), got {heldout_fraction}; "
                         f"the default is {HELDOUT_FRACTION}")
    if docs == AUTO:
        docs = docs_folder()
        if docs is None:
            print(f"note: Python's documentation sources are not installed; `apt-get install "
                  f"{docs_package()}` adds them (about 3x more text). Building the standard-library "
                  "corpus alone.", file=sys.stderr)
    elif docs is not None and not os.path.isdir(docs):
        raise FileNotFoundError(f"{docs} is not a folder; give the html/_sources folder of Python's "
                                f"documentation (`apt-get install {docs_package()}` puts it in "
                                f"/usr/share/doc/python{sys.version_info[0]}.{sys.version_info[1]}/html/_sources)")
    stdlib_docs = gather(stdlib_dir)
    doc_docs = gather_docs(docs) if docs else []
    train, held, exclusions = split_documents(stdlib_docs, doc_docs, heldout_fraction)
    train, repeated = repeat_documents(train, repeat or {})
    os.makedirs(out_dir, exist_ok=True)
    texts = {"train.txt": render(train), "heldout.txt": render(held)}
    digest = hashlib.sha256()
    record: dict = {"format_version": FORMAT_VERSION,
                    "python_version": sys.version.split()[0],
                    "heldout_fraction": heldout_fraction, "files": {}}
    for fname, text in texts.items():
        data = text.encode("utf-8")
        digest.update(fname.encode() + b"\0" + data)
        write_bytes_atomic(os.path.join(out_dir, fname), data)
        split = train if fname == "train.txt" else held
        record["files"][fname] = {"documents": len(split), "paragraphs": sum(len(p) for _, p in split),
                                  "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    record["sha256"] = digest.hexdigest()
    record["sources"] = {"stdlib": {"documents": len(stdlib_docs)}}
    if docs:
        n_files, sha = _folder_digest(docs)
        record["sources"]["python-docs"] = {
            "package": docs_package(), "sections": list(DOCS_SECTIONS), "files": n_files,
            "sources_sha256": sha, "documents": len(doc_docs), **exclusions}
    if repeated:
        record["repeat"] = repeated
    record["heldout_documents"] = [n for n, _ in held]
    write_text_atomic(os.path.join(out_dir, "corpus.json"), json.dumps(record, indent=2) + "\n")
    return record


def read_split(path: str) -> list[list[str]]:
    """Read train.txt / heldout.txt back as a list of documents, each a list of paragraphs."""
    with open(path, encoding="utf-8") as f:
        blocks = f.read().split("\n\n")
    return [b.split("\n") for b in blocks if b.strip()]


def _fraction(text: str) -> float:
    """argparse type: a float strictly between 0 and 1."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a share such as 0.05") from None
    if not 0 < x < 1:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1 (exclusive): both splits must "
                                         f"keep some documents; give a share such as {HELDOUT_FRACTION}")
    return x


def _repeat(text: str) -> tuple[str, int]:
    """argparse type: PREFIX=N with N a whole number of at least 1."""
    prefix, eq, n = text.rpartition("=")
    if not eq or not prefix or not n.isdigit() or int(n) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not PREFIX=N; give a name prefix and a whole number "
                                         "of times, such as doc:tutorial/=4")
    return prefix, int(n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minibort.corpus", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder for train.txt, heldout.txt, corpus.json")
    ap.add_argument("--heldout-fraction", type=_fraction, default=HELDOUT_FRACTION,
                    help="share of documents (by name hash) kept for evaluation, between 0 and 1")
    ap.add_argument("--stdlib", default=None, help="stdlib folder (default: sysconfig's)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--docs", default=AUTO, metavar="DIR",
                       help="html/_sources folder of Python's documentation (default: the Debian package "
                            f"{docs_package()}'s, if installed)")
    group.add_argument("--no-docs", dest="docs", action="store_const", const=None,
                       help="leave Python's documentation out: the standard library's text alone")
    ap.add_argument("--repeat", type=_repeat, action="append", default=[], metavar="PREFIX=N",
                    help="training documents whose name starts with PREFIX appear N times (repeatable; "
                         "e.g. doc:tutorial/=4); the held-out split never changes")
    args = ap.parse_args(argv)
    try:
        rec = build(args.out, args.stdlib, args.heldout_fraction, args.docs, dict(args.repeat))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for fname, info in rec["files"].items():
        print(f"{fname}: {info['documents']} documents, {info['paragraphs']} paragraphs, "
              f"{info['bytes']:,} bytes")
    for source, info in rec["sources"].items():
        print(f"source {source}: {info['documents']} documents")
    for prefix, info in rec.get("repeat", {}).items():
        print(f"repeated {info['times']}x: {info['documents']} documents named {prefix}*")
    print(f"Python {rec['python_version']}  sha256 {rec['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
