"""The guest interpreter (bare mode) against unicorn, on the same bytes in the same run.

Each loop is guest code encoded once by iced-x86 and run to its final HLT by both CPUs
from the same registers and memory. `test_interpreter_vs_unicorn[loop]` times the
interpreter with pytest-benchmark (min of ROUNDS after a warm-up round that fills the
decode cache) and unicorn the same way (its warm-up round translates), then records in
extra_info (read by benchmarks/README.md's tables):

  loop, guest_insns (retired per round; a REP string instruction counts once),
  hot_insns (distinct instructions the loop keeps running), pykvm_ns_per_insn,
  unicorn_ns_per_insn, time_ratio (pykvm time / unicorn time), target_ratio; and for the
  loops that only compute on registers, host_ns_per_insn: the same bytes run by the host
  CPU itself (host_cpu.py), ending in the same registers.

The loops:
- dec_jnz, sub_jnz: a counter and a branch (`dec` keeps CF, which costs unicorn a helper;
  `sub` does not);
- alu_mix: add, xor, shl, imul, lea, and, or, adc, test, cmovcc on registers;
- load_store: loads and stores through base, base+index*scale+disp, RIP-relative, 32-bit
  and stack addressing, with movzx and a read-modify-write to memory;
- call_ret, push_pop: the stack;
- rep_movsb (4 KiB per instruction), rep_stosq (4 KiB per instruction);
- straight_<N>: N distinct straight-line ALU instructions looped over (N = 100 .. 1M): the
  cost per instruction as the hot code outgrows caches, the target being flat (the host
  CPU's own column shows the hardware is: ~0.1 ns per instruction at every N);
- msr_swapgs: WRMSR, RDMSR, SWAPGS on KERNEL_GS_BASE and a counter. unicorn executes these
  as helpers on its own MSR state; the interpreter asks pk_virt_intercept first (bare mode:
  no hypervisor, so natively) and writes the simulated pCPU's MSR file. The guest-visible
  work is the same; what the interpreter adds is the model's question to the hardware.

Target: every time_ratio <= 2. Run:
  pytest benchmarks/bench_exec.py --benchmark-columns=min,mean,rounds \
      --benchmark-json=exec.json
Instruction counts, repeatable whatever the machine's load (valgrind's callgrind, host
instructions inside pk_guest_exec per guest instruction, decode excluded):
  python benchmarks/bench_exec.py callgrind [loop ...]
"""
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from exec_harness import GPRS, MSR_KERNEL_GS_BASE, Bare, asm  # noqa: E402

import host_cpu  # noqa: E402

iced = pytest.importorskip("iced_x86")
from iced_x86 import (BlockEncoder, Code, Instruction as I,  # noqa: E402
                      MemoryOperand as M, Register as R)

CODE, DATA, SRC, DST, STACK = 0x1000, 0x8000, 0x10000, 0x20000, 0xF000
ROUNDS = 5
TARGET_RATIO = 2.0
STRAIGHT = (100, 1_000, 10_000, 100_000, 1_000_000)
SCALE = float(os.environ.get("PYKVM_BENCH_SCALE", "1"))    # fewer iterations: callgrind


class Loop:
    """Guest code at CODE ending in a HLT (its last byte), the registers it starts with,
    memory it needs, what one round retires and how many instructions stay hot."""

    def __init__(self, code, regs, insns, hot, mem=0x30000, data=(), host=False):
        # every GPR but RSP from here (0 unless given): both CPUs start the same
        self.code, self.insns, self.hot = code, insns, hot
        self.host = host        # registers only: the host CPU can run the bytes too
        self.regs = dict({name: 0 for name in GPRS if name != "rsp"}, **regs)
        self.mem = max(mem, (CODE + len(code) + 0xFFFF) & ~0xFFFF)
        self.data = data


def _n(count):
    return max(2, int(count * SCALE))


def _counted(body, n, counter=R.RCX, dec=False):
    """body, then `sub counter, 1` (or `dec counter`) and `jnz` back to the start, n times."""
    step = (I.create_reg(Code.DEC_RM64, counter) if dec
            else I.create_reg_i32(Code.SUB_RM64_IMM8, counter, 1))
    code = asm(CODE, *body, step, (Code.JNE_REL32_64, ("@", 0)), I.create(Code.HLT))
    return code, {_REG_NAME[counter]: n}, n * (len(body) + 2)


