"""Evaluation throughput and table on a real benchmark (not a test): the tiny base model over IM2GPS3K photos.

    python scripts/bench_eval.py                      # ../shared/data/im2gps3k (874 CC photos), tiny model
    python scripts/bench_eval.py --csv labels.csv --image-dir images/ --model Qwen/Qwen2.5-VL-7B-Instruct

Writes <out>/metrics.json, <out>/tables/main.md, <out>/predictions/im2gps3k/*, and results/bench/eval_<name>.json
(images/s of generation with model loading excluded, wall time, settings, headline metrics). Rerunning resumes from
the cached completions; pass --fresh to measure throughput again from scratch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from globe import evaluate as ev
from globe.config import enter_project_root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", default="../shared/data/im2gps3k/images.csv", help="IM2GPS3K-layout labels (IMG_ID, LAT, LON)")
    p.add_argument("--image-dir", default="../shared/data/im2gps3k/images")
    p.add_argument("--model", default="models/tiny-qwen2.5-vl", help="hub id or path; the tiny model is built if absent")
    p.add_argument("--adapter", default=None, help="a PEFT adapter on --model (e.g. models/grpo)")
    p.add_argument("--prompt", default="reasoning")
    p.add_argument("--baseline-train", default="../shared/data/labels/yfcc4k.csv",
                   help="coordinates for the weight-free baselines (a Flickr set disjoint from the benchmark)")
    p.add_argument("--out", default="results/bench/eval_im2gps3k")
    p.add_argument("--name", default="im2gps3k")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--fresh", action="store_true", help="delete cached completions first")
    args = p.parse_args()
    enter_project_root()

    if args.model == "models/tiny-qwen2.5-vl" and not Path(args.model).is_dir():
        from globe.tiny import build_tiny_vlm

        build_tiny_vlm(args.model, seed=0)
    if args.fresh:
        shutil.rmtree(args.out, ignore_errors=True)
    baselines = list(ev.BASELINES) if Path(args.baseline_train).is_file() else []
    cfg = ev.EvalParams.from_params(dict(
        out=args.out, run_benchmarks=["im2gps3k"], base_model=args.model,
        benchmarks={"im2gps3k": {"csv": args.csv, "image_dir": args.image_dir}},
        models=[{"name": (f"tiny-{Path(args.adapter).name}" if args.adapter else "tiny-base-" + args.prompt)
                 if "tiny" in args.model else Path(args.model).name, "adapter": args.adapter, "prompt": args.prompt}],
        baselines=baselines, baseline_train={"csv": args.baseline_train},
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, max_images=args.max_images, n_bootstrap=1000,
    ))
    bench = ev.load_benchmark("im2gps3k", cfg)
    entry = cfg.models[0]
    cache = cfg.predictions_dir / "im2gps3k" / f"{entry.name}.jsonl"

    # Throughput: generation only (model loading timed apart), on the images not yet cached.
    t0 = time.perf_counter()
    preds = ev.predict(bench, entry, cfg, cache)
    predict_s = time.perf_counter() - t0
    gen_s = preds.attrs["generate_s"]
    t1 = time.perf_counter()
    metrics = ev.evaluate(cfg)  # everything cached now: parses, geocodes, scores, baselines, table
    score_s = time.perf_counter() - t1

    n_new = preds.attrs["n_generated"]
    m = metrics["im2gps3k"][entry.name]
    record = {
        "benchmark": args.name, "csv": args.csv, "n_images": len(bench), "n_generated_now": n_new,
        "model": args.model, "adapter": args.adapter, "prompt": args.prompt, "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens, "image_max_side": cfg.image_max_side,
        "generate_wall_s": round(gen_s, 2), "images_per_s": round(n_new / gen_s, 3) if n_new else None,
        "predict_wall_s_incl_model_load": round(predict_s, 2),
        "score_and_baselines_wall_s": round(score_s, 2),
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version()},
        "metrics": {k: {kk: v[kk] for kk in ("acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km",
                                             "median_km", "n", "n_unresolved", "country_acc")}
                    for k, v in metrics["im2gps3k"].items()},
    }
    Path("results/bench").mkdir(parents=True, exist_ok=True)
    out = Path(f"results/bench/eval_{args.name}{'_' + Path(args.adapter).name if args.adapter else ''}.json")
    if not n_new and out.is_file():  # all cached: keep the throughput measured when the completions were generated
        old = json.loads(out.read_text())
        if old.get("model") == args.model and old.get("n_images") == len(bench):
            for k in ("n_generated_now", "generate_wall_s", "images_per_s", "predict_wall_s_incl_model_load"):
                record[k] = old.get(k)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print((Path(cfg.out) / "tables" / "main.md").read_text())
    print(f"wrote {out}; {m['n']} images, {m['n_unresolved']} unresolved")


if __name__ == "__main__":
    main()
