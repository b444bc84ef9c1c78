"""Our port of kvm-unit-tests x86/msr.c (kvm-unit-tests/kvm-unit-tests, commit 70445405,
"x86/msr: Add a testcase to verify SPEC_CTRL exists (or not) as expected").

Upstream runs one guest under QEMU in two unittests.cfg configurations; so do we:

- ``msr``: ``-cpu max,vendor=GenuineIntel``: every feature KVM supports, Intel vendor
  (so SYSENTER_ESP/EIP keep 64 bits and SVM emulates Intel's behaviour).
- ``msr64``: ``-cpu qemu64,vendor=GenuineIntel``: a minimal 64-bit CPU (no leaf-7
  features, no RDTSCP), for MSRs the hardware has but the guest's CPU model lacks.

The VMM side does what QEMU does for these runs: an in-kernel irqchip
(KVM_CREATE_IRQCHIP), the CPUID above, and KVM_X86_SETUP_MCE with QEMU's MCG_CAP (10
banks, MCG_CTL_P | MCG_SER_P, masked with what KVM supports) when the CPUID has MCE and
MCA. The guest makes every access with the fault caught and leaves each outcome in
memory (common.Recorder); each case checks the reports of one part of msr.c.
"""
from __future__ import annotations

from .. import guest
from ..guest import NO_VECTOR
from ..guest.layout import APIC_BASE_ADDR
from .common import (A64, GENUINE_INTEL, NC, Case, Recorder, check, cpuid_has,
                     cpuid_with_vendor, fault_outcome, need, ok_outcome, run_to_done,
                     rw_outcome, vec)

UPSTREAM = "kvm-unit-tests x86/msr.c"

MSR_IA32_APICBASE = 0x1B
APIC_EN, APIC_EXTD = 1 << 11, 1 << 10
APIC_BASE_MSR = 0x800
MSR_IA32_MCG_CAP = 0x179
MCG_CTL_P, MCG_SER_P = 1 << 8, 1 << 24
MSR_IA32_SPEC_CTRL, MSR_IA32_PRED_CMD, MSR_IA32_FLUSH_CMD = 0x48, 0x49, 0x10B
KVM_CAP_IRQCHIP, KVM_CAP_MCE = 0, 31
QEMU_MCE_BANKS = 10                 # QEMU's MCE_BANKS_DEF


def mcx(bank, reg):
    """MSR_IA32_MCx_CTL/STATUS/ADDR/MISC(bank): reg 0..3."""
    return 0x400 + 4 * bank + reg


# ---- the VMM: QEMU's part ------------------------------------------------------------------

def _qemu64(entries):
    """QEMU's qemu64 CPU model, as KVM can back it: the qemu64 leaf-1 and 0x80000001
    features (plus x2APIC and HYPERVISOR, which QEMU adds under KVM), nothing in leaf
    7 or 0x80000008.EBX."""
    from ..devkvm.system import CpuidEntry
    keep = {
        (1, "edx"): 0x078BFBFD,      # fpu de pse tsc msr pae mce cx8 apic sep mtrr pge mca
                                     # cmov pat pse36 clflush mmx fxsr sse sse2
        (1, "ecx"): (1 << 0) | (1 << 13) | (1 << 21) | (1 << 31),  # sse3 cx16 x2apic hv
        (7, "ebx"): 0, (7, "ecx"): 0, (7, "edx"): 0,
        (0x80000001, "edx"): (1 << 11) | (1 << 20) | (1 << 29),    # syscall nx lm
        (0x80000001, "ecx"): 1 << 0,                               # lahf_lm
        (0x80000008, "ebx"): 0,
    }
    out = []
    for e in entries:
        regs = {r: getattr(e, r) for r in ("eax", "ebx", "ecx", "edx")}
        for (fn, reg), mask in keep.items():
            if e.function == fn:
                regs[reg] &= mask
        out.append(CpuidEntry(e.function, e.index, e.flags, **regs))
    return out


