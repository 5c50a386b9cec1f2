"""params.yaml loading, stage parameters, profiles and the `globe params` / `globe profile` commands."""

from __future__ import annotations

import shutil
from pathlib import Path
import subprocess
import sys

import pytest
import yaml

from globe.config import apply_profile, deep_merge, load_params, stage_params

ROOT = Path(__file__).resolve().parents[1]


def test_stage_params_merge_common_and_group():
    p = stage_params("04_grpo", ROOT / "params.yaml")
    full = load_params(ROOT / "params.yaml")
    assert p["seed"] == full["common"]["seed"]
    assert p["steps"] == full["grpo"]["steps"]


def test_unknown_stage_is_a_clear_error():
    with pytest.raises(KeyError, match="no group"):
        stage_params("99_nothing", ROOT / "params.yaml")


def test_deep_merge_recurses_and_replaces_lists():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    deep_merge(base, {"a": {"y": [3]}, "c": 4})
    assert base == {"a": {"x": 1, "y": [3]}, "b": 2, "c": 4}


def test_paper_profile_sets_the_papers_hyperparameters(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    apply_profile("paper", tmp_path / "params.yaml")
    text = (tmp_path / "params.yaml").read_text(encoding="utf-8")
    assert "# The single source of parameters" in text  # comments survive the merge
    p = yaml.safe_load(text)
    assert p["common"]["profile"] == "paper"
    assert p["common"]["base_model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    g = p["grpo"]
    assert (g["num_generations"], g["learning_rate"], g["beta"], g["temperature"], g["max_completion_length"]) == (
        16, 1e-6, 0.001, 1.0, 1024)
    assert g["rewards"] == {"accuracy": 1.0, "localizability": 0.5, "visual": 0.2, "format": 1.0}
    # Every key a profile sets must exist in the default profile (a typo would otherwise add a dead key).
    default = load_params(ROOT / "params.yaml")
    overlay = yaml.safe_load((ROOT / "profiles" / "paper.yaml").read_text(encoding="utf-8"))
    for group, values in overlay.items():
        missing = set(values) - set(default[group])
        assert not missing, f"profiles/paper.yaml sets {group}.{sorted(missing)} that params.yaml lacks"


def test_unknown_profile_is_a_clear_error(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    with pytest.raises(FileNotFoundError, match="known profiles"):
        apply_profile("nope", tmp_path / "params.yaml")


def test_cli_params_prints_yaml_for_papermill():
    out = subprocess.run([sys.executable, "-m", "globe.cli", "params", "04_grpo"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    assert yaml.safe_load(out) == stage_params("04_grpo", ROOT / "params.yaml")


def test_import_globe_is_light():
    code = "import sys, globe, globe.cli, globe.config, globe.prompts; print(','.join(m for m in ('torch', 'transformers', 'trl', 'geopandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert out == ""
