"""The world switch as a host would observe it: user-return MSRs, lazy KERNEL_GS_BASE,
the fast path, exits to userspace, migration. Selftest style: guest and host side by side."""
import pytest

import pykvm
from pykvm import exits as X
from pykvm import guest
from pykvm.guest import UcallCmd

LSTAR, STAR, KGS, TSC_AUX, TSX_CTRL = 0xC0000082, 0xC0000081, 0xC0000102, 0xC0000103, 0x122
TSC_DEADLINE = 0x6E0


def _vcpu(m, body, cpu=0):
    image = guest.program(body)
    vcpu = m.create_vm().create_vcpu(cpu=cpu)
    vcpu.load(image)
    return vcpu, image


def test_uret_guest_value_stays_until_user_return():
    m = pykvm.Machine(cpus=2, vendor="vmx")
    host_lstar = m.read_cpu_msr(0, LSTAR)
    vcpu, image = _vcpu(m, lambda a: (a.wrmsr_safe(LSTAR, 0xFFFF800000001000), a.sync("r9"),
                                      a.done()))
    vcpu.run(return_to_user=False)
    # Not restored on VM-exit nor vcpu_put: only on the way to user mode. (Any ioctl,
    # get_regs included, is a return to user mode: read the hardware first.)
    assert m.read_cpu_msr(0, LSTAR) == 0xFFFF800000001000
    vcpu.return_to_user()
    assert m.read_cpu_msr(0, LSTAR) == host_lstar
    assert "WRMSR LSTAR" in m.costs()["USER_RETURN"]["msrs"]


def test_uret_dropped_on_virtualization_disable():
    m = pykvm.Machine(cpus=2, vendor="vmx")
    host_lstar = m.read_cpu_msr(0, LSTAR)
    vcpu, image = _vcpu(m, lambda a: (a.wrmsr_safe(LSTAR, 0xFFFF800000002000), a.sync(),
                                      a.done()))
    vcpu.run(return_to_user=False)
    assert m.read_cpu_msr(0, LSTAR) != host_lstar
    m.disable_virtualization(0)
    assert m.read_cpu_msr(0, LSTAR) == host_lstar


def test_uret_no_wrmsr_when_value_unchanged():
    """The guest rewrites the STAR it has: kvm_set_user_return_msr finds curr equal and
    skips the WRMSR; only loading it (prepare) and restoring it (user return) write."""
    m = pykvm.Machine(cpus=1, vendor="vmx")
    vcpu, image = _vcpu(m, lambda a: (a.rdmsr_safe(STAR), a.wrmsr_safe(STAR, "rax"),
                                      a.sync(), a.done()))
    m.reset_costs()
    guest.run_ucall(vcpu, image, UcallCmd.SYNC)
    c = m.costs()
    assert "WRMSR STAR" not in c["HANDLE_EXIT"]["msrs"]
    assert c["PREPARE_SWITCH"]["msrs"]["WRMSR STAR"] == 1
    assert c["USER_RETURN"]["msrs"]["WRMSR STAR"] == 1


def test_uret_mask_keeps_host_bits():
    """TSX_CTRL.CPUID_CLEAR belongs to the host: the guest's value of it never reaches
    hardware, but the guest reads back what it wrote."""
    m = pykvm.Machine(cpus=1, vendor="vmx", cpu_model="skylake")
    host = m.read_cpu_msr(0, TSX_CTRL)
    vcpu, image = _vcpu(m, lambda a: (a.wrmsr_safe(TSX_CTRL, 3), a.rdmsr_safe(TSX_CTRL),
                                      a.sync("r9", "rax"), a.done()))
    ex = vcpu.run(return_to_user=False)
    assert m.read_cpu_msr(0, TSX_CTRL) == 1 | (host & 2)
    vcpu.return_to_user()
    assert m.read_cpu_msr(0, TSX_CTRL) == host
    vec, val, _ = guest.get_ucall(vcpu, ex, image).args
    assert (vec, val) == (guest.NO_VECTOR, 3)


