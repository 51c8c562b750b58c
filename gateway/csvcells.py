"""CSV for spreadsheets, without formula injection.

A spreadsheet opening a CSV runs a cell that begins with ``=``, ``+``, ``-`` or ``@`` (and,
in some programs, a tab or carriage return before them) as a formula: an account name,
a purpose or a case number typed by someone could then fetch URLs or run commands on the
auditor's machine. Every CSV the gateway writes (the audit log, the release register)
goes through ``writer``, which prefixes such text cells with a single quote (OWASP's
advice): the spreadsheet shows the text as text. Numbers are written as they are.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any, TextIO

#: The first characters that make a spreadsheet read a cell as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    """``value`` for a CSV cell: text that a spreadsheet would run gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


class SafeWriter:
    """``csv.writer`` whose every text cell is neutralised."""

    def __init__(self, out: TextIO) -> None:
        self._writer = csv.writer(out)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([neutralise(cell) for cell in row])


def writer(out: TextIO) -> SafeWriter:
    return SafeWriter(out)
