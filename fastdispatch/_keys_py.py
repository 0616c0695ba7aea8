"""Pure-Python twin of ``_keys.pyx``: the same key words, slots and table semantics.

Lifetime: per call. Used when the extension is not built (or ``FASTDISPATCH_NO_EXTENSIONS=1``)
and, from the Cython path, for any argument C cannot read (tensor subclasses, FakeTensor,
exotic scalars). Every word layout here is the one ``_keys.pyx`` documents; tests check that
both produce identical words for the same arguments.

Entries here never launch through the driver (no C launcher in Python): a MODE_DRIVER entry
runs its slow launch (Triton's own ``CompiledKernel.run``).
"""
from __future__ import annotations

import threading

from fastdispatch._interned import intern_id

IMPLEMENTATION = "python"

# Word tags (low byte of a header word); equal to _keys.pyx's enum.
T_NARGS, T_TENSOR, T_INT, T_FLOAT, T_BOOL, T_NONE, T_CONST, T_OBJ, T_KNOBS, T_ALIGN, T_LAYOUT = range(1, 12)
# Entry modes.
MODE_NULL, MODE_DRIVER, MODE_CALL, MODE_SLOW = range(4)
# Argument roles (one byte per parameter): what of an argument the key holds (_keys.pyx docstring).
ROLE_CLASS, ROLE_CONSTEXPR, ROLE_EXACT, ROLE_LAYOUT, ROLE_VALUE = range(5)
ROLE_RUNTIME = ROLE_CLASS   # the old name


class _NoDefault:
    """A required parameter in a FastKernel's defaults."""

    def __repr__(self):
        return "NO_DEFAULT"


NO_DEFAULT = _NoDefault()

MASK64 = (1 << 64) - 1
_DL_CPU, _DL_CUDA = 1, 2

_tensor_type = None
_dtype_words: dict = {}


def configure(tensor_type, param_type, api_capsule, raw_stream_fn):
    """Same signature as the Cython module's; the twin only needs torch's tensor type."""
    global _tensor_type
    _tensor_type = tensor_type
    _dtype_words.clear()
    _dtype_words.update(_dlpack_dtype_table())


def set_triton_hooks(hookchain_type, runtime_knobs, compilation_knobs):
    """Unused by the twin (its entries always take Triton's own launcher)."""


def exchange_api_status():
    """The twin never uses the C exchange API."""
    return False, "pure-Python key builder"


def _dlpack_dtype_table() -> dict:
    """torch dtype -> DLPack (code | bits << 8 | lanes << 16), as torch's exporter writes it."""
    import torch

    codes = {  # DLPack codes: 0 int, 1 uint, 2 float, 4 bfloat, 5 complex, 6 bool, 10.. fp8
        "int8": (0, 8), "int16": (0, 16), "int32": (0, 32), "int64": (0, 64),
        "uint8": (1, 8), "uint16": (1, 16), "uint32": (1, 32), "uint64": (1, 64),
        "float16": (2, 16), "float32": (2, 32), "float64": (2, 64), "bfloat16": (4, 16),
        "complex64": (5, 64), "complex128": (5, 128), "bool": (6, 8),
        "float8_e4m3fn": (10, 8), "float8_e4m3fnuz": (11, 8), "float8_e5m2": (12, 8),
        "float8_e5m2fnuz": (13, 8), "float8_e8m0fnu": (14, 8),
    }
    table = {}
    for name, (code, bits) in codes.items():
        dtype = getattr(torch, name, None)
        if dtype is not None:
            table[dtype] = code | (bits << 8) | (1 << 16)
    return table


def _dtype_word(dtype) -> int:
    word = _dtype_words.get(dtype)
    if word is None:  # a dtype DLPack cannot express: still exact, via its interned id
        word = 0xFF | (intern_id(("dtype", str(dtype))) << 8)
    return word


def _device_word(device) -> int:
    if device.type == "cuda":
        return _DL_CUDA | ((device.index or 0) << 32)
    if device.type == "cpu":
        return _DL_CPU
    return 0xFF | (intern_id(("device", str(device))) << 8)


