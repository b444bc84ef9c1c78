import pytest

import pykvm

VENDORS = ["vmx", "svm"]


@pytest.fixture(params=VENDORS)
def vendor(request):
    return request.param


@pytest.fixture
def machine(vendor):
    return pykvm.Machine(cpus=2, vendor=vendor)
