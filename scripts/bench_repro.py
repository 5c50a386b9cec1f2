"""The default profile from scratch, as a new user runs it: wall time of `dvc repro` per stage, and whether the rerun
reproduced the committed files (not a test).

    python scripts/bench_repro.py            # clone HEAD to a temporary folder, `dvc repro` there, compare
    python scripts/bench_repro.py --keep     # and keep the clone (its path is printed)

The clone has no DVC outputs and no DVC cache, like a fresh `git clone`; it runs with this environment's `dvc` and
`globe` (the venv the script runs in: `make install` first). Writes results/bench/repro.json: the machine, the
total and per-stage wall times (`globe run`'s records, `.globe/runs/<stage>/timing.json`), and what `git status`
showed in the clone afterwards: an empty list means `dvc.lock` and every tracked result file came out byte for byte
as committed. Commit first: uncommitted changes are not in the clone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _machine() -> dict:
    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", action="store_true", help="keep the clone")
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "repro.json"))
    args = p.parse_args()

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    if dirty.strip():
        print("note: the working tree has uncommitted changes; the clone runs HEAD without them", file=sys.stderr)
    clone = Path(tempfile.mkdtemp(prefix="globe-repro-")) / "globe"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("GLOBE_RUNS_DIR", None)
    t0 = time.perf_counter()
    res = subprocess.run(["dvc", "repro"], cwd=clone, env=env)
    total = time.perf_counter() - t0
    changed = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True,
                             text=True).stdout.splitlines()
    stages = {}
    for t in sorted((clone / ".globe" / "runs").glob("*/timing.json")):
        rec = json.loads(t.read_text())
        stages[t.parent.name] = rec.get("notebook_s")
    report = {
        "commit": head.stdout.strip(),
        "machine": _machine(),
        "dvc_repro_exit": res.returncode,
        "dvc_repro_s": round(total, 1),
        "notebook_s": stages,
        "other_s": round(total - sum(v for v in stages.values() if v), 1),  # tiny models, kernel-free DVC work
        "git_status_after": changed,
        "reproduced_committed_files": res.returncode == 0 and not changed,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if args.keep:
        print(f"clone kept: {clone}")
    else:
        shutil.rmtree(clone.parent, ignore_errors=True)
    sys.exit(res.returncode)


if __name__ == "__main__":
    main()
