"""The recipes in shape on CPU (issue 12's "Done when").

Each recipe (`paper`, `unsloth`, `released`) is applied as `globe profile NAME` would write it, its values are checked
against GLOBE's (the paper and its official scripts), and its stages run on CPU by calling the stage functions with
every value of the recipe kept except these swaps:

- every model id -> a tiny random model of the same family built offline: the policy, reward-model base and released
  checkpoint (Qwen2.5-VL) -> the tiny Qwen2.5-VL; GeoCLIP -> the tiny GeoCLIP (the geoclip package's classes, a tiny
  CLIP backbone); the sentence encoder (a BERT) -> a tiny BERT; the ADE20K SegFormer -> a tiny SegFormer with
  ADE20K's labels; the teachers' VLM endpoints (Qwen2.5-VL-72B, InternVL3-78B) -> the tiny Qwen2.5-VL run locally
  (no tiny InternVL is built; a teacher endpoint's model family is the server's business);
- data -> a handful of the committed sample photos (and benchmarks built from them); paths -> a temporary folder;
- each training stage -> one optimisation step (`steps: 1` in place of the epochs);
- switches a CPU cannot honour -> exercised up to the point where the CPU stops them (the stop is asserted), then off
  for the run: vLLM, DeepSpeed ZeRO-3, Unsloth, 4-bit, several processes, the reward-model endpoint (its client's
  official request is tested in tests/test_reward_model.py).

Random teachers' traces never survive the paper's filters, so the stages after distillation train on an
MP16-Reason-shaped set the oracle stand-in writes for the same photos (as the default profile does).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from globe.config import load_params, render_profile, stage_of

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("paper", "unsloth", "released")
N_PHOTOS = 12  # the handful of photos


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (OpenMP's spinning threads cost more than they give on 2 cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def recipes(tmp_path_factory) -> dict[str, dict]:
    """Each recipe's params, rendered over the default profile and resolved (`${group.key}` references)."""
    out = {}
    for name in RECIPES:
        path = tmp_path_factory.mktemp(f"recipe-{name}") / "params.yaml"
        path.write_text(render_profile(name, (ROOT / "params.yaml").read_text(encoding="utf-8"), ROOT / "profiles"),
                        encoding="utf-8")
        out[name] = {"path": path, **load_params(path)}
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_vlm_dir) -> dict[str, Path]:
    from globe import tiny as t

    d = tmp_path_factory.mktemp("tiny-recipe")
    return {"vlm": tiny_vlm_dir, "geoclip": t.build_tiny_geoclip(d / "geoclip"),
            "bert": t.build_tiny_text_encoder(d / "bert"), "segformer": t.build_tiny_segmenter(d / "segformer")}


def stage_values(params: dict, group: str) -> dict:
    """What `globe params GROUP` prints for these params: the common keys the stage reads, then its group."""
    stage = stage_of(group)
    return {**{k: params["common"][k] for k in stage.common}, **params[group]}


# ---------------------------------------------------------------------------------------------------------------------
# The recipes ask for what GLOBE did


