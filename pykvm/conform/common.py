"""What every conformance suite shares: results, cases, CPUID features, the backends, and
the guest-side recorder that leaves each access's outcome in guest memory."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .. import guest
from ..guest import NO_VECTOR, USER_DATA, dword, mem, qword

NC = 0xAAAAAAAAAAAAAAAA          # kvm-unit-tests' NONCANONICAL; selftests' too
A64 = 0x0000123456789ABC
GP = "#GP"


@dataclass
class Result:
    status: str            # "pass", "fail", "unsupported"
    observed: str = ""


class Unsupported(Exception):
    """The backend cannot do this case (a missing feature or capability); says why."""


class CaseFailed(Exception):
    """A check of a case did not hold: the message is what was observed."""


@dataclass
class Case:
    """One conformance case. `upstream` names the file and the check it mirrors (empty
    for the docs/conformance.md table); `suite` is the suite's name (`pykvm conform --suite`)."""
    number: int
    title: str
    expect: str
    run: callable = field(repr=False)
    suite: str = "table"
    upstream: str = ""

    @property
    def id(self):
        """The table's cases are their numbers; the others suite-number ("msr-3")."""
        return self.number if self.suite == "table" else f"{self.suite}-{self.number}"


def show(v):
    return v if isinstance(v, str) else f"{v:#x}"


def vec(v):
    """'#GP' for vector 13, None when nothing faulted."""
    return None if v == NO_VECTOR else guest.vector_name(v).split()[0]


def need(cond, why):
    if not cond:
        raise Unsupported(why)


def check(cond, what):
    if not cond:
        raise CaseFailed(what)


# ---- CPUID features (kernel: X86_FEATURE_* as the selftests' kvm_x86_cpu_feature) --------

@dataclass(frozen=True)
class CpuidFeature:
    function: int
    index: int
    reg: str               # "eax", "ebx", "ecx", "edx"
    bit: int


F = CpuidFeature
FEATURES = {
    "MCE": F(1, 0, "edx", 7), "APIC": F(1, 0, "edx", 9), "MCA": F(1, 0, "edx", 14),
    "X2APIC": F(1, 0, "ecx", 21), "HYPERVISOR": F(1, 0, "ecx", 31),
    "SHSTK": F(7, 0, "ecx", 7), "RDPID": F(7, 0, "ecx", 22),
    "IBT": F(7, 0, "edx", 20), "SPEC_CTRL": F(7, 0, "edx", 26), "STIBP": F(7, 0, "edx", 27),
    "FLUSH_L1D": F(7, 0, "edx", 28), "SSBD": F(7, 0, "edx", 31),
    "SYSCALL": F(0x80000001, 0, "edx", 11), "NX": F(0x80000001, 0, "edx", 20),
    "RDTSCP": F(0x80000001, 0, "edx", 27), "LM": F(0x80000001, 0, "edx", 29),
    "AMD_IBPB": F(0x80000008, 0, "ebx", 12), "AMD_IBRS": F(0x80000008, 0, "ebx", 14),
    "AMD_STIBP": F(0x80000008, 0, "ebx", 15), "SBPB": F(0x80000021, 0, "eax", 27),
    "AMD_SSBD": F(0x80000008, 0, "ebx", 24),
}
del F


def cpuid_entry(entries, function, index=0):
    """The entry for a leaf (an entry without KVM_CPUID_FLAG_SIGNIFCANT_INDEX matches any
    index), or None."""
    for e in entries:
        if e.function == function and (not e.flags & 1 or e.index == index):
            return e
    return None


def cpuid_has(entries, name):
    f = FEATURES[name]
    e = cpuid_entry(entries, f.function, f.index)
    return bool(e and getattr(e, f.reg) >> f.bit & 1)


def cpuid_without(entries, names):
    """The entries with the named features cleared (selftests: vcpu_clear_cpuid_feature)."""
    from ..devkvm.system import CpuidEntry
    out = []
    for e in entries:
        regs = {r: getattr(e, r) for r in ("eax", "ebx", "ecx", "edx")}
        for name in names:
            f = FEATURES[name]
            if f.function == e.function and (not e.flags & 1 or f.index == e.index):
                regs[f.reg] &= ~(1 << f.bit)
        out.append(CpuidEntry(e.function, e.index, e.flags, **regs))
    return out


GENUINE_INTEL = (0x756E6547, 0x6C65746E, 0x49656E69)     # ebx, ecx, edx


