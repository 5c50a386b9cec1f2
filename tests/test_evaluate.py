"""globe.evaluate: benchmarks, resumable inference, scoring, baselines, the main table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from globe import evaluate as ev
from globe.config import ParamsError
from globe.images import load_image

ROOT = Path(__file__).resolve().parents[1]


def _cfg(tmp_path: Path, model_dir: Path | None = None, **over) -> ev.EvalParams:
    params = dict(
        out=str(tmp_path / "results"),
        run_benchmarks=["custom"],
        benchmarks={"custom": {"csv": str(tmp_path / "bench.csv"), "image_dir": str(ROOT / "data" / "sample" / "images")}},
        models=[{"name": "tiny", "model": str(model_dir) if model_dir else None, "prompt": "reasoning"}],
        baselines=[],
        baseline_train={"csv": str(ROOT / "data" / "sample" / "metadata.csv")},
        batch_size=2,
        max_new_tokens=8,
        n_bootstrap=50,
        offline=True,
        seed=0,
    )
    params.update(over)
    return ev.EvalParams.from_params(params)


@pytest.fixture()
def bench_csv(tmp_path, sample_dir) -> Path:
    """A custom benchmark: the first 6 sample photos."""
    meta = pd.read_csv(sample_dir / "metadata.csv", dtype={"id": str})
    path = tmp_path / "bench.csv"
    meta.head(6)[["id", "file", "lat", "lon"]].to_csv(path, index=False)
    return path


# ---- benchmarks -----------------------------------------------------------------------------------------------------


def test_missing_benchmark_names_the_params_key(tmp_path):
    cfg = _cfg(tmp_path, run_benchmarks=["im2gps3k"],
               benchmarks={"im2gps3k": {"csv": str(tmp_path / "nope.csv"), "image_dir": str(tmp_path)}})
    with pytest.raises(ev.MissingBenchmark) as e:
        ev.evaluate(cfg, progress=False)
    msg = str(e.value)
    assert "eval.benchmarks.im2gps3k.csv" in msg and "nope.csv" in msg
    # No entry at all: the message names the group to add.
    with pytest.raises(ev.MissingBenchmark, match=r"eval\.benchmarks\.yfcc4k"):
        ev.load_benchmark("yfcc4k", _cfg(tmp_path, benchmarks={}))


def test_benchmark_loaders_read_their_layouts(tmp_path, sample_dir):
    meta = pd.read_csv(sample_dir / "metadata.csv", dtype={"id": str}).head(3)
    imgs = str(sample_dir / "images")
    # IM2GPS3K: IMG_ID is the file name.
    meta.assign(IMG_ID=meta["file"], LAT=meta["lat"], LON=meta["lon"])[["IMG_ID", "LAT", "LON"]].to_csv(tmp_path / "i.csv", index=False)
    # YFCC4K: name, lon, lat.
    meta.assign(name=meta["file"])[["name", "lon", "lat"]].to_csv(tmp_path / "y.csv", index=False)
    cfg = _cfg(tmp_path, benchmarks={"im2gps3k": {"csv": str(tmp_path / "i.csv"), "image_dir": imgs},
                                     "yfcc4k": {"csv": str(tmp_path / "y.csv"), "image_dir": imgs}})
    for name in ("im2gps3k", "yfcc4k"):
        df = ev.load_benchmark(name, cfg)
        assert list(df.columns) == ["id", "lat", "lon", "image"]
        np.testing.assert_allclose(df["lat"], meta["lat"])
        assert all(os.path.isfile(p) for p in df["image"])
    # A listed image that is absent is a counted, reported skip (never a crash, never silent)...
    pd.concat([pd.read_csv(tmp_path / "i.csv"), pd.DataFrame({"IMG_ID": ["gone.jpg"], "LAT": [1.0], "LON": [2.0]})]).to_csv(
        tmp_path / "i.csv", index=False)
    df = ev.load_benchmark("im2gps3k", cfg)
    assert len(df) == 3 and df.attrs["skipped"] == {"missing_image": 1}
    assert df.attrs["skipped_ids"] == {"missing_image": ["gone.jpg"]}
    # ... and a benchmark none of whose images is there is an error naming the key.
    cfg = _cfg(tmp_path, benchmarks={"im2gps3k": {"csv": str(tmp_path / "i.csv"), "image_dir": str(tmp_path)}})
    with pytest.raises(ev.MissingBenchmark, match=r"none of the 4 images.*eval\.benchmarks\.im2gps3k\.image_dir"):
        ev.load_benchmark("im2gps3k", cfg)


def test_bad_coordinates_and_unknown_params_are_refused(tmp_path, bench_csv):
    df = pd.read_csv(bench_csv)
    df.loc[0, "lat"] = 123.0
    df.to_csv(bench_csv, index=False)
    with pytest.raises(ValueError, match="invalid coordinates"):
        ev.load_benchmark("custom", _cfg(tmp_path))
    with pytest.raises(ParamsError, match="unknown eval parameter"):
        ev.EvalParams.from_params({"out": "x", "bogus": 1})
    with pytest.raises(ValueError, match="duplicate names"):
        _cfg(tmp_path, baselines=["medoid", "medoid"])


# ---- resumable inference --------------------------------------------------------------------------------------------


_RUN = textwrap.dedent("""
    import sys
    from globe import evaluate as ev
    cfg = ev.EvalParams.from_params(dict(
        out=sys.argv[1], run_benchmarks=["custom"], baselines=[], batch_size=1, max_new_tokens=int(sys.argv[4]),
        benchmarks={"custom": {"csv": sys.argv[2], "image_dir": sys.argv[3]}},
        models=[{"name": "tiny", "model": sys.argv[5]}]))
    bench = ev.load_benchmark("custom", cfg)
    ev.predict(bench, cfg.models[0], cfg, sys.argv[1] + "/p.jsonl", progress=False)
