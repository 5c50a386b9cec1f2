"""The one resume module (globe.checkpoints): resume the same experiment only, never more steps than asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from globe.checkpoints import (
    checkpoint_step,
    data_fingerprint,
    export_checkpoint,
    length_sets_schedule,
    list_checkpoints,
    plan_resume,
    prepare_resume,
    run_settings,
)

SETTINGS = {"lr": 1e-4, "data": "abc"}


def _checkpoint(root: Path, step: int, files=("adapter_model.safetensors",)) -> Path:
    d = root / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    for f in files:
        (d / f).write_text(f"{f}@{step}")
    return d


def _names(root: Path) -> list[str]:
    return [p.name for _, p in list_checkpoints(root)]


def test_resumes_the_same_experiment_at_or_below_the_requested_steps(tmp_path):
    ckpt = tmp_path / "checkpoints"
    plan = prepare_resume(ckpt, SETTINGS, max_steps=8)
    assert plan.checkpoint is None and "step 0" in plan.message  # nothing yet: the settings are stamped
    for s in (2, 4, 6):
        _checkpoint(ckpt, s)
    plan = prepare_resume(ckpt, SETTINGS, max_steps=8)
    assert (plan.checkpoint, plan.step, plan.done) == (str(ckpt / "checkpoint-6"), 6, False)
    assert "resuming checkpoint-6 (step 6 of 8)" in plan.message
    plan = prepare_resume(ckpt, SETTINGS, max_steps=6)  # exactly there: export, train nothing
    assert plan.done and plan.step == 6 and "nothing trained" in plan.message


def test_never_returns_more_training_than_asked(tmp_path):
    ckpt = tmp_path / "checkpoints"
    prepare_resume(ckpt, SETTINGS, max_steps=32)
    for s in (4, 32):
        _checkpoint(ckpt, s)
    plan = prepare_resume(ckpt, SETTINGS, max_steps=5)  # a 32-step checkpoint exists; 5 steps are asked for
    assert plan.checkpoint == str(ckpt / "checkpoint-4") and not plan.done and "past steps=5" in plan.message
    assert _names(ckpt) == ["checkpoint-4"]  # the longer run's checkpoint is gone, not exported as "5 steps"
    plan = prepare_resume(ckpt, SETTINGS, max_steps=2)
    assert plan.checkpoint is None and _names(ckpt) == [] and "no checkpoint at or below steps=2" in plan.message


def test_another_experiments_checkpoints_are_discarded(tmp_path):
    ckpt = tmp_path / "checkpoints"
    prepare_resume(ckpt, SETTINGS, max_steps=4)
    _checkpoint(ckpt, 2)
    plan = prepare_resume(ckpt, {**SETTINGS, "data": "xyz"}, max_steps=4)
    assert plan.checkpoint is None and plan.changed == ["data"] and "changed: data" in plan.message
    assert _names(ckpt) == []
    _checkpoint(ckpt, 3)
    assert prepare_resume(ckpt, {**SETTINGS, "data": "xyz"}, max_steps=4).step == 3  # now it is this experiment's
    plan = prepare_resume(ckpt, {**SETTINGS, "data": "xyz"}, max_steps=4, resume=False)
    assert plan.checkpoint is None and "resume is off" in plan.message and _names(ckpt) == []


def test_unstamped_checkpoints_are_not_resumed(tmp_path):
    ckpt = tmp_path / "checkpoints"
    _checkpoint(ckpt, 5)  # written by a version that did not stamp its settings
    plan = prepare_resume(ckpt, SETTINGS)
    assert plan.checkpoint is None and plan.changed == ["(no record)"] and _names(ckpt) == []


def test_plan_is_read_only_and_incomplete_checkpoints_are_ignored(tmp_path):
    ckpt = tmp_path / "checkpoints"
    prepare_resume(ckpt, SETTINGS)
    _checkpoint(ckpt, 2)
    (ckpt / "checkpoint-3").mkdir()  # killed while saving: no trainer_state.json
    plan = plan_resume(ckpt, {**SETTINGS, "lr": 1.0}, max_steps=4)
    assert plan.stale == [str(ckpt / "checkpoint-2")] and (ckpt / "checkpoint-2").is_dir()  # planned, not deleted
    assert plan_resume(ckpt, SETTINGS, max_steps=4).checkpoint == str(ckpt / "checkpoint-2")


def test_only_the_main_process_deletes_and_every_rank_resumes_the_same_checkpoint(tmp_path):
    ckpt = tmp_path / "checkpoints"
    prepare_resume(ckpt, SETTINGS)
    for s in (2, 9):
        _checkpoint(ckpt, s)
    order = []
    rank1 = prepare_resume(ckpt, SETTINGS, max_steps=4, is_main=False, barrier=lambda: order.append("barrier"))
    assert _names(ckpt) == ["checkpoint-2", "checkpoint-9"]  # a non-main rank deletes nothing ...
    rank0 = prepare_resume(ckpt, SETTINGS, max_steps=4, is_main=True, barrier=lambda: order.append("barrier"))
    assert _names(ckpt) == ["checkpoint-2"] and order == ["barrier", "barrier"]
    assert rank0.checkpoint == rank1.checkpoint == str(ckpt / "checkpoint-2")  # ... and plans after the barrier


def test_run_settings_and_schedules():
    cfg = {"lr": 1e-4, "steps": 8, "out": "x", "obj": Path("p")}
    assert run_settings(cfg, {"steps", "out"}, data="fp") == {"lr": 1e-4, "obj": "p", "data": "fp"}
    assert not length_sets_schedule("constant") and not length_sets_schedule("constant_with_warmup", 10)
    assert length_sets_schedule("cosine") and length_sets_schedule("constant_with_warmup", 0.1)


def test_checkpoint_step_and_export(tmp_path):
    d = _checkpoint(tmp_path, 7, files=("adapter_model.safetensors", "optimizer.pt", "rng_state.pth",
                                          "tokenizer.json", "scheduler.pt", "training_args.bin"))
    (d / "ref").mkdir()
    (d / "ref" / "adapter_config.json").write_text("{}")
    assert checkpoint_step(d) == 7
    out = export_checkpoint(d, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["adapter_model.safetensors", "ref", "tokenizer.json"]
    with pytest.raises(ValueError):
        checkpoint_step(tmp_path / "not-a-checkpoint")


def test_data_fingerprint_changes_with_the_dataset(tmp_path):
    from datasets import Dataset

    assert data_fingerprint(tmp_path / "absent") is None
    Dataset.from_dict({"x": [1, 2]}).save_to_disk(str(tmp_path / "a"))
    Dataset.from_dict({"x": [1, 3]}).save_to_disk(str(tmp_path / "b"))
    assert data_fingerprint(tmp_path / "a") != data_fingerprint(tmp_path / "b")
