"""Notebook hygiene: one `parameters` cell, no committed outputs, parameters == the stage's params."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from globe.config import STAGES, load_params, stage_params

ROOT = Path(__file__).resolve().parents[1]

NOTEBOOKS = sorted(STAGES)


def _load(name: str) -> dict:
    with open(ROOT / "notebooks" / f"{name}.ipynb", encoding="utf-8") as f:
        return json.load(f)


def _parameter_names(cell_source: str) -> set[str]:
    names = set()
    for node in ast.parse(cell_source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name):
                names.add(t.id)
    return names


def test_every_stage_has_a_notebook():
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_one_parameters_cell_and_no_outputs(name):
    nb = _load(name)
    tagged = [c for c in nb["cells"] if "parameters" in (c.get("metadata", {}).get("tags") or [])]
    assert len(tagged) == 1, f"{name}: {len(tagged)} cells tagged 'parameters'"
    assert tagged[0]["cell_type"] == "code"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{name}: committed with outputs"
            assert cell.get("execution_count") is None, f"{name}: committed with execution counts"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_match_params_yaml(name):
    params = load_params(ROOT / "params.yaml")
    expected = set(STAGES[name].common) | set(params[STAGES[name].group])
    cell = next(c for c in _load(name)["cells"] if "parameters" in (c.get("metadata", {}).get("tags") or []))
    got = _parameter_names("".join(cell["source"]))
    assert got == expected, f"{name}: missing {sorted(expected - got)}, extra {sorted(got - expected)}"


def test_dvc_stages_run_their_notebook_and_track_exactly_their_params():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    for name, stage in STAGES.items():
        entry = dvc["stages"][stage.group]
        assert entry["cmd"] == f"globe run {name}"
        assert f"notebooks/{name}.ipynb" in entry["deps"] and f"results/notebooks/{name}.ipynb" in entry["outs"]
        tracked = {p if isinstance(p, str) else next(iter(p)) for p in entry["params"]}
        assert tracked == {stage.group, *(f"common.{k}" for k in stage.common)}, f"stage {stage.group}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameter_defaults_are_the_default_profile(name):
    """A user running `papermill ... -p steps 2000` starts from params.yaml's values (`globe sync-notebooks`)."""
    params = load_params(ROOT / "params.yaml")
    if params["common"].get("profile") != "default":
        pytest.skip("params.yaml holds another profile; notebook defaults mirror the default profile")
    cell = next(c for c in _load(name)["cells"] if "parameters" in (c.get("metadata", {}).get("tags") or []))
    got = {}
    for node in ast.parse("".join(cell["source"])).body:
        got[node.targets[0].id] = ast.literal_eval(node.value)
    assert got == stage_params(name, ROOT / "params.yaml"), "run `globe sync-notebooks`"