def _vcpu(b, config):
    """A VM and vCPU as QEMU sets them up for the unittests.cfg entry `config`."""
    sysm = b.system()
    vm = b.vm()
    if sysm.check_extension(KVM_CAP_IRQCHIP):
        vm.create_irqchip()
    vcpu = vm.create_vcpu()
    cpuid = cpuid_with_vendor(sysm.get_supported_cpuid(), GENUINE_INTEL)
    if config == "msr64":
        cpuid = _qemu64(cpuid)
    vcpu.set_cpuid(cpuid)
    # The guest's this_cpu_has() sees what KVM holds (KVM_GET_CPUID2): what was set, plus
    # the bits KVM keeps itself -- or, on a module that rewrites leaves, its values.
    cpuid = vcpu.get_cpuid()
    banks = min(QEMU_MCE_BANKS, sysm.check_extension(KVM_CAP_MCE))
    if cpuid_has(cpuid, "MCE") and cpuid_has(cpuid, "MCA") and banks > 0:
        vcpu.setup_mce((MCG_CTL_P | MCG_SER_P | banks) & (sysm.get_mce_cap_supported() | 0xFF))
    return vcpu, cpuid


def _run(b, config, body, apic_page=False):
    """Build the guest from body(rec, cpuid), run it to DONE, return (results, cpuid)."""
    vcpu, cpuid = _vcpu(b, config)
    holder = {}

    def program(a):
        holder["rec"] = rec = Recorder(a)
        body(rec, cpuid)
        a.done()
    image = guest.program(program, apic_page=apic_page)
    vcpu.load(image)
    run_to_done(vcpu, image)
    return holder["rec"].results(vcpu), cpuid, vcpu


# ---- test_misc_msrs ---------------------------------------------------------------------

# (name, index, value, keep mask, 64-bit only): msr.c's msr_info[]
MISC = [
    ("MSR_IA32_SYSENTER_CS", 0x174, 0x1234, 0, False),
    ("MSR_IA32_SYSENTER_ESP", 0x175, A64, 0, False),
    ("MSR_IA32_SYSENTER_EIP", 0x176, A64, 0, False),
    ("MSR_IA32_MISC_ENABLE", 0x1A0, 0x400C50809, 0x1880, False),
    ("MSR_IA32_CR_PAT", 0x277, 0x07070707, 0, False),
    ("MSR_FS_BASE", 0xC0000100, A64, 0, True),
    ("MSR_GS_BASE", 0xC0000101, A64, 0, True),
    ("MSR_KERNEL_GS_BASE", 0xC0000102, A64, 0, True),
    ("MSR_EFER", 0xC0000080, 1, 0, False),           # EFER_SCE, ORed into the original
    ("MSR_LSTAR", 0xC0000082, A64, 0, True),
    ("MSR_CSTAR", 0xC0000083, A64, 0, True),
    ("MSR_SYSCALL_MASK", 0xC0000084, 0xFFFFFFFF, 0, True),
]


def _misc_case(entry, config):
    name, index, value, keep, only64 = entry

    def run(b):
        def body(rec, cpuid):
            if cpuid_has(cpuid, "LM") or not only64:
                rec.rw(index, value, keep=keep, or_orig=index == 0xC0000080)
                # The 64-bit only MSRs that take an address are canonical-checked.
                if only64 and value == A64:
                    rec.wr(index, NC)
            else:
                rec.wr(index, value)
                rec.rd(index)
        res, cpuid, _ = _run(b, config, body)
        if cpuid_has(cpuid, "LM") or not only64:
            rw_outcome(res, 0, name)
            if only64 and value == A64:
                fault_outcome(res, 4, f"WRMSR({name}, NONCANONICAL)")
        else:
            fault_outcome(res, 0, f"WRMSR({name}) without LM")
            fault_outcome(res, 1, f"RDMSR({name}) without LM")
    return run


# ---- test_mce_msrs ---------------------------------------------------------------------

def _nr_banks(res):
    vector, cap, _ = res[0]
    check(vector == NO_VECTOR, f"RDMSR(MSR_IA32_MCG_CAP) took {vec(vector)}")
    return cap & 0xFF


