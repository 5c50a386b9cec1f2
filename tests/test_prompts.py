"""The one answer parser every stage shares."""

from __future__ import annotations

import pytest

from globe.answer import parse_completion, parse_localizability, to_text
from globe.prompts import build_messages, format_target

GOOD = "<think>Red roofs, a Gothic cathedral, French signs.</think>\n<answer>country: France\ncity: Lyon</answer>"


def test_good_completion():
    p = parse_completion(GOOD)
    assert p.format_ok and (p.country, p.city) == ("France", "Lyon")
    assert p.think.startswith("Red roofs") and p.place == "Lyon, France"


def test_format_target_round_trips():
    p = parse_completion(format_target("clues", "Japan", "Kyoto"))
    assert p.format_ok and (p.country, p.city, p.think) == ("Japan", "Kyoto", "clues")


@pytest.mark.parametrize("text, ok", [
    (GOOD + " trailing", False),                                    # text after the answer
    ("preamble " + GOOD, False),                                    # text before the think
    (GOOD + "<answer>country: Spain\ncity: Madrid</answer>", False),  # two answer blocks
    ("<answer>country: France\ncity: Lyon</answer>", False),         # no think
    ("<think>x</think><answer>country: France</answer>", False),     # no city line
    ("<think>x<answer>country: France\ncity: Lyon</answer></think><answer>country: France\ncity: Lyon</answer>", False),
    ("", False),
    ("  " + GOOD + "\n", True),
])
def test_format_strictness(text, ok):
    assert parse_completion(text).format_ok is ok


def test_answer_inside_think_is_not_an_answer():
    p = parse_completion("<think><answer>country: France\ncity: Lyon</answer></think>")
    assert p.n_answer == 0 and p.country is None


def test_several_answers_or_lines_are_ambiguous():
    p = parse_completion(GOOD + "<answer>country: Spain\ncity: Madrid</answer>")
    assert p.n_answer == 2 and p.country is None and p.city is None
    p = parse_completion("<think>x</think><answer>country: France\ncountry: Spain\ncity: Lyon</answer>")
    assert p.country is None and p.city == "Lyon"


def test_messages_and_bytes_and_garbage():
    assert to_text([{"role": "assistant", "content": GOOD}]) == GOOD
    assert to_text({"role": "assistant", "content": [{"type": "text", "text": GOOD}]}) == GOOD
    assert parse_completion(GOOD.encode() + b"\xff\xfe").country == "France"
    assert parse_completion(None).format_ok is False
    assert parse_completion("\ud800 🌍" * 1000).country is None


def test_localizability_judgement():
    assert parse_localizability("localizable: yes\nscore: 0.83") == (True, 0.83)
    assert parse_localizability("Localizable: NO\nscore: .2") == (False, 0.2)
    assert parse_localizability("no idea\nscore: 7") == (None, None)
    assert parse_localizability("localizable: yes\nscore: 10") == (True, None)
    assert parse_localizability("localizable: yes\nscore: 15%") == (True, None)
    assert parse_localizability("localizable: yes\nscore: 1") == (True, 1.0)


def test_build_messages_has_image_part():
    m = build_messages("where?", answer="x")
    assert m[0]["content"][0] == {"type": "image"} and m[1]["role"] == "assistant"


def test_empty_field_does_not_swallow_the_next_line():
    p = parse_completion("<think>x</think><answer>country:\ncity: Lyon</answer>")
    assert p.country is None and p.city == "Lyon"


def test_one_line_answer_splits_at_the_next_label():
    p = parse_completion("<think>x</think><answer>Country: France. City: Lyon</answer>")
    assert (p.country, p.city) == ("France", "Lyon")


def test_long_blank_runs_parse_in_linear_time():
    import time

    text = "<think>x</think><answer>country: Fr" + " " * 200_000 + "ance\ncity: Lyon</answer>"
    t = time.perf_counter()
    parse_completion(text)
    assert time.perf_counter() - t < 5  # quadratic backtracking took minutes here


def test_lone_surrogates_are_replaced():
    assert parse_completion("<think>\udcff</think>").think.encode("utf-8")


# ---- GLOBE's official prompts, shipped verbatim as data -------------------------------------------------------------

OFFICIAL_SHA256 = {  # of the strings in lingli1996/GLOBE (globe/assets/prompts/SOURCE.md)
    "globe-train": "034862d777a2a36f2b4dc1a7a93e55d380608e458161ecbf37471a2e0c7380d8",
    "globe-cot": "340b48895d958df24ada3eebf03972ceef38a578f275c6f218e5c648ef772bbc",
    "globe-no-cot": "50f08ad6dd533540e1882019204d36360aa26870efa5c68ed1919f6b8fc4b1c0",
    "globe-rm-system": "d461d547f4f7cee759b97a9356b9fbe7ef14d08579e8d3cd095d74085394cf03",
}


def test_official_prompts_are_verbatim_and_selectable():
    import hashlib

    from globe.prompts import OFFICIAL_PROMPTS, PROJECT_PROMPTS, PROMPTS, prompt_named

    assert {n: hashlib.sha256(t.encode("utf-8")).hexdigest() for n, t in OFFICIAL_PROMPTS.items()} == OFFICIAL_SHA256
    assert PROMPTS == {**PROJECT_PROMPTS, **OFFICIAL_PROMPTS}  # the project's own prompts keep their names
    assert prompt_named("globe-train").startswith("You are a geolocation expert.")
    assert "\u201cyes\u201d or \u201cno\u201d directly.\n" in prompt_named("globe-rm-system")  # curly quotes kept
    with pytest.raises(KeyError, match="unknown prompt"):
        prompt_named("globe-typo")


def test_official_prompts_leave_the_tiny_model_alone():
    from globe import tiny

    corpus = tiny._corpus()
    assert not any("You are a geolocation expert" in line for line in corpus)
