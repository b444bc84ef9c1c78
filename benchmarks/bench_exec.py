"""Guest instructions per second of the interpreter (bare mode), side by side with unicorn
on the same bytes in the same run.

- dec_jnz: `dec rcx; jnz` (the interpreter's dispatch and lazy flags);
- msr_swapgs: `wrmsr; rdmsr; swapgs; dec rbx; jnz` on KERNEL_GS_BASE, a pass-through MSR
  (the exit questions to the hardware and the native MSR path).

Target: the interpreter within 3x of unicorn's time on both. Each pykvm test also times
unicorn (min of ROUNDS) and reports both rates and `time_ratio` (pykvm / unicorn) in
extra_info. Run: pytest benchmarks/bench_exec.py --benchmark-columns=min,mean,rounds
"""
import pathlib
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from exec_harness import MSR_KERNEL_GS_BASE, Bare, asm, ins  # noqa: E402

iced = pytest.importorskip("iced_x86")
unicorn = pytest.importorskip("unicorn")
from iced_x86 import Code, Register as R  # noqa: E402
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc  # noqa: E402
from unicorn import x86_const as U  # noqa: E402

CODE, STACK, ROUNDS = 0x1000, 0xF000, 5

WORKLOADS = {
    # name: (instructions, count register, iterations, instructions per iteration)
    "dec_jnz": ([ins(Code.DEC_RM64, R.RCX), (Code.JNE_REL8_64, ("@", 0)), ins(Code.HLT)],
                "rcx", 10_000_000, 2),
    "msr_swapgs": ([ins(Code.WRMSR), ins(Code.RDMSR), ins(Code.SWAPGS),
                    ins(Code.DEC_RM64, R.RBX), (Code.JNE_REL8_64, ("@", 0)), ins(Code.HLT)],
                   "rbx", 2_000_000, 5),
}


def _setup(name):
    instrs, counter, n, per = WORKLOADS[name]
    code = asm(CODE, *instrs)
    regs = {"rcx": MSR_KERNEL_GS_BASE, "rax": 0x1234, "rdx": 0, counter: n}
    return code, regs, n * per


def _unicorn(code, regs):
    mu = Uc(UC_ARCH_X86, UC_MODE_64)
    mu.mem_map(0, 0x10000)
    mu.mem_write(CODE, code)
    end = CODE + len(code) - 1

    def run():
        for name, value in regs.items():
            mu.reg_write(getattr(U, "UC_X86_REG_" + name.upper()), value)
        mu.reg_write(U.UC_X86_REG_RSP, STACK)
        t = time.perf_counter()
        mu.emu_start(CODE, end)
        return time.perf_counter() - t
    run()                                   # translate once, as pykvm decodes once
    return min(run() for _ in range(ROUNDS))


def _pykvm(code, regs, insns):
    cpu = Bare(size=0x10000)
    cpu.write(CODE, code)

    def run():
        cpu.set_regs(rip=CODE, rsp=STACK, **regs)
        assert cpu.run(budget=insns + 1) == "HLT"
    return run


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_interpreter_vs_unicorn(benchmark, name):
    code, regs, insns = _setup(name)
    benchmark.group = name
    benchmark.pedantic(_pykvm(code, regs, insns), rounds=ROUNDS, warmup_rounds=1)
    ours = benchmark.stats.stats.min
    theirs = _unicorn(code, regs)
    benchmark.extra_info.update({
        "guest_insns": insns,
        "pykvm_minsn_per_s": round(insns / ours / 1e6, 1),
        "unicorn_minsn_per_s": round(insns / theirs / 1e6, 1),
        "time_ratio": round(ours / theirs, 2),
    })


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_unicorn_same_bytes(benchmark, name):
    code, regs, insns = _setup(name)
    benchmark.group = name
    mu = Uc(UC_ARCH_X86, UC_MODE_64)
    mu.mem_map(0, 0x10000)
    mu.mem_write(CODE, code)

    def run():
        for reg, value in regs.items():
            mu.reg_write(getattr(U, "UC_X86_REG_" + reg.upper()), value)
        mu.emu_start(CODE, CODE + len(code) - 1)
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    benchmark.extra_info["unicorn_minsn_per_s"] = round(insns / benchmark.stats.stats.min / 1e6, 1)
