"""GLOBE's TRL reward functions on hand-written completions, including the reward hacks a policy finds."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from globe import rewards as R
from globe.rewards import (
    DEFAULT_WEIGHTS,
    REWARDS,
    format_reward,
    get_reward_funcs,
    get_reward_weights,
    make_accuracy_reward,
    make_distance_reward,
    make_localizability_reward,
    make_visual_reward,
)
from globe.vocabulary import CLUE_VOCABULARY, mentioned_clues

LYON = (45.764, 4.8357)


def C(country="France", city="Lyon", think="Gothic church, French road signs.") -> str:
    return f"<think>{think}</think>\n<answer>country: {country}\ncity: {city}</answer>"


def chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def reward_breakdown(completions, rewards=None, scorer=None, **columns):
    """Every reward of a spec (default: every ready-made reward whose columns are given) on a batch: one column per
    reward, plus the weighted `total` when a spec is given."""
    import pandas as pd

    completions = list(completions)
    if rewards is None:
        funcs = [f for f in REWARDS.values() if all(columns.get(c) is not None for c in f.required_columns)]
        weights = None
    else:
        funcs, weights = get_reward_funcs(rewards, scorer=scorer), get_reward_weights(rewards)
    df = pd.DataFrame({f.__name__: f(completions=completions, **columns) for f in funcs},
                      index=pd.RangeIndex(len(completions))).astype(float)
    if weights is not None:
        df["total"] = sum(df[f.__name__].fillna(0.0) * w for f, w in zip(funcs, weights))
    return df


def one(fn, completion, **cols):
    """Call a reward the way TRL does, for one completion, and return its single value."""
    cols = {k: [v] for k, v in cols.items()}
    out = fn(prompts=["p"], completions=[completion], completion_ids=[[1, 2]], trainer_state=None,
             log_extra=lambda *a: None, log_metric=lambda *a: None, **cols)
    assert isinstance(out, list) and len(out) == 1
    return out[0]


# ---- format ---------------------------------------------------------------------------------------------------

GOOD = C()

FORMAT_CASES = [
    ("plain", GOOD, 1.0),
    ("conversational", chat(GOOD), 1.0),
    ("bytes", GOOD.encode(), 1.0),
    ("surrounding whitespace", "\n  " + GOOD + "\n\n", 1.0),
    ("emoji in think", C(think="Sunny 🌞 beach with 🌴 palm trees"), 1.0),
    ("lone surrogate in think", C(think="odd \ud800 text"), 1.0),
    ("invalid utf-8 bytes", C(think="x").encode().replace(b"x", b"\xff\xfe"), 1.0),
    ("no think", "<answer>country: France\ncity: Lyon</answer>", 0.0),
    ("empty answer", "<think>hmm</think><answer></answer>", 0.0),
    ("missing city line", "<think>hmm</think><answer>country: France</answer>", 0.0),
    ("empty city value", "<think>hmm</think><answer>country: France\ncity: </answer>", 0.0),
    ("text after answer", GOOD + " Hope this helps!", 0.0),
    ("two answer blocks", GOOD + "\n<answer>country: Spain\ncity: Madrid</answer>", 0.0),
    ("answer tags inside think", "<think>x <answer>country: Spain\ncity: Madrid</answer></think>"
                                 "<answer>country: France\ncity: Lyon</answer>", 0.0),
    ("two think blocks", "<think>a</think><think>b</think><answer>country: France\ncity: Lyon</answer>", 0.0),
    ("truncated", GOOD[:-6], 0.0),
    ("answer before think", "<answer>country: France\ncity: Lyon</answer><think>x</think>", 0.0),
    ("empty string", "", 0.0),
    ("none", None, 0.0),
    ("empty message list", [], 0.0),
]


@pytest.mark.parametrize("label,completion,expected", FORMAT_CASES, ids=[c[0] for c in FORMAT_CASES])
def test_format(label, completion, expected):
    assert one(format_reward, completion) == expected


# ---- accuracy (paper's string rule and the normalized matcher) ------------------------------------------------

ACCURACY_CASES = [
    # label, completion, truth country, truth city, globe rule, normalized
    ("right", C(), "France", "Lyon", 1.0, 1.0),
    ("right, other case", C("FRANCE", "lyon"), "France", "Lyon", 1.0, 1.0),
    ("conversational", chat(C()), "France", "Lyon", 1.0, 1.0),
    ("country only", C("France", "Marseille"), "France", "Lyon", 0.2, 0.2),
    ("city right, country wrong", C("Belgium", "Lyon"), "France", "Lyon", 0.0, 0.0),
    ("wrong", C("Spain", "Madrid"), "France", "Lyon", 0.0, 0.0),
    ("compound country", C("Bosnia and Herzegovina", "Sarajevo"), "Bosnia and Herzegovina", "Sarajevo", 1.0, 1.0),
    ("compound country 2", C("Trinidad and Tobago", "Port of Spain"), "Trinidad and Tobago", "Port of Spain",
     1.0, 1.0),
    ("compound city", C("United States", "Washington, D.C."), "United States", "Washington, D.C.", 1.0, 1.0),
    ("alias (normalized only)", C("Deutschland", "München"), "Germany", "Munich", 0.0, 1.0),
    ("city with its own country", C("France", "Lyon, France"), "France", "Lyon", 0.2, 1.0),
    ("city with its state", C("United States", "Portland, OR"), "United States", "Portland", 0.2, 1.0),
    # hedging: listing places earns nothing for that field
    ("hedged countries, comma", C("France, Spain, Italy", "Lyon"), "France", "Lyon", 0.0, 0.0),
    ("hedged countries, or", C("France or Spain", "Lyon"), "France", "Lyon", 0.0, 0.0),
    ("hedged countries, slash", C("Iran/Iraq", "Tehran"), "Iran", "Tehran", 0.0, 0.0),
    # GLOBE's containment rule alone would pay this one (24/31 >= 0.7): the hedge rule does not
    ("hedged, passes ratio", C("Chad / Central African Republic", "Bangui"), "Central African Republic", "Bangui",
     0.0, 0.0),
    ("hedged city keeps country credit", C("France", "Lyon or Paris"), "France", "Lyon", 0.2, 0.2),
    ("hedged city, and", C("France", "Lyon and Grenoble"), "France", "Lyon", 0.2, 0.2),
    ("spam value", C("France " * 30, "Lyon"), "France", "Lyon", 0.0, 0.0),
    ("coordinates as answer", C("45.76N 4.83E", "45.76, 4.84"), "France", "Lyon", 0.0, 0.0),
    ("numbers as answer", C("45.76", "4.84"), "France", "Lyon", 0.0, 0.0),
    ("empty answer", "<think>x</think><answer></answer>", "France", "Lyon", 0.0, 0.0),
    ("empty country swallows next line", "<think>x</think><answer>country:\ncity: France</answer>", "France", "Lyon",
     0.0, 0.0),
    ("several answer blocks", C() + C("Spain", "Madrid"), "France", "Lyon", 0.0, 0.0),
    ("answer only inside think", "<think><answer>country: France\ncity: Lyon</answer></think>", "France", "Lyon",
     0.0, 0.0),
    ("answer inside think, real answer outside", "<think><answer>country: Spain\ncity: Madrid</answer></think>"
     "<answer>country: France\ncity: Lyon</answer>", "France", "Lyon", 1.0, 1.0),
    ("two country lines", "<think>x</think><answer>country: France\ncountry: Spain\ncity: Lyon</answer>", "France",
     "Lyon", 0.0, 0.0),
    ("emoji in think", C(think="🇫🇷🥐 bakery"), "France", "Lyon", 1.0, 1.0),
    ("lone surrogate in answer", C("France", "Lyon\ud800"), "France", "Lyon", 1.0, 1.0),  # read as "Lyon?"
    ("invalid utf-8 bytes", C().encode() + b"\xff", "France", "Lyon", 1.0, 1.0),
    ("no ground-truth city", C(), "France", None, 0.2, 0.2),
    ("no ground truth", C(), None, None, None, None),
]


@pytest.mark.parametrize("label,completion,country,city,globe_rule,normalized", ACCURACY_CASES,
                         ids=[c[0] for c in ACCURACY_CASES])
def test_accuracy(label, completion, country, city, globe_rule, normalized):
    assert one(REWARDS["accuracy"], completion, country=country, city=city) == globe_rule
    assert one(REWARDS["accuracy_normalized"], completion, country=country, city=city) == normalized


def test_accuracy_batch_and_missing_columns():
    fn = make_accuracy_reward("globe")
    out = fn([C(), C("France", "Nice"), C("Peru", "Lima")], country=["France"] * 3, city=["Lyon"] * 3)
    assert out == [1.0, 0.2, 0.0]
    with pytest.raises(KeyError, match="country"):
        fn([C()], city=["Lyon"])
    with pytest.raises(ValueError, match="2 values for 1"):
        fn([C()], country=["France", "France"], city=["Lyon", "Lyon"])
    with pytest.raises(ValueError, match="matcher"):
        make_accuracy_reward("fuzzy")


def test_accuracy_credits_are_configurable():
    fn = make_accuracy_reward("globe", city_credit=2.0, country_credit=0.5)
    assert fn.__name__ == "accuracy_2_0.5"
    assert fn([C(), C("France", "Nice")], country=["France"] * 2, city=["Lyon"] * 2) == [2.0, 0.5]


# ---- the anti-hedging rule -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,kind,expected", [
    ("France", "country", "France"),
    ("Bosnia and Herzegovina", "country", "Bosnia and Herzegovina"),
    ("Korea, Republic of", "country", "Korea, Republic of"),
    ("Saint Kitts and Nevis", "country", "Saint Kitts and Nevis"),
    ("France & Belgium", "country", None),
    ("France + Belgium", "country", None),
    ("either France nor Spain", "country", None),
    ("Or Yehuda", "city", "Or Yehuda"),
    ("Washington, D.C.", "city", "Washington, D.C."),
    ("Lyon, France", "city", "Lyon, France"),
    ("Portland, OR", "city", "Portland, OR"),
    ("Paris, Texas", "city", "Paris, Texas"),
    ("Lyon, Spain", "city", None),
    ("Lyon, Paris", "city", None),
    ("Barcelona, Madrid", "city", None),
    ("Lyon or Paris, France", "city", None),
    ("Lyon, France or Spain", "city", None),
    ("country: France", "city", None),
    ("🇫🇷", "country", None),
    ("48.85N 2.35E", "city", None),
    ("", "country", None),
    (None, "country", None),
])
def test_field_value(value, kind, expected):
    assert R.field_value(value, kind) == expected


# ---- distance -------------------------------------------------------------------------------------------------

def test_distance_rewards_closeness_below_country_level():
    fn = REWARDS["distance"]
    lat, lon = LYON
    exact, near, far, country, wrong = fn(
        [C(), C("France", "Villeurbanne"), C("France", "Marseille"), C("France", "Qwxzv"),
         C("Japan", "Tokyo")], lat=[lat] * 5, lon=[lon] * 5)
    assert exact > 0.99
    assert 1.0 > exact >= near > far > wrong >= 0.0
    assert far == pytest.approx(math.exp(-278 / 750), abs=0.02)  # Lyon-Marseille is ~278 km
    assert 0.0 < country < exact  # an unknown city falls back to the country's centroid
    assert wrong < 0.001


@pytest.mark.parametrize("label,completion,expected", [
    ("unresolvable", C("Zzyqx", "Qwxzv"), 0.0),
    ("empty answer", "<think>x</think><answer></answer>", 0.0),
    ("no answer", "<think>only thinking</think>", 0.0),
    ("coordinates as answer", C("45.76N 4.83E", "45.76, 4.84"), 0.0),
    ("hedged country and city", C("France or Spain", "Lyon or Madrid"), 0.0),
    ("several answer blocks", C() + C(), 0.0),
    ("invalid utf-8", b"\xff\xfe" + C().encode(), None),  # stray bytes before the tags do not change the answer
])
def test_distance_hacks(label, completion, expected):
    value = one(REWARDS["distance"], completion, lat=LYON[0], lon=LYON[1])
    if expected is None:
        assert value > 0.99
    else:
        assert value == expected


def test_distance_hedged_city_falls_back_to_country():
    fn = REWARDS["distance"]
    hedged, country_only = fn([C("France", "Lyon or Paris"), C("France", "Qwxzv")], lat=[LYON[0]] * 2,
                              lon=[LYON[1]] * 2)
    assert hedged == pytest.approx(country_only)


def test_distance_ground_truth():
    fn = REWARDS["distance"]
    assert fn([C(), C()], lat=[float("nan"), None], lon=[1.0, 1.0]) == [None, None]
    with pytest.raises(ValueError, match="lat=95"):
        fn([C()], lat=[95.0], lon=[0.0])
    with pytest.raises(ValueError, match="lon=-181"):
        fn([C()], lat=[0.0], lon=[-181.0])
    with pytest.raises(KeyError, match="lat"):
        fn([C()], lon=[0.0])


def test_distance_tau_and_schedule():
    assert R.tau_at(0.0, 2500, 25, "exponential") == pytest.approx(2500)
    assert R.tau_at(0.5, 2500, 25, "exponential") == pytest.approx(250)
    assert R.tau_at(1.0, 2500, 25, "cosine") == pytest.approx(25)
    assert R.tau_at(0.5, 100, 50, "linear") == pytest.approx(75)
    assert R.tau_at(0.7, 100, None, "constant") == 100
    fn = make_distance_reward(tau_km=2500, tau_end_km=25, schedule="cosine")
    assert fn.__name__ == "distance_tau2500to25_cosine"
    assert make_distance_reward(tau_km=200).__name__ == "distance_tau200"
    metrics = []
    comp, lat, lon = [C("France", "Marseille")], [LYON[0]], [LYON[1]]
    start = fn(comp, lat=lat, lon=lon, trainer_state=SimpleNamespace(global_step=0, max_steps=100),
               log_metric=lambda k, v: metrics.append((k, v)))
    end = fn(comp, lat=lat, lon=lon, trainer_state=SimpleNamespace(global_step=100, max_steps=100),
             log_metric=lambda k, v: metrics.append((k, v)))
    assert start[0] > 0.8 and end[0] < 1e-3
    assert metrics == [("distance_tau_km", pytest.approx(2500)), ("distance_tau_km", pytest.approx(25))]
    # no trainer state (e.g. a notebook): the start of the schedule
    assert fn(comp, lat=lat, lon=lon) == start
    with pytest.raises(ValueError, match="tau_end_km"):
        make_distance_reward(schedule="linear")
    with pytest.raises(ValueError, match="schedule"):
        make_distance_reward(tau_end_km=10, schedule="step")
    with pytest.raises(ValueError, match="positive"):
        make_distance_reward(tau_km=0)


def test_geocoding_is_cached():
    R.geocode_latlon.cache_clear()
    REWARDS["distance"]([C()] * 5, lat=[LYON[0]] * 5, lon=[LYON[1]] * 5)
    info = R.geocode_latlon.cache_info()
    assert info.misses == 1 and info.hits == 4


# ---- visual grounding -----------------------------------------------------------------------------------------

ENTITIES = ["red double-decker bus", "Cyrillic text", "onion dome"]

VISUAL_CASES = [
    # label, think, entities, recall, precision
    ("all mentioned", "A red Double-Decker Bus passes an onion dome; words in cyrillic text.", ENTITIES, 1.0, 1.0),
    ("one of three", "I see an onion dome.", ENTITIES, pytest.approx(1 / 3), 1.0),
    ("none", "Nothing to see.", ENTITIES, 0.0, 0.0),
    ("unverified clue lowers precision", "An onion dome and palm trees.", ENTITIES, pytest.approx(1 / 3),
     pytest.approx(2 / 3)),  # mentioned: onion dome (entity), dome (verified), palm tree (not verified)
    ("empty entities", "A red double-decker bus.", [], 0.0, 0.0),
    ("no entities", "A red double-decker bus.", None, 0.0, 0.0),
    ("entity string, not list", "An onion dome.", "onion dome", 1.0, 1.0),
    ("repeated spam", "onion dome " * 500, ENTITIES, pytest.approx(1 / 3), 1.0),
    # dumping the clue vocabulary: the official recall rule pays for it, precision does not
    ("vocabulary dump", " ".join(CLUE_VOCABULARY) + " red double-decker bus onion dome cyrillic text", ENTITIES,
     1.0, pytest.approx(7 / (len(CLUE_VOCABULARY) + 3), abs=0.01)),
    ("emoji", "🚌 red double-decker bus 🇬🇧", ENTITIES, pytest.approx(1 / 3), 1.0),
]


@pytest.mark.parametrize("label,think,entities,recall,precision", VISUAL_CASES, ids=[c[0] for c in VISUAL_CASES])
def test_visual(label, think, entities, recall, precision):
    completion = C(think=think)
    assert one(REWARDS["visual"], completion, entities=entities) == recall
    assert one(REWARDS["visual_precision"], completion, entities=entities) == precision


@pytest.mark.parametrize("completion", [
    "<answer>country: France\ncity: Lyon</answer> red double-decker bus",  # clues outside think do not count
    "",
    "<think></think><answer>country: France\ncity: Lyon</answer>",
])
def test_visual_needs_reasoning(completion):
    assert one(REWARDS["visual"], completion, entities=ENTITIES) == 0.0
    assert one(REWARDS["visual_precision"], completion, entities=ENTITIES) == 0.0


def test_visual_word_rule():
    think = C(think="A woman in a scarf.")
    assert one(make_visual_reward(rule="mention"), think, entities=["car"]) == 1.0  # the official substring rule
    word = make_visual_reward(rule="word")
    assert word.__name__ == "visual_word"
    assert one(word, think, entities=["car"]) == 0.0
    assert one(word, C(think="A car."), entities=["car"]) == 1.0
    with pytest.raises(KeyError, match="entities"):
        REWARDS["visual"]([C()])
    with pytest.raises(ValueError, match="mode"):
        make_visual_reward(mode="f1")


def test_clue_vocabulary():
    assert len(CLUE_VOCABULARY) == len(set(CLUE_VOCABULARY)) > 100
    assert all(t == t.strip().lower() for t in CLUE_VOCABULARY)
    found = mentioned_clues("Two Palm Trees, a road-sign and license plates; a scarf. Tree-lined street.")
    assert found == {"palm tree", "road sign", "license plate", "tree", "street"}  # "car" not in "scarf"
    assert mentioned_clues(None) == set()
    # singular and plural are one term, so a verified "cloud" entity verifies "clouds" in the reasoning
    assert mentioned_clues("a cloud, a flower") == mentioned_clues("clouds and flowers") == {"cloud", "flower"}


# ---- localizability -------------------------------------------------------------------------------------------

class RecordingScorer:
    """A scorer double: the real API (score(images, reasonings) -> list[float]) with canned scores."""

    def __init__(self, value=0.75, fail=None):
        self.calls, self.value, self.fail = [], value, fail

    def score(self, images, reasonings):
        self.calls.append((list(images), list(reasonings)))
        if self.fail:
            raise self.fail
        return [self.value(r) if callable(self.value) else self.value for r in reasonings]


def test_localizability_scores_image_and_reasoning():
    scorer = RecordingScorer(value=lambda r: min(len(r) / 100, 1.0))
    fn = make_localizability_reward(scorer)
    assert fn.__name__ == "localizability"
    comps = [C(think="x" * 50), "<answer>country: France\ncity: Lyon</answer>", chat(C(think="y" * 200))]
    out = fn(prompts=["p"] * 3, completions=comps, image=["img0", "img1", "img2"], trainer_state=None)
    assert out == [0.5, 0.0, 1.0]  # no reasoning: 0 without asking the reward model
    assert scorer.calls == [(["img0", "img2"], ["x" * 50, "y" * 200])]
    # TRL's `images` column: a list of images per sample (the first one is scored)
    scorer2 = RecordingScorer()
    assert make_localizability_reward(scorer2)(completions=[C()], images=[["a", "b"]]) == [0.75]
    assert scorer2.calls[0][0] == ["a"]


def test_localizability_failures_surface():
    with pytest.raises(RuntimeError, match="error budget"):
        make_localizability_reward(RecordingScorer(fail=RuntimeError("error budget exceeded")))([C()], image=["i"])
    with pytest.raises(ValueError, match="outside"):
        make_localizability_reward(RecordingScorer(value=float("nan")))([C()], image=["i"])
    with pytest.raises(ValueError, match="outside"):
        make_localizability_reward(RecordingScorer(value=1.5))([C()], image=["i"])

    class Short:
        def score(self, images, reasonings):
            return []

    with pytest.raises(ValueError, match="0 scores for 1"):
        make_localizability_reward(Short())([C()], image=["i"])
    with pytest.raises(KeyError, match="image"):
        make_localizability_reward(RecordingScorer())([C()])
    with pytest.raises(ValueError, match="no image"):
        make_localizability_reward(RecordingScorer())([C()], image=[None])
    with pytest.raises(TypeError, match="score"):
        make_localizability_reward(object())


def test_localizability_without_reasoning_skips_scorer():
    scorer = RecordingScorer()
    assert make_localizability_reward(scorer)(["", None, "<think></think>"], image=["a", "b", "c"]) == [0.0] * 3
    assert scorer.calls == []


# ---- registry -------------------------------------------------------------------------------------------------

def test_registry_names_are_stable():
    assert list(REWARDS) == ["format", "accuracy", "accuracy_normalized", "distance", "visual", "visual_precision"]
    for name, fn in REWARDS.items():
        assert fn.__name__ == name
    assert DEFAULT_WEIGHTS == {"format": 1.0, "accuracy": 1.0, "localizability": 0.5, "visual": 0.2}


def test_get_reward_funcs_from_params_shapes():
    scorer = RecordingScorer()
    funcs = get_reward_funcs(DEFAULT_WEIGHTS, scorer=scorer)
    assert [f.__name__ for f in funcs] == ["format", "accuracy", "localizability", "visual"]
    assert get_reward_weights(DEFAULT_WEIGHTS) == [1.0, 1.0, 0.5, 0.2]
    assert [f.__name__ for f in get_reward_funcs(["format", "accuracy_normalized"])] == ["format",
                                                                                       "accuracy_normalized"]
    assert get_reward_weights(["format", "accuracy"]) == [1.0, 1.0]
    spec = {"rewards": {"format": 1.0, "accuracy": {"weight": 1.0, "matcher": "normalized"},
                        "distance": {"weight": 0.5, "tau_km": 2500, "tau_end_km": 25, "schedule": "exponential"},
                        "visual": {"weight": 0.2, "mode": "precision"}}, "steps": 4}
    assert [f.__name__ for f in get_reward_funcs(spec)] == ["format", "accuracy_normalized",
                                                           "distance_tau2500to25_exponential", "visual_precision"]
    assert get_reward_weights(spec) == [1.0, 1.0, 0.5, 0.2]
    assert [f.__name__ for f in get_reward_funcs(None, scorer=scorer)] == list(DEFAULT_WEIGHTS)


def test_get_reward_funcs_errors():
    with pytest.raises(ValueError, match="scorer"):
        get_reward_funcs(DEFAULT_WEIGHTS)
    with pytest.raises(KeyError, match="unknown reward"):
        get_reward_funcs(["fromat"])
    with pytest.raises(KeyError, match="takes no options"):
        get_reward_funcs({"format": {"weight": 1.0, "strict": True}})
    with pytest.raises(ValueError, match="twice"):
        get_reward_funcs(["accuracy", "accuracy"])
    # the same variant twice under its factory name is a clash too; a `name` option resolves it
    with pytest.raises(ValueError, match="twice"):
        get_reward_funcs({"accuracy_normalized": 1.0, "accuracy": {"weight": 0.5, "matcher": "normalized"}})
    named = get_reward_funcs({"accuracy_normalized": 1.0,
                              "accuracy": {"weight": 0.5, "matcher": "normalized", "name": "acc_half"}})
    assert [f.__name__ for f in named] == ["accuracy_normalized", "acc_half"]
    with pytest.raises(TypeError, match="weight"):
        get_reward_funcs({"format": "high"})


def test_rewards_accept_trl_call_and_batch_shapes():
    """Every reward takes TRL's keyword call with extra columns and returns one float (or None) per completion."""
    comps = [C(), chat(C("Spain", "Madrid")), "garbage", b"\xff\xfe", None]
    n = len(comps)
    cols = dict(country=["France"] * n, city=["Lyon"] * n, lat=[LYON[0]] * n, lon=[LYON[1]] * n,
                entities=[ENTITIES] * n, image=["img"] * n, id=list(range(n)), reasoning=["r"] * n)
    funcs = [*REWARDS.values(), make_localizability_reward(RecordingScorer())]
    for fn in funcs:
        out = fn(prompts=["p"] * n, completions=comps, completion_ids=[[0]] * n,
                 trainer_state=SimpleNamespace(global_step=1, max_steps=2), log_extra=lambda *a: None,
                 log_metric=lambda *a: None, **cols)
        assert len(out) == n, fn.__name__
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in out), (fn.__name__, out)


