"""Reading an answer's text into parts: coordinates, labelled fields, comma-separated parts, hedges and codes.

`split_answer` turns one answer into `Part`s ordered most specific first, the way a person reads
"Half Dome, Yosemite National Park, California, USA":

1. labelled answers go through the one answer parser (`globe.answer.answer_fields`: "country: Japan\\ncity: Kyoto",
   bullets, bold keys ...) and become their values, most specific first;
2. other text is split on commas, semicolons, slashes, newlines, brackets and " - ";
3. hedges are removed: qualifiers in parentheses ("(approximate)", "(probably)", "(?)"), and leading or trailing
   words that place the photo near a place rather than name another one ("near", "probably", "rural area in",
   "outskirts of", "somewhere in", "... area", "... region", "... countryside"); a part keeps its unhedged text
   too (`Part.forms`), because "Central Park" or "Lake District" must not lose a word;
4. an airport code in parentheses ("Suvarnabhumi Airport (BKK)") becomes a code part, read as IATA / ICAO only.

`parse_coordinates` reads coordinates written in the text (decimal, degrees-minutes-seconds, N/S/E/W).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from globe.geo.names import normalize

# Part texts that mean "no answer".
NULLS = {"", "unknown", "none", "n a", "na", "null", "not sure", "unsure", "unclear", "various", "other", "nan",
         "unknown city", "unknown country", "not visible", "cannot determine", "undetermined", "not applicable"}

_SPLIT = re.compile(r"[,;/|\n()\[\]（）،、，；]+|\s+[-–—]\s+")
_PAREN = re.compile(r"[(\[（]([^()\[\]（）]*)[)\]）]")
_QUALIFIER = re.compile(r"^\s*(?:approx(?:imate(?:ly)?|\.)?|probably|possibly|likely|maybe|perhaps|uncertain|"
                        r"estimated?|guess|my guess|best guess|not sure|unsure|\?+|roughly|or nearby|nearby|"
                        r"or so|ish|somewhere)\s*\??\s*$", re.IGNORECASE)
_CODE = re.compile(r"^\s*([A-Z]{3}|[A-Z]{4})\s*$")
_AIRPORT_WORD = re.compile(r"\b(?:airport|international|intl|aeroport|aeropuerto|aeroporto|flughafen|lufthavn|"
                           r"luchthaven|airfield|aerodrome)\b", re.IGNORECASE)

# Hedge words before a place ("near Lyon", "rural area in Tuscany") and after it ("Lyon area"), normalised.
_HEDGE_PREFIX = re.compile(
    r"^(?:(?:i think|i believe|it is|it s|this is|looks like|probably|possibly|likely|maybe|perhaps|most likely|"
    r"somewhere|somewhere in|somewhere near|somewhere around|near|nearby|close to|around|outside|outside of|just"
    r" outside|in|at|on|the|a|an|of|from|within|inside|along|off|by|"
    r"rural|rural area|rural area in|rural area of|rural area near|countryside|countryside of|countryside near|"
    r"countryside in|area|area near|area of|area around|the area around|region of|vicinity of|outskirts|"
    r"outskirts of|suburbs|suburbs of|suburb of|environs of|surroundings of|north|south|east|west|northern|"
    r"southern|eastern|western|central|northeast|northwest|southeast|southwest|north of|south of|east of|"
    r"west of|downtown|greater|metro|metropolitan|coast of|coastal|the coast of|shores of|banks of|"
    r"mountains of|mountains near|hills of|hills near|countryside around)\s+)+"
)
_HEDGE_SUFFIX = re.compile(
    r"(?:\s+(?:area|region|vicinity|surroundings|outskirts|suburbs|countryside|metro area|metropolitan area|"
    r"and surroundings|and around|environs|approx|approximately|probably|possibly|maybe|or nearby|nearby|"
    r"or so|coast|coastline))+$"
)


@dataclass(frozen=True)
class Part:
    """One part of an answer: its raw text, its normalised key, the keys to look up (unhedged first), and whether
    it is an airport code written in parentheses or standing alone."""

    raw: str
    norm: str
    forms: tuple[str, ...]  # normalised lookup keys: as written, then with hedges removed
    code: bool = False  # an IATA / ICAO code candidate ("BKK", "VTBS")
    airport_code: bool = False  # a code the text marks as an airport's ("Suvarnabhumi Airport (BKK)")
    label: str = ""  # the answer's key for this value ("city", "state", "country"), "" for free text


_PREFIX_WORDS = {w for w in re.findall(r"[a-z]+", _HEDGE_PREFIX.pattern)}
_SUFFIX_WORDS = {w for w in re.findall(r"[a-z]+", _HEDGE_SUFFIX.pattern)}


def dehedge(norm: str) -> str:
    """A normalised part without its hedge words ("near lake tahoe" -> "lake tahoe"; "lyon area" -> "lyon")."""
    words = norm.split()
    if not words or (words[0] not in _PREFIX_WORDS and words[-1] not in _SUFFIX_WORDS):
        return norm  # no hedge word at either end: skip the regexes (most parts)
    s = _HEDGE_PREFIX.sub("", norm)
    s = _HEDGE_SUFFIX.sub("", s)
    return s.strip()


@lru_cache(maxsize=1 << 16)  # parts repeat across answers ("France", "USA"): read each once
def _part(raw: str, code: bool = False, airport_code: bool = False, label: str = "") -> Part | None:
    norm = normalize(raw)
    if norm in NULLS or _QUALIFIER.match(raw):
        return None
    forms = [norm]
    d = dehedge(norm)
    if d and d != norm and d not in NULLS:
        forms.append(d)
    return Part(raw.strip(), norm, tuple(forms), code, airport_code, label)


def _split_free(text: str, label: str = "") -> list[Part]:
    """Free text -> parts, most specific first as written ("Lyon, France"), with codes and qualifiers handled."""
    out: list[Part] = []
    pos = 0
    # walk parenthesised groups so a code inside them knows what precedes it
    for m in _PAREN.finditer(text):
        before = _split_plain(text[pos : m.start()], label)
        inner = m.group(1)
        if _CODE.match(inner):
            p = _part(inner.strip(), code=True,
                      airport_code=bool(_AIRPORT_WORD.search(text[max(0, m.start() - 60) : m.start()])))
            # the code annotates the name before it ("Hong Kong International Airport (HKG)"): it is the more
            # specific of the two, so it goes first
            out += ([p] if p else []) + before
        else:
            out += before
            if not _QUALIFIER.match(inner):
                out += _split_plain(inner)
        pos = m.end()
    out += _split_plain(text[pos:], label)
    return out


def _split_plain(text: str, label: str = "") -> list[Part]:
    out = []
    pieces = [raw for raw in _SPLIT.split(text) if raw.strip()]
    for j, raw in enumerate(pieces):
        c = _CODE.match(raw)
        # a label names the value's first piece ("city: Portland, OR": Portland is the city, OR its region)
        p = _part(raw, code=bool(c), airport_code=bool(c) and bool(_AIRPORT_WORD.search(raw)),
                  label=label if j == 0 else "")
        if p:
            out.append(p)
    return out


def split_answer(text: str) -> list[Part]:
    """An answer's parts, most specific first (see the module docstring). Labelled answers are read by the one
    answer parser; a value that is itself a list ("Half Dome, Yosemite") is split like free text."""
    from globe.answer import LABELS, answer_fields

    # only a text with a colon, '=' or a table bar can hold a labelled field: skip the parser's passes otherwise
    fields = answer_fields(text) if any(ch in text for ch in ":：=|") else {}
    if fields and any(k in fields for k in ("country", "city", "town", "location", "place", "landmark")):
        out: list[Part] = []
        for key in LABELS:
            if fields.get(key):
                out += _split_free(fields[key], key)  # type: ignore[arg-type]
        return out
    return _split_free(text)


# ---- coordinates in text ----------------------------------------------------------------------------------------

_NUM = (r"([-+]?\d{1,3}(?:\.\d+)?)\s*(?:°|º|deg\b|degrees\b)?\s*(?:(\d{1,2}(?:\.\d+)?)\s*['′’]\s*)?"
        r"(?:(\d{1,2}(?:\.\d+)?)\s*(?:\"|″|''|”)\s*)?([NSEWnsew](?![a-zA-Z]))?")
_COORD = re.compile(_NUM + r"[\s,;/]*(?:(?:lon|lng|long|longitude)\s*[:=]?\s*)?" + _NUM)
_DIGIT = re.compile(r"\d")


def _dms(deg: str, mins: str | None, secs: str | None) -> float:
    d = float(deg)
    v = abs(d) + (float(mins) / 60 if mins else 0.0) + (float(secs) / 3600 if secs else 0.0)
    return -v if deg.strip().startswith("-") else v


def parse_coordinates(text: str) -> tuple[float, float] | None:
    """(lat, lon) written in `text` (decimal, degrees-minutes-seconds, N/S/E/W), or None.

    A pair counts only if both numbers look like coordinates (decimals, degree/minute marks or hemisphere letters)
    so "Route 66, 2 miles" is not read as a position; latitude must be in [-90, 90] and longitude in [-180, 180]
    (a written longitude of 200 is not a position: nothing is wrapped).
    """
    if not _DIGIT.search(text):
        return None
    for m in _COORD.finditer(text):
        d1, m1, s1, h1, d2, m2, s2, h2 = m.groups()
        marked = lambda d, mi, h: "." in d or mi is not None or h is not None
        span = m.group(0)
        if not (marked(d1, m1, h1) and marked(d2, m2, h2)) and "°" not in span:
            continue
        a, b = _dms(d1, m1, s1), _dms(d2, m2, s2)
        h1, h2 = (h1 or "").upper(), (h2 or "").upper()
        if h1 in ("E", "W") or h2 in ("N", "S"):  # written lon first
            a, b, h1, h2 = b, a, h2, h1
        if h1 == "S":
            a = -abs(a)
        if h2 == "W":
            b = -abs(b)
        if -90 <= a <= 90 and -180 <= b <= 180:
            return a, b
    return None