def cpuid_with_vendor(entries, vendor_regs):
    """The entries with leaf 0's vendor string replaced (QEMU's -cpu ...,vendor=...)."""
    from ..devkvm.system import CpuidEntry
    ebx, ecx, edx = vendor_regs
    return [CpuidEntry(e.function, e.index, e.flags, e.eax, ebx, ecx, edx)
            if e.function == 0 else e for e in entries]


def is_amd(entries):
    e = cpuid_entry(entries, 0)
    return bool(e and e.ebx in (0x68747541, 0x6F677948))     # AuthenticAMD, HygonGenuine


@dataclass
class Features:
    """What the vCPU's CPUID says (the preconditions of the docs/conformance.md cases)."""
    intel: bool
    lm: bool = False
    rdtscp: bool = False
    rdpid: bool = False
    ibrs: bool = False
    stibp: bool = False
    ssbd: bool = False
    ibpb: bool = False

    @classmethod
    def from_cpuid(cls, entries):
        l0 = cpuid_entry(entries, 0)
        has = lambda n: cpuid_has(entries, n)  # noqa: E731
        return cls(intel=bool(l0 and l0.ebx == GENUINE_INTEL[0]), lm=has("LM"),
                   rdtscp=has("RDTSCP"), rdpid=has("RDPID"),
                   ibrs=has("SPEC_CTRL") or has("AMD_IBRS"),
                   stibp=has("STIBP") or has("AMD_STIBP"),
                   ssbd=has("SSBD") or has("AMD_SSBD"),
                   ibpb=has("SPEC_CTRL") or has("AMD_IBPB"))


# ---- the guest side: accesses whose outcome is left in guest memory -------------------

RESULTS = USER_DATA                 # where a Recorder's slots start in guest memory
SLOT = 24                           # vector, value, aux: three u64 per access


class Recorder:
    """Guest code that performs MSR accesses with the fault caught (the runtime's
    rdmsr_safe/wrmsr_safe) and stores each outcome in the next slot: the vector
    (NO_VECTOR if none), the value read, and an aux value (what was written, for a
    read-back check). The host reads them all after one run: a guest that makes hundreds
    of accesses costs one exit, not hundreds."""

    def __init__(self, a, base=RESULTS):
        self.a = a
        self.base = base
        self.n = 0
        self.labels = []

    def _store(self, label, value="rax", aux=None):
        a = self.a
        at = self.base + SLOT * self.n
        a.mov(qword(at), "r9")
        a.mov(qword(at + 8), value)
        if aux is not None:
            a.mov(qword(at + 16), aux)
        self.labels.append(label)
        self.n += 1
        return self.n - 1

    def rd(self, msr, label=None):
        """RDMSR msr: slot (vector, value)."""
        self.a.rdmsr_safe(msr)
        return self._store(label or ("rd", msr))

    def wr(self, msr, value, label=None):
        """WRMSR msr, value (int, or a 64-bit register): slot (vector, -)."""
        self.a.wrmsr_safe(msr, value)
        self.a.xor("eax", "eax")
        return self._store(label or ("wr", msr, value))

    def batch(self, ops):
        """Many plain accesses, ("rd", msr) or ("wr", msr, value), made by one guest loop
        over a table emitted with the code: hundreds of probes cost a few instructions
        to assemble, not hundreds of blocks. Each fills a slot as rd/wr do (wr: value
        0). Returns the first slot; the rest follow in order."""
        a = self.a
        first = self.n
        if not ops:
            return first
        table, over = a.label(), a.label()
        a.jmp(over)
        a.bind(table)
        a.db(b"".join(struct.pack("<IIQ", op[1], op[0] == "wr",
                                  (op[2] if op[0] == "wr" else 0) & (2**64 - 1))
                      for op in ops))
        a.bind(over)
        # RBX walks the table, R15 the slots, R14 counts down.
        a.lea("rbx", mem(table))
        a.mov("r15", self.base + SLOT * first)
        a.mov("r14", len(ops))
        top, do_wr, store = a.here(), a.label(), a.label()
        a.mov("ecx", dword("rbx", 0))
        a.cmp(dword("rbx", 4), 0)
        a.jne(do_wr)
        a.rdmsr_safe()
        a.jmp(store)
        a.bind(do_wr)
        a.mov("eax", dword("rbx", 8))
        a.mov("edx", dword("rbx", 12))
        a.wrmsr_safe()
        a.xor("eax", "eax")
        a.bind(store)
        a.mov(qword("r15", 0), "r9")
        a.mov(qword("r15", 8), "rax")
        a.add("rbx", 16)
        a.add("r15", SLOT)
        a.dec("r14")
        a.jnz(top)
        for op in ops:
            self.labels.append(tuple(op))
        self.n += len(ops)
        return first

    def rw(self, msr, value, keep=0, or_orig=False, label=None):
        """kvm-unit-tests' __test_msr_rw: read the original, write `value` (the `keep`
        bits taken from the original; or_orig: value | original, the EFER rule), read it
        back, write the original back. Four slots: read orig, write, read back (aux =
        the value written), restore."""
        a = self.a
        first = self.rd(msr, ("rw-orig", msr))
        a.mov("r12", "rax")
        a.mov("rax", "r12")
        if or_orig:
            a.mov("r13", value & (2**64 - 1))
            a.or_("rax", "r13")
        else:
            a.mov("r13", keep & (2**64 - 1))
            a.and_("rax", "r13")
            a.mov("r13", value & ~keep & (2**64 - 1))
            a.or_("rax", "r13")
        a.mov("r14", "rax")
        self.wr(msr, "rax", ("rw-write", msr))
        a.rdmsr_safe(msr)
        self._store(("rw-read", msr), aux="r14")
        self.wr(msr, "r12", ("rw-restore", msr))
        return first

    def results(self, vcpu):
        """[(vector, value, aux)] for every slot, read from guest memory."""
        raw = vcpu.vm.memory.read(self.base, SLOT * self.n)
        out = []
        for i in range(self.n):
            o = i * SLOT
            out.append(tuple(int.from_bytes(raw[o + k:o + k + 8], "little") for k in (0, 8, 16)))
        return out


