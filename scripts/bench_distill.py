"""Distillation throughput on real photos: IM2GPS3K (874 photos in ../shared/data/im2gps3k) through the tiny local
teacher (and the reference stand-in), writing results/bench/distill_im2gps3k.json.

Measures teacher images/second (both prompts per photo), the ingest rejects, and the filter funnel (reject counts per
filter). Not a test: it reads ../shared, which users' clones lack.

    python scripts/bench_distill.py [--images-dir ../shared/data/im2gps3k] [--max-images N] [--work /tmp/globe-bench-distill]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images-dir", default="../shared/data/im2gps3k", help="folder with images.csv and images/")
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--work", default="/tmp/globe-bench-distill", help="scratch folder (dataset, cache, outputs)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--out", default="results/bench/distill_im2gps3k.json")
    args = ap.parse_args()

    import torch

    from globe.config import enter_project_root, offline_hub, stage_params
    from globe.data import DataParams, build_dataset
    from globe.distill import run_distillation
    from globe.tiny import build_tiny_vlm

    enter_project_root()
    offline_hub()
    work = Path(args.work)
    src = Path(args.images_dir)
    t0 = time.perf_counter()
    dd, rejects = build_dataset(DataParams(
        source="csv", csv=str(src / "images.csv"), image_dir=str(src / "images"), layout="im2gps3k",
        max_images=args.max_images, test_fraction=0.3, stratify=False, out=str(work / "dataset"), rejects=None,
        summary_dir=None,
    ))
    ingest_s = time.perf_counter() - t0
    model = work / "tiny-qwen2.5-vl"
    if not model.exists():
        build_tiny_vlm(model, seed=0)

    cfg = stage_params("02_distill")
    cfg.update(dataset=str(work / "dataset"), out=str(work / "mp16_reason"), cache=str(work / "cache.jsonl"),
               results=str(work / "results"), detector=str(work / "tiny-owlvit"), build_tiny_models=True,
               batch_size=args.batch_size)
    cfg["teachers"] = [
        {"name": "tiny-local", "backend": "local", "model": str(model), "batch_size": args.batch_size,
         "max_image_side": 112, "max_new_tokens": args.max_new_tokens},
        {"name": "oracle", "backend": "oracle"},
    ]
    for f in (work / "cache.jsonl",):
        f.unlink(missing_ok=True)  # a cold run: every request is asked
    t0 = time.perf_counter()
    res = run_distillation(cfg, progress=True)
    total_s = time.perf_counter() - t0
    n_images = sum(res.stats["images"].values())
    funnel = res.funnel
    rejected = {
        f"{split}/{teacher}": {stage: int(d) for stage, d in zip(g["stage"], g["dropped"]) if stage != "judged"}
        for (split, teacher), g in funnel.groupby(["split", "teacher"], sort=False)
    }
    report = {
        "benchmark": "distill_im2gps3k",
        "command": "python scripts/bench_distill.py" + (f" --max-images {args.max_images}" if args.max_images else ""),
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
        "ingest": {"rows_in": n_images + len(rejects), "kept": n_images, "rejects": rejects["reason"].value_counts().to_dict(),
                   "seconds": round(ingest_s, 2)},
        "teachers": {"tiny-local": {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "max_image_side": 112}},
        "teacher_seconds": res.seconds["teachers"],
        "tiny_local_images_per_second": round(n_images / res.seconds["teachers"]["tiny-local"], 3),
        "requests": res.stats["query"]["asked"],
        "seconds": {k: v for k, v in res.seconds.items() if k != "teachers"}, "total_seconds": round(total_s, 2),
        "unparsed": {"localizability": res.stats["unparsed_localizability"], "answer": res.stats["unparsed_answer"]},
        "rejected_by_filter": rejected,
        "dataset_sizes": res.stats["sizes"],
        "note": "images/second counts photos (2 prompts each: reasoning + localizability) through the tiny local "
                "teacher, preprocessing included. The CPU was shared with other jobs when measured.",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
