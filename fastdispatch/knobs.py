"""Every environment knob of fastdispatch, typed, in one place.

Lifetime: per process. Values are read from the environment once, at import; the hot path never
reads the environment. Tests and applications change them with :func:`scope` (or by assigning
the attribute); a change affects entries published afterwards, so call
``fastdispatch.clear_caches()`` to re-specialize kernels that already ran.

| variable | default | meaning |
|---|---|---|
| FASTDISPATCH_NO_EXTENSIONS | 0 | use the pure-Python key builder even if the extension is built |
| FASTDISPATCH_DISABLE_FAST_PATH | 0 | launch every call through Triton's own launcher |
| FASTDISPATCH_CACHE_DIR | $XDG_CACHE_HOME/fastdispatch | on-disk binary cache |
| FASTDISPATCH_DISK_CACHE | 1 | 0 keeps compiled binaries in memory only |
| FASTDISPATCH_LOG | warning | log level of the ``fastdispatch`` logger (debug, info, ...) |
| FASTDISPATCH_MAX_ENTRIES | 4096 | bound of each kernel's key table (CLOCK eviction past it) |
| FASTDISPATCH_RELEASE_GIL | 0 | release the GIL around ``cuLaunchKernelEx`` on a hit (held by default: 8 threads on own streams cost 4.9 us per call held, 9.0 released, on the lent H200) |
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, fields


def _env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() not in ("0", "false", "no", "off")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastdispatch")


@dataclass
class Knobs:
    """The live knob values (one instance: ``fastdispatch.knobs.knobs``)."""

    no_extensions: bool
    disable_fast_path: bool
    cache_dir: str
    disk_cache: bool
    log_level: str
    max_entries: int
    release_gil: bool

    @classmethod
    def from_env(cls) -> "Knobs":
        return cls(
            no_extensions=_env_bool("FASTDISPATCH_NO_EXTENSIONS"),
            disable_fast_path=_env_bool("FASTDISPATCH_DISABLE_FAST_PATH"),
            cache_dir=os.environ.get("FASTDISPATCH_CACHE_DIR") or _default_cache_dir(),
            disk_cache=_env_bool("FASTDISPATCH_DISK_CACHE", True),
            log_level=(os.environ.get("FASTDISPATCH_LOG") or "warning").lower(),
            max_entries=_env_int("FASTDISPATCH_MAX_ENTRIES", 4096),
            release_gil=_env_bool("FASTDISPATCH_RELEASE_GIL", False),
        )


knobs = Knobs.from_env()


@contextlib.contextmanager
def scope(**changes):
    """Temporarily set knobs: ``with knobs.scope(disable_fast_path=True): ...``."""
    names = {f.name for f in fields(Knobs)}
    unknown = set(changes) - names
    if unknown:
        raise TypeError(f"unknown knob(s) {sorted(unknown)}; known: {sorted(names)}")
    saved = {name: getattr(knobs, name) for name in changes}
    try:
        for name, value in changes.items():
            setattr(knobs, name, value)
        yield knobs
    finally:
        for name, value in saved.items():
            setattr(knobs, name, value)
