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


cdef class Entry:
    """One published specialization (see the pxd). Built by the dispatcher on a miss.

    ``grid``: a static tuple, a ``GridProgram`` (evaluated in C on the call's arguments, closure
    cells read from ``grid_fn``), or a callable of the arguments (called in Python per call).
    ``grid_slow(entry, args, grid)``: the Python path for a grid given per call (``k[grid]``)
    whose program this entry does not know yet; it may add one with :meth:`set_grid_program`.
    ``pre_call(args)``: run in Python before every launch (Triton config ``pre_hook``s).
    """

    def __cinit__(self):
        self.words = NULL
        self.n_words = 0

    def __dealloc__(self):
        free(self.words)

    def __init__(self, words, int mode, *, plan=None, grid=None, grid_fn=None, grid_slow=None,
                 fn=None, slow=None, globals_guard=(), watch_hooks=False, pre_call=None, info=None):
        cdef Py_ssize_t i
        self.n_words = len(words)
        self.words = <uint64_t*>malloc(max(self.n_words, 1) * sizeof(uint64_t))
        for i in range(self.n_words):
            self.words[i] = <uint64_t>words[i]
        self.mode = mode
        self.fn = fn
        self.slow = slow
        self.globals_guard = tuple(globals_guard)
        self.watch_hooks = watch_hooks
        self.pre_call = pre_call
        self.info = info
        self.grid_prog = None
        self.grid_call = None
        self.grid_fn = grid_fn
        self.grid_slow = grid_slow
        self.grid_programs = {}
        self.last_grid_key = None
        self.last_grid_prog = None
        memset(&self.plan, 0, sizeof(LaunchPlan))
        if mode == MODE_DRIVER:
            self._set_plan(plan, grid)
        elif mode == MODE_CALL and fn is None:
            raise ValueError("MODE_CALL entry needs fn")
        if mode != MODE_NULL and slow is None:
            raise ValueError("entry needs a slow launch")

    cdef _set_plan(self, dict plan, grid):
        cdef int i
        kinds = plan["param_kinds"]
        args = plan["param_args"]
        if len(kinds) > MAX_PARAMS:
            raise ValueError(f"{len(kinds)} kernel parameters > {MAX_PARAMS}")
        if len(plan["attrs"]) > MAX_ATTRS:
            raise ValueError("too many launch attributes")
        self.plan.function = <fd_CUfunction><uint64_t>plan["function"]
        self.plan.context = <fd_CUcontext><uint64_t>plan["context"]
        self.plan.block_x = plan["block_x"]
        self.plan.num_ctas = plan["num_ctas"]
        self.plan.shared_bytes = plan["shared_bytes"]
        self.plan.n_params = len(kinds)
        for i in range(len(kinds)):
            self.plan.param_kind[i] = kinds[i]
            self.plan.param_arg[i] = args[i]
        self.plan.n_attrs = len(plan["attrs"])
        for i, (attr_id, value) in enumerate(plan["attrs"]):
            self.plan.attrs[i].id = attr_id
            if isinstance(value, tuple):
                self.plan.attrs[i].value.clusterDim.x = value[0]
                self.plan.attrs[i].value.clusterDim.y = value[1]
                self.plan.attrs[i].value.clusterDim.z = value[2]
            else:
                self.plan.attrs[i].value.i = value
        if isinstance(grid, GridProgram):
            self.grid_prog = grid
        elif callable(grid):
            self.grid_call = grid
        elif grid is not None:
            g = tuple(grid) + (1, 1)
            self.plan.grid[0] = g[0]
            self.plan.grid[1] = g[1]
            self.plan.grid[2] = g[2]

    def set_grid_program(self, key, program):
        """Remember how to evaluate a per-call grid whose function has ``key`` (its code object,
        or the callable itself): a ``GridProgram``, or False for "call it in Python". Filed by
        identity (hashing a code object walks its fields: ~0.3 us), with ``key`` kept alive in
        the value so its id cannot be reused while the entry exists."""
        self.grid_programs[id(key)] = (key, program)
        if key is self.last_grid_key:
            self.last_grid_prog = program

    @property
    def key_words(self):
        return tuple(self.words[i] for i in range(self.n_words))

    @property
    def grid_program(self):
        """The wrap-time grid's program, or None (static grid, or called in Python)."""
        return self.grid_prog

    cdef int _grid(self, tuple args, const uint64_t* slots, const ArgView* views, bint have_views,
                   object grid, unsigned int* g) except -1:
        """(gx, gy, gz) for this call into ``g``: a static plan grid, a program evaluated in
        C, a per-call tuple read in C, or (when none of those applies) the grid in Python."""
        cdef PyObject* found
        if grid is None:
            if self.grid_prog is not None:
                if have_views and eval_grid(self.grid_prog, <const int64_t*>slots, views,
                                            PyTuple_GET_SIZE(args), self.grid_fn, g):
                    return 0
                result = self.grid_slow(self, args, None) if self.grid_slow is not None else self.grid_fn(*args)
            elif self.grid_call is not None:
                result = self.grid_call(*args)
            else:
                g[0] = self.plan.grid[0]; g[1] = self.plan.grid[1]; g[2] = self.plan.grid[2]
                return 0
        elif type(grid) is tuple and 1 <= PyTuple_GET_SIZE(grid) <= 3:
            result = grid
        else:
            key = _grid_key(grid)
            if key is not self.last_grid_key:   # one-slot cache: a kernel usually has one grid
                found = PyDict_GetItem(self.grid_programs, id(key))
                if found == NULL or (<tuple><object>found)[0] is not key:
                    result = self.grid_slow(self, args, grid)
                    return self._sizes(result, g)
                self.last_grid_key = key
                self.last_grid_prog = (<tuple><object>found)[1]
            if (type(self.last_grid_prog) is GridProgram and have_views
                    and eval_grid(<GridProgram>self.last_grid_prog, <const int64_t*>slots, views,
                                  PyTuple_GET_SIZE(args), grid, g)):
                return 0
            result = self.grid_slow(self, args, grid)
        return self._sizes(result, g)

    cdef int _sizes(self, object result, unsigned int* g) except -1:
        cdef Py_ssize_t n, i
        cdef int overflow = 0
        cdef long long value
        n = len(result)
        if not 1 <= n <= 3:
            raise ValueError(f"fastdispatch: a grid must have 1-3 sizes, got {result!r}")
        for i in range(3):
            if i >= n:
                g[i] = 1
                continue
            item = result[i]
            if type(item) is not int:
                item = int(item)   # numpy ints, SymInts of a concrete value: as Triton accepts
            value = PyLong_AsLongLongAndOverflow(item, &overflow)
            if overflow or value < 0 or value > 0xFFFFFFFF:
                raise ValueError(f"fastdispatch: grid size {item!r} is out of range [0, 2**32)")
            g[i] = <unsigned int>value
        return 0

    cdef object run(self, tuple args, const uint64_t* slots, const ArgView* views, bint have_views,
                    int device_id, object knobs_runtime, object grid):
        cdef fd_CUstream stream = NULL
        cdef int rc
        cdef unsigned int g[3]
        self.hits += 1
        if self.pre_call is not None:
            self.pre_call(args)
        if self.mode == MODE_DRIVER:
            if self.globals_guard and _globals_changed(self.globals_guard):
                return self._slow(args, grid)   # Triton's own path raises its "global changed" error
            if self.watch_hooks and _hooks_active(knobs_runtime):
                return self._slow(args, grid)   # profilers' launch hooks need Triton's launcher
            if _api != NULL:
                if _api.current_work_stream(K_DLCUDA, device_id, <void**>&stream) != 0:
                    return self._slow(args, grid)
            else:
                stream = <fd_CUstream><uint64_t>_raw_stream(device_id)
            self._grid(args, slots, views, have_views, grid, g)
            if _release_gil:
                with nogil:
                    rc = launch_plan(&self.plan, g[0], g[1], g[2], stream, slots)
            else:
                rc = launch_plan(&self.plan, g[0], g[1], g[2], stream, slots)
            if rc != 0:
                raise RuntimeError(f"fastdispatch: cuLaunchKernelEx failed: {error_string(rc)}")
            return None
        if self.mode == MODE_CALL:
            return self.fn(*args)
        if self.mode == MODE_SLOW:
            return self._slow(args, grid)
        return None  # MODE_NULL: key + lookup only (CPU tests, `bench keys`)

    cdef inline object _slow(self, tuple args, object grid):
        return self.slow(args) if grid is None else self.slow(args, grid)

    def launch(self, FastKernel kernel, tuple args, grid=None):
        """Launch this entry for ``args`` as the hot path would (the miss's own call, so even a
        first call takes the direct launch rather than Triton's launcher). Not a hit."""
        cdef uint64_t words[MAX_WORDS]
        cdef uint64_t slots[MAX_ARGS]
        cdef ArgView views[MAX_ARGS]
        cdef int device_id = -1
        cdef Py_ssize_t n = kernel._build(args, words, slots, views, &device_id)
        if n < 0:
            self.hits += 1
            try:
                return self._slow_python(kernel, args, grid)
            finally:
                self.hits -= 1
        try:
            return self.run(args, slots, views, True, device_id, kernel.knobs_runtime, grid)
        finally:
            self.hits -= 1   # the publishing call is a miss, not a hit (also when it raised)

    cdef object _slow_python(self, FastKernel kernel, tuple args, object grid):
        # Arguments C cannot read (tensor subclasses, FakeTensor): the twin's slots, no views.
        cdef uint64_t words[MAX_WORDS]
        cdef uint64_t slots[MAX_ARGS]
        cdef ArgView views[MAX_ARGS]
        cdef int device_id = -1
        if kernel._build_any(args, words, slots, views, &device_id) < 0:
            return self._slow(args, grid)
        return self.run(args, slots, views, False, device_id, kernel.knobs_runtime, grid)

    def floor_loop(self, FastKernel kernel, tuple args, long iterations):
        """Benchmark floor: launch this entry's plan ``iterations`` times from one C loop, with the
        slots and stream computed once (the cost of cuLaunchKernelEx alone; ``bench launch``)."""
        cdef uint64_t words[MAX_WORDS]
        cdef uint64_t slots[MAX_ARGS]
        cdef ArgView views[MAX_ARGS]
        cdef unsigned int g[3]
        cdef int device_id = -1
        cdef fd_CUstream stream = NULL
        cdef long i
        cdef int rc = 0
        if self.mode != MODE_DRIVER:
            raise ValueError("floor_loop needs a direct-launch entry")
        if kernel._build(args, words, slots, views, &device_id) < 0:
            raise ValueError("floor_loop: arguments not readable in C")
        self._grid(args, slots, views, True, None, g)
        stream = <fd_CUstream><uint64_t>_raw_stream(device_id)
        with nogil:
            for i in range(iterations):
                rc = launch_plan(&self.plan, g[0], g[1], g[2], stream, slots)
                if rc != 0:
                    break
        if rc != 0:
            raise RuntimeError(f"fastdispatch: cuLaunchKernelEx failed: {error_string(rc)}")


