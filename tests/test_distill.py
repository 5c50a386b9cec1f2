"""Distillation: the resumable cache (killed with SIGKILL and restarted), each filter's thresholds, the funnel,
clue verification with the tiny offline detector, and the whole stage on a few committed sample photos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from globe.answer import parse_completion
from globe.cache import JsonlCache
from globe.distill import FILTERS, DistillParams, answer_key, apply_filters, query_teachers, run_distillation
from globe.distill.filters import filter_agreement, filter_clues, filter_ground_truth, filter_localizability
from globe.distill.outputs import funnel_table
from globe.prompts import format_target
from globe.teachers import OracleTeacher, Sampling
from globe.tiny import build_tiny_detector
from globe.vocabulary import extract_entities

N_TRAIN, N_TEST = 6, 2


@pytest.fixture(scope="module")
def sample_dataset(tmp_path_factory, sample_dir):
    """A few committed sample photos in the canonical schema (locations from the offline reverse geocoder)."""
    from datasets import Dataset, DatasetDict, Features, Image, Value

    from globe.geo import reverse_geocode

    meta = pd.read_csv(sample_dir / "metadata.csv").head(N_TRAIN + N_TEST)
    place = reverse_geocode(meta["lat"].to_numpy(), meta["lon"].to_numpy())
    cols = {
        "id": meta["id"].astype(str).tolist(), "image": [str(sample_dir / "images" / f) for f in meta["file"]],
        "lat": meta["lat"].tolist(), "lon": meta["lon"].tolist(),
        **{c: place[c].tolist() for c in ("country_code", "country", "admin1", "city", "continent")},
        "source": ["sample"] * len(meta), "licence": meta["licence"].tolist(), "owner": meta["owner"].tolist(),
        "title": meta["title"].fillna("").tolist(),
    }
    feats = Features({k: Image() if k == "image" else Value("float64" if k in ("lat", "lon") else "string") for k in cols})
    ds = Dataset.from_dict(cols, features=feats)
    dd = DatasetDict(train=ds.select(range(N_TRAIN)), test=ds.select(range(N_TRAIN, N_TRAIN + N_TEST)))
    path = tmp_path_factory.mktemp("ds") / "dataset"
    dd.save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    return build_tiny_detector(tmp_path_factory.mktemp("det") / "owlvit", seed=0)


# -------------------------------------------------------------------------------------------------------- cache

KILL_SCRIPT = r"""
import json, sys, time
from datasets import load_from_disk
from globe.cache import JsonlCache
from globe.distill import query_teachers
from globe.teachers import OracleTeacher

class Slow(OracleTeacher):
    def complete(self, requests):
        time.sleep(0.15 * len(requests))
        return super().complete(requests)

cache = JsonlCache(sys.argv[2])
stats = query_teachers([Slow(name="slow")], dict(load_from_disk(sys.argv[1])), cache, batch_size=2)
print(json.dumps({"asked": stats["asked"]["slow"], "report": cache.report()}))
"""


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_killed_run_resumes_without_loss_or_duplicates(sample_dataset, tmp_path):
    cache = tmp_path / "cache.jsonl"
    total = (N_TRAIN + N_TEST) * 2
    cmd = [sys.executable, "-c", KILL_SCRIPT, str(sample_dataset), str(cache)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while len(_lines(cache)) < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(_lines(cache))
    assert 4 <= done < total, "the run was not killed mid-way"
    # A kill can also land inside a write: leave a torn last line as such a kill would.
    with open(cache, "a") as f:
        f.write('{"key": "torn-by-kill", "text": "half a li')
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["asked"] == total - done  # nothing asked twice
    assert result["report"]["torn_bytes"] > 0  # the torn line was noticed
    assert "torn last line" in out.stderr  # ...and reported
    records = [json.loads(line) for line in _lines(cache)]  # every line parses: the torn tail was cut off
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == total  # every key exactly once
    from datasets import load_from_disk

    slow = OracleTeacher(name="slow")  # the subprocess's teacher: same name, identity and sampling
    expected = {answer_key(i, slow, kind) for split in load_from_disk(str(sample_dataset)).values()
                for i in split["id"] for kind in ("reasoning", "localizability")}
    assert set(keys) == expected


def test_answers_completed_before_the_error_budget_stops_are_kept(sample_dataset, tmp_path):
    """A teacher that stops mid-batch (error budget) still gets the batch's finished answers cached."""
    from datasets import load_from_disk

    from globe.teachers import ErrorBudgetExceeded, Response

    class Failing(OracleTeacher):
        def complete(self, requests):
            ok = super().complete(requests)
            err = ErrorBudgetExceeded("budget")
            err.responses = [ok[0], Response(text="", error="HTTP 500"), None] + [None] * (len(requests) - 3)
            raise err

    cache = JsonlCache(tmp_path / "c.jsonl")
    with pytest.raises(ErrorBudgetExceeded):
        query_teachers([Failing(name="f")], dict(load_from_disk(str(sample_dataset))), cache, batch_size=4)
    assert len(cache) == 1 and len(JsonlCache(tmp_path / "c.jsonl")) == 1  # the one answer that completed