def test_paper_recipe_values_are_globes(recipes):
    p = recipes["paper"]
    assert p["common"]["base_model"] == "Qwen/Qwen2.5-VL-7B-Instruct" and p["common"]["offline"] is False
    g = stage_values(p, "grpo")
    # GRPO from the base model, full fine-tune, bf16, ZeRO-3, 6 x 8 x 2, 1 epoch, warmup 0.01, vLLM, async, 16 gens
    assert g["init_adapter"] is None and g["lora"] is None and g["dtype"] == "bfloat16"
    assert g["deepspeed"] == "configs/deepspeed/zero3.json"
    assert json.loads((ROOT / g["deepspeed"]).read_text())["zero_optimization"]["stage"] == 3
    assert (g["num_processes"], g["per_device_train_batch_size"], g["gradient_accumulation_steps"]) == (6, 8, 2)
    assert (g["steps"], g["num_train_epochs"], g["warmup_steps"]) == (None, 1, 0.01)
    assert (g["use_vllm"], g["vllm_mode"], g["vllm_max_model_length"], g["async_generation"]) == (True, "server", 1024,
                                                                                                  True)
    assert (g["num_generations"], g["learning_rate"], g["beta"], g["temperature"], g["max_completion_length"]) == (
        16, 1e-6, 0.001, 1.0, 1024)
    assert g["rewards"] == {"accuracy": 1.0, "localizability": 0.5, "visual": 0.2, "format": 1.0}
    assert g["prompt"] == "globe-train" and g["dataset"] == p["distill"]["out"]
    assert g["reward_model"].startswith("http") and g["reward_model_client"]["input_format"] == "official"
    # The reward model: official input and readout; LoRA r16 / alpha 64 all-linear, frozen ViT, 2 epochs, 128 a step
    r = stage_values(p, "reward_model")
    assert (r["input_format"], r["readout"]) == ("official", "top5")
    assert (r["lora"]["r"], r["lora"]["alpha"], r["lora"]["target_modules"], r["lora"]["finetune_vision_layers"]) == (
        16, 64, "all-linear", False)
    assert (r["learning_rate"], r["steps"], r["num_train_epochs"], r["max_length"], r["max_pixels"]) == (
        1e-4, None, 2, 2048, 1003520)
    assert r["batch_size"] * r["grad_accum"] * r["num_processes"] == 128
    # SFT, the ablation: full fine-tune, lr 1e-5, 2 epochs
    s = stage_values(p, "sft")
    assert (s["lora"], s["learning_rate"], s["num_train_epochs"], s["max_steps"], s["prompt"]) == (
        None, 1e-5, 2, -1, "globe-train")
    # Three teachers (GeoCLIP one of them), filter 3 with GeoCLIP and alignment, filter 4 by segmentation
    d = stage_values(p, "distill")
    assert [(t["backend"], t.get("model")) for t in d["teachers"]] == [
        ("openai", "Qwen/Qwen2.5-VL-72B-Instruct"), ("openai", "OpenGVLab/InternVL3-78B"), ("geoclip", "geoclip")]
    assert d["filters"] == ["localizability", "ground_truth", "agreement", "geoclip", "alignment", "clues"]
    assert d["min_agreeing_teachers"] == 2 and d["alignment_model"] != "lexical" and d["verifier"] == "segmentation"
    assert "ade" in d["segmenter"] and d["detector"] == "google/owlv2-base-patch16-ensemble"
    # Evaluation: the three benchmarks from the hub, the official prompts and decoding
    e = stage_values(p, "eval")
    assert e["run_benchmarks"] == ["im2gps3k", "mp16-reason-test", "osv5m"]
    assert e["benchmarks"]["mp16-reason-test"]["path"] == "globe-project/MP16-Reason"
    assert (e["benchmarks"]["osv5m"]["hub"], e["benchmarks"]["osv5m"]["subset"]) == ("osv5m/osv5m", 3000)
    assert (e["temperature"], e["max_new_tokens"], e["frequency_penalty"], e["presence_penalty"]) == (
        0.1, 512, 0.7, 0.7)
    assert {m["prompt"] for m in e["models"]} == {"globe-cot", "globe-no-cot"}


def test_unsloth_recipe_is_paper_on_one_gpu(recipes):
    p, u = recipes["paper"], recipes["unsloth"]
    g = u["grpo"]
    assert (g["backend"], g["use_vllm"], g["vllm_mode"], g["init_adapter"], g["num_processes"]) == (
        "unsloth", True, "colocate", None, 1)
    assert g["lora"]["r"] == 64 and g["load_in_4bit"] is False and g["deepspeed"] is None
    # the same 96 completions (6 photos x 16) per step as the paper's 6 GPUs
    pg = p["grpo"]
    assert g["per_device_train_batch_size"] * g["gradient_accumulation_steps"] == 96 == (
        pg["per_device_train_batch_size"] * pg["gradient_accumulation_steps"] * pg["num_processes"])
    for key in ("num_generations", "max_completion_length", "temperature", "beta", "rewards", "prompt", "dataset"):
        assert g[key] == p["grpo"][key], key
    for group in ("data", "distill", "eval"):
        assert u[group] == p[group], group


def test_released_recipe_evaluates_the_checkpoint_only(recipes):
    r, p = recipes["released"], recipes["paper"]
    assert r["eval"]["models"] == [{"name": "globe-released", "model": "globe-project/GLOBE-Qwen2.5VL-7B",
                                    "adapter": None, "prompt": "globe-cot"}]
    for key in ("run_benchmarks", "benchmarks", "temperature", "max_new_tokens", "frequency_penalty",
                "presence_penalty", "top_p"):
        assert r["eval"][key] == p["eval"][key], key


