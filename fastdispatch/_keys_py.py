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
T_NARGS, T_TENSOR, T_INT, T_FLOAT, T_BOOL, T_NONE, T_CONST, T_OBJ, T_KNOBS, T_ALIGN = range(1, 11)
# Entry modes.
MODE_NULL, MODE_DRIVER, MODE_CALL, MODE_SLOW = range(4)
# Argument roles (one byte per positional argument).
ROLE_RUNTIME, ROLE_CONSTEXPR = 0, 1

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
        words += [s & MASK64 for s in shape]
        words += [s & MASK64 for s in strides]
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
            return -1
    elif tp is float:
        words.append(T_FLOAT)
        slots.append(struct.unpack("<Q", struct.pack("<d", obj))[0])
        return -1
    elif tp is bool:
        words.append(T_BOOL)
        slots.append(int(obj))
        return -1
    elif obj is None:
        words.append(T_NONE)
        slots.append(0)
        return -1
    # Anything else (numpy scalars, huge ints, tensor descriptors...): exact by identity of its
    # interned value when hashable, else by type; the slow path validates or raises.
    try:
        ident = intern_id(("obj", tp, obj))
    except TypeError:
        ident = intern_id(("unhashable", tp, id(obj)))
    words.append(T_OBJ | (ident << 8))
    slots.append(0)
    return -1


def knob_word(rt, comp) -> int:
    """Triton's codegen-affecting runtime knobs as one word (debug, instrumentation mode)."""
    return T_KNOBS | (int(bool(rt.debug)) << 8) | (intern_id(comp.instrumentation_mode) << 16)


def build_words(args: tuple, roles: bytes, rt=None, comp=None):
    """(words, slots, device_id) of a call, the layout documented in ``_keys.pyx``."""
    words = [T_NARGS | (len(args) << 8)]
    slots: list = []
    bits: list = []
    device_id = -1
    roles = roles if len(roles) == len(args) else bytes(len(args))
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


class Entry:
    """One published specialization (the twin of ``_keys.Entry``)."""

    __slots__ = ("key_words", "mode", "fn", "slow", "info", "hits")

    def __init__(self, words, mode, *, plan=None, grid=None, fn=None, slow=None,
                 globals_guard=(), watch_hooks=False, info=None):
        if mode == MODE_CALL and fn is None:
            raise ValueError("MODE_CALL entry needs fn")
        if mode != MODE_NULL and slow is None:
            raise ValueError("entry needs a slow launch")
        self.key_words = tuple(words)
        self.mode, self.fn, self.slow, self.info = mode, fn, slow, info
        self.hits = 0

    def launch(self, kernel, args):
        """Launch this entry for ``args`` (the miss's own call; not counted as a hit)."""
        result = self.run(args)
        self.hits -= 1
        return result

    def run(self, args):
        self.hits += 1
        if self.mode == MODE_CALL:
            return self.fn(*args)
        if self.mode in (MODE_DRIVER, MODE_SLOW):
            return self.slow(args)
        return None


class FastKernel:
    """Key -> entry table for one wrapped kernel (the twin of ``_keys.FastKernel``)."""

    def __init__(self, roles: bytes, on_miss, knobs=None):
        self._roles = roles
        self.on_miss = on_miss
        self._knobs = knobs if knobs is not None else (None, None)
        self._table: dict = {}
        self._lock = threading.Lock()

    @property
    def roles(self):
        return self._roles

    @property
    def num_entries(self):
        return len(self._table)

    def key_of(self, *args):
        return tuple(build_words(args, self._roles, *self._knobs)[0])

    def publish(self, entry) -> bool:
        with self._lock:
            if entry.key_words in self._table:
                return False
            self._table[entry.key_words] = entry
            return True

    def lookup(self, words):
        return self._table.get(tuple(words))

    def published(self):
        return list(self._table.values())

    def clear(self):
        self._table = {}

    def __call__(self, *args, **kwargs):
        if kwargs or len(args) != len(self._roles):
            return self.on_miss(self, args, kwargs or None)
        entry = self._table.get(self.key_of(*args))
        if entry is None:
            return self.on_miss(self, args, None)
        return entry.run(args)
