"""What one part of an answer can name: its candidate entries (populated places, features, landmarks, airports)
and what it says about the context (the country, the regions it names).

`globe.geo.forward` ranks these candidates; this module only finds them. Exact names come first (the part as
written, then without hedges, then a feature's name written together: "Halong Bay"); a part with no exact hit is
searched word by word (n-grams up to 4 words) as weaker evidence, and an n-gram counts only when delimited by stop
words, descriptive words ("tower", "piazza") or other names. Lookups that depend on the part alone are memoised per
gazetteer, since parts repeat across answers ("France", "USA").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from globe.geo.distance import EARTH_RADIUS_KM
from globe.geo.gazetteer import Gazetteer
from globe.geo.names import normalize
from globe.geo.parts import Part

_STOP = {"in", "the", "of", "near", "at", "a", "an", "and", "or", "city", "town", "from", "on", "by", "de", "la",
         "le", "el", "du", "di", "da", "do", "is", "it", "this", "that", "country", "region", "state", "province",
         "no", "not", "idea", "sure", "all", "maybe", "somewhere", "probably", "likely", "looks", "like", "photo",
         "image", "taken", "answer", "guess", "my", "its", "be", "could", "would", "think", "i", "we", "you"}


# Words that describe a place rather than name one; an n-gram next to one of them may be a place name.
_DESCRIPTIVE = {
    "downtown", "central", "centre", "center", "old", "new", "historic", "town", "area", "outskirts", "suburb",
    "suburbs", "greater", "metro", "metropolitan", "district", "north", "south", "east", "west", "northern",
    "southern", "eastern", "western", "upper", "lower", "coast", "coastal", "rural", "countryside", "village",
    "capital", "outside", "around", "inside", "tower", "square", "street", "bridge", "cathedral", "church",
    "temple", "shrine", "mosque", "palace", "castle", "market", "museum", "university", "station", "airport",
    "harbour", "harbor", "port", "beach", "bay", "park", "river", "lake", "mountains", "mount", "island",
    "islands", "valley", "skyline", "view", "streets", "gate", "opera", "house", "gardens", "harbourfront",
    "wat", "pagoda", "stupa", "monastery", "abbey", "basilica", "fort", "fortress", "ruins", "dome", "falls",
    "waterfall", "glacier", "canyon", "gorge", "volcano", "peak", "cliffs", "national", "plaza", "boulevard",
    "mine", "cave", "caves", "wall", "memorial", "monument", "cemetery", "zoo", "stadium", "arena", "lighthouse",
    "pier", "fountain", "garden", "hall", "library", "theatre", "theater", "crossing", "wharf", "promenade",
    # the same in the languages answers name places in ("Piazza San Marco", "Plaza Mayor", "Schloss X")
    "piazza", "place", "platz", "rue", "via", "calle", "strasse", "avenida", "praca", "plac", "ponte", "pont",
    "puente", "duomo", "chiesa", "iglesia", "eglise", "kirche", "dom", "schloss", "castello", "castillo",
    "chateau", "palacio", "palazzo", "museo", "musee", "parque", "parco", "jardin", "playa", "plage", "spiaggia",
    "strand", "lago", "lac", "monte", "mont", "cerro", "rio",
}


_REGION_WORD = re.compile(
    r"^(?:(?:state|province|region|prefecture|county|department|governorate|oblast) of )?(.+?)"
    r"(?: (?:state|province|region|prefecture|county|department|governorate|oblast|territory))?$"
)


@dataclass(frozen=True)
class _Cand:
    """A candidate entry for a part: a populated place ("city", a gazetteer row) or a place-index row ("place")."""

    src: str
    i: int
    part: int
    strong: bool  # the whole part (or a code) named it, not an n-gram
    primary: bool  # matched by its primary name
    words: int = 0  # words of the n-gram that named it (0 for a whole part): longer n-grams are better evidence


def _cand_info(gaz: Gazetteer, c: _Cand) -> tuple[float, float, str, int, float, str]:
    """(lat, lon, country code, admin id, prior, level) of a candidate; the prior of a populated place is
    log10(population + 1), 0.7 less for a district of a bigger place."""
    i = c.i
    if c.src == "city":
        L = gaz.lists
        return L.lat[i], L.lon[i], L.cc[i], L.admin[i], L.prior[i], "city"
    P = gaz.places.lists
    return P.lat[i], P.lon[i], P.country_code[i], P.admin_id[i], P.prior[i], P.level[i]


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine km between two valid points, on floats (numpy's per-call overhead dominates one pair)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, a)))


def _exact(gaz: Gazetteer, part: Part, k: int) -> list[_Cand]:
    """Candidates named by a whole part: its first form with any hit (as written, then without hedges); features
    also by the form without spaces ("Halong Bay" for "Ha Long Bay")."""
    return [_Cand(src, i, k, True, primary) for src, i, primary in _memoized(gaz, "exact", part, _exact_hits)]


def _memoized(gaz: Gazetteer, kind: str, part: Part, fn):
    memo = _memo(gaz, kind)
    got = memo.get(part)
    if got is None:
        got = fn(gaz, part)
        if len(memo) < 1 << 17:
            memo[part] = got
    return got


def _exact_hits(gaz: Gazetteer, part: Part) -> list[tuple[str, int, bool]]:
    pl, norm = gaz.places, gaz.lists.norm
    P = pl.lists
    for form in part.forms:
        out = [("city", i, norm[i] == form) for i in gaz.rows_named(form)]
        out += [("place", i, form == P.norm_name[i] or form == P.norm_head[i]) for i in pl.named(form)]
        if out:
            return out
    for form in part.forms:
        squashed = form.replace(" ", "")
        if squashed != form:
            out = [("place", i, False) for i in pl.named(squashed)]
            if out:
                return out
    return []


def _code(gaz: Gazetteer, part: Part, k: int) -> list[_Cand]:
    """An airport by IATA / ICAO code, else a city by its code ("NYC")."""
    code = part.raw.strip().upper()
    i = gaz.places.codes.get(code)
    if i is not None:
        return [_Cand("place", int(i), k, True, True)]
    return [_Cand("city", int(j), k, True, False) for j in (gaz.city_codes or {}).get(code, ())]


def _words(raw: str) -> tuple[list[str], list[bool]]:
    """Normalised words of a raw part, and for each whether it starts a whitespace-separated token.

    A hyphenated or apostrophed token ("Nowhereville-sur-Rien") stays one unit: its pieces are not places.
    """
    words: list[str] = []
    starts: list[bool] = []
    for tok in raw.split():
        ws = normalize(tok).split()
        words += ws
        starts += [True] + [False] * (len(ws) - 1)
    return words, starts


def _ngrams(words: list[str], starts: list[bool] | None = None, max_n: int = 4) -> list[tuple[str, int, int]]:
    """(gram, first word, end word) for runs of whole tokens, longest first, right to left within a length."""
    starts = [True] * len(words) if starts is None else starts
    out = []
    for n in range(min(max_n, len(words)), 0, -1):
        for i in range(len(words) - n, -1, -1):  # right to left: "Tower, in Paris" prefers the later place
            if not starts[i] or (i + n < len(words) and not starts[i + n]):
                continue  # a fragment of a hyphenated token
            g = words[i : i + n]
            if n == 1 and (g[0] in _STOP or len(g[0]) < 3):
                continue
            out.append((" ".join(g), i, i + n))
    return out


def _delimits(gaz: Gazetteer, word: str | None) -> bool:
    """Whether a word next to an n-gram ends the name there (part edge, stop or descriptive word, a country, region
    or place name), so the n-gram is a place mentioned in a phrase ("Eiffel Tower in Paris", "Tokyo Tower",
    "Montmartre Paris") rather than a piece of a longer unknown name ("Frobnitz Springs", "Nowhereville sur Rien")."""
    return (
        word is None or word in _STOP or word in _DESCRIPTIVE or word in gaz.country_index
        or word in gaz.admin_index or word in gaz.name_index
    )


def _memo(gaz: Gazetteer, kind: str) -> dict:
    """A per-gazetteer memo for part-level lookups (parts repeat across answers; a test may pass another index)."""
    memo = gaz.__dict__.setdefault("_forward_memo", {})
    return memo.setdefault(kind, {})


def _grams(gaz: Gazetteer, part: Part) -> list[str]:
    memo = _memo(gaz, "grams")
    got = memo.get(part.raw)
    if got is None:
        words, starts = _words(part.raw)
        got = [g for g, i, j in _ngrams(words, starts) if _delimits(gaz, words[i - 1] if i else None)
               and _delimits(gaz, words[j] if j < len(words) else None)]
        if len(memo) < 1 << 17:
            memo[part.raw] = got
    return got


def _ngram_cands(gaz: Gazetteer, part: Part, k: int) -> list[_Cand]:
    return [_Cand(src, i, k, False, primary, n) for src, i, primary, n in _memoized(gaz, "ngram", part, _ngram_hits)]


def _ngram_hits(gaz: Gazetteer, part: Part) -> list[tuple[str, int, bool, int]]:
    out = []
    pl, norm = gaz.places, gaz.lists.norm
    P = pl.lists
    for g in _grams(gaz, part):
        n = g.count(" ") + 1
        out += [("city", i, norm[i] == g, n) for i in gaz.rows_named(g)]
        if len(g) >= 4:
            out += [("place", i, P.norm_name[i] == g, n) for i in pl.named(g)]
    return out


def _admins_for(gaz: Gazetteer, part: Part) -> tuple[list[int], bool]:
    """Admin-1 regions a part names, and whether it says so explicitly ("Washington State", "TX", "NSW")."""
    return _memoized(gaz, "admins", part, _admins_for_uncached)


def _admins_for_uncached(gaz: Gazetteer, part: Part) -> tuple[list[int], bool]:
    ids: list[int] = []
    explicit = False
    for n, form in enumerate(part.forms):
        if n and ids:
            break
        if n and part.forms[0] in gaz.name_index:
            break  # "East New York" is a place as written; its unhedged "New York" is no reading of it
        for a in gaz.admin_index.get(form, ()):
            if a not in ids:
                ids.append(a)
        m = _REGION_WORD.match(form)
        if m and m.group(1) != form:
            more = [a for a in gaz.admin_index.get(m.group(1), ()) if a not in ids]
            explicit = explicit or bool(more) or bool(ids)
            ids += more
    code = part.raw.strip().replace(".", "")
    if 2 <= len(code) <= 3 and code.isupper():
        coded = gaz.admins_coded(code)
        if coded:
            ids += [a for a in coded if a not in ids]
            explicit = True
    return ids, explicit


@dataclass(frozen=True)
class _PartInfo:
    """What one part says about the context, whatever the answer around it (memoised per part)."""

    country: str | None  # the country it names (as written or unhedged), None if none
    phrase_country: str | None  # a country named inside it ("Lyon France"), unless it is itself a region / place
    regions: tuple[int, ...]  # admin-1 regions the whole part names
    explicit: bool  # it says it is a region ("Washington State", "TX")
    phrase_regions: tuple[int, ...]  # regions named inside a phrase ("Southern California"), when none wholly


def _part_info(gaz: Gazetteer, part: Part) -> _PartInfo:
    country = next((c for c in map(gaz.country_of, (part.raw, *part.forms[1:])) if c), None)
    phrase_country = None
    if not any(f in gaz.admin_index or f in gaz.name_index for f in part.forms):
        # a name that holds a country's name ("New South Wales") is not a phrase around one
        phrase_country = next((gaz.country_of(g) for g in _grams(gaz, part) if len(g) > 3 and gaz.country_of(g)),
                              None)
    ids, explicit = _admins_for(gaz, part)
    phrase: list[int] = []
    if " " in part.norm and not ids:
        for g in _grams(gaz, part):
            phrase += gaz.admin_index.get(g, ()) if len(g) > 3 else ()
    return _PartInfo(country, phrase_country, tuple(ids), explicit, tuple(phrase))