def test_very_long_and_spammy_outputs():
    spam_think = "bus " * 50_000
    long_good = C(think=spam_think)
    spaces_in_value = "<think>x</think><answer>country: Fr" + " " * 50_000 + "ance\ncity: Lyon</answer>"
    no_close = "<think>" + "la " * 100_000
    cols = dict(country=["France"] * 3, city=["Lyon"] * 3, lat=[LYON[0]] * 3, lon=[LYON[1]] * 3,
                entities=[["bus"]] * 3)
    df = reward_breakdown([long_good, spaces_in_value, no_close], **cols)
    assert df.loc[0, "format"] == 1.0 and df.loc[0, "accuracy"] == 1.0 and df.loc[0, "visual"] == 1.0
    assert df.loc[1, "format"] == 1.0 and df.loc[1, "accuracy"] == 0.0  # "Fr ance" is not France
    assert df.loc[2].tolist() == [0.0] * len(df.columns)


def test_random_garbage_never_raises():
    """Shuffled fragments of tags, fields, emoji, bytes and surrogates: every reward returns a value in [0, 1]."""
    import random

    rng = random.Random(0)
    pieces = ["<think>", "</think>", "<answer>", "</answer>", "country: ", "city: ", "France", "Lyon", "\n", " or ",
              ", ", "🇫🇷", "\ud83d", "\x00", "bus", "45.7N 4.8E", " " * 40, "<think", "answer>", "：",
              "Côte d'Ivoire"]
    comps = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(150)]
    comps += [c.encode("utf-8", "surrogatepass") + b"\xff" for c in comps[:20]]
    n = len(comps)
    cols = dict(country=["France"] * n, city=["Lyon"] * n, lat=[LYON[0]] * n, lon=[LYON[1]] * n,
                entities=[["bus"]] * n, image=["img"] * n)
    df = reward_breakdown(comps, rewards=[*REWARDS, "localizability"], scorer=RecordingScorer(), **cols)
    assert df.shape == (n, len(REWARDS) + 2)
    assert ((df.drop(columns="total") >= 0) & (df.drop(columns="total") <= 1)).all().all()
    # garbage inside the reasoning of a well-formed answer changes neither format nor accuracy
    safe = [p for p in pieces if "<" not in p and ">" not in p]
    thinks = ["".join(rng.choice(safe) for _ in range(rng.randint(0, 30))) for _ in range(30)]
    ok = reward_breakdown([C(think=t) for t in thinks], rewards=["format", "accuracy"], country=["France"] * 30,
                          city=["Lyon"] * 30)
    assert ok["format"].tolist() == [1.0] * 30 and ok["accuracy"].tolist() == [1.0] * 30



def test_localizability_reward_sends_whole_completions_to_an_official_scorer():
    from PIL import Image

    from globe.rewards import make_localizability_reward

    class Official:
        input_text = "completion"
        seen: list = []

        def score(self, images, texts):
            self.seen += list(texts)
            return [0.25] * len(texts)

    scorer = Official()
    reward = make_localizability_reward(scorer)
    comps = ["<think>x</think><answer>country: A\ncity: B</answer>", "no think at all", ""]
    img = Image.new("RGB", (8, 8))
    assert reward(comps, image=[img] * 3) == [0.25, 0.25, 0.0]  # an empty completion is not judged
    assert scorer.seen == comps[:2]
    with pytest.raises(ValueError, match="reasoning' or 'completion"):
        make_localizability_reward(scorer, text="answer")
