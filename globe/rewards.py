"""GLOBE's reward functions for TRL's `GRPOTrainer`, and their registry.

Every reward is a plain TRL reward function: `fn(completions, **columns) -> list[float]`. TRL calls it as
`fn(prompts=..., completions=..., completion_ids=..., trainer_state=..., log_metric=..., **dataset_columns)`; extra
keyword arguments are accepted and ignored. Completions may be strings or conversational message lists; both go
through the one parser, `globe.prompts.parse_completion`. Each function has a stable `__name__`, which TRL logs as
`rewards/<name>/mean`.

The paper's rewards (GLOBE, arXiv 2506.14674) and their default weights:

| name             | what it rewards                                                              | weight |
| ---------------- | ---------------------------------------------------------------------------- | ------ |
| `format`         | exactly `<think>…</think><answer>country: …\\ncity: …</answer>`, nothing after | 1.0    |
| `accuracy`       | 1.0 country and city right, 0.2 country only (GLOBE's string rule)           | 1.0    |
| `localizability` | the reward model's P(yes) for (image, reasoning)                             | 0.5    |
| `visual`         | share of the sample's verified `entities` mentioned in the reasoning         | 0.2    |

Ours, beyond the paper: `accuracy_normalized` (gazetteer matcher), `distance` (exp(-d / tau) of the great-circle
error, optionally with a tau schedule) and `visual_precision` (verified clues among the clues the reasoning mentions).

Anti-hedging rule (applies to `accuracy*` and `distance`): an answer value that names several places, joined by
`, / ; | & +` or the words `or`, `and`, `nor`, `vs`, `either`, earns nothing for that field, unless the whole value is
one gazetteer name (`globe.geo`: "Bosnia and Herzegovina", "Trinidad and Tobago", "Korea, Republic of",
"Washington, D.C.").
A city value may carry its own region and country ("city: Portland, OR", "city: Lyon, France": the whole resolves to
the city the first part names) without counting as a hedge; "Barcelona, Madrid" is a hedge. A value longer than
`MAX_VALUE_CHARS`, one without a letter, one holding coordinates or another field's label earns nothing either (the
geocoder would read "48.85N 2.35E" as a place: the task asks for names). A hedged city still lets a right country
earn the country credit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache

from globe.answer import Parsed, parse_completion, to_text
from globe.vocabulary import mentioned_clues

RewardFunc = Callable[..., list]

# Paper weights (GLOBE section 3.3): accuracy 1, localizability 0.5, visual grounding 0.2, format 1.
DEFAULT_WEIGHTS: dict[str, float] = {"format": 1.0, "accuracy": 1.0, "localizability": 0.5, "visual": 0.2}

# Longest real names are ~55 characters ("United Kingdom of Great Britain and Northern Ireland"); longer values are
# lists or spam.
MAX_VALUE_CHARS = 80

# ----------------------------------------------------------------------------------------------------------------
# Parsing and column helpers


def parse_all(completions: Iterable) -> list[Parsed]:
    """Parse a batch of completions (strings, bytes or message lists) with the shared parser."""
    return [parse_completion(c) for c in completions]


def _column(kwargs: Mapping, name: str, n: int, reward: str) -> list:
    if name not in kwargs or kwargs[name] is None:
        raise KeyError(f"reward {reward!r} needs the dataset column {name!r}; got columns {sorted(kwargs)}")
    values = list(kwargs[name])
    if len(values) != n:
        raise ValueError(f"reward {reward!r}: column {name!r} has {len(values)} values for {n} completions")
    return values


def _named(fn: Callable, name: str, required: tuple[str, ...] = ()) -> Callable:
    fn.__name__ = fn.__qualname__ = name
    fn.required_columns = required
    return fn


# ----------------------------------------------------------------------------------------------------------------
# The anti-hedging rule

_HEDGE = re.compile(r"\s*(?:[,/;|&+]|\b(?:or|and|nor|vs|versus|either)\b\.?)\s*", re.I)
_LABEL = re.compile(r"\b(?:country|city)\s*[:：]", re.I)
_LETTER = re.compile(r"[^\W\d_]")


def _is_single_place(value: str, kind: str) -> bool:
    """Whether the whole value is one gazetteer name ("Bosnia and Herzegovina", "Washington, D.C.", "Or Yehuda")."""
    from globe import geo

    gaz = geo.gazetteer()
    if gaz.country_of(value):
        return True
    return kind == "city" and geo.normalize(value) in gaz.name_index


def _city_with_region(value: str) -> bool:
    """Whether "city, region[, country]" names one city: it resolves to a city that the first part names, and every
    later part is that city's admin-1 region or country ("Portland, OR", "Lyon, France"; not "Barcelona, Madrid")."""
    from globe import geo

    parts = [part.strip() for part in value.split(",")]
    if len(parts) < 2 or not all(parts):
        return False
    head, tails = parts[0], parts[1:]
    if _HEDGE.search(head) and not _is_single_place(head, "city"):
        return False
    res = geo.geocode(value)
    if res.level != "city" or not geo.same_city(head, res, country=res.country_code):
        return False
    gaz = geo.gazetteer()
    for tail in tails:
        if gaz.country_of(tail) == res.country_code:
            continue
        region = geo.geocode(tail, country=res.country_code)
        if region.level == "admin" and region.admin1 == res.admin1:
            continue
        return False
    return True


