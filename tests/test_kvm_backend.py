"""The host's real /dev/kvm backend, driven with pykvm.guest programs (selftests style:
guest code and host loop side by side). Skipped, with the reason, where /dev/kvm is
absent or unusable. On kvm_pvm every guest instruction is emulated (~0.6 us), so the
guests here are a few dozen instructions each."""
import errno
import os

import pytest

from pykvm import exits as X
from pykvm import guest
from pykvm.errors import (GuestAssertion, InvalidConfiguration, InvalidMemory, InvalidMsr,
                          KvmIoctlError)
from pykvm.guest import UcallCmd, qword
from pykvm.devkvm import KvmMachine, PortDevices, uapi
from pykvm.devkvm.system import VENDOR_MODULES

AVAILABLE, REASON = KvmMachine.available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=REASON)

MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_FS_BASE = 0xC0000100
MSR_KERNEL_GS_BASE = 0xC0000102
MSR_UNKNOWN = 0x474F4F00            # an MSR no CPU has (CONFORMANCE.md case 15)
A64 = 0x0000123456789ABC


@pytest.fixture(scope="module")
def machine():
    with KvmMachine() as m:
        yield m


@pytest.fixture
def vm(machine):
    with machine.create_vm() as vm:
        yield vm


def start(vm, body, **options):
    """A vCPU with the program built from `body(a)` loaded."""
    vcpu = vm.create_vcpu()
    vcpu.load(guest.program(body, **options))
    return vcpu


def test_machine_reports_api_capabilities_and_vendor(machine):
    assert machine.api_version == 12
    assert machine.vcpu_mmap_size >= 4096
    assert machine.check_extension(uapi.KVM_CAP_USER_MEMORY) == 1
    assert machine.check_extension("user_memory") == 1
    caps = machine.capabilities()
    assert caps["KVM_CAP_NR_MEMSLOTS"] > 0
    assert machine.vendor in VENDOR_MODULES + ("unknown",)
    if any(os.path.isdir(f"/sys/module/{m}") for m in VENDOR_MODULES):
        assert machine.vendor != "unknown"


def test_machine_kvm_is_this_backend():
    import pykvm
    with pykvm.Machine.kvm() as m:
        assert isinstance(m, KvmMachine) and not m.closed
    assert m.closed


def test_supported_cpuid_and_msr_index_list(machine):
    leaves = {e.function for e in machine.get_supported_cpuid()}
    assert {0, 1, 0x80000000, 0x80000001} <= leaves
    msrs = machine.get_msr_index_list()
    assert {MSR_STAR, MSR_LSTAR, MSR_KERNEL_GS_BASE} <= set(msrs)
    assert MSR_FS_BASE not in msrs          # FS/GS base travel in SREGS
    assert isinstance(machine.get_msr_feature_index_list(), list)


def test_ucall_sync_done_round_trip(vm):
    def body(a):
        a.mov("rbx", 0x1122334455667788)
        a.sync(42, "rbx", qword(guest.RUNTIME_FIXUP))
        a.assert_eq("rbx", 0x1122334455667788)   # SYNC kept the registers
        a.done()
    vcpu = start(vm, body)
    uc = guest.run_ucall(vcpu, cmd=UcallCmd.SYNC)
    assert uc.args == (42, 0x1122334455667788, 0)
    assert guest.run_ucall(vcpu).cmd == UcallCmd.DONE
    guest.assert_exit(vcpu.run(), X.KVM_EXIT_HLT)      # the guest halts for good


def test_guest_assertion_reaches_the_host_with_its_site(vm):
    def body(a):
        a.mov("rax", 7)
        a.assert_eq("rax", 5, "seven is five")
        a.done()
    vcpu = start(vm, body)
    with pytest.raises(GuestAssertion, match=r"test_kvm_backend.py:\d+ \(seven is five\): "
                                             r"expected 0x5, got 0x7"):
        guest.run_ucall(vcpu)


def test_rdmsr_safe_of_an_unknown_msr_gives_gp(vm):
    def body(a):
        a.rdmsr_safe(MSR_UNKNOWN)
        a.sync("r9", "r10", "rax")
        a.rdmsr_safe(MSR_STAR)
        a.assert_no_fault()
        a.done()
    vcpu = start(vm, body)
    assert guest.run_ucall(vcpu).args == (13, 0, 0)    # #GP(0), value left 0
    guest.run_ucall(vcpu, cmd=UcallCmd.DONE)