def _int_class(value: int):
    """(class, slot) with Triton's int specialization, or None beyond 64 bits."""
    if -(1 << 63) <= value < (1 << 63):
        if value == 1:
            return 1, 1
        if -(1 << 31) <= value < (1 << 31):
            return (2 if value % 16 == 0 else 3), value & MASK64
        return (4 if value % 16 == 0 else 5), value & MASK64
    if value < (1 << 64) and value > 0:
        return (6 if value % 16 == 0 else 7), value
    return None


def arg_words(obj, role: int, words: list, slots: list, tensor_bits: list) -> int:
    """Append the words of one argument; returns the CUDA device index it names, or -1."""
    import struct

    tp = type(obj)
    if role == ROLE_CONSTEXPR:
        if tp is bool:
            words += (T_CONST | (1 << 8), int(obj))
        elif tp is int and _int_class(obj) is not None:
            words += (T_CONST | (2 << 8), _int_class(obj)[1])
        elif tp is float:
            words += (T_CONST | (3 << 8), struct.unpack("<Q", struct.pack("<d", obj))[0])
        elif obj is None:
            words += (T_CONST | (4 << 8), 0)
        else:
            words += (T_CONST | (5 << 8), intern_id(obj))
        slots.append(0)
        return -1
    if _tensor_type is not None and isinstance(obj, _tensor_type):
        shape, strides = tuple(obj.shape), tuple(obj.stride())
        words += (T_TENSOR | (len(shape) << 8), _dtype_word(obj.dtype), _device_word(obj.device))
        if role in (ROLE_EXACT, ROLE_VALUE):
            words += [s & MASK64 for s in shape]
            words += [s & MASK64 for s in strides]
        elif role == ROLE_LAYOUT:
            words.append(T_LAYOUT | (int(_compact(shape, strides)) << 8) | (int(_wide(shape)) << 9))
        try:
            data = obj.data_ptr()
        except Exception:  # FakeTensor / meta: no storage; never launched directly
            data = 0
        slots.append(data)
        tensor_bits.append(data % 16 == 0)
        return obj.device.index if obj.device.type == "cuda" else -1
    if tp is int:
        cls = _int_class(obj)
        if cls is not None:
            words.append(T_INT | (cls[0] << 8))
            slots.append(cls[1])
            if role == ROLE_VALUE:
                words.append(cls[1])
            return -1
    elif tp is float:
        words.append(T_FLOAT)
        slots.append(struct.unpack("<Q", struct.pack("<d", obj))[0])
        if role == ROLE_VALUE:
            words.append(slots[-1])
        return -1
    elif tp is bool:
        words.append(T_BOOL)
        slots.append(int(obj))
        if role == ROLE_VALUE:
            words.append(int(obj))
        return -1
    elif obj is None:
        words.append(T_NONE)
        slots.append(0)
        return -1
    # A host TensorDescriptor (a fresh object per call, unhashable): what Triton specializes a
    # ``tensordesc`` parameter on -- the base's dtype and rank, the block shape, the padding.
    if tp.__name__ == "TensorDescriptor" and hasattr(obj, "block_shape") and hasattr(obj, "base"):
        base = obj.base
        ident = intern_id(("tensordesc", str(base.dtype), base.dim(), tuple(obj.block_shape),
                           str(getattr(obj, "padding", ""))))
        words.append(T_OBJ | (ident << 8))
        slots.append(0)
        return base.device.index if base.device.type == "cuda" else -1
    # Anything else (numpy scalars, huge ints, ...): exact by its interned value when hashable,
    # else by type alone (interning per object would grow without bound); the slow path
    # validates or raises, and a backend must not publish entries for such arguments.
    try:
        ident = intern_id(("obj", tp, obj))
    except TypeError:
        ident = intern_id(("unhashable", tp))
    words.append(T_OBJ | (ident << 8))
    slots.append(0)
    return -1


def _compact(shape, strides) -> bool:
    expect = 1
    for size, stride in zip(reversed(shape), reversed(strides)):
        if size != 1 and stride != expect:
            return False
        expect *= size
    return True


