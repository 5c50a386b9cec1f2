"""The one answer parser (`globe.answer`): the lenient field reader for what models write, its agreement with
GLOBE's official reward code on well-formed answers, and the strict format check it leaves unchanged."""

from __future__ import annotations

import re

import numpy as np
import pytest

from globe.answer import LABELS, answer_fields, parse_completion, place_parts


def official_fields(content: str) -> tuple[str, str]:
    """GLOBE's official extraction (examples/train/grpo/globe/plugin.py and eval.py, as the brief of issue 14 quotes
    it): the first <answer> block, then the first `country:` / `city:` match to the end of the line, stripped."""
    m = re.search(r"<answer>(.*?)</answer>", content, re.DOTALL)
    pred = m.group(1).strip() if m else content
    c = re.search(r"country:\s*([^\n]+)", pred)
    t = re.search(r"city:\s*([^\n]+)", pred)
    return (c.group(1).strip().lower() if c else ""), (t.group(1).strip().lower() if t else "")


def official_reward(content: str, country: str, city: str) -> float:
    """The official accuracy reward: 1.0 for city and country, 0.2 for the country only (match_location rule)."""
    def match(pred: str, truth: str, ratio: float = 0.7) -> bool:
        p, t = pred.lower(), truth.lower()
        if not p:
            return False
        return (p in t and len(p) / len(t) >= ratio) or (t in p and len(t) / len(p) >= ratio)

    pc, pt = official_fields(content)
    if not match(pc, country):
        return 0.0
    return 1.0 if match(pt, city) else 0.2


@pytest.mark.parametrize("text, country, city", [
    ("- country: France\n- city: Lyon", "France", "Lyon"),                                  # markdown bullets
    ("* Country: Australia\n* City: Brisbane", "Australia", "Brisbane"),
    ("1. Country: Kenya\n2. City: Nairobi", "Kenya", "Nairobi"),                            # numbered list
    ("**country:** Japan\n**city:** Kyoto", "Japan", "Kyoto"),                              # bold keys
    ("**Country**: Italy\n**City**: Rome", "Italy", "Rome"),
    ("__Country__: Vietnam\n__City__: Hoi An", "Vietnam", "Hoi An"),
    ("Country:\nFrance\nCity:\nLyon", "France", "Lyon"),                                    # value on the next line
    ("Based on the clues, I believe this is:\ncountry: Peru\ncity: Cusco", "Peru", "Cusco"),  # lead-in sentence
    ("My final answer is country: Norway, city: Bergen.", "Norway", "Bergen"),
    ("country: France city: Lyon", "France", "Lyon"),                                       # two keys on one line
    ("Country: France. City: Lyon", "France", "Lyon"),
    ("Country : Spain\nCITY： Madrid", "Spain", "Madrid"),                                   # spaced and full-width colons
    ("COUNTRY: Chile\nCITY: Santiago", "Chile", "Santiago"),
    ("country: [Brazil]\ncity: [Rio de Janeiro]", "Brazil", "Rio de Janeiro"),              # template brackets kept
    ("| country | Norway |\n| city | Bergen |", "Norway", "Bergen"),                        # table rows
    ("city: Kansas City\ncountry: USA", "USA", "Kansas City"),                              # "City" inside a value
    ("country: Vatican City\ncity: Vatican City", "Vatican City", "Vatican City"),
])
def test_lenient_fields(text, country, city):
    f = answer_fields(text)
    assert (f.get("country"), f.get("city")) == (country, city)
    p = parse_completion(f"<think>x</think><answer>{text}</answer>")
    assert (p.country, p.city) == (country, city)


def test_hedges_and_empty_values_stay_none():
    assert answer_fields("country:\ncity: Lyon") == {"country": None, "city": "Lyon"}  # next line is a key
    assert answer_fields("country: France\ncountry: Spain\ncity: Lyon")["country"] is None
    assert answer_fields("**Country:**\n**City:** Lyon") == {"country": None, "city": "Lyon"}
    assert answer_fields("no labels here, just Paris") == {}
    assert answer_fields(None) == {} and answer_fields(b"country: Peru\xff") == {"country": "Peru\ufffd"}


