"""Forward geocoding: free-form answer text -> coordinates, offline, deterministic.

How an answer is read (`geocode`):

1. Coordinates written in the text win ("48.8566, 2.3522", "48°51'24\"N 2°21'07\"E", "33.9 S 151.2 E"):
   level "coords".
2. A whole completion is cut to its <answer> by `globe.prompts.parse_completion`. GLOBE's labelled answer
   ("country: France\\ncity: Lyon", also region/state/province lines) becomes "Lyon, France"; otherwise the
   text is split into parts on commas, semicolons, slashes, newlines and brackets.
3. The rightmost part that names a country (ISO names, GeoNames names, curated aliases such as "USA", "UK",
   "England", "Holland", "Ivory Coast", or an ISO code) is the country; a `country=` argument overrides it. Parts
   naming admin-1 regions ("Texas", "Bavaria", or a US postal code as a whole part, "TX") are noted.
4. Every other part is looked up in the name index (primary, alternate, native names and exonyms, with case,
   diacritics, punctuation and "St."/"Saint" folded). Parts with no exact hit are also searched word by word
   (n-grams up to 4 words: "Eiffel Tower in Paris" -> "paris"), as weaker evidence. An n-gram is a city
   candidate only if it is made of whole tokens and bounded by the part's edges, stop words, descriptive words
   ("downtown", "tower") or known country / region / place names, so an invented name ("Nowhereville-sur-Rien",
   "Frobnitz Springs") falls back to the next level instead of crediting a fragment ("Sur", "Springs").
5. Candidates are ranked by: agreement with the named country (or its parent for territories such as Hong Kong)
   or a named region; exact part over n-gram; then log10(population) + 1 if the name is the place's primary
   name (so "Bombay" reaches Mumbai rather than a village called Bombay, and Paris, France beats Paris, Texas
   unless Texas is named). A named country is authoritative: a city outside it is not accepted.
6. Without a city, a named region resolves to its population-weighted centroid (level "admin"), a country to its
   point (level "country", see `globe.geo.gazetteer`), and anything else to level "none" (NaN coordinates).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from globe.geo.gazetteer import US_STATE_CODES, Gazetteer, gazetteer, normalize

LEVELS = ("coords", "city", "admin", "country", "none")

# Territories GeoNames files under their own code, accepted where the answer names the sovereign country.
PARENT = {
    "HK": "CN", "MO": "CN", "PR": "US", "GU": "US", "VI": "US", "AS": "US", "MP": "US", "UM": "US",
    "GL": "DK", "FO": "DK", "RE": "FR", "GP": "FR", "MQ": "FR", "GF": "FR", "YT": "FR", "NC": "FR", "PF": "FR",
    "PM": "FR", "BL": "FR", "MF": "FR", "WF": "FR", "AW": "NL", "CW": "NL", "SX": "NL", "BQ": "NL", "GI": "GB",
    "BM": "GB", "KY": "GB", "VG": "GB", "IM": "GB", "JE": "GB", "GG": "GB", "FK": "GB", "MS": "GB", "TC": "GB",
    "AI": "GB", "AX": "FI", "SJ": "NO", "CX": "AU", "CC": "AU", "NF": "AU", "CK": "NZ", "NU": "NZ", "TK": "NZ",
}

# Part texts that mean "no answer".
_NULLS = {"", "unknown", "none", "n a", "na", "null", "not sure", "unsure", "unclear", "various", "other", "nan"}
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
}
_NATIONS = {"england", "scotland", "wales", "northern ireland"}  # country aliases that are also GB regions
_MAJOR_CITY = 100_000  # a city smaller than this named like a region is read as the region ("Texas, USA")
_LABELLED = re.compile(r"^\s*\**\s*(country|city|town|region|state|province|admin1|location)\s*\**\s*[:=]\s*(.*)$",
                       re.I | re.M)
_SPLIT = re.compile(r"[,;/|\n()\[\]]+|\s+-\s+")
_NUM = (r"([-+]?\d{1,3}(?:\.\d+)?)\s*(?:°|º|deg\b|degrees\b)?\s*(?:(\d{1,2}(?:\.\d+)?)\s*['′’]\s*)?"
        r"(?:(\d{1,2}(?:\.\d+)?)\s*(?:\"|″|''|”)\s*)?([NSEWnsew](?![a-zA-Z]))?")
_COORD = re.compile(_NUM + r"[\s,;/]*(?:(?:lon|lng|long|longitude)\s*[:=]?\s*)?" + _NUM)


@dataclass(frozen=True)
class GeoResult:
    """One resolved answer. `level` is one of LEVELS; lat/lon are NaN when level == "none"."""

    text: str
    lat: float
    lon: float
    level: str
    country_code: str = ""
    country: str = ""
    admin1: str = ""
    city: str = ""
    geonameid: int = -1
    matched: str = ""  # the place names the resolution rests on, e.g. "Lyon, Auvergne-Rhône-Alpes, France"

    @property
    def resolved(self) -> bool:
        return self.level != "none"

    def to_dict(self) -> dict:
        return asdict(self)


def _none(text: str, country_code: str = "", gaz: Gazetteer | None = None) -> GeoResult:
    return GeoResult(text, math.nan, math.nan, "none", country_code, gaz.country_name(country_code) if gaz else "")


# ---- coordinates in text ------------------------------------------------------------------------------------


def _dms(deg: str, mins: str | None, secs: str | None) -> float:
    d = float(deg)
    v = abs(d) + (float(mins) / 60 if mins else 0.0) + (float(secs) / 3600 if secs else 0.0)
    return -v if deg.strip().startswith("-") else v


def parse_coordinates(text: str) -> tuple[float, float] | None:
    """(lat, lon) written in `text` (decimal, degrees-minutes-seconds, N/S/E/W), or None.

    A pair counts only if both numbers look like coordinates (decimals, degree/minute marks or hemisphere letters)
    so "Route 66, 2 miles" is not read as a position.
    """
    if not any(ch.isdigit() for ch in text):
        return None
    for m in _COORD.finditer(text):
        d1, m1, s1, h1, d2, m2, s2, h2 = m.groups()
        marked = lambda d, mi, h: "." in d or mi is not None or h is not None  # noqa: E731
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
        if -90 <= a <= 90 and -180 <= b <= 360:
            return a, ((b + 180) % 360) - 180
    return None


# ---- parts ---------------------------------------------------------------------------------------------------


def _parts(text: str) -> list[str]:
    """Raw parts, most general last ("Lyon, France"); GLOBE's labelled answer is reordered city, region, country."""
    found = {k.lower(): v.strip() for k, v in _LABELLED.findall(text)}
    if found and ("country" in found or "city" in found or "town" in found):
        order = ("location", "city", "town", "region", "state", "province", "admin1", "country")
        pieces = []
        for k in order:
            if k in found:
                pieces.extend(p for p in _SPLIT.split(found[k]))
        return [p.strip() for p in pieces if p.strip()]
    return [p.strip() for p in _SPLIT.split(text) if p.strip()]


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
        or word in gaz.admin_index or gaz.places_named(word).size > 0
    )


