"""Progress on long work, one way everywhere: a tqdm bar on a terminal, plain lines in a log.

tqdm redraws its bar with carriage returns. In a log file or CI output those redraws pile up into
one unreadable line per run (a cloud model's evaluation wrote 650 of them into one line of
``make train-cloud``'s log). Off a terminal, ``progress_bar`` therefore writes the same bar as a
whole line at most every ``LOG_INTERVAL_S`` seconds, and the final state when it closes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO

from tqdm import tqdm

LOG_INTERVAL_S = 10.0  # a log gets a line this often, not one per redraw


class LineWriter:
    """tqdm's output as whole lines: each carriage-return redraw becomes one line of its own."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Iterable | None = None, *, progress: bool = True, stream: TextIO | None = None,
                 **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on stderr (or ``stream``): a bar on a terminal, a line every
    ``LOG_INTERVAL_S`` seconds elsewhere, nothing when ``progress`` is false."""
    stream = stream or sys.stderr
    if not progress:
        return tqdm(iterable, disable=True, **kwargs)
    if stream.isatty():
        return tqdm(iterable, file=stream, **kwargs)
    kwargs["mininterval"] = max(kwargs.get("mininterval", 0.0), LOG_INTERVAL_S)
    return tqdm(iterable, file=LineWriter(stream), ascii=True, dynamic_ncols=False, ncols=100, **kwargs)
