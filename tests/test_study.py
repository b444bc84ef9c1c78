"""pykvm study: exact operation counts per path for every preset, each derived from reading
upstream Linux (not from csrc/kvm), per-event cycles and their ranges from the profile,
and the study's outputs: table, CSV, JSON, PNG, --compare. No timing assertions.

Where the counts come from. Every count below cites the upstream function that executes
the operation and the statement that does it, in torvalds/linux at commit 8ecb10bcbfa3
(v6.8 era: arch/x86/kvm/x86.c, vmx/vmx.c, svm/svm.c) and vmx/vmenter.S at 03c11eb3b16d,
read through the code index. Lines are cited by their statement rather than a number
(the stored copies are read in pieces; a statement also survives the next rebase).
Older presets cite the commit that changed the behaviour. What the model deliberately does
not mirror is listed in README.md ("Deliberate simplifications") and noted here where a
count would otherwise differ from upstream's.
"""
import argparse
import csv
import json

import pytest

from pykvm import profiles as P
from pykvm import study

# ---------------------------------------------------------------------------------------
# Set-up common to every row (pykvm.study, pykvm.workloads): the profile's CPU model (vmx:
# skylake, with legacy IBRS, load-EFER controls, TSX, PML, Meltdown/MDS/L1TF; svm: zen3,
# no V_SPEC_CTRL, none of those bugs), the vCPU thread on pCPU 1, the guest's boot MSRs =
# workloads.GUEST_MSRS: STAR and LSTAR differ from the host's, SYSCALL_MASK equals it,
# TSC_AUX = 7 (the host's is the pCPU number). The guest's SPEC_CTRL is 0; the host's is 0
# in user mode and, with legacy kernel IBRS, IBRS in the kernel.
#
# The features each VMX preset has (pykvm.vendors.vmx presets; the commits in their
# comments): legacy kernel IBRS (5.19), PTI (4.15), the MDS VERW (5.2), the L1TF flush
# (4.19), PML (4.2), the preemption timer (4.10), the FPU swapped per KVM_RUN (4.15),
# user-return MSRs (uret, 26bb0981b3ff, 2.6.32), MSR bitmaps (2.6.24), the host state kept
# loaded across in-kernel exits (lw, e6adf28365b2) and host MSR values read once
# (snap, 2345df8c555e), both 2.6.21.
# ---------------------------------------------------------------------------------------

_MODERN = dict(uret=1, bitmaps=1, lw=1, snap=1)
_OLD = dict(ibrs=0, pti=0, mds=0, l1d=0, pml=0, hv_timer=0, fpu=0, uret=0)
VMX_ERA = {
    "upstream": dict(ibrs=1, pti=1, mds=1, l1d=1, pml=1, hv_timer=1, fpu=1, **_MODERN),
    "v5.18": dict(ibrs=0, pti=1, mds=1, l1d=1, pml=1, hv_timer=1, fpu=1, **_MODERN),
    "v4.18": dict(ibrs=0, pti=1, mds=0, l1d=0, pml=1, hv_timer=1, fpu=1, **_MODERN),
    "v2.6.31": dict(_OLD, bitmaps=1, lw=1, snap=1),
    "v2.6.23": dict(_OLD, bitmaps=0, lw=1, snap=1),
    "v2.6.20": dict(_OLD, bitmaps=0, lw=0, snap=0),
}

def _add(*ds):
    out = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return {k: v for k, v in out.items() if v}


def syscall(e):
    """One kernel entry and exit to user mode (arch/x86/entry/entry_64.S entry_SYSCALL_64,
    kernel/entry/common.c syscall_exit_to_user_mode): `swapgs` on each side; with PTI
    SWITCH_TO_KERNEL_CR3 / SWITCH_TO_USER_CR3 (a MOV to CR3 each); with legacy kernel IBRS
    IBRS_ENTER / IBRS_EXIT (a WRMSR SPEC_CTRL each, calling.h); with the MDS mitigation
    one VERW on the way out (mds_user_clear_cpu_buffers); the C entry and exit work."""
    ops = {"SW_SYSCALL_ENTRY": 1, "SW_SYSCALL_EXIT": 1, "SWAPGS": 2,
           "MOV_TO_CR": 2 * e["pti"], "WRMSR": 2 * e["ibrs"], "VERW": e["mds"]}
    return _add(ops), ({"WRMSR SPEC_CTRL": 2} if e["ibrs"] else {})


def vmx_vcpu_run(e, *, vmwrites=1, flush=0):
    """One VM-entry and exit through vmx_vcpu_run (vmx.c):
    - `vmcs_writel(GUEST_RIP, ...)` when RIP is dirty (`vmwrites`, the skip made it so);
    - vmx_update_hv_timer, only when a timer is armed (fast path: counted by the caller);
    - vmx_vcpu_enter_exit: `vmx_l1d_flush(vcpu)` (cond: `native_wrmsrl(MSR_IA32_FLUSH_CMD,
      L1D_FLUSH)` when l1tf_flush_l1d, set by vcpu_run() for every KVM_RUN), else
      `mds_clear_cpu_buffers()`; `if (vcpu->arch.cr2 != native_read_cr2())` and
      `vcpu->arch.cr2 = native_read_cr2()`: 2 MOV from CR2;
    - __vmx_vcpu_run (vmenter.S): `wrmsr` of the guest SPEC_CTRL when it differs from
      x86_spec_ctrl_current (0 vs IBRS with legacy IBRS), VMRESUME, VM-exit,
      FILL_RETURN_BUFFER, vmx_spec_ctrl_restore_host: `if (cpu_feature_enabled(
      X86_FEATURE_KERNEL_IBRS) || vmx->spec_ctrl != hostval) native_wrmsrl(...)`;
    - `vmx->exit_reason.full = vmcs_read32(VM_EXIT_REASON)` and
      `vmx->idt_vectoring_info = vmcs_read32(IDT_VECTORING_INFO_FIELD)`: 2 VMREAD;
    - vmx_recover_nmi_blocking: returns at `if (vmx->loaded_vmcs->nmi_known_unmasked)`
      after the first exit; vmx_complete_interrupts reads nothing when nothing was being
      delivered."""
    spec = 2 * e["ibrs"]
    ops = {"VMWRITE": vmwrites, "MOV_FROM_CR": 2, "VMRESUME": 1, "VMEXIT": 1,
           "RSB_FILL": 1, "VMREAD": 2, "WRMSR": spec + flush,
           "VERW": 1 if (e["mds"] and not e["l1d"]) else 0}
    msrs = _add({"WRMSR SPEC_CTRL": spec}, {"WRMSR FLUSH_CMD": flush})
    return _add(ops), msrs


# kvm_skip_emulated_instruction (x86.c): `unsigned long rflags =
# static_call(kvm_x86_get_rflags)(vcpu)` (vmx_get_rflags: `vmcs_readl(GUEST_RFLAGS)` once
# per exit), then skip_emulated_instruction (vmx.c): `instr_len =
# vmcs_read32(VM_EXIT_INSTRUCTION_LEN)`, `orig_rip = kvm_rip_read(vcpu)` (GUEST_RIP, once
# per exit), and vmx_set_interrupt_shadow(vcpu, 0): `interruptibility_old =
# vmcs_read32(GUEST_INTERRUPTIBILITY_INFO)`, no VMWRITE when unchanged. Each term: whether
# that read is still to do (the register cache lasts until the next VM-exit).
def skip(rflags=1, rip=1):
    return rflags + 1 + rip + 1


# __vmx_handle_exit: `if (enable_pml && !is_guest_mode(vcpu)) vmx_flush_pml_buffer(vcpu)`,
# which starts with `pml_idx = vmcs_read16(GUEST_PML_INDEX)` (the log is always empty).
def pml(e):
    return e["pml"]