def test_answer_key_covers_everything_that_changes_an_answer(monkeypatch, tmp_path):
    """Each input that changes what a cached teacher answer means changes its key (and nothing else does)."""
    from globe import prompts
    from globe.teachers import LocalTeacher

    base = answer_key("img", OracleTeacher(name="t"), "reasoning")
    assert base == answer_key("img", OracleTeacher(name="t"), "reasoning")
    others = [
        answer_key("img2", OracleTeacher(name="t"), "reasoning"),  # the photo
        answer_key("img", OracleTeacher(name="u"), "reasoning"),  # the teacher's name
        answer_key("img", OracleTeacher(name="t"), "localizability"),  # the prompt kind
        answer_key("img", OracleTeacher(name="t", sampling=Sampling(temperature=1.0)), "reasoning"),  # sampling
        answer_key("img", OracleTeacher(name="t", sampling=Sampling(max_new_tokens=9)), "reasoning"),
        answer_key("img", OracleTeacher(name="t", sampling=Sampling(seed=3)), "reasoning"),
        answer_key("img", OracleTeacher(name="t"), "reasoning", prompt_version="globe-v0"),  # the prompt version
        answer_key("img", OracleTeacher(name="t", n_clues=2), "reasoning"),  # the teacher's identity
        answer_key("img", OracleTeacher(name="t", vocabulary=["tree"]), "reasoning"),
    ]
    assert base not in others and len(set(others)) == len(others)
    monkeypatch.setattr(prompts, "REASONING_PROMPT", prompts.REASONING_PROMPT + " Be brief.")  # the prompt text
    assert answer_key("img", OracleTeacher(name="t"), "reasoning") != base
    # A local teacher's model files and image budget are part of its identity: retrained weights are not reused.
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"one")
    a = answer_key("img", LocalTeacher("l", str(model), max_image_side=112), "reasoning")
    assert a != answer_key("img", LocalTeacher("l", str(model), max_image_side=224), "reasoning")
    (model / "model.safetensors").write_bytes(b"two")
    assert a != answer_key("img", LocalTeacher("l", str(model), max_image_side=112), "reasoning")


# ------------------------------------------------------------------------------------------------------ filters


def cand(**kw) -> dict:
    row = {"split": "train", "row": 0, "id": "a", "teacher": "t1", "teacher_order": 0,
           "completion": format_target("Clues: building, tree. A church in France.", "France", "Paris"),
           "reasoning": "Clues: building, tree. A church in France.", "format_ok": True,
           "pred_country": "France", "pred_city": "Paris", "loc_text": "", "loc_label": True, "loc_score": 0.8,
           "gt_lat": 48.85, "gt_lon": 2.35, "gt_country_code": "FR", "gt_country": "France", "gt_admin1": "Île-de-France",
           "gt_city": "Paris", "gt_continent": "Europe", "gt_title": ""}
    row.update(kw)
    if "pred_country" in kw or "pred_city" in kw or "think" in kw:
        think = kw.get("think", row["reasoning"])
        row["reasoning"] = think
        row["completion"] = format_target(think, row["pred_country"] or "", row["pred_city"] or "")
    row.pop("think", None)
    return row


def ids(df) -> list[str]:
    return sorted(df["id"] + "/" + df["teacher"])


def test_localizability_filter_thresholds():
    df = pd.DataFrame([cand(id="at", loc_score=0.5), cand(id="above", loc_score=0.9), cand(id="below", loc_score=0.49),
                       cand(id="no", loc_label=False, loc_score=0.9), cand(id="none", loc_label=None, loc_score=None),
                       cand(id="noscore", loc_score=None)])
    assert ids(filter_localizability(df, DistillParams(min_localizability=0.5))) == ["above/t1", "at/t1"]
    assert ids(filter_localizability(df, DistillParams(min_localizability=0.95))) == []