def test_globe_params_shows_the_table_values(recipes):
    """`globe params STAGE` prints each value the issue's table names (here for the paper recipe's GRPO)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "globe.cli", "params", "04_grpo", "--params",
                          str(recipes["paper"]["path"])], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    shown = yaml.safe_load(out)
    for key in ("init_adapter", "lora", "dtype", "deepspeed", "num_processes", "per_device_train_batch_size",
                "gradient_accumulation_steps", "num_train_epochs", "warmup_steps", "use_vllm",
                "vllm_max_model_length", "async_generation", "num_generations", "learning_rate", "beta", "temperature",
                "max_completion_length"):
        assert key in shown and shown[key] == recipes["paper"]["grpo"][key], key


# ---------------------------------------------------------------------------------------------------------------------
# Swaps and helpers


def tiny_distill(params: dict, tiny: dict, data: Path, work: Path) -> dict:
    d = dict(params)
    teachers = []
    for t in d["teachers"]:
        if t["backend"] == "geoclip":
            teachers.append({**t, "model": str(tiny["geoclip"]), "batch_size": 8})
        else:  # an endpoint -> the tiny VLM in process, same name and sampling
            teachers.append({k: v for k, v in t.items() if k in ("name", "max_new_tokens", "temperature", "top_p")}
                            | {"backend": "local", "model": str(tiny["vlm"]), "batch_size": 16})
    d.update(teachers=teachers, dataset=str(data), out=str(work / "mp16_reason"), cache=str(work / "cache.jsonl"),
             results=str(work / "results"), alignment_model=str(tiny["bert"]), segmenter=str(tiny["segformer"]),
             offline=True)
    return d


def oracle_set(data: Path, work: Path) -> Path:
    """An MP16-Reason-shaped set (and its localizability labels) for the same photos, from the oracle stand-in."""
    from globe.distill import run_distillation

    run_distillation({"dataset": str(data), "out": str(work / "oracle_set"), "cache": str(work / "oracle.jsonl"),
                      "results": str(work / "oracle_results"), "min_localizability": 0.0,
                      "teachers": [{"name": "oracle-a", "backend": "oracle"},
                                   {"name": "oracle-b", "backend": "oracle"}],
                      "filters": ["ground_truth", "agreement"], "keep": "best", "offline": True}, progress=False)
    return work / "oracle_set"


def benchmarks(sample_dir: Path, work: Path, recipe_entries: dict) -> dict:
    """The recipe's three benchmarks, built from sample photos in their own layouts (one listed image missing)."""
    from datasets import Dataset, Features, Image, Value

    meta = pd.read_csv(sample_dir / "metadata.csv", dtype={"id": str}).iloc[N_PHOTOS:N_PHOTOS + 3]
    images = sample_dir / "images"
    (work / "im2gps3k").mkdir(parents=True, exist_ok=True)
    im = meta.assign(IMG_ID=meta["file"], LAT=meta["lat"], LON=meta["lon"])[["IMG_ID", "LAT", "LON"]]
    pd.concat([im, pd.DataFrame({"IMG_ID": ["gone.jpg"], "LAT": [1.0], "LON": [2.0]})]).to_csv(
        work / "im2gps3k" / "labels.csv", index=False)
    mp16 = Dataset.from_dict({"IMG_ID": list(meta["file"]), "LAT": list(meta["lat"]), "LON": list(meta["lon"]),
                              "image": [str(images / f) for f in meta["file"]]},
                             features=Features({"IMG_ID": Value("string"), "LAT": Value("float64"),
                                                "LON": Value("float64"), "image": Image()}))
    mp16.save_to_disk(str(work / "mp16_reason_test"))
    osv = work / "osv5m"
    (osv / "images").mkdir(parents=True, exist_ok=True)
    for i, f in zip(meta["id"], meta["file"]):
        shutil.copy(images / f, osv / "images" / f"{i}.jpg")
    meta.assign(latitude=meta["lat"], longitude=meta["lon"])[["id", "latitude", "longitude"]].to_csv(
        osv / "test.csv", index=False)
    return {**recipe_entries,
            "im2gps3k": {"csv": str(work / "im2gps3k" / "labels.csv"), "image_dir": str(images)},
            "mp16-reason-test": {**recipe_entries["mp16-reason-test"], "path": str(work / "mp16_reason_test")},
            "osv5m": {**recipe_entries["osv5m"], "csv": str(osv / "test.csv"), "image_dir": str(osv / "images")}}


