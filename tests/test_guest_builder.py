"""pykvm.guest without running anything: encodings (checked by decoding with iced),
labels and fix-ups, the long-mode layout bytes, the runtime's code, host-side ucall
decoding. Real runs are in test_kvm_backend.py (and the simulated backend's tests)."""
import struct

import pytest
from iced_x86 import Code, Decoder, Instruction, Mnemonic, Register

from pykvm import exits as X
from pykvm import guest
from pykvm.errors import GuestAssertion
from pykvm.guest import Asm, AsmError, layout as L, mem, qword, dword
from pykvm.regs import Regs

BASE = 0x10000


def decode(code, base=BASE):
    return list(Decoder(64, code, ip=base))


def one(emit):
    """Assemble what `emit(a)` emits and return the decoded instructions."""
    a = Asm(BASE)
    emit(a)
    return decode(a.assemble().code)


# ---- encodings --------------------------------------------------------------------------

@pytest.mark.parametrize("emit, text", [
    (lambda a: a.mov("rax", 0x1234), "mov rax,1234h"),
    (lambda a: a.mov("rax", 0x123456789), "mov rax,123456789h"),
    (lambda a: a.mov("rax", 0x80000000), "mov rax,80000000h"),
    (lambda a: a.mov("rax", -1), "mov rax,0FFFFFFFFFFFFFFFFh"),
    (lambda a: a.mov("ecx", 0xC0000080), "mov ecx,0C0000080h"),
    (lambda a: a.mov("rbx", "r9"), "mov rbx,r9"),
    (lambda a: a.mov(qword("rsp", 8), "rax"), "mov [rsp+8],rax"),
    (lambda a: a.mov("rax", qword(0x7000)), "mov rax,[7000h]"),
    (lambda a: a.mov(qword(0x7000), 0), "mov qword ptr [7000h],0"),
    (lambda a: a.mov(dword("rdi"), 5), "mov dword ptr [rdi],5"),
    (lambda a: a.mov("rax", "cr0"), "mov rax,cr0"),
    (lambda a: a.mov("cr3", "rax"), "mov cr3,rax"),
    (lambda a: a.mov("rax", "cs"), "mov rax,cs"),
    (lambda a: a.lea("rax", mem("rbx", 16, index="rcx", scale=8)), "lea rax,[rbx+rcx*8+10h]"),
    (lambda a: a.add("rax", 1), "add rax,1"),
    (lambda a: a.add("rax", 0x80), "add rax,80h"),
    (lambda a: a.sub("rsp", 0x100), "sub rsp,100h"),
    (lambda a: a.cmp("r9", 0x100), "cmp r9,100h"),
    (lambda a: a.test("rax", "rax"), "test rax,rax"),
    (lambda a: a.xor("eax", "eax"), "xor eax,eax"),
    (lambda a: a.and_("rax", 0xFFFF), "and rax,0FFFFh"),
    (lambda a: a.or_("rax", "rdx"), "or rax,rdx"),
    (lambda a: a.inc("rcx"), "inc rcx"),
    (lambda a: a.dec(qword("rsp")), "dec qword ptr [rsp]"),
    (lambda a: a.shl("rdx", 32), "shl rdx,20h"),
    (lambda a: a.push(1), "push 1"),
    (lambda a: a.push(0x12345), "push 12345h"),
    (lambda a: a.push("rax"), "push rax"),
    (lambda a: a.push(qword("rsp", 8)), "push qword ptr [rsp+8]"),
    (lambda a: a.pop("r11"), "pop r11"),
    (lambda a: a.rdmsr(), "rdmsr"),
    (lambda a: a.wrmsr(), "wrmsr"),
    (lambda a: a.rdtsc(), "rdtsc"),
    (lambda a: a.rdtscp(), "rdtscp"),
    (lambda a: a.rdpid("rax"), "rdpid rax"),
    (lambda a: a.swapgs(), "swapgs"),
    (lambda a: a.rdfsbase("rax"), "rdfsbase rax"),
    (lambda a: a.wrfsbase("rbx"), "wrfsbase rbx"),
    (lambda a: a.rdgsbase("rcx"), "rdgsbase rcx"),
    (lambda a: a.wrgsbase("rdx"), "wrgsbase rdx"),
    (lambda a: a.syscall(), "syscall"),
    (lambda a: a.sysretq(), "sysretq"),
    (lambda a: a.sysret(), "sysretq"),
    (lambda a: a.cpuid(), "cpuid"),
    (lambda a: a.out(0xE0, "eax"), "out 0E0h,eax"),
    (lambda a: a.out("dx", "al"), "out dx,al"),
    (lambda a: a.in_("eax", 0x40), "in eax,40h"),
    (lambda a: a.in_("al", "dx"), "in al,dx"),
    (lambda a: a.hlt(), "hlt"),
    (lambda a: a.nop(), "nop"),
    (lambda a: a.lfence(), "lfence"),
    (lambda a: a.lidt(mem(0x5000)), "lidt fword ptr [5000h]"),
    (lambda a: a.lgdt(mem("rax")), "lgdt fword ptr [rax]"),
    (lambda a: a.sidt(mem("rsp")), "sidt [rsp]"),
    (lambda a: a.int3(), "int 3"),
    (lambda a: a.int(0x80), "int 80h"),
    (lambda a: a.iretq(), "iretq"),
    (lambda a: a.ud2(), "ud2"),
    (lambda a: a.vmcall(), "vmcall"),
    (lambda a: a.vmmcall(), "vmmcall"),
    (lambda a: a.cli(), "cli"),
    (lambda a: a.sti(), "sti"),
    (lambda a: a.pushfq(), "pushfq"),
    (lambda a: a.popfq(), "popfq"),
    (lambda a: a.ret(), "ret"),
    (lambda a: a.emit(Code.MOV_R64_IMM64, "rax", 1), "mov rax,1"),
])
def test_encoding_round_trips_through_iced(emit, text):
    (ins,) = one(emit)
    assert str(ins) == text


