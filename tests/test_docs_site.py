"""docs/ builds with MkDocs in strict mode (a broken link or anchor fails), every code
sample in it runs, every `pykvm ...` command line in it parses, the README's links land,
and every example in the package's docstrings runs."""
import doctest
import importlib
import os
import pathlib
import pkgutil
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

import pykvm
from pykvm.cli import build_parser

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def _fences(text, lang):
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_the_site_builds_strict(tmp_path):
    # The test extra brings MkDocs (setup.py): without it the install is broken, and the
    # test fails rather than skips (tests/test_dependencies.py).
    importlib.import_module("mkdocs")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                        "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "checker" / "index.html").exists()


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in PAGES:
        assert page.name in nav, page.name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_samples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)            # samples that write files write them here
    env = {}
    for block in _fences(page.read_text(), "python"):
        exec(compile(block, str(page), "exec"), env)


def _command_lines(text):
    for block in _fences(text, "sh"):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("pykvm "):
                    yield shlex.split(part.split(">")[0])[1:]


@pytest.mark.parametrize("page", [*PAGES, ROOT / "README.md"], ids=lambda p: p.name)
def test_command_lines_parse(page, capsys):
    parser = build_parser()
    lines = list(_command_lines(page.read_text()))
    for argv in lines:
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            raise AssertionError(f"{page.name}: `pykvm {' '.join(argv)}` does not parse: "
                                 f"{capsys.readouterr().err}") from e


def _anchors(md):
    """The anchors MkDocs gives a page's headings (toc's default slugs)."""
    out = set()
    for h in re.findall(r"^#+ (.+)$", md, re.M):
        slug = re.sub(r"[^\w\s-]", "", h.lower()).strip()
        out.add(re.sub(r"[-\s]+", "-", slug))
    return out


def test_readme_links_land():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(#[^)\s]+)?\)", text)
    assert any(t.startswith("docs/") for t, _ in links)
    for target, anchor in links:
        if "://" in target:
            continue
        path = ROOT / target
        assert path.exists(), target
        if anchor:
            assert anchor[1:] in _anchors(path.read_text()), target + anchor


def test_no_reference_to_files_outside_the_repository():
    """The design notes the project was specified from are not shipped: what users read
    points at docs/ instead."""
    for path in [ROOT / "README.md", *PAGES]:
        for name in ("CONFORMANCE.md", "WORLD-SWITCH.md", "COSTS.md"):
            assert name not in path.read_text(), (path.name, name)


# ---- docstring examples ----------------------------------------------------------------

# Module docstring blocks that are not Python, and what they are instead.
NOT_PYTHON = {
    ("pykvm.profiles", "[profile]"): "the profile file format (TOML)",
    ("pykvm.guest.ucall", "RDI, RSI, RDX = arg0, arg1, arg2"): "the guest side, in assembly",
    ("pykvm.workloads", "iterations        what the call was asked for"): "a list of events",
    ("pykvm.guest.layout", "0x000000  unused"): "the memory map",
    ("pykvm.guest.layout", "0x08 KERNEL_CS"): "the GDT's descriptors",
    ("pykvm.guest.ucall", "SYNC                 (arg0, arg1, arg2)"): "the ucall arguments",
}


def _modules():
    out = [pykvm]
    for info in pkgutil.walk_packages(pykvm.__path__, "pykvm."):
        if info.name.startswith(("pykvm._build", "pykvm.cli.__main__")):
            continue
        out.append(importlib.import_module(info.name))
    return out


def _indented_blocks(doc):
    """Blocks of a docstring indented deeper than its text, after a blank line (blank
    lines inside a block belong to it)."""
    lines = textwrap.dedent("\n".join(doc.splitlines()[1:])).splitlines() + [""]
    blocks, cur, prev_blank = [], None, True
    for line in lines:
        indented = line.startswith("    ")
        if cur is not None:
            if indented or not line.strip():
                cur.append(line)
                continue
            blocks.append(textwrap.dedent("\n".join(cur)).strip() + "\n")
            cur = None
        if indented and prev_blank:
            cur = [line]
        prev_blank = not line.strip()
    if cur:
        blocks.append(textwrap.dedent("\n".join(cur)).strip() + "\n")
    return blocks


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
def test_module_docstring_examples_run(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = module.__doc__ or ""
    if module.__name__ == "pykvm.devkvm" and "KvmMachine()" in doc:
        ok, why = pykvm.devkvm.KvmMachine.available()
        if not ok:
            pytest.skip(f"its example opens /dev/kvm: {why}")
    env = {}
    for block in _indented_blocks(doc):
        if block.lstrip().startswith(">>>"):
            continue                      # doctests: test_doctests
        first = block.strip().splitlines()[0].strip()
        if any(module.__name__ == m and first.startswith(s) for m, s in NOT_PYTHON):
            continue
        try:
            code = compile(block, f"{module.__name__} docstring", "exec")
        except SyntaxError:
            assert any(module.__name__ == m and first.startswith(s)
                       for m, s in NOT_PYTHON), f"{module.__name__}: not Python: {first!r}"
            continue
        exec(code, env)


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
def test_doctests(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if module.__name__ == "pykvm.devkvm.system":
        ok, why = pykvm.devkvm.KvmMachine.available()
        if not ok:
            pytest.skip(f"its example opens /dev/kvm: {why}")
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, module.__name__):
        if test.examples and test.name.startswith(module.__name__):
            runner.run(test, out=lambda s: None)
    assert runner.failures == 0, f"{runner.failures} doctest example(s) failed in " \
                                 f"{module.__name__} (python -m doctest -v shows them)"
