"""Argument types that refuse what the library would refuse, at parse time: one line from
argparse ("argument --bound: must be an integer 0..64, got '100'") and exit 2, never a
traceback from deep inside."""
import argparse
import math


def int_range(lo, hi):
    """An int in lo..hi, written in decimal or with a 0x prefix ('1e23' is not an int)."""
    def parse(text):
        try:
            v = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer {lo}..{hi}, got {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer {lo}..{hi}, got {text!r}")
        return v
    parse.__name__ = f"integer {lo}..{hi}"
    return parse


def positive_seconds(text):
    """A finite number of seconds > 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return v
