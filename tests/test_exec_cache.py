"""The interpreter's fast paths under change: the decode cache, native runs, lazy flags
and REP string instructions.

- code the guest rewrites after it was cached (another block, the running block, a
  native run, with REP STOS/MOVS, with an exception frame): unicorn, which retranslates
  on such writes, or a CPU that never cached the old code, says what must happen;
- code the host rewrites between runs;
- a cache that grows past the old 1 MiB arena (~27,000 instructions) without dropping
  anything;
- flags set in one block and read in another, through native runs and the interpreter;
- budgets and single-stepping through native runs and REP iterations, REP with MMIO.
"""
import pytest
import unicorn  # noqa: F401  (a required test dependency: the reference CPU)
from iced_x86 import (BlockEncoder, Code, Instruction as I,  # noqa: E402
                      MemoryOperand as M, Register as R)

from exec_harness import GPRS, Bare, asm, ins  # noqa: E402
from test_exec import (BP, HANDLER, IDT, MMIO, STACK, make_cpu,  # noqa: E402
                       vector_ran)
from test_exec_diff import (ARITH, CODE, DATA, DATA_SIZE, budget_traces,  # noqa: E402
                            initial_state, native_runs, pykvm_cpu, run_unicorn)

DB = 1


def stats(cpu):
    return cpu.icache_stats()


def agree_with_unicorn(code, seed=1, flags_mask=ARITH, setup=None):
    """Run code at CODE to its HLT on unicorn and on the interpreter from the same state:
    every GPR, RIP, the data area and the masked flags agree."""
    regs, rflags, data, stack = initial_state(seed)
    regs.update(setup or {})
    want, want_data, _ = run_unicorn(code, regs, rflags, data, stack)
    cpu = pykvm_cpu(code, regs, rflags, data, stack)
    assert cpu.run(budget=100_000) == "HLT"
    got = cpu.regs()
    for name in GPRS + ("rip",):
        assert got[name] == want[name], f"{name}: {got[name]:#x}, unicorn {want[name]:#x}"
    assert got["rflags"] & flags_mask == want["rflags"] & flags_mask
    assert cpu.read(DATA, DATA_SIZE) == want_data
    return cpu


def encode(*items):
    """asm() with labels: items are iced Instructions or (branch Code, ("@", index))."""
    return asm(CODE, *items)


def image(*parts):
    """Code from CODE on: (address, bytes) parts, NOPs between them; the last part ends
    with the HLT where both CPUs stop."""
    end = max(at + len(b) for at, b in parts)
    out = bytearray(b"\x90" * (end - CODE))
    for at, b in parts:
        out[at - CODE:at - CODE + len(b)] = b
    assert out[-1] == 0xF4
    return bytes(out)


# ---- the guest rewrites cached code ----

F = CODE + 0x800      # f: mov ebx, 2; add ebx, 3; add ebx, 4; imul ebx, ebx; ret
F_CODE = asm(F, I.create_reg_u32(Code.MOV_R32_IMM32, R.EBX, 2),
             I.create_reg_i32(Code.ADD_RM32_IMM8, R.EBX, 3),
             I.create_reg_i32(Code.ADD_RM32_IMM8, R.EBX, 4),
             I.create_reg_reg(Code.IMUL_R32_RM32, R.EBX, R.EBX), I.create(Code.RETNQ))
MAIN = CODE + 0x900


@pytest.mark.parametrize("how", ["mov", "rep_stosb", "rep_movsb"])
def test_guest_rewrites_a_cached_native_run(how):
    """f runs natively (cached); the guest rewrites its `mov ebx, 2` into `mov ebx, 7`
    (a store, REP STOSB, or REP MOVSB from data) and calls f again."""
    imm = F + 1                                 # BB imm32: the immediate's first byte
    patch = {
        "mov": [I.create_reg_u64(Code.MOV_R64_IMM64, R.RAX, imm),
                I.create_mem_i32(Code.MOV_RM8_IMM8, M(R.RAX), 7)],
        "rep_stosb": [I.create_reg_u64(Code.MOV_R64_IMM64, R.RDI, imm),
                      I.create_reg_u32(Code.MOV_R32_IMM32, R.EAX, 7),
                      I.create_reg_u32(Code.MOV_R32_IMM32, R.ECX, 1), I.create_rep_stosb(64)],
        "rep_movsb": [I.create_reg_u64(Code.MOV_R64_IMM64, R.RDI, imm),
                      I.create_reg_u64(Code.MOV_R64_IMM64, R.RSI, DATA),
                      I.create_mem_i32(Code.MOV_RM32_IMM32, M(R.RSI), 7),
                      I.create_reg_u32(Code.MOV_R32_IMM32, R.ECX, 4), I.create_rep_movsb(64)],
    }[how]
    main = asm(MAIN, I.create_reg_u64(Code.MOV_R64_IMM64, R.R14, F), I.create_reg(Code.CALL_RM64, R.R14),
               I.create_reg_reg(Code.MOV_R64_RM64, R.R8, R.RBX), *patch,
               I.create_reg(Code.CALL_RM64, R.R14), I.create_reg_reg(Code.MOV_R64_RM64, R.R9, R.RBX),
               I.create(Code.HLT))
    code = image((CODE, asm(CODE, I.create_branch(Code.JMP_REL32_64, MAIN))), (F, F_CODE),
                 (MAIN, main))
    cpu = agree_with_unicorn(code, setup={"rsp": STACK})
    assert cpu["r8"] == 81 and cpu["r9"] == 14 * 14


