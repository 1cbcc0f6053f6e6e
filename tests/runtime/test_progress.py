"""edgefpga.progress: a bar on a terminal, whole lines in a log, nothing when progress is off."""

import io

from edgefpga.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drain(stream, progress: bool = True, **kwargs) -> str:
    for _ in progress_bar(range(50), progress=progress, stream=stream, desc="work", **kwargs):
        pass
    return stream.getvalue()


def test_a_log_gets_whole_lines_ending_with_the_final_count():
    text = drain(io.StringIO())
    lines = text.splitlines()
    assert "\r" not in text and lines, text
    assert lines[0].startswith("work:") and "0/50" in lines[0]
    assert "50/50" in lines[-1]
    assert len(lines) <= 3  # a line per LOG_INTERVAL_S, not one per item


def test_a_terminal_gets_the_redrawn_bar():
    text = drain(Terminal())
    assert "\r" in text and "50/50" in text


def test_no_progress_writes_nothing():
    assert drain(io.StringIO(), progress=False) == ""
