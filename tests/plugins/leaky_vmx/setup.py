"""An example third-party vendor for pykvm, with C ops of its own: kvm_intel with a
vcpu_put that forgets to put the host state back. It installs like any plugin (the
`pykvm.vendors` entry point) and needs no change to pykvm's common code."""
from setuptools import setup

setup(
    name="pykvm-leaky-vmx",
    version="0.1.0",
    packages=["leaky_vmx"],
    setup_requires=["cffi>=1.16"],
    cffi_modules=["leaky_vmx/_build.py:ffi"],
    install_requires=["cffi>=1.16"],   # pykvm itself must be installed already
    entry_points={"pykvm.vendors": ["leaky = leaky_vmx:VENDOR"]},
)
