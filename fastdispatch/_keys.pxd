from cpython.object cimport PyObject
from libc.stdint cimport uint64_t, int64_t
from fastdispatch.launchers._driver cimport LaunchPlan
from fastdispatch._grid cimport ArgView, GridProgram

cdef enum:
    MAX_WORDS = 4096     # key words per call; a larger call takes the Python twin
    MAX_ARGS = 256       # positional arguments per call

cdef class Entry:
    """One published specialization: its exact key words and how to launch it."""
    cdef uint64_t* words
    cdef Py_ssize_t n_words
    cdef readonly int mode
    cdef LaunchPlan plan
    cdef GridProgram grid_prog      # wrap-time grid as a C program, or None
    cdef object grid_call           # wrap-time grid called in Python per call, or None
    cdef readonly object grid_fn    # the wrap-time grid function (closure cells for grid_prog)
    cdef object grid_slow           # grid_slow(entry, args, grid) -> sizes (Python path)
    cdef readonly dict grid_programs   # id(per-call grid code) -> (code, GridProgram | False)
    cdef object last_grid_key       # one-slot cache of grid_programs
    cdef object last_grid_prog
    cdef readonly object fn         # MODE_CALL target
    cdef readonly object slow       # slow launch: slow(args[, grid]) -> result
    cdef readonly object pre_call   # pre_call(args) before every launch, or None
    cdef tuple globals_guard        # ((globals_dict, name, value), ...)
    cdef bint watch_hooks
    cdef readonly object info       # free-form, for stats and debugging
    cdef readonly int result_index  # MODE_DRIVER returns (args + allocated)[result_index]; -1: None
    cdef readonly tuple allocs      # ((make, arg index or -1), ...): tensors each launch allocates
    cdef readonly unsigned long long hits
    cdef unsigned long long clock_mark   # hits when the CLOCK hand last passed
    cdef _set_plan(self, dict plan, grid)
    cdef int _grid(self, tuple args, const uint64_t* slots, const ArgView* views, bint have_views,
                   object grid, unsigned int* g) except -1
    cdef int _sizes(self, object result, unsigned int* g) except -1
    cdef object run(self, tuple args, uint64_t* slots, const ArgView* views, bint have_views,
                    int device_id, object knobs_runtime, object grid)
    cdef tuple _allocate(self, tuple args, uint64_t* slots)
    cdef object _slow(self, tuple args, object grid)
    cdef object _slow_python(self, FastKernel kernel, tuple args, object grid)

cdef class BoundLaunch:
    cdef FastKernel kernel
    cdef object grid

cdef class FastKernel:
    cdef bytes roles
    cdef const unsigned char* role_ptr
    cdef Py_ssize_t n_roles
    cdef Py_ssize_t n_positional
    cdef tuple names             # parameter names (C keyword binding), or None
    cdef tuple defaults          # one default per parameter, NO_DEFAULT where required
    cdef object on_miss
    cdef object knobs_runtime    # triton.knobs.runtime, or None for non-Triton kernels
    cdef object knobs_compilation
    cdef uint64_t* table_hash
    cdef void** table_entry
    cdef Py_ssize_t table_cap
    cdef Py_ssize_t table_len
    cdef Py_ssize_t max_entries
    cdef Py_ssize_t clock_hand
    cdef unsigned long long evictions
    cdef unsigned long long evicted_hits
    cdef list entries            # owns the Entry references in the table
    cdef BoundLaunch last_bound  # k[grid] with the same grid object reuses it
    cdef object __weakref__
    cdef _resize(self, Py_ssize_t cap)
    cdef Entry _find(self, uint64_t h, const uint64_t* words, Py_ssize_t n)
    cdef _unlink(self, Entry victim)
    cdef _evict_one(self)
    cdef Py_ssize_t _build(self, tuple args, uint64_t* words, uint64_t* slots, ArgView* views,
                           int* device_id) except -2
    cdef Py_ssize_t _build_any(self, tuple args, uint64_t* words, uint64_t* slots, ArgView* views,
                               int* device_id) except -2
    cdef object _call_kw(self, tuple args, PyObject* kwds, object grid)
    cdef tuple _bind(self, tuple args, PyObject* kwds)
    cdef object _call(self, tuple args, object grid)