_URET_SLOTS = ("STAR", "LSTAR", "SYSCALL_MASK", "TSC_AUX", "TSX_CTRL")


def vmx_prepare(e):
    """vmx_prepare_switch_to_guest, when the guest state is not loaded yet.

    Upstream: kvm_set_user_return_msr for the loaded slots whose value differs from what
    the CPU holds: LSTAR, STAR, TSC_AUX (SYSCALL_MASK equal; CSTAR never loaded; EFER via
    the VMCS or not different where it matters; TSX_CTRL equal under its mask) +
    `wrmsrl(MSR_KERNEL_GS_BASE, vmx->msr_guest_kernel_gs_base)`; kvm_read_ldt +
    savesegment ds, es + current_save_fsgs (savesegment fs, gs; rdfsbase;
    __rdgsbase_inactive: swapgs, rdgsbase, swapgs); vmx_set_host_fs_gs writes nothing
    (as cached).

    Before 26bb0981b3ff (uret=0), vmx_save_host_state: `load_msrs(vmx->guest_msrs,
    vmx->save_nmsrs)` writes every guest value of the save list, equal or not; the list
    held KERNEL_GS_BASE too (setup_msrs: `move_msr_up(vmx, index, save_nmsrs++)`). The
    model keeps today's slot list (STAR, LSTAR, SYSCALL_MASK, TSC_AUX, TSX_CTRL) for the
    old mechanism: 5 + KERNEL_GS_BASE = 6 WRMSR. Before 2345df8c555e (snap=0) the host's
    values were read on every load as well: 5 RDMSR (its KERNEL_GS_BASE is the
    RDGSBASE above)."""
    ops = {"SWAPGS": 2, "RDGSBASE": 1, "MOV_SREG": 5, "RDFSBASE": 1}
    if e["uret"]:
        ops["WRMSR"] = 4
        msrs = {"WRMSR LSTAR": 1, "WRMSR STAR": 1, "WRMSR TSC_AUX": 1,
                "WRMSR KERNEL_GS_BASE": 1}
    else:
        ops["WRMSR"] = 6
        msrs = {f"WRMSR {m}": 1 for m in _URET_SLOTS + ("KERNEL_GS_BASE",)}
    if not e["snap"]:
        ops["RDMSR"] = 5
        msrs.update({f"RDMSR {m}": 1 for m in _URET_SLOTS})
    return ops, msrs


def vmx_put_host(e):
    """vmx_prepare_switch_to_host: `rdmsrl(MSR_KERNEL_GS_BASE, ...)`, no LDT/GS reload;
    savesegment gs to compare and `loadsegment(ds/es, ...)` (the host's are __USER_DS):
    3 MOV_SREG; `wrmsrl(MSR_KERNEL_GS_BASE, ...)`; load_fixmap_gdt (LGDT). Before
    26bb0981b3ff, vmx_load_host_state: `save_msrs(vmx->guest_msrs, vmx->save_nmsrs);
    load_msrs(vmx->host_msrs, vmx->save_nmsrs);`: the 5 slots read back and the host's
    written, besides KERNEL_GS_BASE."""
    n = 1 if e["uret"] else 6
    ops = {"RDMSR": n, "MOV_SREG": 3, "WRMSR": n, "LGDT": 1}
    names = ("KERNEL_GS_BASE",) + (() if e["uret"] else _URET_SLOTS)
    msrs = {**{f"RDMSR {m}": 1 for m in names}, **{f"WRMSR {m}": 1 for m in names}}
    return ops, msrs


def vmx_userspace(e, handle_exit_vmreads, ioctl_vmreads, handle_exit_vmwrites=0,
                  emulate=0):
    """An exit to userspace and the KVM_RUN that completes it, on VMX."""
    sc_ops, sc_msrs = syscall(e)
    run_ops, run_msrs = vmx_vcpu_run(e, flush=e["l1d"])
    prep_ops, prep_msrs = vmx_prepare(e)
    put_ops, put_msrs = vmx_put_host(e)
    uret, lw = e["uret"], e["lw"]
    ops = {
        "SYSCALL": sc_ops,
        # kvm_arch_vcpu_ioctl_run: the ioctl's software; kvm_load_guest_fpu and
        # kvm_put_guest_fpu -> fpu_swap_kvm_fpstate: `save_fpregs_to_fpstate(fpu)` and
        # `restore_fpregs_from_fpstate(...)` each way (XSAVES + XRSTORS, twice);
        # post_kvm_run_save: `kvm_run->if_flag = static_call(kvm_x86_get_if_flag)(vcpu)`
        # (GUEST_RFLAGS, if not read since the exit).
        "IOCTL": _add({"SW_VCPU_IOCTL": 1, "XSAVES": 2 * e["fpu"], "XRSTORS": 2 * e["fpu"],
                       "VMREAD": ioctl_vmreads}),
        # vcpu_load -> kvm_arch_vcpu_load -> vmx_vcpu_load: the VMCS is current already;
        # `vmx->host_debugctlmsr = get_debugctlmsr()` (rdmsrl DEBUGCTL).
        "VCPU_LOAD": {"SW_VCPU_LOAD": 1, "RDMSR": 1},
        "PREPARE_SWITCH": prep_ops,
        # vcpu_enter_guest's own software, then vmx_vcpu_run. Before e6adf28365b2 (lw=0)
        # the host state came back right after the VM-exit, in vmx_vcpu_run.
        "VCPU_RUN": _add({"SW_ENTER_GUEST": 1}, run_ops, {} if lw else put_ops),
        "HANDLE_EXIT": _add({"SW_HANDLE_EXIT": 1, "VMREAD": handle_exit_vmreads,
                             "VMWRITE": handle_exit_vmwrites, "SW_EMULATE": emulate}),
        # vcpu_put: the host state back now (unless the exit already did it).
        "VCPU_PUT": _add({"SW_VCPU_PUT": 1}, put_ops if lw else {}),
        # kvm_on_user_return: `wrmsrl(kvm_uret_msrs_list[slot], values->host)` for LSTAR,
        # STAR, TSC_AUX. Before 26bb0981b3ff there is no notifier.
        "USER_RETURN": {"SW_USER_RETURN": uret, "WRMSR": 3 * uret},
    }
    uret_msrs = {"WRMSR LSTAR": 1, "WRMSR STAR": 1, "WRMSR TSC_AUX": 1}
    msrs = {
        "SYSCALL": sc_msrs,
        "VCPU_LOAD": {"RDMSR DEBUGCTL": 1},
        "PREPARE_SWITCH": prep_msrs,
        "VCPU_RUN": _add(run_msrs, {} if lw else put_msrs),
        "VCPU_PUT": put_msrs if lw else {},
        "USER_RETURN": uret_msrs if uret else {},
    }
    return ops, msrs


def vmx_pio(e):
    # Exit: handle_io: `exit_qualification = vmx_get_exit_qual(vcpu)` (1);
    # kvm_fast_pio_out: `vcpu->arch.pio.linear_rip = kvm_get_linear_rip(vcpu)`:
    # is_64_bit_mode -> vmx_get_cs_db_l_bits -> `vmx_read_guest_seg_ar(vmx, VCPU_SREG_CS)`
    # (1), kvm_rip_read (1). Next KVM_RUN, complete_fast_pio_out:
    # `kvm_is_linear_rip(vcpu, vcpu->arch.pio.linear_rip)` (cached), then the skip with
    # RFLAGS already read by post_kvm_run_save and RIP cached: LEN + interrupt shadow.
    return vmx_userspace(e, pml(e) + 3 + skip(rflags=0, rip=0), ioctl_vmreads=1)


