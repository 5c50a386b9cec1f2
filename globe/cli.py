"""`globe` command line. Each command imports what it needs when it runs, so `globe --help` is instant."""

from __future__ import annotations

import argparse
import sys


def _cmd_params(args: argparse.Namespace) -> int:
    """Print one stage's notebook parameters (common + group) as YAML, for `papermill -y`."""
    import yaml

    from globe.config import stage_params

    print(yaml.safe_dump(stage_params(args.stage, args.params), sort_keys=False, allow_unicode=True), end="")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from globe.config import apply_profile

    path = apply_profile(args.name, args.params)
    print(f"applied profile {args.name!r} to {path} (undo: git checkout {path.name})")
    return 0


def _cmd_build_tiny_model(args: argparse.Namespace) -> int:
    """Build the tiny random Qwen2.5-VL offline (tokenizer, processor, weights) for the default profile and tests."""
    import time

    from globe.models import build_tiny_vlm

    t0 = time.perf_counter()
    out = build_tiny_vlm(args.out, seed=args.seed)
    print(f"tiny Qwen2.5-VL (seed {args.seed}) in {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="globe", description="GLOBE geo-localization: data, training, evaluation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("params", help="print a stage's parameters from params.yaml as YAML (for papermill -y)")
    p.add_argument("stage", help="notebook stage (01_data ... 06_analysis) or params group")
    p.add_argument("--params", default=None, help="params file (default: params.yaml at the project root)")
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser("profile", help="merge profiles/NAME.yaml into params.yaml (e.g. `globe profile paper`)")
    p.add_argument("name")
    p.add_argument("--params", default=None)
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("build-tiny-model", help="build the tiny random Qwen2.5-VL offline (default profile, tests)")
    p.add_argument("--out", default="models/tiny-qwen2.5-vl", help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_build_tiny_model)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