def test_store_into_the_running_block_ahead_of_a_native_run():
    """One block: a store rewrites the immediate of the native run right after it; the
    run that executes is the new one. Looped: the second pass runs the block again from
    memory and stores again."""
    def body(imm_at, value):
        return asm(CODE, I.create_reg_u32(Code.MOV_R32_IMM32, R.ECX, 2),
                   I.create_reg_reg(Code.XOR_R32_RM32, R.EBX, R.EBX),
                   I.create_mem_i32(Code.MOV_RM8_IMM8, M(R.RIP, displ=imm_at), value),
                   I.create_reg_u32(Code.MOV_R32_IMM32, R.EAX, 1),
                   I.create_reg_reg(Code.ADD_RM64_R64, R.RBX, R.RAX),
                   I.create_reg_i32(Code.SHL_RM64_IMM8, R.RBX, 1),
                   I.create_reg_i32(Code.ADD_RM64_IMM8, R.RBX, 1),
                   I.create_reg(Code.DEC_RM32, R.ECX), I.create_branch(Code.JNE_REL8_64, CODE + 7),
                   I.create(Code.HLT))
    imm = CODE + 5 + 2 + 7 + 1      # mov eax, imm32: its first immediate byte
    code = body(imm, 9)
    assert code[imm - CODE - 1] == 0xB8
    cpu = agree_with_unicorn(code)
    assert cpu["rbx"] == ((9 * 2 + 1) + 9) * 2 + 1


def test_exception_frame_over_cached_code_is_seen():
    """The #UD frame lands on a block the CPU already ran (native run included); the
    handler jumps to it. A CPU that never cached it must end the same way."""
    block = 0x7000
    blk = asm(block, ins(Code.MOV_R32_IMM32, R.EBX, 5), ins(Code.ADD_RM32_IMM8, R.EBX, 6),
              ins(Code.IMUL_R32_RM32, R.EBX, R.EBX), ins(Code.NOT_RM32, R.EBX),
              ins(Code.RETNQ))
    results = []
    for warm in (True, False):
        cpu = make_cpu()
        cpu.write(block, blk + bytes([0x90] * 64) + asm(block + len(blk) + 64,
                                                         ins(Code.HLT)))
        cpu.write(HANDLER + 16 * 6, asm(HANDLER + 16 * 6,
                                        ins(Code.MOV_R64_IMM64, R.RCX, block),
                                        ins(Code.JMP_RM64, R.RCX)))
        # the same bytes but for the call (two NOPs in its place): the same frame
        code = [ins(Code.MOV_R64_IMM64, R.RAX, DATA), ins(Code.MOV_R64_IMM64, R.RCX, block)]
        code += [ins(Code.CALL_RM64, R.RCX)] if warm else [ins(Code.NOPD), ins(Code.NOPD)]
        code += [ins(Code.MOV_R32_IMM32, R.EBX, 0), ins(Code.PUSHQ_IMM32, 2), ins(Code.POPFQ),
                 ins(Code.MOV_R64_IMM64, R.RSP, block + 48), ins(Code.UD2)]
        cpu.write(CODE, asm(CODE, *code))
        kind = cpu.run()
        results.append((kind, cpu.event(), cpu.regs(), cpu.read(block, 128),
                        cpu.read(DATA, 64)))
    assert results[0][3][:len(blk)] != blk, "the frame is on the block"
    assert results[0] == results[1]


# ---- the host rewrites code between runs ----