def vmx_hlt(e):
    # kvm_emulate_halt: `int ret = kvm_skip_emulated_instruction(vcpu)`, then
    # __kvm_emulate_halt: no in-kernel LAPIC, `vcpu->run->exit_reason = reason`. RFLAGS is
    # cached for post_kvm_run_save; nothing is left to complete.
    return vmx_userspace(e, pml(e) + skip(), ioctl_vmreads=0)


def vmx_mmio(e):
    # handle_ept_misconfig: `gpa = vmcs_read64(GUEST_PHYSICAL_ADDRESS)`, no fast-MMIO
    # device, kvm_mmu_page_fault -> x86_emulate_instruction: init_emulate_ctxt reads
    # RFLAGS (`kvm_get_rflags`), CS.L/D (`get_cs_db_l_bits`) and RIP; the fetch checks
    # the CPL (`static_call(kvm_x86_get_cpl)`: SS AR bytes) and walks the guest page tables
    # from CR3 (EPT: `vmcs_readl(GUEST_CR3)`); a store completes before the exit:
    # writeback: toggle_interruptibility (`get_interrupt_shadow`: 1 VMREAD),
    # kvm_rip_write, `__kvm_set_rflags(vcpu, ctxt->eflags)` (vmx_set_rflags: 1 VMWRITE).
    # complete_emulated_mmio: `if (vcpu->mmio_is_write) return 1`.
    return vmx_userspace(e, pml(e) + 1 + 5 + 1, ioctl_vmreads=0, handle_exit_vmwrites=1,
                         emulate=1)


def vmx_kernel_exit(e, handler_vmreads, handler_wrmsrs=None):
    """An exit handled in the kernel: vcpu_run's loop again, vcpu_enter_guest again (the
    guest state is still loaded: prepare_switch_to_guest returns at
    `if (vmx->guest_state_loaded)`), no L1D flush (nothing set l1tf_flush_l1d). Before
    e6adf28365b2 (lw=0) the host state was saved before and restored after every
    VM-entry (vmx_vcpu_run), in-kernel exits included."""
    run_ops, run_msrs = vmx_vcpu_run(e)
    ops = {"VCPU_RUN": _add({"SW_ENTER_GUEST": 1, "SW_RUN_LOOP": 1}, run_ops),
           "HANDLE_EXIT": {"SW_HANDLE_EXIT": 1, "VMREAD": pml(e) + handler_vmreads}}
    msrs = {"VCPU_RUN": run_msrs}
    if handler_wrmsrs:
        ops["HANDLE_EXIT"]["WRMSR"] = sum(handler_wrmsrs.values())
        msrs["HANDLE_EXIT"] = handler_wrmsrs
    if not e["lw"]:
        prep_ops, prep_msrs = vmx_prepare(e)
        put_ops, put_msrs = vmx_put_host(e)
        ops["PREPARE_SWITCH"] = prep_ops
        ops["VCPU_RUN"] = _add(ops["VCPU_RUN"], put_ops)
        msrs["PREPARE_SWITCH"] = prep_msrs
        msrs["VCPU_RUN"] = _add(run_msrs, put_msrs)
    return ops, msrs


def vmx_cpuid(e):
    # kvm_emulate_cpuid: RAX/RCX from the register array, kvm_cpuid, the skip.
    return vmx_kernel_exit(e, skip())


def vmx_vmcall(e):
    # kvm_emulate_hypercall: `op_64_bit = is_64_bit_mode(vcpu)` (CS AR bytes) and
    # `if (static_call(kvm_x86_get_cpl)(vcpu) != 0)` (SS AR bytes), then the skip.
    return vmx_kernel_exit(e, 2 + skip())


def vmx_guest_ctxsw(e):
    """The guest's WRMSR KERNEL_GS_BASE: passed through by the MSR bitmap (2.6.24+:
    `vmx_disable_intercept_for_msr(MSR_KERNEL_GS_BASE, ...)`), no exit. Without MSR
    bitmaps every write exits: handle_wrmsr -> vmx_set_msr (2.6.2x): `msr->data = data;
    if (vmx->host_state.loaded) load_msrs(vmx->guest_msrs, vmx->save_nmsrs);`: the whole
    guest list again (5 + KERNEL_GS_BASE) while the host state is loaded (lw=1; with lw=0
    the exit has already put it back), then the skip."""
    if e["bitmaps"]:
        return {}, {}
    assert not e["uret"]       # only the 2.6.2x presets run without MSR bitmaps
    wrmsrs = ({f"WRMSR {m}": 1 for m in _URET_SLOTS + ("KERNEL_GS_BASE",)}
              if e["lw"] else None)
    return vmx_kernel_exit(e, skip(), wrmsrs)


def vmx_fastpath(e):
    """A WRMSR TSC_DEADLINE exit re-entered by vcpu_enter_guest's inner loop
    (`exit_fastpath == EXIT_FASTPATH_REENTER_GUEST`): no vcpu_enter_guest pass, no
    handle_exit (so no PML read), no vcpu_run pass. vmx_exit_handlers_fastpath ->
    handle_fastpath_set_msr_irqoff -> handle_fastpath_set_tscdeadline (`if
    (!kvm_can_use_hv_timer(vcpu)) return 1;`: the VMX preemption timer) ->
    kvm_set_lapic_tscdeadline_msr, which returns at `if (!kvm_apic_present(vcpu) || ...)`:
    this VM has no in-kernel LAPIC, so no hypervisor timer is armed and
    vmx_update_hv_timer writes nothing (it parked the timer at -1 once, on the first
    entry). Then `kvm_skip_emulated_instruction(vcpu)` and
    `ret = EXIT_FASTPATH_REENTER_GUEST`."""
    run_ops, run_msrs = vmx_vcpu_run(e)
    return ({"VCPU_RUN": run_ops, "FASTPATH": {"SW_FASTPATH": 1, "VMREAD": skip()}},
            {"VCPU_RUN": run_msrs})


# What one preemption adds (overcommit: another task woken while the guest runs; the vCPU
# thread yields to it at vcpu_run's reschedule point after its in-kernel CPUID exit,
# `if (__xfer_to_guest_mode_work_pending())` -> xfer_to_guest_mode_handle_work ->
# schedule(), guest state loaded, vs no preemption). Two context switches (__switch_to: save_fsgs: rdfsbase, savesegment fs and
# gs, __rdgsbase_inactive; x86_fsgsbase_load: wrfsbase, __wrgsbase_inactive; then
# `savesegment(es, prev->es); if (unlikely(next->es | prev->es)) loadsegment(es, ...)` and
# the same for ds, reloaded since both tasks hold __USER_DS; the CR3 of the other mm), and
# the other task's exit to user mode and next kernel entry...
CTX_SWITCHES_2 = {"RDFSBASE": 2, "WRFSBASE": 2, "MOV_SREG": 12, "SWAPGS": 8, "RDGSBASE": 2,
                  "WRGSBASE": 2, "MOV_TO_CR": 2}


