# Included by _keys.pyx (one Cython module: the classes share its C-level state).
# FastKernel: the key builder, C keyword binding and the bounded key -> entry table (per call).

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