def _wide(shape) -> bool:
    numel = 1
    for size in shape:
        numel *= size
    return any(size >= 2 ** 31 for size in shape) or numel >= 2 ** 31


def knob_word(rt, comp) -> int:
    """Triton's codegen-affecting runtime knobs as one word (debug, instrumentation mode)."""
    return T_KNOBS | (int(bool(rt.debug)) << 8) | (intern_id(comp.instrumentation_mode) << 16)


def build_words(args: tuple, roles: bytes, rt=None, comp=None):
    """(words, slots, device_id) of a call, the layout documented in ``_keys.pyx``. Parameters
    past the end of ``args`` (omitted keyword-only options) count as None constexprs."""
    roles = roles if len(roles) >= len(args) else bytes(len(args))
    words = [T_NARGS | (len(roles) << 8)]
    slots: list = []
    bits: list = []
    device_id = -1
    args = tuple(args) + (None,) * (len(roles) - len(args))
    for index, (obj, role) in enumerate(zip(args, roles)):
        try:
            dev = arg_words(obj, role, words, slots, bits)
        except TypeError as exc:
            raise TypeError(f"argument {index}: constexpr values must be hashable, got "
                            f"{type(obj).__name__}") from exc
        if device_id < 0 and dev is not None and dev >= 0:
            device_id = dev
    if rt is not None:
        words.append(knob_word(rt, comp))
    words.append(T_ALIGN | (len(bits) << 8))
    for start in range(0, len(bits), 64):
        words.append(sum(1 << i for i, bit in enumerate(bits[start:start + 64]) if bit))
    return words, slots, device_id


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & MASK64


def hash_words(words) -> int:
    """The table's hash of a word sequence (identical to the C version: four lanes, word i
    feeding lane i % 4 except the tail past the last multiple of 4, which goes to lane 0)."""
    n = len(words)
    lanes = [0x9E3779B97F4A7C15 ^ n, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x85EBCA77C2B2AE63]
    body = n - n % 4
    for i, w in enumerate(words):
        lane = i % 4 if i < body else 0
        x = lanes[lane] ^ ((w * 0xC2B2AE3D27D4EB4F) & MASK64)
        lanes[lane] = _rotl(x, 31) * 0x9E3779B185EBCA87 & MASK64
    h = (_rotl(lanes[0], 1) + _rotl(lanes[1], 7) + _rotl(lanes[2], 12) + _rotl(lanes[3], 18)) & MASK64
    h ^= h >> 33
    h = (h * 0x165667B19E3779F9) & MASK64
    h ^= h >> 29
    return h


def adopt_class(kernel, cls) -> None:
    """Move ``kernel`` to ``cls``, a subclass of its type that adds no state (the C twin also
    installs its slots on ``cls``)."""
    if not issubclass(cls, type(kernel)) or cls.__basicsize__ != type(kernel).__basicsize__:
        raise TypeError(f"adopt_class: {cls.__name__} is not a stateless subclass of {type(kernel).__name__}")
    kernel.__class__ = cls


class Entry:
    """One published specialization (the twin of ``_keys.Entry``)."""

    __slots__ = ("key_words", "mode", "fn", "slow", "info", "hits", "grid", "grid_fn",
                 "grid_slow", "grid_programs", "pre_call", "result_index", "allocs",
                 "__weakref__")

    def __init__(self, words, mode, *, plan=None, grid=None, grid_fn=None, grid_slow=None,
                 fn=None, slow=None, globals_guard=(), watch_hooks=False, pre_call=None, info=None,
                 result_index=-1, allocs=None):
        if mode == MODE_CALL and fn is None:
            raise ValueError("MODE_CALL entry needs fn")
        if mode != MODE_NULL and slow is None:
            raise ValueError("entry needs a slow launch")
        self.key_words = tuple(words)
        self.mode, self.fn, self.slow, self.info = mode, fn, slow, info
        self.grid, self.grid_fn, self.grid_slow, self.pre_call = grid, grid_fn, grid_slow, pre_call
        self.grid_programs: dict = {}
        self.result_index = int(result_index)   # C's direct launch returns args[i]; slow the same
        self.allocs = tuple(allocs) if allocs else None   # C allocates them; slow does its own
        self.hits = 0

    @property
    def grid_program(self):
        from fastdispatch.grid_program import Program
        return self.grid if isinstance(self.grid, Program) else None

    def set_grid_program(self, key, program):
        """Same as ``_keys.Entry.set_grid_program`` (the twin runs grids in Python anyway)."""
        self.grid_programs[id(key)] = (key, program)

    def launch(self, kernel, args, grid=None):
        """Launch this entry for ``args`` (the miss's own call; not counted as a hit)."""
        try:
            return self.run(args, grid)
        finally:
            self.hits -= 1

    def run(self, args, grid=None):
        self.hits += 1
        if self.pre_call is not None:
            self.pre_call(args)
        if self.mode == MODE_CALL:
            return self.fn(*args)
        if self.mode in (MODE_DRIVER, MODE_SLOW):
            return self.slow(args) if grid is None else self.slow(args, grid)
        return None


