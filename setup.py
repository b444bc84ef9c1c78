"""pykvm: KVM's x86 world switch, in user space, in Python's hands."""
from setuptools import find_packages, setup

import importlib.util
import pathlib

# The C module: csrc/ + include/, compiled by cffi in API mode on install.
CFFI_MODULES = ["pykvm/_build.py:ffi"]


def _have_kvm_header():
    # pykvm/_build_uapi.py, loaded by path (importing the pykvm package would need the
    # module being built).
    path = pathlib.Path(__file__).resolve().parent / "pykvm" / "_build_uapi.py"
    spec = importlib.util.spec_from_file_location("_pykvm_build_uapi", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.have_kvm_header()


# The /dev/kvm ABI (struct layouts, ioctl numbers) from the system's <linux/kvm.h>, through
# cffi: built only where the header is; without it pykvm.devkvm refuses with the reason
# (pykvm/devkvm/uapi.py) and the simulated machine works as before.
if _have_kvm_header():
    CFFI_MODULES.append("pykvm/_build_uapi.py:ffi")
# docs/ is built with MkDocs (mkdocs.yml): Markdown pages, plain theme, strict link checks.
DOCS = ["mkdocs>=1.6"]

setup(
    name="pykvm",
    version="0.1.0",
    description="KVM's x86 world switch mirrored in C on a simulated x86-64 machine, "
                "driven from Python; the same VM/vCPU API on the host's /dev/kvm",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["pykvm", "pykvm.*"]),
    package_data={"pykvm": ["profiles/*.toml", "validation/*.toml"]},
    setup_requires=["cffi>=1.16"],
    cffi_modules=CFFI_MODULES,
    install_requires=[
        "cffi>=1.16",        # the C module's binding (API mode, out of line)
        "iced-x86>=1.21",    # encode and decode guest x86-64 code
        "structlog>=24",     # structured logs
        "rich>=13",          # terminal tables and progress bars
        "matplotlib>=3.8",   # plots as PNG
        "numpy>=1.26",       # profile measure: samples, medians, the design matrix
        "scipy>=1.11",       # profile measure: NNLS (optimize.nnls), Theil-Sen TSC fit
        # `pykvm completion bash|zsh|tcsh`: shtab writes a static script from the argparse
        # parser, so TAB never starts Python (argcomplete runs the program on every TAB,
        # which with the C module to load is noticeably slow).
        "shtab>=1.7",
        # Work beyond one core (pykvm.engine: `check --engine dask`, `sweep`, `study
        # --engine dask`): the project's distributed engine, a local cluster by default
        # or an existing one by address; no pool of our own.
        "distributed>=2024.8",
        # `pykvm sweep` writes Parquet and CSV from one typed table: pyarrow (Apache Arrow)
        # does both without pandas, and is what dataframe libraries read Parquet with.
        "pyarrow>=15",
    ],
    extras_require={
        "docs": DOCS,
        # The docs are built (strict: broken links fail) and their code samples run in the
        # test suite, so the test extra brings the docs tooling.
        "test": [
            "pytest>=8",             # the test runner
            "pytest-benchmark>=4",   # speed targets in benchmarks/
            "hypothesis>=6.100",     # property tests and event sequences
            "unicorn>=2.0.1",        # reference CPU for the interpreter's differential tests
            *DOCS,
        ],
    },
    entry_points={
        "console_scripts": ["pykvm = pykvm.cli:entry"],
        "pykvm.vendors": [
            "vmx = pykvm.vendors.vmx:VENDOR",
            "svm = pykvm.vendors.svm:VENDOR",
        ],
    },
)
