# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The per-call hot path: specialization key -> table lookup -> launch.

Lifetime: per call. Everything here runs on every kernel call, so nothing in it reads a Python
attribute of a tensor when torch exposes the DLPack C exchange API (torch >= 2.11): each tensor
is read into a stack ``DLTensor`` by ``DLPackDLTensorFromPyObjectNoSync``. Any argument this
module cannot read in C (tensor subclasses, FakeTensor, unusual scalars, older torch) is read by
the pure-Python twin ``_keys_py.arg_words``, which produces identical words.

Key words (uint64), in order; ``_keys_py`` documents and mirrors the same layout. What an
argument contributes depends on its role (one byte per parameter, chosen by the backend for
what its binaries depend on; see ``keys.py``):
  [N_ARGS | nargs<<8]
  per argument, role CLASS (Triton: a binary depends on dtype and alignment only):
                tensor  [TENSOR | ndim<<8, dtype(code|bits<<8|lanes<<16), dev_type|dev_id<<32]
                int     [INT | class<<8]          (class: ==1, i32/i64/u64 x divisible-by-16)
                float   [FLOAT]   bool [BOOL]   None [NONE]
                other   [OBJ | intern_id<<8]      (the slow path validates and raises)
  role EXACT:   tensor  class words + shape..., strides...; scalars as CLASS
  role LAYOUT:  tensor  class words + [LAYOUT | compact<<8 | wide<<9] (CuTe's size-generic class)
  role VALUE:   tensor  as EXACT; int/float/bool class word + [value bits] (autotune keys,
                heuristics inputs: exact values)
  role CONSTEXPR: [CONST | sub<<8, value]
  [KNOBS | debug<<8 | instrumentation_id<<16]    (Triton kernels only)
  [ALIGN | count<<8, mask...]                     one bit per tensor: data % 16 == 0
Trailing keyword-only parameters (per-call launch options) left out of a call key as None.
The words are hashed in C and looked up in an open-addressing table; a hit is verified by
memcmp of the words, so the key is exact (collisions only cost a miss). The table is bounded
(``max_entries``): past it, a CLOCK sweep evicts an entry not hit since the last sweep.
"""
from cpython.object cimport PyObject, PyTypeObject, Py_TYPE
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM, PyTuple_New, PyTuple_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.dict cimport PyDict_GetItem, PyDict_Size
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.list cimport PyList_GET_SIZE
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from libc.stdint cimport uint64_t, int64_t, uint8_t, uint16_t, int32_t, uint32_t
from libc.string cimport memcmp, memcpy, memset
from libc.stdlib cimport malloc, free, calloc

from fastdispatch.launchers._driver cimport (
    LaunchPlan, launch_plan, driver_available, error_string, fd_CUstream, fd_CUfunction,
    fd_CUcontext, MAX_PARAMS, MAX_ATTRS, PARAM_PTR, PARAM_I32, PARAM_I64, PARAM_U8, PARAM_F32,
    PARAM_F64, PARAM_NULL)

from fastdispatch import _keys_py
from fastdispatch._interned import INTERNED, intern_id
from fastdispatch._grid cimport ArgView, GridProgram, eval_grid

cdef extern from *:
    """
    typedef struct { uint32_t major; uint32_t minor; } fd_DLPackVersion;
    typedef struct { int32_t device_type; int32_t device_id; } fd_DLDevice;
    typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } fd_DLDataType;
    typedef struct {
        void* data; fd_DLDevice device; int32_t ndim; fd_DLDataType dtype;
        int64_t* shape; int64_t* strides; uint64_t byte_offset;
    } fd_DLTensor;
    typedef struct fd_DLPackExchangeAPIHeader {
        fd_DLPackVersion version; struct fd_DLPackExchangeAPIHeader* prev_api;
    } fd_DLPackExchangeAPIHeader;
    typedef int (*fd_DLTensorFromPyObjectNoSync)(void* py_object, fd_DLTensor* out);
    typedef int (*fd_CurrentWorkStream)(int32_t device_type, int32_t device_id, void** out);
    typedef struct {
        fd_DLPackExchangeAPIHeader header;
        void* managed_tensor_allocator;
        void* managed_tensor_from_py_object_no_sync;
        void* managed_tensor_to_py_object_no_sync;
        fd_DLTensorFromPyObjectNoSync dltensor_from_py_object_no_sync;
        fd_CurrentWorkStream current_work_stream;
    } fd_DLPackExchangeAPI;
    static inline uint64_t fd_rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
    """
    ctypedef struct fd_DLPackVersion:
        uint32_t major
        uint32_t minor
    ctypedef struct fd_DLDevice:
        int32_t device_type
        int32_t device_id
    ctypedef struct fd_DLDataType:
        uint8_t code
        uint8_t bits
        uint16_t lanes
    ctypedef struct fd_DLTensor:
        void* data
        fd_DLDevice device
        int32_t ndim
        fd_DLDataType dtype
        int64_t* shape
        int64_t* strides
        uint64_t byte_offset
    ctypedef struct fd_DLPackExchangeAPIHeader:
        fd_DLPackVersion version
    ctypedef int (*fd_DLTensorFromPyObjectNoSync)(void* py_object, fd_DLTensor* out) noexcept nogil
    ctypedef int (*fd_CurrentWorkStream)(int32_t device_type, int32_t device_id, void** out) noexcept nogil
    ctypedef struct fd_DLPackExchangeAPI:
        fd_DLPackExchangeAPIHeader header
        fd_DLTensorFromPyObjectNoSync dltensor_from_py_object_no_sync
        fd_CurrentWorkStream current_work_stream
    uint64_t fd_rotl(uint64_t x, int r) nogil

# Word tags: the low byte of a header word. Kept equal to _keys_py's constants (tested).
cdef extern from *:
    """
    static void fd_ensure_tp_call(PyObject* type, void* fn) {
        PyTypeObject* tp = (PyTypeObject*)type;
        if (tp->tp_call != (ternaryfunc)fn) {
            tp->tp_call = (ternaryfunc)fn;
            PyType_Modified(tp);
        }
    }
    static void fd_ensure_mp_subscript(PyObject* type, void* fn) {
        PyTypeObject* tp = (PyTypeObject*)type;
        if (tp->tp_as_mapping != NULL && tp->tp_as_mapping->mp_subscript != (binaryfunc)fn) {
            tp->tp_as_mapping->mp_subscript = (binaryfunc)fn;
            PyType_Modified(tp);
        }
    }
    """
    void fd_ensure_tp_call(object type, void* fn)
    void fd_ensure_mp_subscript(object type, void* fn)

cdef extern from "Python.h":
    bint PyFunction_Check(object o)
    PyObject* PyFunction_GET_CODE(object o)   # borrowed

cdef enum:
    # Word tags (low byte of a header word) and entry modes: equal to _keys_py's (tested).
    T_NARGS = 1
    T_TENSOR = 2
    T_INT = 3
    T_FLOAT = 4
    T_BOOL = 5
    T_NONE = 6
    T_CONST = 7
    T_OBJ = 8
    T_KNOBS = 9
    T_ALIGN = 10
    T_LAYOUT = 11
    ROLE_CLASS = 0
    ROLE_CONSTEXPR = 1
    ROLE_EXACT = 2
    ROLE_LAYOUT = 3
    ROLE_VALUE = 4
    MODE_NULL = 0
    MODE_DRIVER = 1
    MODE_CALL = 2
    MODE_SLOW = 3

# Python-visible copies of the enums above (tests check them against _keys_py's constants).
WORD_TAGS = {"T_NARGS": T_NARGS, "T_TENSOR": T_TENSOR, "T_INT": T_INT, "T_FLOAT": T_FLOAT,
             "T_BOOL": T_BOOL, "T_NONE": T_NONE, "T_CONST": T_CONST, "T_OBJ": T_OBJ,
             "T_KNOBS": T_KNOBS, "T_ALIGN": T_ALIGN, "T_LAYOUT": T_LAYOUT}
ROLES = {"ROLE_CLASS": ROLE_CLASS, "ROLE_CONSTEXPR": ROLE_CONSTEXPR, "ROLE_EXACT": ROLE_EXACT,
         "ROLE_LAYOUT": ROLE_LAYOUT, "ROLE_VALUE": ROLE_VALUE}
ENTRY_MODES = {"MODE_NULL": MODE_NULL, "MODE_DRIVER": MODE_DRIVER, "MODE_CALL": MODE_CALL,
               "MODE_SLOW": MODE_SLOW}

cdef enum:
    K_DLCUDA = 2

# Injected once by configure() (no module-global lookups of torch objects per call).
cdef fd_DLPackExchangeAPI* _api = NULL
cdef PyTypeObject* _tensor_type = NULL
cdef PyTypeObject* _param_type = NULL
cdef object _raw_stream = None           # torch._C._cuda_getCurrentRawStream, when no exchange API
cdef object _hookchain_type = None
cdef object _interned_get = INTERNED.get
cdef bint _release_gil = False           # around cuLaunchKernelEx; set_release_gil()
cdef object _stats_record = None         # fastdispatch._stats.record, for evictions
_exchange_api_reason = "not configured"

IMPLEMENTATION = "cython"
NO_DEFAULT = _keys_py.NO_DEFAULT   # a required parameter in FastKernel's defaults


def configure(tensor_type, param_type, api_capsule, raw_stream_fn):
    """Inject torch's types, its DLPack exchange capsule (or None) and the raw-stream getter."""
    global _api, _tensor_type, _param_type, _raw_stream, _exchange_api_reason
    _tensor_type = <PyTypeObject*>tensor_type
    _param_type = <PyTypeObject*>param_type
    _raw_stream = raw_stream_fn
    _api = NULL
    if api_capsule is None:
        _exchange_api_reason = "torch has no __dlpack_c_exchange_api__"
    elif not PyCapsule_IsValid(api_capsule, b"dlpack_exchange_api"):
        _exchange_api_reason = "__dlpack_c_exchange_api__ is not a 'dlpack_exchange_api' capsule"
    else:
        candidate = <fd_DLPackExchangeAPI*>PyCapsule_GetPointer(api_capsule, b"dlpack_exchange_api")
        if candidate.header.version.major != 1:
            _exchange_api_reason = f"DLPack exchange API major version {candidate.header.version.major} != 1"
        elif candidate.dltensor_from_py_object_no_sync == NULL:
            _exchange_api_reason = "exchange API has no DLTensorFromPyObjectNoSync"
        else:
            _api = candidate
            _exchange_api_reason = (f"DLPack exchange API v{candidate.header.version.major}."
                                    f"{candidate.header.version.minor}")


