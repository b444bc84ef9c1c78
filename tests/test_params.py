"""Module parameters are parsed the way the kernel parses them (kstrtobool, kstrtouint),
by one parser that the API, the command line and the C loader share."""
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pykvm
from pykvm import params as P
from pykvm.cli import main

TRUE = ["1", "y", "Y", "yes", "t", "true", "True", "on", "ON", "On", None]
FALSE = ["0", "n", "N", "no", "f", "false", "False", "off", "OFF", "0x0"]
REFUSED = ["banana", "-1", "2", "", " 1", "o", "oz", "+1"]


@pytest.mark.parametrize("text", TRUE)
def test_bool_true_spellings(text):
    assert P.resolve("vmx", {"forget_lstar": text}) == {"forget_lstar": True}


@pytest.mark.parametrize("text", FALSE)
def test_bool_false_spellings(text):
    # kstrtobool looks at the first character only: "0x0" is false, as on a real host.
    assert P.resolve("vmx", {"forget_lstar": text}) == {"forget_lstar": False}


@pytest.mark.parametrize("text", REFUSED)
def test_bool_refusals_name_the_value(text):
    with pytest.raises(pykvm.InvalidConfiguration, match=re.escape(f"kvm.forget_lstar: '{text}'")):
        P.resolve("vmx", {"forget_lstar": text})


def test_python_values():
    assert P.resolve("svm", {"forget_lstar": 0, "kvm_amd.vmsave_host_state": True}) == \
        {"forget_lstar": False, "vmsave_host_state": True}
    for bad in (2, -1, 1.0, "x", [1]):
        with pytest.raises(pykvm.InvalidConfiguration, match="forget_lstar"):
            P.resolve("svm", {"forget_lstar": bad})


def test_machine_string_zero_is_off():
    m = pykvm.Machine(vendor="vmx", params={"forget_lstar": "0"})
    assert m.params["forget_lstar"] is False


def test_module_prefix_is_checked_against_the_vendor():
    assert P.resolve("vmx", {"kvm_intel.forget_spec_ctrl": "1"}) == {"forget_spec_ctrl": True}
    with pytest.raises(pykvm.InvalidConfiguration, match="another vendor's module"):
        P.resolve("vmx", {"kvm_amd.forget_spec_ctrl": "1"})
    with pytest.raises(pykvm.InvalidConfiguration, match="no parameter 'kvm.forget_spec_ctrl'"):
        P.resolve("vmx", {"kvm.forget_spec_ctrl": "1"})     # kvm_intel's, not kvm's
    with pytest.raises(pykvm.InvalidConfiguration, match="not 'nosuch'"):
        P.resolve("vmx", {"nosuch.x": "1"})
    assert P.resolve("svm", {"kernel.vmm_32bit_gs": "y", "kvm.forget_star": "n"}) == \
        {"vmm_32bit_gs": True, "forget_star": False}


def test_names_are_unique_across_a_vendors_modules():
    for vendor in ("vmx", "svm"):
        seen = {}
        for m in ("kernel", "kvm", vendor):
            for p in P.module_params(m):
                assert p.name not in seen, (p.qualified, seen.get(p.name))
                seen[p.name] = p.qualified


def test_uint_parsing_follows_kstrtouint():
    p = P.Param("kvm", "halt_poll_ns", "uint", 200000, "")
    assert p.parse("10") == 10 and p.parse("0x10") == 16 and p.parse("010") == 8
    assert p.parse("+7") == 7 and p.parse("4294967295") == 2**32 - 1 and p.parse("5\n") == 5
    assert p.parse(42) == 42
    for bad, why in (("4294967296", "does not fit"), ("-1", "not an unsigned int"),
                     ("08", "not an unsigned int"), ("1e3", "not an unsigned int"),
                     ("", "not an unsigned int"), (None, "needs a value")):
        with pytest.raises(pykvm.InvalidConfiguration, match=why):
            p.parse(bad)
    for bad in (True, -1, 2**32, 1.5):
        with pytest.raises(pykvm.InvalidConfiguration):
            p.parse(bad)


def test_the_c_loader_refuses_what_python_refuses():
    # The string the C side takes goes through the same parser.
    from pykvm._lib import ffi, lib
    m = lib.pk_machine_create(1, pykvm.vendors.get_vendor("vmx").cpu_models["skylake"].to_c(ffi))
    try:
        assert lib.pk_kvm_load(m, b"vmx", b"kvm_amd.forget_spec_ctrl=1") < 0
        assert b"kvm_amd" in ffi.string(lib.pk_last_error())
    finally:
        lib.pk_machine_destroy(m)


@given(st.text(max_size=12))
def test_any_value_is_parsed_or_refused_clearly(text):
    try:
        v = P.resolve("vmx", {"forget_lstar": text})["forget_lstar"]
    except pykvm.InvalidConfiguration as e:
        assert "kvm.forget_lstar" in str(e)
    else:
        assert v is (text[:1] in "yYtT1" and text[:1] != "" or text[:2].lower() == "on")


@pytest.mark.parametrize("value", ["off", "0x0", "banana", "-1", "2"])
def test_cli_param_values(value, capsys, tmp_path):
    argv = ["check", "--vendor", "vmx", "--param", f"forget_lstar={value}", "--bound", "1",
            "--walks", "0", "--save", str(tmp_path / "v.json")]
    status = main(argv)
    out, err = capsys.readouterr()
    if value in ("off", "0x0"):
        assert status == 0 and "forget_lstar=0" in out
    else:
        assert status == 2 and f"'{value}'" in err and "Traceback" not in err
