"""The search's reductions (issue 12): each finds every named bug variant the plain
search finds, at the same depth, and sees the same states with fewer steps; the search
split over tasks (pykvm.swarm) stays the single-process one."""
import pytest

from pykvm import check, swarm
from pykvm.cli import main
from pykvm.errors import InvalidConfiguration

from test_check import BOUND, VARIANTS

ALL = check.DEFAULT_REDUCE


def _explore(reduce, vendor="vmx", bound=BOUND, params=None, cpu_model=None, **kw):
    c = check.Checker(vendor, params=params, cpu_model=cpu_model, **kw)
    v, steps, events, states, done, _ = c.explore(bound=bound, walks=0, reduce=reduce,
                                                  max_states=2_000_000)
    return c, v, steps, events, states, done


@pytest.mark.parametrize("vendor, params, cpu_model, reg, obs, length", VARIANTS,
                         ids=[f"{v}-{'+'.join(p)}" for v, p, *_ in VARIANTS])
def test_reductions_find_every_variant_the_plain_search_finds(vendor, params, cpu_model,
                                                               reg, obs, length):
    _, plain, plain_steps, *_ = _explore((), vendor, params=params, cpu_model=cpu_model)
    c, v, steps, *_ = _explore(ALL, vendor, params=params, cpu_model=cpu_model)
    assert plain is not None and v is not None
    # Both searches finish every shorter sequence first: a violation as short.
    assert len(steps) == len(plain_steps)
    if len(steps) == 1:
        # Level 0 of the breadth-first search is the deepening search's first bound.
        assert (v.reg, v.obs, steps) == (plain.reg, plain.obs, plain_steps)
    again, _ = c.replay(steps)
    assert again is not None and (again.reg, again.obs) == (v.reg, v.obs)


@pytest.mark.parametrize("vendor, vcpus, bound, injections", [
    ("vmx", 2, 4, []), ("svm", 1, 6, []), ("vmx", 1, 2, None)])
def test_revisit_sees_the_states_the_plain_search_sees_with_fewer_steps(
        vendor, vcpus, bound, injections):
    *_, p_events, p_states, p_done = _explore((), vendor, bound, vcpus=vcpus,
                                              injections=injections)
    c, v, _, events, states, done = _explore(("revisit",), vendor, bound, vcpus=vcpus,
                                             injections=injections)
    assert v is None and (states, done) == (p_states, p_done) == (states, bound)
    # Deepening tries every sequence shorter than the bound again once per bound.
    assert events < p_events
    # Each state is reached again by replaying its path, from the snapshot it shares
    # with the state expanded before it: far fewer steps than the search tries.
    assert c.last_replayed < events // 4


def test_a_closed_space_is_explored_to_every_depth():
    """KVM_SET_MSRS flips every register, twice gives the first values: a small closed
    space. The breadth-first search stops at the level that brings no new state and says
    the space is closed; the plain search to a far bound sees the same states."""
    kw = dict(steps=["set_msrs", "get_msrs", "migrate"], injections=[])
    c, v, _, events, states, done = _explore(("revisit",), "vmx", 40, **kw)
    assert v is None and c.last_closed and done == 40
    cp, *_, p_events, p_states, _ = _explore((), "vmx", 8, **kw)
    assert not cp.last_closed and p_states == states and events < p_events


def test_level_split_search_is_the_breadth_first_one():
    """pykvm.swarm's exhaustive part and the single-process breadth-first search try the
    same steps in the same order: the same counters, and the same first violation."""
    kw = dict(vcpus=2, bound=4, walks=0, injections=[])
    here = check.check("vmx", **kw)
    split = swarm.check("vmx", swarm=0, **kw)
    assert (here.events, here.states, here.depth_done, here.closed) == \
        (split.events, split.states, split.depth_done, split.closed)
    p = {"forget_host_tr_base": True}
    here = check.check("vmx", params=p, bound=3, walks=0)
    split = swarm.check("vmx", params=p, bound=3, swarm=0, walks=0)
    assert here.verdict == split.verdict == "violation"
    assert (here.violation, here.steps, here.events) == \
        (split.violation, split.steps, split.events)


@pytest.mark.parametrize("vendor, params, cpu_model, reg, obs, length",
                         [v for v in VARIANTS if v[-1] > 1],
                         ids=[f"{v}-{'+'.join(p)}" for v, p, *_, n in VARIANTS if n > 1])
