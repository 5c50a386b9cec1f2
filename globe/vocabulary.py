"""The clue vocabulary: the visual clues a geo-localisation reasoning talks about, and the one matcher for them.

One place for the whole project. Distillation reads the entities a teacher's reasoning names (`extract_entities`) and
asks a detector or segmenter to verify them; the oracle teacher names clues from it; the tiny detector's tokenizer
spells it; the `visual_precision` reward counts the terms a reasoning mentions (`mentioned_clues`).

Terms are singular: the matcher allows a plural "s"/"es" on the last word ("clouds" counts as "cloud") and any run
of spaces or hyphens between words ("palm-trees" is "palm tree"); longer terms win ("palm tree", not "tree").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

CLUE_CATEGORIES: dict[str, tuple[str, ...]] = {
    "text and signs": (
        "road sign", "street sign", "traffic sign", "sign", "signage", "billboard", "license plate", "licence plate",
        "number plate", "text", "script", "writing", "lettering", "inscription", "banner", "poster", "logo",
        "storefront", "shop sign", "cyrillic", "latin alphabet", "arabic script", "chinese characters", "kanji",
        "hangul", "devanagari", "thai script", "greek alphabet", "hebrew", "flag",
    ),
    "roads and traffic": (
        "road", "street", "highway", "motorway", "road marking", "lane marking", "centre line", "center line",
        "crosswalk", "zebra crossing", "bollard", "guardrail", "curb", "kerb", "sidewalk", "pavement", "roundabout",
        "traffic light", "traffic lights", "utility pole", "pole", "power line", "telephone pole", "street lamp",
        "lamp post", "bench", "fence",
        "driving side", "left-hand traffic", "right-hand traffic",
    ),
    "vehicles": (
        "car", "taxi", "bus", "double-decker", "tram", "streetcar", "train", "truck", "lorry", "van", "motorcycle",
        "scooter", "moped", "bicycle", "rickshaw", "tuk-tuk", "boat", "ferry", "gondola",
    ),
    "buildings and landmarks": (
        "architecture", "building", "house", "apartment block", "skyscraper", "tower", "church", "cathedral",
        "mosque", "minaret", "temple", "pagoda", "shrine", "synagogue", "monastery", "palace", "castle", "fort",
        "bridge", "monument", "statue", "fountain", "dome", "arch", "column", "landmark", "lighthouse", "windmill",
        "roof", "tiled roof", "thatched roof", "wall", "window", "door", "balcony", "facade", "brick", "stone", "timber", "stucco", "adobe",
        "market", "bazaar", "stadium", "harbour", "harbor", "port", "pier", "station",
    ),
    "nature and terrain": (
        "mountain", "hill", "valley", "volcano", "glacier", "snow", "desert", "sand", "dune", "beach", "coast",
        "water", "sea", "ocean", "lake", "river", "waterfall", "canyon", "cliff", "island", "forest", "jungle", "rainforest",
        "savanna", "grassland", "steppe", "tundra", "field", "farmland", "rice paddy", "terrace", "vineyard",
        "red soil", "soil", "rock",
    ),
    "vegetation": (
        "vegetation", "palm tree", "coconut palm", "pine", "conifer", "birch", "eucalyptus", "cactus", "bamboo",
        "olive tree", "cypress", "baobab", "acacia", "banana", "tree", "shrub", "grass", "moss", "flower",
    ),
    "people and culture": (
        "clothing", "dress", "headscarf", "turban", "kimono", "sari", "hat", "uniform", "person", "people", "crowd",
        "festival", "currency", "food",
    ),
    "sky and climate": ("climate", "sky", "sun", "cloud", "fog", "tropical", "arid", "temperate"),
}
CLUE_VOCABULARY: tuple[str, ...] = tuple(dict.fromkeys(t for terms in CLUE_CATEGORIES.values() for t in terms))


def _key(term: str) -> str:
    return re.sub(r"[\s-]+", " ", term.strip().lower())


def _term_pattern(term: str) -> str:
    words = [re.escape(w) for w in re.split(r"[\s-]+", term.strip()) if w]
    return r"[\s-]+".join(words) + r"(?:e?s)?"


@lru_cache(maxsize=16)
def _matcher(vocabulary: tuple[str, ...]) -> tuple[re.Pattern, dict[str, str]]:
    terms = sorted(vocabulary, key=len, reverse=True)
    pattern = re.compile(r"(?<!\w)(" + "|".join(_term_pattern(t) for t in terms) + r")(?!\w)", re.I)
    return pattern, {_key(t): t for t in vocabulary}


def find_clues(text: str | None, vocabulary: Sequence[str] | None = None) -> list[str]:
    """The vocabulary terms a text mentions, in order of first mention, each once (canonical spelling)."""
    if not text:
        return []
    pattern, keys = _matcher(tuple(vocabulary or CLUE_VOCABULARY))
    out: dict[str, None] = {}
    for m in pattern.finditer(text):
        key = _key(m.group(1))
        for candidate in (key, key[:-1], key[:-2]):  # undo the plural the pattern allowed
            if candidate in keys:
                out.setdefault(keys[candidate])
                break
    return list(out)


def mentioned_clues(text: str | None, vocabulary: Sequence[str] | None = None) -> set[str]:
    """The set of vocabulary terms a text mentions (see `find_clues`)."""
    return set(find_clues(text, vocabulary))


_CLUES_LINE = re.compile(r"\bclues?\s*[:：]\s*([^\n.]+)", re.I)


def extract_entities(reasoning: str | None, vocabulary: Iterable[str] | None = None, max_entities: int = 8) -> list[str]:
    """The visual entities a reasoning names: the items of its `Clues:` list, then the vocabulary terms it mentions."""
    out: list[str] = []
    text = reasoning or ""
    for m in _CLUES_LINE.finditer(text):
        for item in re.split(r",|;|/|\band\b", m.group(1)):
            item = re.sub(r"^(?:an?|the)\s+", "", item.strip().lower())
            if item and len(item.split()) <= 4 and item not in out:
                out.append(item)
    for term in find_clues(text, tuple(vocabulary) if vocabulary is not None else None):
        # A term already inside a listed clue ("tram" in "red tram") names the same thing.
        if not any(re.search(rf"(?<!\w){re.escape(term)}", item) for item in out):
            out.append(term)
    return out[:max_entities]
