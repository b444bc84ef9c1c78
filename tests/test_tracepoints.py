"""Tracepoint text as the kernel prints it: exit reasons by name for VMX and SVM, userspace
exits as KVM_EXIT_*, and a replay that counts the VM-exits its trace shows."""
import re
from types import SimpleNamespace

import pytest

from pykvm import check, conform, guest
from pykvm.tracepoints import exit_reason_name, userspace_exit_reason


def test_vmx_reasons_as_vmx_exit_reasons_names_them():
    assert exit_reason_name("vmx", 31) == "MSR_READ"
    assert exit_reason_name("vmx", 32) == "MSR_WRITE"
    assert exit_reason_name("vmx", 30) == "IO_INSTRUCTION"
    assert exit_reason_name("vmx", 10) == "CPUID"
    # Bit 31: the entry failed; the kernel prints the flag after the basic reason.
    assert exit_reason_name("vmx", 33 | 0x8000_0000) == "INVALID_STATE FAILED_VMENTRY"
    assert exit_reason_name("vmx", 0x7777) == "0x7777"


def test_svm_reasons_as_svm_exit_reasons_names_them():
    assert exit_reason_name("svm", 0x7C) == "msr"
    assert exit_reason_name("svm", 0x7B) == "io"
    assert exit_reason_name("svm", 0x81) == "hypercall"
    assert exit_reason_name("svm", 0x40 + 13) == "GP excp"
    assert exit_reason_name("svm", 0xFFFF_FFFF) == "invalid_guest_state"


def test_userspace_exit_names():
    assert userspace_exit_reason(2) == "KVM_EXIT_IO (2)"
    assert userspace_exit_reason(8) == "KVM_EXIT_SHUTDOWN (8)"


# The checker's guest reads and writes MSRs, syncs on a port, and halts in the kernel
# every other pass.
@pytest.mark.parametrize("vendor,preset,reasons", [
    ("vmx", "v5.18", {"MSR_READ", "MSR_WRITE", "IO_INSTRUCTION", "HLT"}),
    ("svm", "v5.10", {"msr", "io", "hlt"}),
])
def test_check_trace_names_reasons_and_replay_counts_its_exits(tmp_path, vendor, preset,
                                                               reasons):
    r = check.check(vendor, preset=preset, bound=1, walks=0)
    assert r.violation is not None
    text = r.report()
    named = set(re.findall(r"kvm_exit: reason (\S+)", text))
    assert named == reasons
    assert "reason 0x" not in text
    assert "kvm_userspace_exit: reason KVM_EXIT_IO (2)" in text
    path = tmp_path / "v.json"
    r.save(path)
    again = check.replay(str(path))
    shown = again.report()
    in_trace = shown.count("kvm_exit:")
    assert in_trace > 0
    assert f"({in_trace} VM-exits in them)" in shown.splitlines()[0]


def _fake_backend(ibpb):
    vcpu = SimpleNamespace(load=lambda image: None)
    return SimpleNamespace(features=SimpleNamespace(ibpb=ibpb), vcpu=lambda: vcpu)


def test_conform_cell_names_only_what_went_wrong(monkeypatch):
    table = conform.table          # the docs/conformance.md cases live there
    gp, ok = 13, guest.NO_VECTOR
    # RDMSR PRED_CMD #GP as it should; WRMSR 1 accepted without IBPB: only the WRMSR is wrong.
    monkeypatch.setattr(table, "_syncs", lambda vcpu, image, n: [(gp, ok, 0)])
    r = table.case_pred_cmd(_fake_backend(ibpb=False))
    assert r.status == "fail"
    assert "RDMSR" not in r.observed and "WRMSR 1 ok (want #GP)" in r.observed
    monkeypatch.setattr(table, "_syncs", lambda vcpu, image, n: [(gp, gp, 0)])
    assert table.case_pred_cmd(_fake_backend(ibpb=False)).status == "pass"


def test_check_reports_progress_while_it_explores():
    seen = []
    r = check.check("vmx", bound=2, walks=3000, progress=seen.append)
    assert seen, "no progress reported"
    last = seen[-1]
    assert last["events"] == r.events and last["walks"] == r.walks == 3000
    assert all(a["events"] <= b["events"] for a, b in zip(seen, seen[1:]))
