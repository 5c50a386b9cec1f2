"""Name keys: how a place name is normalised before any lookup, and the spelling variants a feature is indexed by.

`normalize` folds case, diacritics, punctuation, a leading "The" and the abbreviations St / Ste / Mt / Ft / Pt, so
'Saint-Étienne', "St. Etienne" and 'SAINT ETIENNE' share one key. `feature_keys` adds the variants people write
for natural features and landmarks: "Lake X" / "X Lake", "Mount X" / "Mt X" / "X" for a peak, "X Falls" /
"X Waterfall(s)", "X National Park" / "X NP" / "X Park", "Isle of X" / "X Island", "X Desert", "X Mountains" / "X Range". Both sides of a lookup go
through the same functions, so a variant is found whichever way the answer writes it.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_FOLD = str.maketrans({"ß": "ss", "ø": "o", "Ø": "o", "æ": "ae", "Æ": "ae", "œ": "oe", "Œ": "oe", "ł": "l",
                       "Ł": "l", "đ": "d", "Đ": "d", "ı": "i", "þ": "th", "ð": "d", "ħ": "h"})
_APOS = re.compile(r"[’'`ʻʼ‘´]")
_NONWORD = re.compile(r"[\W_]+")
_ABBREV = {"st": "saint", "ste": "sainte", "mt": "mount", "mts": "mountains", "ft": "fort", "pt": "port"}


@lru_cache(maxsize=1 << 18)
def normalize(text: str) -> str:
    """Case-, diacritic- and punctuation-insensitive key: 'Saint-Étienne' / "St. Etienne" -> 'saint etienne'."""
    if text.isascii():  # nothing to fold or decompose: most answers
        s = text.lower()
    else:
        s = unicodedata.normalize("NFKD", text.translate(_FOLD))
        s = "".join(ch for ch in s if not unicodedata.combining(ch)).lower()
    s = _NONWORD.sub(" ", _APOS.sub("", s)).strip()
    if not s:
        return s
    words = s.split()
    if words[0] == "the" and len(words) > 1:
        words = words[1:]
    words = [_ABBREV.get(w, w) for w in words]
    return " ".join(words)


# Feature kinds whose bare core name is also a key ("Fuji" for a peak written "Mount Fuji").
_PEAKS = {"peak", "mountain", "volcano", "hill", "MT", "PK", "VLC", "HLL"}
_FALLS = {"falls", "waterfall", "waterfalls", "cascade", "cascada", "foss", "fossen"}


def feature_keys(name: str, feature: str = "") -> set[str]:
    """Every key a feature or landmark is indexed by: its normalised name and the usual spelling variants."""
    k = normalize(name)
    if not k:
        return set()
    keys = {k}
    w = k.split()
    if len(w) >= 2:
        if w[0] == "lake":
            keys.add(" ".join(w[1:] + ["lake"]))
        elif w[-1] == "lake":
            keys.add(" ".join(["lake"] + w[:-1]))
        if w[0] == "mount" and feature in _PEAKS:
            keys.add(" ".join(w[1:]))
        if w[-1] in _FALLS:
            core = " ".join(w[:-1])
            keys |= {f"{core} falls", f"{core} waterfall", f"{core} waterfalls"}
        if w[-2:] == ["national", "park"] and len(w) > 2:
            core = " ".join(w[:-2])
            keys |= {f"{core} np", f"{core} national park", f"{core} park"}
        if w[:2] == ["isle", "of"] and len(w) > 2:
            keys.add(" ".join(w[2:]) + " island")
        if w[-1] == "island" and len(w) > 1:
            keys.add("isle of " + " ".join(w[:-1]))
    elif feature in _PEAKS:
        keys.add(f"mount {k}")  # Natural Earth names the peak "Fuji"; answers say "Mount Fuji" / "Mt. Fuji"
    # the generic word answers add to a bare name: "Sahara Desert", "Andes Mountains", "Maui Island"
    if feature == "desert" and w[-1] != "desert":
        keys.add(f"{k} desert")
    if feature == "range" and w[-1] not in ("mountains", "range", "alps", "hills"):
        keys |= {f"{k} mountains", f"{k} range"}
    if feature == "island" and not {"island", "isle", "islands"} & set(w):
        keys |= {f"{k} island", f"isle of {k}"}
    # written together or apart: "Halong Bay" / "Ha Long Bay" (looked up only when nothing else matched)
    keys |= {x.replace(" ", "") for x in keys if " " in x}
    return keys
