"""Benchmark globe.geo on one core and write results/bench/geo.json.

    taskset -c 0 python scripts/bench_geo.py

Measures, each in a fresh interpreter so caches and imports count as a user sees them:

- `load`: loading the gazetteer from its cache (core arrays + KD-tree, then the forward name / place index);
- `text`: resolving 100,000 *distinct* realistic answers (GLOBE's labelled format, "City, Country",
  "City, Region, Country", state abbreviations, hedges, features and landmarks, airports, non-English country
  names, junk), cold resolution cache;
- `score_coords`: `globe score` end to end on 1,000,000 rows of coordinate predictions (read two CSV files, join,
  distances, reverse geocoding, every metric with 1000-resample intervals), wall and CPU seconds and peak RSS;
- `score_text` (with `--text-rows N`): the same on N rows of free-text predictions (100,000 distinct answers).

Goals (issue 14): load < 2 s, 100k answers < 10 s, 1M rows end to end < 10 s on one core.

`--baseline COMMIT` measures that commit too, in the same run, each step right after the same step of the
current tree, so both see the same machine load: the commit is unpacked (`git archive`) into a temporary folder
and run with its own gazetteer cache (`--baseline-cache`, default `~/.cache/globe/baseline-<commit>`; the first
run builds it). Every figure of the baseline sits beside the current one (`baseline` in each section). Wall times
suffer when other processes share the core; `cpu_s` is the process's own CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

_RUN = r"""
import json, resource, sys, time
w0, c0 = time.perf_counter(), time.process_time()
{body}
ru = resource.getrusage(resource.RUSAGE_SELF)
import globe
print("BENCH " + json.dumps({{"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0,
                             "max_rss_mib": ru.ru_maxrss / 1024, "globe": globe.__file__, **out}}))