def _mce_case(what, config):
    """One bank register of test_mce_msrs, for every bank below MCG_CAP.Count. The
    guest reads MCG_CAP first; the bank count is the configured one, so the probes are
    emitted for it and the count read is checked against it."""
    def run(b):
        banks = {}

        def body(rec, cpuid):
            rec.rd(MSR_IA32_MCG_CAP)
            n = _configured_banks(b, cpuid)
            banks["n"] = n
            for i in range(n):
                if what == "CTL":
                    rec.rw(mcx(i, 0), 0)
                    rec.rw(mcx(i, 0), 2**64 - 1)
                    rec.wr(mcx(i, 0), NC)
                elif what == "STATUS":
                    rec.rw(mcx(i, 1), 0)
                    # Only 0 may be written (no HWCR.McStatusWrEn set by KVM or the VMM).
                    rec.wr(mcx(i, 1), 1)
                elif what == "ADDR":
                    rec.rw(mcx(i, 2), 0)
                    rec.rw(mcx(i, 2), 2**64 - 1)
                    if cpuid_has(cpuid, "LM"):
                        rec.rw(mcx(i, 2), NC)
                else:
                    rec.rw(mcx(i, 3), 0)
                    rec.rw(mcx(i, 3), 2**64 - 1)
                    rec.rw(mcx(i, 3), NC)
        res, cpuid, _ = _run(b, config, body)
        n = _nr_banks(res)
        need(banks["n"] > 0, "the guest has no machine-check banks (no KVM_CAP_MCE)")
        check(n == banks["n"], f"MCG_CAP.Count = {n}, KVM_X86_SETUP_MCE set {banks['n']}")
        slot = 1
        for i in range(n):
            name = f"MSR_IA32_MC{i}_{what}"
            if what == "CTL":
                rw_outcome(res, slot, f"{name} = 0")
                rw_outcome(res, slot + 4, f"{name} = -1")
                fault_outcome(res, slot + 8, f"WRMSR({name}, NONCANONICAL)")
                slot += 9
            elif what == "STATUS":
                rw_outcome(res, slot, f"{name} = 0")
                fault_outcome(res, slot + 4, f"WRMSR({name}, 1)")
                slot += 5
            else:
                values = [0, 2**64 - 1] + ([NC] if what == "MISC" or cpuid_has(cpuid, "LM")
                                           else [])
                for v in values:
                    rw_outcome(res, slot, f"{name} = {v:#x}")
                    slot += 4
    return run


def _configured_banks(b, cpuid):
    sysm = b.system()
    if not (cpuid_has(cpuid, "MCE") and cpuid_has(cpuid, "MCA")):
        return 0
    return min(QEMU_MCE_BANKS, sysm.check_extension(KVM_CAP_MCE))


def _mce_absent_case(config):
    """Banks MCG_CAP.Count .. 31: every RDMSR and WRMSR(0) faults."""
    def run(b):
        banks = {}

        def body(rec, cpuid):
            rec.rd(MSR_IA32_MCG_CAP)
            banks["n"] = n = _configured_banks(b, cpuid)
            rec.batch([op for i in range(n, 32) for reg in range(4)
                       for op in (("rd", mcx(i, reg)), ("wr", mcx(i, reg), 0))])
        res, _, _ = _run(b, config, body)
        n = _nr_banks(res)
        check(n == banks["n"], f"MCG_CAP.Count = {n}, KVM_X86_SETUP_MCE set {banks['n']}")
        slot = 1
        for i in range(n, 32):
            for reg, rname in enumerate(("CTL", "STATUS", "ADDR", "MISC")):
                fault_outcome(res, slot, f"RDMSR(MSR_IA32_MC{i}_{rname})")
                fault_outcome(res, slot + 1, f"WRMSR(MSR_IA32_MC{i}_{rname}, 0)")
                slot += 2
    return run


# ---- test_x2apic_msrs ---------------------------------------------------------------------

APIC_ID, APIC_LVR, APIC_TASKPRI, APIC_PROCPRI, APIC_EOI = 0x20, 0x30, 0x80, 0xA0, 0xB0
APIC_LDR, APIC_SPIV, APIC_ISR, APIC_TMR, APIC_IRR = 0xD0, 0xF0, 0x100, 0x180, 0x200
APIC_ESR, APIC_CMCI, APIC_ICR = 0x280, 0x2F0, 0x300
APIC_LVTT, APIC_LVTTHMR, APIC_LVTPC, APIC_LVT0, APIC_LVT1 = 0x320, 0x330, 0x340, 0x350, 0x360
APIC_LVTERR, APIC_TMICT, APIC_TMCCT, APIC_TDCR, APIC_SELF_IPI = 0x370, 0x380, 0x390, 0x3E0, 0x3F0
RO, WO, RW, INVALID = "RO", "WO", "RW", "invalid"