class BoundLaunch:
    """``kernel[grid]`` (the twin of ``_keys.BoundLaunch``)."""

    __slots__ = ("kernel", "grid")

    def __init__(self, kernel, grid):
        self.kernel, self.grid = kernel, grid

    def __call__(self, *args, **kwargs):
        return self.kernel._call_kw(args, kwargs, self.grid)


class FastKernel:
    """Key -> entry table for one wrapped kernel (the twin of ``_keys.FastKernel``): same
    roles, binding and bound; eviction drops the oldest entry (insertion order)."""

    def __init__(self, roles: bytes, on_miss, knobs=None, *, names=None, defaults=None,
                 n_positional=None, max_entries=4096):
        self.on_miss = on_miss
        self._knobs = knobs if knobs is not None else (None, None)
        self._names = tuple(names) if names is not None else None
        self._defaults = tuple(defaults) if defaults is not None else None
        self._n_positional = len(roles) if n_positional is None else n_positional
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self._max_entries = max_entries
        self._table: dict = {}
        self._lock = threading.Lock()
        self.evictions = 0
        self.evicted_hits = 0
        self.set_roles(roles)

    def set_roles(self, roles: bytes):
        """Replace the roles and drop every entry."""
        self._roles = roles
        self._table = {}

    @property
    def roles(self):
        return self._roles

    @property
    def num_entries(self):
        return len(self._table)

    @property
    def max_entries(self):
        return self._max_entries

    def key_of(self, *args):
        return tuple(build_words(args, self._roles, *self._knobs)[0])

    def publish(self, entry) -> bool:
        from fastdispatch import _stats

        with self._lock:
            if entry.key_words in self._table:
                return False
            while len(self._table) >= self._max_entries:
                victim = self._table.pop(next(iter(self._table)))
                self.evictions += 1
                self.evicted_hits += victim.hits
                _stats.record("evictions")
            self._table[entry.key_words] = entry
            return True

    def lookup(self, words):
        return self._table.get(tuple(words))

    def published(self):
        return list(self._table.values())

    def clear(self):
        self._table = {}

    def __call__(self, *args, **kwargs):
        return self._call_kw(args, kwargs, None)

    def __getitem__(self, grid):
        return BoundLaunch(self, grid)

    def _call_kw(self, args, kwargs, grid):
        n = len(self._roles)
        if kwargs or not self._n_positional <= len(args) <= n:
            bound = self._bind(args, kwargs)
            if bound is None:
                return self.on_miss(self, args, kwargs or None, grid)
            args = bound
        entry = self._table.get(self.key_of(*args))
        if entry is None:
            return self.on_miss(self, args, None, grid)
        return entry.run(args, grid)

    def _bind(self, args, kwargs):
        if self._names is None or len(args) > self._n_positional:
            return None
        bound = list(args)
        consumed = 0
        for i in range(len(args), len(self._roles)):
            name = self._names[i]
            if kwargs and name in kwargs:
                bound.append(kwargs[name])
                consumed += 1
            elif self._defaults[i] is NO_DEFAULT:
                return None
            else:
                bound.append(self._defaults[i])
        if kwargs and consumed != len(kwargs):
            return None
        return tuple(bound)
