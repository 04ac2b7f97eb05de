"""The documentation resolves inside the repository: every Markdown link in README.md and
docs/ points at a file that exists (and, with an anchor, at a heading that exists), and
every repository path named in backticks exists, and the Python examples of the README
and the guide run as written."""
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]
PATH_PREFIXES = ("fastlstm/", "capi/", "tests/", "benchmarks/", "docs/")


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _anchors(path):
    """GitHub's anchors for the headings of a Markdown file."""
    text = _read(path)
    out = set()
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_every_markdown_link_resolves_inside_the_repository():
    bad = []
    for doc in DOCS:
        text = _read(os.path.join(ROOT, doc))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                bad.append(f"{doc}: {target} leaves the repository")
                continue
            file, _, anchor = target.partition("#")
            path = os.path.normpath(os.path.join(ROOT, os.path.dirname(doc), file)) if file else os.path.join(ROOT, doc)
            if not path.startswith(ROOT) or not os.path.exists(path):
                bad.append(f"{doc}: {target} does not exist")
            elif anchor and anchor not in _anchors(path):
                bad.append(f"{doc}: {target} names no heading of {file or doc}")
    assert not bad, "\n".join(bad)


def test_every_repository_path_named_in_the_docs_exists():
    bad = []
    for doc in DOCS + ["capi/fastlstm.h"]:
        text = _read(os.path.join(ROOT, doc))
        for path in re.findall(r"`([\w./-]+)`", text) + re.findall(r"(?<![\w/.])((?:fastlstm|capi|tests|benchmarks|docs)/[\w./-]+\.\w+)", text):
            path = path.rstrip(".")
            if path.startswith(PATH_PREFIXES) and not os.path.exists(os.path.join(ROOT, path)):
                bad.append(f"{doc}: {path}")
    assert not bad, "missing:\n" + "\n".join(sorted(set(bad)))


def test_no_document_points_outside_the_repository():
    for doc in DOCS:
        text = _read(os.path.join(ROOT, doc))
        assert "DESIGN.md" not in text and "CAPI_NOTES" not in text and "../shared" not in text, doc


@pytest.mark.parametrize("doc", ["README.md", "docs/guide.md"])
def test_the_python_examples_run_as_written(tmp_path, monkeypatch, doc):
    """Each document's Python blocks, pasted one after the other into a fresh folder, run
    (each trains the adding problem for 1000 steps, as it says, and saves it)."""
    text = _read(os.path.join(ROOT, doc))
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    if any("import torch" in b for b in blocks):     # the PyTorch interchange example (the torch extra)
        pytest.importorskip("torch", reason="the torch extra")
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile("\n".join(blocks), doc, "exec"), scope)
    assert (tmp_path / "adding.ckpt").exists() and scope["model"].steps == 1000


def test_every_fastlstm_name_the_docs_use_resolves_after_a_plain_import():
    """`fastlstm.data` and `fastlstm.training`, as the guide names them, raised
    AttributeError after `import fastlstm` alone (the package loads its modules on first use,
    and those two were not in its list)."""
    import subprocess
    import sys
    names = set()
    for doc in DOCS:
        text = _read(os.path.join(ROOT, doc))
        names |= set(re.findall(r"\bfastlstm\.([A-Za-z_]\w*)(?:\.(\w+))?", text))
    names = {(a, b) for a, b in names if a not in ("h", "so")}      # the C header and library
    assert {("data", ""), ("training", "")} <= names
    code = "import fastlstm\n" + "".join(f"getattr(fastlstm, {a!r})" + (f".{b}" if b and b[0].isupper() else "") + "\n"
                                         for a, b in sorted(names))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=300)
    assert r.returncode == 0, r.stderr


def test_a_plain_import_shows_the_public_names_alone():
    """dir(fastlstm) listed `importlib`, the lazy loader's helper, among the public names."""
    import subprocess
    import sys

    import fastlstm
    code = "import fastlstm; print(' '.join(n for n in dir(fastlstm) if not n.startswith('_')))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=300)
    assert r.stdout.split() == sorted(n for n in fastlstm.__all__ if not n.startswith("_")), r.stderr
