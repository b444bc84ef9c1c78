"""Every dependency pykvm and its tests need imports, or the suite fails: a broken
install must not silently drop the interpreter's fuzzing and differential tests
(test_exec.py, test_exec_diff.py import iced-x86 and unicorn directly, never through
pytest.importorskip)."""
import ast
import importlib
import importlib.metadata
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Distribution name (setup.py) -> the module it provides.
MODULES = {"cffi": "cffi", "iced-x86": "iced_x86", "structlog": "structlog", "rich": "rich",
           "matplotlib": "matplotlib", "numpy": "numpy", "scipy": "scipy", "shtab": "shtab",
           "mkdocs": "mkdocs", "pytest": "pytest", "pytest-benchmark": "pytest_benchmark",
           "hypothesis": "hypothesis", "unicorn": "unicorn", "distributed": "distributed",
           "pyarrow": "pyarrow"}


def _requirements():
    """install_requires and the test extra, as the installed pykvm declares them (pip
    install -e refreshes them from setup.py)."""
    out = []
    for req in importlib.metadata.requires("pykvm") or []:
        spec, _, marker = req.partition(";")
        if marker and "extra" in marker and '"test"' not in marker and "'test'" not in marker:
            continue
        name = re.split(r"[<>=!~\[ ]", spec.strip(), maxsplit=1)[0]
        if name not in out:
            out.append(name)
    return out


def test_the_test_extra_is_known():
    assert {"pytest", "hypothesis", "unicorn", "iced-x86"} <= set(_requirements())


@pytest.mark.parametrize("dist", _requirements())
def test_required_dependency_imports(dist):
    assert dist in MODULES, f"setup.py requires {dist}: say which module it provides"
    importlib.import_module(MODULES[dist])


def test_no_test_skips_on_a_missing_required_dependency():
    required = set(MODULES.values())
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "importorskip":
                name = node.args[0].value if node.args else None
                assert name not in required, (
                    f"{path.name} skips when {name} is missing; it is required: import it")