def vmx_preemption(e):
    # ... plus KVM's part: kvm_sched_out -> kvm_arch_vcpu_put: `if (vcpu->preempted)
    # vcpu->arch.preempted_in_kernel = !static_call(kvm_x86_get_cpl)(vcpu)` (SS AR bytes,
    # not read since the exit) and vmx_vcpu_put -> vmx_prepare_switch_to_host (nothing
    # when the exit already put the host state back, lw=0); the other task's return to
    # user mode runs kvm_on_user_return; kvm_sched_in -> kvm_arch_sched_in
    # (`vcpu->arch.l1tf_flush_l1d = true`) and kvm_arch_vcpu_load (DEBUGCTL); the next
    # entry prepares again (lw=1; with lw=0 every entry prepares anyway) and flushes L1D.
    ops, msrs = vmx_pio(e)
    sc_ops, sc_msrs = syscall(e)
    flush, lw = e["l1d"], e["lw"]
    put_ops, put_msrs = vmx_put_host(e)
    prep_ops, prep_msrs = vmx_prepare(e)
    ops = {"OTHER": CTX_SWITCHES_2, "SYSCALL": sc_ops, "VCPU_LOAD": ops["VCPU_LOAD"],
           "PREPARE_SWITCH": prep_ops if lw else {},
           "VCPU_RUN": {"WRMSR": flush},
           "VCPU_PUT": _add({"SW_VCPU_PUT": 1, "VMREAD": 1}, put_ops if lw else {}),
           "USER_RETURN": ops["USER_RETURN"]}
    msrs = {"SYSCALL": sc_msrs, "VCPU_LOAD": msrs["VCPU_LOAD"],
            "PREPARE_SWITCH": prep_msrs if lw else {},
            "VCPU_RUN": {"WRMSR FLUSH_CMD": flush}, "VCPU_PUT": put_msrs if lw else {},
            "USER_RETURN": msrs["USER_RETURN"]}
    return ({p: _add(o) for p, o in ops.items() if _add(o)},
            {p: _add(m) for p, m in msrs.items() if _add(m)})


def vmx_migration(e):
    # What one migration adds: the old pCPU's own process takes it (a kernel entry and
    # exit, and the context switch), the new pCPU switches from its process to the vCPU
    # thread. vmx_vcpu_load_vmcs: `loaded_vmcs_clear(vmx->loaded_vmcs)` (VMCLEAR on the old
    # pCPU), `vmcs_load(...)` (VMPTRLD), `vmcs_writel(HOST_TR_BASE, ...)`,
    # `vmcs_writel(HOST_GDTR_BASE, ...)`, `vmcs_writel(HOST_IA32_SYSENTER_ESP, ...)`;
    # vmx_set_host_fs_gs: `vmcs_writel(HOST_GS_BASE, gs_base)` (the new pCPU's per-cpu
    # base); VMLAUNCH instead of VMRESUME (the VMCS was cleared). No IBPB: this vCPU ran
    # last on both pCPUs (the model follows the newer consolidated IBPB in
    # kvm_arch_vcpu_load; vmx_vcpu_load_vmcs at 8ecb10bcbfa3 issued it on every VMCS
    # switch).
    sc_ops, sc_msrs = syscall(e)
    ops = {"OTHER": CTX_SWITCHES_2, "SYSCALL": sc_ops,
           "VCPU_LOAD": {"VMCLEAR": 1, "VMPTRLD": 1, "VMWRITE": 3},
           "PREPARE_SWITCH": {"VMWRITE": 1}, "VCPU_RUN": {"VMLAUNCH": 1, "VMRESUME": -1}}
    return ops, None


# SVM, upstream (svm.c at 8ecb10bcbfa3). The VMCB is memory: KVM's reads of the exit
# code, RIP, RFLAGS, CPL, CS attributes and interrupt shadow cost no instruction.
SVM_SYSCALL = syscall(VMX_ERA["v2.6.31"])     # no PTI, legacy IBRS or MDS on Zen


def svm_userspace(emulate=0):
    return {
        "SYSCALL": SVM_SYSCALL[0],
        "IOCTL": {"SW_VCPU_IOCTL": 1, "XSAVES": 2, "XRSTORS": 2},
        # svm_vcpu_load: `if (sd->current_vmcb != svm->vmcb)`: it is.
        "VCPU_LOAD": {"SW_VCPU_LOAD": 1},
        # svm_prepare_switch_to_guest: `vmsave(sd->save_area_pa)`;
        # `kvm_set_user_return_msr(tsc_aux_uret_slot, svm->tsc_aux, -1ull)` (7 != 1).
        "PREPARE_SWITCH": {"VMSAVE": 1, "WRMSR": 1},
        # svm_vcpu_run: `clgi()`; __svm_vcpu_run (svm/vmenter.S): VMLOAD of the guest VMCB,
        # VMRUN, #VMEXIT, VMSAVE of the guest VMCB, VMLOAD of the host save area,
        # FILL_RETURN_BUFFER; `stgi()`. svm_vcpu_put writes nothing.
        "VCPU_RUN": {"SW_ENTER_GUEST": 1, "CLGI": 1, "VMLOAD": 2, "VMRUN": 1, "VMEXIT": 1,
                     "VMSAVE": 1, "RSB_FILL": 1, "STGI": 1},
        "HANDLE_EXIT": _add({"SW_HANDLE_EXIT": 1, "SW_EMULATE": emulate}),
        "VCPU_PUT": {"SW_VCPU_PUT": 1},
        # kvm_on_user_return: TSC_AUX back to the pCPU number.
        "USER_RETURN": {"SW_USER_RETURN": 1, "WRMSR": 1},
    }


SVM_PIO = svm_userspace()
SVM_PIO_MSRS = {"PREPARE_SWITCH": {"WRMSR TSC_AUX": 1}, "USER_RETURN": {"WRMSR TSC_AUX": 1}}
SVM_MMIO = svm_userspace(emulate=1)
SVM_KERNEL_EXIT = {"VCPU_RUN": _add(SVM_PIO["VCPU_RUN"], {"SW_RUN_LOOP": 1}),
                   "HANDLE_EXIT": {"SW_HANDLE_EXIT": 1}}

# SVM before e79b91bb3c91 and before TSC_AUX moved to user return (v5.10):
SVM_PIO_V510 = {
    "SYSCALL": SVM_SYSCALL[0],
    "IOCTL": {"SW_VCPU_IOCTL": 1, "XSAVES": 2, "XRSTORS": 2},
    # svm_vcpu_load (v5.10): `rdmsrl(MSR_GS_BASE, ...)`, savesegment fs, gs and
    # kvm_read_ldt, `rdmsrl(host_save_user_msrs[i], ...)` for STAR, LSTAR, CSTAR,
    # SYSCALL_MASK, KERNEL_GS_BASE, FS_BASE, SYSENTER_CS/ESP/EIP, the host TSC_AUX = 11
    # RDMSR; `wrmsrl(MSR_TSC_AUX, svm->tsc_aux)`.
    "VCPU_LOAD": {"SW_VCPU_LOAD": 1, "MOV_SREG": 3, "RDMSR": 11, "WRMSR": 1},
    # No VMSAVE in prepare; after #VMEXIT no host VMLOAD but reload_tss() (LTR) and
    # `wrmsrl(MSR_GS_BASE, svm->host.gs_base)` before STGI.
    "VCPU_RUN": {"SW_ENTER_GUEST": 1, "CLGI": 1, "VMLOAD": 1, "VMRUN": 1, "VMEXIT": 1,
                 "VMSAVE": 1, "RSB_FILL": 1, "WRMSR": 1, "LTR": 1, "STGI": 1},
    "HANDLE_EXIT": {"SW_HANDLE_EXIT": 1},
    # svm_vcpu_put (v5.10): kvm_load_ldt; loadsegment fs; `wrmsrl(MSR_KERNEL_GS_BASE,
    # current->thread.gsbase)`; load_gs_index (swapgs, mov gs, swapgs); `wrmsrl(
    # host_save_user_msrs[i], ...)` (KERNEL_GS_BASE a second time, as the list had it)
    # and the host TSC_AUX = 11 WRMSR.
    "VCPU_PUT": {"SW_VCPU_PUT": 1, "LLDT": 1, "MOV_SREG": 2, "SWAPGS": 2, "WRMSR": 11},
}
SVM_PIO_V510_MSRS = {
    "VCPU_LOAD": {"RDMSR STAR": 1, "RDMSR LSTAR": 1, "RDMSR CSTAR": 1,
                  "RDMSR SYSCALL_MASK": 1, "RDMSR KERNEL_GS_BASE": 1, "RDMSR SYSENTER_CS": 1,
                  "RDMSR SYSENTER_ESP": 1, "RDMSR SYSENTER_EIP": 1, "RDMSR TSC_AUX": 1,
                  "RDMSR GS_BASE": 1, "RDMSR FS_BASE": 1, "WRMSR TSC_AUX": 1},
    "VCPU_RUN": {"WRMSR GS_BASE": 1},
    "VCPU_PUT": {"WRMSR STAR": 1, "WRMSR LSTAR": 1, "WRMSR CSTAR": 1,
                 "WRMSR SYSCALL_MASK": 1, "WRMSR KERNEL_GS_BASE": 2, "WRMSR SYSENTER_CS": 1,
                 "WRMSR SYSENTER_ESP": 1, "WRMSR SYSENTER_EIP": 1, "WRMSR TSC_AUX": 1,
                 "WRMSR FS_BASE": 1},
}
SVM_KERNEL_EXIT_V510 = {"VCPU_RUN": _add(SVM_PIO_V510["VCPU_RUN"], {"SW_RUN_LOOP": 1}),
                        "HANDLE_EXIT": {"SW_HANDLE_EXIT": 1}}