def _looks_like_coordinates(value: str) -> bool:
    from globe import geo

    return any(ch.isdigit() for ch in value) and geo.parse_coordinates(value) is not None


def field_value(value: str | None, kind: str) -> str | None:
    """The answer value the rewards credit, or None when it earns nothing (absent, hedged, over-long, mislabelled).

    `kind` is "country" or "city"; a city may carry its region and country ("Portland, OR", "Lyon, France").
    """
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_VALUE_CHARS or _LABEL.search(value) or not _LETTER.search(value):
        return None
    if _looks_like_coordinates(value):
        return None  # the task asks for place names; the geocoder would otherwise read coordinates as a place
    if not _HEDGE.search(value) or _is_single_place(value, kind):
        return value
    if kind == "city" and _city_with_region(value):
        return value
    return None


def credited_place(p: Parsed) -> tuple[str | None, str | None]:
    """(country, city) that may earn credit, after the anti-hedging rule."""
    country = field_value(p.country, "country")
    city = field_value(p.city, "city")
    return country, city


# ----------------------------------------------------------------------------------------------------------------
# format


def format_reward(completions, **kwargs) -> list[float]:
    """1.0 for exactly one <think>…</think> then one <answer> with `country:` and `city:` lines and nothing after."""
    return [1.0 if p.format_ok else 0.0 for p in parse_all(completions)]


_named(format_reward, "format")


# ----------------------------------------------------------------------------------------------------------------
# accuracy

MATCHERS = ("globe", "normalized")


def _matchers(matcher: str) -> tuple[Callable[[str, str], bool], Callable[[str, str, str], bool]]:
    """(country matcher(pred, truth), city matcher(pred, truth, true_country))."""
    from globe import geo

    if matcher == "globe":
        return geo.globe_string_match, lambda pred, truth, country: geo.globe_string_match(pred, truth)
    if matcher == "normalized":
        # The true country narrows the city lookup ("Paris" in France, not Texas); the country matched already.
        return geo.same_country, lambda pred, truth, country: geo.same_city(pred, truth, country=country)
    raise ValueError(f"unknown matcher {matcher!r}; choose one of {MATCHERS}")