def test_unhandled_exception_is_reported_not_a_triple_fault(vm):
    vcpu = start(vm, lambda a: a.ud2())
    with pytest.raises(GuestAssertion, match=r"unhandled #UD \(6\) at rip 0x10000"):
        guest.run_ucall(vcpu)


def test_falling_off_the_end_is_named(vm):
    vcpu = start(vm, lambda a: a.nop())
    with pytest.raises(GuestAssertion, match="fell off its end"):
        guest.run_ucall(vcpu)


def test_host_set_msrs_is_seen_by_guest_rdmsr(vm):
    def body(a):
        a.rdmsr_safe(MSR_KERNEL_GS_BASE)
        a.assert_no_fault()
        a.sync("rax")
        a.done()
    vcpu = start(vm, body)
    assert vcpu.set_msrs({MSR_KERNEL_GS_BASE: A64}) == 1
    assert guest.run_ucall(vcpu).args[0] == A64


def test_image_msrs_are_set_by_load(vm):
    def body(a):
        a.rdmsr_safe(MSR_LSTAR)
        a.assert_eq("rax", A64)
        a.done()
    vcpu = start(vm, body, msrs={MSR_LSTAR: A64})
    guest.run_ucall(vcpu, cmd=UcallCmd.DONE)
    bad = guest.program(lambda a: a.done(), msrs={MSR_STAR: 0, MSR_UNKNOWN: 0})
    with pytest.raises(InvalidMsr, match=r"stopped at MSR 0x474f4f00 \(1 of 2 set\)"):
        vm.create_vcpu().load(bad)


def test_guest_wrmsr_is_seen_by_get_msrs(vm):
    def body(a):
        a.wrmsr_safe(MSR_KERNEL_GS_BASE, A64)
        a.assert_no_fault()
        a.mov("rbx", A64 ^ 0xFF)
        a.wrmsr_safe(MSR_LSTAR, "rbx")                 # EDX:EAX split from a register
        a.assert_no_fault()
        a.sync()
        a.done()
    vcpu = start(vm, body)
    guest.run_ucall(vcpu, cmd=UcallCmd.SYNC)
    assert vcpu.get_msrs([MSR_KERNEL_GS_BASE, MSR_LSTAR]) == \
        (2, {MSR_KERNEL_GS_BASE: A64, MSR_LSTAR: A64 ^ 0xFF})
    assert vcpu.get_msr(MSR_KERNEL_GS_BASE) == A64


def test_get_and_set_msrs_stop_at_the_first_failure(vm):
    vcpu = start(vm, lambda a: a.done())
    count, values = vcpu.get_msrs([MSR_STAR, MSR_UNKNOWN, MSR_LSTAR])
    assert count == 1 and list(values) == [MSR_STAR]
    assert vcpu.get_msrs([MSR_UNKNOWN]) == (0, {})
    assert vcpu.set_msrs({MSR_STAR: 0, MSR_UNKNOWN: 0, MSR_LSTAR: A64}) == 1
    assert vcpu.get_msr(MSR_LSTAR) != A64                   # never reached
    assert vcpu.get_msr(MSR_FS_BASE) == 0                   # readable, though not listed
    with pytest.raises(InvalidMsr):
        vcpu.get_msr(MSR_UNKNOWN)
    with pytest.raises(InvalidMsr):
        vcpu.set_msr(MSR_UNKNOWN, 0)
    with pytest.raises(InvalidMsr):
        vcpu.get_msrs([-1])


def test_io_in_data_is_delivered(vm):
    def body(a):
        a.in_("eax", 0x40)
        a.sync("rax")
        a.done()
    vcpu = start(vm, body)
    ex = vcpu.run()
    assert isinstance(ex, X.Io) and ex.is_in and (ex.port, ex.size, ex.count) == (0x40, 4, 1)
    ex.data[:] = (0x12345678).to_bytes(4, "little")
    assert guest.run_ucall(vcpu).args[0] == 0x12345678


def test_io_in_answer_of_the_wrong_size_is_refused(vm):
    vcpu = start(vm, lambda a: (a.in_("al", 0x40), a.done()))
    ex = vcpu.run()
    ex.data = bytearray(2)
    with pytest.raises(InvalidConfiguration, match="must be 1 bytes"):
        vcpu.run()