# One preemption on SVM: svm_vcpu_put only clears guest_state_loaded, so the next entry
# VMSAVEs again and loads TSC_AUX again, restored on the other task's return to user mode.
SVM_PREEMPTION = {"OTHER": CTX_SWITCHES_2, "SYSCALL": SVM_SYSCALL[0],
                  "VCPU_LOAD": SVM_PIO["VCPU_LOAD"], "VCPU_PUT": SVM_PIO["VCPU_PUT"],
                  "PREPARE_SWITCH": SVM_PIO["PREPARE_SWITCH"],
                  "USER_RETURN": SVM_PIO["USER_RETURN"]}
# v5.10: the by-hand save on sched_in's vcpu_load and restore on sched_out's vcpu_put.
SVM_PREEMPTION_V510 = {"OTHER": CTX_SWITCHES_2, "SYSCALL": SVM_SYSCALL[0],
                       "VCPU_LOAD": SVM_PIO_V510["VCPU_LOAD"],
                       "VCPU_PUT": SVM_PIO_V510["VCPU_PUT"]}
SVM_MIGRATION = {"OTHER": CTX_SWITCHES_2, "SYSCALL": SVM_SYSCALL[0]}


def _vmx_expectations(preset):
    e = VMX_ERA[preset]
    out = {"pio": vmx_pio(e), "hlt": vmx_hlt(e), "mmio": vmx_mmio(e),
           "cpuid": vmx_cpuid(e), "vmcall": vmx_vmcall(e), "guest-ctxsw": vmx_guest_ctxsw(e),
           "overcommit": vmx_preemption(e), "migrate": vmx_migration(e)}
    if e["hv_timer"]:
        out["fastpath"] = vmx_fastpath(e)
    return out


EXPECTED = {
    **{("vmx", p): _vmx_expectations(p) for p in VMX_ERA},
    # v5.15 restores the host state with a VMLOAD in C before STGI, and SPEC_CTRL in C:
    # the same operations as upstream, in another place.
    **{("svm", p): {"pio": (SVM_PIO, SVM_PIO_MSRS), "hlt": (SVM_PIO, SVM_PIO_MSRS),
                    "mmio": (SVM_MMIO, SVM_PIO_MSRS), "cpuid": (SVM_KERNEL_EXIT, {}),
                    "vmcall": (SVM_KERNEL_EXIT, {}), "guest-ctxsw": ({}, {}),
                    "overcommit": (SVM_PREEMPTION, None), "migrate": (SVM_MIGRATION, None)}
       for p in ("upstream", "v5.15")},
    ("svm", "v5.10"): {"pio": (SVM_PIO_V510, SVM_PIO_V510_MSRS),
                       "hlt": (SVM_PIO_V510, SVM_PIO_V510_MSRS),
                       "cpuid": (SVM_KERNEL_EXIT_V510, {"VCPU_RUN": {"WRMSR GS_BASE": 1}}),
                       "overcommit": (SVM_PREEMPTION_V510, None),
                       "migrate": (SVM_MIGRATION, None)},
}
CASES = [(v, p, w) for (v, p), ws in EXPECTED.items() for w in ws]
# Rows that do not run: the TSC-deadline fast path needs a hypervisor timer
# (handle_fastpath_set_tscdeadline: `if (!kvm_can_use_hv_timer(vcpu)) return 1`). SVM has
# none (no set_hv_timer in svm_x86_ops); VMX before the preemption timer (4.10) had none.
SKIPPED = [("svm", p, "fastpath") for p in ("upstream", "v5.15", "v5.10")] + \
    [("vmx", p, "fastpath") for p, e in VMX_ERA.items() if not e["hv_timer"]]


def test_every_preset_has_expectations():
    """A new preset needs its counts derived here."""
    from pykvm.vendors import get_vendor
    for vendor in ("vmx", "svm"):
        assert {p for v, p in EXPECTED if v == vendor} == set(get_vendor(vendor).presets)


def _clean(d):
    return {p: {k: v for k, v in ops.items() if v} for p, ops in d.items()
            if any(ops.values())}


@pytest.mark.parametrize("vendor, preset, workload", CASES)
def test_exact_operation_counts(vendor, preset, workload):
    ops, msrs = EXPECTED[(vendor, preset)][workload]
    row = study.measure(study.Variant(vendor, preset), workload, iterations=4)
    assert _clean(row.path_ops) == _clean(ops)
    if msrs is not None:
        assert _clean(row.path_msrs) == _clean(msrs)
    # Cycles per event are the profile's prices of exactly those operations.
    prof = P.load_profile(P.default_profile(vendor))
    want = 0
    for p, o in ops.items():
        c = {"ops": o, "msrs": (msrs or {}).get(p, {}) if msrs is not None
             else row.path_msrs.get(p, {})}
        want += sum(prof.attribute(c).values())
    assert row.cycles == want
    assert row.cycles_lo <= row.cycles <= row.cycles_hi


@pytest.mark.parametrize("vendor, preset, workload", SKIPPED)
def test_rows_without_the_mechanism_are_skipped_with_the_reason(vendor, preset, workload):
    row = study.measure(study.Variant(vendor, preset), workload, iterations=4)
    assert "no hypervisor timer" in row.skipped and "no fast path" in row.skipped
    assert row.cyc_per_fastpath_exit is None


def _costs_of(vendor, workload, params="", cpu_model=None):
    spec = f"{vendor}:upstream" + (f":{params}" if params else "")
    if cpu_model:
        spec += ("," if params else ":") + f"cpu_model={cpu_model}"
    return study.measure(spec, workload, iterations=4)