def _known(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def make_accuracy_reward(matcher: str = "globe", city_credit: float = 1.0, country_credit: float = 0.2,
                         name: str | None = None) -> RewardFunc:
    """GLOBE's accuracy reward: `city_credit` when country and city are right, `country_credit` for the country only.

    matcher: "globe" (the paper's string rule, `globe.geo.globe_string_match`: case-insensitive containment either
    way with a length ratio >= 0.7) or "normalized" (gazetteer matching, `globe.geo.same_country` / `same_city`).
    A right city with a wrong country earns 0, as in the paper. Columns: `country`, `city`; a sample without a
    country gets None (TRL leaves it out), one without a city can earn the country credit only.
    """
    if matcher not in MATCHERS:
        raise ValueError(f"unknown matcher {matcher!r}; choose one of {MATCHERS}")

    def reward(completions, country=None, city=None, **kwargs) -> list[float | None]:
        parsed = parse_all(completions)
        n = len(parsed)
        true_country = _column({"country": country}, "country", n, reward.__name__)
        true_city = _column({"city": city}, "city", n, reward.__name__)
        match_country, match_city = _matchers(matcher)
        out: list[float | None] = []
        for p, tc, tcity in zip(parsed, true_country, true_city):
            pc, pcity = credited_place(p)
            if not _known(tc):
                out.append(None)  # no ground truth: TRL leaves the sample out of this reward
            elif pc is None or not match_country(pc, tc):
                out.append(0.0)
            elif pcity is not None and _known(tcity) and match_city(pcity, tcity, tc):
                out.append(float(city_credit))
            else:
                out.append(float(country_credit))
        return out

    default = (city_credit, country_credit) == (1.0, 0.2)
    auto = "accuracy" + ("" if matcher == "globe" else f"_{matcher}")
    if not default:
        auto += f"_{city_credit:g}_{country_credit:g}"
    return _named(reward, name or auto, ("country", "city"))


# ----------------------------------------------------------------------------------------------------------------
# distance

SCHEDULES = ("constant", "linear", "cosine", "exponential")


@lru_cache(maxsize=65536)
def geocode_latlon(text: str) -> tuple[float, float] | None:
    """(lat, lon) of a place text through `globe.geo.geocode`, cached; None when unresolved or out of range."""
    from globe import geo

    if not text:
        return None
    res = geo.geocode(text)
    if res is None:
        return None
    lat, lon = getattr(res, "lat", None), getattr(res, "lon", None)
    if lat is None or lon is None:
        return None
    lat, lon = float(lat), float(lon)
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lat, lon


def tau_at(progress: float, tau_km: float, tau_end_km: float | None = None, schedule: str = "constant") -> float:
    """tau (km) at a training progress in [0, 1]: from `tau_km` to `tau_end_km` along `schedule`."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    if schedule == "constant" or tau_end_km is None:
        return float(tau_km)
    t = min(max(float(progress), 0.0), 1.0)
    if schedule == "linear":
        return tau_km + (tau_end_km - tau_km) * t
    if schedule == "cosine":
        return tau_end_km + (tau_km - tau_end_km) * 0.5 * (1 + math.cos(math.pi * t))
    return tau_km * (tau_end_km / tau_km) ** t  # exponential: geometric, even steps across km scales


def training_progress(trainer_state) -> float:
    """global_step / max_steps from TRL's `trainer_state` (0 when absent or unknown)."""
    if trainer_state is None:
        return 0.0
    step, total = getattr(trainer_state, "global_step", 0) or 0, getattr(trainer_state, "max_steps", 0) or 0
    return min(step / total, 1.0) if total > 0 else 0.0


def _truth_coord(value, name: str, lo: float, hi: float) -> float | None:
    if value is None:
        return None
    v = float(value)
    if math.isnan(v):
        return None
    if not (lo <= v <= hi):
        raise ValueError(f"ground-truth {name}={v} is outside [{lo}, {hi}]: fix the dataset")
    return v


def make_distance_reward(tau_km: float = 750.0, tau_end_km: float | None = None, schedule: str = "constant",
                         name: str | None = None) -> RewardFunc:
    """exp(-d / tau) of the great-circle error d (km) between the geocoded answer and the `lat` / `lon` columns.

    Credit flows below country level: a near-miss city earns more than a far one. `schedule` (constant, linear,
    cosine, exponential) moves tau from `tau_km` to `tau_end_km` over training, reading progress from TRL's
    `trainer_state` (global_step / max_steps); the current tau goes to TRL's `log_metric` as `distance_tau_km`.
    An unresolvable or hedged answer earns 0; a sample without coordinates gets None (TRL leaves it out).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")
    if tau_km <= 0 or (tau_end_km is not None and tau_end_km <= 0):
        raise ValueError("tau_km and tau_end_km must be positive")
    if schedule != "constant" and tau_end_km is None:
        raise ValueError(f"schedule {schedule!r} needs tau_end_km")

    def reward(completions, lat=None, lon=None, trainer_state=None, log_metric=None, **kwargs) -> list[float | None]:
        from globe import geo

        parsed = parse_all(completions)
        n = len(parsed)
        lats = _column({"lat": lat}, "lat", n, reward.__name__)
        lons = _column({"lon": lon}, "lon", n, reward.__name__)
        tau = tau_at(training_progress(trainer_state), tau_km, tau_end_km, schedule)
        if log_metric is not None and schedule != "constant":
            log_metric("distance_tau_km", tau)
        out: list[float | None] = []
        for p, la, lo in zip(parsed, lats, lons):
            la, lo = _truth_coord(la, "lat", -90, 90), _truth_coord(lo, "lon", -180, 180)
            if la is None or lo is None:
                out.append(None)
                continue
            country, city = credited_place(p)
            place = ", ".join(v for v in (city, country) if v)
            pred = geocode_latlon(place) if place else None
            if pred is None:
                out.append(0.0)
                continue
            d = float(geo.haversine_km(pred[0], pred[1], la, lo))
            out.append(math.exp(-d / tau))
        return out

    if name is None:
        name = "distance" if (tau_km, schedule) == (750.0, "constant") else f"distance_tau{tau_km:g}"
        if schedule != "constant":
            name += f"to{tau_end_km:g}_{schedule}"
    return _named(reward, name, ("lat", "lon"))


# ----------------------------------------------------------------------------------------------------------------
# visual grounding

VISUAL_MODES = ("recall", "precision")
ENTITY_RULES = ("mention", "word")


def _entity_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):  # a single entity, not a list of characters
        value = [value]
    return [e.strip() for e in value if isinstance(e, str) and e.strip()]


def _mentions(entity: str, text_lower: str, rule: str) -> bool:
    e = entity.lower()
    if rule == "mention":
        return e in text_lower
    return re.search(r"(?<!\w)" + re.escape(e) + r"(?!\w)", text_lower) is not None


def make_visual_reward(mode: str = "recall", rule: str = "mention", name: str | None = None) -> RewardFunc:
    """Visual grounding from the sample's verified `entities` (a list column) and the reasoning (the think part).

    recall (the paper's): the share of verified entities the reasoning mentions. rule "mention" is the official
    case-insensitive substring test; "word" needs whole words ("car" is not in "scarf").
    precision (ours): verified clues among the clues the reasoning mentions, where the mentioned clues are the
    `globe.vocabulary` terms found in the reasoning plus the entities it names; a vocabulary term is verified when a
    verified entity contains it. Listing every clue word (a hack recall pays for) earns little precision.
    No entities, or no reasoning, earns 0.
    """
    if mode not in VISUAL_MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {VISUAL_MODES}")
    if rule not in ENTITY_RULES:
        raise ValueError(f"unknown entity rule {rule!r}; choose one of {ENTITY_RULES}")

    def reward(completions, entities=None, **kwargs) -> list[float]:
        parsed = parse_all(completions)
        all_entities = _column({"entities": entities}, "entities", len(parsed), reward.__name__)
        out = []
        for p, ents in zip(parsed, all_entities):
            ents = list(dict.fromkeys(_entity_list(ents)))
            think = (p.think or "").lower()
            if not ents or not think:
                out.append(0.0)
                continue
            named = {e.lower() for e in ents if _mentions(e, think, rule)}
            if mode == "recall":
                out.append(sum(_mentions(e, think, rule) for e in ents) / len(ents))
                continue
            verified_terms = set().union(*(mentioned_clues(e) for e in ents))
            terms = mentioned_clues(think)
            mentioned = terms | named
            verified = (terms & verified_terms) | named
            out.append(len(verified) / len(mentioned) if mentioned else 0.0)
        return out

    auto = "visual" + ("" if mode == "recall" else f"_{mode}") + ("" if rule == "mention" else f"_{rule}")
    return _named(reward, name or auto, ("entities",))


# ----------------------------------------------------------------------------------------------------------------
# localizability (the reward model)


def _first_image(value):
    if isinstance(value, (list, tuple)):  # TRL's `images` column: a list of images per sample
        return value[0] if value else None
    return value


def make_localizability_reward(scorer, name: str = "localizability", text: str | None = None) -> RewardFunc:
    """The reward model's score of (image, reasoning) for each completion.

    `scorer` has `score(images, reasonings) -> list[float]` in [0, 1] (`globe.reward_model.LocalizabilityScorer`
    or `EndpointScorer`). The image comes from the `image` column (or the first of `images`). What is judged is
    `text`: "reasoning" (the think part; a completion without one earns 0 without being scored: there is nothing to
    judge) or "completion" (the whole completion, GLOBE's official reward-model input; an empty one earns 0); None:
    what the scorer says it reads (its `input_text`, "reasoning" when it does not say). Scorer errors propagate (the
    scorer counts failures and raises past its error budget); malformed scores raise.
    """
    if not callable(getattr(scorer, "score", None)):
        raise TypeError(f"scorer must have a score(images, reasonings) method; got {type(scorer).__name__}")
    text = text or getattr(scorer, "input_text", None) or "reasoning"
    if text not in ("reasoning", "completion"):
        raise ValueError(f"localizability reward: text must be 'reasoning' or 'completion', got {text!r}")

    def reward(completions, image=None, images=None, **kwargs) -> list[float]:
        parsed = parse_all(completions)
        n = len(parsed)
        if image is not None:
            imgs = _column({"image": image}, "image", n, reward.__name__)
        elif images is not None:
            imgs = [_first_image(v) for v in _column({"images": images}, "images", n, reward.__name__)]
        else:
            raise KeyError(f"reward {reward.__name__!r} needs the dataset column 'image' (or 'images')")
        judged = ([p.think for p in parsed] if text == "reasoning"
                  else [to_text(c) if to_text(c).strip() else None for c in completions])
        todo = [i for i, t in enumerate(judged) if t]
        missing = [i for i in todo if imgs[i] is None]
        if missing:
            raise ValueError(f"reward {reward.__name__!r}: samples {missing[:5]} have no image")
        out = [0.0] * n
        if not todo:
            return out
        scores = list(scorer.score([imgs[i] for i in todo], [judged[i] for i in todo]))
        if len(scores) != len(todo):
            raise ValueError(f"scorer returned {len(scores)} scores for {len(todo)} reasonings")
        for i, s in zip(todo, scores):
            s = float(s)
            if not (0.0 <= s <= 1.0):  # NaN fails too
                raise ValueError(f"scorer returned {s} outside [0, 1]")
            out[i] = s
        return out

    return _named(reward, name, ("image",))


# ----------------------------------------------------------------------------------------------------------------
# Registry

accuracy_reward = make_accuracy_reward("globe")
accuracy_normalized_reward = make_accuracy_reward("normalized")
distance_reward = make_distance_reward()
visual_reward = make_visual_reward("recall")
visual_precision_reward = make_visual_reward("precision")

# Ready-made rewards by name (localizability needs a scorer: see `get_reward_funcs`).
REWARDS: dict[str, RewardFunc] = {
    f.__name__: f
    for f in (format_reward, accuracy_reward, accuracy_normalized_reward, distance_reward, visual_reward,
              visual_precision_reward)
}

# Names that take options (a mapping in the rewards spec) and the factory building them.
FACTORIES: dict[str, Callable[..., RewardFunc]] = {
    "accuracy": make_accuracy_reward,
    "distance": make_distance_reward,
    "visual": make_visual_reward,
    "localizability": make_localizability_reward,
}


def _entries(spec) -> list[tuple[str, float, dict]]:
    """Normalise a rewards spec to [(name, weight, options)]."""
    if isinstance(spec, Mapping) and "rewards" in spec and isinstance(spec["rewards"], (Mapping, list, tuple)):
        spec = spec["rewards"]  # a whole params group such as `grpo`
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, Mapping):
        entries = []
        for key, value in spec.items():
            if isinstance(value, Mapping):
                opts = dict(value)
                weight = float(opts.pop("weight", 1.0))
                entries.append((str(key), weight, opts))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                entries.append((str(key), float(value), {}))
            else:
                raise TypeError(f"reward {key!r}: expected a weight or a mapping with 'weight', got {value!r}")
        return entries
    if isinstance(spec, Sequence):
        return [(str(name), 1.0, {}) for name in spec]
    raise TypeError(f"rewards spec must be a name list or a name -> weight mapping, got {type(spec).__name__}")


def get_reward_funcs(spec=None, scorer=None) -> list[RewardFunc]:
    """Reward functions for a spec, in its order.

    spec: a list of names (["format", "accuracy"]); a mapping name -> weight ({format: 1.0, accuracy: 1.0,
    localizability: 0.5, visual: 0.2}); a mapping name -> {weight: w, **factory options} (e.g. {distance:
    {weight: 0.5, tau_km: 2500, tau_end_km: 25, schedule: cosine}}; the name is the factory's, the function gets the
    factory's name for those options); or a params group holding such a mapping under `rewards`. None: the paper's
    `DEFAULT_WEIGHTS`. `scorer` is needed for `localizability`.
    """
    funcs = []
    for name, _, opts in _entries(DEFAULT_WEIGHTS if spec is None else spec):
        if name == "localizability":
            if scorer is None:
                raise ValueError("the localizability reward needs a scorer (globe.reward_model.LocalizabilityScorer "
                                 "or EndpointScorer): get_reward_funcs(spec, scorer=...)")
            funcs.append(make_localizability_reward(scorer, **opts))
        elif opts:
            if name not in FACTORIES:
                raise KeyError(f"reward {name!r} takes no options; options are for {sorted(FACTORIES)}")
            funcs.append(FACTORIES[name](**opts))
        elif name in REWARDS:
            funcs.append(REWARDS[name])
        else:
            raise KeyError(f"unknown reward {name!r}; known: {sorted([*REWARDS, 'localizability'])}")
    names = [f.__name__ for f in funcs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"rewards {dupes} appear twice (TRL logs rewards by name); give one a `name` option")
    return funcs


def get_reward_weights(spec=None) -> list[float]:
    """The weights for `get_reward_funcs(spec)`, in the same order (GRPOConfig's `reward_weights`)."""
    return [w for _, w, _ in _entries(DEFAULT_WEIGHTS if spec is None else spec)]


class _UnusedScorer:
    """Stands in for the reward model while a spec is only checked (never asked to score)."""

    def score(self, images, reasonings):  # pragma: no cover - never called
        raise RuntimeError("a checked reward spec must not score")


def check_reward_spec(spec) -> list[str]:
    """The reward names a spec gives, after checking it the way `get_reward_funcs` would (unknown names, options a
    factory does not take, duplicate names), without loading a reward model: params are validated in milliseconds."""
    return [f.__name__ for f in get_reward_funcs(spec, scorer=_UnusedScorer())]
