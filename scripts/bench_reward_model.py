"""Benchmark the localizability reward model on this machine: training time, in-process and endpoint throughput.

    python scripts/bench_reward_model.py [--model models/tiny-qwen2.5-vl] [--n 64] [--steps 10]

Writes results/bench/reward_model.json. With the default tiny random model the figures measure the plumbing
(processor, batching, HTTP, JSON), not a 7B model's speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _images(n: int, side: int, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="base VLM (default: build the tiny model in a temp dir)")
    ap.add_argument("--n", type=int, default=32, help="items scored per measurement")
    ap.add_argument("--side", type=int, default=224, help="image side in pixels")
    ap.add_argument("--steps", type=int, default=10, help="training steps")
    ap.add_argument("--out", default="results/bench/reward_model.json")
    args = ap.parse_args()

    import torch
    from datasets import Dataset, Features, Image, Value

    from globe import reward_model as rm
    from globe.tiny import build_tiny_vlm

    tmp = Path(tempfile.mkdtemp(prefix="bench-rm-"))
    model = args.model or str(build_tiny_vlm(tmp / "tiny", seed=0))
    images = _images(args.n, args.side)
    reasonings = [f"Clue {i}: the signs, the road markings and the vegetation point to a country."
                  for i in range(args.n)]
    result: dict = {"model": model, "n_items": args.n, "image_side": args.side,
                    "torch_threads": torch.get_num_threads(),
                    "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "cuda": torch.cuda.is_available()}

    scorer = rm.LocalizabilityScorer(model, batch_size=8)
    scorer.score(images[:2], reasonings[:2])  # warm-up
    for bs in (1, 8):
        scorer.batch_size = bs
        t = time.perf_counter()
        scorer.score(images, reasonings)
        dt = time.perf_counter() - t
        result[f"in_process_batch{bs}_items_per_s"] = round(args.n / dt, 2)

    scorer.batch_size = 8
    # A random model rarely has yes / no in its top 20: ask for the whole vocabulary so every item gets a score (a
    # trained reward model puts them first, and 20 suffice; the full list makes each answer ~100x larger).
    k = len(scorer.tokenizer) if args.model is None else 20
    result["endpoint_top_logprobs"] = k
    server = rm.serve(scorer, "127.0.0.1", 0, block=False, api_key_env=None, allow_no_auth=True, max_top_logprobs=k)
    try:
        client = rm.EndpointScorer(server.url, top_logprobs=k, max_workers=8, api_key_env=None)
        client.score(images[:2], reasonings[:2])
        t = time.perf_counter()
        client.score(images, reasonings)
        dt = time.perf_counter() - t
        result["endpoint_items_per_s"] = round(args.n / dt, 2)
        result["endpoint_errors"] = client.stats["errors"]
    finally:
        server.shutdown()

    rows = [{"id": f"im{i}", "image": im, "reasoning": r, "label": i % 2, "score": float(i % 2), "teacher": "bench"}
            for i, (im, r) in enumerate(zip(images[:32], reasonings[:32]))]
    features = Features(id=Value("string"), image=Image(), reasoning=Value("string"), label=Value("int64"),
                        score=Value("float64"), teacher=Value("string"))
    Dataset.from_list(rows, features=features).save_to_disk(str(tmp / "labels"))
    t = time.perf_counter()
    metrics = rm.train_reward_model({"labels": str(tmp / "labels"), "base_model": model, "out": str(tmp / "adapter"),
                                     "metrics": str(tmp / "metrics.json"), "steps": args.steps, "batch_size": 4})
    result["train"] = {"steps": args.steps, "batch_size": 4, "rows": 32, "total_s": round(time.perf_counter() - t, 2),
                       "trainer_s": metrics["timing"]["train_seconds"],
                       "s_per_step": round(metrics["timing"]["train_seconds"] / args.steps, 3)}

    shutil.rmtree(tmp, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
