"""What superhf prints with: a console that never cuts numbers, and one progress bar.

rich sizes a console to the terminal, and to 80 columns when the output is a file, a pipe or
CI, where it cuts table cells to "-0.1…". `make_console` keeps the terminal's width and uses
`CONSOLE_WIDTH` otherwise.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

CONSOLE_WIDTH = 160
"""Columns when the output is not a terminal: wide enough for `superhf eval`'s table."""


def make_console(stderr: bool = True) -> Console:
    """A console on stderr (or stdout): the terminal's width, or `CONSOLE_WIDTH` off a TTY."""
    stream = sys.stderr if stderr else sys.stdout
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    return Console(stderr=stderr, width=None if is_tty else CONSOLE_WIDTH)


def progress_bar(console: Console, transient: bool = False) -> Progress:
    """The progress bar of training, evaluation and reward training: what, bar, n/N, time."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )
