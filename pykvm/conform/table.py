"""The docs/conformance.md table: guest-visible MSR behaviour, 19 cases.

Each case runs a guest program through the guest runtime (rdmsr_safe/wrmsr_safe through an
IDT stub, results by ucall) and, where the case says so, the host-side KVM_GET/SET_MSRS.
A backend answers pass, fail (with what it observed), or unsupported (the vCPU's CPUID
lacks what the case needs) -- never a silent pass.
"""
from .. import guest
from ..guest import NO_VECTOR, UcallCmd
from .common import A64, GP, NC, Case, Result, Unsupported  # noqa: F401
from .common import show as _show, vec as _vec

MSR = dict(SYSENTER_CS=0x174, SYSENTER_ESP=0x175, SYSENTER_EIP=0x176, MISC_ENABLE=0x1A0,
           PAT=0x277, EFER=0xC0000080, STAR=0xC0000081, LSTAR=0xC0000082, CSTAR=0xC0000083,
           SYSCALL_MASK=0xC0000084, FS_BASE=0xC0000100, GS_BASE=0xC0000101,
           KERNEL_GS_BASE=0xC0000102, TSC_AUX=0xC0000103, SPEC_CTRL=0x48, PRED_CMD=0x49)
ABSENT_MSR = 0x474F4F00


# ---- the guest side -------------------------------------------------------------------

def _rw_program(msr, values):
    """Read the original value, then write/read back each value, then restore."""
    def body(a):
        a.rdmsr_safe(msr)
        a.mov("r12", "rax")
        a.sync("r9", "rax")
        for v in values:
            a.wrmsr_safe(msr, v)
            a.sync("r9")
            a.rdmsr_safe(msr)
            a.sync("r9", "rax")
        a.wrmsr_safe(msr, "r12")
        a.done()
    return guest.program(body)


def _syncs(vcpu, image, n):
    out = []
    for _ in range(n):
        uc = guest.run_ucall(vcpu, image, UcallCmd.SYNC)
        out.append(uc.args)
    return out


def rw(backend, msr, writes):
    """writes: [(value, expected)] where expected is a value or GP. Returns a Result."""
    vcpu = backend.vcpu()
    image = _rw_program(msr, [v for v, _ in writes])
    vcpu.load(image)
    (vec0, orig, _), = _syncs(vcpu, image, 1)
    if vec0 != NO_VECTOR:
        return Result("fail", f"RDMSR {msr:#x}: {_vec(vec0)}")
    for value, expected in writes:
        (wvec, _, _), = _syncs(vcpu, image, 1)
        (rvec, got, _), = _syncs(vcpu, image, 1)
        if callable(expected):
            expected = expected(orig)
        observed = _vec(wvec) if wvec != NO_VECTOR else (
            _vec(rvec) or got)
        if observed != expected:
            return Result("fail", f"write {value:#x}: got {_show(observed)}, "
                                  f"want {_show(expected)}")
    guest.run_ucall(vcpu, image, UcallCmd.DONE)
    return Result("pass")


# ---- the cases ------------------------------------------------------------------------

def _need(cond, why):
    if not cond:
        raise Unsupported(why)


def case_sysenter_cs(b):
    return rw(b, MSR["SYSENTER_CS"], [(0x1234, 0x1234)])


def case_sysenter_esp_eip(b):
    want = A64 if b.features.intel else A64 & 0xFFFFFFFF
    r = rw(b, MSR["SYSENTER_ESP"], [(A64, want)])
    return r if r.status != "pass" else rw(b, MSR["SYSENTER_EIP"], [(A64, want)])


def case_misc_enable(b):
    """The read-only bits must keep their value: write them as read (kvm-unit-tests)."""
    v = 0x400C50809
    vcpu = b.vcpu()
    image = guest.program(lambda a: (a.rdmsr_safe(MSR["MISC_ENABLE"]), a.sync("r9", "rax"),
                                     a.done()))
    vcpu.load(image)
    (vec, orig, _), = _syncs(vcpu, image, 1)
    if vec != NO_VECTOR:
        return Result("fail", f"RDMSR: {_vec(vec)}")
    want = (v & ~0x1880) | (orig & 0x1880)
    return rw(b, MSR["MISC_ENABLE"], [(want, want)])


def case_pat(b):
    return rw(b, MSR["PAT"], [(0x07070707, 0x07070707)])


def case_bases(b):
    _need(b.features.lm, "no long mode")
    for name in ("FS_BASE", "GS_BASE", "KERNEL_GS_BASE"):
        r = rw(b, MSR[name], [(A64, A64), (NC, GP)])
        if r.status != "pass":
            return Result(r.status, f"{name}: {r.observed}")
    return Result("pass")


def case_efer(b):
    vcpu = b.vcpu()
    image = guest.program(lambda a: (a.rdmsr_safe(MSR["EFER"]), a.sync("r9", "rax"), a.done()))
    vcpu.load(image)
    (vec, orig, _), = _syncs(vcpu, image, 1)
    v = orig | 1
    return rw(b, MSR["EFER"], [(v, v)])


def case_lstar_cstar(b):
    _need(b.features.lm, "no long mode")
    for name in ("LSTAR", "CSTAR"):
        r = rw(b, MSR[name], [(A64, A64), (NC, GP)])
        if r.status != "pass":
            return Result(r.status, f"{name}: {r.observed}")
    return Result("pass")


def case_syscall_mask(b):
    _need(b.features.lm, "no long mode")
    return rw(b, MSR["SYSCALL_MASK"], [(0xFFFFFFFF, 0xFFFFFFFF)])


def case_star(b):
    return rw(b, MSR["STAR"], [(0x0023001000000000, 0x0023001000000000)])


def _tsc_aux_then(b, insn, reg):
    values = (0, 10, 0x100)

    def body(a):
        for v in values:
            a.wrmsr_safe(MSR["TSC_AUX"], v)
            a.mov("r12", "r9")
            a.safe(insn, *(("rax",) if insn == "rdpid" else ()))
            a.sync("r12", "r9", reg)
        a.done()
    image = guest.program(body)
    vcpu = b.vcpu()
    vcpu.load(image)
    for v in values:
        (wvec, ivec, got), = _syncs(vcpu, image, 1)
        if wvec != NO_VECTOR or ivec != NO_VECTOR:
            return Result("fail", f"TSC_AUX={v:#x}: WRMSR {_vec(wvec) or 'ok'}, "
                                  f"{insn.upper()} {_vec(ivec) or 'ok'}")
        if got & 0xFFFFFFFF != v:
            return Result("fail", f"TSC_AUX={v:#x}: {insn.upper()} gave {got:#x}")
    return Result("pass")


def case_tsc_aux_rdtscp(b):
    _need(b.features.rdtscp, "no RDTSCP in CPUID")
    return _tsc_aux_then(b, "rdtscp", "rcx")


def case_tsc_aux_rdpid(b):
    _need(b.features.rdpid, "no RDPID in CPUID")
    return _tsc_aux_then(b, "rdpid", "rax")


def case_tsc_aux_high(b):
    _need(b.features.rdtscp, "no RDTSCP in CPUID")
    v = 0xAAAA5555AAAA5555
    return rw(b, MSR["TSC_AUX"], [(v, GP if b.features.intel else 0xAAAA5555)])


def case_spec_ctrl(b):
    f = b.features
    bits = [(1, f.ibrs), (2, f.stibp), (4, f.ssbd)]
    have = [bit for bit, ok in bits if ok]
    if not have:
        return _spec_ctrl_absent(b)
    writes = []
    for mask in range(1, 8):
        supported = all(ok for bit, ok in bits if mask & bit)
        writes.append((mask, mask if supported else GP))
    return rw(b, MSR["SPEC_CTRL"], writes)


def _spec_ctrl_absent(b):
    vcpu = b.vcpu()
    image = guest.program(lambda a: (a.wrmsr_safe(MSR["SPEC_CTRL"], 1), a.sync("r9"),
                                     a.done()))
    vcpu.load(image)
    (vec, _, _), = _syncs(vcpu, image, 1)
    if vec != 13:
        return Result("fail", f"WRMSR SPEC_CTRL=1 without the feature: {_vec(vec) or 'ok'}, "
                              "want #GP")
    return Result("pass")


def case_pred_cmd(b):
    def body(a):
        a.rdmsr_safe(MSR["PRED_CMD"])
        a.mov("r12", "r9")
        a.wrmsr_safe(MSR["PRED_CMD"], 1)
        a.sync("r12", "r9")
        a.done()
    image = guest.program(body)
    vcpu = b.vcpu()
    vcpu.load(image)
    (rvec, wvec, _), = _syncs(vcpu, image, 1)
    want_w = None if b.features.ibpb else "#GP"
    # Name only the accesses that went wrong: a cell never reads "#GP (want #GP)".
    wrong = []
    if _vec(rvec) != "#GP":
        wrong.append(f"RDMSR {_vec(rvec) or 'ok'} (want #GP)")
    if _vec(wvec) != want_w:
        wrong.append(f"WRMSR 1 {_vec(wvec) or 'ok'} (want {want_w or 'ok'})")
    if wrong:
        return Result("fail", ", ".join(wrong))
    return Result("pass")


def case_absent_msr(b):
    def body(a):
        a.rdmsr_safe(ABSENT_MSR)
        a.mov("r12", "r9")
        a.wrmsr_safe(ABSENT_MSR, 0)
        a.sync("r12", "r9")
        a.done()
    image = guest.program(body)
    vcpu = b.vcpu()
    vcpu.load(image)
    (rvec, wvec, _), = _syncs(vcpu, image, 1)
    wrong = [f"{what} {_vec(vec) or 'ok'} (want #GP)"
             for what, vec in (("RDMSR", rvec), ("WRMSR", wvec)) if _vec(vec) != "#GP"]
    if wrong:
        return Result("fail", ", ".join(wrong))
    n, _ = vcpu.get_msrs([ABSENT_MSR])
    if n != 0:
        return Result("fail", f"KVM_GET_MSRS processed {n} entries, want 0")
    return Result("pass")


def case_swapgs(b):
    _need(b.features.lm, "no long mode")
    g0 = 0x00007F0011223000

    def body(a):
        a.wrmsr_safe(MSR["GS_BASE"], g0)
        a.wrmsr_safe(MSR["KERNEL_GS_BASE"], A64)
        a.swapgs()
        a.rdmsr_safe(MSR["GS_BASE"])
        a.mov("r12", "rax")
        a.rdmsr_safe(MSR["KERNEL_GS_BASE"])
        a.sync("r12", "rax")
        a.done()
    image = guest.program(body)
    vcpu = b.vcpu()
    vcpu.load(image)
    (gs, kgs, _), = _syncs(vcpu, image, 1)
    if (gs, kgs) != (A64, g0):
        return Result("fail", f"GS_BASE {gs:#x} KERNEL_GS_BASE {kgs:#x}, want {A64:#x} {g0:#x}")
    return Result("pass")


def _host_side_msrs(b):
    msrs = {"SYSENTER_CS": 0x10, "PAT": 0x0007040600070406, "STAR": 0x0023001000000000}
    if b.features.lm:
        msrs.update(KERNEL_GS_BASE=A64, LSTAR=A64 + 0x10, CSTAR=A64 + 0x20,
                    SYSCALL_MASK=0x4700)
    if b.features.rdtscp or b.features.rdpid:
        msrs["TSC_AUX"] = 0x42
    return msrs


def case_host_reads_guest_writes(b):
    msrs = _host_side_msrs(b)

    def body(a):
        for name, v in msrs.items():
            a.wrmsr_safe(MSR[name], v)
            a.assert_no_fault(f"WRMSR {name}")
        a.sync()
        a.done()
    image = guest.program(body)
    vcpu = b.vcpu()
    vcpu.load(image)
    _syncs(vcpu, image, 1)
    names = list(msrs)
    n, got = vcpu.get_msrs([MSR[k] for k in names])
    if n != len(names):
        return Result("fail", f"KVM_GET_MSRS stopped at {names[n]} ({n} of {len(names)})")
    bad = [f"{k}={got[MSR[k]]:#x}" for k in names if got[MSR[k]] != msrs[k]]
    return Result("fail", "host read " + ", ".join(bad)) if bad else Result("pass")