def test_shortest_encoding_is_chosen():
    (small,) = one(lambda a: a.add("rax", 1))
    (big,) = one(lambda a: a.add("rax", 0x80))
    assert small.code == Code.ADD_RM64_IMM8 and small.len == 4
    assert big.code in (Code.ADD_RM64_IMM32, Code.ADD_RAX_IMM32)
    (mov,) = one(lambda a: a.mov("rax", 5))
    assert mov.code == Code.MOV_RM64_IMM32      # 7 bytes, not the 10-byte imm64 form


def test_push_imm_never_picks_a_16_bit_form():
    (ins,) = one(lambda a: a.push(0x1234))
    assert ins.code == Code.PUSHQ_IMM32 and ins.stack_pointer_increment == -8


def test_absolute_memory_has_no_address_size_prefix():
    a = Asm(BASE)
    a.mov("rax", qword(0x7000))
    assert a.assemble().code == bytes.fromhex("488b042500700000")


@pytest.mark.parametrize("emit", [
    lambda a: a.add("al", 0x100),                 # does not fit 8 bits
    lambda a: a.mov("eax", 2**32),                 # does not fit 32 bits
    lambda a: a.add("rax", 0x80000000),            # no sign-extended imm32 holds it
    lambda a: a.mov("rax", 2**64),                 # not a 64-bit value
    lambda a: a.inc(mem("rax")),                   # size unknown: say qword(...)
    lambda a: a.mov("rax", "nosuchreg"),
    lambda a: a.mov("rax", "rbx", "rcx"),
    lambda a: a.push("eax"),                       # no 32-bit push in long mode
    lambda a: a.mov("rax", 1.5),
])
def test_bad_operands_are_refused(emit):
    with pytest.raises(AsmError):
        emit(Asm(BASE))


