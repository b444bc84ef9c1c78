"""Every conformance case (the CONFORMANCE.md table and the ports of kvm-unit-tests msr.c,
selftests msrs_test.c and userspace_msr_exit_test.c) on both simulated vendors; on the
host's /dev/kvm, every case's result against the host module's recorded findings."""
import pytest

from pykvm import conform
from pykvm.conform import host_findings

_backends = {}

# Cases no backend here can run, with the reason they must give: upstream runs them only
# with kvm.force_emulation_prefix=1, and the simulated KVM has no instruction emulator.
MODEL_NOT_APPLICABLE = {"msr-26": "force_emulation_prefix", "msr-52": "force_emulation_prefix",
                        "userspace-msr-2": "force_emulation_prefix"}
SUITE_CASES = [c for name in ("msr", "msrs", "userspace-msr") for c in conform.SUITES[name]]


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


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
@pytest.mark.parametrize("case", SUITE_CASES, ids=lambda c: str(c.id))
def test_model_passes_the_upstream_suites(case, vendor):
    r = conform.run_case(case, _backend(vendor))
    if case.id in MODEL_NOT_APPLICABLE:
        assert r.status == "unsupported" and MODEL_NOT_APPLICABLE[case.id] in r.observed, r
    else:
        assert r.status == "pass", f"{case.id} ({case.upstream}) on {vendor}: {r}"


def test_every_suite_case_names_what_it_mirrors():
    ids = [c.id for c in conform.suite_cases("all")]
    assert len(ids) == len(set(ids))
    for c in SUITE_CASES:
        assert c.upstream.startswith(("kvm-unit-tests x86/msr.c", "selftests kvm x86/msrs_test.c",
                                      "selftests kvm x86/userspace_msr_exit_test.c")), c
    assert [c.number for c in conform.suite_cases("table")] == list(range(1, 20))


def test_ignore_msrs_breaks_msr_c_as_upstream_says():
    """kvm.ignore_msrs=1 turns the #GP of unhandled reads into 0: msr.c's PRED_CMD and
    FLUSH_CMD read checks fail (KVM has no read handler for them), while msrs_test
    skips its unsupported-MSR checks under ignore_msrs and still passes."""
    b = conform.SimBackend("vmx", params={"ignore_msrs": 1})
    res = conform.run_all([b], conform.SUITES["msr"])
    failed = {cid for cid, row in res.items() if row["vmx"].status == "fail"}
    assert failed == {"msr-24", "msr-25", "msr-50", "msr-51"}
    assert "RDMSR(PRED_CMD): no fault" in res["msr-24"]["vmx"].observed
    msrs = conform.run_all([b], conform.SUITES["msrs"][:4])
    assert all(row["vmx"].status == "pass" for row in msrs.values())


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
        # msrs_test: without either feature TSC_AUX is absent for every vCPU, and the
        # save/restore list must agree (it does not list TSC_AUX).
        by_id = {c.id: c for c in conform.SUITES["msrs"]}
        for cid in ("msrs-1", "msrs-4", "msrs-5"):
            assert conform.run_case(by_id[cid], b).status == "pass", cid
        assert 0xC0000103 not in b.system().get_msr_index_list()
    finally:
        del VENDOR.cpu_models["test-no-rdtscp"]


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_recorder_batch_leaves_each_outcome_in_order(vendor):
    """One guest loop for many probes: each slot has its access's vector and value."""
    from pykvm import guest
    from pykvm.conform.common import Recorder
    vcpu = _backend(vendor).vcpu()
    holder = {}

    def body(a):
        rec = holder["rec"] = Recorder(a)
        rec.rd(0x174)
        assert rec.batch([("rd", conform.ABSENT_MSR), ("wr", 0x174, 0x55), ("rd", 0x174),
                          ("wr", 0xC0000100, conform.NC), ("wr", 0xC0000100, 0x1234),
                          ("rd", 0xC0000100)]) == 1
        rec.rd(0x174)
        a.done()
    image = guest.program(body)
    vcpu.load(image)
    guest.run_ucall(vcpu, image, guest.UcallCmd.DONE)
    got = [(v, x) for v, x, _ in holder["rec"].results(vcpu)]
    ok = guest.NO_VECTOR
    assert got == [(ok, 0), (13, 0), (ok, 0), (ok, 0x55), (13, 0), (ok, 0), (ok, 0x1234),
                   (ok, 0x55)]


def test_every_host_finding_is_a_case_with_evidence():
    ids = {c.id for c in conform.suite_cases("all")}
    for module, findings in host_findings.HOST_FINDINGS.items():
        for cid, f in findings.items():
            assert cid in ids, (module, cid)
            assert f.status in ("fail", "unsupported") and f.observed and f.evidence
            assert f.kind in ("deviation", "limitation")
            assert (f.kind == "limitation") == (f.status == "unsupported"), (module, cid)


def test_classify_labels_host_results():
    f = conform.host_finding("kvm_pvm", 13)
    assert f is not None
    assert conform.classify("kvm_pvm", 13, conform.Result("fail", "x " + f.observed)) == "known"
    assert conform.classify("kvm_pvm", 13, conform.Result("fail", "something else")) == "new"
    assert conform.classify("kvm_pvm", 13, conform.Result("pass")) == "fixed"
    assert conform.classify("kvm_pvm", 1, conform.Result("pass")) == "pass"
    assert conform.classify("kvm_pvm", 1, conform.Result("fail", "?")) == "new"
    assert conform.classify("other_module", 13, conform.Result("fail", f.observed)) == "new"


@pytest.fixture(scope="module")
def host():
    from pykvm.devkvm import KvmMachine
    ok, why = KvmMachine.available()
    if not ok:
        pytest.skip(f"no host KVM: {why}")
    b = conform.KvmBackend()
    yield b
    b.close()


@pytest.mark.parametrize("case", conform.suite_cases("all"), ids=lambda c: str(c.id))
def test_host_kvm_result_is_the_recorded_one(host, case):
    """Every case on the host's /dev/kvm gives what is recorded for its module: a pass,
    or the recorded deviation/limitation (host_findings.py, with its evidence). A new
    failure, a different one, or a recorded one that now passes means the host module
    changed: look, then update the record."""
    r = conform.run_case(case, host)
    label = conform.classify(host.module, case.id, r)
    f = conform.host_finding(host.module, case.id)
    assert label in ("pass", "known"), (
        f"{case.id} on {host.name}: {label}: got {r.status} {r.observed!r}; recorded: "
        + (f"{f.status} {f.observed!r} ({f.evidence})" if f else "pass"))


def test_conformance_doc_python_blocks_run():
    import pathlib
    import re
    doc = pathlib.Path(__file__).resolve().parent.parent / "docs" / "conformance.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    assert len(blocks) >= 2
    for b in blocks:
        exec(compile(b, str(doc), "exec"), {})