def test_fast_path_is_cheaper_than_an_in_kernel_exit_for_upstreams_reasons():
    """EXIT_FASTPATH_REENTER_GUEST skips a vcpu_enter_guest pass, handle_exit (with its PML
    read) and a vcpu_run pass; it adds the fast-path handler (no preemption timer is armed:
    the VM has no in-kernel LAPIC, see vmx_fastpath). Everything else of the two round
    trips is the same."""
    prof = P.load_profile("skylake-sp")
    fast = _costs_of("vmx", "fastpath")
    kern = _costs_of("vmx", "cpuid")
    assert fast.cyc_per_fastpath_exit < kern.cyc_per_kernel_exit
    skipped = {"SW_ENTER_GUEST": 1, "SW_RUN_LOOP": 1, "SW_HANDLE_EXIT": 1, "VMREAD": 1}
    added = {"SW_FASTPATH": 1}
    assert kern.total("SW_ENTER_GUEST") == 1 and fast.total("SW_ENTER_GUEST") == 0
    assert kern.total("SW_HANDLE_EXIT") == 1 and fast.total("SW_HANDLE_EXIT") == 0
    assert kern.total("SW_RUN_LOOP") == 1 and fast.total("SW_RUN_LOOP") == 0
    for op in ("VMREAD", "VMWRITE", "WRMSR", "VMRESUME", "VMEXIT", "MOV_FROM_CR"):
        assert fast.total(op) - kern.total(op) == added.get(op, 0) - skipped.get(op, 0), op
    price = {op: prof.entries[f"op.{op}"].cycles for op in (*skipped, *added)}
    saved = sum(price[op] * n for op, n in skipped.items())
    paid = sum(price[op] * n for op, n in added.items())
    assert kern.cycles - fast.cycles == saved - paid > 0
    # No prepare_switch_to_guest, no IRQ/preemption window, no put on the fast path.
    assert set(fast.path_ops) == {"VCPU_RUN", "FASTPATH"}


def test_svm_has_no_tsc_deadline_fast_path():
    """On SVM the same WRMSR is an ordinary in-kernel exit (no hypervisor timer): it
    costs what a CPUID exit costs, handler aside."""
    import pykvm
    from pykvm import workloads as W
    m = pykvm.Machine(cpus=2, vendor="svm", cpu_model="zen3",
                      profile=P.load_profile("epyc-zen").costs)
    assert not m.has_hv_timer
    ok, why = W.get("fastpath").available(m)
    assert not ok and "no hypervisor timer" in why
    assert pykvm.Machine(cpus=1, vendor="vmx").has_hv_timer
    assert not pykvm.Machine(cpus=1, vendor="vmx",
                             params={"enable_preemption_timer": False}).has_hv_timer


# ---------------------------------------------------------------------------------------
# Legacy IBRS (bea7e31a5cac, vmx_spec_ctrl_restore_host) and the syscall mitigations.
# ---------------------------------------------------------------------------------------

def _spec_ctrl_run(vendor, cpu_model, params=None, guest_spec_ctrl=1, exits=6):
    """A guest that writes SPEC_CTRL once (the write is intercepted until then; after it
    the guest owns the MSR: vmx_set_msr / svm_set_msr stop intercepting it) and then makes
    `exits` in-kernel CPUID exits. Returns (machine costs of the exits, exits + 1)."""
    import pykvm
    from pykvm import guest

    @guest.program
    def image(a):
        a.mov("ecx", 0x48)
        a.mov("eax", guest_spec_ctrl)
        a.xor("edx", "edx")
        a.wrmsr()
        a.sync()
        for _ in range(exits):
            a.xor("eax", "eax")
            a.cpuid()
        a.sync()
        a.done()

    prof = P.load_profile(P.default_profile(vendor))
    m = pykvm.Machine(cpus=1, vendor=vendor, cpu_model=cpu_model, params=params or {},
                      profile=prof.costs)
    vcpu = m.create_vm().create_vcpu()
    vcpu.load(image)
    guest.run_ucall(vcpu, image, guest.UcallCmd.SYNC)     # the intercepted write
    m.reset_costs()
    guest.run_ucall(vcpu, image, guest.UcallCmd.SYNC)     # `exits` CPUID exits, one OUT
    return m.costs(), exits + 1


def _spec_ctrl_guest(cpu_model, params=None, guest_spec_ctrl=1):
    """WRMSR and RDMSR of SPEC_CTRL on VCPU_RUN per VM-exit."""
    costs, n = _spec_ctrl_run("vmx", cpu_model, params, guest_spec_ctrl)
    run = costs["VCPU_RUN"]["msrs"]
    return run.get("WRMSR SPEC_CTRL", 0) / n, run.get("RDMSR SPEC_CTRL", 0) / n


def test_legacy_ibrs_writes_spec_ctrl_after_every_exit():
    """With X86_FEATURE_KERNEL_IBRS the host value is written after every VM-exit even
    when the guest's equals it (vmx_spec_ctrl_restore_host: `if (cpu_feature_enabled(
    X86_FEATURE_KERNEL_IBRS) || vmx->spec_ctrl != hostval)`): exactly one WRMSR per exit
    on Skylake (legacy IBRS), none on Ice Lake (eIBRS) or with legacy IBRS off. The guest
    owns SPEC_CTRL here, so each exit also reads it back (VMX_RUN_SAVE_SPEC_CTRL)."""
    assert _spec_ctrl_guest("skylake") == (1, 1)
    assert _spec_ctrl_guest("icelake") == (0, 1)
    # Guest and host both 0 without legacy IBRS: nothing (a write of 0 keeps the
    # intercept: `if (!data) return 0` in vmx_set_msr, so nothing to save either).
    assert _spec_ctrl_guest("skylake", {"kernel_ibrs": False}, guest_spec_ctrl=0) == (0, 0)
    # A guest value that differs: written on entry and restored on exit, either way.
    assert _spec_ctrl_guest("skylake", guest_spec_ctrl=0)[0] == 2
    assert _spec_ctrl_guest("icelake", guest_spec_ctrl=0)[0] == 2


def test_legacy_ibrs_and_pti_cost_every_kernel_entry_and_exit():
    sky = _costs_of("vmx", "pio")
    assert sky.path_msrs["SYSCALL"] == {"WRMSR SPEC_CTRL": 2}
    assert sky.path_ops["SYSCALL"]["MOV_TO_CR"] == 2 and sky.path_ops["SYSCALL"]["VERW"] == 1
    ice = _costs_of("vmx", "pio", cpu_model="icelake")
    assert set(ice.path_ops["SYSCALL"]) == {"SWAPGS", "SW_SYSCALL_ENTRY", "SW_SYSCALL_EXIT"}
    off = _costs_of("vmx", "pio", params="kernel_ibrs=0,pti=0,mds=0")
    assert off.path_ops["SYSCALL"] == ice.path_ops["SYSCALL"]
    assert sky.cycles > off.cycles


def _machine_costs(vendor, cpu_model, setup):
    """Costs of what `setup(machine)` makes the machine do, after VM creation."""
    import pykvm
    prof = P.load_profile(P.default_profile(vendor))
    m = pykvm.Machine(cpus=1, vendor=vendor, cpu_model=cpu_model, profile=prof.costs)
    vm = m.create_vm()
    m.reset_costs()
    setup(m, vm)
    return m.costs()


def _two_vcpus_on_one_pcpu(m, vm):
    a, b = vm.create_vcpu(), vm.create_vcpu()
    m.reset_costs()
    a.get_regs()            # a different vCPU ran on the pCPU last: IBPB
    b.get_regs()


def _guest_efer_without_sce(m, vm):
    """EFER through user return (no load-EFER controls): in long mode SCE is not ignored
    (update_transition_efer), so a guest EFER without SCE is loaded by
    vmx_prepare_switch_to_guest and restored on return to user mode."""
    from pykvm import guest
    img = guest.program(lambda a: (a.sync(), a.done()))
    vcpu = vm.create_vcpu()
    vcpu.load(img)
    vcpu.set_msrs({0xC0000080: 0xD00})            # LMA|LME|NX, no SCE
    m.reset_costs()
    guest.run_ucall(vcpu, img, guest.UcallCmd.SYNC)