def cpu_stops(fn, *words):
    """Run `fn`, which must stop because this is a CPU without the GPU packages; the error names one of `words`."""
    with pytest.raises(Exception) as e:  # noqa: PT011 - the kind differs per package (ImportError, RuntimeError, ...)
        fn()
    text = f"{type(e.value).__name__}: {e.value}".lower()
    assert any(w in text for w in words), text
    return text


# ---------------------------------------------------------------------------------------------------------------------
# The runs


@pytest.mark.slow
def test_paper_recipe_runs_in_shape(recipes, tiny, sample_dir, tmp_path, monkeypatch, caplog):
    from datasets import load_from_disk

    from globe import evaluate as ev
    from globe.data import DataParams, build_dataset
    from globe.distill import DistillParams, run_distillation
    from globe.launch import launch_command, needs_launch
    from globe.models import select_backend
    from globe.reward_model import RewardModelParams, train_reward_model
    from globe.train.grpo import GRPOParams, grpo_config, train_grpo
    from globe.train.sft import SFTParams, train_sft

    monkeypatch.chdir(ROOT)  # the recipe's relative paths (configs/deepspeed/zero3.json)
    p = recipes["paper"]
    common = {**p["common"], "base_model": str(tiny["vlm"]), "offline": True}

    # data: a handful of sample photos, every other data value of the recipe (1024 px, 26% test)
    data = stage_values({**p, "common": common}, "data")
    data.update(csv=str(sample_dir / "metadata.csv"), image_dir=str(sample_dir / "images"), layout="sample",
                max_images=N_PHOTOS, out=str(tmp_path / "dataset"), rejects=str(tmp_path / "rejects.csv"),
                summary_dir=str(tmp_path / "data_summary"))
    data.pop("base_model", None)
    dd, _ = build_dataset(DataParams.from_params(data))
    assert sum(len(s) for s in dd.values()) == N_PHOTOS

    # distillation: three teachers (two VLMs, GeoCLIP), all six filters, segmentation verifier
    dcfg = DistillParams.from_params({**tiny_distill(stage_values({**p, "common": common}, "distill"), tiny,
                                                     tmp_path / "dataset", tmp_path / "distill"), "max_images": 2})
    res = run_distillation(dcfg, progress=False)
    assert list(res.funnel["stage"].unique()) == ["judged", *dcfg.filters]
    n_asked = sum(res.stats["images"].values())  # 2 photos per split
    assert res.stats["query"]["asked"]["geoclip"] == n_asked and not any(res.stats["query"]["errors"].values())
    assert res.stats["query"]["asked"]["qwen2.5-vl-72b"] == 2 * n_asked  # the reasoning and localizability prompts
    assert res.stats["verifier"]["verifier"] == "segmentation"
    assert set(res.funnel["teacher"]) == {"qwen2.5-vl-72b", "internvl3-78b", "images"}  # GeoCLIP is no candidate
    assert res.candidates["geoclip_lat"].notna().all()  # every candidate carries GeoCLIP's point

    train_set = oracle_set(tmp_path / "dataset", tmp_path / "oracle")

    # SFT, the ablation: a full fine-tune (vision frozen), 1 x 8 accumulation, bf16; 8 processes asked for
    s = stage_values({**p, "common": common}, "sft")
    assert s["num_processes"] == 8
    scfg = SFTParams.from_params({**s, "dataset": str(train_set), "out": str(tmp_path / "sft"),
                                  "log_csv": str(tmp_path / "sft_log.csv"), "max_steps": 1})
    assert needs_launch(scfg) and "--num_processes" in (cmd := launch_command("sft", "p.yaml", 8)) and "8" in cmd
    scfg = SFTParams.from_params({**scfg.to_dict(), "num_processes": None})
    train_sft(scfg)
    summary = json.loads((tmp_path / "sft" / "train_summary.json").read_text())
    assert summary["global_step"] == 1 and (tmp_path / "sft" / "model.safetensors").is_file()  # a whole model

    # The reward model: official input and top-5 readout, LoRA all-linear, 4 x 4 accumulation, 2048 tokens, 1M px
    r = stage_values({**p, "common": common}, "reward_model")
    rcfg = RewardModelParams.from_params({**r, "labels": str(train_set / "localizability"), "steps": 1,
                                          "num_train_epochs": None, "num_processes": None,
                                          "out": str(tmp_path / "rm"), "metrics": str(tmp_path / "rm.json")})
    metrics = train_reward_model(rcfg)
    settings = json.loads((tmp_path / "rm" / "globe_reward_model.json").read_text())
    assert (settings["input_format"], settings["readout"]) == ("official", "top5")
    assert metrics["train"]["steps"] == 1 and metrics["n"]["eval"] >= 1

    # GRPO: ZeRO-3 and vLLM stop here; 6 processes asked for; then a full fine-tune step from the base model
    g = stage_values({**p, "common": common}, "grpo")
    assert g["reward_model"].startswith("http")  # the endpoint -> the reward model just trained, in process
    base = {**g, "dataset": str(train_set), "out": str(tmp_path / "grpo"), "log_csv": str(tmp_path / "grpo.csv"),
            "samples": str(tmp_path / "grpo.jsonl"), "steps": 1, "num_train_epochs": None,
            "reward_model": str(tmp_path / "rm"), "reward_model_client": {}}
    gcfg = GRPOParams.from_params(base)
    assert needs_launch(gcfg)
    gcfg = GRPOParams.from_params({**base, "num_processes": None})
    cpu_stops(lambda: grpo_config(gcfg, on_gpu=False, reward_weights=[1.0, 0.5, 0.2, 1.0]), "deepspeed")
    cpu_stops(lambda: train_grpo({**base, "num_processes": None, "deepspeed": None}), "vllm")
    with caplog.at_level(logging.WARNING, logger="globe.train.grpo"):
        train_grpo(GRPOParams.from_params({**base, "num_processes": None, "deepspeed": None, "use_vllm": False}))
    assert any("async_generation" in m for m in caplog.messages)
    log = pd.read_csv(tmp_path / "grpo.csv")
    assert len(log) == 1 and {f"rewards/{n}/mean" for n in ("accuracy", "localizability", "visual", "format")} <= set(
        log.columns)
    samples = [json.loads(x) for x in (tmp_path / "grpo.jsonl").read_text().splitlines()]
    assert len(samples) == 16 and len({s["id"] for s in samples}) == 1  # one photo, 16 generations
    assert (tmp_path / "grpo" / "model.safetensors").is_file()  # a full fine-tune writes the whole model
    assert cpu_stops(lambda: select_backend("unsloth"), "cuda")  # (the unsloth recipe's switch)

    # Evaluation: the three benchmarks (one image missing: a counted skip), official prompts and decoding
    e = stage_values({**p, "common": common}, "eval")
    outs = {"sft": str(tmp_path / "sft"), "grpo": str(tmp_path / "grpo")}
    models = [{**m, "model": outs.get(m["name"], m["model"])} for m in e["models"]]
    ecfg = dict(e, out=str(tmp_path / "results"), models=models, max_images=2, reward_model=str(tmp_path / "rm"),
                benchmarks=benchmarks(sample_dir, tmp_path / "bench", e["benchmarks"]),
                baseline_train={"dataset": str(tmp_path / "dataset"), "split": "train"})
    bench = ev.load_benchmark("mp16-reason-test", ev.EvalParams.from_params(ecfg))
    cpu_stops(lambda: ev.predict(bench, ev.EvalParams.from_params(ecfg).models[0], ev.EvalParams.from_params(ecfg),
                                 tmp_path / "x.jsonl", progress=False), "vllm")
    metrics = ev.evaluate(ev.EvalParams.from_params({**ecfg, "backend": "transformers"}), progress=False)
    assert set(metrics) == {"im2gps3k", "mp16-reason-test", "osv5m"}
    assert set(metrics["osv5m"]) == {m["name"] for m in models} | set(e["baselines"])
    assert metrics["im2gps3k"]["grpo"]["skipped_images"] == 1 and "skipped_images" not in metrics["osv5m"]["grpo"]
    preds = pd.read_parquet(tmp_path / "results" / "predictions" / "osv5m" / "base-cot.parquet")
    assert len(preds) == 2 and preds["localizability"].notna().any()  # the official-format reward model judged them
    assert load_from_disk(str(train_set))["train"].num_rows >= 1