def x2apic_reg_semantics(reg, maxlvt):
    """lib/x86/apic.h get_x2apic_reg_semantics(); CMCI exists if the LVR says so."""
    if reg in (APIC_ID, APIC_LVR, APIC_PROCPRI, APIC_LDR, APIC_TMCCT) or \
            APIC_ISR <= reg <= APIC_ISR + 0x70 or APIC_TMR <= reg <= APIC_TMR + 0x70 or \
            APIC_IRR <= reg <= APIC_IRR + 0x70:
        return RO
    if reg in (APIC_TASKPRI, APIC_SPIV, APIC_ESR, APIC_ICR, APIC_LVTT, APIC_LVTTHMR,
               APIC_LVTPC, APIC_LVT0, APIC_LVT1, APIC_LVTERR, APIC_TMICT, APIC_TDCR):
        return RW
    if reg in (APIC_EOI, APIC_SELF_IPI):
        return WO
    if reg == APIC_CMCI and maxlvt >= 6:
        return RW
    return INVALID


def _reset_apic(rec):
    """lib/x86/apic.c reset_apic(): disable, enable in xAPIC mode, SPIV = 0x1ff through
    the xAPIC page."""
    a = rec.a
    rec.rd(MSR_IA32_APICBASE)
    a.mov("r13", ~(APIC_EN | APIC_EXTD) & (2**64 - 1))
    a.and_("rax", "r13")
    rec.wr(MSR_IA32_APICBASE, "rax")
    rec.rd(MSR_IA32_APICBASE)
    a.or_("rax", APIC_EN)
    rec.wr(MSR_IA32_APICBASE, "rax")
    # The xAPIC page is above 2 GiB: no disp32 reaches it, a register does.
    a.mov("r13", APIC_BASE_ADDR)
    a.mov(guest.dword("r13", APIC_SPIV), 0x1FF)


def _enable_x2apic(rec):
    """lib/x86/apic.c enable_x2apic() (its CPUID check is the case's precondition)."""
    rec.rd(MSR_IA32_APICBASE)
    rec.a.or_("rax", APIC_EXTD)
    rec.wr(MSR_IA32_APICBASE, "rax")


def _x2apic_probe(reg, sem, enabled):
    """__test_x2apic_msrs() for one register: the accesses, in upstream's order, each
    with what it must give: (kind, op, what) with op ("rd", msr) / ("wr", msr, value)
    for a plain access, or ("rw", msr) for __test_msr_rw."""
    index = APIC_BASE_MSR + (reg >> 4)
    name = f"x2APIC MSR {index:#x}"
    plan = []
    if sem not in (WO, RW):
        plan.append(("fault", ("wr", index, 0), f"WRMSR({name}, 0)"))
    if sem not in (RO, RW):
        plan.append(("fault", ("rd", index), f"RDMSR({name})"))
    # Except for ICR, the only 64-bit x2APIC register, bits 63:32 are reserved.
    if not enabled or reg != APIC_ICR:
        plan.append(("fault", ("wr", index, 2**64 - 1), f"WRMSR({name}, -1)"))
    if reg == APIC_SELF_IPI:
        for v in (0x100, 0xFF00, 0xFF000000):
            plan.append(("fault", ("wr", index, v), f"WRMSR(x2APIC Self-IPI, {v:#x})"))
    if sem == RW:
        plan.append(("rw", ("rw", index), name))
    elif sem == WO:
        plan.append(("ok", ("wr", index, 0), f"WRMSR({name}, 0)"))
    elif sem == RO:
        plan.append(("ro", ("rd", index), name))
    return plan


def _emit_plan(rec, plan):
    """Emit a plan's accesses in order, plain runs as one guest loop (Recorder.batch);
    returns the checks [(kind, slot, what)]."""
    checks, pending = [], []

    def flush():
        first = rec.batch([op for _, op, _ in pending])
        checks.extend((kind, first + k, what) for k, (kind, _, what) in enumerate(pending))
        pending.clear()
    for item in plan:
        kind, op, what = item
        if op[0] == "rw":
            flush()
            checks.append((kind, rec.rw(op[1], 0, keep=2**64 - 1), what))
        else:
            pending.append(item)
    flush()
    return checks


def _x2apic_check(res, checks):
    for kind, slot, what in checks:
        if kind == "fault":
            fault_outcome(res, slot, what)
        elif kind == "ok":
            ok_outcome(res, slot, what)
        elif kind == "rw":
            rw_outcome(res, slot, what)
        else:
            ok_outcome(res, slot, f"RDMSR({what})")
            check(res[slot][1] >> 32 == 0,
                  f"Expected bits 63:32 == 0 for '{what}', read {res[slot][1]:#x}")