_REG_NAME = {R.RCX: "rcx", R.RBX: "rbx", R.RBP: "rbp"}


def dec_jnz():
    code, regs, insns = _counted([], _n(10_000_000), dec=True)
    return Loop(code, regs, insns, 2, host=True)


def sub_jnz():
    code, regs, insns = _counted([], _n(10_000_000))
    return Loop(code, regs, insns, 2, host=True)


def alu_mix():
    body = [I.create_reg_reg(Code.ADD_RM64_R64, R.RAX, R.RBX),
            I.create_reg_reg(Code.XOR_RM64_R64, R.RDX, R.RAX),
            I.create_reg_i32(Code.SHL_RM64_IMM8, R.RDX, 3),
            I.create_reg_reg_i32(Code.IMUL_R64_RM64_IMM8, R.RSI, R.RDX, 7),
            I.create_reg_mem(Code.LEA_R64_M, R.RDI, M(R.RSI, R.RAX, 2, 8, 1)),
            I.create_reg_reg(Code.ADD_RM32_R32, R.R8D, R.EDI),
            I.create_reg_i32(Code.AND_RM64_IMM32, R.R9, 0x7FFF_FFFF),
            I.create_reg_reg(Code.OR_RM64_R64, R.R9, R.R8),
            I.create_reg_reg(Code.ADC_RM64_R64, R.R10, R.R9),
            I.create_reg_reg(Code.TEST_RM64_R64, R.R10, R.RSI),
            I.create_reg_reg(Code.CMOVS_R64_RM64, R.R11, R.RDI),
            I.create_reg_i32(Code.XOR_RM32_IMM32, R.R11D, 0x1234)]
    code, regs, insns = _counted(body, _n(1_000_000))
    return Loop(code, dict(regs, rax=1, rbx=0x9E3779B97F4A7C15), insns, len(body) + 2,
                host=True)


def load_store():
    data_rip = DATA + 0x100
    body = [I.create_reg_mem(Code.MOV_R64_RM64, R.RAX, M(R.R15)),
            I.create_mem_reg(Code.MOV_RM64_R64, M(R.R15, displ=8, displ_size=1), R.RAX),
            I.create_reg_mem(Code.MOV_R64_RM64, R.RDX, M(R.R15, R.RSI, 8, 16, 1)),
            I.create_mem_reg(Code.MOV_RM64_R64, M(R.RIP, displ=data_rip), R.RDX),
            I.create_reg_mem(Code.MOV_R32_RM32, R.EBX, M(R.R15, R.RSI, 4, 0x40, 1)),
            I.create_mem_reg(Code.MOV_RM32_R32, M(R.R15D, R.ESI, 4, 0x80, 4), R.EBX),
            I.create_reg_mem(Code.MOVZX_R32_RM8, R.EDI, M(R.R15, displ=3, displ_size=1)),
            I.create_mem_reg(Code.ADD_RM64_R64, M(R.R15, displ=0x40, displ_size=1), R.RDI),
            I.create_mem_reg(Code.MOV_RM64_R64, M(R.RSP, displ=8, displ_size=1), R.RBX),
            I.create_reg_mem(Code.MOV_R64_RM64, R.R8, M(R.RSP, displ=8, displ_size=1)),
            I.create_mem_i32(Code.MOV_RM16_IMM16, M(R.R15, displ=0x20, displ_size=1), 0x55),
            I.create_reg_mem(Code.MOV_R64_RM64, R.R9, M(R.RIP, displ=data_rip))]
    code, regs, insns = _counted(body, _n(1_000_000))
    return Loop(code, dict(regs, r15=DATA, rsi=2), insns, len(body) + 2)


def call_ret():
    # jmp top; f: ret; top: call f; sub rcx, 1; jnz top; hlt
    n = _n(2_000_000)
    code = asm(CODE, (Code.JMP_REL8_64, ("@", 2)), I.create(Code.RETNQ),
               (Code.CALL_REL32_64, ("@", 1)), I.create_reg_i32(Code.SUB_RM64_IMM8, R.RCX, 1),
               (Code.JNE_REL8_64, ("@", 2)), I.create(Code.HLT))
    return Loop(code, {"rcx": n}, 1 + 4 * n, 4)