cdef inline object _grid_key(object grid):
    # Per-call grids are usually a fresh lambda per call with the same code: key on the code.
    if PyFunction_Check(grid):
        return <object>PyFunction_GET_CODE(grid)   # borrowed: <object> takes a reference
    return grid


cdef bint _globals_changed(tuple guard) except -1:
    for globals_dict, name, value in guard:
        if globals_dict.get(name, _MISSING) != value:
            return True
    return False

cdef object _MISSING = object()


# Triton's launch hooks, seen through the runtime knobs object's instance dict: assigning
# `triton.knobs.runtime.launch_enter_hook = ...` puts the new value there, while the default
# HookChain lives on the class and is mutated in place by HookChain.add/remove. So the common
# case is two dict probes and two list sizes (~20 ns, vs ~70 ns for getattrs).
cdef object _rt_dict = None          # triton.knobs.runtime.__dict__
cdef object _comp_dict = None        # triton.knobs.compilation.__dict__
cdef object _rt_debug_default = False      # class-level defaults of the two codegen knobs
cdef object _comp_mode_default = ""
cdef object _enter_calls = None      # the class-level default chains' call lists
cdef object _exit_calls = None

cdef bint _hooks_active(object rt) except -1:
    cdef PyObject* enter = PyDict_GetItem(_rt_dict, "launch_enter_hook")
    cdef PyObject* exit_ = PyDict_GetItem(_rt_dict, "launch_exit_hook")
    if enter == NULL and exit_ == NULL and _enter_calls is not None:
        return PyList_GET_SIZE(_enter_calls) != 0 or PyList_GET_SIZE(_exit_calls) != 0
    for hook in (rt.launch_enter_hook, rt.launch_exit_hook):   # replaced: the general check
        if hook is None:
            continue
        if type(hook) is _hookchain_type and PyList_GET_SIZE(hook.calls) == 0:
            continue
        return True
    return False