""")


def test_resume_after_sigkill(tmp_path, sample_dir, tiny_vlm_dir):
    meta = pd.read_csv(sample_dir / "metadata.csv", dtype={"id": str}).head(10)
    csv = tmp_path / "bench.csv"
    meta[["id", "file", "lat", "lon"]].to_csv(csv, index=False)
    out = tmp_path / "out"
    out.mkdir()
    cache = out / "p.jsonl"
    args = [sys.executable, "-c", _RUN, str(out), str(csv), str(sample_dir / "images"), "24", str(tiny_vlm_dir)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if cache.is_file() and cache.read_text().count("\n") >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [json.loads(x)["id"] for x in cache.read_text().splitlines() if x.strip()]
    assert 2 <= len(before) < len(meta)

    # The rerun (in this process, same settings) generates only what is missing.
    cfg = ev.EvalParams.from_params(dict(
        out=str(out), run_benchmarks=["custom"], baselines=[], batch_size=1, max_new_tokens=24,
        benchmarks={"custom": {"csv": str(csv), "image_dir": str(sample_dir / "images")}},
        models=[{"name": "tiny", "model": str(tiny_vlm_dir)}]))
    preds = ev.predict(ev.load_benchmark("custom", cfg), cfg.models[0], cfg, cache, progress=False)
    assert list(preds["id"]) == list(meta["id"]) and preds["raw"].notna().all()
    ids = [json.loads(x)["id"] for x in cache.read_text().splitlines() if x.strip()]
    assert sorted(ids) == sorted(meta["id"]), "every image exactly once"
    assert ids[: len(before)] == before, "cached completions were kept, not redone"


# ---- scoring --------------------------------------------------------------------------------------------------------


def test_unresolved_answers_are_counted_as_misses():
    bench = pd.DataFrame({"id": ["paris", "junk", "broken", "tokyo"], "lat": [48.8566, 40.0, 10.0, 35.6895],
                          "lon": [2.3522, -3.0, 10.0, 139.6917], "image": ["", "", "", ""]})
    preds = pd.DataFrame({
        "id": ["paris", "junk", "broken", "tokyo"],
        "raw": ["<think>Eiffel tower.</think>\n<answer>country: France\ncity: Paris</answer>",
                "I have no idea where this is", None,
                "<think>Kanji signs.</think>\n<answer>country: Japan\ncity: Osaka</answer>"],
        "error": [None, None, "ImageRejected: corrupt_image", None],
    })
    scored = ev.score(bench, preds)
    assert list(scored["level"])[:1] == ["city"]
    assert np.isnan(scored.loc[1, "distance_km"]) and np.isnan(scored.loc[2, "distance_km"])
    assert scored.loc[0, "distance_km"] < 25 and 300 < scored.loc[3, "distance_km"] < 450
    m = ev.metrics_of(scored, seed=0, n_bootstrap=50)
    assert m["n"] == 4 and m["n_unresolved"] == 2 and m["n_image_errors"] == 1
    assert m["acc_25km"] == pytest.approx(0.25) and m["acc_750km"] == pytest.approx(0.5)
    assert m["country_acc"] == pytest.approx(0.5) and m["city_name_acc"] == pytest.approx(0.25)
    # The three city accuracies, one definition each: Osaka is the right country, the wrong city, 400 km off.
    assert m["city_25km_acc"] == pytest.approx(0.25) and m["city_string_acc"] == pytest.approx(0.25)
    assert list(scored["city_name_acc"]) == [True, False, False, False]
    assert list(scored["true_country_code"])[:1] == ["FR"] and scored.loc[0, "continent"]


def test_same_seed_gives_identical_metrics(tmp_path, bench_csv, tiny_vlm_dir, monkeypatch):
    # Sampled decoding, so the seed matters; baselines (random_land is seeded) and bootstrap CIs too.
    runs = []
    for k in range(2):
        cfg = _cfg(tmp_path / f"run{k}", tiny_vlm_dir, temperature=1.0, top_p=0.9,
                   benchmarks={"custom": {"csv": str(bench_csv), "image_dir": str(ROOT / "data" / "sample" / "images")}},
                   baselines=["medoid", "top_city", "random_land"])
        runs.append(ev.evaluate(cfg, progress=False))
        assert (Path(cfg.out) / "predictions" / "custom" / "tiny.parquet").is_file()
    assert runs[0] == runs[1]
    a, b = (json.loads((tmp_path / f"run{k}" / "results" / "tables" / "metrics_full.json").read_text()) for k in range(2))
    assert a == b and set(a["custom"]) == {"tiny", "medoid", "top_city", "random_land"}
    assert a == json.loads(json.dumps(runs[0]))
    # DVC's metrics file is the headline only: thresholds, median, n, unresolved (small enough to read).
    head = json.loads((tmp_path / "run0" / "results" / "metrics.json").read_text())
    assert set(head["custom"]["tiny"]) == set(ev.HEADLINE) and head["custom"]["tiny"]["n"] == 6
    assert a["custom"]["tiny"]["n"] == 6
    table = (tmp_path / "run0" / "results" / "tables" / "main.md").read_text()
    assert "GLOBE-7B [published]" in table and "tiny [ours]" in table and "medoid [baseline]" in table
    raw = [pd.read_parquet(tmp_path / f"run{k}" / "results" / "predictions" / "custom" / "tiny.parquet")["raw"].tolist()
           for k in range(2)]
    assert raw[0] == raw[1]
    # A rerun finds every completion cached and does not load the model.
    monkeypatch.setattr(ev.inference, "_generator", lambda *a, **k: pytest.fail("model loaded although all was cached"))
    again = _cfg(tmp_path / "run0", tiny_vlm_dir, temperature=1.0, top_p=0.9,
                 benchmarks={"custom": {"csv": str(bench_csv), "image_dir": str(ROOT / "data" / "sample" / "images")}},
                 baselines=["medoid", "top_city", "random_land"])
    assert ev.evaluate(again, progress=False) == runs[0]


# ---- baselines ------------------------------------------------------------------------------------------------------


def test_baselines_are_sane(tmp_path):
    rng = np.random.default_rng(0)
    # Most training photos around Paris, a few far away: the medoid and the top city sit in Paris.
    lat = np.r_[48.85 + rng.normal(0, 0.02, 40), [35.68, -33.87, 40.71]]
    lon = np.r_[2.35 + rng.normal(0, 0.02, 40), [139.69, 151.21, -74.0]]
    mlat, mlon = ev.medoid(lat, lon)
    assert (mlat, mlon) in set(zip(lat, lon))
    from globe.geo import haversine_km

    assert haversine_km(mlat, mlon, 48.8566, 2.3522) < 10
    clat, clon, name = ev.top_city(lat, lon)
    assert haversine_km(clat, clon, 48.8566, 2.3522) < 10 and name.endswith("FR")

    rl = ev.random_land(300, seed=3, land_mask=str(ROOT / "globe" / "assets" / "naturalearth" / "naturalearth_lowres.shp"))
    assert np.array_equal(rl[0], ev.random_land(300, seed=3, land_mask=str(ROOT / "globe" / "assets" / "naturalearth" / "naturalearth_lowres.shp"))[0])
    from globe.geo import reverse_geocode

    # On land: near some populated place (the ocean is mostly far from one), spread over both hemispheres.
    near = reverse_geocode(rl[0], rl[1], extra=True)["place_km"].to_numpy()
    assert np.median(near) < 150 and (rl[0] > 0).any() and (rl[0] < 0).any()
    # Without a land mask, the gazetteer decides.
    lat2, lon2 = ev.random_land(50, seed=1, land_mask=None)
    assert (reverse_geocode(lat2, lon2, extra=True)["place_km"] <= 100).all()

    # Scored on a benchmark of Paris photos, the medoid is right at city scale and random points are not.
    bench = pd.DataFrame({"id": [f"p{i}" for i in range(20)], "lat": lat[:20], "lon": lon[:20], "image": ""})
    cfg = _cfg(tmp_path, land_mask=None)
    train = pd.DataFrame({"lat": lat, "lon": lon})
    med = ev.metrics_of(ev.score(bench, ev.baseline_predictions("medoid", bench, train, cfg)), n_bootstrap=20)
    rnd = ev.metrics_of(ev.score(bench, ev.baseline_predictions("random_land", bench, train, cfg)), n_bootstrap=20)
    assert med["acc_25km"] == 1.0 and med["n_unresolved"] == 0 and med["country_acc"] == 1.0
    assert rnd["acc_25km"] < 0.2


# ---- table ----------------------------------------------------------------------------------------------------------


def test_main_table_lays_published_rows_beside_ours():
    pub = ev.published()
    assert {"method", "benchmark", "source"} <= set(pub.columns) and pub["source"].str.len().min() > 20
    globe_row = pub[(pub["method"] == "GLOBE-7B") & (pub["benchmark"] == "im2gps3k")].iloc[0]
    assert [globe_row[f"acc_{t}km"] for t in (1, 25, 200, 750, 2500)] == [9.84, 40.18, 56.19, 71.45, 82.38]
    metrics = {"im2gps3k": {"mine": {"acc_1km": 0.1, "acc_25km": 0.2, "acc_200km": 0.3, "acc_750km": 0.4,
                                     "acc_2500km": 0.5, "n": 10, "n_unresolved": 1, "median_km": 1234.0}}}
    md = ev.main_table(metrics)
    line = next(x for x in md.splitlines() if x.startswith("| mine [ours]"))
    assert "| 10.00 | 20.00 | 30.00 | 40.00 | 50.00 |" in line
    assert "IM2GPS3K Street 1km" in md.splitlines()[0] and "YFCC4K Continent 2500km" in md.splitlines()[0]
    assert "GeoCLIP" in md and "NeurIPS 2023" in md and "n = 10" in md


def test_localizability_column_aligns_with_rows(tmp_path, sample_dir):
    meta = pd.read_csv(sample_dir / "metadata.csv", dtype={"id": str}).head(3)
    bench = pd.DataFrame({"id": list(meta["id"]) + ["broken"], "lat": list(meta["lat"]) + [0.0],
                          "lon": list(meta["lon"]) + [0.0],
                          "image": [str(sample_dir / "images" / f) for f in meta["file"]] + [str(tmp_path / "gone.jpg")]})
    scored = pd.DataFrame({"think": ["Snow and pines.", None, "Kanji.", "Road signs."],
                           "raw": ["<think>Snow and pines.</think>", "", "<think>Kanji.</think>", "x"]})

    class Recorder:  # stands in for LocalizabilityScorer: returns the reasoning's length
        calls: list = []

        def score(self, images, reasonings):
            self.calls.append((len(images), list(reasonings)))
            assert all(im.mode == "RGB" for im in images)
            return [float(len(r)) for r in reasonings]

    out = ev.add_localizability(scored.copy(), bench, Recorder(), _cfg(tmp_path), chunk=2)
    loc = out["localizability"].tolist()
    assert loc[0] == len("Snow and pines.") and loc[2] == len("Kanji.")
    assert np.isnan(loc[1]) and np.isnan(loc[3])  # nothing to judge / image missing
    assert [n for n, _ in Recorder.calls] == [1, 1]


def test_sample_benchmark_reads_the_ingested_test_split(tmp_path, sample_dir):
    """With data/processed/dataset present, `sample` is its test split and the baselines read its train split."""
    from datasets import Dataset, DatasetDict, Features, Image, Value

    meta = pd.read_csv(sample_dir / "metadata.csv", dtype={"id": str}).head(5)
    feats = Features({"id": Value("string"), "image": Image(), "lat": Value("float64"), "lon": Value("float64")})
    rows = lambda m: {"id": list(m["id"]), "image": [str(sample_dir / "images" / f) for f in m["file"]],  # noqa: E731
                      "lat": list(m["lat"]), "lon": list(m["lon"])}
    DatasetDict({"train": Dataset.from_dict(rows(meta.head(3)), features=feats),
                 "test": Dataset.from_dict(rows(meta.tail(2)), features=feats)}).save_to_disk(str(tmp_path / "ds"))
    cfg = _cfg(tmp_path, benchmarks={"sample": {"dataset": str(tmp_path / "ds"), "split": "test"}},
               baseline_train={"dataset": str(tmp_path / "ds"), "split": "train"})
    bench = ev.load_benchmark("sample", cfg)
    assert list(bench["id"]) == list(meta["id"].tail(2))
    im = load_image(bench["image"][0], max_side=64)
    assert im.mode == "RGB" and max(im.size) == 64
    train = ev.load_train_coords(cfg)
    np.testing.assert_allclose(train["lat"], meta["lat"].head(3))


def test_missing_adapter_and_vllm_fail_clearly(tmp_path, bench_csv, tiny_vlm_dir):
    bench = ev.load_benchmark("custom", _cfg(tmp_path))
    cfg = _cfg(tmp_path, tiny_vlm_dir, models=[{"name": "sft", "model": str(tiny_vlm_dir),
                                                "adapter": str(tmp_path / "no-adapter")}])
    with pytest.raises(FileNotFoundError, match="adapter .* not found"):
        ev.predict(bench, cfg.models[0], cfg, tmp_path / "a.jsonl", progress=False)
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        cfg = _cfg(tmp_path, tiny_vlm_dir, backend="vllm")
        with pytest.raises(RuntimeError, match="pip install vllm"):
            ev.predict(bench, cfg.models[0], cfg, tmp_path / "v.jsonl", progress=False)
    assert not (tmp_path / "a.jsonl").exists() or (tmp_path / "a.jsonl").read_text() == ""


def test_completion_key_changes_with_what_the_model_sees(tmp_path):
    """A cached completion is reused only for the same image, model files, adapter files, prompt, image size, backend
    and decoding."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"lora")
    models = [{"name": "m", "model": str(model), "adapter": str(adapter), "prompt": "reasoning"}]
    base = _cfg(tmp_path, models=models)
    key = ev.completion_key(base.models[0], base, "img1")
    assert key == ev.completion_key(base.models[0], _cfg(tmp_path, models=models), "img1")
    assert ev.completion_key(base.models[0], base, "img2") != key
    for over in ({"image_max_side": 256}, {"max_new_tokens": 9}, {"seed": 1}, {"temperature": 0.5}, {"top_p": 0.5},
                 {"backend": "unsloth"}, {"models": [{**models[0], "prompt": "direct"}]},
                 {"models": [{**models[0], "adapter": None}]}):
        other = _cfg(tmp_path, **over)
        assert ev.completion_key(other.models[0], other, "img1") != key, over
    (adapter / "adapter_model.safetensors").write_bytes(b"retrained")  # same path, new weights: not the old answers
    assert ev.completion_key(base.models[0], base, "img1") != key
    (adapter / "adapter_model.safetensors").write_bytes(b"lora")
    (model / "model.safetensors").write_bytes(b"other weights")
    assert ev.completion_key(base.models[0], base, "img1") != key