def set_triton_hooks(hookchain_type, runtime_knobs, compilation_knobs):
    """Triton's HookChain class, launch-hook chains and knob objects (injected by the Triton
    backend, so fastdispatch imports without Triton)."""
    global _hookchain_type, _rt_dict, _comp_dict, _enter_calls, _exit_calls
    global _rt_debug_default, _comp_mode_default
    _hookchain_type = hookchain_type
    _rt_dict = runtime_knobs.__dict__
    _comp_dict = compilation_knobs.__dict__
    _rt_debug_default = getattr(type(runtime_knobs), "debug", False)
    _comp_mode_default = getattr(type(compilation_knobs), "instrumentation_mode", "")
    cls = type(runtime_knobs)
    _enter_calls = getattr(getattr(cls, "launch_enter_hook", None), "calls", None)
    _exit_calls = getattr(getattr(cls, "launch_exit_hook", None), "calls", None)
    if type(_enter_calls) is not list or type(_exit_calls) is not list:
        _enter_calls = _exit_calls = None   # not HookChains: always take the general check


def set_release_gil(bint release):
    """Whether hits release the GIL around ``cuLaunchKernelEx`` (``knobs.release_gil``)."""
    global _release_gil
    _release_gil = release


def set_stats_recorder(record):
    """``_stats.record`` (evictions are counted on the slow path that publishes)."""
    global _stats_record
    _stats_record = record


