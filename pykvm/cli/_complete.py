"""Completion hints on argparse arguments, read by shtab when `pykvm completion SHELL`
prints the completion script (arguments with `choices` complete from those)."""
import shtab


def file(action):
    """This argument completes to file names."""
    action.complete = shtab.FILE
    return action


def directory(action):
    """This argument completes to directory names."""
    action.complete = shtab.DIRECTORY
    return action