def test_other_labels_and_place_parts():
    f = answer_fields("country: United States\nstate: New Hampshire\ncity: Bartlett\nlandmark: Arethusa Falls")
    assert f == {"country": "United States", "state": "New Hampshire", "city": "Bartlett",
                 "landmark": "Arethusa Falls"}
    assert place_parts(f) == ["Arethusa Falls", "Bartlett", "New Hampshire", "United States"]  # specific first
    assert set(LABELS) >= {"country", "city", "region", "state", "province", "location"}
    p = parse_completion("<think>x</think><answer>location: Half Dome, Yosemite</answer>")
    assert p.place_parts == ["Half Dome, Yosemite"] and p.country is None


def test_format_ok_stays_strict():
    """format_ok pays for GLOBE's plain form only; the lenient values do not loosen it."""
    assert parse_completion("<think>x</think><answer>country: France\ncity: Lyon</answer>").format_ok
    for answer in ("**country:** France\n**city:** Lyon", "- country: France\n- city: Lyon",
                   "Country:\nFrance\nCity:\nLyon", "country France city Lyon"):
        p = parse_completion(f"<think>x</think><answer>{answer}</answer>")
        assert not p.format_ok, answer
    p = parse_completion("<think>x</think><answer>**country:** France\n**city:** Lyon</answer>")
    assert (p.country, p.city) == ("France", "Lyon")  # read, though not paid as format


def _well_formed_set(n: int = 1500, seed: int = 0) -> list[tuple[str, str, str]]:
    """(completion, true country, true city) in GLOBE's format: right, wrong city, wrong country, case and space
    variants, trailing punctuation, a region after the city, long names, hedged values."""
    from globe.geo import gazetteer

    gaz = gazetteer()
    rng = np.random.default_rng(seed)
    big = np.flatnonzero(gaz.population >= 100_000)
    picks = rng.choice(big, size=n)
    out = []
    for k, i in enumerate(picks):
        country, city = gaz.country_name(gaz.country_code[i]), str(gaz.name[i])
        j = int(rng.choice(big))
        other_country, other_city = gaz.country_name(gaz.country_code[j]), str(gaz.name[j])
        variants = [
            (country, city), (country, other_city), (other_country, city), (country.upper(), city.lower()),
            (f"  {country} ", f"{city}  "), (country + ".", city + "."), (country, f"{city}, {country}"),
            (country, f"{city} or {other_city}"), (f"{country} / {other_country}", city),
        ]
        pc, pt = variants[k % len(variants)]
        out.append((f"<think>clues</think>\n<answer>country: {pc}\ncity: {pt}</answer>", country, city))
    return out


def test_extraction_equals_the_official_code_on_well_formed_answers():
    """On GLOBE's format the parser reads the values the official reward code reads, but for a trailing full stop
    or comma, which it drops ("France." is France; the containment rule scores both alike)."""
    for completion, _, _ in _well_formed_set():
        p = parse_completion(completion)
        oc, ot = (v.rstrip(".,;:!?").strip() for v in official_fields(completion))
        assert ((p.country or "").lower(), (p.city or "").lower()) == (oc, ot), completion


def test_globe_rule_agrees_with_the_official_reward():
    """GLOBE's string rule scores well-formed answers as the official code does, except where the anti-hedging
    rule (globe.rewards.field_value) deliberately refuses a listed or over-long value."""
    from globe.rewards import REWARDS, field_value

    data = _well_formed_set()
    ours = REWARDS["accuracy"]([c for c, _, _ in data], country=[t for _, t, _ in data],
                               city=[c for _, _, c in data])
    agree = unexplained = 0
    for (completion, country, city), r in zip(data, ours):
        off = official_reward(completion, country, city)
        if r == off:
            agree += 1
            continue
        p = parse_completion(completion)
        hedged = field_value(p.country, "country") is None or field_value(p.city, "city") is None
        unexplained += not hedged
    share = agree / len(data)
    print(f"agreement with the official reward on {len(data)} well-formed answers: {share:.4f}")
    assert unexplained == 0
    assert share >= 0.99  # measured 0.998: the official code credits a few hedged values ("Lyon or Lyons")
