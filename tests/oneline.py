"""What a newcomer's mistake must print: one line, no traceback."""

from __future__ import annotations


def one_line(stderr: str) -> str:
    """The only line a failed command printed; fails if there was more, or a traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]