def test_a_mistyped_prompt_name_is_an_error(tmp_path):
    with pytest.raises(ParamsError, match="unknown prompt 'resoning'"):
        _cfg(tmp_path, models=[{"name": "m", "prompt": "resoning"}])


# ---- the paper's benchmarks from the hub, skips, shards, the official decoding in the cache key ---------------------


def test_hub_style_benchmarks_detect_columns_and_skip_missing_images(tmp_path, sample_dir):
    from datasets import Dataset, Features, Image, Value

    meta = pd.read_csv(sample_dir / "metadata.csv", dtype={"id": str}).head(4)
    files = [str(sample_dir / "images" / f) for f in meta["file"]]
    # GLOBE's layout (IMG_ID, LAT, LON) with its images embedded, one of them missing (incomplete archives)
    ds = Dataset.from_dict({"IMG_ID": list(meta["file"]), "LAT": list(meta["lat"]), "LON": list(meta["lon"]),
                            "image": files[:3] + [None]},
                           features=Features({"IMG_ID": Value("string"), "LAT": Value("float64"),
                                              "LON": Value("float64"), "image": Image()}))
    ds.save_to_disk(str(tmp_path / "mp16"))
    cfg = _cfg(tmp_path, benchmarks={"mp16-reason-test": {"path": str(tmp_path / "mp16"), "split": "test"}})
    df = ev.load_benchmark("mp16-reason-test", cfg)
    assert list(df["id"]) == list(meta["file"][:3]) and df.attrs["skipped"] == {"missing_image": 1}
    load_image(df["image"][0])  # undecoded, loadable
    # labels only + an image folder (GLOBE's eval CSVs): <image_dir>/<IMG_ID>
    Dataset.from_dict({"IMG_ID": list(meta["id"]) + ["gone"], "LAT": list(meta["lat"]) + [0.0],
                       "LON": list(meta["lon"]) + [0.0]}).save_to_disk(str(tmp_path / "labels"))
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    for i, f in zip(meta["id"], meta["file"]):
        (img_dir / f"{i}.jpg").write_bytes((sample_dir / "images" / f).read_bytes())
    cfg = _cfg(tmp_path, benchmarks={"mp16-reason-test": {"path": str(tmp_path / "labels"), "image_dir": str(img_dir)}})
    df = ev.load_benchmark("mp16-reason-test", cfg)
    assert len(df) == 4 and df.attrs["skipped"] == {"missing_image": 1}


