"""A rerun of the same commit reproduces every tracked number: two runs of a training stage write the same bytes."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from test_grpo import colour_rows, save_dataset, small_params
from test_sft import TINY_LORA, make_reason_dataset


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(path: Path) -> dict[str, str]:
    """relative path -> digest of every file under `path` (what DVC hashes for a directory output)."""
    return {str(f.relative_to(path)): _digest(f) for f in sorted(path.rglob("*")) if f.is_file()}


@pytest.mark.slow
def test_grpo_twice_gives_the_same_log_samples_and_adapter(tiny_vlm_dir, tmp_path):
    """Sampling, rewards and updates repeat exactly on CPU: the per-step log (tracked by DVC), the recorded
    completions and every file of the adapter folder are identical across two fresh runs; wall times live apart
    (.globe/runs/grpo/timing.csv)."""
    from globe.train.grpo import timing_csv, train_grpo

    data = save_dataset(colour_rows(8), tmp_path / "data" / "mp16_reason")
    runs = []
    for _ in range(2):  # from scratch each time, at the same paths (as `dvc repro` on a fresh clone)
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        params = small_params(tiny_vlm_dir, data, tmp_path / "run", steps=2, save_steps=1)
        out = train_grpo(params)
        runs.append({"log": _digest(Path(params["log_csv"])), "samples": _digest(Path(params["samples"])),
                     # the whole adapter folder, checkpoints (trainer_state.json, optimizer, RNG states) included
                     **{f"adapter/{k}": v for k, v in _tree(out).items()}})
        header = Path(params["log_csv"]).read_text().splitlines()[0].split(",")
        assert not {"step_time", "step_time_s", "wall_time"} & set(header)  # no wall clock in the tracked log
        assert timing_csv().is_file() and not (out / "timing.csv").exists()
    assert any(k.endswith("trainer_state.json") for k in runs[0])
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_sft_twice_gives_the_same_loss_log_and_adapter(tiny_vlm_dir, tmp_path):
    """Forward and backward passes repeat exactly: the loss log (tracked by DVC) and every file of the adapter folder
    (its summary, its checkpoints' trainer_state.json: no wall times) are identical."""
    from globe.train.sft import SFTParams, train_sft

    data = make_reason_dataset(tmp_path / "mp16_reason")
    runs = []
    for _ in range(2):
        shutil.rmtree(tmp_path / "sft", ignore_errors=True)
        (tmp_path / "sft.csv").unlink(missing_ok=True)
        cfg = SFTParams.from_params(dict(base_model=str(tiny_vlm_dir), dataset=str(data), out=str(tmp_path / "sft"),
                                         log_csv=str(tmp_path / "sft.csv"), lora=TINY_LORA, max_steps=3,
                                         save_steps=3, eval_steps=3, per_device_train_batch_size=2,
                                         learning_rate=1e-3))
        out = train_sft(cfg)
        runs.append({"log": _digest(Path(cfg.log_csv)), **_tree(out)})
    assert "train_summary.json" in runs[0] and any(k.endswith("trainer_state.json") for k in runs[0])
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_data_stage_twice_gives_the_same_notebook_and_outputs(tmp_path):
    """`globe run 01_data` twice, from scratch, in a copy of the project: the executed notebook (a DVC output, with
    its timestamps and wall-clock tokens scrubbed), the dataset folder (content fingerprints) and the summary tables
    are the same bytes."""
    from globe.pipeline import run_stage

    root = Path(__file__).resolve().parents[1]
    trees = []
    for k in range(2):
        proj = tmp_path / f"p{k}"
        (proj / "data").mkdir(parents=True)
        shutil.copy(root / "params.yaml", proj / "params.yaml")
        shutil.copytree(root / "notebooks", proj / "notebooks")
        shutil.copytree(root / "data" / "sample", proj / "data" / "sample")
        nb = run_stage("01_data", params_path=proj / "params.yaml", log_output=False)
        text = nb.read_text()
        assert str(proj) not in text and "start_time" not in text and "iopub" not in text
        trees.append({"notebook": _digest(nb), **{f"dataset/{k}": v for k, v in _tree(proj / "data" / "processed"
                                                                                      / "dataset").items()},
                      **{f"results/{k}": v for k, v in _tree(proj / "results" / "data").items()}})
    assert any(k.endswith("state.json") for k in trees[0])
    assert trees[0] == trees[1]


def test_strip_timing_removes_only_wall_clock_tokens():
    from globe.progress import rate, seconds, step_line, strip_timing

    line = step_line("sft", 5, 200, {"loss": 2.3, "learning_rate": 0.01}, 0.4213)
    assert line.endswith(rate(0.4213, "s/step")) and strip_timing(line) == "sft   step   5/200  loss 2.300  lr 0.010"
    assert strip_timing(f"eval  sample/grpo  57/57 images  {rate(46.37, 'images/s')}\n") == \
        "eval  sample/grpo  57/57 images\n"
    assert strip_timing(f"took {seconds(3.25)}; [1, 2] stays [x s] too") == "took; [1, 2] stays [x s] too"


def test_progress_prints_the_same_lines_whatever_the_speed(capsys):
    import time

    from globe.progress import Progress, strip_timing

    outs = []
    for pause in (0.0, 0.01):
        bar = Progress("eval  x", 57, lines=4)
        for n in (16, 16, 16, 9):
            time.sleep(pause)
            bar.update(n)
        outs.append(strip_timing(capsys.readouterr().out))
    assert outs[0] == outs[1]
    assert outs[0].splitlines() == ["eval  x  16/57 images", "eval  x  32/57 images", "eval  x  48/57 images",
                                    "eval  x  57/57 images"]


def test_scrub_notebook_keeps_what_ran_and_drops_run_state(tmp_path):
    import nbformat

    from globe.pipeline import scrub_notebook
    from globe.progress import rate

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("steps = 2", metadata={"tags": ["injected-parameters"],
                                                             "papermill": {"duration": 0.1, "status": "completed"}})
    params["id"] = "a1b2c3d4"
    work = nbformat.v4.new_code_cell("train()", metadata={"execution": {"iopub.status.busy": "2026-12-02T03:43Z"}})
    line = f"grpo  step 1/2  reward 1.0  {rate(2.5, 's/step')}"
    work.outputs = [nbformat.v4.new_output("stream", name="stdout", text=line),
                    nbformat.v4.new_output("stream", name="stdout", text="\n"),
                    nbformat.v4.new_output("stream", name="stderr", text="a warning\n")]
    nb.cells = [params, work]
    nb.metadata["papermill"] = {"parameters": {"steps": 2}, "start_time": "x", "duration": 3.0,
                                "input_path": "/abs/in.ipynb", "output_path": "/abs/out.ipynb", "version": "2.7.0"}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    scrub_notebook(path)
    out = nbformat.read(str(path), as_version=4)
    assert out.metadata["papermill"] == {"parameters": {"steps": 2}, "version": "2.7.0"}
    assert out.cells[0]["id"] == "injected-parameters" and out.cells[0].metadata["papermill"] == {"status": "completed"}
    assert "execution" not in out.cells[1].metadata
    assert [(o["name"], o["text"]) for o in out.cells[1].outputs] == [("stdout", "grpo  step 1/2  reward 1.0\n"),
                                                                       ("stderr", "a warning\n")]


def test_saved_datasets_get_content_fingerprints(tmp_path):
    """The same rows saved twice (once through a transform of a loaded copy, which `datasets` would fingerprint from
    file times or at random) carry the same fingerprint; other rows another."""
    import json

    import datasets

    from globe.data import save_dataset

    rows = {"id": ["a", "b", "c"], "x": [1, 2, 3]}
    first = save_dataset(datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}), tmp_path / "one")
    loaded = datasets.load_from_disk(str(first))
    again = save_dataset(loaded.map(lambda r: {"x": r["x"] + 0}), tmp_path / "two")
    other = save_dataset(datasets.DatasetDict({"train": datasets.Dataset.from_dict({**rows, "x": [1, 2, 4]})}),
                         tmp_path / "three")
    fp = [json.loads((d / "train" / "state.json").read_text())["_fingerprint"] for d in (first, again, other)]
    assert fp[0] == fp[1] != fp[2]
    assert (first / "train" / "state.json").read_bytes() == (again / "train" / "state.json").read_bytes()


