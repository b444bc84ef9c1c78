"""Our port of the KVM selftests' x86/msrs_test.c (torvalds/linux commit cb9f145f638d,
tools/testing/selftests/kvm/x86/msrs_test.c).

Upstream builds one VM with three vCPUs (the third with every tested feature cleared
from its CPUID), runs them one after the other on one task, and walks a table of MSRs:
for each entry, every vCPU runs the guest twice (guest_main), and the host checks
after each stop (host_test_msr). It does the whole walk twice, the second time writing
through KVM_SET_ONE_REG instead of KVM_SET_MSRS (if KVM_CAP_ONE_REG), and KVM-defined
registers (GUEST_SSP) are tested only in that second pass (host_test_kvm_reg).

Here each (entry, pass) is one case with a fresh VM, set up the same way: an in-kernel
irqchip and every vCPU made RUNNABLE (the selftests' vm_arch_vcpu_add), the supported
CPUID on vCPUs 0 and 1, the table's features cleared on vCPU 2 (vcpu_clear_cpuid_feature;
LM and the stand-in HYPERVISOR stay). The guest decides by CPUID at run time, as
this_cpu_has() does; each vCPU has a stack of its own. One more case checks the table
against KVM_GET_MSR_INDEX_LIST and KVM_GET_SUPPORTED_CPUID as test_msrs() does.
"""
from __future__ import annotations

import errno as E
from dataclasses import dataclass, replace

from .. import guest
from ..devkvm import uapi
from ..errors import GuestAssertion
from ..guest import NO_VECTOR, STACK_TOP
from .common import (NC, Case, CaseFailed, FEATURES, check, cpuid_has, cpuid_without,
                     is_amd, need)

UPSTREAM = "selftests kvm x86/msrs_test.c"
KVM_CAP_IRQCHIP, KVM_CAP_ONE_REG = 0, 70
GP_VECTOR = 13

MSR_FS_BASE, MSR_GS_BASE = 0xC0000100, 0xC0000101
MSR_IA32_U_CET, MSR_IA32_S_CET = 0x6A0, 0x6A2
MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP, MSR_TSC_AUX = 0x175, 0x176, 0xC0000103
CET_SHSTK_EN, CET_ENDBR_EN = 1 << 0, 1 << 2
CET_RESERVED = 0xF << 6                     # msr-index.h: bits 9:6
CANONICAL = 0x123456789000                  # page aligned (msrs_test.c: canonical_val)
U64_VAL = 0xAAAA5555AAAA5555                # bits in every byte (u64_val)
MISC_ENABLE_RESET = (1 << 12) | (1 << 11)   # PEBS_UNAVAIL | BTS_UNAVAIL
MISC_ENABLE_FAST_STRING = 1 << 0
NR_VCPUS = 3
VCPU_STACK = 0x4000                         # each vCPU's stack below the previous one's


@dataclass(frozen=True)
class Msr:
    """One entry of test_msrs()'s table (struct kvm_msr)."""
    name: str
    index: int
    write_val: int
    rsvd_val: int = 0
    reset_val: int = 0
    feature: str = "HYPERVISOR"             # X86_FEATURE_NONE is HYPERVISOR upstream
    feature2: str | None = None             # None: the same as feature
    is_kvm_defined: bool = False

    @property
    def f2(self):
        return self.feature2 or self.feature


def _canonical(name, index, feature):
    return Msr(name, index, CANONICAL, NC, 0, feature)


