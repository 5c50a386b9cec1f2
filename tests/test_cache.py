"""The one answer cache (globe.cache): durable appends, torn-line repair, keyed records, and the keys themselves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from globe.cache import JsonlCache, cache_key, files_digest

ROOT = Path(__file__).resolve().parents[1]


def test_records_survive_a_reload_and_keys_are_never_written_twice(tmp_path):
    path = tmp_path / "c.jsonl"
    cache = JsonlCache(path)
    assert len(cache) == 0 and cache.report() == {"records": 0, "torn_bytes": 0, "corrupt_lines": 0, "duplicates": 0}
    cache.append([{"key": "a", "v": 1}, {"key": "b", "v": 2}, {"key": "a", "v": 3}])  # a repeated key in one batch
    cache.append([{"key": "b", "v": 4}, {"key": "c", "v": 5}])  # a key already cached
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["a", "b", "c"]
    again = JsonlCache(path)
    assert {r["key"]: r["v"] for r in again} == {"a": 1, "b": 2, "c": 5} and "a" in again and again.get("z") is None
    cache.append([])
    assert len(path.read_text().splitlines()) == 3


def test_torn_last_line_is_cut_off_and_reported(tmp_path, caplog):
    path = tmp_path / "c.jsonl"
    JsonlCache(path).append([{"key": "a", "v": 1}])
    with open(path, "a") as f:
        f.write('{"key": "b", "v": ')  # what a kill mid-write leaves
    cache = JsonlCache(path)
    assert cache.report()["torn_bytes"] == len('{"key": "b", "v": ') and "torn last line" in caplog.text
    assert path.read_text() == '{"key": "a", "v": 1}\n'  # cut off the file: the next append starts a fresh line
    cache.append([{"key": "b", "v": 2}])
    assert {r["key"]: r["v"] for r in JsonlCache(path)} == {"a": 1, "b": 2}
    assert JsonlCache(path).report()["torn_bytes"] == 0


def test_corrupt_lines_and_duplicate_keys_are_counted_first_wins(tmp_path, caplog):
    path = tmp_path / "c.jsonl"
    path.write_text('{"key": "k1", "text": "a"}\nnot json\n{"no key": 1}\n{"key": "k1", "text": "b"}\n\n')
    cache = JsonlCache(path)
    assert cache.report() == {"records": 1, "torn_bytes": 0, "corrupt_lines": 2, "duplicates": 1}
    assert cache.get("k1")["text"] == "a" and "unreadable" in caplog.text


KILL = r"""
import sys, time
from globe.cache import JsonlCache
cache = JsonlCache(sys.argv[1])
for i in range(10_000):
    if f"k{i}" not in cache:
        cache.append([{"key": f"k{i}", "i": i}])
        time.sleep(0.002)
"""


def test_a_killed_writer_loses_nothing_it_acknowledged_and_resumes(tmp_path):
    path = tmp_path / "c.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILL, str(path)], env=env)
    deadline = time.time() + 60
    while (not path.exists() or len(path.read_bytes().splitlines()) < 50) and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = JsonlCache(path)
    n = len(before)
    assert 50 <= n < 10_000
    assert sorted(r["i"] for r in before) == list(range(n))  # in order, no gap, no duplicate
    subprocess.run([sys.executable, "-c", KILL, str(path)], env=env, check=True, timeout=300)
    after = [json.loads(line)["i"] for line in path.read_text().splitlines()]
    assert after == list(range(10_000))  # resumed exactly where it stopped


def test_cache_key_is_stable_and_order_free():
    assert cache_key("a", {"x": 1, "y": [1, 2]}) == cache_key("a", {"y": [1, 2], "x": 1})
    assert cache_key("a", {"x": 1}) != cache_key("a", {"x": 2}) != cache_key("b", {"x": 1})
    assert cache_key(("a", 1)) == cache_key(["a", 1]) and len(cache_key("a")) == 32
    assert cache_key({"s": {2, 1}}) == cache_key({"s": [1, 2]})


def test_files_digest_tells_weights_apart(tmp_path):
    assert files_digest(None) is None and files_digest("Qwen/Qwen2.5-VL-7B-Instruct") is None
    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_model.safetensors").write_bytes(b"x" * 1000)
    (d / "adapter_config.json").write_text("{}")
    first = files_digest(d)
    assert first == files_digest(d)
    (d / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (d / "checkpoints" / "checkpoint-1" / "w.bin").write_bytes(b"training state")
    assert files_digest(d) == first  # checkpoints inside an output folder are not the model
    (d / "adapter_model.safetensors").write_bytes(b"x" * 999 + b"y")
    assert files_digest(d) != first
    big = tmp_path / "big"
    big.mkdir()
    (big / "model.safetensors").write_bytes(b"\0" * (3 << 20))
    small_limit = files_digest(big, full_limit=1 << 20)
    with open(big / "model.safetensors", "r+b") as f:  # a change in the middle of a big shard ...
        f.seek(3 << 19)  # 1.5 MiB: neither the first nor the last MiB
        f.write(b"\1")
    assert files_digest(big, full_limit=1 << 20) == small_limit  # ... is not read (head and tail only)
    with open(big / "model.safetensors", "r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\1")
    assert files_digest(big, full_limit=1 << 20) != small_limit


@pytest.mark.parametrize("bad", ['{"key": 1', "\x00\x01", '["a list"]'])
def test_any_unreadable_tail_is_handled(tmp_path, bad):
    path = tmp_path / "c.jsonl"
    path.write_text('{"key": "a"}\n' + bad)
    assert list(JsonlCache(path).records) == ["a"]
