"""The layer rules of docs/layers.md, enforced: C symbol references between csrc/ areas
(from each object file's undefined symbols) and Python imports between pykvm packages."""
import ast
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"

# Areas a C file may reference, by the file's area; "*" is anything.
C_ALLOWED = {
    "arch": set(),
    "host": {"arch"},
    "kvm": {"host", "arch"},
    "kvm/vmx": {"kvm", "host", "arch"},
    "kvm/svm": {"kvm", "host", "arch"},
    "vmm": {"kvm"},
    "check": {"*"},
}
# Observation and interleaving points: any layer may announce one (docs/layers.md).
PROBE = re.compile(r"^(pk_observe_\w+|pk_percpu_read|pk_oracle_violation|pk_inject_point|"
                   r"pk_attr_point)$")
# The composition root: creating a machine sets up the host model, its locks and the
# oracle on it, and says why when it cannot.
ROOT_REFS = {("csrc/arch/machine.c", f) for f in ("pk_host_init", "pk_oracle_enable",
                                                  "pk_locks_init", "pk_locks_free", "pk_err")}
# A pCPU runs one thing at a time: a hardware entry point called from Python (a bare run,
# the cost read-outs) holds the pCPU it touches, as every thread must (include/pykvm/smp.h).
PCPU_LOCK = re.compile(r"^(pk_cpu_lock|pk_cpu_unlock)$")


def _area(path):
    rel = path.relative_to(CSRC)
    parts = rel.parts
    if parts[0] == "kvm" and len(parts) > 2:
        return f"kvm/{parts[1]}"
    return parts[0]


@pytest.fixture(scope="module")
def symbols(tmp_path_factory):
    """{file: (defined, undefined)} for every .c file under csrc/."""
    if not shutil.which("nm"):
        pytest.fail("nm (binutils) is needed to check the C layer rules")
    out_dir = tmp_path_factory.mktemp("objs")
    table = {}
    for src in sorted(CSRC.rglob("*.c")):
        obj = out_dir / (str(src.relative_to(CSRC)).replace("/", "_") + ".o")
        subprocess.run(["cc", "-std=gnu11", "-O0", "-c", f"-I{ROOT / 'include'}", f"-I{CSRC}",
                        '-DPYKVM_VERSION="layers"', str(src), "-o", str(obj)], check=True)
        defined, undefined = set(), set()
        for line in subprocess.run(["nm", str(obj)], capture_output=True, text=True,
                                   check=True).stdout.splitlines():
            f = line.split()
            if len(f) == 3 and f[1] in "TDBRCV":
                defined.add(f[2])
            elif len(f) == 2 and f[0] == "U":
                undefined.add(f[1])
        table[src] = (defined, undefined)
    return table


def test_c_layers(symbols):
    owner = {}
    for src, (defined, _) in symbols.items():
        for s in defined:
            owner[s] = src
    bad = []
    for src, (_, undefined) in symbols.items():
        area = _area(src)
        allowed = C_ALLOWED[area]
        for s in sorted(undefined):
            dst = owner.get(s)
            if dst is None or _area(dst) == area or PROBE.match(s) or PCPU_LOCK.match(s):
                continue
            if "*" in allowed or _area(dst) in allowed:
                continue
            if (str(src.relative_to(ROOT)), s) in ROOT_REFS:
                continue
            bad.append(f"{src.relative_to(ROOT)} ({area}) -> {s} in "
                       f"{dst.relative_to(ROOT)} ({_area(dst)})")
    assert not bad, "layer rule broken (docs/layers.md):\n" + "\n".join(bad)


def test_common_kvm_names_no_vendor(symbols):
    vendor_syms = {s for src, (defined, _) in symbols.items()
                   if _area(src) in ("kvm/vmx", "kvm/svm") for s in defined}
    for src, (_, undefined) in symbols.items():
        if _area(src) == "kvm":
            assert not (undefined & vendor_syms), (src, undefined & vendor_syms)


def test_the_layer_table_covers_every_area():
    areas = {_area(p) for p in CSRC.rglob("*.c")}
    assert areas <= set(C_ALLOWED), areas - set(C_ALLOWED)


def _python_modules():
    for path in sorted((ROOT / "pykvm").rglob("*.py")):
        if path.name in ("_build.py", "_build_uapi.py"):    # build scripts, run by setup.py
            continue
        mod = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        yield mod.removesuffix(".__init__"), path


def _imports(mod, tree):
    pkg = mod.split(".") if mod.endswith("__init__") else mod.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - node.level + 1] if node.level > 1 else pkg
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield name
            for a in node.names:
                yield f"{name}.{a.name}"


def test_python_layers():
    bad = []
    for mod, path in _python_modules():
        tree = ast.parse(path.read_text())
        is_pkg = path.name == "__init__.py"
        modname = mod + (".__init__" if is_pkg else "")
        imports = set(_imports(modname, tree))
        if mod.startswith("pykvm.cli"):
            continue
        for forbidden in ("pykvm.cli", "argparse", "rich.console", "rich.progress"):
            if any(i == forbidden or i.startswith(forbidden + ".") for i in imports):
                bad.append(f"{mod} imports {forbidden}")
        if mod.startswith("pykvm.devkvm") and any(
                i == "pykvm.machine" or i.startswith("pykvm.machine.") for i in imports):
            bad.append(f"{mod} imports the simulated machine")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else (
                    f"{getattr(f.value, 'id', '')}.{f.attr}" if isinstance(f, ast.Attribute)
                    else "")
                if name in ("print", "sys.exit", "structlog.configure", "exit", "quit"):
                    bad.append(f"{mod}:{node.lineno} calls {name}")
    assert not bad, "layer rule broken (docs/layers.md):\n" + "\n".join(bad)
