"""Notes a failing test leaves for the end of the run.

CI shows the head and the tail of a run's output; what a test printed while failing sits
in the middle and is cut. A test that has something to explain its failure (the log lines
of the gateway processes it ran) adds it here, and the summary prints it last.
"""

from __future__ import annotations

#: (test, note) pairs, printed after the run's summary.
NOTES: list[tuple[str, str]] = []


def leave(test: str, note: str, *, limit: int = 6000) -> None:
    """Keep ``note`` (its last ``limit`` characters) to print when the run ends."""
    NOTES.append((test, note[-limit:]))
