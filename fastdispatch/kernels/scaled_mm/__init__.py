"""fp8 scaled GEMM (``scaled_mm``, ``torch._scaled_mm``'s contract): CuTe DSL kernels for Hopper
(``sm90``, WGMMA) and Blackwell (``sm100``, tcgen05); argument checks, recipe inference and the
fp32 reference in ``args`` (per miss), routing in ``routing`` (per miss), the entry points and
dispatcher in ``api`` (per call); PTX helpers in ``_ptx``."""
from fastdispatch.kernels.scaled_mm.api import check_args, reference, route, scaled_mm, variant_for

__all__ = ["scaled_mm", "check_args", "reference", "route", "variant_for"]
