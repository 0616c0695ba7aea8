# Included by _keys.pyx (one Cython module: the classes share its C-level state).
# Entry: one published specialization and how it launches (per call: run, _grid).

cdef tuple _checked_allocs(allocs):
    """``Entry(allocs=...)`` as a tuple of ``(make, index)`` pairs, or None for none."""
    if allocs is None or len(allocs) == 0:
        return None
    checked = []
    for j, spec in enumerate(allocs):
        if not (isinstance(spec, tuple) and len(spec) == 2 and callable(spec[0])
                and type(spec[1]) is int and -1 <= spec[1] < MAX_ARGS):
            raise ValueError(f"allocs[{j}] must be (callable, argument index or -1), got {spec!r}")
        checked.append(spec)
    return tuple(checked)


cdef class Entry:
    """One published specialization (see the pxd). Built by the dispatcher on a miss.

    ``grid``: a static tuple, a ``GridProgram`` (evaluated in C on the call's arguments, closure
    cells read from ``grid_fn``), or a callable of the arguments (called in Python per call).
    ``grid_slow(entry, args, grid)``: the Python path for a grid given per call (``k[grid]``)
    whose program this entry does not know yet; it may add one with :meth:`set_grid_program`.
    ``pre_call(args)``: run in Python before every launch (Triton config ``pre_hook``s).
    ``result_index``: a MODE_DRIVER launch returns the call's argument at this index (a kernel
    that writes and returns one of its arguments, e.g. Helion's ``out``), or, past the call's
    arguments, the tensor it allocated (``allocs``); -1, the default, returns None. ``slow``
    must return the same (its result is returned on the slow branches).
    ``allocs``: tensors a MODE_DRIVER launch allocates before it launches, ``((make, index),
    ...)``: ``make(args[index])`` (``torch.empty_like``), or ``make()`` for index -1; the j-th
    one's data pointer is argument slot ``len(args) + j`` of the plan (Helion's host function
    allocating its output: ``helion_direct``). A Python call each, costing what the same
    ``torch.empty_like`` costs from Python (1.9-3.4 us on the lent H200's hosts).
    """

    def __cinit__(self):
        self.words = NULL
        self.n_words = 0

    def __dealloc__(self):
        free(self.words)

    def __init__(self, words, int mode, *, plan=None, grid=None, grid_fn=None, grid_slow=None,
                 fn=None, slow=None, globals_guard=(), watch_hooks=False, pre_call=None, info=None,
                 int result_index=-1, allocs=None):
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
        self.result_index = result_index
        self.allocs = _checked_allocs(allocs)
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

    cdef object run(self, tuple args, uint64_t* slots, const ArgView* views, bint have_views,
                    int device_id, object knobs_runtime, object grid):
        cdef fd_CUstream stream = NULL
        cdef int rc
        cdef unsigned int g[3]
        cdef tuple made = None
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
                    PyErr_Clear()   # its error is set; the slow path finds the stream its own way
                    return self._slow(args, grid)
            else:
                stream = <fd_CUstream><uint64_t>_raw_stream(device_id)
            if self.allocs is not None:
                made = self._allocate(args, slots)   # the plan reads them from the slots past args
                if made is None:
                    return self._slow(args, grid)
            self._grid(args, slots, views, have_views, grid, g)
            if _release_gil:
                with nogil:
                    rc = launch_plan(&self.plan, g[0], g[1], g[2], stream, slots)
            else:
                rc = launch_plan(&self.plan, g[0], g[1], g[2], stream, slots)
            if rc != 0:
                raise RuntimeError(f"fastdispatch: cuLaunchKernelEx failed: {error_string(rc)}")
            if self.result_index >= 0:   # one int compare for entries that return None
                if self.result_index < PyTuple_GET_SIZE(args):
                    return <object>PyTuple_GET_ITEM(args, self.result_index)
                if made is not None and self.result_index - PyTuple_GET_SIZE(args) < PyTuple_GET_SIZE(made):
                    return made[self.result_index - PyTuple_GET_SIZE(args)]
                raise IndexError(f"fastdispatch: result_index {self.result_index} of a call "
                                 f"with {PyTuple_GET_SIZE(args)} arguments")
            return None
        if self.mode == MODE_CALL:
            return self.fn(*args)
        if self.mode == MODE_SLOW:
            return self._slow(args, grid)
        return None  # MODE_NULL: key + lookup only (CPU tests, `bench keys`)

    cdef tuple _allocate(self, tuple args, uint64_t* slots):
        """The ``allocs`` tensors for this call, their data pointers in the slots after the
        call's arguments; None when they do not fit the slot buffer (the slow path)."""
        cdef Py_ssize_t nargs = PyTuple_GET_SIZE(args), n = PyTuple_GET_SIZE(self.allocs), j
        cdef fd_DLTensor dl
        cdef tuple made, spec
        cdef int index
        if nargs + n > MAX_ARGS:
            return None
        made = PyTuple_New(n)
        for j in range(n):
            spec = <tuple>PyTuple_GET_ITEM(self.allocs, j)
            index = spec[1]
            if index >= nargs:
                raise IndexError(f"fastdispatch: allocs[{j}] reads argument {index} of a call with "
                                 f"{nargs} arguments")
            tensor = spec[0](<object>PyTuple_GET_ITEM(args, index)) if index >= 0 else spec[0]()
            if Py_TYPE(tensor) != _tensor_type:
                raise TypeError(f"fastdispatch: allocs[{j}] made {type(tensor).__name__}, not a tensor")
            if _api != NULL:
                if _api.dltensor_from_py_object_no_sync(<void*>tensor, &dl) != 0:
                    raise RuntimeError("fastdispatch: cannot read an allocated tensor")
                slots[nargs + j] = <uint64_t>dl.data + dl.byte_offset
            else:
                slots[nargs + j] = <uint64_t>tensor.data_ptr()
            Py_INCREF(tensor)    # PyTuple_SET_ITEM steals a reference
            PyTuple_SET_ITEM(made, j, tensor)
        return made

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
        try:
            if n < 0:
                return self._slow_python(kernel, args, grid)
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
            self.hits += 1   # counted like run() counts, so launch()'s decrement balances it
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
        if self.mode != MODE_DRIVER or self.allocs is not None:
            raise ValueError("floor_loop needs a direct-launch entry that allocates nothing")
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
