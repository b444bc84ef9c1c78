"""Both backends' vCPUs are one type (pykvm.vcpu_base.VcpuProtocol) and decode exits with
one decoder (pykvm.exits.decode_kvm_run)."""
import inspect
import os

import pytest

from pykvm import Machine, exits as X, guest
from pykvm.devkvm import KvmVcpu
from pykvm.machine import Vcpu
from pykvm.vcpu_base import VcpuProtocol

PROTOCOL_METHODS = [n for n, v in vars(VcpuProtocol).items()
                    if inspect.isfunction(v) and not n.startswith("_")]


def test_protocol_lists_the_running_and_state_calls():
    assert {"run", "run_loop", "load", "get_regs", "set_msrs"} <= set(PROTOCOL_METHODS)


@pytest.mark.parametrize("cls", [Vcpu, KvmVcpu], ids=["simulated", "devkvm"])
def test_backend_methods_take_the_protocols_parameters(cls):
    """Every protocol method exists with the protocol's parameters, same names and kinds,
    in order; anything a backend adds after them has a default."""
    for name in PROTOCOL_METHODS:
        want = list(inspect.signature(getattr(VcpuProtocol, name)).parameters.values())
        have = list(inspect.signature(getattr(cls, name)).parameters.values())
        assert [(p.name, p.kind) for p in have[:len(want)]] == \
            [(p.name, p.kind) for p in want], (cls.__name__, name)
        extra = [p.name for p in have[len(want):]
                 if p.default is inspect.Parameter.empty
                 and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        assert not extra, (cls.__name__, name, extra)


@guest.program
def _out_then_hlt(a):
    a.mov("al", 0x5A)
    a.out(0x80, "al")
    a.hlt()


def _drive(vcpu):
    """Backend-blind code: only protocol calls."""
    assert isinstance(vcpu, VcpuProtocol)
    vcpu.load(_out_then_hlt)
    first = vcpu.run()
    return first


def test_simulated_vcpu_is_one():
    with Machine() as m:
        ex = _drive(m.create_vm().create_vcpu())
    assert isinstance(ex, X.Io) and ex.port == 0x80 and bytes(ex.data) == b"\x5a"


@pytest.mark.skipif(not os.path.exists("/dev/kvm"), reason="no /dev/kvm on this host")
def test_devkvm_vcpu_is_one_and_refuses_an_instruction_budget():
    from pykvm.devkvm import KvmMachine
    from pykvm.errors import InvalidConfiguration
    with KvmMachine() as m:
        vcpu = m.create_vm().create_vcpu()
        ex = _drive(vcpu)
        assert isinstance(ex, X.Io) and ex.port == 0x80 and bytes(ex.data) == b"\x5a"
        with pytest.raises(InvalidConfiguration, match="cannot bound a run"):
            vcpu.run(max_insns=1000)


class _Run:
    """A kvm_run-shaped object: what decode_kvm_run reads, nothing more."""

    def __init__(self, reason, **members):
        self.exit_reason = reason
        for k, v in members.items():
            setattr(self, k, type(k, (), v)())


def test_decoder_hands_back_what_it_does_not_know():
    run = _Run(X.KVM_EXIT_NMI)
    assert X.decode_kvm_run(run, None) == X.Unsupported(X.KVM_EXIT_NMI)
    assert isinstance(X.decode_kvm_run(run, None, lambda r: X.Nmi()), X.Nmi)


def test_decoder_clamps_mmio_and_internal_data_to_the_arrays():
    run = _Run(X.KVM_EXIT_MMIO, mmio=dict(phys_addr=0xFEE00000, data=bytes(range(8)),
                                          len=200, is_write=1))
    ex = X.decode_kvm_run(run, None)
    assert ex.data == bytearray(range(8)) and ex.len == 200 and ex.is_write
    run = _Run(X.KVM_EXIT_INTERNAL_ERROR, internal=dict(suberror=1, ndata=99,
                                                        data=tuple(range(16))))
    assert X.decode_kvm_run(run, None).data == tuple(range(16))