def test_svm_tsc_aux_through_user_return():
    m = pykvm.Machine(cpus=2, vendor="svm")
    vcpu, image = _vcpu(m, lambda a: (a.wrmsr_safe(TSC_AUX, 77), a.rdpid("rax"),
                                      a.sync("rax"), a.done()), cpu=1)
    ex = vcpu.run(return_to_user=False)
    assert m.read_cpu_msr(1, TSC_AUX) == 77
    vcpu.return_to_user()
    assert m.read_cpu_msr(1, TSC_AUX) == 1   # getcpu() in user space: the CPU number
    assert guest.get_ucall(vcpu, ex, image).args[0] == 77


def test_kernel_gs_base_lazy_and_host_restored(vendor):
    m = pykvm.Machine(cpus=1, vendor=vendor)

    def body(a):
        a.rdmsr_safe(KGS)
        a.sync("rax")
        a.wrmsr_safe(KGS, 0x5555000)
        a.sync()
        a.done()
    vcpu, image = _vcpu(m, body)
    assert vcpu.set_msrs({KGS: 0x1234000}) == 1
    assert vcpu.get_msr(KGS) == 0x1234000
    assert guest.run_ucall(vcpu, image, UcallCmd.SYNC).args[0] == 0x1234000
    guest.run_ucall(vcpu, image, UcallCmd.SYNC)
    # Back in user mode the CPU holds the host's values, the vCPU keeps the guest's.
    assert m.read_cpu_msr(0, KGS) == m.per_cpu_offset(0)
    assert vcpu.get_msr(KGS) == 0x5555000
    assert m.host_bugs == 0


def test_fastpath_reenters_without_prepare(vendor):
    m = pykvm.Machine(cpus=1, vendor=vendor)
    n = 50

    def body(a):
        a.mov("ecx", TSC_DEADLINE)
        a.mov("r8d", n)
        top = a.here()
        a.xor("eax", "eax")
        a.mov("edx", 1)
        a.wrmsr()
        a.dec("r8d")
        a.jnz(top)
        a.sync()
        a.done()
    vcpu, image = _vcpu(m, body)
    m.reset_costs()
    before = vcpu.stats()
    guest.run_ucall(vcpu, image, UcallCmd.SYNC)
    after = vcpu.stats()
    # No in-kernel LAPIC: the writes are dropped and the MSR reads 0, as upstream
    # (kvm_set_lapic_tscdeadline_msr); with one, tests/test_lapic_timer.py.
    assert vcpu.get_msr(TSC_DEADLINE) == 0
    entries = sum(m.costs()["VCPU_RUN"]["ops"].get(k, 0)
                  for k in ("VMLAUNCH", "VMRESUME", "VMRUN"))
    assert entries == n + 1
    passes = m.costs()["VCPU_RUN"]["ops"].get("SW_ENTER_GUEST", 0)
    if vendor == "vmx":
        # One entry through vcpu_enter_guest, n re-entries from its inner loop, one exit.
        assert after["fastpath_exits"] - before["fastpath_exits"] == n
        assert passes == 1
    else:
        # No hypervisor timer on SVM (kvm_can_use_hv_timer): each WRMSR is a full exit.
        assert after["fastpath_exits"] == before["fastpath_exits"]
        assert after["exits"] - before["exits"] == n + 1 and passes == n + 1


def test_io_in_data_and_out_value(vendor):
    m = pykvm.Machine(cpus=1, vendor=vendor)

    def body(a):
        a.in_("al", 0x40)
        a.movzx("eax", "al")
        a.out(0x41, "eax")
        a.done()
    vcpu, image = _vcpu(m, body)
    ex = vcpu.run()
    assert isinstance(ex, X.Io) and ex.is_in and (ex.port, ex.size) == (0x40, 1)
    ex.data[0] = 0x5A
    ex = vcpu.run()
    assert isinstance(ex, X.Io) and not ex.is_in and ex.port == 0x41 and ex.value == 0x5A