def test_unknown_mnemonic_is_an_attribute_error():
    with pytest.raises(AttributeError):
        Asm(BASE).frobnicate()
    with pytest.raises(AsmError):
        Asm(BASE).emit("frobnicate")


# ---- labels -----------------------------------------------------------------------------

def test_backward_and_forward_branches():
    a = Asm(BASE)
    top = a.here("top")
    end = a.label("end")
    a.dec("ecx")
    a.jz(end)
    a.jmp(top)
    a.bind(end)
    a.hlt()
    asm = a.assemble()
    ins = decode(asm.code)
    assert top.address == BASE and asm.symbols["top"] == BASE
    assert ins[1].near_branch_target == end.address == ins[3].ip
    assert ins[2].near_branch_target == BASE


def test_far_branch_is_widened_and_labels_follow():
    a = Asm(BASE)
    target = a.label("target")
    a.jmp(target)
    a.db(bytes(300))
    a.bind(target)
    a.hlt()
    a.assemble()
    (jmp,) = decode(a.assemble().code[:5])
    assert jmp.code == Code.JMP_REL32_64
    assert jmp.near_branch_target == target.address == BASE + 5 + 300


def test_loop_out_of_range_keeps_label_addresses():
    a = Asm(BASE)
    top = a.here()
    a.db(bytes(200))
    a.loop(top)
    after = a.here("after")
    a.hlt()
    code = a.assemble().code
    # BlockEncoder rewrote LOOP as loop/jmp short/jmp near: "after" is past all three
    assert code[after.address - BASE] == 0xF4


def test_label_as_immediate_and_rip_relative_operand():
    a = Asm(BASE)
    data = a.label("data")
    a.mov(qword(0x7000), data)     # imm32, sign-extended
    a.mov("rax", data)
    a.lea("rbx", mem(data))        # RIP-relative
    a.mov("rcx", qword(data))
    a.hlt()
    a.bind(data)
    a.dq(0x1122334455667788)
    ins = decode(a.assemble().code)
    addr = data.address
    assert ins[0].immediate32to64 == addr
    assert ins[1].immediate(1) == addr
    assert ins[2].is_ip_rel_memory_operand and ins[2].ip_rel_memory_address == addr
    assert ins[3].ip_rel_memory_address == addr
    assert a.assemble().code[addr - BASE:] == (0x1122334455667788).to_bytes(8, "little")


def test_two_labels_on_one_instruction():
    a = Asm(BASE)
    a.nop()
    l1, l2 = a.here("l1"), a.here("l2")
    a.hlt()
    a.jmp(l2)
    a.assemble()
    assert l1.address == l2.address == BASE + 1


def test_label_errors():
    a = Asm(BASE)
    with pytest.raises(AsmError):
        a.label("x") and a.label("x")             # duplicate name
    b = Asm(BASE)
    with pytest.raises(AsmError):
        b.jmp(a["x"])                             # another Asm's label
    c = Asm(BASE)
    c.jmp(c.label("never"))
    with pytest.raises(AsmError, match="never bound"):
        c.assemble()
    d = Asm(BASE)
    end = d.label()
    d.jmp(end)
    d.bind(end)
    with pytest.raises(AsmError, match="end of the code"):
        d.assemble()
    e = Asm(BASE)
    lab = e.here()
    e.nop()
    with pytest.raises(AsmError, match="already bound"):
        e.bind(lab)


def test_instruction_escape_hatch():
    a = Asm(BASE)
    a.instruction(Instruction.create_reg(Code.PUSH_R64, Register.RBP))
    assert str(decode(a.assemble().code)[0]) == "push rbp"


# ---- layout -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image():
    return guest.program(lambda a: (a.sync(1), a.done()))


def q(mem_, addr):
    return struct.unpack_from("<Q", mem_, addr)[0]