@pytest.mark.parametrize("vcpus", [1, 2])
def test_sleep_sets_find_every_deeper_variant_as_short(vendor, params, cpu_model, reg, obs,
                                                       length, vcpus):
    """Sleep sets leave steps out from depth 2 on: the variants that take 2 or more
    steps are found by the breadth-first search with and without them, as short, with
    1 vCPU and with 2 (where steps of the other vCPU commute)."""
    _, plain, plain_steps, *_ = _explore(("revisit",), vendor, params=params,
                                         cpu_model=cpu_model, vcpus=vcpus)
    c, v, steps, *_ = _explore(("revisit", "sleep"), vendor, params=params,
                               cpu_model=cpu_model, vcpus=vcpus)
    assert plain is not None and v is not None
    assert len(steps) == len(plain_steps) <= length
    again, _ = c.replay(steps)
    assert again is not None and (again.reg, again.obs) == (v.reg, v.obs)


@pytest.mark.parametrize("vendor, vcpus, bound, injections", [
    ("vmx", 2, 4, []), ("svm", 2, 4, []), ("svm", 2, 3, ["nmi", "preempt_kthread"]),
    ("vmx", 1, 3, ["nmi", "preempt", "softirq"])])
def test_sleep_sets_see_the_same_states_with_fewer_steps(vendor, vcpus, bound, injections):
    """The reachable states within the bound are the breadth-first search's (and so the
    plain search's), every level done, in fewer steps; and every step left out, tried
    both ways (verify), gives the state the other order gives: the independence the
    reduction relies on held for each."""
    kw = dict(vcpus=vcpus, injections=injections)
    *_, r_events, r_states, r_done = _explore(("revisit",), vendor, bound, **kw)
    c, v, _, events, states, done = _explore(("revisit", "sleep"), vendor, bound, **kw)
    assert v is None and (states, done) == (r_states, r_done) == (states, bound)
    assert c.last_slept > 0 and events == r_events - c.last_slept
    cv, v, _, v_events, v_states, _ = _explore(("revisit", "sleep", "verify"), vendor, bound,
                                               **kw)
    assert (v_events, v_states) == (events, states)
    assert cv.last_sleep_checked == c.last_slept and cv.last_sleep_mismatch == 0


def test_sleep_sets_and_the_plain_search_see_the_same_states():
    *_, p_states, p_done = _explore((), "vmx", 3, vcpus=2, injections=["preempt"])
    *_, states, done = _explore(("revisit", "sleep"), "vmx", 3, vcpus=2, injections=["preempt"])
    assert (states, done) == (p_states, p_done) == (states, 3)


def test_sleep_sets_need_the_breadth_first_search():
    with pytest.raises(InvalidConfiguration, match="sleep sets need the breadth-first"):
        check.check("vmx", bound=1, walks=0, reduce=("sleep",))
    with pytest.raises(InvalidConfiguration, match="verify checks the sleep sets"):
        check.check("vmx", bound=1, walks=0, reduce=("revisit", "verify"))


def test_unknown_reduction_is_refused():
    with pytest.raises(InvalidConfiguration, match="unknown reduction 'symmetry'"):
        check.check("vmx", bound=1, walks=0, reduce=("symmetry",))


def test_cli_reduce_switch(capsys, tmp_path):
    for how in ("none", "revisit"):
        assert main(["check", "--vcpus", "2", "--bound", "3", "--walks", "0", "--reduce", how,
                     "--param", "kvm.forget_lstar=1", "--save",
                     str(tmp_path / f"{how}.json")]) == 1
        assert "LSTAR wrong at host user mode" in capsys.readouterr().out
    assert main(["check", "--bound", "2", "--walks", "0", "--reduce", "revisit,sleep"]) == 0
    out = capsys.readouterr().out
    assert "pass" in out and "sleep sets:" in out
    assert main(["check", "--bound", "1", "--reduce", "sleep"]) == 2
    assert "sleep sets need the breadth-first search" in capsys.readouterr().err
    assert main(["check", "--reduce", "symmetry"]) == 2
    assert "unknown reduction symmetry" in capsys.readouterr().err
    assert main(["check", "--reduce", "none", "--swarm", "2"]) == 2
    assert "--reduce is for the search in this process" in capsys.readouterr().err
