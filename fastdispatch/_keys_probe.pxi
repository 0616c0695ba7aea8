# Included by _keys.pyx (one Cython module: the classes share its C-level state).
# probe_costs: a diagnostic timing each hot-path step in a C loop (bench/probe_hot_path.py).

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


def probe_costs(FastKernel kernel, tuple args, long iterations=20000, grid=None):
    """Diagnostic: ns per call of each hot-path step for ``args`` (which must hit a published
    direct-launch entry), each step timed alone in a C loop; ``grid``: a per-call grid, as in
    ``kernel[grid](*args)``. Launches run on the current
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
        e._grid(args, slots, views, True, grid, g)
    out["grid"] = (_now_ns() - t0) / iterations
    t0 = _now_ns()
    with nogil:
        for i in range(iterations):
            launch_plan(&e.plan, g[0], g[1], g[2], stream, slots)
    out["launch_plan"] = (_now_ns() - t0) / iterations
    t0 = _now_ns()
    for i in range(iterations):
        kernel._call(args, grid)
    out["full_call_from_c"] = (_now_ns() - t0) / iterations
    if grid is not None:   # Triton's convention, as a user's `k[grid](*args)` (BoundLaunch reuse)
        t0 = _now_ns()
        for i in range(iterations):
            kernel[grid](*args)
        out["subscript_and_call_from_c"] = (_now_ns() - t0) / iterations
    return out