def test_osv5m_subset_is_fixed_and_offline_hub_fails_clearly(tmp_path, sample_dir, monkeypatch):
    from globe.evaluate.benchmarks import stable_subset

    ids = [str(i) for i in range(100)]
    keep = stable_subset(ids, 30)
    assert sum(keep) == 30 and keep == stable_subset(ids, 30)
    chosen = {i for i, k in zip(ids, keep) if k}
    assert chosen == {i for i, k in zip(ids[::-1], stable_subset(ids[::-1], 30)) if k}  # whatever the row order
    meta = pd.read_csv(sample_dir / "metadata.csv", dtype={"id": str}).head(5)
    (tmp_path / "osv" / "images").mkdir(parents=True)
    for i, f in zip(meta["id"], meta["file"]):
        (tmp_path / "osv" / "images" / f"{i}.jpg").write_bytes((sample_dir / "images" / f).read_bytes())
    meta.assign(latitude=meta["lat"], longitude=meta["lon"])[["id", "latitude", "longitude"]].to_csv(
        tmp_path / "osv" / "test.csv", index=False)
    entry = {"csv": str(tmp_path / "osv" / "test.csv"), "image_dir": str(tmp_path / "osv" / "images"),
             "hub": "osv5m/osv5m", "subset": 3}
    df = ev.load_benchmark("osv5m", _cfg(tmp_path, benchmarks={"osv5m": entry}))
    assert len(df) == 3 and set(df["id"]) == {i for i, k in zip(meta["id"], stable_subset(meta["id"], 3)) if k}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gone = {**entry, "csv": str(tmp_path / "none" / "test.csv")}
    with pytest.raises(ev.MissingBenchmark, match="offline"):
        ev.load_benchmark("osv5m", _cfg(tmp_path, benchmarks={"osv5m": gone}))


