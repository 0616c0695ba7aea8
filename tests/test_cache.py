"""The on-disk binary cache: round trip, verification on load (corrupt, truncated, foreign,
missing, unreadable entries are rejected and removed), unwritable directories, concurrent
writers, and the Triton backend's use of it (AOT compile for sm_90, no GPU needed)."""
import errno
import json
import logging
import os
import tempfile
import threading

import pytest
import torch
from triton.backends.compiler import GPUTarget

from fastdispatch import cache
from fastdispatch.backends import triton as tb
from fastdispatch.kernels.add import ADD_KERNELS, BLOCK, add_grid

H100 = GPUTarget("cuda", 90, 32)
FILES = {"k.cubin": os.urandom(4096), "k.json": b'{"name": "k"}', "k.ptx": b".target sm_90a\n"}


def entry_dir(key_text, namespace="test"):
    return cache.cache_root() / namespace / cache.key_digest(key_text)


def test_round_trip(fresh_cache_dir, stats_delta):
    """store then load returns the same files; the manifest names the key and checksums."""
    assert cache.store("test", "key-A", FILES) is True
    assert cache.load("test", "key-A") == FILES
    manifest = json.loads((entry_dir("key-A") / cache.MANIFEST).read_text())
    assert manifest["key"] == "key-A" and set(manifest["files"]) == set(FILES)
    assert stats_delta("disk_writes") == 1 and stats_delta("disk_hits") == 1
    assert cache.load("test", "key-B") is None            # a miss is not a reject
    assert stats_delta("disk_rejects") == 0


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:100])


def _foreign_key(path):
    manifest_path = path.parent / cache.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["key"] = "some-other-key"
    manifest_path.write_text(json.dumps(manifest))


def _missing(path):
    path.unlink()


def _bad_manifest(path):
    (path.parent / cache.MANIFEST).write_text("{not json")


@pytest.mark.parametrize("damage", [_flip_byte, _truncate, _foreign_key, _missing, _bad_manifest],
                         ids=["flipped-byte", "truncated", "foreign-key", "missing-file", "bad-manifest"])
def test_damaged_entry_rejected_and_removed(fresh_cache_dir, stats_delta, caplog, damage):
    """A damaged entry loads as None, is removed, and counts as a disk reject."""
    cache.store("test", "key-A", FILES)
    damage(entry_dir("key-A") / "k.cubin")
    with caplog.at_level(logging.WARNING, logger="fastdispatch"):
        assert cache.load("test", "key-A") is None
    assert not entry_dir("key-A").exists()
    assert stats_delta("disk_rejects") == 1 and stats_delta("disk_hits") == 0
    assert any("discarding cache entry" in r.getMessage() for r in caplog.records)
    assert cache.store("test", "key-A", FILES) and cache.load("test", "key-A") == FILES


def test_disk_cache_off(fresh_cache_dir):
    """FASTDISPATCH_DISK_CACHE=0: store writes nothing and load finds nothing."""
    from fastdispatch import knobs

    with knobs.scope(disk_cache=False):
        assert cache.store("test", "key-A", FILES) is False
        assert cache.load("test", "key-A") is None
    assert not (fresh_cache_dir / "test").exists()


@pytest.mark.parametrize("exc", [PermissionError(errno.EACCES, "Permission denied"),
                                 OSError(errno.EROFS, "Read-only file system")], ids=["EACCES", "EROFS"])
def test_unwritable_cache_dir_warns_once(fresh_cache_dir, monkeypatch, caplog, exc):
    """A cache directory that refuses writes: store returns False, one warning for many stores."""
    monkeypatch.setattr(cache, "_warned_unwritable", set())
    if os.geteuid() != 0:
        root = fresh_cache_dir / "test"
        root.mkdir()
        root.chmod(0o500)
    else:  # root ignores permission bits: make the temporary directory creation fail instead
        def refuse(*args, **kwargs):
            raise exc
        monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    try:
        with caplog.at_level(logging.WARNING, logger="fastdispatch"):
            assert cache.store("test", "key-A", FILES) is False
            assert cache.store("test", "key-B", FILES) is False
    finally:
        if (fresh_cache_dir / "test").exists():
            (fresh_cache_dir / "test").chmod(0o700)
    warnings = [r for r in caplog.records if "not writable" in r.getMessage()]
    assert len(warnings) == 1
    assert cache.load("test", "key-A") is None


def test_concurrent_stores_leave_one_valid_entry(fresh_cache_dir):
    """16 threads storing one key at once: every store succeeds, one valid entry, no temp dirs."""
    n = 16
    barrier = threading.Barrier(n)
    results = []

    def worker():
        barrier.wait()
        results.append(cache.store("test", "key-A", FILES))

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * n
    assert cache.load("test", "key-A") == FILES
    assert [p.name for p in (fresh_cache_dir / "test").iterdir()] == [cache.key_digest("key-A")]


def test_single_flight_lock_per_key():
    """SingleFlight hands out one lock per key, different locks for different keys."""
    flight = cache.SingleFlight()
    assert flight.lock((1, 2)) is flight.lock((1, 2))
    assert flight.lock((1, 2)) is not flight.lock((1, 3))


# -- with the Triton backend (AOT for sm_90, no GPU) ---------------------------------------------
@pytest.fixture
def add2():
    return tb.triton_kernel(ADD_KERNELS[2], grid=add_grid, constexprs={"BLOCK": BLOCK})


def _args(n=4096):
    x = torch.randn(n)
    return x, x, x, n


def test_triton_compile_writes_disk_then_disk_hit(fresh_cache_dir, stats_delta, add2, monkeypatch):
    """compile_for writes the disk entry; with the memory cache cleared, the next is a disk hit."""
    monkeypatch.setattr(tb.binaries, "_files_by_key", {})
    key_text, files = add2.compile_for(*_args(), target=H100)
    assert stats_delta("compiles") == 1 and stats_delta("disk_writes") == 1
    assert (fresh_cache_dir / "triton" / cache.key_digest(key_text) / cache.MANIFEST).exists()
    assert any(name.endswith(".cubin") for name in files)
    tb.binaries._files_by_key.clear()
    stats_delta.reset()
    key2, files2 = add2.compile_for(*_args(), target=H100)
    assert key2 == key_text and files2 == files
    assert stats_delta("disk_hits") == 1 and stats_delta("compiles") == 0
    stats_delta.reset()
    add2.compile_for(*_args(), target=H100)                # memory hit: neither
    assert stats_delta("disk_hits") == 0 and stats_delta("compiles") == 0


def test_triton_corrupt_cubin_is_recompiled(fresh_cache_dir, stats_delta, add2, monkeypatch):
    """A corrupted cached cubin is rejected on load and the binary is compiled again."""
    monkeypatch.setattr(tb.binaries, "_files_by_key", {})
    key_text, files = add2.compile_for(*_args(), target=H100)
    entry = fresh_cache_dir / "triton" / cache.key_digest(key_text)
    cubin = next(entry.glob("*.cubin"))
    _flip_byte(cubin)
    tb.binaries._files_by_key.clear()
    stats_delta.reset()
    _, again = add2.compile_for(*_args(), target=H100)
    assert stats_delta("disk_rejects") == 1 and stats_delta("compiles") == 1
    assert again[cubin.name] == files[cubin.name]            # the intact binary, not the flipped one
    assert cache.load("triton", key_text) == again           # and the entry was rewritten intact