def test_host_rewrites_a_native_loop_between_runs():
    cpu = Bare(size=0x10000)
    loop = asm(CODE, ins(Code.MOV_R32_IMM32, R.ECX, 10), ins(Code.XOR_R32_RM32, R.EAX, R.EAX),
               ins(Code.ADD_RM32_IMM8, R.EAX, 3), ins(Code.ADD_RM32_R32, R.EAX, R.ECX),
               ins(Code.XOR_RM32_IMM8, R.EAX, 1), ins(Code.DEC_RM32, R.ECX),
               (Code.JNE_REL8_64, ("@", 2)), ins(Code.HLT))
    cpu.write(CODE, loop)
    cpu.set_regs(rip=CODE)
    assert cpu.run() == "HLT"
    first = cpu["rax"]
    assert stats(cpu).native_bytes > 0
    imm = loop.index(bytes([0x83, 0xC0, 3])) + 2        # add eax, 3: its immediate
    cpu.write(CODE + imm, bytes([5]))
    cpu.set_regs(rip=CODE)
    assert cpu.run() == "HLT"
    want = 0
    for c in range(10, 0, -1):
        want = ((want + 5) + c) ^ 1
    assert cpu["rax"] == want != first


def test_host_rewrites_one_block_of_two():
    """Blocks A and B cached; the host rewrites B only: B's new code runs, A keeps
    running from the cache."""
    cpu = Bare(size=0x10000)
    b_at = 0x2000
    cpu.write(CODE, asm(CODE, ins(Code.MOV_R32_IMM32, R.EAX, 1), ins(Code.ADD_RM32_IMM8, R.EAX, 1),
                        ins(Code.SHL_RM32_IMM8, R.EAX, 2), I.create_branch(Code.JMP_REL32_64, b_at)))
    cpu.write(b_at, asm(b_at, ins(Code.MOV_R32_IMM32, R.EBX, 10), ins(Code.HLT)))
    cpu.set_regs(rip=CODE)
    assert cpu.run() == "HLT" and (cpu["rax"], cpu["rbx"]) == (8, 10)
    built = stats(cpu).builds
    cpu.write(b_at, asm(b_at, ins(Code.MOV_R32_IMM32, R.EBX, 20), ins(Code.HLT)))
    cpu.set_regs(rip=CODE, rax=0)
    assert cpu.run() == "HLT" and (cpu["rax"], cpu["rbx"]) == (8, 20)
    assert stats(cpu).builds == built + 1, "A came from the cache, B was decoded again"


# ---- the same, over more code than the decode cache compares on every entry ----
#
# From 16 pages of cached code on, the cache asks the host kernel which pages anyone
# wrote (csrc/arch/exec_track.c) instead of comparing every block with memory on its
# first run after an entry. Each write below must be seen at the next run either way.

PAGES = 40


def _paged_sum(imms):
    """Page k: add eax, imms[k]; jmp to page k + 1. The last page: hlt. eax: the sum."""
    out = b""
    for k, imm in enumerate(imms):
        at = CODE + 0x1000 * k
        last = k == len(imms) - 1
        tail = ins(Code.HLT) if last else I.create_branch(Code.JMP_REL32_64, at + 0x1000)
        page = asm(at, I.create_reg_i32(Code.ADD_EAX_IMM32, R.EAX, imm), tail)
        out += page if last else page.ljust(0x1000, b"\x90")
    return out


def _run_sum(cpu):
    cpu.set_regs(rip=CODE, rax=0)
    assert cpu.run() == "HLT"
    return cpu["rax"]


def _tracking_cpu():
    """A CPU that ran the paged code: (cpu, imms), and whether the host kernel tracks its
    memory (a run with nothing written kept every block's check)."""
    imms = list(range(1, PAGES + 1))
    cpu = Bare(size=0x1000 * (PAGES + 2))
    cpu.write(CODE, _paged_sum(imms))
    assert _run_sum(cpu) == sum(imms)
    assert _run_sum(cpu) == sum(imms)       # the first scan reports every page
    before = stats(cpu).tracked_entries
    assert _run_sum(cpu) == sum(imms)
    return cpu, imms, stats(cpu).tracked_entries > before


def _imm_at(page):
    return CODE + 0x1000 * page + 1         # add eax, imm32 is 05 imm32