def test_ground_truth_filter_rules():
    df = pd.DataFrame([cand(id="exact"), cand(id="alias", pred_country="FR", pred_city="paris"),
                       cand(id="wrong_country", pred_country="Belgium"), cand(id="wrong_city", pred_city="Lyon"),
                       cand(id="near", pred_city="Boulogne-Billancourt"), cand(id="none", pred_city=None)])
    assert ids(filter_ground_truth(df, DistillParams(city_rule="string"))) == ["alias/t1", "exact/t1"]
    # `gazetteer`: cities within city_km of each other count (Boulogne-Billancourt is ~8 km from Paris).
    assert ids(filter_ground_truth(df, DistillParams(city_rule="gazetteer", city_km=25))) == [
        "alias/t1", "exact/t1", "near/t1"]
    assert ids(filter_ground_truth(df, DistillParams(city_rule="gazetteer", city_km=1))) == ["alias/t1", "exact/t1"]
    with pytest.raises(ValueError, match="city_rule"):
        filter_ground_truth(df, DistillParams(city_rule="fuzzy"))


def test_agreement_filter_counts_teachers_and_checks_consistency():
    df = pd.DataFrame([
        cand(id="a", teacher="t1"), cand(id="a", teacher="t2", pred_city="Boulogne-Billancourt"),
        cand(id="b", teacher="t1"), cand(id="b", teacher="t2", pred_country="France", pred_city="Marseille"),
        cand(id="c", teacher="t1"),
        cand(id="d", teacher="t1", think="The signs are in Italian; this is Italy.", pred_country="France"),
        cand(id="e", teacher="t1", completion="<think>x</think> country: France"),
    ])
    one = filter_agreement(df, DistillParams(min_agreeing_teachers=1, agreement_km=50))
    assert ids(one) == ["a/t1", "a/t2", "b/t1", "b/t2", "c/t1"]  # d contradicts itself, e is malformed
    two = filter_agreement(df, DistillParams(min_agreeing_teachers=2, agreement_km=50))
    assert ids(two) == ["a/t1", "a/t2"]  # Marseille is 660 km from Paris; c has a single teacher
    assert ids(filter_agreement(df, DistillParams(min_agreeing_teachers=2, agreement_km=1000))) == [
        "a/t1", "a/t2", "b/t1", "b/t2"]


class StubDetector:
    """Stands in for the transformers pipeline: a fixed score per label (what a real detector would return)."""

    def __init__(self, scores):
        self.scores, self.calls = scores, 0

    def __call__(self, inputs, threshold, batch_size=1):
        self.calls += 1
        return [[{"label": lab, "score": self.scores.get(lab, 0.0), "box": {}} for lab in x["candidate_labels"]
                 if self.scores.get(lab, 0.0) >= threshold] for x in inputs]


def test_clue_filter_thresholds():
    from PIL import Image

    img = Image.new("RGB", (16, 16))
    df = pd.DataFrame([cand(id="a", think="Clues: building, tree. A road."), cand(id="b", think="Clues: tree."),
                       cand(id="c", think="Nothing to see.", pred_country="France")])
    det = StubDetector({"building": 0.9, "tree": 0.3, "road": 0.6})
    from dataclasses import replace

    cfg = DistillParams(detector_threshold=0.5, min_verified_share=0.6)
    out = filter_clues(df, cfg, images=lambda s, r: img, detector=det)
    assert ids(out) == ["a/t1"] and out.iloc[0]["entities"] == ["building", "road"]  # 2 of 3 verified
    assert det.calls == 1  # one batched detector call
    assert ids(filter_clues(df, replace(cfg, min_verified_share=0.7), images=lambda s, r: img, detector=det)) == []
    assert ids(filter_clues(df, replace(cfg, detector_threshold=0.2), images=lambda s, r: img, detector=det)) == [
        "a/t1", "b/t1"]


def test_extract_entities():
    text = "Clues: a red tram, the Eiffel tower. Palm trees line the streets under a cloudy sky."
    # One matcher (globe.vocabulary): the longest term wins ("palm tree", not also "tree"), and a term inside a
    # listed clue ("tower" in "eiffel tower") is not named twice.
    assert extract_entities(text) == ["red tram", "eiffel tower", "palm tree", "street", "sky"]
    assert extract_entities(text, max_entities=2) == ["red tram", "eiffel tower"]


def test_tiny_detector_runs_offline(tiny_detector):
    from PIL import Image

    from globe.distill.filters import load_detector, verify_entities

    det = load_detector(str(tiny_detector), device=-1)
    img = Image.new("RGB", (40, 30), (10, 120, 30))
    [scores] = verify_entities(det, [img], [["building", "palm tree", "unknown word"]], threshold=0.0)
    assert set(scores) == {"building", "palm tree", "unknown word"} and all(0 < s < 1 for s in scores.values())
    [none] = verify_entities(det, [img], [["building"]], threshold=0.999)
    assert none == {"building": 0.0}


