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
from globe.config import ParamsError
from globe.distill import DEFAULT_FILTERS, DistillParams, answer_key, query_teachers, run_distillation
from globe.distill.filters import filter_agreement, filter_clues, filter_ground_truth, filter_localizability
from globe.prompts import format_target
from globe.teachers import OracleTeacher, Sampling
from globe.tiny import build_tiny_detector
from globe.vocabulary import extract_entities

ROOT = Path(__file__).resolve().parents[1]

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
        answer_key("img", OracleTeacher(name="t", n_clues=3), "reasoning"),  # the teacher's identity
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
        "filters": list(DEFAULT_FILTERS), "min_localizability": 0.5, "city_rule": "string", "city_km": 25,
        "agreement_km": 100,
        "min_agreeing_teachers": 1, "detector": str(tiny_detector), "build_tiny_models": False, "detector_threshold": 0.0,
        "min_verified_share": 0.5, "max_entities": 8, "clue_vocabulary": None, "keep": "best",
    }
    res = run_distillation(cfg, progress=False)
    n = {"train": N_TRAIN, "test": N_TEST}

    # The funnel adds up: per split and teacher, each stage keeps what the previous kept minus what it dropped.
    f = res.funnel
    assert list(f["stage"].unique()) == ["judged", *DEFAULT_FILTERS]
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
    assert set(loc.column_names) == {"id", "image", "reasoning", "completion", "label", "score", "teacher"}
    assert len(loc) == N_TRAIN and set(loc["teacher"]) == {"oracle"}  # the tiny model's yes/no is unreadable
    assert res.stats["unparsed_localizability"]["tiny"] == N_TRAIN + N_TEST
    assert (Path(cfg["out"]) / "README.md").read_text().count("Oracle teacher (oracle)") == 1
    saved = pd.read_csv(Path(cfg["results"]) / "funnel.csv")
    assert saved["kept"].tolist() == f["kept"].tolist()
    agree = pd.read_csv(Path(cfg["results"]) / "agreement.csv", index_col=0)
    assert agree.loc["oracle", "ground truth"] == 1.0 == agree.loc["ground truth", "ground truth"]
    assert agree.loc["tiny", "ground truth"] == 0.0

    # A second run asks nothing (everything is cached) and writes the same dataset and the same stats.json: what
    # was asked or cached is run state, in the returned stats only.
    stats_file = Path(cfg["results"]) / "stats.json"
    first = stats_file.read_text()

    def files(d: Path) -> dict:  # the dataset folder as DVC hashes it
        return {str(f.relative_to(d)): f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file()}

    first_dataset = files(Path(cfg["out"]))
    again = run_distillation(cfg, progress=False)
    assert sum(again.stats["query"]["asked"].values()) == 0 < sum(res.stats["query"]["asked"].values())
    assert again.dataset["train"]["id"] == res.dataset["train"]["id"]
    assert stats_file.read_text() == first and "query" not in json.loads(first)
    assert files(Path(cfg["out"])) == first_dataset  # the card too: no cache counts in it

    # Nothing survives: empty splits are still written, with every column.
    none = run_distillation({**cfg, "min_localizability": 1.01, "out": str(tmp_path / "empty")}, progress=False)
    assert sum(again.stats["query"]["asked"].values()) == 0
    empty = load_from_disk(str(tmp_path / "empty"))
    assert {s: len(d) for s, d in empty.items()} == {"train": 0, "test": 0} and cols <= set(empty["train"].column_names)
    assert none.funnel.query("stage == 'localizability'")["kept"].sum() == 0


# ------------------------------------------------------------------------ GLOBE's filter 3 and 4 (paper recipe)


