"""``fastdispatch.scaled_mm``: fp8 GEMM with ``torch._scaled_mm``'s signature and semantics.

``out = (a @ b) * scales (+ bias) [* scale_result for fp8 out]``, ``a`` [M, K] row-major and ``b``
[K, N] column-major (row / column stride may exceed K), e4m3 or e5m2 operands (not both e5m2),
tensorwise, rowwise or DeepSeek-style blockwise fp32 scales (recipe inferred from their shapes
and strides, as torch does), ``out_dtype`` None = ``a.dtype``, ``out=`` resized as torch does.
Everything torch accepts on sm_90 is accepted; what it refuses raises torch's error
(``args.check_args``). Where each problem runs (``routing.route``, once per key): sm_90 -> our
CuTe DSL WGMMA kernel (``sm90``) for what ``sm90.kernel_supports`` says it computes,
sm_100/sm_103 -> the tcgen05 kernel (``sm100``, rowwise e4m3 -> bf16), everything else on a GPU
-> ``torch._scaled_mm`` (with the reason in the entry's info), CPU -> the fp32 reference, M, N
or K = 0 -> torch's early return.

Lifetimes: ``scaled_mm`` runs per call (a few attribute reads, then the
:class:`~fastdispatch.dispatcher.Dispatcher` hot path keyed on the arguments); checks and
routing per miss (``args``, ``routing``); compiled binaries per (arch, config, bias), per
process; the config holds the SM count, so each SM carveout gets its own binary.
"""
from __future__ import annotations

import dataclasses
import logging
import threading

import torch

from fastdispatch import _stats as stats, keys
from fastdispatch.dispatcher import MODE_CALL, Dispatcher
from fastdispatch.kernels.scaled_mm.args import check_args, recipe_of, reference
from fastdispatch.kernels.scaled_mm.routing import route, variant_for

__all__ = ["scaled_mm", "dispatcher", "check_args", "reference", "route", "variant_for"]

log = logging.getLogger("fastdispatch")

# Read per call (STYLE 6: bound once here). ~40 ns for the getter, measured with timeit on the
# CI CPU; the key then holds the value (a constexpr-role argument, like use_fast_accum), so a
# carveout set between two calls reaches the next miss and its own binary.
_get_carveout = torch._C._get_sm_carveout_experimental
_is_compiling = torch.compiler.is_compiling
_empty = torch.empty


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


def config_for(variant: str, m: int, n: int, k: int, fast_accum: bool = False, *, recipe: str = "rowwise",
               a_dtype=torch.float8_e4m3fn, b_dtype=torch.float8_e4m3fn, out_dtype=torch.bfloat16,
               carveout: int | None = None, scale_a=None):
    """The heuristic config of ``variant`` for an M x N x K problem; with an SM ``carveout``
    (``torch._C._set_sm_carveout_experimental``) the persistent grid leaves that many SMs free.
    ``scale_a`` (the call's tensor, its layout in the key): on sm90 its block scales come by
    TMA where its layout allows (`sm90.with_scale_a_layout`)."""
    if variant == "sm90":
        from fastdispatch.kernels.scaled_mm import sm90
        config = sm90.default_config(m, n, k, fast_accum=fast_accum, scales=recipe, a_dtype=a_dtype,
                                     b_dtype=b_dtype, out_dtype=out_dtype)
        if scale_a is not None:
            config = sm90.with_scale_a_layout(config, scale_a)
    else:
        from fastdispatch.kernels.scaled_mm import sm100
        config = sm100.default_config(m, n, k)
    if carveout:
        config = dataclasses.replace(config, num_sms=config.num_sms - carveout).resolved()
    return config


# -- per-call functions of an entry: (a, b, scale_a, scale_b, out, bias, scale_result, fast_accum,
# carveout) -> out. Chosen once per key, so any adaptation below costs only the keys that need it.
def _bias_fix(call):
    """``call`` with the bias passed as a compact [N] vector: a [1, N] bias as a view, a
    strided one as a contiguous copy (cuBLAS and our kernels read the bias as packed, so torch
    itself reads a strided bias's memory as if it were compact; this gives the math's result)."""
    def fixed(a, b, scale_a, scale_b, out, bias, scale_result, fast_accum, carveout):
        return call(a, b, scale_a, scale_b, out, bias.reshape(-1).contiguous(), scale_result, fast_accum, carveout)
    return fixed


