"""``fastdispatch.scaled_mm``: fp8 (e4m3) GEMM with rowwise or tensorwise scales.

Semantics are ``torch._scaled_mm``'s: ``out = (a @ b) * scale_a * scale_b (+ bias)`` with ``a``
row-major [M, K], ``b`` column-major [K, N] (K-major, as ``torch._scaled_mm`` requires), fp32
scales either rowwise ([M, 1] and [1, N]) or tensorwise (one element each), optional bf16 bias
[N], bf16 output. Dispatch per device: sm_90 -> the CuTe DSL WGMMA kernel (``sm90``),
sm_100/sm_103 -> the CuTe DSL tcgen05 kernel (``sm100``), other CUDA GPUs and output dtypes the
kernels lack -> ``torch._scaled_mm``, CPU -> an fp32 reference.

Lifetimes: ``scaled_mm`` runs per call (argument checks are cheap attribute reads; the kernel
call goes through a :class:`~fastdispatch.dispatcher.Dispatcher` hot path keyed on the
arguments); compiled binaries are per (arch, config, bias) and per process.
"""
from __future__ import annotations

import logging
import threading

import torch

from fastdispatch import _stats as stats, keys
from fastdispatch.dispatcher import MODE_CALL, Dispatcher

log = logging.getLogger("fastdispatch")

FP8 = torch.float8_e4m3fn
KERNEL_OUT_DTYPES = (torch.bfloat16,)


