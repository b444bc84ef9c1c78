"""Every CONFORMANCE.md case on both simulated vendors; the host's KVM where present."""
import pytest

from pykvm import conform

_backends = {}


def _backend(name):
    if name not in _backends:
        _backends[name] = conform.SimBackend(name)
    return _backends[name]


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("case", conform.CASES, ids=lambda c: f"{c.number}-{c.title}")
def test_model_conforms(case, vendor):
    r = conform.run_case(case, _backend(vendor))
    # The simulated CPUs have every feature the cases need: unsupported would hide a gap.
    assert r.status == "pass", f"case {case.number} ({case.title}) on {vendor}: {r}"


def test_unsupported_is_reported_not_passed():
    """A CPU without RDPID/RDTSCP: the cases that need them say unsupported."""
    from pykvm.vendors import CpuModel
    from pykvm.vendors.vmx import VENDOR
    VENDOR.cpu_models["test-no-rdtscp"] = CpuModel("intel", has_rdtscp=False, has_rdpid=False)
    try:
        b = conform.SimBackend("vmx", cpu_model="test-no-rdtscp")
        by_number = {c.number: c for c in conform.CASES}
        for n in (10, 11, 12):
            assert conform.run_case(by_number[n], b).status == "unsupported"
    finally:
        del VENDOR.cpu_models["test-no-rdtscp"]


def test_host_kvm_column_when_present():
    from pykvm.devkvm import KvmMachine
    ok, why = KvmMachine.available()
    if not ok:
        pytest.skip(why)
    b = conform.KvmBackend()
    try:
        by_number = {c.number: c for c in conform.CASES}
        # Cases the host KVM (kvm_pvm here) is measured to pass (CONFORMANCE.md).
        for n in (5, 15, 16):
            r = conform.run_case(by_number[n], b)
            assert r.status == "pass", f"host case {n}: {r}"
    finally:
        b.close()