def _setup_outcome(res, slots):
    for s in slots:
        ok_outcome(res, s, "reset_apic/enable_x2apic: " + ("RDMSR" if s % 2 == 0 else "WRMSR")
                   + " IA32_APIC_BASE")


def _x2apic_off_case(config):
    """x2APIC disabled (xAPIC mode after reset_apic): every x2APIC MSR faults."""
    def run(b):
        need(b.system().check_extension(KVM_CAP_IRQCHIP), "no in-kernel irqchip")
        checks = []

        def body(rec, cpuid):
            _reset_apic(rec)
            plan = [p for reg in range(0, 0x1000, 0x10)
                    for p in _x2apic_probe(reg, INVALID, False)]
            checks.extend(_emit_plan(rec, plan))
        res, _, _ = _run(b, config, body, apic_page=True)
        _setup_outcome(res, range(4))
        _x2apic_check(res, checks)
    return run


def _x2apic_on_case(config, which):
    """x2APIC enabled: the registers of one semantics class (`which`)."""
    def run(b):
        need(b.system().check_extension(KVM_CAP_IRQCHIP), "no in-kernel irqchip")
        vcpu, cpuid = _vcpu(b, config)
        need(cpuid_has(cpuid, "X2APIC"), "no x2APIC in the guest's CPUID (enable_x2apic "
                                         "returns 0: upstream skips these checks)")
        # Phase 1: reset_apic, enable_x2apic, read the version register (LVR).
        holder = {}

        def setup(a):
            holder["rec"] = rec = Recorder(a)
            _reset_apic(rec)
            _enable_x2apic(rec)
            rec.rd(APIC_BASE_MSR + (APIC_LVR >> 4))
            a.done()
        image = guest.program(setup, apic_page=True)
        vcpu.load(image)
        run_to_done(vcpu, image)
        res = holder["rec"].results(vcpu)
        _setup_outcome(res, range(6))
        ok_outcome(res, 6, "RDMSR(x2APIC LVR)")
        maxlvt = (res[6][1] >> 16) & 0xFF
        # Phase 2, on the same vCPU (its APIC stays in x2APIC mode): the probes.
        checks = []

        def probes(a):
            holder["rec"] = rec = Recorder(a)
            plan = [p for reg in range(0, 0x1000, 0x10)
                    if x2apic_reg_semantics(reg, maxlvt) == which
                    for p in _x2apic_probe(reg, which, True)]
            checks.extend(_emit_plan(rec, plan))
            a.done()
        image = guest.program(probes, apic_page=True)
        vcpu.load(image)
        run_to_done(vcpu, image)
        _x2apic_check(holder["rec"].results(vcpu), checks)
    return run


# ---- test_mitigation_msrs ---------------------------------------------------------------------

def _spec_ctrl_bits(cpuid):
    bits = 0
    if cpuid_has(cpuid, "SPEC_CTRL") or cpuid_has(cpuid, "AMD_IBRS"):
        bits |= 1
    if cpuid_has(cpuid, "STIBP") or cpuid_has(cpuid, "AMD_STIBP"):
        bits |= 2
    if cpuid_has(cpuid, "SSBD") or cpuid_has(cpuid, "AMD_SSBD"):
        bits |= 4
    return bits


def _spec_ctrl_case(config):
    def run(b):
        plan = []

        def body(rec, cpuid):
            bits = _spec_ctrl_bits(cpuid)
            if bits:
                # Only values guaranteed not to fault: SPEC_CTRL virtualization has holes.
                for val in range(bits + 1):
                    if val & bits == val:
                        plan.append(("rw", rec.rw(MSR_IA32_SPEC_CTRL, val), f"SPEC_CTRL = {val}"))
            else:
                plan.append(("fault", rec.rd(MSR_IA32_SPEC_CTRL), "RDMSR(SPEC_CTRL)"))
                plan.append(("fault", rec.wr(MSR_IA32_SPEC_CTRL, 0), "WRMSR(SPEC_CTRL, 0)"))
        res, _, _ = _run(b, config, body)
        _x2apic_check(res, plan)
    return run