# ---- resolution ----------------------------------------------------------------------------------------------


def _country_ok(cand_cc: str, countries: set[str]) -> bool:
    return cand_cc in countries or PARENT.get(cand_cc, "") in countries


_REGION_WORD = re.compile(
    r"^(?:(?:state|province|region|prefecture|county|department|governorate|oblast) of )?(.+?)"
    r"(?: (?:state|province|region|prefecture|county|department|governorate|oblast|territory))?$"
)


def _admins_for(gaz: Gazetteer, norm: str, raw: str) -> tuple[list[int], bool]:
    """Admin-1 regions a part names, and whether it says so explicitly ("Washington State", "Kyoto Prefecture")."""
    ids = list(gaz.admin_index.get(norm, ()))
    explicit = False
    m = _REGION_WORD.match(norm)
    if m and m.group(1) != norm:
        more = [a for a in gaz.admin_index.get(m.group(1), ()) if a not in ids]
        explicit = bool(more) or bool(ids)
        ids += more
    code = raw.strip().replace(".", "")
    if len(code) == 2 and code.isupper() and code in US_STATE_CODES:
        try:
            ids.append(gaz.admin_key.index(f"US.{code}"))
        except ValueError:
            pass
    return ids, explicit


def _result(gaz: Gazetteer, text: str, i: int, level: str = "city", lat=None, lon=None) -> GeoResult:
    cc = gaz.country_code[i]
    aid = gaz.admin_id[i]
    admin = gaz.admin_name[aid] if aid >= 0 else ""
    matched = ", ".join(x for x in (gaz.name[i], admin, gaz.country_name(cc)) if x)
    return GeoResult(
        text, float(gaz.lat[i] if lat is None else lat), float(gaz.lon[i] if lon is None else lon), level, cc,
        gaz.country_name(cc), admin, str(gaz.name[i]), int(gaz.geonameid[i]), matched,
    )