# FastKernel's tp_call and mp_subscript, set directly on each (sub)type when its first instance
# is made: Cython's `def __call__(self, *args, **kwargs)` allocates an empty kwargs dict on every
# call (~40 ns), and heap subclasses (Dispatcher) would re-derive their slots from their Python
# `__call__` / `__getitem__`, which stay in the class dict for TorchDynamo to trace. The
# signatures are CPython's ternaryfunc and binaryfunc; kwds may be NULL.
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


cdef class FastKernel:
    """Key -> entry table for one wrapped kernel; ``__call__`` is the hot path.

    roles: one byte per parameter (ROLE_CLASS, ROLE_CONSTEXPR, ROLE_EXACT, ROLE_LAYOUT,
    ROLE_VALUE; see the module docstring). on_miss(kernel, args, kwargs, grid) runs the slow
    path (bind, validate, compile, publish, launch). knobs: (triton.knobs.runtime,
    triton.knobs.compilation) for Triton kernels, else None. names/defaults/n_positional let C
    bind keyword calls and omitted defaults: parameter names, a default per parameter (or
    ``NO_DEFAULT``), and how many may be passed positionally (the rest are keyword-only launch
    options whose default is None). max_entries bounds the table (CLOCK eviction past it).
    """

    def __cinit__(self):
        fd_ensure_tp_call(type(self), <void*>_fastkernel_tp_call)
        fd_ensure_mp_subscript(type(self), <void*>_fastkernel_mp_subscript)
        self.table_cap = 0
        self.table_len = 0
        self.table_hash = NULL
        self.table_entry = NULL

    def __dealloc__(self):
        free(self.table_hash)
        free(self.table_entry)

    def __init__(self, bytes roles, on_miss, knobs=None, *, names=None, defaults=None,
                 n_positional=None, Py_ssize_t max_entries=4096):
        self.on_miss = on_miss
        if knobs is None:
            self.knobs_runtime = None
            self.knobs_compilation = None
        else:
            self.knobs_runtime, self.knobs_compilation = knobs
        self.names = tuple(names) if names is not None else None
        self.defaults = tuple(defaults) if defaults is not None else None
        self.n_positional = len(roles) if n_positional is None else n_positional
        if self.names is not None and (len(self.names) != len(roles) or len(self.defaults) != len(roles)):
            raise ValueError("names and defaults need one item per role")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self.entries = []
        self.last_bound = None
        self.clock_hand = 0
        self.evictions = 0
        self.evicted_hits = 0
        self.set_roles(roles)
        self._resize(16)

    def set_roles(self, bytes roles):
        """Replace the roles (a finer key learned on a miss) and drop every entry."""
        if self.names is not None and len(roles) != len(self.names):
            raise ValueError(f"{len(roles)} roles for {len(self.names)} parameters")
        self.roles = roles
        self.role_ptr = roles
        self.n_roles = len(roles)
        if self.table_cap:
            self.clear()

    cdef _resize(self, Py_ssize_t cap):
        cdef uint64_t* hashes = <uint64_t*>calloc(cap, sizeof(uint64_t))
        cdef void** slots = <void**>calloc(cap, sizeof(void*))
        cdef Py_ssize_t i, j
        if hashes == NULL or slots == NULL:
            free(hashes); free(slots)
            raise MemoryError()
        for i in range(self.table_cap):
            if self.table_entry[i] != NULL:
                j = self.table_hash[i] & (cap - 1)
                while slots[j] != NULL:
                    j = (j + 1) & (cap - 1)
                hashes[j] = self.table_hash[i]
                slots[j] = self.table_entry[i]
        free(self.table_hash)
        free(self.table_entry)
        self.table_hash = hashes
        self.table_entry = slots
        self.table_cap = cap

    cdef Entry _find(self, uint64_t h, const uint64_t* words, Py_ssize_t n):
        cdef Py_ssize_t j = h & (self.table_cap - 1)
        cdef Entry e
        while self.table_entry[j] != NULL:
            if self.table_hash[j] == h:
                e = <Entry>self.table_entry[j]
                if e.n_words == n and memcmp(e.words, words, n * sizeof(uint64_t)) == 0:
                    return e
            j = (j + 1) & (self.table_cap - 1)
        return None

    cdef _unlink(self, Entry victim):
        """Remove ``victim`` from the hash table (backward-shift deletion keeps probes exact)."""
        cdef Py_ssize_t mask = self.table_cap - 1
        cdef Py_ssize_t j = _hash_words(victim.words, victim.n_words) & mask
        cdef Py_ssize_t k, ideal
        while self.table_entry[j] != <void*>victim:
            j = (j + 1) & mask
        self.table_entry[j] = NULL
        k = (j + 1) & mask
        while self.table_entry[k] != NULL:
            ideal = self.table_hash[k] & mask
            # the entry at k may move to the hole at j unless its home lies cyclically in (j, k]
            if (j < k and (ideal <= j or ideal > k)) or (j > k and ideal <= j and ideal > k):
                self.table_entry[j] = self.table_entry[k]
                self.table_hash[j] = self.table_hash[k]
                self.table_entry[k] = NULL
                j = k
            k = (k + 1) & mask
        self.table_len -= 1

    cdef _evict_one(self):
        """CLOCK: skip (and re-arm) entries hit since the hand last passed; evict the first
        that was not. At most two sweeps."""
        cdef Entry e
        cdef Py_ssize_t n = len(self.entries), steps = 0
        while True:
            if self.clock_hand >= n:
                self.clock_hand = 0
            e = <Entry>self.entries[self.clock_hand]
            if e.hits != e.clock_mark and steps < 2 * n:
                e.clock_mark = e.hits
                self.clock_hand += 1
                steps += 1
                continue
            break
        self._unlink(e)
        last = self.entries.pop()
        if last is not e:
            self.entries[self.clock_hand] = last
        self.evictions += 1
        self.evicted_hits += e.hits
        if _stats_record is not None:
            _stats_record("evictions")

    def publish(self, Entry entry):
        """Insert ``entry`` under its key words (slow path; the caller holds the GIL). When the
        table is full, one entry is evicted first (its binary stays in the backend's caches)."""
        cdef uint64_t h = _hash_words(entry.words, entry.n_words)
        cdef Py_ssize_t j
        if self._find(h, entry.words, entry.n_words) is not None:
            return False
        while self.table_len >= self.max_entries:
            self._evict_one()
        if (self.table_len + 1) * 2 > self.table_cap:
            self._resize(self.table_cap * 2)
        j = h & (self.table_cap - 1)
        while self.table_entry[j] != NULL:
            j = (j + 1) & (self.table_cap - 1)
        entry.clock_mark = entry.hits
        self.entries.append(entry)   # keeps the reference the table points to
        self.table_hash[j] = h
        self.table_entry[j] = <void*>entry
        self.table_len += 1
        return True

    def lookup(self, words):
        """The entry published under ``words``, or None (slow path and tests)."""
        probe = Entry(words, MODE_NULL)
        return self._find(_hash_words(probe.words, probe.n_words), probe.words, probe.n_words)

    def published(self):
        """The published entries (a snapshot)."""
        return list(self.entries)

    def clear(self):
        """Drop every entry (e.g. after knobs changed in ways the key cannot see)."""
        memset(self.table_hash, 0, self.table_cap * sizeof(uint64_t))
        memset(self.table_entry, 0, self.table_cap * sizeof(void*))
        self.table_len = 0
        self.entries = []
        self.clock_hand = 0

    @property
    def num_entries(self):
        return self.table_len

    @property
    def roles(self):
        return self.roles

    @property
    def max_entries(self):
        return self.max_entries

    @property
    def evictions(self):
        return self.evictions

    @property
    def evicted_hits(self):
        return self.evicted_hits

    def key_of(self, *args):
        """The key words of a call with positional ``args`` (tests, the slow path)."""
        cdef uint64_t words[MAX_WORDS]
        cdef uint64_t slots[MAX_ARGS]
        cdef ArgView views[MAX_ARGS]
        cdef int device_id = -1
        cdef Py_ssize_t n = self._build(args, words, slots, views, &device_id)
        if n < 0:
            return tuple(_keys_py.build_words(args, self.roles, self.knobs_runtime,
                                              self.knobs_compilation)[0])
        return tuple(words[i] for i in range(n))

    cdef Py_ssize_t _build(self, tuple args, uint64_t* words, uint64_t* slots, ArgView* views,
                           int* device_id) except -2:
        """Fill key words, argument slots and views; -1 when the call needs the Python twin."""
        cdef Py_ssize_t nargs = PyTuple_GET_SIZE(args)
        cdef Py_ssize_t n = 0, i, d, k, n_tensors = 0
        cdef PyObject* obj
        cdef PyTypeObject* tp
        cdef fd_DLTensor dl
        cdef uint64_t data, word
        cdef uint64_t masks[MAX_ARGS / 64 + 1]
        cdef int64_t stride, expect
        cdef double dval
        cdef int role
        cdef bint compact, wide
        if nargs > MAX_ARGS or nargs > self.n_roles or nargs < self.n_positional:
            return -1
        memset(masks, 0, sizeof(masks))
        words[n] = T_NARGS | (<uint64_t>self.n_roles << 8); n += 1
        for i in range(self.n_roles):
            role = self.role_ptr[i]
            slots[i] = 0
            views[i].ndim = -1
            if n + 8 > MAX_WORDS:
                return -1
            if i >= nargs:
                # an omitted keyword-only option: the same words as an explicit None
                words[n] = T_CONST | (4 << 8); words[n + 1] = 0; n += 2
                continue
            obj = PyTuple_GET_ITEM(args, i)
            tp = Py_TYPE(<object>obj)
            if role == ROLE_CONSTEXPR:
                # constexpr argument: its exact value is part of the key
                if tp == <PyTypeObject*>bool:
                    words[n] = T_CONST | (1 << 8); words[n + 1] = (<object>obj is True); n += 2
                elif tp == <PyTypeObject*>int:
                    if not _int_class(<object>obj, &slots[i], &word):
                        return -1
                    words[n] = T_CONST | (2 << 8); words[n + 1] = slots[i]; n += 2
                elif tp == <PyTypeObject*>float:
                    dval = PyFloat_AS_DOUBLE(<object>obj)
                    words[n] = T_CONST | (3 << 8); memcpy(&words[n + 1], &dval, 8); n += 2
                elif <object>obj is None:
                    words[n] = T_CONST | (4 << 8); words[n + 1] = 0; n += 2
                else:
                    try:
                        found = _interned_get(<object>obj)   # exact: dict equality, not identity
                    except TypeError:
                        return -1                            # unhashable: the twin raises clearly
                    if found is None:
                        return -1
                    words[n] = T_CONST | (5 << 8); words[n + 1] = <uint64_t>(<long long>found); n += 2
                slots[i] = 0
                continue
            if _api != NULL and (tp == _tensor_type or tp == _param_type):
                if _api.dltensor_from_py_object_no_sync(<void*>obj, &dl) != 0:
                    PyErr_Clear()
                    return -1
                if n + 4 + 2 * dl.ndim > MAX_WORDS:
                    return -1
                words[n] = T_TENSOR | (<uint64_t>dl.ndim << 8)
                words[n + 1] = dl.dtype.code | (<uint64_t>dl.dtype.bits << 8) | (<uint64_t>dl.dtype.lanes << 16)
                words[n + 2] = <uint32_t>dl.device.device_type | (<uint64_t><uint32_t>dl.device.device_id << 32)
                n += 3
                views[i].shape = dl.shape
                views[i].strides = dl.strides
                views[i].ndim = dl.ndim
                if role == ROLE_EXACT or role == ROLE_VALUE:
                    for d in range(dl.ndim):
                        words[n + d] = <uint64_t>dl.shape[d]
                    if dl.strides != NULL:
                        for d in range(dl.ndim):
                            words[n + dl.ndim + d] = <uint64_t>dl.strides[d]
                    else:
                        stride = 1
                        for d in range(dl.ndim - 1, -1, -1):
                            words[n + dl.ndim + d] = <uint64_t>stride
                            stride *= dl.shape[d]
                    n += 2 * dl.ndim
                elif role == ROLE_LAYOUT:
                    # CuTe's size-generic class: compact row-major strides, any size >= 2**31
                    compact = True
                    wide = False
                    expect = 1
                    for d in range(dl.ndim - 1, -1, -1):
                        if dl.strides != NULL and dl.shape[d] != 1 and dl.strides[d] != expect:
                            compact = False
                        if dl.shape[d] >= 2147483648:
                            wide = True
                        expect *= dl.shape[d]
                    if expect >= 2147483648:
                        wide = True
                    words[n] = T_LAYOUT | (<uint64_t>compact << 8) | (<uint64_t>wide << 9); n += 1
                data = <uint64_t>dl.data + dl.byte_offset
                slots[i] = data
                if (data & 15) == 0:
                    masks[n_tensors >> 6] |= (<uint64_t>1) << (n_tensors & 63)
                n_tensors += 1
                if device_id[0] < 0 and dl.device.device_type == K_DLCUDA:
                    device_id[0] = dl.device.device_id
            elif tp == <PyTypeObject*>int:
                if not _int_class(<object>obj, &slots[i], &words[n]):
                    return -1
                n += 1
                if role == ROLE_VALUE:
                    words[n] = slots[i]; n += 1
            elif tp == <PyTypeObject*>float:
                dval = PyFloat_AS_DOUBLE(<object>obj)
                memcpy(&slots[i], &dval, 8)
                words[n] = T_FLOAT; n += 1
                if role == ROLE_VALUE:
                    words[n] = slots[i]; n += 1
            elif tp == <PyTypeObject*>bool:
                slots[i] = (<object>obj is True)
                words[n] = T_BOOL; n += 1
                if role == ROLE_VALUE:
                    words[n] = slots[i]; n += 1
            elif <object>obj is None:
                words[n] = T_NONE; n += 1
            else:
                return -1
        if self.knobs_runtime is not None:
            words[n] = _knob_word(self.knobs_runtime, self.knobs_compilation); n += 1
        words[n] = T_ALIGN | (<uint64_t>n_tensors << 8); n += 1
        for k in range((n_tensors + 63) // 64):
            words[n] = masks[k]; n += 1
        return n

    def __call__(self, *args, **kwargs):
        # Only reached if the tp_call patch is absent; same semantics.
        return self._call_kw(args, <PyObject*>kwargs if kwargs else NULL, None)

    def __getitem__(self, grid):
        # Only reached if the mp_subscript patch is absent; same semantics.
        return _fastkernel_mp_subscript(self, grid)

    cdef object _call_kw(self, tuple args, PyObject* kwds, object grid):
        """A call as written: keywords and omitted defaults bound in C, then the hot path."""
        cdef Py_ssize_t nargs = PyTuple_GET_SIZE(args)
        cdef tuple bound
        if (kwds == NULL or PyDict_Size(<object>kwds) == 0) and self.n_positional <= nargs <= self.n_roles:
            return self._call(args, grid)
        bound = self._bind(args, kwds)
        if bound is None:   # an error, or an argument only Python can place: the slow path says
            return self.on_miss(self, args, <object>kwds if kwds != NULL else None, grid)
        return self._call(bound, grid)

    cdef tuple _bind(self, tuple args, PyObject* kwds):
        """Positional arguments for a keyword call (~50 ns + a dict probe per parameter), or
        None when Python must decide (an error to report, or no names/defaults table)."""
        cdef Py_ssize_t nargs = PyTuple_GET_SIZE(args), i, consumed = 0
        cdef PyObject* value
        cdef tuple bound
        if self.names is None or nargs > self.n_positional:
            return None
        bound = PyTuple_New(self.n_roles)
        for i in range(nargs):
            item = <object>PyTuple_GET_ITEM(args, i)
            Py_INCREF(item)
            PyTuple_SET_ITEM(bound, i, item)
        for i in range(nargs, self.n_roles):
            value = PyDict_GetItem(<object>kwds, <object>PyTuple_GET_ITEM(self.names, i)) if kwds != NULL else NULL
            if value != NULL:
                consumed += 1
                item = <object>value
            else:
                item = <object>PyTuple_GET_ITEM(self.defaults, i)
                if item is NO_DEFAULT:
                    return None
            Py_INCREF(item)
            PyTuple_SET_ITEM(bound, i, item)
        if kwds != NULL and consumed != PyDict_Size(<object>kwds):
            return None   # an unknown keyword, or one given positionally too
        return bound

    cdef object _call(self, tuple args, object grid):
        """The hot path: key words in C, table lookup, launch (see the module docstring)."""
        cdef uint64_t words[MAX_WORDS]
        cdef uint64_t slots[MAX_ARGS]
        cdef ArgView views[MAX_ARGS]
        cdef int device_id = -1
        cdef bint have_views = True
        cdef Py_ssize_t n = self._build(args, words, slots, views, &device_id)
        cdef Entry e
        if n < 0:
            have_views = False
            n = self._build_any(args, words, slots, views, &device_id)
            if n < 0:
                return self.on_miss(self, args, None, grid)
        e = self._find(_hash_words(words, n), words, n)
        if e is None:
            return self.on_miss(self, args, None, grid)
        return e.run(args, slots, views, have_views, device_id, self.knobs_runtime, grid)

    cdef Py_ssize_t _build_any(self, tuple args, uint64_t* words, uint64_t* slots, ArgView* views,
                               int* device_id) except -2:
        """``_build``, or, for an argument C cannot read (tensor subclass, FakeTensor, exotic
        scalar), the Python twin's identical words and slots (no views: grid programs then
        run in Python). -1 when the call does not fit the stack buffers (the slow path)."""
        cdef Py_ssize_t n = self._build(args, words, slots, views, device_id)
        cdef Py_ssize_t i
        if n >= 0:
            return n
        if PyTuple_GET_SIZE(args) > self.n_roles or PyTuple_GET_SIZE(args) < self.n_positional:
            return -1
        built, built_slots, dev = _keys_py.build_words(
            args, self.roles, self.knobs_runtime, self.knobs_compilation)
        if len(built) > MAX_WORDS or len(built_slots) > MAX_ARGS:
            return -1
        for i in range(len(built)):
            words[i] = <uint64_t>built[i]
        for i in range(len(built_slots)):
            slots[i] = <uint64_t>built_slots[i]
            views[i].ndim = -1
        device_id[0] = dev
        return len(built)


cdef object _last_mode = None
cdef uint64_t _last_mode_id = 0

cdef inline uint64_t _knob_word(object rt, object comp) except? 0:
    # Instance-dict probes first (where `knobs.runtime.debug = ...` and refresh_knobs() write),
    # then the class defaults captured by set_triton_hooks: two dict probes (~25 ns) instead of
    # two getattrs that miss the instance dict before finding the class attribute.
    global _last_mode, _last_mode_id
    cdef PyObject* debug = NULL
    cdef PyObject* mode_p = NULL
    cdef object debug_value, mode
    if _rt_dict is not None:
        debug = PyDict_GetItem(_rt_dict, "debug")
        mode_p = PyDict_GetItem(_comp_dict, "instrumentation_mode")
        debug_value = <object>debug if debug != NULL else _rt_debug_default
        mode = <object>mode_p if mode_p != NULL else _comp_mode_default
    else:
        debug_value = rt.debug
        mode = comp.instrumentation_mode
    if mode is not _last_mode:   # the knob is almost always the same str object: skip the dict
        _last_mode_id = <uint64_t>(<long long>intern_id(mode))
        _last_mode = mode
    return T_KNOBS | ((<uint64_t>(<bint>debug_value)) << 8) | (_last_mode_id << 16)






cdef extern from "<time.h>" nogil:
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk_id, timespec* tp)
    int CLOCK_MONOTONIC