def case_guest_reads_host_writes(b):
    msrs = _host_side_msrs(b)

    def body(a):
        a.sync()
        for name, v in msrs.items():
            a.rdmsr_safe(MSR[name])
            a.assert_no_fault(f"RDMSR {name}")
            a.assert_eq("rax", v, f"guest reads {name} as the host set it")
        a.done()
    image = guest.program(body)
    vcpu = b.vcpu()
    vcpu.load(image)
    _syncs(vcpu, image, 1)
    n = vcpu.set_msrs({MSR[k]: v for k, v in msrs.items()})
    if n != len(msrs):
        return Result("fail", f"KVM_SET_MSRS stopped at {list(msrs)[n]}")
    try:
        guest.run_ucall(vcpu, image, UcallCmd.DONE)
    except AssertionError as e:
        return Result("fail", str(e))
    return Result("pass")


def case_syscall(b):
    _need(b.features.lm, "no long mode")
    mask = 0x400  # DF

    def body(a):
        handler = a.label("syscall_handler")
        back = a.label("after_syscall")
        a.wrmsr_safe(MSR["STAR"], 0x0023001000000000 | (guest.KERNEL_CS << 32))
        a.mov("rax", handler)
        a.wrmsr_safe(MSR["LSTAR"], "rax")
        a.wrmsr_safe(MSR["SYSCALL_MASK"], mask)
        a.std()
        a.syscall()
        a.bind(back)
        a.done()
        a.bind(handler)
        a.pushfq()
        a.pop("rax")
        a.cld()
        a.sync("rax", "rcx", "r11")
        a.done()
    image = guest.program(body)
    vcpu = b.vcpu()
    vcpu.load(image)
    uc = guest.run_ucall(vcpu, image)
    if uc.cmd != UcallCmd.SYNC:
        return Result("fail", f"SYSCALL did not reach LSTAR: {uc.message()}")
    rflags, rcx, r11 = uc.args
    if rflags & mask or not r11 & mask or rcx != image.symbols.get("after_syscall", rcx):
        return Result("fail", f"RFLAGS {rflags:#x} (DF must be masked), R11 {r11:#x}, "
                              f"RCX {rcx:#x}")
    return Result("pass")


CASES = [
    Case(1, "SYSENTER_CS", "-> 0x1234", case_sysenter_cs),
    Case(2, "SYSENTER_ESP/EIP", "-> A64 (AMD: low 32 bits)", case_sysenter_esp_eip),
    Case(3, "MISC_ENABLE", "RO bits 7,11,12 kept", case_misc_enable),
    Case(4, "PAT", "-> 0x07070707", case_pat),
    Case(5, "FS/GS/KERNEL_GS_BASE", "A64 -> A64, NC -> #GP", case_bases),
    Case(6, "EFER", "orig|SCE -> same", case_efer),
    Case(7, "LSTAR, CSTAR", "A64 -> A64, NC -> #GP", case_lstar_cstar),
    Case(8, "SYSCALL_MASK", "0xffffffff -> same", case_syscall_mask),
    Case(9, "STAR", "-> same", case_star),
    Case(10, "TSC_AUX then RDTSCP", "ECX == value", case_tsc_aux_rdtscp),
    Case(11, "TSC_AUX then RDPID", "RAX == value", case_tsc_aux_rdpid),
    Case(12, "TSC_AUX bits 63:32", "Intel #GP, AMD -> low 32", case_tsc_aux_high),
    Case(13, "SPEC_CTRL", "supported subsets -> same, else #GP", case_spec_ctrl),
    Case(14, "PRED_CMD", "RDMSR #GP; WRMSR 1 ok iff IBPB", case_pred_cmd),
    Case(15, "absent MSR 0x474f4f00", "#GP / #GP, GET_MSRS 0", case_absent_msr),
    Case(16, "KERNEL_GS_BASE then SWAPGS", "bases exchanged", case_swapgs),
    Case(17, "guest writes, KVM_GET_MSRS", "host reads them", case_host_reads_guest_writes),
    Case(18, "KVM_SET_MSRS, guest reads", "guest sees them", case_guest_reads_host_writes),
    Case(19, "SYSCALL via LSTAR/STAR/SYSCALL_MASK", "lands at LSTAR, RFLAGS masked", case_syscall),
]
