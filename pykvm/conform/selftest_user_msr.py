"""Our port of the KVM selftests' x86/userspace_msr_exit_test.c (torvalds/linux commit
08c51f5b, tools/testing/selftests/kvm/x86/userspace_msr_exit_test.c).

Userspace MSR exits (KVM_CAP_X86_USER_SPACE_MSR) and MSR filters
(KVM_X86_SET_MSR_FILTER): which guest accesses KVM hands to the VMM, with which reason
(KVM_MSR_EXIT_REASON_FILTER for a filtered access, _UNKNOWN for an MSR KVM does not
know), what the VMM's answer does (data, or error = 1 for a #GP), and which flag bits
the two ioctls accept. Upstream's four tests, msr_filter_allow, msr_filter_deny,
msr_permission_bitmap and user_exit_msr_flags, are one case each here (the flags test
three: one per flag field), plus the instruction-emulator half of msr_filter_allow,
which upstream runs only with kvm.force_emulation_prefix=1.

The VM is what the selftests' vm_create_with_one_vcpu() makes: one vCPU, with an
in-kernel irqchip when KVM has one. Where upstream's guest catches #GP with its own
handler (test_rdmsr/test_wrmsr and guest_exception_count), ours uses the runtime's
rdmsr_safe/wrmsr_safe: the same outcome, a fault counted and RAX/RDX zeroed.
"""
from __future__ import annotations

from .. import exits as X
from .. import guest
from ..devkvm import uapi
from ..devkvm.vm import MsrFilterRange
from ..errors import GuestAssertion
from ..guest import NO_VECTOR
from .common import Case, CaseFailed, check, need
from .._lib import lib as _lib

UPSTREAM = "selftests kvm x86/userspace_msr_exit_test.c"
KVM_CAP_IRQCHIP = 0
GP_VECTOR = 13

MSR_NON_EXISTENT = 0x474F4F00
MSR_IA32_XSS = 0xDA0
MSR_IA32_FLUSH_CMD = 0x10B
MSR_IA32_POWER_CTL = 0x1FC
MSR_SYSCALL_MASK = 0xC0000084
MSR_FS_BASE, MSR_GS_BASE = 0xC0000100, 0xC0000101
DEADBEEF = 0xDEADBEEF
# The ABI's numbers, from the simulated KVM's copy of <linux/kvm.h> (equal to the
# system's, tests/test_uapi.py): importing the suite needs no system header.
RW = _lib.KVM_MSR_FILTER_READ | _lib.KVM_MSR_FILTER_WRITE
R, W = _lib.KVM_MSR_FILTER_READ, _lib.KVM_MSR_FILTER_WRITE
BITMAP_SIZE = _lib.KVM_MSR_FILTER_MAX_BITMAP_SIZE
DENY = b"\0" * 8                      # deny_bits: one u64 of zeroes

FILTER_ALLOW = [MsrFilterRange(RW, MSR_IA32_XSS, 1, DENY),           # KVM knows it
                MsrFilterRange(RW, MSR_IA32_FLUSH_CMD, 1, DENY),     # KVM may not
                MsrFilterRange(RW, MSR_NON_EXISTENT, 1, DENY)]       # nobody does
FILTER_FS = [MsrFilterRange(R, MSR_FS_BASE, 1, DENY)]
FILTER_GS = [MsrFilterRange(R, MSR_GS_BASE, 1, DENY)]