def push_pop():
    body = [I.create_reg(Code.PUSH_R64, R.RAX), I.create_reg(Code.PUSH_R64, R.RBX),
            I.create_i32(Code.PUSHQ_IMM8, 5), I.create_reg(Code.POP_R64, R.RDX),
            I.create_reg(Code.POP_R64, R.RSI), I.create_reg(Code.POP_R64, R.RDI)]
    code, regs, insns = _counted(body, _n(2_000_000))
    return Loop(code, regs, insns, len(body) + 2)


def _rep(rep, size):
    """A REP string instruction moving 4 KiB, each round `n` times."""
    n = _n(5_000)
    body = [I.create_reg_u64(Code.MOV_R64_IMM64, R.RSI, SRC),
            I.create_reg_u64(Code.MOV_R64_IMM64, R.RDI, DST),
            I.create_reg_u32(Code.MOV_R32_IMM32, R.ECX, 4096 // size), rep(64)]
    code, regs, insns = _counted(body, n, counter=R.RBX)
    return Loop(code, regs, insns, len(body) + 2, data=[(SRC, bytes(range(256)) * 16)])


def rep_movsb():
    return _rep(I.create_rep_movsb, 1)


def rep_stosq():
    return _rep(I.create_rep_stosq, 8)


def _straight_pattern():
    """100 distinct ALU instructions on rax..rdi, r8..r14 (not rbp, rsp), each of which
    reads the register it writes: no result is dead, so what both CPUs run is the work
    itself (a translator's dead-code elimination would otherwise remove part of it)."""
    regs = [R.RAX, R.RBX, R.RCX, R.RDX, R.RSI, R.RDI, R.R8, R.R9, R.R10, R.R11, R.R12,
            R.R13, R.R14]
    out = []
    for i in range(100):
        a, b = regs[i % len(regs)], regs[(3 * i + 5) % len(regs)]
        kind = i % 5
        if kind == 0:
            out.append(I.create_reg_reg(Code.ADD_RM64_R64, a, b))
        elif kind == 1:
            out.append(I.create_reg_i32(Code.XOR_RM64_IMM8, a, i))
        elif kind == 2:
            out.append(I.create_reg_mem(Code.LEA_R64_M, a, M(a, b, 2, i, 1)))
        elif kind == 3:
            out.append(I.create_reg_reg(Code.ADC_RM64_R64, a, b))
        else:
            out.append(I.create_reg_i32(Code.SUB_RM64_IMM8, a, i))
    enc = BlockEncoder(64)
    enc.add_many(out)
    return enc.encode(0)


def straight(hot):
    """`hot` straight-line instructions, then `dec rbp; jnz` back: about 4M per round."""
    pattern = _straight_pattern()
    body = pattern * (hot // 100)
    passes = max(2, int(4_000_000 * SCALE) // hot)
    tail = asm(CODE + len(body), I.create_reg(Code.DEC_RM64, R.RBP),
               I.create_branch(Code.JNE_REL32_64, CODE), I.create(Code.HLT))
    return Loop(body + tail, {"rbp": passes}, passes * (hot + 2), hot + 2, host=True)


def msr_swapgs():
    body = [I.create(Code.WRMSR), I.create(Code.RDMSR), I.create(Code.SWAPGS)]
    code, regs, insns = _counted(body, _n(2_000_000), counter=R.RBX, dec=True)
    return Loop(code, dict(regs, rcx=MSR_KERNEL_GS_BASE, rax=0x1234, rdx=0), insns, 5)


LOOPS = {f.__name__: f for f in (dec_jnz, sub_jnz, alu_mix, load_store, call_ret, push_pop,
                                  rep_movsb, rep_stosq, msr_swapgs)}
LOOPS.update({f"straight_{n}": (lambda n=n: straight(n)) for n in STRAIGHT})
_built = {}


def build(name):
    if name not in _built:
        _built[name] = LOOPS[name]()
    return _built[name]


def pykvm_runner(loop):
    """A function running the loop once on the interpreter (from the same start)."""
    cpu = Bare(size=loop.mem)
    cpu.write(CODE, loop.code)
    for gpa, data in loop.data:
        cpu.write(gpa, data)

    def run():
        cpu.set_regs(rip=CODE, rsp=STACK, rflags=0x2, **loop.regs)
        kind = cpu.run(budget=loop.insns + 1)
        assert kind == "HLT", f"wanted exit HLT, got {kind} at {cpu['rip']:#x}"
    run.gprs = lambda: {name: cpu[name] for name in GPRS}
    run.cpu = cpu
    return run


def cache_stats(cpu):
    """The decode cache's counters that say which fast paths a loop took: entries whose
    blocks kept their checks (the host kernel reported no write to code) and links made
    between linked runs."""
    st = cpu.icache_stats()
    return {"tracked_entries": st.tracked_entries, "links": st.links}


def unicorn_runner(loop):
    from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
    from unicorn import x86_const as U

    mu = Uc(UC_ARCH_X86, UC_MODE_64)
    mu.mem_map(0, loop.mem)
    mu.mem_write(CODE, loop.code)
    for gpa, data in loop.data:
        mu.mem_write(gpa, data)
    hlt = CODE + len(loop.code) - 1

    def run():
        for reg, value in loop.regs.items():
            mu.reg_write(getattr(U, "UC_X86_REG_" + reg.upper()), value)
        mu.reg_write(U.UC_X86_REG_RSP, STACK)
        mu.reg_write(U.UC_X86_REG_RFLAGS, 0x2)
        mu.emu_start(CODE, hlt)
        assert mu.reg_read(U.UC_X86_REG_RIP) == hlt
    run.gprs = lambda: {name: mu.reg_read(getattr(U, "UC_X86_REG_" + name.upper()))
                        for name in GPRS}
    return run


def host_runner(loop):
    """A function running the loop's bytes on the host CPU itself (host_cpu.py)."""
    cpu = host_cpu.HostCpu(loop.code)
    out = {}

    def run():
        out.update(cpu.run(loop.regs))
    run.gprs = lambda: out
    return run


def _min_time(run, rounds=ROUNDS):
    run()                               # unicorn translates here, as pykvm decodes
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best


@pytest.mark.parametrize("name", list(LOOPS))
def test_interpreter_vs_unicorn(benchmark, name):
    pytest.importorskip("unicorn")
    loop = build(name)
    benchmark.group = name
    mine = pykvm_runner(loop)
    benchmark.pedantic(mine, rounds=ROUNDS, warmup_rounds=1)
    ours = benchmark.stats.stats.min
    uc = unicorn_runner(loop)
    theirs = _min_time(uc)
    assert mine.gprs() == uc.gprs(), "the two CPUs must end in the same state"
    if loop.host:
        host = host_runner(loop)
        benchmark.extra_info["host_ns_per_insn"] = round(_min_time(host) * 1e9 / loop.insns, 3)
        assert all(host.gprs()[n] == mine.gprs()[n] for n in host_cpu.ORDER), \
            "the host CPU must end where the interpreter does"
    benchmark.extra_info.update(cache_stats(mine.cpu))
    benchmark.extra_info.update({
        "loop": name,
        "guest_insns": loop.insns,
        "hot_insns": loop.hot,
        "pykvm_ns_per_insn": round(ours * 1e9 / loop.insns, 3),
        "unicorn_ns_per_insn": round(theirs * 1e9 / loop.insns, 3),
        "time_ratio": round(ours / theirs, 3),
        "target_ratio": TARGET_RATIO,
    })


# ---- host instructions per guest instruction, under callgrind ----

def _callgrind_ir(name, rounds):
    """Host instructions executed inside pk_guest_exec for `rounds` runs of the loop
    (plus the warm-up run)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "cg.out"
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             "--toggle-collect=pk_guest_exec", sys.executable, __file__, "_run", name,
             str(rounds)],
            check=True, capture_output=True, env=dict(os.environ, PYKVM_BENCH_SCALE=str(SCALE)))
        for line in out.read_text().splitlines():
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no totals")


def callgrind(names):
    """Steady-state host instructions per guest instruction: the difference between 3
    runs and 1 run (both after a warm-up run), so decoding and start-up cancel out."""
    rows = []
    for name in names:
        loop = build(name)
        one, three = _callgrind_ir(name, 1), _callgrind_ir(name, 3)
        rows.append((name, (three - one) / (2 * loop.insns), loop.insns))
        print(f"{name:18} {rows[-1][1]:8.2f} host insns / guest insn  "
              f"({loop.insns} guest insns per run, scale {SCALE})", flush=True)
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["_run"]:
        run = pykvm_runner(build(sys.argv[2]))
        run()                           # warm-up: decode
        for _ in range(int(sys.argv[3])):
            run()
    elif sys.argv[1:2] == ["callgrind"]:
        if "PYKVM_BENCH_SCALE" not in os.environ:
            SCALE = 0.05
        callgrind(sys.argv[2:] or list(LOOPS))
    else:
        sys.exit(__doc__)