# -------------------------------------------------------------------------------------------------- whole stage


def test_run_distillation_end_to_end(sample_dataset, tiny_detector, tiny_vlm_dir, tmp_path):
    from datasets import load_from_disk

    cfg = {
        "seed": 0, "dataset": str(sample_dataset), "out": str(tmp_path / "mp16_reason"), "cache": str(tmp_path / "cache.jsonl"),
        "results": str(tmp_path / "results"), "splits": ["train", "test"], "max_images": None,
        "batch_size": 4,
        "teachers": [{"name": "tiny", "backend": "local", "model": str(tiny_vlm_dir), "max_new_tokens": 4},
                     {"name": "oracle", "backend": "oracle"}],
        "filters": list(FILTERS), "min_localizability": 0.5, "city_rule": "string", "city_km": 25, "agreement_km": 100,
        "min_agreeing_teachers": 1, "detector": str(tiny_detector), "build_tiny_models": False, "detector_threshold": 0.0,
        "min_verified_share": 0.5, "max_entities": 8, "clue_vocabulary": None, "keep": "best",
    }
    res = run_distillation(cfg, progress=False)
    n = {"train": N_TRAIN, "test": N_TEST}

    # The funnel adds up: per split and teacher, each stage keeps what the previous kept minus what it dropped.
    f = res.funnel
    assert list(f["stage"].unique()) == ["judged", *FILTERS]
    for (split, teacher), g in f.groupby(["split", "teacher"], sort=False):
        kept, dropped = g["kept"].tolist(), g["dropped"].tolist()
        assert kept[0] == n[split] and dropped[0] == 0
        assert all(d >= 0 for d in dropped) and all(a - d == b for a, b, d in zip(kept, kept[1:], dropped[1:]))
    final = f[f["stage"] == "clues"].set_index(["split", "teacher"])["kept"]
    assert final[("train", "tiny")] == 0  # a random model's noise never survives
    assert final[("train", "oracle")] > 0
    assert {s: len(d) for s, d in res.dataset.items()} == {s: final[(s, "images")] for s in n}

    out = load_from_disk(cfg["out"])
    assert set(out) == {"train", "test"}
    cols = {"id", "image", "prompt", "reasoning", "answer", "country", "country_code", "city", "lat", "lon", "continent",
            "localizability", "localizable", "entities", "teacher"}
    assert cols <= set(out["train"].column_names)
    for row in out["train"]:
        p = parse_completion(row["answer"])
        assert p.format_ok and (p.country, p.city) == (row["country"], row["city"])
        assert row["localizable"] and row["localizability"] >= 0.5 and row["entities"] and row["teacher"] == "oracle"
        assert set(row["entities"]) <= set(extract_entities(row["reasoning"]))
    loc = load_from_disk(str(Path(cfg["out"]) / "localizability"))
    assert set(loc.column_names) == {"id", "image", "reasoning", "label", "score", "teacher"}
    assert len(loc) == N_TRAIN and set(loc["teacher"]) == {"oracle"}  # the tiny model's yes/no is unreadable
    assert res.stats["unparsed_localizability"]["tiny"] == N_TRAIN + N_TEST
    assert (Path(cfg["out"]) / "README.md").read_text().count("Oracle teacher (oracle)") == 1
    saved = pd.read_csv(Path(cfg["results"]) / "funnel.csv")
    assert saved["kept"].tolist() == f["kept"].tolist()
    agree = pd.read_csv(Path(cfg["results"]) / "agreement.csv", index_col=0)
    assert agree.loc["oracle", "ground truth"] == 1.0 == agree.loc["ground truth", "ground truth"]
    assert agree.loc["tiny", "ground truth"] == 0.0

    # A second run asks nothing (everything is cached) and writes the same dataset.
    again = run_distillation(cfg, progress=False)
    assert sum(again.stats["query"]["asked"].values()) == 0
    assert again.dataset["train"]["id"] == res.dataset["train"]["id"]

    # Nothing survives: empty splits are still written, with every column.
    none = run_distillation({**cfg, "min_localizability": 1.01, "out": str(tmp_path / "empty")}, progress=False)
    assert sum(again.stats["query"]["asked"].values()) == 0
    empty = load_from_disk(str(tmp_path / "empty"))
    assert {s: len(d) for s, d in empty.items()} == {"train": 0, "test": 0} and cols <= set(empty["train"].column_names)
    assert none.funnel.query("stage == 'localizability'")["kept"].sum() == 0