"""


_ENV: dict[str, str] = {}  # PYTHONPATH / GLOBE_CACHE_DIR of the tree being measured (empty: this checkout's)


def _fresh(body: str) -> dict:
    """Run `body` (which sets a dict `out`) in a fresh interpreter; its wall / CPU time and peak RSS."""
    code = _RUN.format(body=body)
    # run inside the measured tree: `python -c` puts the working directory first on sys.path
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **_ENV}, cwd=_ENV.get("PYTHONPATH", str(ROOT)), check=False)
    if res.returncode != 0:
        raise RuntimeError(f"benchmark step failed:\n{res.stderr[-3000:]}")
    line = [x for x in res.stdout.splitlines() if x.startswith("BENCH ")][-1]
    return json.loads(line[6:])


def bench_load(repeats: int = 3) -> dict:
    """Fresh interpreters loading the cached index: core arrays + KD-tree, then the forward index."""
    _fresh("from globe.geo import gazetteer\ng = gazetteer(); g.name_index\nout = {}")  # builds the cache if absent
    body = ("from globe.geo import gazetteer\n"
            "g = gazetteer(); g.tree; core = time.perf_counter() - w0\n"
            "g.name_index\n"
            "out = {'core_wall_s': core}")
    runs = [_fresh(body) for _ in range(repeats)]
    best = min(runs, key=lambda r: r["wall_s"])
    return {"core_plus_kdtree_wall_s": best["core_wall_s"], "full_wall_s": best["wall_s"], "full_cpu_s": best["cpu_s"],
            "max_rss_mib": best["max_rss_mib"], "repeats": repeats, "goal_s": 2.0, "globe": best["globe"]}


def distinct_answers(n: int, seed: int) -> list[str]:
    """`n` distinct answers in the styles models write (see the module docstring), drawn from the gazetteer's
    places and the vendored feature tables; only APIs every version of globe.geo has are used."""
    import pandas as pd

    from globe.geo import gazetteer

    g = gazetteer()
    rng = np.random.default_rng(seed)
    feats = pd.concat([pd.read_csv(ROOT / "globe" / "assets" / "places" / f, keep_default_na=False)
                       for f in ("features.csv", "world_heritage.csv")])
    codes = {"US": ["TX", "CA", "NY", "FL", "WA", "OR", "IL", "MA", "PA", "OH", "GA", "NC", "MI", "AZ", "CO"],
             "CA": ["ON", "BC", "QC", "AB", "NS"], "AU": ["NSW", "VIC", "QLD", "WA", "SA"]}
    hedges = ["near {}", "probably {}", "{} area", "outskirts of {}", "somewhere in {}", "{} (approximate)"]
    local = {"DE": "Deutschland", "JP": "日本", "ES": "España", "IT": "Italia", "IS": "Ísland", "NL": "Nederland",
             "RU": "Россия", "GR": "Ελλάδα", "CN": "中国", "AT": "Österreich"}
    big = np.flatnonzero(g.population >= 1000)
    w = np.sqrt(g.population[big].astype(float))
    out: dict[str, None] = {}
    while len(out) < n:
        i = int(rng.choice(big, p=w / w.sum()))
        cc, city = g.country_code[i], str(g.name[i])
        country = g.country_name(cc)
        aid = int(g.admin_id[i])
        region = g.admin_name[aid] if aid >= 0 else ""
        r = int(rng.integers(0, 12))
        if r == 0:
            t = f"country: {country}\ncity: {city}"
        elif r == 1:
            t = f"<think>Signs and facades.</think>\n<answer>country: {country}\ncity: {city}</answer>"
        elif r == 2:
            t = f"{city}, {region}, {country}" if region else f"{city}, {country}"
        elif r == 3 and cc in codes:
            t = f"{city}, {rng.choice(codes[cc])}"
        elif r == 4:
            t = rng.choice(hedges).format(f"{city}, {country}")
        elif r == 5:
            f = feats.iloc[int(rng.integers(0, len(feats)))]
            t = f"{f['name']}, {g.country_name(f['country_code'])}".strip(", ")
        elif r == 6:
            t = f"**Country:** {local.get(cc, country)}\n**City:** {city}"
        elif r == 7:
            t = f"{city.upper()}"
        elif r == 8:
            t = f"The old town of {city} in {country}"
        elif r == 9:
            t = f"{city} {int(rng.integers(1, 10**6))} qqx"  # junk with a place inside
        else:
            t = f"{city}, {country}"
        out[t] = None
    return list(out)


def bench_text(n: int, seed: int) -> dict:
    body = (f"import sys; sys.path.insert(0, {str(ROOT / 'scripts')!r})\n"
            "from bench_geo import distinct_answers\n"
            "from globe.geo import gazetteer, geocode_many\n"
            "gazetteer().name_index\n"
            f"texts = distinct_answers({n}, {seed})\n"
            "w, c = time.perf_counter(), time.process_time()\n"
            "df = geocode_many(texts)\n"
            "import hashlib\n"
            "out = {'resolve_wall_s': time.perf_counter() - w, 'resolve_cpu_s': time.process_time() - c,\n"
            "       'n': len(texts), 'distinct': len(set(texts)), 'levels': df.level.value_counts().to_dict(),\n"
            "       'answers_sha1': hashlib.sha1('\\x00'.join(texts).encode()).hexdigest()[:12]}")
    r = _fresh(body)
    return {"n": r["n"], "distinct": r["distinct"], "answers_sha1": r["answers_sha1"], "wall_s": r["resolve_wall_s"],
            "cpu_s": r["resolve_cpu_s"], "per_second_wall": r["n"] / r["resolve_wall_s"], "levels": r["levels"],
            "goal_s": 10.0, "globe": r["globe"]}


def _score_cli(pred: Path, labels: Path, extra: list[str]) -> dict:
    body = ("from globe.cli import main\n"
            f"rc = main(['score', {str(pred)!r}, {str(labels)!r}, '--json', {str(pred) + '.json'!r}, *{extra!r}])\n"
            "assert rc == 0, rc\n"
            f"m = json.load(open({str(pred) + '.json'!r}))\n"
            "out = {'acc_25km': m['acc_25km'], 'n': m['n'], 'levels': m['levels']}")
    r = _fresh(body)
    return {"n": r["n"], "wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "max_rss_mib": r["max_rss_mib"],
            "acc_25km": r["acc_25km"], "levels": r["levels"], "goal_s": 10.0, "globe": r["globe"]}


def bench_score(n: int, seed: int, tmp: Path, text_pool: list[str] | None) -> dict:
    """`globe score` on n rows: coordinates (text_pool None) or texts drawn from the pool."""
    import pandas as pd

    from globe.geo import gazetteer

    kind = "coords" if text_pool is None else "text"
    labels, pred = tmp / f"labels_{n}_{seed}.csv", tmp / f"pred_{kind}_{n}_{seed}.csv"
    if labels.is_file() and pred.is_file():  # the same files for the baseline's run
        return _score_cli(pred, labels, [] if text_pool is None else ["--text", "answer"])
    g = gazetteer()
    rng = np.random.default_rng(seed)
    i = rng.integers(0, g.lat.size, size=n)
    lat = np.clip(g.lat[i] + rng.normal(0, 0.05, n), -90, 90)
    lon = np.clip(g.lon[i] + rng.normal(0, 0.05, n), -180, 180)
    ids = np.char.add("img", np.arange(n).astype(str))
    pd.DataFrame({"id": ids, "lat": lat.round(6), "lon": lon.round(6)}).to_csv(labels, index=False)
    if text_pool is None:
        noise = rng.exponential(3.0, n)  # predictions: a few degrees off, some far
        plat = np.clip(lat + rng.normal(0, 1, n) * noise, -90, 90)
        plon = np.clip(lon + rng.normal(0, 1, n) * noise, -180, 180)
        pd.DataFrame({"id": ids, "lat": plat.round(6), "lon": plon.round(6)}).to_csv(pred, index=False)
        return _score_cli(pred, labels, [])
    pd.DataFrame({"id": ids, "answer": [text_pool[k] for k in rng.integers(0, len(text_pool), n)]}).to_csv(
        pred, index=False)
    return {**_score_cli(pred, labels, ["--text", "answer"]), "distinct_answers": len(text_pool)}


def _commit() -> str:
    import globe

    src = Path(globe.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, check=False).stdout.strip()
        return head + (" (+ uncommitted)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return f"not a git checkout ({src})"


def _baseline_env(commit: str, tmp: Path, cache: str | None) -> dict[str, str]:
    """Unpack `commit` of this repository into tmp/baseline; the environment that runs it with its own cache."""
    dest = tmp / "baseline"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    cache_dir = Path(cache or Path.home() / ".cache" / "globe" / f"baseline-{commit}")
    cache_dir.mkdir(parents=True, exist_ok=True)  # apart: an older index may delete caches it does not own
    return {"PYTHONPATH": str(dest), "GLOBE_CACHE_DIR": str(cache_dir)}


def _both(step, baseline: dict[str, str] | None) -> dict:
    """A step on this tree, then (with a baseline) on the baseline, under the same load; baseline beside it."""
    global _ENV
    _ENV = {}
    out = step()
    if baseline:
        _ENV = baseline
        try:
            out["baseline"] = step()
        finally:
            _ENV = {}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-rows", type=int, default=1_000_000)
    ap.add_argument("--n-text", type=int, default=100_000)
    ap.add_argument("--text-rows", type=int, default=0, help="also score this many free-text rows end to end")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", default=None, help="a commit to measure beside this tree (e.g. d0aa3bd)")
    ap.add_argument("--baseline-cache", default=None, help="gazetteer cache folder of the baseline")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "geo.json"))
    args = ap.parse_args()

    import globe

    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        base = _baseline_env(args.baseline, tmp, args.baseline_cache) if args.baseline else None
        res = {
            "command": "taskset -c 0 python scripts/bench_geo.py" + (f" --baseline {args.baseline}" if base else ""),
            "globe": str(Path(globe.__file__).resolve().parent), "commit": _commit(), "baseline": args.baseline,
            "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
            "load_avg_at_start": os.getloadavg(),
            "note": "wall times suffer when other processes share the core; cpu_s is the process's own CPU time",
        }
        res["load"] = _both(bench_load, base)
        res["text"] = _both(lambda: bench_text(args.n_text, args.seed), base)
        res["score_coords"] = _both(lambda: bench_score(args.n_rows, args.seed, tmp, None), base)
        if args.text_rows:
            pool = distinct_answers(args.n_text, args.seed)
            res["score_text"] = _both(lambda: bench_score(args.text_rows, args.seed, tmp, pool), base)
        res["load_avg_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(res, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
