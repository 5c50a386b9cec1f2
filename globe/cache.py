"""The one answer cache: an append-only JSONL file of keyed records, safe against kills, and the key that names them.

Distillation caches every teacher answer and evaluation every model completion here, so that a run killed at any
point and started again asks nothing twice and loses nothing: each batch of records is appended in one write, flushed
and fsynced. On load, a torn last line (a write cut by a kill: no trailing newline) is cut off the file and reported;
unreadable lines elsewhere and repeated keys (the first record wins) are counted, never silently used.

A record's key is `cache_key(...)` of everything that changes what the cached answer means: the image id, the model
(with a digest of a local model's or adapter's files, so retrained weights are not mistaken for the old ones), the
prompt text, the image budget, the decoding settings. A changed input gives a new key; old records stay in the file
but are never read for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _canonical(value: Any) -> Any:
    """JSON-able form with a stable order (tuples as lists, sets sorted, paths as strings)."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_canonical(v) for v in value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return _canonical(asdict(value))
    return value


def cache_key(*parts: Any) -> str:
    """A 32-hex-digit key for any JSON-able parts (dicts in any key order give the same key)."""
    blob = json.dumps(_canonical(list(parts)), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def files_digest(path: str | os.PathLike | None, *, full_limit: int = 256 << 20) -> str | None:
    """A digest of a local model or adapter directory (None for a hub id or a missing path).

    Files up to `full_limit` bytes are hashed whole (adapters, configs, tokenizers); larger ones (base-model shards)
    by name, size, and their first and last MiB, which tells two different weight files apart without reading
    gigabytes.
    """
    if not path:
        return None
    root = Path(path)
    if not root.exists():
        return None
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and "checkpoint" not in
                                                 p.relative_to(root).parts[0])
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.relative_to(root) if f != root else f.name}\0{size}\0".encode())
        with open(f, "rb") as fh:
            if size <= full_limit:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            else:
                h.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read(1 << 20))
    return h.hexdigest()


class JsonlCache:
    """Records keyed by their `key` field, backed by an append-only JSONL file (see the module docstring).

    `report()` says what loading found: records, torn bytes cut off, unreadable lines and duplicate keys skipped.
    """

    def __init__(self, path: str | os.PathLike, key_field: str = "key"):
        self.path = Path(path)
        self.key_field = key_field
        self.records: dict[str, dict] = {}
        self.torn_bytes = 0
        self.corrupt_lines = 0
        self.duplicates = 0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            self.torn_bytes = len(data) - end
            log.warning("%s: torn last line (%d bytes, an interrupted write) cut off", self.path, self.torn_bytes)
            with open(self.path, "r+b") as f:  # the next append must start on a fresh line
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = rec[self.key_field]
            except (ValueError, KeyError, TypeError):
                self.corrupt_lines += 1
                continue
            if key in self.records:
                self.duplicates += 1
                continue
            self.records[key] = rec
        if self.corrupt_lines or self.duplicates:
            log.warning("%s: %d unreadable lines skipped, %d duplicate keys ignored (first kept)", self.path,
                        self.corrupt_lines, self.duplicates)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records.values())

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def append(self, records: Iterable[dict]) -> None:
        """Append records durably (one write, flush, fsync): once this returns they survive a kill -9.

        A record whose key is already cached is not written again.
        """
        fresh: dict[str, dict] = {}
        for r in records:
            key = r[self.key_field]
            if key not in self.records and key not in fresh:
                fresh[key] = r
        if not fresh:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in fresh.values())
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        self.records.update(fresh)

    def report(self) -> dict:
        return {"records": len(self.records), "torn_bytes": self.torn_bytes, "corrupt_lines": self.corrupt_lines,
                "duplicates": self.duplicates}


# ---------------------------------------------------------------------------------------------------------------------
# Shards: past one machine
#
# Distillation and evaluation take a shard `i/N` (i in 0..N-1): each photo belongs to exactly one shard, by a stable
# hash of its id (the same on every node, for any row order or cap), and shard i writes its own cache file beside the
# main one (`cache.jsonl` -> `cache.shard-3-of-8.jsonl`), so N job-array tasks never write the same file.
# `merge_caches` then joins the N files into the main cache with the cache's own guarantees: afterwards every record
# of every shard is in it (checked by reading it back), none twice (a key already there is not written again), and a
# key two shards answered differently is counted as a conflict (the first answer is kept).

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """"3/8" -> (3, 8); None -> None. Refuses anything else with a message naming the accepted form."""
    if shard is None:
        return None
    m = _SHARD.match(str(shard))
    if not m or int(m.group(2)) < 1 or not int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"shard must be 'i/N' with 0 <= i < N (e.g. '0/8'), got {shard!r}")
    return int(m.group(1)), int(m.group(2))


def shard_of(item_id: str, n_shards: int) -> int:
    """The shard (0..n_shards-1) an id belongs to: a stable hash, not Python's salted hash()."""
    return int(hashlib.sha256(str(item_id).encode("utf-8")).hexdigest()[:16], 16) % n_shards


def in_shard(item_id: str, shard: tuple[int, int] | None) -> bool:
    return shard is None or shard_of(item_id, shard[1]) == shard[0]


def shard_path(path: str | os.PathLike, shard: tuple[int, int]) -> Path:
    """`dir/cache.jsonl` -> `dir/cache.shard-3-of-8.jsonl`."""
    p = Path(path)
    return p.with_name(f"{p.stem}.shard-{shard[0]}-of-{shard[1]}{p.suffix}")


def shard_paths(path: str | os.PathLike, n_shards: int) -> list[Path]:
    return [shard_path(path, (i, n_shards)) for i in range(n_shards)]


def merge_caches(dest: str | os.PathLike, sources: Iterable[str | os.PathLike], key_field: str = "key") -> dict:
    """Join cache files into `dest` (an existing cache keeps its records): no record lost, none written twice.

    Returns {"records_in": per source, "added", "already_present", "conflicts", "torn_bytes", "corrupt_lines",
    "records_out"}. Raises if a source is missing or if, read back, `dest` lacks a key a source has.
    """
    sources = [Path(s) for s in sources]
    absent = [str(s) for s in sources if not s.is_file()]
    if absent:
        raise FileNotFoundError(f"cannot merge: shard cache(s) {absent} do not exist (run those shards first)")
    target = JsonlCache(dest, key_field)
    report: dict[str, Any] = {"records_in": {}, "added": 0, "already_present": 0, "conflicts": 0, "torn_bytes": 0,
                              "corrupt_lines": 0, "duplicates_within": 0}
    keys: set[str] = set()
    for src in sources:
        cache = JsonlCache(src, key_field)
        report["records_in"][str(src)] = len(cache)
        for k in ("torn_bytes", "corrupt_lines"):
            report[k] += getattr(cache, k)
        report["duplicates_within"] += cache.duplicates
        fresh = []
        for rec in cache:
            key = rec[key_field]
            keys.add(key)
            have = target.get(key)
            if have is None:
                fresh.append(rec)
            elif have == rec:
                report["already_present"] += 1
            else:
                report["conflicts"] += 1
        target.append(fresh)
        report["added"] += len(fresh)
    check = JsonlCache(dest, key_field)
    lost = [k for k in keys if k not in check]
    if lost:  # pragma: no cover - append() fsyncs; this guards the guarantee, not a known failure
        raise RuntimeError(f"merge into {dest} lost {len(lost)} records (e.g. {lost[0]})")
    report["records_out"] = len(check)
    if report["conflicts"]:
        log.warning("merge into %s: %d keys answered differently by two shards (first kept)", dest, report["conflicts"])
    return report