def _cmd_case(config, msr, name, has, bit):
    """PRED_CMD / FLUSH_CMD: RDMSR faults; WRMSR 0 and the command bit succeed exactly
    when the guest has the feature."""
    def run(b):
        plan = []

        def body(rec, cpuid):
            plan.append(("fault", rec.rd(msr), f"RDMSR({name})"))
            kind = "ok" if has(cpuid) else "fault"
            for v in (0, bit):
                plan.append((kind, rec.wr(msr, v), f"WRMSR({name}, {v:#x})"))
        res, _, _ = _run(b, config, body)
        _x2apic_check(res, plan)
    return run


def _pred_cmd_has(cpuid):
    return cpuid_has(cpuid, "SPEC_CTRL") or cpuid_has(cpuid, "AMD_IBPB") or \
        cpuid_has(cpuid, "SBPB")


def _fep_case(b):
    """test_wrmsr_fep_fault: upstream runs it only when KVM's forced emulation prefix
    is enabled (is_fep_available()), and skips it otherwise."""
    if b.is_model:
        need(False, "the simulated KVM has no instruction emulator, hence no "
                    "kvm.force_emulation_prefix (upstream skips without it)")
    try:
        with open("/sys/module/kvm/parameters/force_emulation_prefix") as f:
            fep = f.read().strip()
    except OSError:
        fep = "absent"
    need(False, f"kvm.force_emulation_prefix={fep} on this host, and the port has no "
                "forced-emulation guest code: upstream skips without the prefix")


# ---- the cases ---------------------------------------------------------------------------

def _cases():
    out = []
    n = 0

    def add(title, expect, fn, check_name, config):
        nonlocal n
        n += 1
        out.append(Case(n, f"[{config}] {title}", expect, fn, suite="msr",
                        upstream=f"{UPSTREAM} ({config}): {check_name}"))

    for config in ("msr", "msr64"):
        for entry in MISC:
            name, index, value, keep, only64 = entry
            expect = "rw" + (", NONCANONICAL #GP" if only64 and value == A64 else "")
            add(name, expect, _misc_case(entry, config), f"test_misc_msrs {name}", config)
        add("MCi_CTL, banks < MCG_CAP.Count", "0/-1 -> same, NC #GP",
            _mce_case("CTL", config), "test_mce_msrs MCx_CTL", config)
        add("MCi_STATUS, banks < MCG_CAP.Count", "0 -> 0, 1 #GP",
            _mce_case("STATUS", config), "test_mce_msrs MCx_STATUS", config)
        add("MCi_ADDR, banks < MCG_CAP.Count", "0/-1/NC -> same",
            _mce_case("ADDR", config), "test_mce_msrs MCx_ADDR", config)
        add("MCi_MISC, banks < MCG_CAP.Count", "0/-1/NC -> same",
            _mce_case("MISC", config), "test_mce_msrs MCx_MISC", config)
        add("MC banks MCG_CAP.Count..31", "RDMSR/WRMSR #GP", _mce_absent_case(config),
            "test_mce_msrs unsupported banks", config)
        add("x2APIC MSRs, x2APIC off", "all #GP", _x2apic_off_case(config),
            "__test_x2apic_msrs(false)", config)
        for which, expect in ((INVALID, "rd/wr #GP"), (RO, "wr #GP, bits 63:32 = 0"),
                              (WO, "rd #GP, wr 0 ok, reserved #GP"),
                              (RW, "rw, bits 63:32 #GP but ICR")):
            add(f"x2APIC MSRs, x2APIC on, {which} registers", expect,
                _x2apic_on_case(config, which), f"__test_x2apic_msrs(true) {which}", config)
        add("SPEC_CTRL", "supported bits rw, else #GP", _spec_ctrl_case(config),
            "test_mitigation_msrs SPEC_CTRL", config)
        add("PRED_CMD", "RDMSR #GP; 0/IBPB ok iff IBPB",
            _cmd_case(config, MSR_IA32_PRED_CMD, "PRED_CMD", _pred_cmd_has, 1),
            "test_mitigation_msrs PRED_CMD", config)
        add("FLUSH_CMD", "RDMSR #GP; 0/L1D_FLUSH ok iff FLUSH_L1D",
            _cmd_case(config, MSR_IA32_FLUSH_CMD, "FLUSH_CMD",
                      lambda c: cpuid_has(c, "FLUSH_L1D"), 1),
            "test_mitigation_msrs FLUSH_CMD", config)
        add("FLUSH_CMD bits 1..63, emulated WRMSR", "#GP", _fep_case,
            "test_mitigation_msrs test_wrmsr_fep_fault", config)
    return out


CASES = _cases()
