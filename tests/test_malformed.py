"""Malformed input, drawn by hypothesis, for the API and the command line: register and
MSR values of any size and type, CPUID entries, module parameter strings, replay files
truncated or with any value replaced. Every time: a clear pykvm error (or the input is
taken, and then it reads back as given), never another exception, never a crash, never a
value silently cut down, and a refused ioctl changes nothing."""
import copy
import dataclasses
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import pykvm
from pykvm import check, guest
from pykvm.cli import main
from pykvm.devkvm import CpuidEntry
from pykvm.errors import PykvmError

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# Anything a caller might pass where a 64-bit value belongs.
values = st.one_of(st.integers(), st.integers(-2**70, 2**70),
                   st.sampled_from([0, 2**64 - 1, 2**64, -1, -(2**63), -(2**63) - 1]),
                   st.floats(allow_nan=True), st.none(), st.text(max_size=4), st.booleans())


@guest.program
def IMAGE(a):
    a.sync(1)
    a.done()


@pytest.fixture(scope="module", params=["vmx", "svm", "kvm"])
def vcpu(request):
    if request.param == "kvm":
        from pykvm.devkvm import KvmMachine
        ok, why = KvmMachine.available()
        if not ok:
            pytest.skip(f"needs /dev/kvm: {why}")
        m = KvmMachine()
    else:
        m = pykvm.Machine(cpus=1, vendor=request.param)
    v = m.create_vm().create_vcpu()
    v.load(IMAGE)
    yield v
    assert request.param == "kvm" or m.host_bugs == 0
    m.close()


def _fits(v):
    return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**64


@SETTINGS
@given(field=st.sampled_from(["rax", "rsp", "r15", "rip", "rflags"]), value=values)
def test_register_values(vcpu, field, value):
    before = vcpu.get_regs()
    try:
        vcpu.set_regs(dataclasses.replace(before, **{field: value}))
    except PykvmError:
        assert not _fits(value)
        assert vcpu.get_regs() == before
        return
    assert _fits(value)
    got = getattr(vcpu.get_regs(), field)
    if field == "rflags":
        assert got & 2          # bit 1 is always set; the host KVM may drop others (VM)
    else:
        assert got == value % 2**64
    vcpu.set_regs(before)


@SETTINGS
@given(index=st.one_of(st.integers(-2**40, 2**40), st.sampled_from(
           [0xC0000102, 0xC0000100, 0xC0000082, 0x277, 0x1B, 0x48, 0xC0000080, 0x474F4F00])),
       value=values)
def test_msr_values_and_indices(vcpu, index, value):
    ok_index = isinstance(index, int) and 0 <= index < 2**32
    before = vcpu.get_msrs([index]) if ok_index else None
    try:
        count = vcpu.set_msrs({index: value})
    except PykvmError as e:
        assert not ok_index or not _fits(value), e
        if ok_index:
            assert vcpu.get_msrs([index]) == before
        return
    assert ok_index and _fits(value)
    if count == 0:
        assert vcpu.get_msrs([index]) == before          # refused: unchanged
    elif before[0] == 1:
        vcpu.set_msrs(before[1])


@SETTINGS
@given(data=st.data())
def test_sregs_fields(vcpu, data):
    before = vcpu.get_sregs()
    seg = data.draw(st.sampled_from(["cs", "ds", "ss", "tr"]))
    seg_field = data.draw(st.sampled_from(["base", "limit", "selector", "type", "present",
                                           "l", "db", "unusable"]))
    top = data.draw(st.sampled_from(["cr0", "cr3", "cr4", "efer", "apic_base"]))
    s = dataclasses.replace(before, **{
        seg: dataclasses.replace(getattr(before, seg), **{seg_field: data.draw(values)}),
        top: data.draw(values)})
    try:
        vcpu.set_sregs(s)
    except PykvmError:
        assert vcpu.get_sregs() == before                # refused whole
        return
    vcpu.set_sregs(before)


@SETTINGS
@given(entries=st.lists(st.builds(CpuidEntry, function=values, eax=values), max_size=4))
def test_cpuid_entries(entries):
    v = pykvm.Machine(cpus=1).create_vm().create_vcpu()
    try:
        v.set_cpuid(entries)
    except PykvmError:
        return
    assert all(isinstance(x, int) and 0 <= x < 2**32 for e in entries for x in (e.function, e.eax))


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=24))
@example(text="0\r0.")          # a module name with a CR: printed raw, it split the line
@example(text="nosuch.x=1")      # refused inside the progress display: no blank line first
def test_param_strings_on_the_command_line(text, capsys):
    capsys.readouterr()                                  # each example reads its own
    code = main(["check", "--param", text, "--bound", "0", "--walks", "1"])
    cap = capsys.readouterr()
    assert code in (0, 1, 2)
    assert "Traceback" not in cap.err
    if code == 2:
        assert len(cap.err.splitlines()) == 1


# ---- replay files ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved():
    r = check.check("vmx", params={"forget_lstar": True}, bound=1, walks=0)
    assert r.violation is not None
    return r.to_json()


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=8)),
    lambda kids: st.one_of(st.lists(kids, max_size=3),
                           st.dictionaries(st.text(max_size=5), kids, max_size=3)),
    max_leaves=6)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_altered_replay_files(saved, data):
    doc = copy.deepcopy(saved)
    path = data.draw(st.sampled_from(list(_paths(doc))[1:]))
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = data.draw(json_values)
    try:
        r = check.replay(doc)
    except PykvmError:
        return
    assert r.replayed and r.verdict in ("pass", "violation")


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(0, 10000))
def test_truncated_replay_files(saved, tmp_path_factory, cut):
    text = json.dumps(saved)
    path = tmp_path_factory.mktemp("t") / "cut.json"
    path.write_text(text[:cut])
    try:
        r = check.replay(str(path))
    except PykvmError:
        assert cut < len(text)
        return
    assert cut >= len(text) and r.reproduced()
