"""Multi-GPU: per-device binaries and keys; one process per GPU under torch.distributed.
Marked ``multi_gpu`` (skipped with fewer than two GPUs)."""
import os
import socket

import pytest
import torch

import fastdispatch
from fastdispatch.kernels.add import BLOCK, add2, add_grid

pytestmark = [pytest.mark.gpu, pytest.mark.multi_gpu]


def _kernel():
    return fastdispatch.triton_kernel(add2, grid=add_grid, constexprs={"BLOCK": BLOCK})


def test_same_kernel_on_two_devices_gets_per_device_entries():
    k = _kernel()
    results = {}
    for dev in (0, 1):
        x = torch.randn(5000, device=f"cuda:{dev}")
        y = torch.randn_like(x)
        out = torch.full_like(x, float("nan"))
        k(x, y, out, x.numel())
        results[dev] = (out, x + y)
    for dev, (out, expected) in results.items():
        torch.cuda.synchronize(dev)
        torch.testing.assert_close(out, expected)
    devices = sorted(e.info["device"] for e in k.published())
    assert devices == [0, 1]


def test_tensors_on_another_device_than_the_current_one():
    """The launch goes to the tensors' device (its context is pushed), whatever is current."""
    k = _kernel()
    x = torch.randn(3000, device="cuda:1")
    out = torch.full_like(x, float("nan"))
    with torch.cuda.device(0):
        k(x, x, out, x.numel())   # miss: builds on device 1
        out.fill_(float("nan"))
        k(x, x, out, x.numel())   # hit with device 0 current
    torch.cuda.synchronize(1)
    torch.testing.assert_close(out, x + x)


def _worker(rank, world, port, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("nccl", rank=rank, world_size=world)
    torch.cuda.set_device(rank)
    k = _kernel()
    x = torch.full((4096,), float(rank + 1), device="cuda")
    out = torch.empty_like(x)
    for _ in range(3):
        k(x, x, out, x.numel())
    torch.distributed.all_reduce(out)
    expected = float(sum(2 * (r + 1) for r in range(world)))
    ok = bool(torch.all(out == expected).item())
    with open(f"{result_path}.{rank}", "w") as fh:
        fh.write(f"{ok} {fastdispatch.stats()['hits']}")
    torch.distributed.destroy_process_group()


def test_one_process_per_gpu_under_torch_distributed(tmp_path):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    world = torch.cuda.device_count()
    mp.spawn(_worker, args=(world, port, str(tmp_path / "r")), nprocs=world, join=True)
    for rank in range(world):
        ok, hits = (tmp_path / f"r.{rank}").read_text().split()
        assert ok == "True" and int(hits) >= 2