def exchange_api_status():
    """(active, reason): whether tensors are read in C through torch's DLPack exchange API."""
    return _api != NULL, _exchange_api_reason


cdef inline uint64_t _hash_words(const uint64_t* w, Py_ssize_t n) noexcept nogil:
    # xxhash64-style rounds over four independent lanes (word i feeds lane i % 4), so the
    # multiply chains overlap. Hash + lookup at 16 tensors (~85 words): 161 ns with one chain
    # on a fast lent H100 host, 139 ns with four lanes on the slower host of 2026-11-23 (not
    # the same host: no clean ratio). Kept identical to _keys_py.hash_words.
    cdef uint64_t h0 = 0x9E3779B97F4A7C15ULL ^ <uint64_t>n
    cdef uint64_t h1 = 0xC2B2AE3D27D4EB4FULL
    cdef uint64_t h2 = 0x165667B19E3779F9ULL
    cdef uint64_t h3 = 0x85EBCA77C2B2AE63ULL
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        h0 = fd_rotl(h0 ^ (w[i] * 0xC2B2AE3D27D4EB4FULL), 31) * 0x9E3779B185EBCA87ULL
        h1 = fd_rotl(h1 ^ (w[i + 1] * 0xC2B2AE3D27D4EB4FULL), 31) * 0x9E3779B185EBCA87ULL
        h2 = fd_rotl(h2 ^ (w[i + 2] * 0xC2B2AE3D27D4EB4FULL), 31) * 0x9E3779B185EBCA87ULL
        h3 = fd_rotl(h3 ^ (w[i + 3] * 0xC2B2AE3D27D4EB4FULL), 31) * 0x9E3779B185EBCA87ULL
        i += 4
    while i < n:   # the tail goes to lane 0
        h0 = fd_rotl(h0 ^ (w[i] * 0xC2B2AE3D27D4EB4FULL), 31) * 0x9E3779B185EBCA87ULL
        i += 1
    cdef uint64_t h = fd_rotl(h0, 1) + fd_rotl(h1, 7) + fd_rotl(h2, 12) + fd_rotl(h3, 18)
    h ^= h >> 33
    h *= 0x165667B19E3779F9ULL
    h ^= h >> 29
    return h