def test_geoclip_filter_checks_the_answer_against_geoclips_point():
    from globe.distill.filters import filter_geoclip

    paris, sydney = (48.86, 2.35), (-33.87, 151.21)
    df = pd.DataFrame([cand(id="near", geoclip_lat=paris[0] + 0.3, geoclip_lon=paris[1], geoclip_conf=0.4),
                       cand(id="far", geoclip_lat=sydney[0], geoclip_lon=sydney[1], geoclip_conf=0.4),
                       cand(id="unsure", geoclip_lat=sydney[0], geoclip_lon=sydney[1], geoclip_conf=0.01),
                       cand(id="unanswered", geoclip_lat=None, geoclip_lon=None, geoclip_conf=None),
                       cand(id="nowhere", pred_city="Frobnitz Springs", pred_country="Nowhereland",
                            geoclip_lat=paris[0], geoclip_lon=paris[1], geoclip_conf=0.9)])
    out = filter_geoclip(df, DistillParams(agreement_km=100, geoclip_min_confidence=0.05))
    assert ids(out) == ["near/t1", "unsure/t1"]  # GeoCLIP below its confidence floor abstains
    votes = dict(zip(out["id"], out["geoclip_vote"]))
    assert votes == {"near": "agree", "unsure": "abstain"}
    assert ids(filter_geoclip(df, DistillParams(geoclip_km=20_000))) == ["far/t1", "near/t1", "unsure/t1"]
    with pytest.raises(ValueError, match="backend geoclip"):
        filter_geoclip(pd.DataFrame([cand()]), DistillParams())
    with pytest.raises(ParamsError, match="geoclip filter needs"):
        DistillParams.from_params({"filters": ["geoclip"], "teachers": [{"name": "o", "backend": "oracle"}]})


def test_alignment_filter_compares_the_teachers_reasoning():
    from globe.distill.filters import filter_alignment, lexical_embedder

    same = "Red double-decker buses, black cabs and a gothic clock tower by the river."
    df = pd.DataFrame([cand(id="a", teacher="t1", think=same), cand(id="a", teacher="t2", think=same + " London."),
                       cand(id="b", teacher="t1", think=same),
                       cand(id="b", teacher="t2", think="Palm trees, a white sand beach and turquoise water."),
                       cand(id="c", teacher="t1", think=same)])
    v = lexical_embedder([same, same, "zebra"])
    assert v[0] @ v[1] == pytest.approx(1.0) and v[0] @ v[2] == pytest.approx(0.0)
    out = filter_alignment(df, DistillParams(min_alignment=0.6, min_agreeing_teachers=1))
    assert ids(out) == ["a/t1", "a/t2", "c/t1"]  # b's chains disagree; c is alone (nothing to align with)
    assert ids(filter_alignment(df, DistillParams(min_alignment=0.6, min_agreeing_teachers=2))) == ["a/t1", "a/t2"]
    seen = []
    ids(filter_alignment(df, DistillParams(), embedder=lambda texts: seen.extend(texts) or lexical_embedder(texts)))
    assert seen == list(df["reasoning"])  # an embedder given is used for every row


