"""Resolver dry runs for the two installs (metadata only: nothing is downloaded beyond package metadata).

    python scripts/check_resolve.py            # the GPU set (Python 3.11 and 3.12, CUDA Linux) and the CPU default
    python scripts/check_resolve.py --lock     # regenerate constraints/gpu.txt from the gpu extra, then check
    python scripts/check_resolve.py --lock-cpu # regenerate constraints/cpu.txt (the CPU install's pins), then check

GPU: `pip install -e ".[gpu]" -c constraints/gpu.txt` (README) must resolve, on x86-64 manylinux for each supported
Python, to exactly the pins in constraints/gpu.txt, with the packages the GPU path needs and a vLLM inside the range
the pinned TRL supports. CPU: `pip install -e ".[test]" -c constraints/cpu.txt` (the Makefile's install) must resolve
to exactly constraints/cpu.txt, with TRL >= 1.16 and torch 2.14.1 / torchvision 0.29.1 and no unsloth: the pins under
which the committed results were produced, so that a fresh clone's `make repro` installs the same numerics. Uses uv's resolver (`uv pip compile`), which reads the same
PyPI metadata pip does, in seconds rather than minutes. Exits non-zero with one line per problem.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints" / "gpu.txt"
CPU_LOCK = ROOT / "constraints" / "cpu.txt"
PLATFORM = "x86_64-manylinux_2_28"
PYTHONS = ("3.11", "3.12")
GPU_SET = ("torch", "torchvision", "transformers", "trl", "peft", "accelerate", "datasets", "unsloth", "unsloth-zoo",
           "bitsandbytes", "deepspeed", "vllm", "xformers", "triton")
# What the Makefile installs before the project (its `$(VENV)/.torch` step).
CPU_TORCH = {"torch": "2.14.1", "torchvision": "0.29.1"}
# trl/import_utils.py of TRL 1.15 (is_vllm_available): supported vLLM releases, warned about outside.
TRL_VLLM_RANGE = {"1.15": ("0.21.0", "0.31.0")}
LOCK_HEADER = """\
# The GPU set: every package of `pip install -e ".[gpu]"`, pinned (CUDA Linux, Python 3.11 and 3.12).
# Install: pip install -e ".[gpu]" -c constraints/gpu.txt        (README, "The GPU extra")
# Regenerate after changing pyproject.toml's dependencies or gpu extra: make lock-gpu
# (uv pip compile pyproject.toml --extra gpu --universal --python-version 3.11); CI checks it: make resolve.
"""
CPU_LOCK_HEADER = """\
# The CPU set: every package of the Makefile's install (torch 2.14.1 + torchvision 0.29.1, then `pip install -e
# ".[test]"`), pinned for Python 3.11 on x86-64 Linux: the versions the committed results were produced with.
# Regenerate after changing pyproject.toml's dependencies: make lock-cpu (then dvc repro, and commit the results);
# CI checks it: make resolve.
"""


def _uv() -> str:
    """uv beside this Python (a venv's bin/), else on PATH."""
    local = Path(sys.executable).with_name("uv")
    uv = str(local) if local.exists() else shutil.which("uv")
    if uv is None:
        sys.exit("uv not found: pip install uv (make resolve installs it into .venv)")
    return uv


def _compile(args: list[str]) -> tuple[dict[str, str], str]:
    """Run `uv pip compile` on pyproject.toml; (name -> version, error text)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "resolved.txt"
        cmd = [_uv(), "pip", "compile", str(ROOT / "pyproject.toml"), "--no-header", "--no-annotate", "-q",
               "-o", str(out), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if res.returncode != 0:
            return {}, (res.stderr or res.stdout).strip()
        return _pins(out.read_text()), ""


def _pins(text: str) -> dict[str, str]:
    """name -> version of a resolution (one version per name: it is for one platform and Python)."""
    return {n: sorted(v)[0] for n, v in _locked(text).items()}


def _locked(text: str) -> dict[str, set[str]]:
    """name -> versions of a (universal) lock: a name may have one pin per Python-version marker."""
    pins: dict[str, set[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line.strip())
        if m:
            pins.setdefault(m.group(1).lower().replace("_", "-"), set()).add(m.group(2))
    return pins


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:3])


def lock() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "gpu.txt"
        cmd = [_uv(), "pip", "compile", str(ROOT / "pyproject.toml"), "--extra", "gpu", "--universal",
               "--python-version", PYTHONS[0], "--no-header", "--no-annotate", "-q", "-o", str(out)]
        subprocess.run(cmd, check=True, cwd=ROOT)
        LOCK.parent.mkdir(exist_ok=True)
        LOCK.write_text(LOCK_HEADER + out.read_text())
    print(f"wrote {LOCK.relative_to(ROOT)}")


def _cpu_compile(extra: list[str]) -> tuple[dict[str, str], str]:
    """The CPU install's resolution: torch and torchvision first (CPU_TORCH), then the project with its test extra."""
    with tempfile.TemporaryDirectory() as tmp:
        first = Path(tmp) / "torch.txt"
        first.write_text("".join(f"{n}=={v}\n" for n, v in CPU_TORCH.items()))
        return _compile(["--extra", "test", "-c", str(first), *extra, "--python-version", PYTHONS[0],
                         "--python-platform", PLATFORM])


def lock_cpu() -> None:
    pins, err = _cpu_compile([])
    if err:
        sys.exit(f"CPU set: no resolution: {err}")
    CPU_LOCK.parent.mkdir(exist_ok=True)
    CPU_LOCK.write_text(CPU_LOCK_HEADER + "".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
    print(f"wrote {CPU_LOCK.relative_to(ROOT)} ({len(pins)} packages)")


def check_gpu(problems: list[str]) -> None:
    locked = _locked(LOCK.read_text())
    for py in PYTHONS:
        t0 = time.perf_counter()
        pins, err = _compile(["--extra", "gpu", "-c", str(LOCK), "--python-version", py, "--python-platform", PLATFORM])
        if err:
            problems.append(f"GPU set, Python {py}: no resolution: {err.splitlines()[-1] if err else ''}")
            print(err, file=sys.stderr)
            continue
        drift = sorted(f"{n}=={v} (lock: {sorted(locked.get(n, ()))})" for n, v in pins.items()
                       if v not in locked.get(n, ()))
        if drift:
            problems.append(f"GPU set, Python {py}: resolves off constraints/gpu.txt: {', '.join(drift[:8])}")
        missing = [n for n in GPU_SET if n not in pins]
        if missing:
            problems.append(f"GPU set, Python {py}: missing {missing}")
        trl = pins.get("trl", "")
        lo_hi = TRL_VLLM_RANGE.get(".".join(trl.split(".")[:2]))
        if lo_hi is None:
            problems.append(f"GPU set: TRL {trl} has no known vLLM range here (TRL_VLLM_RANGE): check trl/import_utils")
        elif "vllm" in pins and not _version(lo_hi[0]) <= _version(pins["vllm"]) <= _version(lo_hi[1]):
            problems.append(f"GPU set: vLLM {pins['vllm']} is outside TRL {trl}'s supported {lo_hi[0]}-{lo_hi[1]}")
        print(f"GPU set, Python {py} ({time.perf_counter() - t0:.1f} s, {len(pins)} packages): "
              + ", ".join(f"{n} {pins[n]}" for n in GPU_SET if n in pins))


def check_cpu(problems: list[str]) -> None:
    t0 = time.perf_counter()
    if not CPU_LOCK.is_file():
        problems.append("CPU set: constraints/cpu.txt is missing (make lock-cpu)")
        return
    pins, err = _cpu_compile(["-c", str(CPU_LOCK)])
    if err:
        problems.append(f"CPU set: no resolution within constraints/cpu.txt: {err.splitlines()[-1]}")
        print(err, file=sys.stderr)
        return
    locked = _pins(CPU_LOCK.read_text())
    drift = sorted(f"{n}=={v} (lock: {locked.get(n)})" for n, v in pins.items() if locked.get(n) != v)
    if drift:
        problems.append(f"CPU set: resolves off constraints/cpu.txt: {', '.join(drift[:8])}")
    if _version(pins.get("trl", "0")) < (1, 16):
        problems.append(f"CPU set: trl {pins.get('trl')} (needs >= 1.16: 1.15's GRPOTrainer fails on CPU)")
    if any(pins.get(n) != v for n, v in CPU_TORCH.items()):
        problems.append(f"CPU set: torch {pins.get('torch')} / torchvision {pins.get('torchvision')} with the "
                        f"Makefile's pair {CPU_TORCH}")
    if "unsloth" in pins or "vllm" in pins:
        problems.append("CPU set: pulls in unsloth or vllm")
    print(f"CPU set, Python {PYTHONS[0]} ({time.perf_counter() - t0:.1f} s, {len(pins)} packages): "
          + ", ".join(f"{n} {pins[n]}" for n in ("torch", "torchvision", "transformers", "trl", "peft") if n in pins))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lock", action="store_true", help="regenerate constraints/gpu.txt first")
    ap.add_argument("--lock-cpu", action="store_true", help="regenerate constraints/cpu.txt first")
    ap.add_argument("--only", choices=("gpu", "cpu"), help="check one set")
    args = ap.parse_args(argv)
    if args.lock:
        lock()
    if args.lock_cpu:
        lock_cpu()
    problems: list[str] = []
    if args.only in (None, "gpu"):
        check_gpu(problems)
    if args.only in (None, "cpu"):
        check_cpu(problems)
    for p in problems:
        print(f"resolve check: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