def hash_words(words):
    """Hash of a word sequence, as the table computes it (for tests)."""
    cdef Py_ssize_t n = len(words), i
    cdef uint64_t* buf = <uint64_t*>malloc(max(n, 1) * sizeof(uint64_t))
    try:
        for i in range(n):
            buf[i] = <uint64_t>words[i]
        return _hash_words(buf, n)
    finally:
        free(buf)


cdef inline int _int_class(object obj, uint64_t* slot, uint64_t* word) except -1:
    """Triton's int specialization: ==1, i32 / i64 / u64 by range, divisible by 16 or not."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(obj, &overflow)
    cdef unsigned long long u
    cdef int cls
    if overflow == 0:
        if v == -1 and PyErr_Occurred():
            return -1
        slot[0] = <uint64_t>v
        if v == 1:
            cls = 1
        elif -2147483648 <= v <= 2147483647:
            cls = 2 if v % 16 == 0 else 3
        else:
            cls = 4 if v % 16 == 0 else 5
    elif overflow > 0:
        # Cython declares PyLong_AsUnsignedLongLong `except? -1`, so it raises on its own:
        # catch the OverflowError here (2**64 - 1 itself returns -1 without an error).
        try:
            u = PyLong_AsUnsignedLongLong(obj)
        except OverflowError:
            return 0   # beyond u64: not a fast argument
        slot[0] = u
        cls = 6 if u % 16 == 0 else 7
    else:
        return 0
    word[0] = T_INT | (<uint64_t>cls << 8)
    return 1


# The parts, by what they hold (each file says what it is):
include "_keys_entry.pxi"
include "_keys_table.pxi"
include "_keys_probe.pxi"
include "_keys_guards.pxi"

cdef inline object _grid_key(object grid):
    # Per-call grids are usually a fresh lambda per call with the same code: key on the code.
    if PyFunction_Check(grid):
        return <object>PyFunction_GET_CODE(grid)   # borrowed: <object> takes a reference
    return grid


# FastKernel's tp_call and mp_subscript, set directly on each (sub)type when its first instance
# is made: Cython's `def __call__(self, *args, **kwargs)` allocates an empty kwargs dict on every
# call (~40 ns), and heap subclasses (Dispatcher) would re-derive their slots from their Python
# `__call__` / `__getitem__`, which stay in the class dict for TorchDynamo to trace (that
# `__getitem__` takes an unused *args so CPython's BINARY_SUBSCR specialization, which calls a
# plain two-argument Python `__getitem__` directly, never bypasses this slot: dispatcher.py).
# The signatures are CPython's ternaryfunc and binaryfunc; kwds may be NULL.
cdef object _fastkernel_tp_call(object self, object args, PyObject* kwds):
    return (<FastKernel>self)._call_kw(<tuple>args, kwds, None)


cdef object _fastkernel_mp_subscript(object self, object grid):
    # ``k[grid](...)`` with the same grid object as last time reuses its BoundLaunch (~50 ns)
    cdef FastKernel kernel = <FastKernel>self
    cdef BoundLaunch bound = kernel.last_bound
    if bound is not None and bound.grid is grid:
        return bound
    bound = BoundLaunch.__new__(BoundLaunch)
    bound.kernel = kernel
    bound.grid = grid
    kernel.last_bound = bound
    return bound


def adopt_class(FastKernel kernel, type cls):
    """Move ``kernel`` to ``cls``, a subclass of its type that adds no state (the Triton backend's
    per-kernel class of traced methods), with the C slots above installed on ``cls`` first:
    a class made by ``type()`` derives its slots from the Python methods in its dict."""
    if not issubclass(cls, type(kernel)) or cls.__basicsize__ != type(kernel).__basicsize__:
        raise TypeError(f"adopt_class: {cls.__name__} is not a stateless subclass of {type(kernel).__name__}")
    fd_ensure_tp_call(cls, <void*>_fastkernel_tp_call)
    fd_ensure_mp_subscript(cls, <void*>_fastkernel_mp_subscript)
    kernel.__class__ = cls


cdef object _boundlaunch_tp_call(object self, object args, PyObject* kwds):
    cdef BoundLaunch bound = <BoundLaunch>self
    return bound.kernel._call_kw(<tuple>args, kwds, bound.grid)


cdef class BoundLaunch:
    """``kernel[grid]``: Triton's calling convention; calling it launches with that grid (a
    tuple of 1-3 ints, or a callable of META) on the same hot path as ``kernel(*args)``."""

    def __cinit__(self):
        fd_ensure_tp_call(type(self), <void*>_boundlaunch_tp_call)

    def __call__(self, *args, **kwargs):   # replaced by the C slot above
        return self.kernel._call_kw(args, <PyObject*>kwargs if kwargs else NULL, self.grid)

    @property
    def grid(self):
        return self.grid

    @property
    def kernel(self):
        return self.kernel