def test_page_tables_identity_map_with_2m_pages(image):
    m = image.memory
    assert q(m, L.PML4_ADDR) == L.PDPT_ADDR | 0x7
    assert q(m, L.PDPT_ADDR) == L.PD_ADDR | 0x7
    assert q(m, L.PD_ADDR) == 0x87                 # P|RW|US|PS, page 0
    assert q(m, L.PD_ADDR + 8) == 0                # 2 MiB: one page only
    assert image.sregs.cr3 == L.PML4_ADDR


def test_conformance_leaf_and_bigger_memory():
    img = guest.program(lambda a: a.done(), user_pages=False, memory_size=6 * L.MIB)
    assert len(img.memory) == 6 * L.MIB
    assert [q(img.memory, L.PD_ADDR + 8 * i) for i in range(4)] == \
        [0x83, 0x200083, 0x400083, 0]              # CONFORMANCE.md's PD entry 0x83
    with pytest.raises(ValueError):
        guest.Program(memory_size=3 * L.MIB)


def test_apic_page_maps_the_xapic_registers_uncached(image):
    """apic_page: PDPT entry 3 (3-4 GiB) points at a PD whose entry for APIC_BASE_ADDR
    is a 2 MiB identity page with PCD|PWT; without it nothing maps above memory."""
    img = guest.program(lambda a: a.done(), apic_page=True)
    m = img.memory
    gib = L.APIC_BASE_ADDR >> 30
    assert q(m, L.PDPT_ADDR + 8 * gib) == L.APIC_PD_ADDR | 0x7
    pde = q(m, L.APIC_PD_ADDR + 8 * ((L.APIC_BASE_ADDR >> 21) & 511))
    assert pde == (L.APIC_BASE_ADDR & ~(L.LARGE_PAGE_SIZE - 1)) | 0x9B   # P|RW|PWT|PCD|PS
    assert q(image.memory, L.PDPT_ADDR + 8 * gib) == 0
    assert L.RUNTIME_CODE_END <= L.APIC_PD_ADDR < L.CODE_START


def _desc(m, sel):
    d = q(m, L.GDT_ADDR + sel)
    return {"type": (d >> 40) & 0xF, "s": (d >> 44) & 1, "dpl": (d >> 45) & 3,
            "p": (d >> 47) & 1, "l": (d >> 53) & 1, "db": (d >> 54) & 1, "g": (d >> 55) & 1}


def test_gdt_descriptors(image):
    m = image.memory
    assert q(m, L.GDT_ADDR) == 0
    assert _desc(m, L.KERNEL_CS) == dict(type=11, s=1, dpl=0, p=1, l=1, db=0, g=1)
    assert _desc(m, L.KERNEL_DS) == dict(type=3, s=1, dpl=0, p=1, l=0, db=1, g=1)
    assert _desc(m, L.USER_CS) == dict(type=11, s=1, dpl=3, p=1, l=1, db=0, g=1)
    assert _desc(m, L.USER_DS) == dict(type=3, s=1, dpl=3, p=1, l=0, db=1, g=1)
    tss = _desc(m, L.TSS_SEL)
    assert (tss["type"], tss["s"], tss["p"]) == (11, 0, 1)     # busy 64-bit TSS
    low, high = q(m, L.GDT_ADDR + L.TSS_SEL), q(m, L.GDT_ADDR + L.TSS_SEL + 8)
    base = ((low >> 16) & 0xFFFFFF) | (((low >> 56) & 0xFF) << 24) | (high << 32)
    assert base == L.TSS_ADDR and low & 0xFFFF == 0x67
    assert image.sregs.gdt.limit == L.GDT_LIMIT == 63


def test_star_matches_the_gdt():
    star = guest.GUEST_STAR
    assert star == 0x001B000800000000
    syscall_cs, sysret_base = (star >> 32) & 0xFFFF, (star >> 48) & 0xFFFF
    assert (syscall_cs, syscall_cs + 8) == (L.KERNEL_CS, L.KERNEL_DS)
    assert (sysret_base + 16, sysret_base + 8) == (L.USER_CS | 3, L.USER_DS | 3)