# -- argument checks (per call; raise before anything is allocated or cached) -----------------
def check_args(a, b, scale_a, scale_b, bias, out_dtype, out) -> tuple[int, int, int, bool]:
    """Validate ``scaled_mm`` arguments; returns (M, N, K, rowwise). Errors name the argument."""
    for name, t in (("a", a), ("b", b), ("scale_a", scale_a), ("scale_b", scale_b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"scaled_mm(): '{name}' must be a torch.Tensor, got {type(t).__name__}")
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"scaled_mm(): 'a' and 'b' must be 2-D, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != FP8 or b.dtype != FP8:
        raise ValueError(f"scaled_mm(): 'a' and 'b' must be torch.float8_e4m3fn, got {a.dtype} and {b.dtype}")
    m, k = a.shape
    k2, n = b.shape
    if k != k2:
        raise ValueError(f"scaled_mm(): inner dimensions differ: 'a' is {m}x{k}, 'b' is {k2}x{n}")
    if m < 1:
        raise ValueError(f"scaled_mm(): M must be >= 1, got {m}")
    if k % 16 or n % 16:
        raise ValueError(f"scaled_mm(): N and K must be multiples of 16 (fp8 TMA/MMA granularity), "
                         f"got N={n}, K={k}")
    if a.stride() != (k, 1):
        raise ValueError(f"scaled_mm(): 'a' must be row-major contiguous (stride ({k}, 1)), got "
                         f"stride {a.stride()}; use a.contiguous()")
    if b.stride() != (1, k):
        raise ValueError(f"scaled_mm(): 'b' must be column-major (stride (1, {k})), as "
                         f"torch._scaled_mm requires; got stride {b.stride()}; pass b_rowmajor.t() "
                         f"of a contiguous [N, K] tensor")
    for name, s in (("scale_a", scale_a), ("scale_b", scale_b)):
        if s.dtype != torch.float32:
            raise ValueError(f"scaled_mm(): '{name}' must be float32, got {s.dtype}")
    if scale_a.numel() == 1 and scale_b.numel() == 1:
        rowwise = False
    elif tuple(scale_a.shape) == (m, 1) and tuple(scale_b.shape) == (1, n):
        rowwise = True
        if not (scale_a.is_contiguous() and scale_b.is_contiguous()):
            raise ValueError("scaled_mm(): rowwise scales must be contiguous")
    else:
        raise ValueError(f"scaled_mm(): scales must be tensorwise (one element each) or rowwise "
                         f"(scale_a [{m}, 1], scale_b [1, {n}]); got {tuple(scale_a.shape)} and "
                         f"{tuple(scale_b.shape)}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.dtype != torch.bfloat16 or tuple(bias.shape) != (n,):
            raise ValueError(f"scaled_mm(): 'bias' must be a bfloat16 tensor of shape [{n}], got "
                             f"{getattr(bias, 'dtype', type(bias).__name__)} {tuple(getattr(bias, 'shape', ()))}")
        if not bias.is_contiguous():
            raise ValueError("scaled_mm(): 'bias' must be contiguous")
    if out_dtype not in (torch.bfloat16, torch.float16, torch.float32):
        raise ValueError(f"scaled_mm(): out_dtype must be bfloat16, float16 or float32, got {out_dtype}")
    if out is not None:
        if not isinstance(out, torch.Tensor) or out.dtype != out_dtype or tuple(out.shape) != (m, n) \
                or out.stride() != (n, 1):
            raise ValueError(f"scaled_mm(): 'out' must be a contiguous {out_dtype} tensor of shape "
                             f"[{m}, {n}]")
    devices = {t.device for t in (a, b, scale_a, scale_b, bias, out) if isinstance(t, torch.Tensor)}
    if len(devices) != 1:
        raise ValueError(f"scaled_mm(): all tensors must be on one device, got {sorted(map(str, devices))}")
    return m, n, k, rowwise


def reference(a, b, scale_a, scale_b, bias=None, out_dtype=torch.bfloat16):
    """fp32 reference: dequantize, multiply in fp32, scale, add bias, cast (any device)."""
    acc = a.to(torch.float32) @ b.to(torch.float32)
    acc = acc * scale_a.to(torch.float32).reshape(-1, 1) * scale_b.to(torch.float32).reshape(1, -1) \
        if scale_a.numel() > 1 or scale_b.numel() > 1 else acc * (scale_a.float() * scale_b.float())
    if bias is not None:
        acc = acc + bias.to(torch.float32)
    return acc.to(out_dtype)


# -- kernel selection (per key) ---------------------------------------------------------------
def variant_for(capability: tuple[int, int] | None) -> str:
    """The kernel family for a device capability (None = CPU)."""
    if capability is None:
        return "reference"
    if capability == (9, 0):
        return "sm90"
    if capability[0] == 10 and capability[1] in (0, 3):
        return "sm100"
    return "torch"


_binaries: dict = {}
_compile_lock = threading.Lock()


def _compiled(variant: str, config, has_bias: bool):
    """The raw TVM-FFI callable of ``variant`` for ``config`` (compiled once per process)."""
    key = (variant, config, has_bias)
    fn = _binaries.get(key)
    if fn is None:
        with _compile_lock:
            fn = _binaries.get(key)
            if fn is None:
                if variant == "sm90":
                    from fastdispatch.kernels.scaled_mm import sm90 as module
                    compiled = module.compile_sm90(config, has_bias=has_bias)
                else:
                    from fastdispatch.kernels.scaled_mm import sm100 as module
                    compiled = module.compile_sm100(config, has_bias=has_bias)
                stats.record("compiles")
                raw = getattr(compiled, "__tvm_ffi_object__", None)
                fn = _binaries[key] = raw() if callable(raw) else compiled
    return fn


def config_for(variant: str, m: int, n: int, k: int, fast_accum: bool = False):
    """The heuristic config of ``variant`` for an M x N x K problem."""
    if variant == "sm90":
        from fastdispatch.kernels.scaled_mm import sm90
        return sm90.default_config(m, n, k, fast_accum=fast_accum)
    from fastdispatch.kernels.scaled_mm import sm100
    return sm100.default_config(m, n, k)


def _kernel_call(raw, rowwise_shaped: bool, has_bias: bool):
    """The per-call function of a CuTe kernel entry (chosen once per key).

    The binaries take torch._scaled_mm's own layouts (b [K, N] column-major, scales [M, 1] /
    [1, N]) and view them in-kernel, so rowwise calls pass the caller's tensors untouched (no
    per-call reshapes). Tensorwise scales are expanded into small contiguous [M, 1] / [1, N]
    tensors. fast_accum is already baked into the compiled config (``raw``)."""
    if has_bias:
        def call(a, b, scale_a, scale_b, out, bias, fast_accum):
            raw(a, b, scale_a, scale_b, out, bias)
            return out
    else:
        def call(a, b, scale_a, scale_b, out, bias, fast_accum):
            raw(a, b, scale_a, scale_b, out)
            return out
    if rowwise_shaped:
        return call

    def call_tensorwise(a, b, scale_a, scale_b, out, bias, fast_accum):
        m, n = out.shape
        return call(a, b, scale_a.reshape(1, 1).expand(m, 1).contiguous(),
                    scale_b.reshape(1, 1).expand(1, n).contiguous(), out, bias, fast_accum)
    return call_tensorwise


def _call_torch(a, b, scale_a, scale_b, out, bias, fast_accum):
    # The .out overload writes straight into `out` (no extra allocation and copy kernel).
    return torch._scaled_mm(a, b, scale_a, scale_b, bias=bias, out_dtype=out.dtype,
                            use_fast_accum=fast_accum, out=out)


def _call_reference(a, b, scale_a, scale_b, out, bias, fast_accum):
    return out.copy_(reference(a, b, scale_a, scale_b, bias, out.dtype))


class _UseTorch(Exception):
    """This problem goes to torch._scaled_mm (the reason is the message)."""


class _ScaledMmDispatcher(Dispatcher):
    """Key (shapes, strides, dtypes, alignment, device) -> the kernel call for that problem."""

    def __init__(self):
        # use_fast_accum is a constexpr-role argument: its value is part of the key.
        super().__init__("scaled_mm", ["a", "b", "scale_a", "scale_b", "out", "bias", "use_fast_accum"],
                         roles=bytes([keys.ROLE_EXACT] * 6 + [keys.ROLE_CONSTEXPR]))

    def validate(self, args):
        a, b, scale_a, scale_b, out, bias, _ = args
        out_dtype = out.dtype if isinstance(out, torch.Tensor) else torch.bfloat16
        check_args(a, b, scale_a, scale_b, bias, out_dtype, out)

    def make_entry(self, args, words):
        a, b, scale_a, scale_b, out, bias, fast_accum = args
        cap = torch.cuda.get_device_capability(a.device) if a.device.type == "cuda" else None
        variant = variant_for(cap)
        if variant == "reference":
            fn, info = _call_reference, {"variant": "reference"}
        elif variant == "torch":
            fn, info = _call_torch, {"variant": "torch._scaled_mm"}
        else:
            try:
                fn, info = self._cute_call(variant, a, b, scale_a, scale_b, out, bias, fast_accum)
            except _UseTorch as why:
                fn, info = _call_torch, {"variant": "torch._scaled_mm", "fallback": str(why)}
                stats.record_fallback(f"scaled_mm: {why}")
                log.warning("fastdispatch: scaled_mm on %s uses torch._scaled_mm: %s", variant, why)
        stats.record(f"scaled_mm_{info['variant']}")
        return keys.Entry(words, MODE_CALL, fn=fn, slow=lambda args: fn(*args), info=info)

    @staticmethod
    def _cute_call(variant, a, b, scale_a, scale_b, out, bias, fast_accum):
        (m, k), n = a.shape, b.shape[1]
        if out.dtype not in KERNEL_OUT_DTYPES:
            raise _UseTorch(f"out_dtype {out.dtype} (the CuTe kernels write bf16)")
        try:
            config = config_for(variant, m, n, k, fast_accum)
            raw = _compiled(variant, config, bias is not None)
        except ImportError as exc:   # nvidia-cutlass-dsl missing: cuBLAS still serves
            raise _UseTorch(f"CuTe DSL unavailable ({exc})") from exc
        # The key holds the scales' shapes and strides, so this choice holds for every hit.
        rowwise_shaped = tuple(scale_a.shape) == (m, 1) and tuple(scale_b.shape) == (1, n) \
            and scale_a.stride(0) == 1 and scale_b.stride(1) == 1
        return _kernel_call(raw, rowwise_shaped, bias is not None), {"variant": variant, "config": config}


_dispatcher = None
_dispatcher_lock = threading.Lock()


def dispatcher() -> _ScaledMmDispatcher:
    """The process-wide scaled_mm dispatcher."""
    global _dispatcher
    if _dispatcher is None:
        with _dispatcher_lock:
            if _dispatcher is None:
                _dispatcher = _ScaledMmDispatcher()
    return _dispatcher


def scaled_mm(a, b, scale_a, scale_b, *, out_dtype=torch.bfloat16, bias=None, out=None,
              use_fast_accum=False):
    """fp8 e4m3 GEMM, ``torch._scaled_mm`` semantics (see the module docstring).

    ``use_fast_accum`` is torch's: False (default) adds each 128-deep k-tile into an fp32
    accumulator (cuBLAS's default precision); True lets the tensor cores accumulate all of K
    (faster, ~2-3e-3 relative error at K = 4-8k instead of ~1.7e-3).

    Example (CPU runs the fp32 reference)::

        >>> import torch, fastdispatch
        >>> a = torch.randn(4, 32).to(torch.float8_e4m3fn)
        >>> b = torch.randn(16, 32).to(torch.float8_e4m3fn).t()
        >>> out = fastdispatch.scaled_mm(a, b, torch.ones(4, 1), torch.ones(1, 16))
        >>> out.shape, out.dtype
        (torch.Size([4, 16]), torch.bfloat16)
    """
    if torch.compiler.is_compiling():
        result = torch.ops.fastdispatch.scaled_mm(a, b, scale_a, scale_b, bias, out_dtype, use_fast_accum)
        return result if out is None else out.copy_(result)
    # Full argument checks run on the dispatcher's miss path only (``validate``): its key holds
    # every dtype, shape, stride, alignment and device check_args looks at, so a hit is a call
    # already checked (~2 us of attribute reads saved per call). out_dtype is not in the key.
    if out is None:
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() == 2 == b.dim()):
            check_args(a, b, scale_a, scale_b, bias, out_dtype, out)   # raises the clear error
        out = torch.empty((a.shape[0], b.shape[1]), dtype=out_dtype, device=a.device)
    elif out.dtype != out_dtype:
        check_args(a, b, scale_a, scale_b, bias, out_dtype, out)       # raises the clear error
    return dispatcher()(a, b, scale_a, scale_b, out, bias, bool(use_fast_accum))


# -- torch.compile: a typed op with a fake implementation ---------------------------------------
# Registered with torch.library.Library rather than @custom_op: a compiled graph calls the op
# on every step, and custom_op's Python wrapper (autograd handling, schema-driven argument
# parsing) costs ~13 us per call against ~3 us here (measured on the CI CPU, torch 2.14). The
# op writes nothing it is given (it returns a new tensor), so Inductor copies no input. The
# full argument checks run once, while tracing, in the fake implementation; at run time the
# dispatcher's miss path checks every new key (its key holds what check_args looks at).
_LIB = torch.library.Library("fastdispatch", "FRAGMENT")
_LIB.define("scaled_mm(Tensor a, Tensor b, Tensor scale_a, Tensor scale_b, Tensor? bias, "
            "ScalarType out_dtype, bool use_fast_accum) -> Tensor")


def _scaled_mm_op(a, b, scale_a, scale_b, bias, out_dtype, use_fast_accum):
    out = torch.empty((a.shape[0], b.shape[1]), dtype=out_dtype, device=a.device)
    return dispatcher()(a, b, scale_a, scale_b, out, bias, bool(use_fast_accum))


_LIB.impl("scaled_mm", _scaled_mm_op, "CompositeExplicitAutograd")


@torch.library.register_fake("fastdispatch::scaled_mm", lib=_LIB)
def _(a, b, scale_a, scale_b, bias, out_dtype, use_fast_accum):
    check_args(a, b, scale_a, scale_b, bias, out_dtype, None)   # the clear error, at trace time
    return a.new_empty((a.shape[0], b.shape[1]), dtype=out_dtype)
