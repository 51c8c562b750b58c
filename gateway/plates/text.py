"""Number-plate text: canonical form, country guess, OCR-confusion-tolerant search keys.

Pure functions, no I/O; used by the plate reader (to keep only plausible reads), by the
store (what is saved and searched) and by the search and watchlist routes (queries).

Formats understood (the canonical text has no separators, Latin capitals and digits):

``UA``  Ukraine: ``AA 1234 BB`` (region, four digits, series). The letters are the twelve
        Cyrillic ones that look Latin (А В Е І К М Н О Р С Т Х); they are read and stored
        as their Latin twins, so ``АА1234ВВ`` typed on a Cyrillic keyboard finds ``AA1234BB``.
``PL``  Poland: a district code of two or three letters (``WA``, ``KR``, ``WPI``), then four
        or five characters, at least one a digit (``WA 12345``, ``KR 1AB23``, ``WPI 1234``).
``VN``  Vietnam: province (two digits), series (a letter, two letters, or a letter and a
        digit on motorbikes), then four or five digits: ``30A-123.45``, ``51LD-123.45``, and
        the two-line motorbike plate ``29-B1 / 123.45`` read as two lines and joined.

Search keys fold the characters OCR confuses into one class each (0/O/D/Q, 1/I/L, 8/B,
5/S, 2/Z, 6/G), so a plate read as ``AA12З4BB`` or ``0A1234BB`` is still found by
``OA1234BB``; queries take ``*`` (any run of characters) and ``?`` (one character).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

#: Cyrillic capitals (and small letters) that look like Latin ones, and the Latin twin.
#: Ukrainian plates use А В Е І К М Н О Р С Т Х; У, Ї and З are OCR look-alikes seen in practice.
_CYRILLIC = {
    "А": "A", "В": "B", "Е": "E", "Є": "E", "І": "I", "Ї": "I", "К": "K", "М": "M", "Н": "H", "О": "O",
    "Р": "P", "С": "C", "Т": "T", "Х": "X", "У": "Y", "З": "3", "Ѕ": "S", "Ј": "J",
}
_CYRILLIC.update({k.lower(): v for k, v in list(_CYRILLIC.items())})
_TRANSLATE = str.maketrans(_CYRILLIC)

#: OCR confusion classes: every character of a class folds to the first one.
CONFUSIONS = ("0ODQ", "1IL", "8B", "5S", "2Z", "6G")
_FOLD = str.maketrans({c: group[0] for group in CONFUSIONS for c in group})
#: Letters and digits swapped when a read is coerced into a country's letter/digit layout.
_TO_DIGIT = {"O": "0", "D": "0", "Q": "0", "I": "1", "L": "1", "B": "8", "S": "5", "Z": "2", "G": "6", "T": "7", "A": "4"}
_TO_LETTER = {"0": "O", "1": "I", "8": "B", "5": "S", "2": "Z", "6": "G", "7": "T", "4": "A"}

MAX_LENGTH = 12
WILDCARDS = "*?"

_UA_LETTERS = "ABCEHIKMOPTX"
_UA = re.compile(rf"^[{_UA_LETTERS}]{{2}}\d{{4}}[{_UA_LETTERS}]{{2}}$")
#: Polish district codes: a voivodeship letter and one or two more; then four or five
#: characters with at least one digit (a two-letter district is followed by a digit).
_PL = re.compile(r"^[BCDEFGKLNOPRSTWZ](?:[A-Z]\d[A-Z0-9]{4}|[A-Z]{2}(?=[A-Z]*\d)[A-Z0-9]{4,5})$")
_VN = re.compile(r"^(\d{2})([A-Z]{1,2}|[A-Z]\d)(\d{4,5})$")

#: Letter (L) / digit (D) layouts a read may be coerced into, per country.
_LAYOUTS = {
    "UA": ("LLDDDDLL",),
    "VN": ("DDLDDDDD", "DDLDDDD", "DDLLDDDDD", "DDLDDDDDD"),
}


@dataclass(frozen=True, slots=True)
class Plate:
    """A plate as stored and shown."""

    text: str  #: canonical: capitals and digits only ("AA1234BB", "29B112345")
    display: str  #: as printed on the plate ("AA 1234 BB", "29-B1 123.45")
    country: str | None  #: "UA", "PL", "VN", or None when no known format fits
    key: str  #: ``text`` with OCR confusions folded, for search


def clean(raw: str) -> str:
    """Capitals and digits only: Cyrillic look-alikes become Latin, separators go."""
    text = raw.translate(_TRANSLATE).upper()
    return "".join(c for c in text if c.isascii() and c.isalnum())


def fold(text: str) -> str:
    """The OCR-confusion-tolerant key of canonical ``text`` (wildcards pass through)."""
    return text.translate(_FOLD)


def country_of(text: str) -> str | None:
    if _UA.match(text):
        return "UA"
    if _VN.match(text):
        return "VN"
    if _PL.match(text):
        return "PL"
    return None


def display(text: str, country: str | None) -> str:
    """``text`` laid out as printed on a plate of ``country``."""
    if country == "UA":
        return f"{text[:2]} {text[2:6]} {text[6:]}"
    if country == "PL":
        district = 2 if text[2].isdigit() else 3
        return f"{text[:district]} {text[district:]}"
    if country == "VN":
        m = _VN.match(text)
        assert m is not None
        province, series, number = m.groups()
        num = f"{number[:3]}.{number[3:]}" if len(number) == 5 else number
        if series[-1].isdigit():  # motorbike: "29-B1 123.45"
            return f"{province}-{series} {num}"
        return f"{province}{series}-{num}"
    return text


def _coerce(text: str, layout: str) -> str | None:
    if len(text) != len(layout):
        return None
    out = []
    for char, kind in zip(text, layout, strict=True):
        if kind == "D" and not char.isdigit():
            char = _TO_DIGIT.get(char, char)
        elif kind == "L" and char.isdigit():
            char = _TO_LETTER.get(char, char)
        out.append(char)
    return "".join(out)


def _strip_flag(text: str) -> str:
    """Drop a country code read off the plate's blue strip ("UA", "PL") when what is left
    fits that country and the whole does not."""
    for flag, country in (("UA", "UA"), ("PL", "PL")):
        if text.startswith(flag) and country_of(text) is None and country_of(text[2:]) == country:
            return text[2:]
    return text


def normalise(raw: str | Sequence[str]) -> Plate:
    """The canonical plate of an OCR read or a typed plate.

    ``raw`` is one string or the lines of a two-line plate, top first. A read that fits no
    known format as it stands is tried in each country's letter/digit layout, swapping the
    characters OCR confuses (``0A1234BB`` becomes ``OA1234BB``); the fit with the fewest
    swaps is taken, unless two tie. Otherwise the cleaned text is kept with no country.
    """
    lines = [raw] if isinstance(raw, str) else list(raw)
    text = _strip_flag("".join(clean(line) for line in lines))[:MAX_LENGTH]
    country = country_of(text)
    if country is None:
        fits = sorted({
            (sum(a != b for a, b in zip(text, coerced, strict=True)), coerced)
            for wanted, layouts in _LAYOUTS.items() for layout in layouts
            if (coerced := _coerce(text, layout)) is not None and country_of(coerced) == wanted
        })
        if fits and (len(fits) == 1 or fits[0][0] < fits[1][0]):
            text = fits[0][1]
            country = country_of(text)
    return Plate(text=text, display=display(text, country) if country else text, country=country, key=fold(text))


class QueryError(ValueError):
    """A plate query that cannot be searched for (empty, all wildcards, too long)."""


@dataclass(frozen=True, slots=True)
class Query:
    """A search query: a plate, perhaps with ``*`` and ``?``."""

    text: str  #: cleaned, wildcards kept ("AA12*")
    key: str  #: folded

    @property
    def like(self) -> str:
        """A SQL ``LIKE`` pattern over stored keys (the alphabet has no ``%``/``_``)."""
        return self.key.replace("*", "%").replace("?", "_")

    @property
    def exact(self) -> bool:
        return not any(w in self.text for w in WILDCARDS)

    def matches(self, key: str) -> bool:
        """Does a stored (folded) ``key`` match? The same rule as ``like``, in Python."""
        pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in self.key)
        return re.fullmatch(pattern, key) is not None


def parse_query(raw: str) -> Query:
    """``raw`` as a query: cleaned like a plate, ``*`` and ``?`` kept; at least two plate
    characters, so a query cannot ask for every plate."""
    if len(raw) > 64:
        raise QueryError("a plate query has at most 64 characters")
    parts = re.split(r"([*?])", raw)
    text = "".join(p if p in WILDCARDS else clean(p) for p in parts)
    text = re.sub(r"\*+", "*", text)
    plain = sum(1 for c in text if c not in WILDCARDS)
    if plain < 2:
        raise QueryError("a plate query needs at least two letters or digits besides wildcards")
    if len(text) > MAX_LENGTH + 4:
        raise QueryError(f"a plate query has at most {MAX_LENGTH} plate characters")
    if not any(c in WILDCARDS for c in text):
        text = normalise(text).text  # a whole plate typed with confusions: coerce like a read
    return Query(text=text, key=fold(text))


def similar(a: str, b: str) -> bool:
    """Are two folded keys the same plate read twice (equal, or one character apart)?"""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) <= 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))