def _bitmap(*denied):
    """A full-size bitmap (KVM_MSR_FILTER_MAX_BITMAP_SIZE bytes) allowing everything
    but `denied` (prepare_bitmaps/deny_msr: the index modulo the bitmap size)."""
    b = bytearray(b"\xff" * BITMAP_SIZE)
    for msr in denied:
        i = msr & (BITMAP_SIZE - 1)
        b[i // 8] &= ~(1 << (i % 8)) & 0xFF
    return bytes(b)


def filter_deny():
    """filter_deny: default deny; reads of SYSCALL_MASK and GS_BASE and writes of
    POWER_CTL denied in ranges that allow everything else; 0xdeadbeef allowed."""
    n = BITMAP_SIZE * 8
    return [MsrFilterRange(R, 0x00000000, n, _bitmap()),
            MsrFilterRange(W, 0x00000000, n, _bitmap(MSR_IA32_POWER_CTL)),
            MsrFilterRange(RW, 0x40000000, n, _bitmap()),
            MsrFilterRange(R, 0xC0000000, n, _bitmap(MSR_SYSCALL_MASK, MSR_GS_BASE)),
            MsrFilterRange(W, 0xC0000000, n, _bitmap()),
            MsrFilterRange(RW, DEADBEEF, 1, b"\x01")]


# ---- the VM and the host's loop ---------------------------------------------------------

def _vcpu(b):
    """vm_create_with_one_vcpu(): the capabilities upstream asserts, an irqchip if KVM
    has one, one vCPU with the supported CPUID."""
    sysm = b.system()
    need(sysm.check_extension(uapi.KVM_CAP_X86_USER_SPACE_MSR),
         "no KVM_CAP_X86_USER_SPACE_MSR")
    need(sysm.check_extension(uapi.KVM_CAP_X86_MSR_FILTER), "no KVM_CAP_X86_MSR_FILTER")
    vm = b.vm()
    if sysm.check_extension(KVM_CAP_IRQCHIP):
        vm.create_irqchip()
    vcpu = vm.create_vcpu()
    vcpu.set_cpuid(sysm.get_supported_cpuid())
    return vm, vcpu


def _ucall(vcpu, ex, image):
    """A ucall exit, or CaseFailed naming the exit (guest assertions included)."""
    try:
        return guest.get_ucall(vcpu, ex, image).check()
    except GuestAssertion as e:
        raise CaseFailed(str(e)) from None


def _expect_msr_exit(vcpu, image, kind, index):
    """run_guest_then_process_{rdmsr,wrmsr}: the next exit must be `kind` for `index`."""
    ex = vcpu.run()
    if isinstance(ex, X.Io):
        _ucall(vcpu, ex, image)        # a guest assertion reports itself here
    check(isinstance(ex, kind), f"wanted {kind.__name__} of MSR {index:#x}, got "
                                f"{guest.describe_exit(ex)}")
    check(ex.index == index, f"Unexpected msr ({ex.index:#x}), expected {index:#x}")
    return ex


def _expect_ucall(vcpu, image, cmd):
    ex = vcpu.run()
    uc = _ucall(vcpu, ex, image)
    check(uc.cmd == cmd, f"wanted ucall {cmd.name}, got {uc.cmd.name}")
    return uc


# ---- msr_filter_allow ---------------------------------------------------------------------

def _count_fault(a, want, what):
    """GUEST_ASSERT(guest_exception_count == want) for the last access."""
    if want:
        a.assert_eq("r9", GP_VECTOR, f"{what}: guest_exception_count == 1")
    else:
        a.assert_eq("r9", NO_VECTOR, f"{what}: guest_exception_count == 0")


def _filter_allow_guest(a):
    """guest_code_filter_allow, without the forced-emulation half."""
    a.rdmsr_safe(MSR_IA32_XSS)
    a.assert_eq("rax", 0, "RDMSR(XSS) == 0")
    _count_fault(a, 0, "RDMSR(XSS)")
    a.wrmsr_safe(MSR_IA32_XSS, 0)
    _count_fault(a, 0, "WRMSR(XSS, 0)")
    a.wrmsr_safe(MSR_IA32_XSS, 1)
    _count_fault(a, 1, "WRMSR(XSS, 1)")
    a.rdmsr_safe(MSR_IA32_FLUSH_CMD)
    _count_fault(a, 1, "RDMSR(FLUSH_CMD)")
    a.wrmsr_safe(MSR_IA32_FLUSH_CMD, 0)
    _count_fault(a, 1, "WRMSR(FLUSH_CMD, 0)")
    a.wrmsr_safe(MSR_IA32_FLUSH_CMD, 1)
    _count_fault(a, 0, "WRMSR(FLUSH_CMD, 1)")
    a.wrmsr_safe(MSR_NON_EXISTENT, 2)
    _count_fault(a, 0, "WRMSR(MSR_NON_EXISTENT, 2)")
    a.rdmsr_safe(MSR_NON_EXISTENT)
    a.assert_eq("rax", 2, "RDMSR(MSR_NON_EXISTENT) == 2")
    _count_fault(a, 0, "RDMSR(MSR_NON_EXISTENT)")
    a.done()


def case_filter_allow(b):
    """msr_filter_allow: a default-allow filter denying three MSRs, exits only for
    KVM_MSR_EXIT_REASON_FILTER; userspace emulates them (process_rdmsr/process_wrmsr)."""
    vm, vcpu = _vcpu(b)
    vm.enable_user_msr_exits(X.KVM_MSR_EXIT_REASON_FILTER)
    vm.set_msr_filter(FILTER_ALLOW, default_allow=True)
    image = guest.program(_filter_allow_guest)
    vcpu.load(image)
    stored = {"non_existent": 0}

    def rd(index):
        ex = _expect_msr_exit(vcpu, image, X.RdMsr, index)
        if index == MSR_IA32_XSS:
            ex.data = 0
        elif index == MSR_IA32_FLUSH_CMD:
            ex.error = 1
        else:
            ex.data = stored["non_existent"]

    def wr(index):
        ex = _expect_msr_exit(vcpu, image, X.WrMsr, index)
        if index == MSR_IA32_XSS:
            ex.error = int(ex.data != 0)
        elif index == MSR_IA32_FLUSH_CMD:
            ex.error = int(ex.data != 1)
        else:
            stored["non_existent"] = ex.data

    rd(MSR_IA32_XSS)
    wr(MSR_IA32_XSS)
    wr(MSR_IA32_XSS)
    rd(MSR_IA32_FLUSH_CMD)
    wr(MSR_IA32_FLUSH_CMD)
    wr(MSR_IA32_FLUSH_CMD)
    wr(MSR_NON_EXISTENT)
    rd(MSR_NON_EXISTENT)
    _expect_ucall(vcpu, image, guest.UcallCmd.DONE)


def case_filter_allow_fep(b):
    need(False, "the forced-emulation half of msr_filter_allow: upstream runs it only "
                "with kvm.force_emulation_prefix=1, which "
                + ("the simulated KVM has no emulator for" if b.is_model else
                   "this host does not set"))


# ---- msr_filter_deny ----------------------------------------------------------------------

def _msr_calls(a, trapped):
    """guest_msr_calls(trapped): plain RDMSR/WRMSR (an unexpected #GP is a failure)."""
    def rdmsr(index):
        a.mov("ecx", index)
        a.rdmsr()
        a.shl("rdx", 32)
        a.or_("rax", "rdx")

    def wrmsr(index, value):
        a.mov("ecx", index)
        a.mov("eax", value & 0xFFFFFFFF)
        a.mov("edx", value >> 32)
        a.wrmsr()

    wrmsr(MSR_SYSCALL_MASK, 0)                  # in-kernel
    for index in (MSR_SYSCALL_MASK, MSR_GS_BASE):
        rdmsr(index)
        if trapped:                             # userspace answers the index
            a.assert_eq("rax", index, f"RDMSR({index:#x}) == {index:#x} (userspace)")
        else:
            a.assert_ne("rax", index, f"RDMSR({index:#x}) != {index:#x} (in-kernel)")
    wrmsr(MSR_IA32_POWER_CTL, 0x1234)           # userspace if trapped
    rdmsr(MSR_IA32_POWER_CTL)                   # in-kernel
    rdmsr(DEADBEEF)                             # always userspace: KVM does not know it
    a.assert_eq("rax", DEADBEEF, "RDMSR(0xdeadbeef) == 0xdeadbeef")
    wrmsr(DEADBEEF, 0x1234)


def _filter_deny_guest(a):
    _msr_calls(a, True)
    a.sync(0)                                   # the host removes the filter
    _msr_calls(a, False)
    a.done()


def case_filter_deny(b):
    """msr_filter_deny: a default-deny filter; exits for every reason; 4 reads and 3
    writes reach userspace, with the reasons handle_rdmsr/handle_wrmsr check."""
    vm, vcpu = _vcpu(b)
    vm.enable_user_msr_exits(X.KVM_MSR_EXIT_REASON_INVAL | X.KVM_MSR_EXIT_REASON_UNKNOWN |
                             X.KVM_MSR_EXIT_REASON_FILTER)
    vm.set_msr_filter(filter_deny(), default_allow=False)
    image = guest.program(_filter_deny_guest)
    vcpu.load(image)
    reads = writes = 0
    for _ in range(64):
        ex = vcpu.run()
        if isinstance(ex, X.RdMsr):
            ex.data = ex.index
            reads += 1
            if ex.index in (MSR_SYSCALL_MASK, MSR_GS_BASE):
                check(ex.msr_reason == X.KVM_MSR_EXIT_REASON_FILTER,
                      f"MSR {ex.index:#x} read trap w/o access fault "
                      f"(reason {ex.msr_reason:#x})")
            if ex.index == DEADBEEF:
                check(ex.msr_reason == X.KVM_MSR_EXIT_REASON_UNKNOWN,
                      f"MSR deadbeef read trap w/o inval fault (reason {ex.msr_reason:#x})")
        elif isinstance(ex, X.WrMsr):
            writes += 1
            if ex.index in (MSR_IA32_POWER_CTL, DEADBEEF):
                check(ex.data == 0x1234, f"MSR data for {ex.index:#x} incorrect: "
                                         f"{ex.data:#x}")
                want = X.KVM_MSR_EXIT_REASON_FILTER if ex.index == MSR_IA32_POWER_CTL \
                    else X.KVM_MSR_EXIT_REASON_UNKNOWN
                check(ex.msr_reason == want, f"MSR {ex.index:#x} write trap with reason "
                                             f"{ex.msr_reason:#x}, want {want:#x}")
        elif isinstance(ex, X.Io):
            uc = _ucall(vcpu, ex, image)
            if uc.cmd == guest.UcallCmd.DONE:
                break
            vm.set_msr_filter([], default_allow=True)          # no_filter_deny
        # upstream ignores any other exit and runs again
    else:
        raise CaseFailed("the guest did not finish in 64 exits")
    check(reads == 4, f"Handled {reads} rdmsr in user space, want 4")
    check(writes == 3, f"Handled {writes} wrmsr in user space, want 3")


# ---- msr_permission_bitmap ------------------------------------------------------------

def _permission_bitmap_guest(a):
    def rd(index, eq):
        a.rdmsr_safe(index)
        a.assert_no_fault(f"RDMSR({index:#x})")
        if eq:
            a.assert_eq("rax", index, f"RDMSR({index:#x}) == {index:#x} (userspace)")
        else:
            a.assert_ne("rax", index, f"RDMSR({index:#x}) != {index:#x} (in-kernel)")
    rd(MSR_FS_BASE, True)
    rd(MSR_GS_BASE, False)
    a.sync(0)                                   # the host switches the filter to GS
    rd(MSR_FS_BASE, False)
    rd(MSR_GS_BASE, True)
    # Again: KVM must have stopped intercepting once the filter allows both.
    rd(MSR_FS_BASE, False)
    rd(MSR_GS_BASE, False)
    a.done()


def case_permission_bitmap(b):
    """msr_permission_bitmap: a filter on FS_BASE reads, then on GS_BASE, then neither:
    KVM's intercepts (and pass-through) follow each new filter."""
    vm, vcpu = _vcpu(b)
    vm.enable_user_msr_exits(X.KVM_MSR_EXIT_REASON_FILTER)
    vm.set_msr_filter(FILTER_FS, default_allow=True)
    image = guest.program(_permission_bitmap_guest)
    vcpu.load(image)
    ex = _expect_msr_exit(vcpu, image, X.RdMsr, MSR_FS_BASE)
    ex.data = MSR_FS_BASE
    _expect_ucall(vcpu, image, guest.UcallCmd.SYNC)
    vm.set_msr_filter(FILTER_GS, default_allow=True)
    ex = _expect_msr_exit(vcpu, image, X.RdMsr, MSR_GS_BASE)
    ex.data = MSR_GS_BASE
    vm.set_msr_filter(FILTER_ALLOW, default_allow=True)
    _expect_ucall(vcpu, image, guest.UcallCmd.DONE)


# ---- user_exit_msr_flags ------------------------------------------------------------------

def _flag_outcomes(call, nbits, valid_mask, what):
    """test_user_exit_msr_ioctl for each bit: success iff the bit is valid, else EINVAL."""
    wrong = []
    for i in range(nbits):
        bit = 1 << i
        try:
            call(bit)
            err = None
        except Exception as e:  # noqa: BLE001 - the errno is the outcome
            err = getattr(e, "errno", None)
            if err is None:
                raise
        if bit & valid_mask:
            if err is not None:
                wrong.append(f"{what} {bit:#x} refused ({uapi_errname(err)})")
        elif err != 22:
            wrong.append(f"{what} {bit:#x}: " + ("accepted" if err is None else
                                                 uapi_errname(err)) + ", want EINVAL")
    check(not wrong, "; ".join(wrong))


def uapi_errname(err):
    import errno
    return errno.errorcode.get(err, str(err))


def case_user_space_msr_flags(b):
    """run_user_space_msr_flag_test: KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR) with
    each of the 64 bits of args[0]: only KVM_MSR_EXIT_REASON_VALID_MASK bits work."""
    vm, _ = _vcpu(b)
    _flag_outcomes(lambda bit: vm.enable_cap(uapi.KVM_CAP_X86_USER_SPACE_MSR, bit), 64,
                   X.KVM_MSR_EXIT_REASON_VALID_MASK, "KVM_CAP_X86_USER_SPACE_MSR args[0]")


def case_filter_flags(b):
    """run_msr_filter_flag_test, first half: each of the 32 bits of kvm_msr_filter.flags."""
    vm, _ = _vcpu(b)
    rng = [MsrFilterRange(R, 0, 1, DENY)]
    _flag_outcomes(lambda bit: vm.set_msr_filter(rng, flags=bit), 32,
                   uapi.KVM_MSR_FILTER_VALID_MASK, "kvm_msr_filter.flags")


def case_filter_range_flags(b):
    """run_msr_filter_flag_test, second half: each of the 32 bits of a range's flags."""
    vm, _ = _vcpu(b)
    _flag_outcomes(lambda bit: vm.set_msr_filter([MsrFilterRange(bit, 0, 1, DENY)],
                                                 flags=uapi.KVM_MSR_FILTER_DEFAULT_ALLOW),
                   32, uapi.KVM_MSR_FILTER_RANGE_VALID_MASK, "kvm_msr_filter_range.flags")


def _cases():
    rows = [
        ("msr_filter_allow", "XSS/FLUSH_CMD/NON_EXISTENT exit (FILTER), VMM answers",
         case_filter_allow, "msr_filter_allow"),
        ("msr_filter_allow, emulated RDMSR/WRMSR", "as above through the emulator",
         case_filter_allow_fep, "msr_filter_allow (is_forced_emulation_enabled)"),
        ("msr_filter_deny", "4 reads, 3 writes in userspace; FILTER/UNKNOWN",
         case_filter_deny, "msr_filter_deny"),
        ("msr_permission_bitmap", "FS then GS read exits, then none",
         case_permission_bitmap, "msr_permission_bitmap"),
        ("user_exit_msr_flags: USER_SPACE_MSR args[0]", "bits 0-2 ok, others EINVAL",
         case_user_space_msr_flags, "user_exit_msr_flags run_user_space_msr_flag_test"),
        ("user_exit_msr_flags: filter flags", "bit 0 ok, others EINVAL",
         case_filter_flags, "user_exit_msr_flags run_msr_filter_flag_test (filter.flags)"),
        ("user_exit_msr_flags: range flags", "bits 0-1 ok, others EINVAL",
         case_filter_range_flags,
         "user_exit_msr_flags run_msr_filter_flag_test (ranges[0].flags)"),
    ]
    return [Case(i + 1, title, expect, fn, suite="userspace-msr",
                 upstream=f"{UPSTREAM}: {check_name}")
            for i, (title, expect, fn, check_name) in enumerate(rows)]


CASES = _cases()