def _kernel_call(raw, expand_scales: bool, has_bias: bool):
    """The per-call function of a CuTe kernel entry.

    The binaries take torch._scaled_mm's own layouts (b [K, N] column-major, scales [M, 1] /
    [1, N] or torch's blockwise scale tensors) and view them in-kernel, so those calls pass the
    caller's tensors untouched (no per-call reshapes). Tensorwise scales are expanded into small
    contiguous [M, 1] / [1, N] tensors. fast_accum and the carveout are baked into the compiled
    config (``raw``)."""
    if has_bias:
        def call(a, b, scale_a, scale_b, out, bias, scale_result, fast_accum, carveout):
            raw(a, b, scale_a, scale_b, out, bias)
            return out
    else:
        def call(a, b, scale_a, scale_b, out, bias, scale_result, fast_accum, carveout):
            raw(a, b, scale_a, scale_b, out)
            return out
    if not expand_scales:
        return call

    def call_tensorwise(a, b, scale_a, scale_b, out, bias, scale_result, fast_accum, carveout):
        m, n = out.shape
        return call(a, b, scale_a.reshape(1, 1).expand(m, 1).contiguous(),
                    scale_b.reshape(1, 1).expand(1, n).contiguous(), out, bias, scale_result, fast_accum, carveout)
    return call_tensorwise


def _call_torch(a, b, scale_a, scale_b, out, bias, scale_result, fast_accum, carveout):
    # The .out overload writes straight into `out` (no extra allocation and copy kernel); torch
    # reads the carveout itself.
    return torch._scaled_mm(a, b, scale_a, scale_b, bias=bias, scale_result=scale_result,
                            out_dtype=out.dtype, use_fast_accum=fast_accum, out=out)


def _call_reference(a, b, scale_a, scale_b, out, bias, scale_result, fast_accum, carveout):
    return out.copy_(reference(a, b, scale_a, scale_b, bias, scale_result, out.dtype))


def _call_empty(a, b, scale_a, scale_b, out, bias, scale_result, fast_accum, carveout):
    return out          # M or N is 0: nothing to write (torch returns early)


def _call_zero_k(a, b, scale_a, scale_b, out, bias, scale_result, fast_accum, carveout):
    return out.zero_()  # K is 0: torch returns zeros, without the bias


def _call_resized(a, b, scale_a, scale_b, out, bias, scale_result, fast_accum, carveout):
    # torch's resize_output (its check warns, in torch's words, when it resizes an out that had
    # elements), then the call again: the resized out has another key, so it reaches that key's
    # own entry.
    from torch._prims_common.wrappers import _resize_output_check

    shape = (a.shape[0], b.shape[1])
    if _resize_output_check(out, shape):
        out.resize_(shape)
    return dispatcher()(a, b, scale_a, scale_b, out, bias, scale_result, fast_accum, carveout)


class _UseTorch(Exception):
    """This problem goes to torch._scaled_mm (the reason is the message)."""


PARAMS = ["a", "b", "scale_a", "scale_b", "out", "bias", "scale_result", "use_fast_accum", "carveout"]


