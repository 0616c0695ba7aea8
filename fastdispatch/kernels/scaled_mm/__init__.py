"""fp8 rowwise-scaled GEMM (``scaled_mm``): CuTe DSL kernels for Hopper (``sm90``, WGMMA) and
Blackwell (``sm100``, tcgen05), the dispatch and checks in ``api``, PTX helpers in ``_ptx``."""
from fastdispatch.kernels.scaled_mm.api import check_args, reference, scaled_mm, variant_for

__all__ = ["scaled_mm", "check_args", "reference", "variant_for"]