def _scenarios():
    """(profile, what ran, costs) for every per-MSR entry's MSR."""
    out = []
    for variant, workload in (("vmx:upstream", "pio"), ("vmx:upstream", "migrate"),
                              ("svm:upstream", "pio"), ("svm:v5.10", "pio")):
        vendor = variant.split(":")[0]
        row = study.measure(variant, workload, iterations=3)
        out.append((P.default_profile(vendor), f"{variant} {workload}",
                    {p: {"ops": row.path_ops[p], "msrs": row.path_msrs.get(p, {})}
                     for p in row.path_ops}))
    for vendor, model in (("vmx", "skylake"), ("svm", "zen3")):
        out.append((P.default_profile(vendor), f"{vendor} SPEC_CTRL guest",
                    _spec_ctrl_run(vendor, model, guest_spec_ctrl=4 if vendor == "svm"
                                   else 1)[0]))
        out.append((P.default_profile(vendor), f"{vendor} two vCPUs",
                    _machine_costs(vendor, model, _two_vcpus_on_one_pcpu)))
    out.append(("skylake-sp", "vmx EFER by user return",
                _machine_costs("vmx", "skylake-noloadefer", _guest_efer_without_sce)))
    return out


def test_each_per_msr_price_is_used_where_that_msr_is_accessed():
    """Every per-MSR entry of the built-in profiles prices the accesses some path makes to
    that MSR, at its own price, not the operation's default."""
    import pykvm
    # VM creation enables SVM on each CPU: EFER.SVME (svm_enable_virtualization_cpu).
    prof = P.load_profile("epyc-zen")
    m = pykvm.Machine(cpus=1, vendor="svm", cpu_model="zen3", profile=prof.costs)
    m.reset_costs()
    m.create_vm()
    hw = m.costs()["HARDWARE"]
    assert hw["msrs"]["WRMSR EFER"] == 1
    assert prof.attribute(hw)["wrmsr.EFER"] == prof.entries["wrmsr.EFER"].cycles
    seen = {"epyc-zen": {"wrmsr.EFER"}, "skylake-sp": set()}
    for name, what, costs in _scenarios():
        prof = P.load_profile(name)
        for path, c in costs.items():
            attributed = prof.attribute(c)
            for access, n in c["msrs"].items():
                verb, msr = access.split()
                key = f"{verb.lower()}.{msr}"
                if key in prof.entries:
                    assert attributed[key] == pytest.approx(n * prof.entries[key].cycles), \
                        (what, path, access)
                    seen[name].add(key)
    for name, keys in seen.items():
        per_msr = {k for k in P.load_profile(name).entries if not k.startswith("op.")}
        assert per_msr == keys, f"{name}: no scenario uses {sorted(per_msr - keys)}"


# ---------------------------------------------------------------------------------------
# Intervals
# ---------------------------------------------------------------------------------------

def test_intervals_follow_the_grades_and_widen_with_estimate_share(tmp_path):
    """A row's range is the sum of its entries' ranges: an exact profile gives a point;
    grading the same figures as estimates widens it by at least 1.5x the cycles priced by
    estimates (estimate: x/÷2); measured figures add at most +-10%."""
    sky = P.load_profile("skylake-sp")

    def regraded(grade, keys=None):
        body = "[profile]\nname = 'g'\nvendor = 'intel'\ncpu_model = 'skylake'\n"
        for key, e in sky.entries.items():
            g = grade if keys is None or key in keys else "spec"
            body += (f"[{key}]\ncycles = {e.cycles}\ngrade = '{g}'\nsource = 's'\n"
                     + ("note = 'n'\n" if g in ("estimate", "derived") else ""))
        path = tmp_path / f"{grade}-{len(keys or ())}.toml"
        path.write_text(body)
        return P.load_profile(str(path))

    exact = study.measure("vmx:upstream", "pio", profile=regraded("spec"), iterations=3)
    assert exact.cycles_lo == exact.cycles == exact.cycles_hi
    assert all(lo == hi for lo, hi in exact.path_cycles_range.values())
    measured = study.measure("vmx:upstream", "pio", profile=regraded("measured"), iterations=3)
    assert measured.cycles_lo == pytest.approx(0.9 * measured.cycles)
    assert measured.cycles_hi == pytest.approx(1.1 * measured.cycles)
    sw = [k for k in sky.entries if k.startswith("op.SW_")]
    some = study.measure("vmx:upstream", "pio", profile=regraded("estimate", sw), iterations=3)
    all_ = study.measure("vmx:upstream", "pio", profile=regraded("estimate"), iterations=3)
    assert 0 < some.estimate_share < all_.estimate_share == 1
    width = [(r.cycles_hi - r.cycles_lo) / r.cycles for r in (some, all_)]
    assert width[0] == pytest.approx(1.5 * some.estimate_share)
    assert width[1] == pytest.approx(1.5)
    # Per path: the row's range is the sum of the paths'.
    assert sum(lo for lo, _ in some.path_cycles_range.values()) == pytest.approx(some.cycles_lo)
    assert sum(hi for _, hi in some.path_cycles_range.values()) == pytest.approx(some.cycles_hi)


def test_counts_do_not_depend_on_the_iteration_count():
    a = study.measure("vmx:upstream", "fastpath", iterations=3)
    b = study.measure("vmx:upstream", "fastpath", iterations=17)
    assert (a.path_ops, a.cycles) == (b.path_ops, b.cycles)
    assert a.events["fastpath_exits"] == 3 and b.events["fastpath_exits"] == 17


def test_row_metrics_and_estimates():
    r = study.measure("svm:upstream", "pio", iterations=4)
    assert r.cyc_per_userspace_round_trip == r.cycles > 0
    assert r.cyc_per_fastpath_exit is None and r.cyc_per_preemption is None
    assert r.verdict == study.NOT_CHECKED
    # VMLOAD, VMRUN and VMEXIT are estimates in epyc-zen; VMSAVE is claimed.
    assert {"op.VMLOAD", "op.VMRUN", "op.VMEXIT"} <= set(r.estimates)
    assert "op.VMSAVE" not in r.estimates
    assert 0 < r.estimate_share < 1
    assert r.total("VMLOAD") == 2 and r.ops("VMSAVE") == {"PREPARE_SWITCH": 1, "VCPU_RUN": 1}
    assert r.cycles_lo < r.cycles < r.cycles_hi


# ---------------------------------------------------------------------------------------
# Variants, the study run, outputs, compare, CLI
# ---------------------------------------------------------------------------------------

def test_variant_parse():
    v = study.Variant.parse("vmx:upstream:user_return_msrs=0,cpu_model=icelake,forget_star=on")
    assert v == study.Variant("vmx", "upstream", (("forget_star", True),
                                                  ("user_return_msrs", False)), "icelake")
    assert v.label == "vmx:upstream:forget_star=1,user_return_msrs=0,cpu_model=icelake"
    assert study.Variant.parse("svm").preset is None
    assert study.Variant.parse("svm:-").label == "svm:-"
    with pytest.raises(ValueError, match="no parameter 'oops'"):
        study.Variant.parse("vmx:upstream:oops")
    with pytest.raises(ValueError, match="'banana' is not a bool"):
        study.Variant.parse("vmx:upstream:user_return_msrs=banana")
    with pytest.raises(ValueError, match="no parameter .user_return_msrs. in kernel, kvm, kvm_amd"):
        study.Variant.parse("svm:upstream:user_return_msrs=0")


