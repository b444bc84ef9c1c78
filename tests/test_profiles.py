"""Cost profiles: every figure graded and sourced (COSTS.md), names checked, files loadable
by name or path, and the prices the machine charges are the profile's."""
import textwrap

import pytest

import pykvm
from pykvm import profiles as P
from pykvm._lib import MSR_SLOTS, OPS
from pykvm.vendors import get_vendor


@pytest.fixture(params=P.list_profiles())
def profile(request):
    return P.load_profile(request.param)


def _write(tmp_path, body, name="mine.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


HEAD = """
    [profile]
    name = "mine"
    vendor = "intel"
"""


def test_builtin_profiles_exist():
    assert {"skylake-sp", "epyc-zen"} <= set(P.list_profiles())
    assert P.load_profile(P.default_profile("vmx")).vendor == "intel"
    assert P.load_profile(P.default_profile("svm")).vendor == "amd"


def test_every_figure_has_grade_source_and_reasoning(profile):
    for e in [*profile.entries.values(), *profile.checks.values()]:
        assert e.grade in P.GRADES, e.key
        assert e.source.strip(), e.key
        if e.grade in ("estimate", "derived"):
            assert e.note.strip(), f"{e.key}: a {e.grade} figure says how it was obtained"
        for b in e.basis:
            assert b in profile.entries, f"{e.key}: basis {b}"


def test_builtin_profiles_price_every_operation(profile):
    assert profile.missing_ops() == []
    assert set(profile.costs["op"]) == set(OPS)


def test_builtin_profile_cpu_model_belongs_to_its_vendor(profile):
    vendor = "vmx" if profile.vendor == "intel" else "svm"
    assert profile.cpu_model in get_vendor(vendor).cpu_models


def test_published_figures_are_used_with_their_grades():
    """The COSTS.md figures, where they exist; splits sum back to the measurement."""
    sky = P.load_profile("skylake-sp")
    e = sky.entries
    assert (e["wrmsr.SPEC_CTRL"].cycles, e["wrmsr.SPEC_CTRL"].grade) == (495, "derived")
    assert (e["op.RDMSR"].cycles, e["op.RDMSR"].grade) == (250, "measured")
    assert (e["op.IBPB"].cycles, e["op.IBPB"].grade) == (1500, "claimed")
    assert (e["op.LTR"].cycles, e["op.LTR"].grade) == (200, "claimed")
    assert e["wrmsr.EFER"].grade == "claimed"
    assert e["op.VMRESUME"].cycles + e["op.VMEXIT"].cycles == \
        sky.checks["check.vmx_round_trip_hw"].cycles == 676
    zen = P.load_profile("epyc-zen")
    z = zen.entries
    assert (z["op.VMSAVE"].cycles, z["op.VMSAVE"].grade) == (150, "claimed")
    assert 1344 <= z["op.VMRUN"].cycles + z["op.VMEXIT"].cycles + z["op.VMLOAD"].cycles <= 1376
    # The WRGSBASE-vs-VMLOAD comparison is a check, not an input.
    assert "check.vmload_minus_wrgsbase_after_vmexit" in zen.checks
    assert "op.VMLOAD" not in z["op.WRGSBASE"].basis


def test_estimates_include_figures_derived_from_estimates():
    zen = P.load_profile("epyc-zen")
    est = {e.key for e in zen.estimates()}
    assert "op.VMLOAD" in est                 # an estimate
    assert "op.VMRUN" in est                  # derived, but from the VMLOAD estimate
    assert "op.VMSAVE" not in est             # claimed
    sky = P.load_profile("skylake-sp")
    est = {e.key for e in sky.estimates()}
    assert {"op.WRMSR", "op.VMREAD", "op.VMLAUNCH"} <= est
    assert not est & {"op.VMRESUME", "op.VMEXIT", "op.RDMSR", "wrmsr.SPEC_CTRL", "op.VMRUN"}


def test_machine_charges_the_profile_and_attribution_adds_up():
    prof = P.load_profile("skylake-sp")
    m = pykvm.Machine(cpus=1, vendor="vmx", cpu_model=prof.cpu_model, profile=prof.costs)
    vcpu = m.create_vm().create_vcpu()
    vcpu.load(pykvm.guest.program(lambda a: (a.sync(), a.done())))
    m.reset_costs()                 # loading the module ran before the profile was set
    vcpu.run()
    for path, c in m.costs().items():
        assert sum(prof.attribute(c).values()) == c["cycles"], path
    assert prof.pricing_entry("WRMSR", "SPEC_CTRL").key == "wrmsr.SPEC_CTRL"
    assert prof.pricing_entry("WRMSR", "STAR").key == "op.WRMSR"
    assert prof.pricing_entry("WRMSR", "other").key == "op.WRMSR"


def test_user_profile_by_path(tmp_path):
    path = _write(tmp_path, HEAD + """
        [op.WRMSR]
        cycles = 123
        grade = "measured"
        source = "my lab"

        [wrmsr.STAR]
        cycles = 77
        grade = "estimate"
        source = "me"
        note = "guess"
        basis = ["op.WRMSR"]
    """)
    p = P.load_profile(path)
    assert p.costs == {"op": {"WRMSR": 123}, "rdmsr": {}, "wrmsr": {"STAR": 77}}
    assert [e.key for e in p.estimates()] == ["wrmsr.STAR"]
    assert "RDMSR" in p.missing_ops()
    pykvm.Machine(cpus=1, profile=p.costs)          # the machine takes it as is
    assert P.load_profile(p) is p


@pytest.mark.parametrize("body, match", [
    ("[op.WRMSRX]\ncycles = 1\ngrade = 'spec'\nsource = 's'\n",
     r"mine\.toml: \[op\.WRMSRX\]: unknown operation 'WRMSRX'"),
    ("[wrmsr.LSTARR]\ncycles = 1\ngrade = 'spec'\nsource = 's'\n",
     r"mine\.toml: \[wrmsr\.LSTARR\]: unknown MSR slot 'LSTARR'"),
    ("[rdmsr.NOPE]\ncycles = 1\ngrade = 'spec'\nsource = 's'\n",
     r"\[rdmsr\.NOPE\]: unknown MSR slot"),
    ("[op.WRMSR]\ncycles = 1\nsource = 's'\n", r"\[op\.WRMSR\]: grade must be one of"),
    ("[op.WRMSR]\ncycles = 1\ngrade = 'guess'\nsource = 's'\n", r"grade must be one of"),
    ("[op.WRMSR]\ncycles = 1\ngrade = 'measured'\n", r"\[op\.WRMSR\]: every figure needs a source"),
    ("[op.WRMSR]\ncycles = 1\ngrade = 'estimate'\nsource = 's'\n",
     r"\[op\.WRMSR\]: estimate figures need a note"),
    ("[op.WRMSR]\ncycles = -1\ngrade = 'spec'\nsource = 's'\n", r"cycles must be an integer"),
    ("[op.WRMSR]\ncycles = 1.5\ngrade = 'spec'\nsource = 's'\n", r"cycles must be an integer"),
    ("[op.WRMSR]\ncycles = 1\ngrade = 'spec'\nsource = 's'\ncolour = 'red'\n",
     r"\[op\.WRMSR\]: unknown field\(s\) colour"),
    ("[op.WRMSR]\ncycles = 1\ngrade = 'spec'\nsource = 's'\nbasis = ['op.RDMSR']\n",
     r"\[op\.WRMSR\]: basis 'op\.RDMSR' is not an entry"),
    ("[wrmsr.STAR]\ncycles = 0\ngrade = 'spec'\nsource = 's'\n", r"per-MSR figure of 0"),
    ("[opp.WRMSR]\ncycles = 1\n", r"unknown table\(s\) opp"),
])
def test_bad_profiles_name_the_file_and_key(tmp_path, body, match):
    path = _write(tmp_path, HEAD + body)
    with pytest.raises(P.ProfileError, match=match):
        P.load_profile(path)


def test_bad_profile_files(tmp_path):
    with pytest.raises(P.ProfileError, match="no profile 'pentium-pro'; built-in: "):
        P.load_profile("pentium-pro")
    with pytest.raises(P.ProfileError, match="does not exist"):
        P.load_profile(str(tmp_path / "missing.toml"))
    with pytest.raises(P.ProfileError, match="not valid TOML"):
        P.load_profile(_write(tmp_path, "[profile\nname="))
    with pytest.raises(P.ProfileError, match=r"missing \[profile\]"):
        P.load_profile(_write(tmp_path, "[op.WRMSR]\ncycles = 1\n"))
    with pytest.raises(P.ProfileError, match="vendor must be 'intel' or 'amd'"):
        P.load_profile(_write(tmp_path, "[profile]\nname = 'x'\nvendor = 'via'\n"))
    # ProfileError is an InvalidConfiguration (and a ValueError): either can be caught.
    assert issubclass(P.ProfileError, pykvm.InvalidConfiguration)
    assert issubclass(P.ProfileError, ValueError)


def test_msr_slot_names_are_the_machines():
    """Profiles name MSRs as the machine's slots do; a rename in C shows up here."""
    names = {n for n, _ in MSR_SLOTS}
    for name in P.list_profiles():
        p = P.load_profile(name)
        for e in p.entries.values():
            if e.table in ("rdmsr", "wrmsr"):
                assert e.name in names