class _ScaledMmDispatcher(Dispatcher):
    """Key (shapes, strides, dtypes, alignment, device, fast_accum, carveout) -> the call."""

    def __init__(self):
        # use_fast_accum and the SM carveout are constexpr-role arguments: values in the key.
        super().__init__("scaled_mm", PARAMS,
                         roles=bytes([keys.ROLE_EXACT] * 7 + [keys.ROLE_CONSTEXPR] * 2))

    def validate(self, args):
        a, b, scale_a, scale_b, out, bias, scale_result, fast_accum, _ = args
        check_args(a, b, scale_a, scale_b, bias, scale_result, None, fast_accum, out)

    def make_entry(self, args, words):
        a, b, scale_a, scale_b, out, bias, scale_result, fast_accum, carveout = args
        (m, k), n = a.shape, b.shape[1]
        info = {}
        if tuple(out.shape) != (m, n):
            fn, variant = _call_resized, "resize_out"
        else:
            cap = torch.cuda.get_device_capability(a.device) if a.device.type == "cuda" else None
            variant, why = route(cap, a, b, scale_a, scale_b, bias, scale_result, out.dtype, out)
            if variant in ("sm90", "sm100"):
                try:
                    fn, info = self._cute_call(variant, a, b, scale_a, scale_b, out, bias, fast_accum, carveout)
                except _UseTorch as exc:
                    variant, why = "torch", str(exc)
            if variant == "empty":
                fn = _call_zero_k if k == 0 else _call_empty
            elif variant == "reference":
                fn = _call_reference
            elif variant == "torch":
                fn = _call_torch
                if why is not None:
                    info["fallback"] = why
                    stats.record_fallback(f"scaled_mm: {why}")
                    log.warning("fastdispatch: scaled_mm on %s uses torch._scaled_mm: %s",
                                variant_for(cap), why)
                variant = "torch._scaled_mm"
            if bias is not None and variant not in ("empty", "reference") and \
                    (bias.dim() != 1 or not bias.is_contiguous()):
                fn = _bias_fix(fn)
        info["variant"] = variant
        stats.record(f"scaled_mm_{variant}")
        return keys.Entry(words, MODE_CALL, fn=fn, slow=lambda args: fn(*args), info=info)

    @staticmethod
    def _cute_call(variant, a, b, scale_a, scale_b, out, bias, fast_accum, carveout):
        (m, k), n = a.shape, b.shape[1]
        recipe = recipe_of(a, b, scale_a, scale_b)
        try:
            config = config_for(variant, m, n, k, fast_accum, recipe=recipe, a_dtype=a.dtype,
                                b_dtype=b.dtype, out_dtype=out.dtype, carveout=carveout, scale_a=scale_a)
        except ValueError as exc:   # a carveout leaving fewer SMs than one cluster
            raise _UseTorch(f"SM carveout {carveout}: {exc}") from exc
        try:
            raw = _compiled(variant, config, bias is not None)
        except ImportError as exc:  # nvidia-cutlass-dsl missing: cuBLAS still serves
            raise _UseTorch(f"CuTe DSL unavailable ({exc})") from exc
        # The key holds the scales' shapes and strides, so this choice holds for every hit.
        call = _kernel_call(raw, recipe == "tensorwise", bias is not None)
        return call, {"config": config, "recipe": recipe}


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


def scaled_mm(a, b, scale_a, scale_b, bias=None, scale_result=None, out_dtype=None, use_fast_accum=False,
              *, out=None):
    """fp8 GEMM with ``torch._scaled_mm``'s signature and semantics (see the module docstring).

    ``use_fast_accum`` is torch's: False (default) adds each 128-deep k-tile into an fp32
    accumulator (cuBLAS's default precision); True lets the tensor cores accumulate all of K
    (faster, ~2-3e-3 relative error at K = 4-8k instead of ~1.7e-3). ``out_dtype`` None is
    ``a.dtype`` (fp8 out), or ``out.dtype`` when ``out`` is given, as in torch.

    Example (CPU runs the fp32 reference)::

        >>> import torch, fastdispatch
        >>> a = torch.randn(4, 32).to(torch.float8_e4m3fn)
        >>> b = torch.randn(16, 32).to(torch.float8_e4m3fn).t()
        >>> out = fastdispatch.scaled_mm(a, b, torch.ones(4, 1), torch.ones(1, 16), out_dtype=torch.bfloat16)
        >>> out.shape, out.dtype
        (torch.Size([4, 16]), torch.bfloat16)
    """
    if _is_compiling():
        return _traced(a, b, scale_a, scale_b, bias, scale_result, out_dtype, use_fast_accum, out)
    # Full argument checks run on the dispatcher's miss path only (``validate``): its key holds
    # every dtype, shape, stride, alignment and device check_args looks at, so a hit is a call
    # already checked. Per call here: the out allocation (or one `is not None`), the carveout
    # getter, and the two extra key arguments (scale_result, carveout).
    if out is None:
        try:
            out = _empty((a.shape[0], b.shape[1]), dtype=out_dtype or a.dtype, device=a.device)
        except (AttributeError, IndexError, TypeError):   # not 2-D tensors: torch's error
            check_args(a, b, scale_a, scale_b, bias, scale_result, out_dtype, use_fast_accum)
            raise
    elif out_dtype is not None and out_dtype != out.dtype:
        check_args(a, b, scale_a, scale_b, bias, scale_result, out_dtype, use_fast_accum, out)
    return dispatcher()(a, b, scale_a, scale_b, out, bias, scale_result, bool(use_fast_accum), _get_carveout())


