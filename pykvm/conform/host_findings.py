"""What the host's KVM module is known to do differently, case by case, with the evidence.

Every case a host module does not pass has an entry here: the result it gives (status and
a distinctive part of what the case observed) and why that is the module's doing, not
the port's: what was measured, and what upstream KVM does (file and function). A case
without an entry is expected to pass. `pykvm conform --kvm` labels each host result
known (matches its entry), new (a failure without an entry, or a different one) or fixed
(an entry, but the case now passes), and tests/test_conform.py asserts them all, so a
change of the host module is noticed.

Two kinds: a *deviation* is behaviour upstream KVM would not show on this CPU; a
*limitation* is a case the port cannot run on this host (a feature the module does not
offer, or a module parameter that is off), reported as unsupported with the reason.

Measured on an AMD EPYC host (its /proc/cpuinfo lists rdtscp, rdpid, ibrs, ibpb, stibp,
ssbd; no flush_l1d), Linux 6.18, module kvm_pvm, kvm.force_emulation_prefix=0.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    status: str                 # the host's Result.status: "fail" or "unsupported"
    observed: str               # a part of Result.observed that identifies it
    evidence: str               # what was measured, and what upstream does instead
    kind: str = "deviation"     # or "limitation"

    def matches(self, result):
        return result.status == self.status and self.observed in result.observed


# ---- the evidence, one text per behaviour (several cases show the same one) ----------

_SYSENTER = (
    "The vCPU's CPUID vendor is the host's (AuthenticAMD); a guest WRMSR of "
    "0x123456789abc / 0x123456789000 to SYSENTER_ESP/EIP reads back all 64 bits. "
    "Upstream SVM keeps bits 63:32 only for an Intel-compatible guest "
    "(arch/x86/kvm/svm/svm.c svm_set_msr: sysenter_esp_hi/sysenter_eip_hi = "
    "guest_cpuid_is_intel_compatible() ? data >> 32 : 0), so an AMD guest reads 32 bits.")
_SPEC_CTRL_DROPPED = (
    "KVM_GET_SUPPORTED_CPUID offers AMD_IBRS, AMD_STIBP, AMD_SSBD (and leaf-7 STIBP, SSBD); "
    "a guest WRMSR(SPEC_CTRL) of 1, 2 or 4 does not fault but RDMSR and the host's "
    "KVM_GET_MSRS both read 0. Upstream stores the value and returns it "
    "(svm/svm.c svm_set_msr/svm_get_msr MSR_IA32_SPEC_CTRL, after "
    "kvm_spec_ctrl_test_value).")
_SPEC_CTRL_QEMU64 = (
    "The VMM sets qemu64's CPUID (no leaf-7 features, no 0x80000008 EBX bits), but "
    "kvm_pvm replaces leaves 1 and 7 with values of its own (KVM_GET_CPUID2 and the "
    "guest's CPUID both show leaf 7 EDX = 0x88000010: STIBP, SSBD), so msr.c's "
    "this_cpu_has() sees STIBP and SSBD; then SPEC_CTRL writes are dropped as in the msr "
    "configuration (write 2, read 0). Upstream keeps the CPUID userspace set "
    "(kvm_set_cpuid) and, for this CPUID, would #GP every SPEC_CTRL access "
    "(guest_has_spec_ctrl_msr() counts only SPEC_CTRL and the AMD_* bits).")
_FLUSH_CMD = (
    "Neither the host CPU nor the guest's CPUID has FLUSH_L1D, yet guest WRMSR(FLUSH_CMD) "
    "of 0, 1 and even reserved bit 1 (2) do not fault; RDMSR faults. Upstream: #GP "
    "without guest FLUSH_L1D, and for any value but L1D_FLUSH "
    "(arch/x86/kvm/x86.c kvm_set_msr_common MSR_IA32_FLUSH_CMD).")
_MISC_ENABLE = (
    "A fresh vCPU's MISC_ENABLE (KVM_GET_MSRS 0x1a0) is 0x1 (FAST_STRING). Upstream resets "
    "it to PEBS_UNAVAIL | BTS_UNAVAIL = 0x1800 (arch/x86/kvm/x86.c kvm_vcpu_reset, "
    "!init_event), the reset value msrs_test.c checks first.")
_NO_RDTSCP = (
    "The host CPU has rdtscp and rdpid (/proc/cpuinfo), but kvm_pvm's "
    "KVM_GET_SUPPORTED_CPUID offers neither (upstream kvm_initialize_cpu_caps: F(RDTSCP), "
    "F(RDPID), masked only by the host CPUID and MSR_TSC_AUX support). The case needs "
    "them; docs/conformance.md also records RDTSCP as KVM_EXIT_INTERNAL_ERROR there.")
_NO_FEP = (
    "kvm.force_emulation_prefix is 0 on this host (/sys/module/kvm/parameters): upstream "
    "skips the forced-emulation checks too (is_fep_available / "
    "is_forced_emulation_enabled).")

_RDMSR_MISC = "Wanted 0x1800 from RDMSR(0x1a0)): expected 0x1800, got 0x1"


def _sysenter(msr):
    return f"Wanted 0x56789000 from RDMSR({msr})): expected 0x56789000, got 0x123456789000"


HOST_FINDINGS = {
    "kvm_pvm": {
        # the docs/conformance.md table
        2: Finding("fail", "got 0x123456789abc, want 0x56789abc", _SYSENTER),
        10: Finding("unsupported", "no RDTSCP in CPUID", _NO_RDTSCP, "limitation"),
        11: Finding("unsupported", "no RDPID in CPUID", _NO_RDTSCP, "limitation"),
        12: Finding("unsupported", "no RDTSCP in CPUID", _NO_RDTSCP, "limitation"),
        13: Finding("fail", "write 0x1: got 0x0, want 0x1", _SPEC_CTRL_DROPPED),
        # kvm-unit-tests x86/msr.c
        "msr-23": Finding("fail", "SPEC_CTRL = 1: read back 0x0, wrote 0x1", _SPEC_CTRL_DROPPED),
        "msr-25": Finding("fail", "WRMSR(FLUSH_CMD, 0x0): no fault", _FLUSH_CMD),
        "msr-26": Finding("unsupported", "force_emulation_prefix=0", _NO_FEP, "limitation"),
        "msr-49": Finding("fail", "SPEC_CTRL = 2: read back 0x0, wrote 0x2",
                          _SPEC_CTRL_QEMU64),
        "msr-51": Finding("fail", "WRMSR(FLUSH_CMD, 0x0): no fault", _FLUSH_CMD),
        "msr-52": Finding("unsupported", "force_emulation_prefix=0", _NO_FEP, "limitation"),
        # selftests x86/msrs_test.c (both passes)
        "msrs-2": Finding("fail", _RDMSR_MISC, _MISC_ENABLE),
        "msrs-7": Finding("fail", _sysenter("0x175"), _SYSENTER),
        "msrs-8": Finding("fail", _sysenter("0x176"), _SYSENTER),
        "msrs-27": Finding("fail", _RDMSR_MISC, _MISC_ENABLE),
        "msrs-32": Finding("fail", _sysenter("0x175"), _SYSENTER),
        "msrs-33": Finding("fail", _sysenter("0x176"), _SYSENTER),
        # selftests x86/userspace_msr_exit_test.c
        "userspace-msr-2": Finding("unsupported", "this host does not set", _NO_FEP,
                                   "limitation"),
    },
}


# Behaviour of the module's ioctls that tests/test_msr_api.py asserts, by name.
HOST_API_FINDINGS = {
    "kvm_pvm": {
        "cpuid_rewritten": Finding(
            "fail", "KVM_GET_CPUID2 differs from KVM_SET_CPUID2",
            "After KVM_SET_CPUID2 of KVM_GET_SUPPORTED_CPUID, KVM_GET_CPUID2 (and the "
            "guest's CPUID) give other leaf 1 ECX/EDX and leaf 7 EBX/ECX/EDX values (e.g. "
            "leaf 1 ECX 0x81202000 -> 0xf7f83203, leaf 7 EBX 0x1800002 -> 0x219c03ab); "
            "after the first run KVM_SET_CPUID2 of the very entries set before fails "
            "EINVAL, while the entries KVM_GET_CPUID2 gives are accepted. Upstream "
            "holds what was set, with only its runtime bits updated (kvm_set_cpuid, "
            "kvm_update_cpuid_runtime), and accepts the same CPUID again (kvm_cpuid_check_equal)."),
        "feature_msr_non_feature": Finding(
            "fail", "KVM_GET_MSRS on /dev/kvm reads SYSENTER_CS",
            "System-fd KVM_GET_MSRS processes MSR 0x174 (not in "
            "KVM_GET_MSR_FEATURE_INDEX_LIST). Upstream stops at it: kvm_get_feature_msr "
            "falls to the vendor's get_feature_msr, which returns KVM_MSR_RET_UNSUPPORTED "
            "(arch/x86/kvm/x86.c do_get_feature_msr, svm_get_feature_msr)."),
    },
}


def host_finding(module, case_id):
    """The recorded finding for a case on a host module, or None (expected to pass)."""
    return HOST_FINDINGS.get(module, {}).get(case_id)


def classify(module, case_id, result):
    """How a host result compares with the record: "pass", "known" (matches its
    finding), "new" (not a pass and not the recorded finding), or "fixed" (a finding is
    recorded but the case passes)."""
    f = host_finding(module, case_id)
    if result.status == "pass":
        return "fixed" if f else "pass"
    return "known" if f and f.matches(result) else "new"