MSRS = [
    Msr("MSR_IA32_MISC_ENABLE", 0x1A0, MISC_ENABLE_RESET | MISC_ENABLE_FAST_STRING,
        MISC_ENABLE_FAST_STRING, MISC_ENABLE_RESET),
    Msr("MSR_IA32_CR_PAT", 0x277, 0x07070707, 0, 0x0007040600070406),
    # TSC_AUX exists with RDTSCP or RDPID: one entry for each.
    Msr("MSR_TSC_AUX", MSR_TSC_AUX, 0x12345678, U64_VAL, 0, "RDTSCP", "RDPID"),
    Msr("MSR_TSC_AUX", MSR_TSC_AUX, 0x12345678, U64_VAL, 0, "RDPID", "RDTSCP"),
    Msr("MSR_IA32_SYSENTER_CS", 0x174, 0x1234),
    # Upstream does not test non-canonical SYSENTER values: KVM's emulated writes
    # accept what Intel hardware refuses.
    Msr("MSR_IA32_SYSENTER_ESP", MSR_IA32_SYSENTER_ESP, CANONICAL),
    Msr("MSR_IA32_SYSENTER_EIP", MSR_IA32_SYSENTER_EIP, CANONICAL),
    _canonical("MSR_FS_BASE", MSR_FS_BASE, "LM"),
    _canonical("MSR_GS_BASE", MSR_GS_BASE, "LM"),
    _canonical("MSR_KERNEL_GS_BASE", 0xC0000102, "LM"),
    _canonical("MSR_LSTAR", 0xC0000082, "LM"),
    _canonical("MSR_CSTAR", 0xC0000083, "LM"),
    Msr("MSR_SYSCALL_MASK", 0xC0000084, 0xFFFFFFFF, 0, 0, "LM"),
    Msr("MSR_IA32_S_CET", MSR_IA32_S_CET, CET_SHSTK_EN, CET_RESERVED, 0, "SHSTK", "IBT"),
    Msr("MSR_IA32_S_CET", MSR_IA32_S_CET, CET_ENDBR_EN, CET_RESERVED, 0, "IBT", "SHSTK"),
    Msr("MSR_IA32_U_CET", MSR_IA32_U_CET, CET_SHSTK_EN, CET_RESERVED, 0, "SHSTK", "IBT"),
    Msr("MSR_IA32_U_CET", MSR_IA32_U_CET, CET_ENDBR_EN, CET_RESERVED, 0, "IBT", "SHSTK"),
    *[m for pl in range(4) for m in (
        _canonical(f"MSR_IA32_PL{pl}_SSP", 0x6A4 + pl, "SHSTK"),
        Msr(f"MSR_IA32_PL{pl}_SSP", 0x6A4 + pl, CANONICAL, CANONICAL | 1, 0, "SHSTK"))],
    Msr("GUEST_SSP", uapi.KVM_REG_GUEST_SSP, CANONICAL, NC, 0, "SHSTK",
        is_kvm_defined=True),
]

# The features cleared on vCPU 2: every entry's, except LM (selftests are 64-bit, and
# KVM does not honour LM=0 for the 64-bit MSRs) and the HYPERVISOR stand-in.
CLEARED = sorted({m.feature for m in MSRS} - {"LM", "HYPERVISOR"})


def fixup_rdmsr_val(amd, index, want):
    """What a read gives after writing `want`: AMD drops bits 63:32 of SYSENTER_ESP/EIP
    and TSC_AUX, and KVM follows the guest's vendor (the host's, in this test)."""
    if amd and index in (MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP, MSR_TSC_AUX):
        return want & 0xFFFFFFFF
    return want


# ---- the guest -------------------------------------------------------------------------

def _cpu_has(a, name, if_not):
    """this_cpu_has(): CPUID at run time; jump to `if_not` without the feature."""
    f = FEATURES[name]
    a.mov("eax", f.function)
    a.mov("ecx", f.index)
    a.cpuid()
    a.test(f.reg, 1 << f.bit)
    a.jz(if_not)


def _rdmsr(a, index, want):
    """__rdmsr(): RDMSR must not fault and must give `want`."""
    a.rdmsr_safe(index)
    a.assert_eq("r9", NO_VECTOR, f"Unexpected exception on RDMSR({index:#x})")
    a.assert_eq("rax", want, f"Wanted {want:#x} from RDMSR({index:#x})")


def _wrmsr(a, amd, index, val):
    """__wrmsr(): WRMSR must not fault; the read-back is the vendor-fixed value."""
    a.wrmsr_safe(index, val)
    a.assert_eq("r9", NO_VECTOR, f"Unexpected exception on WRMSR({index:#x}, {val:#x})")
    _rdmsr(a, index, fixup_rdmsr_val(amd, index, val))


def guest_code(msr, amd, ignore_msrs):
    """guest_main() for one entry: two SYNCs (the host checks at each), then DONE."""
    def body(a):
        unsupported, reserved = a.label(), a.label()
        _cpu_has(a, msr.feature, unsupported)
        # guest_test_supported_msr
        _rdmsr(a, msr.index, msr.reset_val)
        _wrmsr(a, amd, msr.index, msr.write_val)
        a.sync(fixup_rdmsr_val(amd, msr.index, msr.write_val))
        _rdmsr(a, msr.index, msr.reset_val)
        a.jmp(reserved)
        # guest_test_unsupported_msr (skipped whole with kvm.ignore_msrs)
        a.bind(unsupported)
        if not ignore_msrs:
            skip_rd, skip_wr, test_rd = a.label(), a.label(), a.label()
            # {S,U}_CET exist with IBT or SHSTK: only the WRMSR of the primary feature's
            # value faults then. Any other MSR is simply not tested.
            _cpu_has(a, msr.f2, test_rd)
            a.jmp(skip_rd if msr.index in (MSR_IA32_U_CET, MSR_IA32_S_CET) else skip_wr)
            a.bind(test_rd)
            a.rdmsr_safe(msr.index)
            a.assert_eq("r9", GP_VECTOR, f"Wanted #GP on RDMSR({msr.index:#x})")
            a.bind(skip_rd)
            a.wrmsr_safe(msr.index, msr.write_val)
            a.assert_eq("r9", GP_VECTOR, f"Wanted #GP on WRMSR({msr.index:#x}, "
                                         f"{msr.write_val:#x})")
            a.bind(skip_wr)
        a.sync(0)
        # guest_test_reserved_val
        a.bind(reserved)
        if msr.rsvd_val and not ignore_msrs:
            gp, out = a.label(), a.label()
            truncated = msr.rsvd_val != fixup_rdmsr_val(amd, msr.index, msr.rsvd_val)
            if truncated:
                # The CPU truncates instead of faulting: success, truncated value.
                _cpu_has(a, msr.feature, gp)
                _wrmsr(a, amd, msr.index, msr.rsvd_val)
                _wrmsr(a, amd, msr.index, msr.reset_val)
                a.jmp(out)
            a.bind(gp)
            a.wrmsr_safe(msr.index, msr.rsvd_val)
            a.assert_eq("r9", GP_VECTOR, f"Wanted #GP on WRMSR({msr.index:#x}, "
                                         f"{msr.rsvd_val:#x})")
            a.bind(out)
        a.sync(msr.reset_val)
        a.done()
    return guest.program(body)


