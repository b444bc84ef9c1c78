"""`python -m pykvm.cli` is the `pykvm` command."""
from . import entry

entry()