def _resolve(gaz: Gazetteer, text: str, country: str | None) -> GeoResult:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return _none("")
    text = str(text)
    forced = gaz.country_of(country) if country else None
    if "<answer>" in text.lower():  # a whole completion: only its answer counts (the shared parser decides)
        from globe.answer import parse_completion

        p = parse_completion(text)
        # labelled fields, else a single free-form answer block; hedged or missing answers resolve to nothing
        text_for_parts = p.place or (p.answer or "" if p.n_answer == 1 else "")
        if not text_for_parts.strip():
            return _none(text)
    else:
        text_for_parts = text

    xy = parse_coordinates(text_for_parts)
    if xy is not None:
        i = int(gaz.nearest(xy[0], xy[1])[0])
        r = _result(gaz, text, i, level="coords", lat=xy[0], lon=xy[1])
        if xy[0] < -60.0:  # Antarctica has no populated place; see Gazetteer.country_at
            r = GeoResult(text, xy[0], xy[1], "coords", "AQ", gaz.country_name("AQ"), matched=gaz.country_name("AQ"))
        return r

    raw_parts = [p for p in _parts(text_for_parts) if normalize(p) not in _NULLS]
    parts = [normalize(p) for p in raw_parts]

    # the country: the rightmost part naming one (or the caller's)
    country_part = -1
    named_cc = None
    for k in range(len(parts) - 1, -1, -1):
        cc = gaz.country_of(raw_parts[k])
        if cc:
            named_cc, country_part = cc, k
            break
    countries = {forced} if forced else ({named_cc} if named_cc else set())

    # regions named anywhere (the country part too: "Atlanta, Georgia")
    admins: dict[int, int] = {}  # admin id -> part
    explicit_parts: set[int] = set()  # parts that say they are a region ("Washington State")
    for k, (p, r) in enumerate(zip(parts, raw_parts)):
        ids, explicit = _admins_for(gaz, p, r)
        for a in ids:
            admins.setdefault(a, k)
        if explicit:
            explicit_parts.add(k)

    # parts with no exact hit are searched by n-grams, which may also name the country ("Lyon France") or a
    # region ("Southern California"); a part that is wholly a region name is not split ("New South Wales")
    grams_of: dict[int, list] = {}
    for k, p in enumerate(parts):
        if k == country_part or not p or k in explicit_parts:
            continue
        exact = gaz.places_named(p)
        if exact.size or " " not in p or k in admins.values():
            grams_of[k] = [(p, exact, True)]
            continue
        words, starts = _words(raw_parts[k])
        grams = _ngrams(words, starts)
        # a city candidate must be delimited in the part; a country or region may sit inside it ("Lyon France")
        grams_of[k] = [
            (g, gaz.places_named(g), False)
            for g, i, j in grams
            if _delimits(gaz, words[i - 1] if i else None) and _delimits(gaz, words[j] if j < len(words) else None)
        ]
        grams = [g for g, _, _ in grams]
        if not countries:
            for g in grams:
                cc = gaz.country_of(g) if len(g) > 3 else None
                if cc:
                    countries = {cc}
                    break
        for g in grams:
            if len(g) > 3:
                for a in gaz.admin_index.get(g, ()):
                    admins.setdefault(a, k)
    # regions consistent with the country: a loose n-gram candidate must lie in one of them
    named_admins = {a for a in admins if not countries or _country_ok(gaz.admin_key[a][:2], countries)}

    # city candidates: exact parts (strong), n-grams (weak)
    best = None
    best_key = None
    for k, grams in grams_of.items():
        part_admins = [a for a, kk in admins.items() if kk == k]
        for g, idx, strong in grams:
            if idx.size == 0:
                continue
            pops = gaz.population[idx]
            ccs = gaz.country_code[idx]
            for j in range(idx.size):
                i = int(idx[j])
                cc = ccs[j]
                aid = int(gaz.admin_id[i])
                if forced and not _country_ok(cc, countries):
                    continue
                if part_admins and pops[j] < _MAJOR_CITY and aid not in part_admins and any(
                    not countries or _country_ok(gaz.admin_key[a][:2], countries) for a in part_admins
                ):
                    continue  # "Texas, USA": the region, not a village called Texas
                primary = gaz.norm_name[i] == g
                if not strong and not _country_ok(cc, countries) and pops[j] < (5000 if primary else 100_000):
                    continue  # a loose word ("idea") hitting a village's alternate name is noise, not an answer
                if not strong and named_admins and aid not in named_admins:
                    continue  # "Yosemite National Park, California": not National Park, New Jersey
                ctx = 2 * int(cc in countries) + int(PARENT.get(cc, "") in countries)
                ctx += int(aid in admins and admins[aid] != k)
                score = (
                    math.log10(int(pops[j]) + 1)
                    + (1.0 if primary else 0.0)
                    - (0.7 if gaz.section[i] else 0.0)
                )
                key = (ctx, strong, score, -i)
                if best_key is None or key > best_key:
                    best, best_key = i, key

    if best is not None:
        # a city must agree with the named country or region, if any ("Lyon, Spain" is Spain, not Lyon)
        if best_key[0] > 0 or not countries:
            return _result(gaz, text, best)

    # no city: a region, then the country
    cand_admins = [a for a in admins if not countries or _country_ok(gaz.admin_key[a][:2], countries)]
    if cand_admins:
        a = max(cand_admins, key=lambda a: (admins[a] != country_part or not countries, gaz.admin_pop[a], -a))
        cc = gaz.admin_key[a].split(".")[0]
        # the country part is read as a region only for the UK's nations ("Scotland"), never "Mexico" (a state)
        if admins[a] != country_part or (len([p for p in parts if p]) == 1 and parts[country_part] in _NATIONS):
            return GeoResult(
                text, float(gaz.admin_lat[a]), float(gaz.admin_lon[a]), "admin", cc, gaz.country_name(cc),
                gaz.admin_name[a], "", -1, f"{gaz.admin_name[a]}, {gaz.country_name(cc)}",
            )
    if countries:
        cc = next(iter(countries))
        info = gaz.countries.get(cc)
        if info is None or not np.isfinite(info["lat"]):
            return _none(text, cc, gaz)
        return GeoResult(text, info["lat"], info["lon"], "country", cc, info["name"], "", "", -1, info["name"])
    return _none(text)


