"""params.yaml loading, stage parameters, profiles and the `globe params` / `globe profile` commands."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from globe.config import ParamsError, apply_profile, deep_merge, load_params, stage_params

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
    for path in sorted((ROOT / "profiles").glob("*.yaml")):
        overlay = yaml.safe_load(path.read_text(encoding="utf-8"))
        overlay.pop("extends", None)
        for group, values in overlay.items():
            missing = set(values) - set(default[group])
            assert not missing, f"{path.name} sets {group}.{sorted(missing)} that params.yaml lacks"


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


# ---- recipes: profiles composed over the default, params.yaml kept readable -----------------------------------------


def _copy_repo(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    (tmp_path / "configs" / "deepspeed").mkdir(parents=True)
    shutil.copy(ROOT / "configs" / "deepspeed" / "zero3.json", tmp_path / "configs" / "deepspeed" / "zero3.json")
    return tmp_path / "params.yaml"


@pytest.mark.parametrize("name", ["paper", "unsloth", "released"])
def test_every_recipe_renders_readably_and_validates(tmp_path, name, monkeypatch):
    from globe.config import STAGES, stage_config

    params = _copy_repo(tmp_path)
    apply_profile(name, params)
    text = params.read_text(encoding="utf-8")
    lines = text.splitlines()
    # nulls stay `null`: a key with nothing after its colon is always a block's parent (never an unset value)
    code = [ln.split(" #")[0].rstrip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    indent = lambda ln: len(ln) - len(ln.lstrip())  # noqa: E731
    for ln, nxt in zip(code, code[1:]):
        if ln.endswith(":"):
            assert indent(nxt) > indent(ln), f"{ln!r} has an empty value"
    assert f"This file holds the `{name}` recipe" in text and "This file is the default (smoke) profile" not in text
    # a changed value never keeps the default's comment about the old one
    assert "high for the tiny random model" not in text and "the paper profile lowers it" not in text
    assert "  init_adapter: null        # the base model, not the SFT adapter" in lines
    # every stage validates (the relative DeepSpeed path from the copy's root)
    monkeypatch.chdir(tmp_path)
    for stage in STAGES:
        stage_config(stage, path=params)


def test_recipes_compose_over_the_default_and_default_restores_it(tmp_path):
    params = _copy_repo(tmp_path)
    default = params.read_bytes()
    apply_profile("paper", params)
    paper = load_params(params)
    apply_profile("unsloth", params)  # starts from the default again, not from paper: same as applying it first
    unsloth = load_params(params)
    assert unsloth["grpo"]["backend"] == "unsloth" and unsloth["grpo"]["num_generations"] == 16
    assert unsloth["distill"] == paper["distill"] and unsloth["common"]["profile"] == "unsloth"
    apply_profile("default", params)
    assert params.read_bytes() == default
    # with params.yaml holding a recipe, its saved default copy gone and no git history to read, it says what to do
    apply_profile("paper", params)
    (tmp_path / ".globe" / "params.default.yaml").unlink()
    with pytest.raises(ParamsError, match="git checkout"):
        apply_profile("default", params)


def test_profile_errors_are_clear(tmp_path):
    params = _copy_repo(tmp_path)
    (tmp_path / "profiles" / "typo.yaml").write_text("grpo:\n  stepz: 3\n", encoding="utf-8")
    with pytest.raises(KeyError, match=r"grpo\.stepz"):
        apply_profile("typo", params)
    (tmp_path / "profiles" / "loop.yaml").write_text("extends: loop\n", encoding="utf-8")
    with pytest.raises(ParamsError, match="loops"):
        apply_profile("loop", params)
    assert load_params(params)["common"]["profile"] == "default"  # nothing written on failure


def test_cli_profile_round_trip(tmp_path):
    params = _copy_repo(tmp_path)
    before = params.read_text(encoding="utf-8")
    run = lambda *a: subprocess.run([sys.executable, "-m", "globe.cli", *a, "--params", str(params)],  # noqa: E731
                                    cwd=tmp_path, capture_output=True, text=True)
    out = run("profile", "released")
    assert out.returncode == 0 and "released" in out.stdout
    shown = yaml.safe_load(run("params", "05_eval").stdout)
    assert shown["models"][0]["model"] == "globe-project/GLOBE-Qwen2.5VL-7B" and shown["frequency_penalty"] == 0.7
    assert run("profile", "nope").returncode == 2
    assert run("profile", "default").returncode == 0 and params.read_text(encoding="utf-8") == before


def test_default_comes_back_from_git_when_the_saved_copy_is_gone(tmp_path):
    params = _copy_repo(tmp_path)
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("add", "params.yaml")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "default")
    committed = params.read_bytes()
    apply_profile("paper", params)
    (tmp_path / ".globe" / "params.default.yaml").unlink()
    apply_profile("default", params)
    assert params.read_bytes() == committed