def test_hlt_exit(vm):
    vcpu = start(vm, lambda a: a.hlt())
    assert isinstance(vcpu.run(), X.Hlt)
    assert vcpu.get_regs().rip == guest.CODE_START + 1


def test_shutdown_without_an_idt(vm):
    def body(a):
        a.mov(qword(guest.USER_DATA), 0)
        a.lidt(guest.mem(guest.USER_DATA))         # IDT limit 0: any exception triple-faults
        a.rdmsr_safe(MSR_UNKNOWN)
        a.done()
    vcpu = start(vm, body)
    guest.assert_exit(vcpu.run(), X.KVM_EXIT_SHUTDOWN)


def test_raw_code_loads_at_code_start(vm):
    vcpu = vm.create_vcpu()
    vcpu.load(b"\x90\xf4")                           # nop; hlt
    assert isinstance(vcpu.run(), X.Hlt)
    assert vcpu.get_regs().rip == guest.CODE_START + 2


def test_regs_and_sregs_round_trip(vm):
    image = guest.program(lambda a: a.done())
    vcpu = vm.create_vcpu()
    vcpu.load(image)
    s = vcpu.get_sregs()
    assert (s.cr0, s.cr3, s.cr4, s.efer) == (0x80050033, guest.PML4_ADDR, 0x10020, 0x501)
    assert (s.cs.selector, s.cs.l, s.tr.selector, s.gdt.base, s.idt.base) == \
        (guest.KERNEL_CS, 1, guest.TSS_SEL, guest.GDT_ADDR, guest.IDT_ADDR)
    assert s.apic_base != 0                          # KVM's value kept
    r = vcpu.get_regs()
    assert (r.rip, r.rsp) == (guest.CODE_START, guest.STACK_TOP)
    r.rbx = A64
    vcpu.set_regs(r)
    assert vcpu.get_regs().rbx == A64


def test_cpl3_code_and_exceptions_from_cpl3(vm):
    """IRETQ to CPL3; a #GP there is caught by rdmsr_safe through TSS.RSP0; an unhandled
    #UD at CPL3 is reported by the CPL0 stub. (CPL3 cannot ucall on kvm_pvm: it ignores
    IOPL, so the report goes through an exception.)"""
    def body(a):
        user = a.label("user")
        a.push(guest.USER_DS | 3)
        a.push(guest.USER_STACK_TOP)
        a.push(guest.USER_RFLAGS)
        a.push(guest.USER_CS | 3)
        a.push(user)
        a.iretq()
        a.bind(user)
        a.rdmsr_safe(MSR_STAR)                        # privileged: #GP at CPL3
        a.mov("rbx", "r9")
        a.here("ud")
        a.ud2()
    vcpu = start(vm, body)
    uc = guest.get_ucall(vcpu, vcpu.run())
    assert uc.cmd == UcallCmd.UNHANDLED_EXCEPTION
    assert uc.args[:2] == (6, vcpu.image.symbols["ud"])
    assert vcpu.get_regs().rbx == 13


def test_user_space_msr_exits(machine, vm):
    if not machine.check_extension(uapi.KVM_CAP_X86_USER_SPACE_MSR):
        pytest.skip("host KVM lacks KVM_CAP_X86_USER_SPACE_MSR")
    vm.enable_user_msr_exits()

    def body(a):
        a.rdmsr_safe(MSR_UNKNOWN)
        a.sync("r9", "rax")
        a.wrmsr_safe(MSR_UNKNOWN, 0x55)
        a.sync("r9")
        a.done()
    vcpu = start(vm, body)
    ex = vcpu.run()
    assert isinstance(ex, X.RdMsr) and ex.index == MSR_UNKNOWN
    ex.data = 0xABCDEF                              # answered by userspace
    assert guest.run_ucall(vcpu).args[:2] == (guest.NO_VECTOR, 0xABCDEF)
    ex = vcpu.run()
    assert isinstance(ex, X.WrMsr) and (ex.index, ex.data) == (MSR_UNKNOWN, 0x55)
    ex.error = 1                                    # inject #GP
    assert guest.run_ucall(vcpu).args[0] == 13