def test_reproducible_cpu_env(monkeypatch):
    from globe.config import environment as env

    monkeypatch.setattr(env, "_has_nvidia_gpu", lambda: False)
    monkeypatch.setattr(env, "_has_avx2", lambda: True)
    assert env.reproducible_cpu_env({}) == env.REPRODUCIBLE_CPU_ENV
    assert "OMP_NUM_THREADS" not in env.reproducible_cpu_env({"OMP_NUM_THREADS": "8"})  # the user's choice stays
    assert env.reproducible_cpu_env({"GLOBE_CPU_NUMERICS": "native"}) == {}
    monkeypatch.setattr(env, "_has_avx2", lambda: False)
    assert env.reproducible_cpu_env({}) == {}
    monkeypatch.setattr(env, "_has_avx2", lambda: True)
    monkeypatch.setattr(env, "_has_nvidia_gpu", lambda: True)
    assert env.reproducible_cpu_env({}) == {}


def test_teacher_cache_records_leave_out_wall_clock():
    import dataclasses
    from types import SimpleNamespace

    from globe.distill.query import _record
    from globe.teachers.base import Response

    @dataclasses.dataclass
    class Sampling:
        temperature: float = 0.0

    teacher = SimpleNamespace(name="t", sampling=Sampling())
    rec = _record("k", "train", "reasoning", SimpleNamespace(id="p1"),
                  Response(text="x", meta={"backend": "local", "latency_s": 0.12}), teacher)
    assert rec["meta"] == {"backend": "local"} and rec["text"] == "x"