# ---- the host --------------------------------------------------------------------------

def _errno(exc):
    return getattr(exc, "errno", None)


def ignore_msrs(b):
    """kvm.ignore_msrs on the backend (kvm_is_ignore_msrs())."""
    if b.is_model:
        return bool(b.params.get("ignore_msrs"))
    try:
        with open("/sys/module/kvm/parameters/ignore_msrs") as f:
            return f.read().strip() in ("Y", "1")
    except OSError:
        return False


def _vm(b):
    """vm_create_with_vcpus(3): irqchip, RUNNABLE vCPUs, supported CPUID, vCPU 2's
    features cleared before anything runs."""
    sysm = b.system()
    vm = b.vm(cpus=2)
    need(sysm.check_extension(KVM_CAP_IRQCHIP), "no in-kernel irqchip (KVM_CAP_IRQCHIP)")
    vm.create_irqchip()
    supported = sysm.get_supported_cpuid()
    vcpus = []
    for i in range(NR_VCPUS):
        v = vm.create_vcpu()
        v.set_mp_state(uapi.KVM_MP_STATE_RUNNABLE)
        v.set_cpuid(cpuid_without(supported, CLEARED) if i == 2 else supported)
        vcpus.append(v)
    return vm, vcpus, supported


def _has_reg(vcpu, reg):
    """vcpu_has_reg(): in KVM_GET_REG_LIST? Upstream expects at most one register."""
    regs = vcpu.get_reg_list()
    check(len(regs) <= 1, f"KVM reports {len(regs)} regs, the test expects at most 1")
    return reg in regs


def host_test_kvm_reg(vcpu, i, msr):
    """host_test_kvm_reg(): a KVM-defined register through ONE_REG."""
    reg = uapi.KVM_X86_REG_KVM(msr.index)
    has = cpuid_has(vcpu.get_cpuid(), msr.feature)
    listed = _has_reg(vcpu, reg)
    check(listed == has, f"vCPU{i}: {msr.name} {'is' if listed else 'is not'} in "
                         f"KVM_GET_REG_LIST, CPUID says {'has' if has else 'has not'}")
    rsvd = msr.rsvd_val
    if not has:
        try:
            vcpu.get_one_reg(reg)
        except Exception as e:  # noqa: BLE001 - the errno is what is checked
            check(_errno(e) == E.EINVAL, f"vCPU{i}: get_reg({msr.name}) failed with "
                                         f"{E.errorcode.get(_errno(e), e)}, want EINVAL")
        else:
            raise CaseFailed(f"vCPU{i}: get_reg({msr.name}) succeeded without "
                             f"{msr.feature}")
        rsvd = 0
    else:
        val = vcpu.get_one_reg(reg)
        check(val == msr.reset_val, f"vCPU{i}: Wanted {msr.reset_val:#x} from "
                                    f"get_reg({msr.name}), got {val:#x}")
        vcpu.set_one_reg(reg, msr.write_val)
        val = vcpu.get_one_reg(reg)
        check(val == msr.write_val, f"vCPU{i}: Wanted {msr.write_val:#x} from "
                                    f"get_reg({msr.name}), got {val:#x}")
    try:
        vcpu.set_one_reg(reg, rsvd)
    except Exception:  # noqa: BLE001 - failing is what upstream wants
        return
    raise CaseFailed(f"vCPU{i}: set_reg({msr.name}, {rsvd:#x}) succeeded")