def test_segmentation_verifier_maps_segment_labels_to_clues():
    import numpy as np
    from PIL import Image

    from globe.distill.filters import filter_clues, segment_clues

    assert {"palm tree", "coconut palm"} <= segment_clues("palm")
    assert "sign" in segment_clues("signboard, sign") and segment_clues("car") == {"car"}
    assert segment_clues("ottoman") == set()

    def mask(share):
        m = np.zeros((10, 10), dtype=np.uint8)
        m.flat[: int(share * 100)] = 255
        return Image.fromarray(m)

    def segmenter(image):  # a stand-in pipeline: three segments with their areas
        return [{"label": "palm", "score": None, "mask": mask(0.3)}, {"label": "signboard", "score": None,
                "mask": mask(0.001)}, {"label": "building", "score": None, "mask": mask(0.5)}]

    df = pd.DataFrame([cand(id="x", think="A palm tree and a building beside a sign."),
                       cand(id="y", think="A mosque and a minaret.")])
    cfg = DistillParams(verifier="segmentation", segment_min_area=0.01, min_verified_share=0.6)
    out = filter_clues(df, cfg, images=lambda s, r: Image.new("RGB", (10, 10)), segmenter=segmenter)
    assert ids(out) == ["x/t1"]
    assert sorted(out["entities"].iloc[0]) == ["building", "palm tree"]  # the sign's segment is below the area floor
    assert out["entity_scores"].iloc[0]["building"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------ shards past one machine


def test_shards_and_merge_lose_nothing_and_duplicate_nothing(sample_dataset, tmp_path):
    from globe.cache import in_shard, merge_caches, parse_shard, shard_path, shard_paths
    from globe.distill import merge_shards

    assert parse_shard("3/8") == (3, 8) and parse_shard(None) is None
    for bad in ("8/8", "a/b", "-1/2", "1"):
        with pytest.raises(ValueError, match="i/N"):
            parse_shard(bad)
    cfg = {"dataset": str(sample_dataset), "out": str(tmp_path / "out"), "cache": str(tmp_path / "cache.jsonl"),
           "results": str(tmp_path / "results"), "teachers": [{"name": "o", "backend": "oracle"}],
           "filters": ["localizability", "ground_truth"], "offline": True}
    ids_all = set()
    for i in range(3):
        res = run_distillation({**cfg, "shard": f"{i}/3"}, progress=False)
        assert res.dataset is None and Path(res.stats["shard"]["cache"]) == shard_path(cfg["cache"], (i, 3))
        ids_all |= {r["id"] for r in JsonlCache(shard_path(cfg["cache"], (i, 3)))}
    assert len(ids_all) == N_TRAIN + N_TEST  # every photo in exactly one shard
    for i in range(3):
        assert all(in_shard(r["id"], (i, 3)) for r in JsonlCache(shard_path(cfg["cache"], (i, 3))))
    report = merge_shards(cfg, 3)
    assert report["added"] == 2 * (N_TRAIN + N_TEST) == report["records_out"] and report["conflicts"] == 0
    again = merge_shards(cfg, 3)  # merging twice writes nothing twice
    assert again["added"] == 0 and again["already_present"] == 2 * (N_TRAIN + N_TEST)
    merged = run_distillation(cfg, progress=False)
    assert sum(merged.stats["query"]["asked"].values()) == 0  # the shards asked everything
    direct = run_distillation({**cfg, "cache": str(tmp_path / "direct.jsonl"), "out": str(tmp_path / "direct")},
                              progress=False)
    assert merged.dataset["train"]["id"] == direct.dataset["train"]["id"]
    # a shard that never ran is an error naming it; a key two shards answered differently is a counted conflict
    with pytest.raises(FileNotFoundError, match="shard-3-of-4"):
        merge_caches(tmp_path / "m.jsonl", shard_paths(cfg["cache"], 4))
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    JsonlCache(a).append([{"key": "k", "text": "one"}, {"key": "k2", "text": "x"}])
    JsonlCache(b).append([{"key": "k", "text": "two"}])
    rep = merge_caches(tmp_path / "ab.jsonl", [a, b])
    assert (rep["added"], rep["conflicts"]) == (2, 1) and JsonlCache(tmp_path / "ab.jsonl").get("k")["text"] == "one"


def test_cli_distill_shard_and_merge(sample_dataset, tmp_path):
    import subprocess
    import sys

    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["distill"].update(dataset=str(sample_dataset), out=str(tmp_path / "out"), cache=str(tmp_path / "c.jsonl"),
                             results=str(tmp_path / "r"), teachers=[{"name": "o", "backend": "oracle"}],
                             filters=["localizability"], build_tiny_models=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run = lambda *a: subprocess.run([sys.executable, "-m", "globe.cli", *a, "--params", str(tmp_path / "params.yaml")],  # noqa: E731
                                    cwd=ROOT, capture_output=True, text=True)
    for i in range(2):
        done = run("distill", "--shard", f"{i}/2", "--no-progress")
        assert done.returncode == 0, done.stderr[-2000:]
    merged = run("merge-shards", "distill", "--shards", "2")
    assert merged.returncode == 0 and json.loads(merged.stdout)["records_out"] == 2 * (N_TRAIN + N_TEST)
    assert run("merge-shards", "distill", "--shards", "3").returncode == 2  # shard 2 of 3 never ran