@pytest.mark.slow
def test_unsloth_recipe_runs_in_shape(recipes, tiny, sample_dir, tmp_path, monkeypatch):
    """The unsloth recipe's own stage is GRPO (its data, distillation and evaluation are the paper's: checked equal
    above, run by the paper test): Unsloth, its vLLM engine and 4-bit stop on this CPU; TRL accepts the recipe's
    batch arithmetic (16 per device x 6 accumulation = 96 completions of 16 generations on one process); then a LoRA
    step from the base model. That step uses 1 accumulation step and 128-token completions (the paper test runs the
    same 16 generations, 1024 tokens and accumulation): 96 completions of 1024 tokens take many minutes on 2 cores."""
    from globe.data import DataParams, build_dataset
    from globe.models import load_vlm, select_backend
    from globe.reward_model import RewardModelParams, train_reward_model
    from globe.train.grpo import GRPOParams, grpo_config, train_grpo

    monkeypatch.chdir(ROOT)
    u = recipes["unsloth"]
    common = {**u["common"], "base_model": str(tiny["vlm"]), "offline": True}
    data = {**stage_values({**u, "common": common}, "data"), "csv": str(sample_dir / "metadata.csv"),
            "image_dir": str(sample_dir / "images"), "layout": "sample", "max_images": N_PHOTOS,
            "out": str(tmp_path / "dataset"), "rejects": str(tmp_path / "rejects.csv"),
            "summary_dir": str(tmp_path / "summary")}
    data.pop("base_model", None)
    build_dataset(DataParams.from_params(data))
    train_set = oracle_set(tmp_path / "dataset", tmp_path / "oracle")
    r = stage_values({**u, "common": common}, "reward_model")
    assert r["backend"] == "unsloth" and r["batch_size"] * r["grad_accum"] == 128
    train_reward_model(RewardModelParams.from_params({**r, "backend": "transformers", "labels": str(
        train_set / "localizability"), "steps": 1, "num_train_epochs": None, "out": str(tmp_path / "rm"),
        "metrics": str(tmp_path / "rm.json")}))

    g = stage_values({**u, "common": common}, "grpo")
    cpu_stops(lambda: select_backend(g["backend"]), "cuda")
    cpu_stops(lambda: load_vlm(str(tiny["vlm"]), training=True, backend="transformers", load_in_4bit=True), "cuda")
    base = {**g, "dataset": str(train_set), "out": str(tmp_path / "grpo"), "log_csv": str(tmp_path / "grpo.csv"),
            "samples": str(tmp_path / "grpo.jsonl"), "steps": 1, "num_train_epochs": None,
            "reward_model": str(tmp_path / "rm"), "backend": "transformers"}
    cpu_stops(lambda: train_grpo(base), "vllm")
    args = grpo_config(GRPOParams.from_params({**base, "use_vllm": False}), on_gpu=False,
                       reward_weights=[1.0, 0.5, 0.2, 1.0])
    assert (args.generation_batch_size, args.num_generations, args.learning_rate) == (96, 16, 1e-5)
    train_grpo(GRPOParams.from_params({**base, "use_vllm": False, "gradient_accumulation_steps": 1,
                                       "max_completion_length": 128}))
    samples = [json.loads(x) for x in (tmp_path / "grpo.jsonl").read_text().splitlines()]
    assert len(samples) == 16 and len({s["id"] for s in samples}) == 1  # one photo's 16 generations
    assert (tmp_path / "grpo" / "adapter_config.json").is_file()  # a LoRA
    assert json.loads((tmp_path / "grpo" / "adapter_config.json").read_text())["r"] == 64


@pytest.mark.slow
def test_released_recipe_runs_in_shape(recipes, tiny, sample_dir, tmp_path, monkeypatch):
    from globe import evaluate as ev

    monkeypatch.chdir(ROOT)
    r = recipes["released"]
    e = stage_values({**r, "common": {**r["common"], "base_model": str(tiny["vlm"]), "offline": True}}, "eval")
    assert e["models"][0]["model"] == "globe-project/GLOBE-Qwen2.5VL-7B"
    models = [{**m, "model": str(tiny["vlm"])} for m in e["models"]]
    cfg = ev.EvalParams.from_params(dict(e, out=str(tmp_path / "results"), models=models, max_images=2,
                                         backend="transformers",
                                         benchmarks=benchmarks(sample_dir, tmp_path / "bench", e["benchmarks"])))
    metrics = ev.evaluate(cfg, progress=False)
    assert {b: list(m) for b, m in metrics.items()} == {b: ["globe-released"] for b in e["run_benchmarks"]}
    table = (tmp_path / "results" / "tables" / "main.md").read_text()
    assert "globe-released [ours]" in table and "GLOBE-7B [published]" in table
