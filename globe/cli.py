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


def _cmd_run(args: argparse.Namespace) -> int:
    """Run one stage's notebook (what dvc.yaml does): parameters validated, the stage locked, output streamed."""
    import logging

    import yaml

    from globe.config import ParamsError
    from globe.pipeline import StageBusy, run_stage

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"globe run: --set expects KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        overrides[key] = yaml.safe_load(value)
    try:
        out = run_stage(args.stage, params_path=args.params, output=args.output, overrides=overrides)
    except (ParamsError, StageBusy, KeyError) as e:
        print(f"globe run: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    print(f"executed notebook: {out}")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    """Write params.yaml for a recipe (profiles/NAME.yaml over the default; `default` restores the default)."""
    from globe.config import ParamsError, apply_profile

    try:
        path = apply_profile(args.name, args.params)
    except (FileNotFoundError, KeyError, ParamsError) as e:
        print(f"globe profile: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    undo = "" if args.name == "default" else " (back to the default: globe profile default)"
    print(f"{path} now holds the {args.name!r} recipe{undo}")
    return 0


def _cmd_build_tiny_model(args: argparse.Namespace) -> int:
    """Build the tiny random Qwen2.5-VL offline (tokenizer, processor, weights) for the default profile and tests."""
    import time

    from globe.config import use_reproducible_cpu

    use_reproducible_cpu()  # before torch is imported: the same weights on every machine (RNG kernels vary by ISA)
    from globe.tiny import build_tiny_vlm

    t0 = time.perf_counter()
    out = build_tiny_vlm(args.out, seed=args.seed)
    print(f"tiny Qwen2.5-VL (seed {args.seed}) in {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _cmd_build_tiny_detector(args: argparse.Namespace) -> int:
    """Build the tiny random OWL-ViT (clue verification in the default profile) offline."""
    import time

    from globe.config import use_reproducible_cpu

    use_reproducible_cpu()  # before torch is imported: the same weights on every machine (RNG kernels vary by ISA)
    from globe.tiny import build_tiny_detector

    t0 = time.perf_counter()
    out = build_tiny_detector(args.out, seed=args.seed)
    print(f"tiny OWL-ViT detector (seed {args.seed}) in {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    """Score a predictions file against a labels file (coordinates or free text) and print the km table.

    A mistake in the inputs (a missing, empty or mis-separated file, no or duplicated ids, bad label coordinates)
    prints one line and returns 2, never a traceback.
    """
    from globe.geo.score import ScoreInputError, format_table, score_files

    try:
        metrics, _ = score_files(
            args.predictions, args.labels, json_out=args.json, rows_out=args.rows, sep=args.sep, id_col=args.id,
            label_id=args.label_id, lat_col=args.lat, lon_col=args.lon, text_col=args.text,
            label_lat=args.label_lat, label_lon=args.label_lon, city_km=args.city_km, distance=args.distance,
            n_boot=args.n_boot, seed=args.seed,
        )
    except ScoreInputError as e:
        print(f"globe score: {e}", file=sys.stderr)
        return 2
    print(format_table(metrics))
    return 0


def _cmd_serve_reward_model(args: argparse.Namespace) -> int:
    """Serve the localizability reward model as an OpenAI-compatible chat-completions endpoint with logprobs."""
    import logging

    from globe.reward_model import LocalizabilityScorer, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scorer = LocalizabilityScorer(args.model, args.adapter, batch_size=args.batch_size, max_pixels=args.max_pixels,
                                  dtype=args.dtype, device=args.device, backend=args.backend, error_budget=None)
    from globe.reward_model import RewardModelError

    try:
        serve(scorer, args.host, args.port, model_name=args.model_name, api_key_env=args.api_key_env,
              allow_no_auth=args.no_auth, max_top_logprobs=args.max_top_logprobs,
              max_body_bytes=int(args.max_body_mb * (1 << 20)))
    except RewardModelError as e:
        print(f"globe serve-reward-model: {e}", file=sys.stderr)
        return 2
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """Run the evaluation stage from params.yaml's eval group (what notebook 05 runs), with optional overrides."""
    import logging

    from globe.config import ParamsError, stage_params
    from globe.evaluate import EvalParams, MissingBenchmark, evaluate

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = stage_params("05_eval", args.params)
    if args.benchmark:
        params["run_benchmarks"] = args.benchmark
    if args.max_images is not None:
        params["max_images"] = args.max_images
    if args.shard is not None:
        params["shard"] = args.shard
    try:
        evaluate(EvalParams.from_params(params))
    except (MissingBenchmark, ParamsError) as e:
        print(f"globe evaluate: {e}", file=sys.stderr)
        return 2
    if params.get("shard"):
        print(f"shard {params['shard']}: completions cached under {params['out']}/predictions (merge them with "
              f"`globe merge-shards eval --shards N`, then run `globe evaluate` to score)")
        return 0
    print(f"wrote {params['out']}/metrics.json and {params['out']}/tables/main.md")
    return 0


def _overrides(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"globe: --set expects KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def _cmd_distill(args: argparse.Namespace) -> int:
    """Distillation from params.yaml's distill group without a notebook (a cluster job: `--shard i/N`)."""
    import logging

    from globe.config import ParamsError, stage_params
    from globe.distill import DistillParams, run_distillation

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = {**stage_params("02_distill", args.params), **_overrides(args.set)}
    if args.shard is not None:
        params["shard"] = args.shard
    try:
        cfg = DistillParams.from_params(params)
    except ParamsError as e:
        print(f"globe distill: {e}", file=sys.stderr)
        return 2
    res = run_distillation(cfg, progress=not args.no_progress)
    if cfg.shard:
        print(f"shard {cfg.shard}: answers cached in {res.stats['shard']['cache']}")
    else:
        print(f"wrote {cfg.out} ({res.stats['sizes']}) and {cfg.results}/")
    return 0


def _cmd_merge_shards(args: argparse.Namespace) -> int:
    """Join the N shard caches of distillation or evaluation into the stage's own cache (no loss, no duplicate)."""
    import json
    import logging

    from globe.config import stage_params

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.stage == "distill":
            from globe.distill import merge_shards

            report = merge_shards(stage_params("02_distill", args.params), args.shards)
        else:
            from globe.evaluate import EvalParams, merge_shards

            report = merge_shards(EvalParams.from_params(stage_params("05_eval", args.params)), args.shards)
    except FileNotFoundError as e:
        print(f"globe merge-shards: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1))
    return 0


def _cmd_train_grpo(args: argparse.Namespace) -> int:
    """GRPO from params.yaml (common + grpo); `accelerate launch -m globe.train.grpo` is the multi-GPU form."""
    from globe.train.grpo import cli

    return cli((["--params", args.params] if args.params else []) + (["--set", *args.set] if args.set else []))


def _cmd_sync_notebooks(args: argparse.Namespace) -> int:
    from globe.config import STAGES, sync_notebook_parameters

    for stage in STAGES:
        changed = sync_notebook_parameters(stage, args.params)
        print(f"{stage}: {'updated' if changed else 'up to date'}")
    return 0


def _add_stage_commands(sub: argparse._SubParsersAction) -> None:
    """The pipeline's own commands: a stage's parameters, running it, notebooks, profiles."""
    p = sub.add_parser("params", help="print a stage's parameters from params.yaml as YAML (for papermill -y)")
    p.add_argument("stage", help="notebook stage (01_data ... 06_analysis) or params group")
    p.add_argument("--params", default=None, help="params file (default: params.yaml at the project root)")
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser("run", help="run one stage's notebook as dvc.yaml does (validated, locked, output streamed)")
    p.add_argument("stage", help="notebook stage (01_data ... 06_analysis) or params group")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override parameters, e.g. steps=2")
    p.add_argument("--output", default=None, help="executed notebook (default: results/notebooks/STAGE.ipynb)")
    p.add_argument("--params", default=None)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("sync-notebooks", help="rewrite each notebook's parameters cell from params.yaml")
    p.add_argument("--params", default=None)
    p.set_defaults(func=_cmd_sync_notebooks)

    p = sub.add_parser("profile", help="write params.yaml for a recipe: paper, unsloth, released, or default")
    p.add_argument("name")
    p.add_argument("--params", default=None)
    p.set_defaults(func=_cmd_profile)


def _add_tiny_model_commands(sub: argparse._SubParsersAction) -> None:
    """Building the default profile's tiny random models offline."""
    p = sub.add_parser("build-tiny-model", help="build the tiny random Qwen2.5-VL offline (default profile, tests)")
    p.add_argument("--out", default="models/tiny-qwen2.5-vl", help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_build_tiny_model)

    p = sub.add_parser("build-tiny-detector", help="build the tiny random OWL-ViT detector offline (default profile)")
    p.add_argument("--out", default="models/tiny-owlvit", help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_build_tiny_detector)


def _add_score_command(sub: argparse._SubParsersAction) -> None:
    """`globe score`: predictions against labels, in km."""
    p = sub.add_parser("score", help="score predictions (coordinates or place names) against labels, in km")
    p.add_argument("predictions", help="CSV / JSONL / parquet of predictions")
    p.add_argument("labels", help="CSV / JSONL / parquet of true coordinates (may be the same file)")
    p.add_argument("--id", default=None, help="id column joining the files (default: id, IMG_ID, name, ...)")
    p.add_argument("--label-id", default=None, help="id column in the labels when it differs from --id")
    p.add_argument("--lat", default=None, help="predicted latitude column")
    p.add_argument("--lon", default=None, help="predicted longitude column")
    p.add_argument("--text", default=None, help="free-text prediction column, resolved by the offline geocoder")
    p.add_argument("--label-lat", default=None, help="true latitude column (default: lat, latitude, LAT)")
    p.add_argument("--label-lon", default=None, help="true longitude column (default: lon, longitude, LON)")
    p.add_argument("--city-km", type=float, default=25.0,
                   help="a point prediction (coordinates, landmark, city) this close counts for city_<km>km_acc")
    p.add_argument("--distance", choices=["geodesic", "haversine"], default="geodesic",
                   help="WGS84 geodesic (default, as GeoCLIP / Img2Loc score) or haversine on the mean sphere")
    p.add_argument("--sep", default=None, help="CSV separator (default: tab for .tsv, comma otherwise)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the figures as JSON here")
    p.add_argument("--rows", default=None, help="write one row per label here (.csv or .parquet)")
    p.set_defaults(func=_cmd_score)


def _add_serve_command(sub: argparse._SubParsersAction) -> None:
    """`globe serve-reward-model`: the reward model over HTTP."""
    p = sub.add_parser("serve-reward-model", help="serve the reward model (OpenAI-compatible, logprobs) over HTTP")
    p.add_argument("--model", required=True, help="base VLM (hub id or local path)")
    p.add_argument("--adapter", default=None, help="reward-model LoRA adapter directory (e.g. models/reward_model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-name", default="globe-reward-model", help="the `model` name clients send")
    p.add_argument("--batch-size", type=int, default=8, help="concurrent requests scored together")
    p.add_argument("--max-pixels", type=int, default=None, help="downscale images to this many pixels (default: "
                   "the adapter's training setting)")
    p.add_argument("--max-top-logprobs", type=int, default=20, help="largest top_logprobs a request may ask for")
    p.add_argument("--api-key-env", default="GLOBE_RM_API_KEY",
                   help="env var holding the API key clients must send (required unless --no-auth)")
    p.add_argument("--no-auth", action="store_true", help="serve without an API key (loopback addresses only)")
    p.add_argument("--max-body-mb", type=float, default=32, help="refuse request bodies larger than this (413)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="auto", choices=["auto", "transformers", "unsloth"])
    p.set_defaults(func=_cmd_serve_reward_model)


def _add_job_commands(sub: argparse._SubParsersAction) -> None:
    """A stage's work without a notebook (cluster jobs, shards): evaluate, distill, merge, GRPO."""
    p = sub.add_parser("evaluate", help="evaluate models and baselines on benchmarks (params.yaml eval group)")
    p.add_argument("--benchmark", action="append", help="benchmark to run (repeatable; default: eval.run_benchmarks)")
    p.add_argument("--max-images", type=int, default=None, help="cap per benchmark (seeded subsample)")
    p.add_argument("--shard", default=None, metavar="I/N", help="generate only shard I of N (a job-array task)")
    p.add_argument("--params", default=None)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("distill", help="run distillation (params.yaml distill group) without a notebook")
    p.add_argument("--shard", default=None, metavar="I/N", help="query only shard I of N (a job-array task)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override distill parameters")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (batch jobs)")
    p.add_argument("--params", default=None)
    p.set_defaults(func=_cmd_distill)

    p = sub.add_parser("merge-shards", help="join the N shard caches of distill or eval into the stage's cache")
    p.add_argument("stage", choices=["distill", "eval"])
    p.add_argument("--shards", type=int, required=True, help="N, the number of shards the jobs ran")
    p.add_argument("--params", default=None)
    p.set_defaults(func=_cmd_merge_shards)

    p = sub.add_parser("train-grpo", help="GRPO-train the policy (params.yaml grpo group); resumes from the last checkpoint")
    p.add_argument("--params", default=None, help="params file (default: params.yaml at the project root)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override grpo parameters, e.g. steps=2")
    p.set_defaults(func=_cmd_train_grpo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="globe", description="GLOBE geo-localization: data, training, evaluation.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_stage_commands(sub)
    _add_tiny_model_commands(sub)
    _add_score_command(sub)
    _add_serve_command(sub)
    _add_job_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
