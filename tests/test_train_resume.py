"""Checkpoint resumption shared by the trainers (globe.train.resume_checkpoint): resume the same run only."""

from globe.train import data_fingerprint, resume_checkpoint


def _checkpoints(d):
    return sorted(p.name for p in d.glob("checkpoint-*"))


def test_resume_same_settings_only(tmp_path):
    ckpt = tmp_path / "checkpoints"
    settings = {"lr": 1e-4, "data": "abc"}
    assert resume_checkpoint(ckpt, settings) is None  # nothing yet: the settings are stamped
    (ckpt / "checkpoint-1").mkdir()
    (ckpt / "checkpoint-2").mkdir()
    assert resume_checkpoint(ckpt, settings) == str(ckpt / "checkpoint-2")
    # other settings (or other data): another experiment, its checkpoints are not continued
    assert resume_checkpoint(ckpt, {**settings, "data": "xyz"}) is None
    assert _checkpoints(ckpt) == []
    (ckpt / "checkpoint-3").mkdir()
    assert resume_checkpoint(ckpt, {**settings, "data": "xyz"}) == str(ckpt / "checkpoint-3")
    # resume off starts over even with the same settings
    assert resume_checkpoint(ckpt, {**settings, "data": "xyz"}, resume=False) is None
    assert _checkpoints(ckpt) == []


def test_unstamped_checkpoints_are_not_resumed(tmp_path):
    ckpt = tmp_path / "checkpoints"
    (ckpt / "checkpoint-5").mkdir(parents=True)  # written by a version that did not stamp its settings
    assert resume_checkpoint(ckpt, {"lr": 1}) is None and _checkpoints(ckpt) == []


def test_data_fingerprint_changes_with_the_dataset(tmp_path):
    from datasets import Dataset

    assert data_fingerprint(tmp_path / "absent") is None
    Dataset.from_dict({"x": [1, 2]}).save_to_disk(str(tmp_path / "a"))
    Dataset.from_dict({"x": [1, 3]}).save_to_disk(str(tmp_path / "b"))
    assert data_fingerprint(tmp_path / "a") != data_fingerprint(tmp_path / "b")
