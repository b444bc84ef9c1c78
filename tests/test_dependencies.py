"""Every dependency pykvm and its tests need imports, or the suite fails: a broken
install must not silently drop the interpreter's fuzzing and differential tests
(test_exec.py, test_exec_diff.py import iced-x86 and unicorn directly, never through
pytest.importorskip)."""
import ast
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Distribution name (setup.py) -> the module it provides.
MODULES = {"cffi": "cffi", "iced-x86": "iced_x86", "structlog": "structlog", "rich": "rich",
           "matplotlib": "matplotlib", "pytest": "pytest", "pytest-benchmark": "pytest_benchmark",
           "hypothesis": "hypothesis", "unicorn": "unicorn"}


def _requirements():
    """install_requires and the test extra, as written in setup.py."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", None) == "setup")
    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords
          if k.arg in ("install_requires", "extras_require")}
    reqs = kw["install_requires"] + kw["extras_require"]["test"]
    return [r.split(">")[0].split("=")[0].split("<")[0].strip() for r in reqs]


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