cdef inline double _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1e9 + ts.tv_nsec


def probe_costs(FastKernel kernel, tuple args, long iterations=20000):
    """Diagnostic: ns per call of each hot-path step for ``args`` (which must hit a published
    direct-launch entry), each step timed alone in a C loop. Launches run on the current
    stream; the caller synchronizes around this call. Used by ``bench/probe_hot_path.py``."""
    cdef uint64_t words[MAX_WORDS]
    cdef uint64_t slots[MAX_ARGS]
    cdef ArgView views[MAX_ARGS]
    cdef unsigned int g[3]
    cdef int device_id = -1
    cdef Py_ssize_t n = kernel._build(args, words, slots, views, &device_id)
    cdef long i
    cdef double t0
    cdef fd_CUstream stream = NULL
    cdef Entry e
    cdef dict out = {}
    if n < 0:
        raise ValueError("arguments not readable in C")
    e = kernel._find(_hash_words(words, n), words, n)
    if e is None or e.mode != MODE_DRIVER:
        raise ValueError("no published direct-launch entry for these arguments")
    t0 = _now_ns()
    for i in range(iterations):
        kernel._build(args, words, slots, views, &device_id)
    out["build_key"] = (_now_ns() - t0) / iterations
    t0 = _now_ns()
    for i in range(iterations):
        kernel._find(_hash_words(words, n), words, n)
    out["hash_and_find"] = (_now_ns() - t0) / iterations
    if kernel.knobs_runtime is not None:
        t0 = _now_ns()
        for i in range(iterations):
            _knob_word(kernel.knobs_runtime, kernel.knobs_compilation)
        out["knob_word"] = (_now_ns() - t0) / iterations
        t0 = _now_ns()
        for i in range(iterations):
            _hooks_active(kernel.knobs_runtime)
        out["hooks_check"] = (_now_ns() - t0) / iterations
    if _api != NULL:
        t0 = _now_ns()
        for i in range(iterations):
            _api.current_work_stream(K_DLCUDA, device_id, <void**>&stream)
        out["current_stream_exchange_api"] = (_now_ns() - t0) / iterations
    t0 = _now_ns()
    for i in range(iterations):
        stream = <fd_CUstream><uint64_t>_raw_stream(device_id)
    out["current_stream_python"] = (_now_ns() - t0) / iterations
    t0 = _now_ns()
    for i in range(iterations):
        with nogil:
            pass
    out["release_gil"] = (_now_ns() - t0) / iterations
    t0 = _now_ns()
    for i in range(iterations):
        e._grid(args, slots, views, True, None, g)
    out["grid"] = (_now_ns() - t0) / iterations
    t0 = _now_ns()
    with nogil:
        for i in range(iterations):
            launch_plan(&e.plan, g[0], g[1], g[2], stream, slots)
    out["launch_plan"] = (_now_ns() - t0) / iterations
    t0 = _now_ns()
    for i in range(iterations):
        kernel._call(args, None)
    out["full_call_from_c"] = (_now_ns() - t0) / iterations
    return out
