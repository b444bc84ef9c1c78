"""Work beyond one core: the same results from a Dask cluster as from this process, for
the checker spread over tasks (pykvm.swarm), the study and the sweep (pykvm.engine)."""
import csv
import pytest

from pykvm import check, engine, study, sweep, swarm
from pykvm.check import Step


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 single-threaded worker processes, shared by this module."""
    with engine.get("dask", workers=2) as e:
        yield e


def _summary(r):
    """Everything a result says but its time and where it ran (the number of tasks
    follows the workers: the frontier is cut in a few tasks per worker)."""
    return (r.verdict, r.violation, r.steps, r.events, r.exits, r.states, r.depth_done,
            r.walks, r.closed)


# ---- the engine ------------------------------------------------------------------------

def _square(x):
    return x * x


def _flag(x):
    return {"x": x, "hit": x in (3, 5)}


def test_local_engine_maps_in_order_and_stops_after_the_first_hit():
    e = engine.LocalEngine()
    assert e.map(_square, [1, 2, 3]) == [1, 4, 9]
    out = e.map(_flag, range(8), stop=lambda r: r["hit"])
    assert [r and r["x"] for r in out] == [0, 1, 2, 3, None, None, None, None]


def test_dask_engine_stops_where_the_local_one_does(cluster):
    assert cluster.workers == 2
    assert cluster.map(_square, [(3,), (4,)]) == [9, 16]
    out = cluster.map(_flag, range(8), stop=lambda r: r["hit"])
    assert [r and r["x"] for r in out] == [0, 1, 2, 3, None, None, None, None]


def test_unknown_engine_and_scheduler_without_dask_are_refused():
    with pytest.raises(Exception, match="unknown engine 'ray'"):
        engine.get("ray")
    with pytest.raises(Exception, match="needs the dask engine"):
        engine.get("local", scheduler="tcp://127.0.0.1:1")


# ---- the checker as tasks ----------------------------------------------------------------

def test_a_swarm_search_from_the_initial_state_is_the_plain_check():
    """A task of plain data gives what check.check() gives for the same seed: a worker's
    machine, built from the configuration and reused, explores exactly the same."""
    plain = check.check("vmx", params={"forget_host_tr_base": True}, bound=2, walks=50,
                        seed=7)
    config = {k: v for k, v in plain.config.items() if k != "run_budget"}
    spec = {"config": config, "seed": 7, "prefix": 0, "bound": 2, "walks": 50,
            "walk_len": 12, "max_states": 200_000, "seconds": None}
    for _ in range(2):           # the second time on the cached machine
        r = swarm.swarm_task(spec)
        assert (r["events"], r["exits"], r["states"], r["walks"]) == \
            (plain.events, plain.exits, plain.states, plain.walks)
        assert r["violation"] == plain.violation.__dict__
        assert [Step(*t) for t in r["steps"]] == plain.steps


@pytest.mark.parametrize("vcpus, bound, injections", [(1, 2, None), (2, 3, [])])
def test_level_split_search_sees_the_states_the_plain_search_sees(vcpus, bound, injections):
    """Breadth-first over tasks, deduplicated by hashes equal in every process: the same
    distinct states as the plain depth-first search to the same bound."""
    plain = check.check("vmx", vcpus=vcpus, bound=bound, walks=0, injections=injections)
    r = swarm.check("vmx", vcpus=vcpus, bound=bound, swarm=0, walks=0,
                    injections=injections)
    assert (r.verdict, r.states, r.depth_done) == ("pass", plain.states, bound)


def test_level_split_search_on_dask_equals_this_process(cluster):
    kw = dict(vcpus=2, bound=3, swarm=6, walks=60, seed=3, injections=["nmi"])
    here = swarm.check("vmx", **kw)
    there = swarm.check("vmx", engine=cluster, **kw)
    assert here.verdict == "pass" and here.states > 0 and here.walks == 60
    assert _summary(there) == _summary(here)


@pytest.mark.parametrize("params", [{"forget_host_tr_base": True}, {"uret_irqs_off": False},
                                    {"paranoid_entry_rdpid": True}])
def test_a_violation_found_on_dask_is_the_one_found_here(cluster, params):
    here = swarm.check("vmx", params=params, bound=3, swarm=4, walks=40)
    there = swarm.check("vmx", params=params, bound=3, swarm=4, walks=40, engine=cluster)
    assert here.verdict == "violation"
    assert _summary(there) == _summary(here)
    # The trace that came back is shrunk and replays to the same violation.
    v, _ = check.Checker(**there.config).replay(there.steps)
    assert (v.reg, v.obs) == (there.violation.reg, there.violation.obs)


def test_swarm_plan_is_diverse_and_fixed_by_its_seed():
    config = {"vendor": "vmx", "preset": None, "params": {}, "cpu_model": None, "cpus": 2,
              "vcpus": 2, "steps": None, "injections": None}
    a = swarm.swarm_plan(config, 16, seed=5, bound=3, walks=160)
    assert a == swarm.swarm_plan(config, 16, seed=5, bound=3, walks=160)
    assert a != swarm.swarm_plan(config, 16, seed=6, bound=3, walks=160)
    assert len({s["seed"] for s in a}) == 16 and sum(s["walks"] for s in a) == 160
    assert len({tuple(s["config"]["steps"]) for s in a}) > 1
    assert len({tuple(s["config"]["injections"]) for s in a}) > 1
    assert {s["prefix"] for s in a} > {0} and {s["bound"] for s in a} > {0}
    assert all("run" in s["config"]["steps"] for s in a)


def test_swarm_finds_a_bug_beyond_the_exhaustive_bound():
    """With no exhaustive part at all, the swarm's own searches find 7.3 (a disable IPI
    inside a run), shrunk to its one step."""
    r = swarm.check("svm", params={"uret_irqs_off": False}, bound=0, swarm=8, walks=400)
    assert r.verdict == "violation" and r.depth_done == 0
    assert r.violation.obs == "virtualization disabled"
    assert r.steps[-1].inject == "disable_ipi"


def test_closed_space_is_reported():
    """One vCPU with only KVM_RUN and no host events: every state within reach is seen
    after a few levels, and the search says the space is closed."""
    r = swarm.check("vmx", bound=12, swarm=0, walks=0, steps=["run"], injections=[])
    assert r.closed and r.depth_done == 12 and r.verdict == "pass"
    # A plain search deep enough to pass the closing level sees no more states.
    plain = check.check("vmx", bound=12, walks=0, steps=["run"], injections=[])
    assert plain.states == r.states


# ---- study and sweep -----------------------------------------------------------------------

def test_study_rows_on_dask_equal_this_process(cluster):
    kw = dict(vendors=["vmx", "svm"], presets=["upstream"], workloads=["pio", "overcommit"],
              iterations=3, verdict_fn=lambda r: f"ok {r.variant}")
    here = study.run_study(**kw)
    there = study.run_study(engine=cluster, **kw)
    assert [r.to_dict() for r in there] == [r.to_dict() for r in here]
    assert {r.verdict for r in here} == {"ok vmx:upstream", "ok svm:upstream"}


def test_sweep_plans_every_combination():
    vs = sweep.plan(["vmx", "svm"], ["upstream"], ["all"],
                    {"forget_lstar": ["0", "1"], "kvm_amd.vmsave_host_state": ["0", "1"]})
    vmx = [v for v in vs if v.vendor == "vmx"]
    svm = [v for v in vs if v.vendor == "svm"]
    assert len(vmx) == 3 * 2 and len(svm) == 2 * 2 * 2        # models x values
    assert {v.cpu_model for v in vmx} == {"skylake", "icelake", "skylake-noloadefer"}
    assert {dict(v.params)["forget_lstar"] for v in vmx} == {False, True}
    assert all("vmsave_host_state" not in dict(v.params) for v in vmx)
    with pytest.raises(Exception, match="no vendor of vmx has a parameter"):
        sweep.plan(["vmx"], None, None, {"kvm_amd.vmsave_host_state": ["0"]})
    with pytest.raises(Exception, match="no vendor of svm has CPU model 'icelake'"):
        sweep.plan(["svm"], None, ["icelake"], {})


def test_sweep_writes_parquet_and_csv_with_verdicts(cluster, tmp_path):
    import pyarrow.parquet as pq
    vs = sweep.plan(["vmx"], ["upstream"], None, {"forget_lstar": ["0", "1"]})
    rows = sweep.run(vs, workloads=["pio"], iterations=3, engine=cluster)
    assert [r.to_dict() for r in rows] == \
        [r.to_dict() for r in sweep.run(vs, workloads=["pio"], iterations=3)]
    paths = sweep.write(rows, tmp_path)
    t = pq.read_table(paths["parquet"])
    got = {(d["param.forget_lstar"], d["verdict"].split(" (")[0])
           for d in t.select(["param.forget_lstar", "verdict"]).to_pylist()}
    assert got == {(False, "pass"), (True, "LEAK LSTAR")}
    assert str(t.schema.field("cycles").type) == "double"
    assert t.column("cycles").to_pylist() == [r.cycles for r in rows]
    with open(paths["csv"]) as f:
        data = list(csv.DictReader(f))
    assert [d["variant"] for d in data] == [r.variant for r in rows]
    assert list(data[0])[:len(study.csv_columns())] == study.csv_columns()


def test_sweep_command(tmp_path):
    from pykvm.cli import main
    out = tmp_path / "s"
    assert main(["sweep", "--vendor", "svm", "--preset", "upstream", "--workload", "pio",
                 "--iterations", "2", "--param", "forget_tsc_aux=0,1", "--out",
                 str(out)]) == 1
    assert (out / "sweep.parquet").exists() and (out / "sweep.csv").exists()
    assert main(["sweep", "--vendor", "svm", "--param", "forget_tsc_aux", "--out",
                 str(out)]) == 2