@lru_cache(maxsize=1 << 17)
def _cached(text: str, country: str | None) -> GeoResult:
    return _resolve(gazetteer(), text, country)


def geocode(text: str, country: str | None = None) -> GeoResult:
    """Resolve one free-form answer ("Lyon, France", "country: Japan\\ncity: Kyoto", "48.85N 2.35E").

    `country` (a name, alias or ISO code), when given, is authoritative: only places in it are accepted.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return _none("")
    return _cached(str(text), country if country else None)


def geocode_many(texts, country=None):
    """Resolve many answers into a DataFrame (one row per input, same order).

    Columns: lat, lon, level, country_code, country, admin1, city, geonameid, matched. `country` is None, one
    value for all, or a sequence aligned with `texts`. Repeated answers are resolved once.
    """
    import pandas as pd

    texts = list(texts)
    if country is None or isinstance(country, str):
        countries = [country] * len(texts)
    else:
        countries = list(country)
        if len(countries) != len(texts):
            raise ValueError(f"country has {len(countries)} values for {len(texts)} texts")
    memo: dict = {}
    rows = []
    for t, c in zip(texts, countries):
        c = None if c is None or (isinstance(c, float) and math.isnan(c)) or c == "" else str(c)
        key = (t if isinstance(t, str) else None, c)
        r = memo.get(key)
        if r is None:
            r = geocode(key[0], c)
            memo[key] = r
        rows.append(r)
    cols = ["lat", "lon", "level", "country_code", "country", "admin1", "city", "geonameid", "matched"]
    df = pd.DataFrame([[getattr(r, k) for k in cols] for r in rows], columns=cols)
    df["lat"] = df["lat"].astype(float)
    df["lon"] = df["lon"].astype(float)
    df["geonameid"] = df["geonameid"].astype(np.int64)
    return df