def host_test_msr(vcpu, i, msr, guest_val, kvm_has, use_one_reg, has_one_reg):
    """host_test_msr(): what the guest left is what KVM_GET_MSRS sees; the reset
    value written from the host (MSRS or ONE_REG) reads back both ways."""
    if not kvm_has:
        return
    val = vcpu.get_msr(msr.index)
    check(val == guest_val, f"vCPU{i}: Wanted {guest_val:#x} from get_msr({msr.name}), "
                            f"got {val:#x}")
    if use_one_reg:
        vcpu.set_one_reg(uapi.KVM_X86_REG_MSR(msr.index), msr.reset_val)
    else:
        vcpu.set_msr(msr.index, msr.reset_val)
    val = vcpu.get_msr(msr.index)
    check(val == msr.reset_val, f"vCPU{i}: Wanted {msr.reset_val:#x} from "
                                f"get_msr({msr.name}), got {val:#x}")
    if has_one_reg:
        val = vcpu.get_one_reg(uapi.KVM_X86_REG_MSR(msr.index))
        check(val == msr.reset_val, f"vCPU{i}: Wanted {msr.reset_val:#x} from "
                                    f"get_reg({msr.name}), got {val:#x}")


def _run_to(vcpu, i, image, cmd):
    try:
        return guest.run_ucall(vcpu, image, cmd)
    except GuestAssertion as e:
        raise CaseFailed(f"vCPU{i}: {e}") from None


def _entry_case(msr, use_one_reg):
    def run(b):
        sysm = b.system()
        has_one_reg = bool(sysm.check_extension(KVM_CAP_ONE_REG))
        if use_one_reg:
            need(has_one_reg, "no KVM_CAP_ONE_REG: upstream runs only the KVM_SET_MSRS pass")
        vm, vcpus, supported = _vm(b)
        if msr.is_kvm_defined:
            for i, v in enumerate(vcpus):
                host_test_kvm_reg(v, i, msr)
            return None
        amd = is_amd(supported)
        image = guest_code(msr, amd, ignore_msrs(b))
        for i, v in enumerate(vcpus):
            v.load(image)
            v.set_regs(replace(v.get_regs(), rsp=STACK_TOP - i * VCPU_STACK))
        kvm_has = cpuid_has(supported, msr.feature)
        # vcpus_run() twice: every vCPU to its next SYNC, the host checks after each.
        for _ in range(2):
            for i, v in enumerate(vcpus):
                uc = _run_to(v, i, image, guest.UcallCmd.SYNC)
                host_test_msr(v, i, msr, uc.args[0], kvm_has, use_one_reg, has_one_reg)
        for i, v in enumerate(vcpus):
            _run_to(v, i, image, guest.UcallCmd.DONE)
        return None
    return run


def _index_list_case(b):
    """test_msrs(): an MSR is in KVM_GET_MSR_INDEX_LIST exactly when
    KVM_GET_SUPPORTED_CPUID has one of its features (FS/GS_BASE excepted: SREGS)."""
    sysm = b.system()
    listed = set(sysm.get_msr_index_list())
    supported = sysm.get_supported_cpuid()
    wrong = []
    for msr in MSRS:
        if msr.is_kvm_defined or msr.index in (MSR_FS_BASE, MSR_GS_BASE):
            continue
        has = cpuid_has(supported, msr.feature) or cpuid_has(supported, msr.f2)
        if (msr.index in listed) != has:
            wrong.append(f"{msr.name} {'is' if msr.index in listed else 'is not'} in the "
                         f"save/restore list, but {'supported' if has else 'unsupported'} "
                         f"by CPUID")
    check(not wrong, "; ".join(dict.fromkeys(wrong)))


def _cases():
    out = [Case(1, "save/restore list vs supported CPUID", "consistent", _index_list_case,
                suite="msrs", upstream=f"{UPSTREAM}: test_msrs "
                                       "kvm_msr_is_in_save_restore_list == kvm_cpu_has")]
    n = 1
    for use_one_reg, how in ((False, "KVM_SET_MSRS"), (True, "ONE_REG")):
        for msr in MSRS:
            if msr.is_kvm_defined and not use_one_reg:
                continue        # host_test_kvm_reg returns at once without ONE_REG
            n += 1
            what = "host_test_kvm_reg" if msr.is_kvm_defined else \
                "guest_main + host_test_msr"
            feats = msr.feature if msr.f2 == msr.feature else f"{msr.feature}/{msr.f2}"
            expect = (f"ONE_REG only with {feats}" if msr.is_kvm_defined else
                      f"rw with {feats}, #GP without" + (
                          f", {msr.rsvd_val:#x} #GP" if msr.rsvd_val else ""))
            out.append(Case(n, f"[{how}] {msr.name} ({feats})", expect,
                            _entry_case(msr, use_one_reg), suite="msrs",
                            upstream=f"{UPSTREAM}: {what} {msr.name} "
                                     f"({'use_one_reg' if use_one_reg else 'MSRS'} pass)"))
    return out


CASES = _cases()