def test_idt_gates_point_to_stubs(image):
    m = image.memory
    assert image.sregs.idt.base == L.IDT_ADDR and image.sregs.idt.limit == 32 * 16 - 1
    for vec in range(32):
        lo, sel, ist, attr, mid, hi, _ = struct.unpack_from("<HHBBHII", m, L.IDT_ADDR + 16 * vec)
        handler = lo | (mid << 16) | (hi << 32)
        assert (sel, ist, attr & 0x9F) == (L.KERNEL_CS, 0, 0x8E)    # P, type 0xE
        assert handler == image.symbols[f"exception_{vec}"]
        stub = decode(m[handler:handler + 16], handler)
        pushes = [i for i in stub[:2] if i.mnemonic == Mnemonic.PUSH]
        # the CPU pushes an error code for these; the stub pushes a 0 for the rest
        assert len(pushes) == (1 if vec in L.VECTORS_WITH_ERROR_CODE else 2)
        assert pushes[-1].immediate(0) == vec
    assert q(m, L.IDT_ADDR + 16 * 32) == 0


def test_tss_rsp0(image):
    assert q(image.memory, L.TSS_ADDR + 4) == L.RSP0_TOP
    assert struct.unpack_from("<H", image.memory, L.TSS_ADDR + 0x66)[0] == 0x68


def test_initial_state(image):
    s = image.sregs
    assert (s.cr0, s.cr4, s.efer) == (0x80050033, 0x10020, 0x501)
    assert (s.cs.selector, s.cs.l, s.cs.type) == (0x08, 1, 11)
    assert all(getattr(s, n).selector == 0x10 for n in ("ds", "es", "ss", "fs", "gs"))
    assert (s.tr.selector, s.tr.base, s.tr.type) == (L.TSS_SEL, L.TSS_ADDR, 11)
    assert s.ldt.unusable == 1
    assert (image.regs.rip, image.regs.rsp) == (L.CODE_START, L.STACK_TOP)
    assert image.msrs == {}


# ---- runtime code -----------------------------------------------------------------------

def test_ucall_sequence_preserves_registers():
    p = guest.Program()
    p.asm.sync("rbx", 0x1122334455667788, qword("rsp", 8))
    ins = decode(p.asm.assemble().code, L.CODE_START)
    names = [str(i) for i in ins]
    assert names[:4] == ["push rax", "push rdi", "push rsi", "push rdx"]
    # the RSP-relative argument is corrected for the 4 saves already pushed
    assert names[4] == "push qword ptr [rsp+28h]"
    assert "out 0E0h,eax" in names
    assert names[-4:] == ["pop rdx", "pop rsi", "pop rdi", "pop rax"]


def test_assert_sites_name_this_file():
    p = guest.Program()
    p.asm.assert_eq("rax", 5)
    p.asm.assert_ne("rbx", "rcx", "rbx differs")
    img = p.build()
    s1, s2 = img.asserts[1], img.asserts[2]
    assert s1.filename == "test_guest_builder.py" and s1.message == "rax == 0x5"
    assert s2.lineno == s1.lineno + 1 and s2.message == "rbx differs"
    with pytest.raises(AsmError):
        guest.GuestAsm(BASE).assert_eq("rax", 1)    # no Program to name the site


def test_rdmsr_safe_arms_the_fixup():
    p = guest.Program()
    p.asm.rdmsr_safe(0x474F4F00)
    ins = decode(p.asm.assemble().code, L.CODE_START)
    text = [str(i) for i in ins]
    arm = next(i for i in ins if i.memory_displacement == L.RUNTIME_FIXUP and i.op_count == 2
               and i.immediate32to64 != 0)
    rdmsr = next(i for i in ins if i.mnemonic == Mnemonic.RDMSR)
    assert arm.immediate32to64 == rdmsr.next_ip     # the fix-up resumes right after RDMSR
    assert "mov ecx,474F4F00h" in text
    assert text[-3:] == ["shl rdx,20h", "or rax,rdx", "shr rdx,20h"]


