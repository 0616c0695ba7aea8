"""Compiled-binary caches: in memory and on disk.

Lifetime: per process (memory) and across processes (disk). Only the slow path (a miss) comes
here. A disk entry is a directory named by the SHA-256 of its full compile key; it holds the
backend's files plus ``manifest.json`` with the key text and a SHA-256 per file. Entries are
written to a temporary directory and renamed into place (atomic on POSIX), so readers never see
a half-written entry and concurrent writers of the same key race harmlessly. On load every
file's checksum and the key text are verified: a corrupt, truncated or foreign entry is removed
and recompiled, never launched. An unwritable cache directory (read-only, full disk) degrades to
memory only with one warning.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from fastdispatch import _stats as stats
from fastdispatch.knobs import knobs

log = logging.getLogger("fastdispatch")

MANIFEST = "manifest.json"
FORMAT_VERSION = 1

_warned_unwritable: set = set()
_warn_lock = threading.Lock()


def key_digest(key_text: str) -> str:
    """The directory name of a compile key."""
    return hashlib.sha256(key_text.encode()).hexdigest()


def cache_root() -> Path:
    """The on-disk cache root (``FASTDISPATCH_CACHE_DIR``)."""
    return Path(knobs.cache_dir)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load(namespace: str, key_text: str) -> dict[str, bytes] | None:
    """The files stored under ``key_text``, verified, or None (missing, disabled or invalid)."""
    if not knobs.disk_cache:
        return None
    entry = cache_root() / namespace / key_digest(key_text)
    manifest_path = entry / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        _discard(entry, f"unreadable manifest ({exc})")
        return None
    if manifest.get("format") != FORMAT_VERSION or manifest.get("key") != key_text:
        _discard(entry, "manifest does not match the key (foreign or stale entry)")
        return None
    files = {}
    for name, digest in manifest.get("files", {}).items():
        try:
            data = (entry / name).read_bytes()
        except OSError as exc:
            _discard(entry, f"missing file {name} ({exc})")
            return None
        if _sha256(data) != digest:
            _discard(entry, f"checksum mismatch in {name} (corrupt or truncated)")
            return None
        files[name] = data
    stats.record("disk_hits")
    return files


def store(namespace: str, key_text: str, files: dict[str, bytes]) -> bool:
    """Write ``files`` under ``key_text`` atomically; False (and one warning) if the disk refuses."""
    if not knobs.disk_cache:
        return False
    root = cache_root() / namespace
    final = root / key_digest(key_text)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        try:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
            manifest = {"format": FORMAT_VERSION, "key": key_text,
                        "files": {name: _sha256(data) for name, data in files.items()}}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / MANIFEST).exists():
                    raise
                # Another process published the same key first: keep theirs.
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError as exc:
        _warn_unwritable(root, exc)
        return False
    stats.record("disk_writes")
    return True


def _discard(entry: Path, why: str) -> None:
    log.warning("fastdispatch: discarding cache entry %s: %s; recompiling", entry, why)
    stats.record("disk_rejects")
    shutil.rmtree(entry, ignore_errors=True)


def _warn_unwritable(root: Path, exc: OSError) -> None:
    with _warn_lock:
        if str(root) in _warned_unwritable:
            return
        _warned_unwritable.add(str(root))
    log.warning("fastdispatch: cache directory %s is not writable (%s); keeping binaries in "
                "memory only", root, exc)


def size_bytes() -> int:
    """Total bytes under the cache root (for ``python -m fastdispatch info``)."""
    total = 0
    for dirpath, _, filenames in os.walk(cache_root()):
        for name in filenames:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                pass
    return total


class SingleFlight:
    """One lock per key, so many threads missing on one key compile it once.

    The lock table itself is guarded by a short global lock, taken only on misses.
    """

    def __init__(self):
        self._guard = threading.Lock()
        self._locks: dict = {}

    def lock(self, key) -> threading.Lock:
        with self._guard:
            found = self._locks.get(key)
            if found is None:
                found = self._locks[key] = threading.Lock()
            return found