def test_msr_filter_sends_a_denied_msr_to_userspace(machine, vm):
    if not machine.check_extension(uapi.KVM_CAP_X86_MSR_FILTER):
        pytest.skip("host KVM lacks KVM_CAP_X86_MSR_FILTER")
    vm.enable_user_msr_exits(uapi.KVM_MSR_EXIT_REASON_FILTER)
    vm.deny_msrs([MSR_KERNEL_GS_BASE], write=False)
    vcpu = start(vm, lambda a: (a.rdmsr_safe(MSR_KERNEL_GS_BASE), a.sync("r9", "rax"),
                                a.done()))
    ex = vcpu.run()
    assert isinstance(ex, X.RdMsr) and ex.index == MSR_KERNEL_GS_BASE
    ex.data = 7
    assert guest.run_ucall(vcpu).args[:2] == (guest.NO_VECTOR, 7)


def test_c_run_loop_answers_ports_without_python(vm):
    def body(a):
        a.mov("ecx", 50)
        top = a.here()
        a.out(0xE1, "al")
        a.dec("ecx")
        a.jnz(top)
        a.in_("eax", 0x41)
        a.sync("rax")
        a.done()
    vcpu = start(vm, body)
    devs = PortDevices()
    devs.add_sink(0xE1)
    devs.add_const(0x41, 0xCAFEBABE)
    r = vcpu.run_loop(devs, max_exits=20)
    assert (r.handled, r.exit) == (20, None)            # budget: nothing left pending
    r = vcpu.run_loop(devs)
    assert r.handled == 31 and devs.count(0xE1) == 50 and devs.count(0x41) == 1
    assert guest.get_ucall(vcpu, r.exit).args[0] == 0xCAFEBABE   # back in Python
    r = vcpu.run_loop()                                 # no devices: every exit returns
    assert r.handled == 0 and guest.get_ucall(vcpu, r.exit).cmd == UcallCmd.DONE
    with pytest.raises(InvalidConfiguration):
        devs.add_sink(0xE1)
    with pytest.raises(InvalidConfiguration):
        devs.add_const(0x10000, 0)


def test_c_run_loop_hands_unclaimed_in_to_python(vm):
    vcpu = start(vm, lambda a: (a.in_("eax", 0x42), a.sync("rax"), a.done()))
    devs = PortDevices()
    devs.add_sink(0x42)                                 # a sink does not answer IN
    r = vcpu.run_loop(devs)
    assert r.handled == 0 and r.exit.is_in and r.exit.port == 0x42
    r.exit.data[:] = (9).to_bytes(4, "little")
    assert guest.run_ucall(vcpu).args[0] == 9           # Python's answer was delivered


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_fds_and_mappings_are_released():
    before = _open_fds()
    with KvmMachine() as m:
        vm = m.create_vm()
        vcpu = start(vm, lambda a: a.done())
        vcpu2 = vm.create_vcpu()
        both = _open_fds()
        assert both >= before + 4         # /dev/kvm, VM, 2 vCPUs (+ mmap's own dups)
        vcpu2.close()
        vcpu2.close()                     # idempotent
        assert _open_fds() < both
    assert _open_fds() == before
    assert vm.closed and vcpu.closed and not vm.slots
    with pytest.raises(KvmIoctlError) as e:
        vcpu.run()
    assert e.value.errno == errno.EBADF


def test_ioctl_errors_name_what_was_being_done(vm):
    vm.create_vcpu(3)
    with pytest.raises(KvmIoctlError, match=r"KVM_CREATE_VCPU\(3\): EEXIST") as e:
        vm.create_vcpu(3)
    assert e.value.errno == errno.EEXIST and isinstance(e.value, OSError)
    vm.add_memory(0, 0x200000)
    with pytest.raises(InvalidMemory, match="overlaps"):
        vm.add_memory(0x100000, 0x200000)
    with pytest.raises(InvalidMemory):
        vm.add_memory(0x1234, 0x1000)


def test_guest_memory_view(vm):
    vm.add_memory(0, 0x10000)
    vm.memory[0x100:0x104] = b"\x01\x02\x03\x04"
    assert vm.memory[0x100:0x104] == b"\x01\x02\x03\x04"
    vm.memory.write_u64(0x200, A64)
    assert vm.read(0x200, 8) == A64.to_bytes(8, "little")
    with pytest.raises(InvalidMemory):
        vm.memory[0xFFFF:0x10001]