def test_penalties_enter_the_cache_key_only_when_set(tmp_path, bench_csv):
    plain = _cfg(tmp_path)
    key = ev.completion_key(plain.models[0], plain, "img")
    assert key == ev.completion_key(_cfg(tmp_path, frequency_penalty=0.0).models[0], plain, "img")
    pen = _cfg(tmp_path, frequency_penalty=0.7, presence_penalty=0.7)
    assert ev.completion_key(pen.models[0], pen, "img") != key
    with pytest.raises(ParamsError, match="presence_penalty"):
        _cfg(tmp_path, presence_penalty=3.0)


def test_eval_shards_merge_into_the_full_run(tmp_path, bench_csv, tiny_vlm_dir):
    base = dict(models=[{"name": "tiny", "model": str(tiny_vlm_dir), "prompt": "globe-cot"}], max_new_tokens=4)
    for i in range(2):
        assert ev.evaluate(_cfg(tmp_path, **base, shard=f"{i}/2"), progress=False) == {}
    pred = tmp_path / "results" / "predictions" / "custom"
    assert not (pred / "tiny.jsonl").exists() and len(list(pred.glob("tiny.shard-*-of-2.jsonl"))) == 2
    report = ev.merge_shards(_cfg(tmp_path, **base), 2)
    assert report["custom"]["tiny"]["records_out"] == 6
    raw = ev.predict(ev.load_benchmark("custom", _cfg(tmp_path, **base)), _cfg(tmp_path, **base).models[0],
                     _cfg(tmp_path, **base), pred / "tiny.jsonl", progress=False)
    assert raw.attrs["n_generated"] == 0 and raw["raw"].notna().all()  # the shards generated everything