@pytest.mark.parametrize("how", ["mapping", "kernel", "after_a_quiet_run"])
def test_host_rewrites_code_across_many_pages(how):
    """40 pages of cached code; between two runs one immediate on page 25 is rewritten:
    by Python through the mapping, by the kernel (readv from a pipe into the mapping), or
    after a run in which nothing changed. The next run adds the new value."""
    cpu, imms, tracked = _tracking_cpu()
    if not tracked:
        pytest.skip("the host kernel does not track writes here (userfaultfd write-protect "
                    "in async mode and PAGEMAP_SCAN, Linux 6.7+): every entry compares")
    imms[25] = 1000
    new = (1000).to_bytes(4, "little")
    off = _imm_at(25) - cpu.base
    if how == "mapping":
        cpu.write(_imm_at(25), new)
    elif how == "kernel":
        import os
        r, w = os.pipe()
        try:
            os.write(w, new)
            assert os.readv(r, [memoryview(cpu._mapping)[off:off + 4]]) == 4
        finally:
            os.close(r)
            os.close(w)
    else:
        assert _run_sum(cpu) == sum(imms) - 1000 + 26      # nothing written: kept
        cpu.write(_imm_at(25), new)
    assert _run_sum(cpu) == sum(imms)
    assert _run_sum(cpu) == sum(imms)


def test_writes_to_data_among_code_pages_keep_the_cache():
    """A write to a page inside the code's range that holds no code does not make the
    cache compare again: the next entry still counts as tracked."""
    cpu, imms, tracked = _tracking_cpu()
    if not tracked:
        pytest.skip("the host kernel does not track writes here (Linux 6.7+)")
    cpu.write(CODE + 0x1000 * PAGES, b"\xff" * 64)    # past the HLT's page: no code
    before = stats(cpu).tracked_entries
    assert _run_sum(cpu) == sum(imms)
    assert stats(cpu).tracked_entries == before + 1


def test_a_forked_child_sees_its_own_writes_to_cached_code():
    """A child of fork() inherits the cache but not the kernel's tracking of its memory:
    it compares again, and sees what it writes."""
    import os
    cpu, imms, _ = _tracking_cpu()
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            cpu.write(_imm_at(3), (7).to_bytes(4, "little"))
            ok = _run_sum(cpu) == sum(imms) - 4 + 7
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _run_sum(cpu) == sum(imms), "the parent's memory is its own (private)"


# ---- a cache that grows ----