def test_build_is_repeatable_and_marks_the_end():
    p = guest.Program()
    p.asm.nop()
    one_, two = p.build(), p.build()
    assert one_.memory == two.memory
    end = one_.symbols["end_of_code"]
    assert end == L.CODE_START + 1 and one_.memory[end:end + 2] == b"\x0f\x0b"   # UD2


def test_program_decorator_and_options():
    @guest.program
    def img(a):
        a.done()
    assert isinstance(img, guest.GuestImage)
    img2 = guest.program(memory_size=4 * L.MIB, msrs={0xC0000102: 1})(lambda a: a.done())
    assert len(img2.memory) == 4 * L.MIB and img2.msrs == {0xC0000102: 1}


def test_code_overflow_is_reported():
    p = guest.Program()
    p.asm.db(bytes(L.USER_DATA - L.CODE_START))
    with pytest.raises(AsmError, match="past USER_DATA"):
        p.build()


# ---- host side of ucall -----------------------------------------------------------------

class FakeVcpu:
    def __init__(self, **regs):
        self.regs = Regs(**regs)
        self.image = None

    def get_regs(self):
        return self.regs


def io_out(value, port=guest.UCALL_PORT, size=4):
    return X.Io(X.KVM_EXIT_IO_OUT, size, port, 1, bytearray(value.to_bytes(size, "little")))


def test_get_ucall_decodes_sync():
    uc = guest.get_ucall(FakeVcpu(rdi=1, rsi=2, rdx=3), io_out(guest.UcallCmd.SYNC))
    assert uc.cmd == guest.UcallCmd.SYNC and uc.args == (1, 2, 3) and not uc.failed


def test_get_ucall_names_both_sides_on_a_wrong_exit():
    with pytest.raises(GuestAssertion, match=r"wanted exit IO \(2\).*got HLT \(5\)"):
        guest.get_ucall(FakeVcpu(), X.Hlt())
    with pytest.raises(GuestAssertion, match="port 0x80"):
        guest.get_ucall(FakeVcpu(), io_out(1, port=0x80))
    with pytest.raises(GuestAssertion, match="unknown ucall"):
        guest.get_ucall(FakeVcpu(), io_out(99))
    with pytest.raises(GuestAssertion, match=r"wanted exit SHUTDOWN \(8\), got HLT \(5\)"):
        guest.assert_exit(X.Hlt(), X.KVM_EXIT_SHUTDOWN)


def test_assert_and_exception_messages():
    p = guest.Program()
    p.asm.assert_eq("rax", 5, "the answer")
    img = p.build()
    vcpu = FakeVcpu(rdi=1, rsi=5, rdx=7)
    uc = guest.get_ucall(vcpu, io_out(guest.UcallCmd.ASSERT), img)
    with pytest.raises(GuestAssertion, match=r"test_guest_builder.py:\d+ \(the answer\): "
                                             r"expected 0x5, got 0x7"):
        uc.check()
    vcpu = FakeVcpu(rdi=13, rsi=img.symbols["end_of_code"], rdx=0)
    vcpu.image = img                     # what a backend's load() records
    uc = guest.get_ucall(vcpu, io_out(guest.UcallCmd.UNHANDLED_EXCEPTION))
    assert uc.fell_off
    with pytest.raises(GuestAssertion, match=r"unhandled #GP \(13\).*fell off its end"):
        uc.check()
    with pytest.raises(GuestAssertion, match="wanted ucall DONE, got ucall SYNC"):
        guest.expect_ucall(FakeVcpu(), io_out(guest.UcallCmd.SYNC), guest.UcallCmd.DONE)
