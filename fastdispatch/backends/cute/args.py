"""CuTe DSL backend, per key: the argument classes a compile key holds (`TensorClass`: dtype, rank,
16-byte alignment, layout; runtime scalars by class) and the fake arguments one size-generic
binary is compiled for; what the wrapped host function's signature says (constexprs, tensors,
the stream parameter) and the hash of its source."""
from __future__ import annotations

import hashlib
import inspect
import typing
from dataclasses import dataclass

import torch


def _torch_to_cutlass():
    import cutlass

    names = {"float32": "Float32", "float16": "Float16", "bfloat16": "BFloat16",
             "float64": "Float64", "int8": "Int8", "int16": "Int16", "int32": "Int32",
             "int64": "Int64", "uint8": "Uint8", "uint16": "Uint16", "uint32": "Uint32",
             "uint64": "Uint64", "bool": "Boolean", "float8_e4m3fn": "Float8E4M3FN",
             "float8_e5m2": "Float8E5M2"}
    return {getattr(torch, t): getattr(cutlass, c) for t, c in names.items()
            if hasattr(torch, t) and hasattr(cutlass, c)}


_DTYPES: dict = {}


def _row_major_strides(shape) -> tuple:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= s
    return tuple(reversed(strides))


@dataclass(frozen=True)
class TensorClass:
    """What a size-generic binary depends on for one tensor argument."""

    dtype: torch.dtype
    rank: int
    aligned16: bool      # data_ptr % 16 == 0 (the fast key's alignment bit)
    compact: bool        # strides are exactly the row-major ones of its shape
    wide: bool           # some size needs 64 bits

    @classmethod
    def of(cls, t: torch.Tensor) -> "TensorClass":
        try:
            aligned = t.data_ptr() % 16 == 0
        except Exception:  # meta / FakeTensor: no storage, treat as aligned (precompile specs)
            aligned = True
        shape = tuple(t.shape)
        return cls(t.dtype, len(shape), aligned, tuple(t.stride()) == _row_major_strides(shape),
                   any(s >= 2 ** 31 for s in shape) or t.numel() >= 2 ** 31)

    def text(self) -> str:
        return (f"T({str(self.dtype).replace('torch.', '')},r{self.rank},"
                f"{'a16' if self.aligned16 else 'a' + str(_elem_bytes(self.dtype))},"
                f"{'compact' if self.compact else 'strided'}{',i64' if self.wide else ''})")

    def fake(self):
        """A fake tensor of this class with one fresh symbolic size per mode."""
        import cutlass.cute as cute
        from cutlass.cute.runtime import make_fake_compact_tensor, make_fake_tensor

        if not _DTYPES:
            _DTYPES.update(_torch_to_cutlass())
        element = _DTYPES.get(self.dtype)
        if element is None:
            raise ValueError(f"dtype {self.dtype} has no CuTe DSL element type here")
        sym = cute.sym_int64 if self.wide else cute.sym_int32
        shape = tuple(sym() for _ in range(self.rank))
        align = 16 if self.aligned16 else _elem_bytes(self.dtype)
        if self.compact:
            order = tuple(range(self.rank - 1, -1, -1))  # last mode fastest (row-major)
            return make_fake_compact_tensor(element, shape, stride_order=order, assumed_align=align)
        strides = tuple(cute.sym_int64() for _ in range(self.rank))
        return make_fake_tensor(element, shape, strides, assumed_align=align)


def _elem_bytes(dtype: torch.dtype) -> int:
    return max(1, torch.empty((), dtype=dtype).element_size())


def _scalar(value, annotation):
    """(class text, compile-time value) of a runtime scalar: always a *dynamic* DSL value, so a
    binary never bakes in a value the fast key does not hold (ints are keyed by class only)."""
    import cutlass

    if isinstance(annotation, type) and issubclass(annotation, cutlass.Numeric):
        return f"S({annotation.__name__})", annotation(value)
    if isinstance(value, bool):
        return "S(Boolean)", cutlass.Boolean(value)
    if isinstance(value, int):
        if -(2 ** 31) <= value < 2 ** 31:
            return "S(Int32)", cutlass.Int32(value)
        return "S(Int64)", cutlass.Int64(value)
    return "S(Float32)", cutlass.Float32(value)


def _annotations(fn) -> dict:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        return dict(getattr(fn, "__annotations__", {}))


def _is_constexpr(annotation) -> bool:
    import cutlass

    return annotation is cutlass.Constexpr or typing.get_origin(annotation) is cutlass.Constexpr


def _is_tensor_annotation(annotation) -> bool:
    import cutlass.cute as cute

    return isinstance(annotation, type) and issubclass(annotation, cute.Tensor)


def _find_stream(params, hints):
    for p in params:
        ann = hints.get(p.name)
        if getattr(ann, "__name__", "") == "CUstream" or p.name == "stream":
            return p.name
    return None


def _source_hash(fn) -> str:
    """SHA-256 of the function's source and of its whole module's (the ``@cute.kernel`` it
    launches usually lives next to it; helpers imported from elsewhere are not covered)."""
    h = hashlib.sha256()
    for obj in (fn, inspect.getmodule(fn)):
        try:
            h.update(inspect.getsource(obj).encode())
        except (OSError, TypeError):
            h.update(repr(getattr(fn, "__code__", fn)).encode())
    return h.hexdigest()[:32]


def _first_cuda_device(args) -> int:
    for a in args:
        if isinstance(a, torch.Tensor) and a.device.type == "cuda":
            return a.device.index if a.device.index is not None else torch.cuda.current_device()
    raise ValueError("no CUDA tensor among the arguments")  # validate() reports this first
