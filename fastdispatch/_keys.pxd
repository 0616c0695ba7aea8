from libc.stdint cimport uint64_t, int64_t
from fastdispatch.launchers._driver cimport LaunchPlan

cdef enum:
    MAX_WORDS = 4096     # key words per call; a larger call takes the Python twin
    MAX_ARGS = 256       # positional arguments per call

cdef class Entry:
    """One published specialization: its exact key words and how to launch it."""
    cdef uint64_t* words
    cdef Py_ssize_t n_words
    cdef readonly int mode
    cdef LaunchPlan plan
    cdef object grid            # None (static plan grid) or a callable of the arguments
    cdef readonly object fn     # MODE_CALL target
    cdef readonly object slow   # slow launch: slow(args) -> result
    cdef tuple globals_guard    # ((globals_dict, name, value), ...)
    cdef bint watch_hooks
    cdef readonly object info   # free-form, for stats and debugging
    cdef readonly unsigned long long hits
    cdef _set_plan(self, dict plan, grid)
    cdef object run(self, tuple args, const uint64_t* slots, int device_id, object knobs_runtime)

cdef class FastKernel:
    cdef bytes roles
    cdef const unsigned char* role_ptr
    cdef Py_ssize_t n_roles
    cdef object on_miss
    cdef object knobs_runtime    # triton.knobs.runtime, or None for non-Triton kernels
    cdef object knobs_compilation
    cdef uint64_t* table_hash
    cdef void** table_entry
    cdef Py_ssize_t table_cap
    cdef Py_ssize_t table_len
    cdef list entries            # owns the Entry references in the table
    cdef object __weakref__
    cdef _resize(self, Py_ssize_t cap)
    cdef Entry _find(self, uint64_t h, const uint64_t* words, Py_ssize_t n)
    cdef Py_ssize_t _build(self, tuple args, uint64_t* words, uint64_t* slots, int* device_id) except -2
    cdef Py_ssize_t _build_any(self, tuple args, uint64_t* words, uint64_t* slots, int* device_id) except -2
    cdef object _call(self, tuple args)
