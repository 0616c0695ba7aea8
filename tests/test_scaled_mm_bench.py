"""The scaled_mm bench's kernel-time attribution (`bench.kernel_times_us`), run on CPU ops: the
GPU path is the same code with CUDA kernels and CUPTI durations."""
import pytest

torch = pytest.importorskip("torch")

from fastdispatch.kernels.scaled_mm.bench import kernel_times_us  # noqa: E402

x = torch.randn(64, 64)
big = torch.randn(1 << 16)
sink = torch.empty(())


def flush():
    torch.amax(big, dim=0, out=sink)


def test_distinct_ops_are_attributed_per_function_and_flush_is_left_out():
    mm, total = kernel_times_us([lambda: torch.mm(x, x), lambda: torch.sum(x)], flush, 4, device="cpu")
    assert len(mm["aten::mm"]) == 4 and "aten::sum" not in mm
    assert len(total["aten::sum"]) == 4 and "aten::mm" not in total
    assert not any("amax" in name for name in {**mm, **total})


def test_functions_sharing_an_op_are_profiled_one_after_the_other():
    first, second = kernel_times_us([lambda: torch.mm(x, x), lambda: torch.mm(x, x.t())], flush, 3, device="cpu")
    # Interleaved they could not be told apart; each still gets exactly its own calls.
    assert len(first["aten::mm"]) == 3 and len(second["aten::mm"]) == 3
    assert all(t > 0 for t in first["aten::mm"] + second["aten::mm"])
