"""Autotune decisions: which config an autotuned kernel runs for a tuning key.

Lifetime: per process (memory) and on disk (``cache.store("autotune", ...)``: verified, atomic).
A decision is keyed by the GPU's name and compute capability, the Triton toolchain, the
kernel's source hash, the autotuner's config list and Triton's tuning key (the ``key``
arguments' values and every tensor's dtype), so a second process never benchmarks, and a
decision never crosses to another GPU, toolchain, kernel version or config list. Decisions
can be exported to a JSON file (tune once on the serving GPU) and imported elsewhere
(``precompile`` ships them with the binaries). Under ``torch.distributed``, rank 0's decision
is broadcast so every rank runs the same config (ranks that disagree would give different
numerics); the other ranks never benchmark.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading

import torch

import triton

from fastdispatch import cache

log = logging.getLogger("fastdispatch")

FORMAT = "fastdispatch-autotune-v1"
_memory: dict = {}            # (scope, tuning key repr) -> config index
_lock = threading.Lock()
_gpu_names: dict = {}


def gpu_identity(device: int | None) -> str:
    """'<name>|sm_<cc>' of CUDA device ``device`` (queried once), or 'cpu' without a GPU."""
    if device is None or not torch.cuda.is_available():
        return "cpu"
    found = _gpu_names.get(device)
    if found is None:
        major, minor = torch.cuda.get_device_capability(device)
        found = _gpu_names[device] = f"{torch.cuda.get_device_name(device)}|sm_{major}{minor}"
    return found


def _source_hash(base_fn) -> str:
    key = getattr(base_fn, "cache_key", None)   # JITFunction: source and its dependencies
    if key:
        return key
    code = getattr(getattr(base_fn, "fn", None), "__code__", None)   # InterpretedFunction
    return hashlib.sha256(code.co_code if code is not None else b"").hexdigest()


def _callable_name(fn) -> str:
    return "" if fn is None else f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"


def scope_of(layer, base_fn, gpu: str) -> str:
    """Everything a decision depends on but the tuning key: GPU (name and capability),
    Triton's version, the kernel's source, and the autotuner itself (configs with their
    pre_hooks, key, reset/restore lists, pruning). Triton's version rather than the install's
    file identity, so a decision file moves to another machine with the same Triton."""
    configs = "|".join(f"{c}|{_callable_name(c.pre_hook)}" for c in layer.configs)
    tuner = (f"key={list(layer.keys)}|reset={layer.reset_to_zero}|restore={layer.restore_value}|"
             f"prune={_callable_name(layer.early_config_prune)}|model={_callable_name(layer.perf_model)}|"
             f"top_k={layer.configs_top_k}")
    configs += "|" + tuner
    source = _source_hash(base_fn)
    name = getattr(base_fn, "__name__", "kernel")
    return (f"{FORMAT}|gpu={gpu}|triton={triton.__version__}|fn={name}:{source}|"
            f"configs={hashlib.sha256(configs.encode()).hexdigest()}")


def _key_text(scope: str, tuning_key: tuple) -> str:
    return f"{scope}|key={tuning_key!r}"


def lookup(scope: str, tuning_key: tuple) -> int | None:
    """The config index decided for ``tuning_key``: memory, then disk; None if never tuned."""
    memo = (scope, repr(tuning_key))
    index = _memory.get(memo)
    if index is not None:
        return index
    files = cache.load("autotune", _key_text(scope, tuning_key))
    if files is None:
        return None
    try:
        index = int(json.loads(files["decision.json"])["config"])
    except (KeyError, ValueError, TypeError):
        return None
    with _lock:
        _memory[memo] = index
    return index


def record(scope: str, tuning_key: tuple, index: int, *, persist: bool = True) -> None:
    """Remember (and store on disk) that ``tuning_key`` runs config ``index``."""
    with _lock:
        _memory[(scope, repr(tuning_key))] = index
    if persist:
        cache.store("autotune", _key_text(scope, tuning_key),
                    {"decision.json": json.dumps({"config": index, "key": repr(tuning_key)}).encode()})


def export(path: str) -> int:
    """Write every decision of this process to ``path`` (JSON); returns how many."""
    with _lock:
        rows = [{"scope": s, "key": k, "config": i} for (s, k), i in sorted(_memory.items())]
    with open(path, "w") as fh:
        json.dump({"format": FORMAT, "decisions": rows}, fh, indent=1)
    return len(rows)


def import_file(path: str, *, persist: bool = True) -> int:
    """Load decisions from an :func:`export` file (memory, and the disk cache when
    ``persist``); rows of another format are rejected whole. Returns how many."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a fastdispatch autotune file (not JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a fastdispatch autotune file (format {FORMAT!r} expected)")
    rows = data.get("decisions", [])
    for row in rows:
        if not isinstance(row.get("config"), int):
            raise ValueError(f"{path}: decision without an integer config: {row!r}")
    for row in rows:
        with _lock:
            _memory[(row["scope"], row["key"])] = row["config"]
        if persist:
            cache.store("autotune", f"{row['scope']}|key={row['key']}",
                        {"decision.json": json.dumps({"config": row["config"], "key": row["key"]}).encode()})
    return len(rows)


def clear_memory() -> None:
    """Forget in-memory decisions (the disk cache stays)."""
    with _lock:
        _memory.clear()


def distributed_group():
    """The default process group when torch.distributed runs more than one rank, else None."""
    dist = getattr(torch, "distributed", None)
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist if dist.get_world_size() > 1 else None


def broadcast_index(dist, index: int | None) -> int:
    """Rank 0's config index, on every rank (a collective: every rank must reach it)."""
    box = [index]
    dist.broadcast_object_list(box, src=0)
    if box[0] is None:
        raise RuntimeError("fastdispatch: rank 0 sent no autotune decision")
    return int(box[0])
