"""One progress display for every command that runs longer than a few seconds: what is
running, done / total, the rate, the time spent and the time left (on stderr, so that a
--format csv/json on stdout stays clean; nothing is drawn when stderr is not a terminal)."""
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                           SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second in the task's unit (field `unit`; none for a task counting time)."""

    def render(self, task):
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit")
        if speed is None or unit is None:
            return Text("", style="progress.data.speed")
        if speed >= 10_000:
            s = f"{speed / 1000:,.0f}k"
        elif speed >= 10:
            s = f"{speed:,.0f}"
        else:
            s = f"{speed:.1f}"
        return Text(f"{s} {unit}/s", style="progress.data.speed")


def stderr_console():
    return Console(stderr=True)


def progress(console=None, columns=None):
    """A rich Progress: spinner, description, bar, done/total, rate, elapsed, time left
    (or `columns`), drawn on `console` (stderr by default) while it is a terminal."""
    console = console or stderr_console()
    columns = columns or (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                          MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(),
                          TextColumn("left"), TimeRemainingColumn())
    # Not a terminal: drawn nothing, rich would still end its live display with a newline
    # (a blank line before any one-line error that follows).
    return Progress(*columns, console=console, transient=True,
                    disable=not console.is_terminal)