def _traced(a, b, scale_a, scale_b, bias, scale_result, out_dtype, use_fast_accum, out):
    # What torch.compile records: the out= op below, writing a buffer allocated in the graph
    # (Inductor's own allocator; its reinplacing pass makes the mutation in place, no copy).
    if out is None:
        out = torch.empty((a.shape[0], b.shape[1]), dtype=out_dtype or a.dtype, device=a.device)
    elif out.shape != (a.shape[0], b.shape[1]):
        # Dynamo refuses resizing a graph input (and torch._scaled_mm(out=) of the wrong shape
        # fails under torch.compile too, in Inductor): say so, instead of a graph break.
        raise RuntimeError(f"scaled_mm under torch.compile: out has shape {tuple(out.shape)}, the result "
                           f"{(a.shape[0], b.shape[1])}; resize out before the compiled region")
    elif out_dtype is not None and out_dtype != out.dtype:
        check_args(a, b, scale_a, scale_b, bias, scale_result, out_dtype, use_fast_accum, out)
    torch.ops.fastdispatch.scaled_mm_out(a, b, scale_a, scale_b, bias, scale_result, bool(use_fast_accum), out)
    return out


# -- torch.compile: a typed out= op with a fake implementation ---------------------------------
# Registered with torch.library.Library rather than @custom_op: a compiled graph calls the op
# on every step, and custom_op's Python wrapper (autograd handling, schema-driven argument
# parsing) costs ~13 us per call against ~3 us here (measured on the CI CPU, torch 2.14). The
# schema is torch._scaled_mm's with the output as the one argument it writes (``Tensor(a!)``),
# so Inductor allocates it with its own allocator (``empty_strided_cuda``, C++) and checks no
# returned tensor, where a functional op paid a Python torch.empty in its implementation and
# Inductor's size/alignment asserts on the result (measured on the H200: ``bench/compile_probe.py``).
# Inputs are read only, so nothing is copied. The full argument checks run once, while tracing,
# in the fake implementation; at run time the dispatcher's miss path checks every new key.
_LIB = torch.library.Library("fastdispatch", "FRAGMENT")
_LIB.define("scaled_mm_out(Tensor a, Tensor b, Tensor scale_a, Tensor scale_b, Tensor? bias, "
            "Tensor? scale_result, bool use_fast_accum, Tensor(a!) out) -> ()")


def _scaled_mm_out_op(a, b, scale_a, scale_b, bias, scale_result, use_fast_accum, out):
    dispatcher()(a, b, scale_a, scale_b, out, bias, scale_result, bool(use_fast_accum), _get_carveout())


_LIB.impl("scaled_mm_out", _scaled_mm_out_op, "CompositeExplicitAutograd")


@torch.library.register_fake("fastdispatch::scaled_mm_out", lib=_LIB)
def _(a, b, scale_a, scale_b, bias, scale_result, use_fast_accum, out):
    tensors = [t for t in (a, b, scale_a, scale_b, bias, scale_result, out) if t is not None]
    if any(isinstance(s, torch.SymInt) for t in tensors for s in (*t.shape, *t.stride())):
        # Symbolic sizes: torch's own fake semantics, on the fakes as they are.
        check_args(a, b, scale_a, scale_b, bias, scale_result, out.dtype, use_fast_accum, out, on_meta=False)
    else:
        # Concrete sizes: the same checks as an eager miss (meta copies: sm_90's rules, also
        # for CPU tensors), outside the fake mode that would turn the copies into fakes.
        from torch._subclasses.fake_tensor import unset_fake_temporarily
        with unset_fake_temporarily():
            check_args(a, b, scale_a, scale_b, bias, scale_result, out.dtype, use_fast_accum, out)
