"""Shared fixtures. Everything here is offline: the tiny model is built from scratch, photos come from data/sample."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# No hub access in tests: a missing local file must fail, never download.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Stages' wall-time records (globe.progress.runs_dir) go to a scratch folder, not the checkout's .globe/runs.
os.environ.setdefault("GLOBE_RUNS_DIR", tempfile.mkdtemp(prefix="globe-runs-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The committed sample of CC BY / CC BY-SA photos (data/sample: images/, metadata.csv, ATTRIBUTION.md)."""
    d = ROOT / "data" / "sample"
    assert (d / "metadata.csv").is_file(), "data/sample/metadata.csv is missing from the checkout"
    return d


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2.5-VL (tokenizer, processor, weights) built offline once per test session."""
    from globe.tiny import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm") / "model", seed=0)