def test_variant_errors_are_clear():
    with pytest.raises(ValueError, match="no CPU model 'zen9'"):
        study.measure("svm:upstream:cpu_model=zen9", "pio")
    with pytest.raises(ValueError, match="prices an intel CPU"):
        study.measure("svm:upstream", "pio", profile="skylake-sp")
    with pytest.raises(ValueError, match="none of the presets"):
        study.plan(vendors=["svm"], presets=["v2.6.31"])


def test_params_on_top_of_a_preset_change_the_counts():
    base = study.measure("vmx:upstream", "pio", iterations=3)
    put = study.measure("vmx:upstream:user_return_msrs=0", "pio", iterations=3)
    switch = ("PREPARE_SWITCH", "VCPU_PUT", "USER_RETURN")
    # vmx_prepare / vmx_put_host above, with uret=0: the whole list each way.
    assert {p: n for p, n in put.ops("WRMSR").items() if p in switch} == \
        {"PREPARE_SWITCH": 6, "VCPU_PUT": 6}
    assert {p: n for p, n in base.ops("WRMSR").items() if p in switch} == \
        {"PREPARE_SWITCH": 4, "VCPU_PUT": 1, "USER_RETURN": 3}


@pytest.fixture(scope="module")
def small_study():
    seen = []
    rows = study.run_study(vendors=["vmx", "svm"], presets=["upstream"],
                           workloads=["pio", "fastpath", "overcommit"], iterations=3,
                           progress=lambda done, total, row: seen.append((done, total)),
                           verdict_fn=lambda row: f"ok {row.variant}")
    return rows, seen


def test_study_rows_and_progress(small_study):
    rows, seen = small_study
    assert [(r.variant, r.workload) for r in rows] == [
        (f"{v}:upstream", w) for v in ("vmx", "svm") for w in ("pio", "fastpath", "overcommit")]
    assert seen == [(i, 6) for i in range(1, 7)]
    assert all(r.verdict == (f"ok {r.variant}" if not r.skipped else study.NOT_CHECKED)
               for r in rows)
    assert [r.skipped != "" for r in rows] == [False] * 4 + [True, False]  # svm fastpath
    assert {r.profile for r in rows} == {"skylake-sp", "epyc-zen"}
    by = {(r.vendor, r.workload): r for r in rows}
    assert by[("vmx", "fastpath")].cyc_per_fastpath_exit > 0
    assert by[("svm", "pio")].cyc_per_userspace_round_trip > 0
    assert by[("vmx", "overcommit")].cyc_per_preemption > 0


def test_study_writes_csv_json_png(small_study, tmp_path):
    rows, _ = small_study
    paths = study.write_outputs(rows, tmp_path / "out")
    with open(paths["csv"]) as f:
        data = list(csv.DictReader(f))
    cols = list(data[0])
    assert cols == study.csv_columns()
    for col in ("vendor", "preset", "workload", "cyc_per_fastpath_exit",
                "cyc_per_userspace_round_trip", "cyc_per_preemption", "estimate_share",
                "cycles_lo", "cycles_hi", "cycles_lo.VCPU_RUN", "cycles_hi.SYSCALL",
                "estimates", "verdict", *[f"{op}.{p}" for op in study.REPORTED_OPS
                                          for p in ("PREPARE_SWITCH", "VCPU_RUN",
                                                    "VCPU_PUT", "USER_RETURN")]):
        assert col in cols, col
    pio = next(d for d in data if d["vendor"] == "vmx" and d["workload"] == "pio")
    assert (pio["WRMSR.PREPARE_SWITCH"], pio["WRMSR.USER_RETURN"]) == ("4", "3")
    assert pio["cyc_per_fastpath_exit"] == "" and pio["cyc_per_userspace_round_trip"] != ""
    assert pio["verdict"] == "ok vmx:upstream"
    with open(paths["json"]) as f:
        js = json.load(f)
    assert len(js["rows"]) == len(rows)
    assert js["rows"][0]["path_ops"]["VCPU_RUN"]["VMRESUME"] == 1
    lo, hi = js["rows"][0]["path_cycles_range"]["VCPU_RUN"]
    assert lo < js["rows"][0]["path_cycles"]["VCPU_RUN"] < hi
    assert float(pio["cycles_lo"]) < float(pio["cycles"]) < float(pio["cycles_hi"])
    assert js["profiles"]["epyc-zen"]["figures"]["op.VMLOAD"]["rests_on_estimate"] is True
    with open(paths["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_table_renders(small_study):
    from rich.console import Console
    rows, _ = small_study
    console = Console(record=True, width=200)
    from pykvm.cli.study import ops_tables, table
    console.print(table(rows))
    for t in ops_tables(rows):
        console.print(t)
    text = console.export_text()
    assert "fast-path exit" in text and "P4 R3 T1 U3" in text and "ok svm:upstream" in text
    # Cycles, and under them the range the grades give: "10,080" / "5.8k-18.1k".
    from pykvm.cli.study import _range_text
    pio = next(r for r in rows if r.variant == "vmx:upstream" and r.workload == "pio")
    assert f"{round(pio.cycles):,}" in text and _range_text(pio) in text
    assert _range_text(pio) == (f"{pio.cycles_lo / 1000:.1f}k-{pio.cycles_hi / 1000:.1f}k")


def test_compare_shows_deltas(tmp_path):
    crows = study.compare("svm:upstream", "svm:v5.10", workloads=["pio", "cpuid"],
                          iterations=3)
    pio, cpuid = crows
    assert (pio.a.variant, pio.b.variant) == ("svm:upstream", "svm:v5.10")
    assert pio.delta == pio.b.cycles - pio.a.cycles > 0
    d = pio.op_deltas()
    assert d["RDMSR"] == {"VCPU_LOAD": 11}
    assert d["WRMSR"] == {"VCPU_LOAD": 1, "VCPU_RUN": 1, "VCPU_PUT": 11,
                          "PREPARE_SWITCH": -1, "USER_RETURN": -1}
    assert d["VMSAVE"] == {"PREPARE_SWITCH": -1} and d["VMLOAD"] == {"VCPU_RUN": -1}
    # An in-kernel exit: WRMSR GS_BASE and LTR instead of the host VMLOAD.
    e = P.load_profile("epyc-zen").entries
    assert cpuid.delta == (e["wrmsr.GS_BASE"].cycles + e["op.LTR"].cycles
                           - e["op.VMLOAD"].cycles)
    paths = study.write_compare(crows, tmp_path)
    with open(paths["csv"]) as f:
        data = list(csv.DictReader(f))
    assert data[0]["delta"] == str(round(pio.delta))
    assert data[0]["RDMSR.VCPU_LOAD.delta"] == "11"
    assert json.load(open(paths["json"]))["b"] == "svm:v5.10"


def _cli(argv):
    ap = argparse.ArgumentParser(prog="pykvm")
    sub = ap.add_subparsers(dest="cmd", required=True)
    from pykvm.cli.study import add_parser
    add_parser(sub, verdict_fn=lambda row: "checked")
    args = ap.parse_args(argv)
    return args.func(args)


def test_cli_study_and_compare(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "o"
    assert _cli(["study", "--vendor", "svm", "--preset", "upstream", "--workload", "pio",
                 "--iterations", "2", "--jobs", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "svm: cycles per event" in text and "upstream" in text and "checked" in text
    assert "study.csv" in text
    assert (out / "study.csv").exists() and (out / "study.png").exists()
    assert _cli(["study", "--compare", "vmx:upstream", "vmx:v2.6.31", "--workload", "pio",
                 "--iterations", "2", "--jobs", "1", "--out", str(out), "--no-png"]) == 0
    text = capsys.readouterr().out
    assert "B = vmx:v2.6.31" in text and "WRMSR" in text
    assert (out / "compare.csv").exists() and not (out / "compare.png").exists()
