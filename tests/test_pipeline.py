"""The package's shape: no import cycles, and dvc.yaml's deps cover every globe module each stage runs; `globe run`."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from globe.config import STAGES

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    mods = {}
    for p in (ROOT / "globe").rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return mods


MODS = _modules()


def imports_of(source: str, current: str | None = None, is_package: bool = False) -> set[str]:
    """The globe modules a source imports, at any depth (function-level imports run too)."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("globe")}
        elif isinstance(node, ast.ImportFrom):
            if node.level and current:
                base = current.split(".") if is_package else current.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("globe"):
                out.add(module)
                out |= {f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in MODS}
    return {m for m in out if m in MODS}


def module_imports(name: str) -> set[str]:
    path = MODS[name]
    return imports_of(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")


def closure(start: set[str]) -> set[str]:
    """Every module that runs when `start` is imported and used: transitive imports, parent packages included."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += module_imports(m)
    return seen


def test_no_import_cycles():
    """Between modules (a package's __init__ re-exporting its parts is not a cycle), imports form a DAG."""
    graph = {m: {d for d in module_imports(m) if MODS[d].name != "__init__.py" and d != m}
             for m in MODS if MODS[m].name != "__init__.py"}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_dvc_deps_cover_every_module_the_stage_runs(name):
    """Editing a module a stage runs must rerun the stage: each module its notebook imports, transitively, is a dep
    (a file, or the folder holding it)."""
    cells = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    # The stage's command is `globe run`: the CLI module itself, then globe.pipeline.
    needed = closure(imports_of(source) | {"globe.pipeline"}) | {"globe.cli"}
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"][STAGES[name].group]
    missing = sorted(MODS[m].relative_to(ROOT).as_posix() for m in needed if not _covered(MODS[m], stage["deps"]))
    assert not missing, f"dvc.yaml stage {STAGES[name].group!r} lacks deps {missing}"


def test_the_helpers_see_a_missing_dep():
    """The check above can fail: a stage importing globe.rewards without listing it is caught."""
    assert "globe.rewards" in closure(imports_of("from globe.train.grpo import train_grpo"))
    assert not _covered(MODS["globe.rewards"], ["globe/train", "globe/geo"])
    assert _covered(MODS["globe.geo.forward"], ["globe/geo"])


def _run(*args: str, cwd: Path = ROOT, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "globe.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=120, **kw)


def test_globe_run_validates_before_any_kernel_starts():
    for bad, key in (("steps=abc", "grpo.steps"), ("steps=2.5", "grpo.steps"), ("num_generations=3", "num_generations"),
                     ("rewards={nope: 1.0}", "nope")):
        r = _run("run", "04_grpo", "--set", bad, "--output", "/dev/null")
        assert r.returncode == 2, (bad, r.stderr)
        assert key in r.stderr and "Traceback" not in r.stderr, (bad, r.stderr)


def test_stage_lock_refuses_a_second_writer(tmp_path):
    from globe.pipeline import StageBusy, stage_lock

    (tmp_path / "params.yaml").write_text("common: {}\n")
    with stage_lock("04_grpo", tmp_path):
        code = (f"from globe.pipeline import stage_lock\n"
                f"with stage_lock('grpo', {str(tmp_path)!r}): pass\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert r.returncode != 0 and "already running" in r.stderr and str(os.getpid()) in r.stderr
        with pytest.raises(StageBusy):
            with stage_lock("04_grpo", tmp_path):
                pass
    with stage_lock("04_grpo", tmp_path):  # released when its holder is done
        pass


def test_papermill_with_a_bad_parameter_fails_in_the_setup_cell(tmp_path):
    """`papermill notebooks/04_grpo.ipynb out.ipynb -p steps abc` stops at the config cell, naming the key, before
    any model or dataset loads."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    for bad in ("abc", 2.5):
        with pytest.raises(PapermillExecutionError) as e:
            papermill.execute_notebook(str(ROOT / "notebooks" / "04_grpo.ipynb"), str(tmp_path / "out.ipynb"),
                                       parameters={"steps": bad}, progress_bar=False, cwd=str(ROOT))
        assert "ParamsError" in str(e.value) and "grpo.steps: expected an integer" in str(e.value)
        executed = json.loads((tmp_path / "out.ipynb").read_text(encoding="utf-8"))
        ran = [c for c in executed["cells"] if c["cell_type"] == "code" and c.get("execution_count")]
        assert not any("train_grpo(cfg)" in "".join(c["source"]) for c in ran)
