"""``fastdispatch.info()``: what is installed and live (versions, key builder, GPUs, cache)."""
from __future__ import annotations

import importlib.metadata
import platform


def _version(dist: str):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect() -> dict:
    """A dict of facts; ``python -m fastdispatch info`` prints it."""
    import torch

    import fastdispatch
    from fastdispatch import cache, keys
    from fastdispatch.knobs import knobs
    from fastdispatch.launchers import _driver_status

    active, why = keys.exchange_api_status()
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(i)
            gpus.append({"index": i, "name": torch.cuda.get_device_name(i), "capability": f"sm_{major}{minor}"})
    driver_ok, driver_why = _driver_status()
    return {
        "fastdispatch": fastdispatch.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "nvidia-cutlass-dsl": _version("nvidia-cutlass-dsl"),
        "apache-tvm-ffi": _version("apache-tvm-ffi"),
        "key_builder": keys.IMPLEMENTATION,
        "key_builder_reason": keys.reason,
        "dlpack_exchange_api": active,
        "dlpack_exchange_api_reason": why,
        "driver_launcher": driver_ok,
        "driver_launcher_reason": driver_why,
        "gpus": gpus,
        "cache_dir": str(cache.cache_root()),
        "cache_bytes": cache.size_bytes(),
        "disk_cache": knobs.disk_cache,
        "fast_path": not knobs.disable_fast_path,
    }
