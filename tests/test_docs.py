"""The README's tour and the package docstring's tour run as written."""
import pathlib
import re
import textwrap

import pykvm

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for b in blocks:
        exec(compile(b, "README.md", "exec"), {})


def test_package_docstring_tour_runs():
    code = [textwrap.dedent(b) for b in re.findall(r"::\n\n((?:       .*\n|\n)+)",
                                                   pykvm.__doc__)]
    assert len(code) >= 5
    env = {}
    for b in code:
        exec(compile(b, "pykvm.__doc__", "exec"), env)
    assert env["uc"].args[0] == 0x1234
