"""Guest-visible MSR conformance on every backend, side by side.

Suites (`pykvm conform --suite NAME`):

- ``table``: the docs/conformance.md table (19 cases; the default).
- ``msr``: kvm-unit-tests x86/msr.c, in its two unittests.cfg configurations.
- ``msrs``: the KVM selftests' x86/msrs_test.c, through KVM_SET_MSRS and through ONE_REG.
- ``userspace-msr``: the KVM selftests' x86/userspace_msr_exit_test.c.

Each case is our own port of one upstream check and names it (`Case.upstream`); it
answers pass, fail (with what it observed), or unsupported (with the reason: a feature
the backend's KVM lacks, or an upstream check that needs a module parameter) -- never
a silent pass. A fresh VM per case keeps the cases independent.

    from pykvm import conform
    backends = conform.default_backends(include_kvm=False)
    table = conform.run_all(backends, conform.SUITES["msrs"])
"""
from . import kut_msr, selftest_msrs, selftest_user_msr, table
from .common import (A64, GP, NC, Case, CaseFailed, Features, KvmBackend, Result,
                     SimBackend, Unsupported)
from .host_findings import HOST_FINDINGS, Finding, classify, host_finding
from .table import ABSENT_MSR, MSR

CASES = table.CASES

SUITES = {
    "table": table.CASES,
    "msr": kut_msr.CASES,
    "msrs": selftest_msrs.CASES,
    "userspace-msr": selftest_user_msr.CASES,
}

__all__ = ["A64", "GP", "NC", "MSR", "ABSENT_MSR", "Case", "CaseFailed", "Features",
           "Result", "Unsupported", "SimBackend", "KvmBackend", "CASES", "SUITES",
           "HOST_FINDINGS", "Finding", "classify", "host_finding", "run_case", "run_all",
           "default_backends", "suite_cases", "summary"]


def suite_cases(name):
    """The cases of a suite name, or of every suite for "all"."""
    if name == "all":
        return [c for cases in SUITES.values() for c in cases]
    if name not in SUITES:
        raise KeyError(f"no suite {name!r}; suites: {', '.join(SUITES)}, all")
    return SUITES[name]


def run_case(case, backend):
    try:
        r = case.run(backend)
    except Unsupported as e:
        return Result("unsupported", str(e))
    except CaseFailed as e:
        return Result("fail", str(e))
    except Exception as e:  # a backend's failure is a result, not a crash of the report
        return Result("fail", f"{type(e).__name__}: {e}")
    return r if r is not None else Result("pass")


def default_backends(include_kvm=True):
    out = [SimBackend("vmx"), SimBackend("svm")]
    if include_kvm:
        from ..devkvm import KvmMachine
        if KvmMachine.available()[0]:
            out.append(KvmBackend())
    return out


def run_all(backends, cases=CASES, progress=None):
    """{case id: {backend name: Result}}."""
    results = {}
    for case in cases:
        results[case.id] = {b.name: run_case(case, b) for b in backends}
        if progress:
            progress(case)
    return results


def summary(results, backend_name):
    """(passed, applicable) for one backend in run_all's results: a case is applicable
    unless the backend answered unsupported."""
    rows = [row[backend_name] for row in results.values()]
    applicable = [r for r in rows if r.status != "unsupported"]
    return sum(r.status == "pass" for r in applicable), len(applicable)
