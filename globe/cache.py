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