def rw_outcome(res, first, what):
    """Check a Recorder.rw sequence starting at slot `first`: each access faultless and
    the value read back equal to the value written."""
    names = ("RDMSR (original)", "WRMSR", "RDMSR (read back)", "WRMSR (restore)")
    for k, name in enumerate(names):
        v = res[first + k][0]
        check(v == NO_VECTOR, f"{what}: {name} took {vec(v)}")
    got, want = res[first + 2][1], res[first + 2][2]
    check(got == want, f"{what}: read back {got:#x}, wrote {want:#x}")


def fault_outcome(res, slot, what, vector=13):
    v = res[slot][0]
    check(v == vector, f"{what}: {vec(v) or 'no fault'}, want {guest.vector_name(vector)}")


def ok_outcome(res, slot, what):
    v = res[slot][0]
    check(v == NO_VECTOR, f"{what}: {vec(v)}, want no fault")


def run_to_done(vcpu, image, syncs=0):
    """Run through `syncs` SYNC ucalls to DONE; guest failures raise GuestAssertion."""
    out = []
    for _ in range(syncs):
        out.append(guest.run_ucall(vcpu, image, guest.UcallCmd.SYNC).args)
    guest.run_ucall(vcpu, image, guest.UcallCmd.DONE)
    return out


# ---- backends ---------------------------------------------------------------------------

class SimBackend:
    """A simulated vendor: a fresh machine per case keeps the cases independent."""

    is_model = True

    def __init__(self, vendor, cpu_model=None, params=None):
        from ..machine import Machine
        self.name = vendor
        self.module = None
        self._make = lambda cpus=1: Machine(cpus=cpus, vendor=vendor, cpu_model=cpu_model,
                                            params=params)
        self._system = self._make()
        self.features = Features.from_cpuid(self._system.get_supported_cpuid())

    def system(self):
        """What /dev/kvm answers: capabilities, supported CPUID, MSR lists."""
        return self._system

    @property
    def params(self):
        """The module parameters every machine of this backend gets (parsed)."""
        return self._system.params

    def vm(self, cpus=1):
        """A VM on a fresh machine with `cpus` pCPUs."""
        return self._make(cpus).create_vm()

    def vcpu(self):
        return self.vm().create_vcpu()

    def close(self):
        pass


class KvmBackend:
    """The host's /dev/kvm (its module named in the column header)."""

    is_model = False

    def __init__(self):
        from ..devkvm import KvmMachine, vendor_modules
        self.machine = KvmMachine()
        mods = vendor_modules()
        self.module = mods[0] if mods else "unknown"
        self.name = f"kvm ({', '.join(mods) or 'unknown module'})"
        self.features = Features.from_cpuid(self.machine.get_supported_cpuid())
        self._vms = []

    def system(self):
        return self.machine

    def vm(self, cpus=1):
        """A new VM; the previous case's VM is closed first."""
        for vm in self._vms:
            vm.close()
        vm = self.machine.create_vm()
        self._vms = [vm]
        return vm

    def vcpu(self):
        return self.vm().create_vcpu()

    def close(self):
        for vm in self._vms:
            vm.close()
        self.machine.close()
