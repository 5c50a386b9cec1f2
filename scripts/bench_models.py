"""Benchmark the tiny-model path on this machine: build time, generation throughput, policy-SFT steps per second.

    python scripts/bench_models.py [--out results/bench/models.json] [--steps 8]

Writes one JSON with the measurements and the machine they were taken on (speeds are reported, never asserted).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "models.json"))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--images", type=int, default=8)
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image
    from test_sft import TINY_LORA, make_reason_dataset

    from globe.config import offline_hub
    from globe.models import generate, load_vlm
    from globe.prompts import REASONING_PROMPT
    from globe.tiny import build_tiny_vlm
    from globe.train.sft import train_sft

    offline_hub()
    res: dict = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                             "cuda": torch.cuda.is_available(), "torch_threads": torch.get_num_threads()}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        model_dir = build_tiny_vlm(tmp / "model", seed=0)
        res["build_tiny_vlm_s"] = round(time.perf_counter() - t0, 3)

        model, processor = load_vlm(model_dir)
        rs = np.random.RandomState(0)
        images = [Image.fromarray((rs.rand(480, 640, 3) * 255).astype("uint8")) for _ in range(args.images)]
        generate(model, processor, images[:1], REASONING_PROMPT, max_new_tokens=4)  # warm-up
        t0 = time.perf_counter()
        generate(model, processor, images, REASONING_PROMPT, max_new_tokens=32, batch_size=4)
        dt = time.perf_counter() - t0
        res["generate"] = {"images": args.images, "max_new_tokens": 32, "batch_size": 4, "seconds": round(dt, 3),
                           "images_per_s": round(args.images / dt, 3)}

        ds = make_reason_dataset(tmp / "mp16_reason", n=16)
        t0 = time.perf_counter()
        out = train_sft(dict(base_model=str(model_dir), dataset=str(ds), out=str(tmp / "sft"),
                             log_csv=str(tmp / "log.csv"), lora=TINY_LORA, max_steps=args.steps,
                             save_steps=args.steps, eval_steps=args.steps))
        summary = json.loads((out / "train_summary.json").read_text())
        res["sft"] = {"steps": args.steps, "batch_size": 2, "wall_s": round(time.perf_counter() - t0, 3),
                      "train_runtime_s": summary["train_runtime_s"], "steps_per_s": summary["steps_per_s"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