def _straight(n):
    regs = [R.RAX, R.RBX, R.RCX, R.RDX, R.RSI, R.RDI, R.R8, R.R9, R.R10, R.R11]
    out = []
    for i in range(100):
        a, b = regs[i % len(regs)], regs[(3 * i + 5) % len(regs)]
        out.append([I.create_reg_reg(Code.ADD_RM64_R64, a, b),
                    I.create_reg_i32(Code.XOR_RM64_IMM8, a, i),
                    I.create_reg_i32(Code.ROL_RM64_IMM8, a, 1),
                    I.create_reg_reg(Code.ADC_RM64_R64, a, b)][i % 4])
    enc = BlockEncoder(64)
    enc.add_many(out)
    return enc.encode(0) * (n // 100)


def test_cache_grows_past_the_old_arena_without_dropping_anything():
    """100,000 straight-line instructions (the old 1 MiB arena held ~27,000): a second
    pass decodes nothing, nothing is dropped, and the result is unicorn's."""
    from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
    from unicorn import x86_const as U
    body = _straight(100_000)
    code = body + asm(CODE + len(body), ins(Code.DEC_RM64, R.RBP),
                      I.create_branch(Code.JNE_REL32_64, CODE), ins(Code.HLT))
    size = (CODE + len(code) + 0xFFFF) & ~0xFFFF
    start = {"rax": 1, "rbx": 2, "rcx": 3, "rdx": 4, "rsi": 5, "rdi": 6, "rbp": 1, "r8": 0,
             "r9": 0, "r10": 0, "r11": 0, "rflags": 2}
    cpu = Bare(size=size)
    cpu.write(CODE, code)
    cpu.set_regs(rip=CODE, **start)
    assert cpu.run(budget=10**7) == "HLT"
    first = stats(cpu)
    assert first.bytes > 1 << 20 and first.flushes == 0
    builds = first.builds
    cpu.set_regs(rip=CODE, **dict(start, rbp=2))
    assert cpu.run(budget=10**7) == "HLT"
    assert stats(cpu).builds == builds and stats(cpu).flushes == 0

    mu = Uc(UC_ARCH_X86, UC_MODE_64)
    mu.mem_map(0, size)
    mu.mem_write(CODE, code)
    for name, value in dict(start, rbp=2).items():
        mu.reg_write(getattr(U, "UC_X86_REG_" + name.upper()), value)
    mu.emu_start(CODE, CODE + len(code) - 1)
    for name in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11"):
        assert cpu[name] == mu.reg_read(getattr(U, "UC_X86_REG_" + name.upper())), name


# ---- flags across blocks ----

PRODUCERS = {
    "sub": [I.create_reg_reg(Code.SUB_RM64_R64, R.RAX, R.RBX)],
    "add32": [I.create_reg_reg(Code.ADD_RM32_R32, R.EAX, R.EBX)],
    "inc": [I.create_reg_reg(Code.CMP_RM64_R64, R.RAX, R.RBX), I.create_reg(Code.INC_RM8, R.AL)],
    "neg": [I.create_reg(Code.NEG_RM16, R.BX)],
    "sbb": [I.create_reg_reg(Code.CMP_RM64_R64, R.RBX, R.RAX),
            I.create_reg_reg(Code.SBB_RM64_R64, R.RAX, R.RDX)],
    "native": [I.create_reg_reg(Code.ADD_RM64_R64, R.RAX, R.RBX),
               I.create_reg_i32(Code.XOR_RM64_IMM8, R.RDX, 5),
               I.create_reg_reg(Code.ADC_RM32_R32, R.ESI, R.EDX),
               I.create_reg_reg(Code.SUB_RM64_R64, R.RDI, R.RAX)],
    "shl_then_and": [I.create_reg_i32(Code.SHL_RM64_IMM8, R.RAX, 3),
                     I.create_reg_reg(Code.AND_RM64_R64, R.RAX, R.RBX)],
    "popf": [I.create_i32(Code.PUSHQ_IMM32, 0x8D5), I.create(Code.POPFQ)],
}
CONSUMERS = {
    "adc": [I.create_reg_i32(Code.ADC_RM64_IMM8, R.RCX, 0)],
    "setcc": [I.create_reg(getattr(Code, f"SET{cc}_RM8"), r)
              for cc, r in zip(("O", "B", "E", "BE", "S", "P", "L", "LE"),
                               (R.R8L, R.R9L, R.R10L, R.R11L, R.R12L, R.R13L, R.CL, R.DL))],
    "cmov": [I.create_reg_reg(Code.CMOVG_R64_RM64, R.R8, R.RBX),
             I.create_reg_reg(Code.CMOVNP_R64_RM64, R.R9, R.RBX),
             I.create_reg_reg(Code.CMOVA_R64_RM64, R.R10, R.RBX)],
    "pushf": [I.create(Code.PUSHFQ), I.create_reg(Code.POP_R64, R.R11)],
    "lahf": [I.create(Code.LAHF)],
    "jcc": [I.create_reg_u32(Code.MOV_R32_IMM32, R.R12D, 0), (Code.JLE_REL8_64, ("@", -1)),
            I.create_reg_u32(Code.MOV_R32_IMM32, R.R12D, 1)],
}


@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
@pytest.mark.parametrize("producer", sorted(PRODUCERS))
@pytest.mark.parametrize("between", ["same block", "jmp", "call"])
def test_flags_cross_blocks(producer, consumer, between, native=True):
    """Flags set in one block (interpreted or native) read in the next (lazily)."""
    seen = {}
    for native in (True, False):
        items = list(PRODUCERS[producer])
        if between == "jmp":
            items.append((Code.JMP_REL8_64, ("@", len(items) + 1)))
        elif between == "call":
            items += [(Code.CALL_REL32_64, ("@", len(items) + 1)),
                      I.create_reg(Code.POP_R64, R.R15)]       # POP leaves the flags
        for x in CONSUMERS[consumer]:
            if isinstance(x, tuple):                            # jcc over the next one
                x = (x[0], ("@", len(items) + 2))
            items.append(x)
        items.append(I.create(Code.HLT))
        with native_runs(native):
            cpu = agree_with_unicorn(encode(*items), seed=hash(producer + consumer) & 0xFFFF,
                                     flags_mask=ARITH & ~(0x10 if producer == "shl_then_and"
                                                          else 0))
            seen[native] = cpu.regs()
    assert seen[True] == seen[False]


# ---- single steps, budgets, REP ----

def test_single_steps_through_a_native_run():
    """With TF set, every instruction of a block that otherwise runs natively traps."""
    cpu = make_cpu()
    cpu.write(HANDLER + 16 * DB, asm(HANDLER + 16 * DB, ins(Code.INC_RM64, R.R15),
                                     ins(Code.IRETQ)))
    body = [ins(Code.ADD_RM64_R64, R.RAX, R.RBX), ins(Code.XOR_RM64_IMM8, R.RAX, 3),
            ins(Code.SUB_RM64_R64, R.RCX, R.RAX), ins(Code.LEA_R64_M, R.RDX, M(R.RAX, R.RCX, 2, 5, 1)),
            ins(Code.RETNQ)]
    fn = 0x7000
    cpu.write(fn, asm(fn, *body))
    cpu.write(CODE, asm(CODE, ins(Code.MOV_R64_IMM64, R.R14, fn), ins(Code.CALL_RM64, R.R14),
                        ins(Code.PUSHQ_IMM32, 0x102), ins(Code.POPFQ),
                        ins(Code.CALL_RM64, R.R14), ins(Code.PUSHQ_IMM32, 0x2), ins(Code.POPFQ),
                        ins(Code.HLT)))
    cpu.set_regs(r15=0)
    assert cpu.run() == "HLT"
    assert stats(cpu).native_bytes > 0
    # traps after: call, the 5 of fn, push, popf (TF still set when it started)
    assert cpu["r15"] == 1 + 5 + 2


def test_single_steps_each_iteration_of_rep_movsb():
    """TF and REP MOVSB with RCX = 3: a trap after each iteration, RIP at the instruction
    until the last (SDM 17.3.1.4)."""
    cpu = make_cpu()
    rips = []
    cpu.write(HANDLER + 16 * DB, asm(HANDLER + 16 * DB, ins(Code.INC_RM64, R.R15),
                                     ins(Code.IRETQ)))
    cpu.write(DATA, b"abc")
    cpu.write(CODE, asm(CODE, ins(Code.PUSHQ_IMM32, 0x102), ins(Code.POPFQ),
                        I.create_rep_movsb(64), ins(Code.HLT)))
    cpu.set_regs(rsi=DATA, rdi=DATA + 0x100, rcx=3, r15=0)
    del rips
    assert cpu.run() == "HLT"
    assert cpu.read(DATA + 0x100, 3) == b"abc" and cpu["rcx"] == 0
    assert cpu["r15"] == 3


def test_budget_counts_a_rep_string_instruction_once():
    cpu = make_cpu()
    cpu.write(CODE, asm(CODE, I.create_rep_stosq(64), ins(Code.NOPD), ins(Code.HLT)))
    cpu.set_regs(rdi=DATA, rcx=100, rax=0x1122334455667788)
    assert cpu.run(budget=2) == "EXTINT"
    assert cpu.retired() == 2 and cpu["rcx"] == 0 and cpu["rip"] == CODE + 4
    assert cpu.read(DATA + 99 * 8, 8) == (0x1122334455667788).to_bytes(8, "little")


def test_rep_movsb_from_mmio_exits_per_iteration_and_keeps_what_it_did():
    cpu = make_cpu()
    cpu.write(CODE, asm(CODE, I.create_rep_movsb(64), ins(Code.HLT)))
    cpu.set_regs(rsi=MMIO, rdi=DATA, rcx=3)
    for i in range(3):
        assert cpu.run() == "MMIO"
        ev = cpu.event()
        assert (ev["gpa"], ev["write"], ev["len"]) == (MMIO + i, 0, 1)
        assert cpu["rip"] == CODE and cpu["rcx"] == 3 - i
        cpu.mmio_fill(ev["gpa"], 0x41 + i)
    assert cpu.run() == "HLT"
    assert cpu.read(DATA, 3) == b"ABC" and cpu["rcx"] == 0 and cpu["rsi"] == MMIO + 3


def test_rep_stosw_to_mmio_reports_each_write_once():
    cpu = make_cpu()
    cpu.write(CODE, asm(CODE, I.create_rep_stosw(64), ins(Code.HLT)))
    cpu.set_regs(rdi=MMIO, rcx=2, rax=0xBEEF)
    seen = []
    for _ in range(2):
        assert cpu.run() == "MMIO"
        ev = cpu.event()
        seen.append((ev["gpa"], ev["write"], ev["data"], cpu["rcx"]))
    assert cpu.run() == "HLT"
    assert seen == [(MMIO, 1, 0xBEEF, 2), (MMIO + 2, 1, 0xBEEF, 1)]


@pytest.mark.parametrize("down", [False, True])
@pytest.mark.parametrize("gap", [-3, -1, 0, 1, 3, 64])
def test_overlapping_rep_movs_copies_element_by_element(down, gap):
    """REP MOVSB/MOVSQ with source and destination overlapping, either direction: what
    unicorn (one element at a time) does."""
    for stringop in (I.create_rep_movsb, I.create_rep_movsq):
        items = [I.create(Code.STD if down else Code.CLD), stringop(64), I.create(Code.CLD),
                 I.create(Code.HLT)]
        src = DATA + 0x400
        agree_with_unicorn(encode(*items), setup={"rsi": src, "rdi": src + gap, "rcx": 40})


def test_int3_in_a_block_after_a_native_run():
    """A trap after a native run in the same block retires the run and the INT3."""
    cpu = make_cpu()
    cpu.write(CODE, asm(CODE, ins(Code.MOV_R32_IMM32, R.EAX, 1), ins(Code.ADD_RM32_IMM8, R.EAX, 2),
                        ins(Code.SHL_RM32_IMM8, R.EAX, 1), ins(Code.XOR_RM32_IMM8, R.EAX, 1),
                        ins(Code.INT3), ins(Code.HLT)))
    assert cpu.run() == "HLT"
    assert vector_ran(cpu) == BP and cpu["rax"] == 7 and cpu.retired() == 5
    assert cpu.u64(cpu["rsp"]) == CODE + 5 + 3 + 3 + 3 + 1


def _long_block(n, store_at):
    """n register-only ALU instructions (ADC reads the CF the one before left) with a
    store to the data area at index store_at, then HLT: one block of up to 1,023."""
    regs = [R.RAX, R.RBX, R.RCX, R.RDX, R.RSI, R.RDI, R.R8, R.R9, R.R10, R.R11, R.R12]
    out = []
    for i in range(n):
        a, b = regs[i % len(regs)], regs[(3 * i + 5) % len(regs)]
        if i == store_at:
            out.append(I.create_mem_reg(Code.MOV_RM64_R64, M(R.R15, displ=0x40, displ_size=1), a))
        elif i % 4 == 0:
            out.append(I.create_reg_reg(Code.ADD_RM64_R64, a, b))
        elif i % 4 == 1:
            out.append(I.create_reg_reg(Code.ADC_RM64_R64, a, b))
        elif i % 4 == 2:
            out.append(I.create_reg_mem(Code.LEA_R64_M, a, M(a, b, 2, i % 128, 1)))
        else:
            out.append(I.create_reg_i32(Code.XOR_RM64_IMM32, a, (i * 0x1234567) & 0x7FFFFFFF))
    enc = BlockEncoder(64)
    enc.add_many(out + [I.create(Code.HLT)])
    return enc.encode(CODE)


@pytest.mark.parametrize("budgets", [[1000], [7, 300, 13], [255, 256, 1], [600, 1, 600]])
def test_a_block_past_255_instructions_stops_where_the_budget_says(budgets):
    """900 instructions in one block (its native runs around an interpreted store at
    index 700): cut by budgets, native runs and the interpreter alone stop at the same
    instruction with the same registers and the same count retired; unicorn agrees on
    the end."""
    code = _long_block(900, store_at=700)
    trace, cpus = budget_traces(code, initial_state(3), budgets * 200)
    assert trace[True][-1][0] == "HLT" and trace[True][-1][2] == 900  # HLT exits unretired
    assert stats(cpus[True]).native_bytes > 0
    assert trace[True] == trace[False]
    agree_with_unicorn(code, seed=3)


# ---- linked runs: whole blocks of register-only code that go on into the next ----
#
# A block of register-only instructions that falls through (it ended at the block size
# limit, 1,023 instructions) is a linked run: once the interpreter has seen which block
# follows and checked it, the first jumps straight into the second's host code, keeping
# the guest's registers and flags in the host's.

def _chain(n, regs=(R.RAX, R.RBX, R.RCX, R.RDX, R.RSI, R.RDI, R.R8, R.R9, R.R10, R.R11)):
    """n register-only instructions whose flags cross every block boundary (ADC reads
    the CF of the ADD before it, and blocks end anywhere in the pattern)."""
    out = []
    for i in range(n):
        a, b = regs[i % len(regs)], regs[(3 * i + 5) % len(regs)]
        out.append([I.create_reg_reg(Code.ADD_RM64_R64, a, b),
                    I.create_reg_reg(Code.ADC_RM64_R64, b, a),
                    I.create_reg_i32(Code.XOR_RM64_IMM32, a, (i * 0x9E3779B1) & 0x7FFFFFFF),
                    I.create_reg_i32(Code.ROL_RM64_IMM8, b, 1),
                    I.create_reg_reg(Code.SBB_RM64_R64, a, b)][i % 5])
    return out


def _encode_at(at, items):
    enc = BlockEncoder(64)
    for k, item in enumerate(items):
        item.ip = at + k                     # labels for branches between them
    enc.add_many(items)
    return enc.encode(at)


@pytest.mark.parametrize("budgets", [[1_000_000], [1023, 1, 2046], [700, 1500, 3],
                                     [4000, 1024, 1022]])
def test_linked_runs_stop_where_the_budget_says(budgets):
    """3,000 register-only instructions run three times (the loop's blocks start at the
    chain's first instruction from the second pass on, and the third goes through the
    links the second made): cut by budgets, native runs and the interpreter alone stop
    at the same instruction with the same registers and counts, and agree with unicorn
    at the end (whose harness stops at 10,000 instructions)."""
    body = _chain(3000)
    items = [I.create_reg_u32(Code.MOV_R32_IMM32, R.R12D, 3)] + body + [
        I.create_reg(Code.DEC_RM64, R.R12), I.create_branch(Code.JNE_REL32_64, CODE + 1),
        I.create(Code.HLT)]
    code = _encode_at(CODE, items)
    trace, cpus = budget_traces(code, initial_state(5), budgets * 100)
    assert trace[True][-1][0] == "HLT" and trace[True][-1][2] == 1 + 3 * 3002
    if len(budgets) == 1:
        assert stats(cpus[True]).links > 0, "the second pass linked runs, the third went through them"
    assert trace[True] == trace[False]
    agree_with_unicorn(code, seed=5)


def test_guest_rewrites_the_block_a_linked_run_goes_on_into():
    """Pass 1 links Y on into Z; then the guest stores into Z's code (a new immediate).
    Pass 2 must run the new Z: the store ends every link, Z is compared again."""
    y = _chain(1023)                        # exactly one block: it falls through into z
    z = [I.create_reg_i32(Code.ADD_RM64_IMM32, R.R13, 1)] + _chain(1022)
    y_at = CODE + 0x20                      # y's block starts there on both passes
    head = _encode_at(CODE, [I.create_reg_u32(Code.MOV_R32_IMM32, R.R12D, 2),
                             I.create_reg_u32(Code.MOV_R32_IMM32, R.R13D, 0),
                             I.create_branch(Code.JMP_REL32_64, y_at)]).ljust(0x20, b"\x90")
    code = bytearray(head + _encode_at(y_at, y + z))
    z_imm = 0x20 + len(_encode_at(y_at, y)) + 3        # add r13, imm32: 49 81 C5 imm32
    assert code[z_imm - 3:z_imm] == bytes([0x49, 0x81, 0xC5])
    tail_at = CODE + len(code)
    store_at = CODE + z_imm
    # tail: dec r12; jz end; mov dword [rel z_imm], 100; jmp <y>; end: hlt
    tail = [I.create_reg(Code.DEC_RM64, R.R12),
            I.create_branch(Code.JE_REL32_64, tail_at + 0x40),
            I.create_mem_i32(Code.MOV_RM32_IMM32, M(R.RIP, displ=store_at), 100),
            I.create_branch(Code.JMP_REL32_64, y_at)]
    code += _encode_at(tail_at, tail).ljust(0x40, b"\x90") + asm(tail_at + 0x40, ins(Code.HLT))
    code = bytes(code)
    cpu = agree_with_unicorn(code, seed=7)
    assert cpu["r13"] == 101 and stats(cpu).links > 0


def test_host_rewrites_a_block_linked_runs_go_through():
    """20 pages of linked runs, run until entries keep the cache (write tracking) and go
    through the links; the host rewrites an immediate near the end. The next run adds
    the new one."""
    body = _chain(10_000) + [I.create_reg_i32(Code.ADD_RM64_IMM32, R.R13, 1)] + \
        _chain(10_000) + [I.create_reg_i32(Code.ADD_RM64_IMM32, R.R13, 1)]
    code = _encode_at(CODE, body + [I.create(Code.HLT)])
    # the first add's imm32: instruction 10,000, inside the tenth of twenty blocks
    imm = CODE + len(_encode_at(CODE, body[:10_001])) - 4
    cpu = Bare(size=(len(code) + 0x2000 + 0xFFFF) & ~0xFFFF)
    cpu.write(CODE, code)

    def run():
        cpu.set_regs(rip=CODE, r13=0)
        assert cpu.run(budget=1_000_000) == "HLT"
        return cpu["r13"]

    for _ in range(4):
        assert run() == 2
    assert stats(cpu).links > 0
    assert code[imm - CODE - 3:imm - CODE] == bytes([0x49, 0x81, 0xC5])
    cpu.write(imm, (40).to_bytes(4, "little"))
    assert run() == 1 + 40
