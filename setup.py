"""pykvm: KVM's x86 world switch, in user space, in Python's hands."""
from setuptools import find_packages, setup

# The C module: csrc/ + include/, compiled by cffi in API mode on install.
CFFI_MODULES = ["pykvm/_build.py:ffi"]

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
    ],
    extras_require={
        "test": [
            "pytest>=8",             # the test runner
            "pytest-benchmark>=4",   # speed targets in benchmarks/
            "hypothesis>=6.100",     # property tests and event sequences
            "unicorn>=2.0.1",        # reference CPU for the interpreter's differential tests
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