def test_mmio_read_and_write(vendor):
    m = pykvm.Machine(cpus=1, vendor=vendor)
    mmio = 0x40000000

    def body(a):
        a.mov("rbx", mmio)
        a.mov("rax", guest.qword(guest.mem("rbx")))
        a.add("rax", 1)
        a.mov(guest.qword(guest.mem("rbx", 8)), "rax")
        a.done()
    vcpu, image = _vcpu(m, body)
    ex = vcpu.run()
    assert isinstance(ex, X.Mmio) and not ex.is_write and (ex.phys_addr, ex.len) == (mmio, 8)
    ex.data[:] = (41).to_bytes(8, "little")
    ex = vcpu.run()
    assert isinstance(ex, X.Mmio) and ex.is_write and ex.phys_addr == mmio + 8
    assert int.from_bytes(ex.data, "little") == 42


def test_hlt_shutdown_and_intr(vendor):
    m = pykvm.Machine(cpus=1, vendor=vendor)
    vcpu = m.create_vm().create_vcpu()
    vcpu.load(bytes([0xF4]))                                # hlt
    assert isinstance(vcpu.run(), X.Hlt)
    vcpu = m.create_vm().create_vcpu()
    vcpu.load(bytes([0xEB, 0xFE]))                          # jmp $
    assert isinstance(vcpu.run(max_insns=10_000), X.Intr)
    # No IDT: a #UD cannot be delivered -> #DF -> triple fault.
    image = guest.program(lambda a: a.ud2())
    image.sregs.idt.limit = 0
    vcpu = m.create_vm().create_vcpu()
    vcpu.load(image)
    assert isinstance(vcpu.run(), X.Shutdown)


def test_guest_unknown_msr_is_gp_and_get_msrs_count_stops(vendor):
    m = pykvm.Machine(cpus=1, vendor=vendor)
    vcpu, image = _vcpu(m, lambda a: (a.rdmsr_safe(0x474F4F00), a.assert_fault(13),
                                      a.done()))
    guest.run_ucall(vcpu, image, UcallCmd.DONE)
    n, vals = vcpu.get_msrs([STAR, 0x474F4F00, LSTAR])
    assert n == 1 and list(vals) == [STAR]
    assert vcpu.set_msrs({STAR: 0, 0x474F4F00: 0, LSTAR: 0}) == 1
    with pytest.raises(pykvm.InvalidMsr, match="0x474f4f00"):
        vcpu.get_msr(0x474F4F00)


def test_migration_keeps_guest_state(vendor):
    m = pykvm.Machine(cpus=2, vendor=vendor)

    def body(a):
        a.wrmsr_safe(KGS, 0xABC000)
        a.sync()
        a.rdmsr_safe(KGS)
        a.sync("rax")
        a.done()
    vcpu, image = _vcpu(m, body)
    guest.run_ucall(vcpu, image, UcallCmd.SYNC)
    vcpu.migrate(1)
    assert vcpu.cpu == 1
    assert guest.run_ucall(vcpu, image, UcallCmd.SYNC).args[0] == 0xABC000
    assert vcpu.stats()["migrations"] == 1
    for cpu in (0, 1):
        assert m.read_cpu_msr(cpu, KGS) == m.per_cpu_offset(cpu)
    assert m.host_bugs == 0


def test_vcpu_first_run_on_any_cpu(vendor):
    m = pykvm.Machine(cpus=2, vendor=vendor)
    vcpu, image = _vcpu(m, lambda a: (a.sync(), a.done()), cpu=1)
    guest.run_ucall(vcpu, image, UcallCmd.SYNC)
    assert m.host_bugs == 0


def test_bad_configurations_are_refused():
    with pytest.raises(pykvm.UnknownVendor, match="vmx"):
        pykvm.Machine(vendor="pvm-nonexistent")
    with pytest.raises(pykvm.InvalidConfiguration, match="cpus"):
        pykvm.Machine(cpus=0)
    with pytest.raises(pykvm.InvalidConfiguration, match="CPU model"):
        pykvm.Machine(vendor="svm", cpu_model="skylake")
    vm = pykvm.Machine(cpus=1).create_vm()
    vm.add_memory(0, 0x10000)
    with pytest.raises(pykvm.InvalidMemory, match="overlaps"):
        vm.add_memory(0x8000, 0x10000)
    with pytest.raises(pykvm.InvalidMemory):
        vm.add_memory(0x123, 0x1000)
