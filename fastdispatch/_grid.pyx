# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Grid programs evaluated in C (per call); ``grid_program.py`` traces them (per miss) and holds
the Python twin of :func:`eval_grid` (``grid_program.evaluate``), which the tests compare."""
from cpython.object cimport PyObject
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport malloc, free

cdef extern from "Python.h":
    bint PyFunction_Check(object o)
    PyObject* PyFunction_GetClosure(object o)
    PyObject* PyFunction_GetDefaults(object o)
    PyObject* PyFunction_GetGlobals(object o)
    PyObject* PyDict_GetItem(PyObject* d, PyObject* key)
    PyObject* PyCell_GET(PyObject* cell)
    Py_ssize_t PyTuple_GET_SIZE(PyObject* t)
    PyObject* PyTuple_GET_ITEM(PyObject* t, Py_ssize_t i)
    bint PyLong_CheckExact(PyObject* o)

cdef extern from *:
    """
    static inline int fd_add(int64_t a, int64_t b, int64_t* r) { return __builtin_add_overflow(a, b, r); }
    static inline int fd_sub(int64_t a, int64_t b, int64_t* r) { return __builtin_sub_overflow(a, b, r); }
    static inline int fd_mul(int64_t a, int64_t b, int64_t* r) { return __builtin_mul_overflow(a, b, r); }
    """
    int fd_add(int64_t a, int64_t b, int64_t* r) nogil
    int fd_sub(int64_t a, int64_t b, int64_t* r) nogil
    int fd_mul(int64_t a, int64_t b, int64_t* r) nogil

cdef enum:
    # Opcodes: equal to grid_program's (tested).
    G_CONST = 0
    G_ARG = 1
    G_SHAPE = 2
    G_STRIDE = 3
    G_NUMEL = 4
    G_CELL = 5
    G_ADD = 6
    G_SUB = 7
    G_MUL = 8
    G_FLOORDIV = 9
    G_MOD = 10
    G_MIN = 11
    G_MAX = 12
    G_NEG = 13
    G_OUT = 14
    G_DEFAULT = 15
    G_GLOBAL = 16
    STACK = 32

OPCODES = {"CONST": G_CONST, "ARG": G_ARG, "SHAPE": G_SHAPE, "STRIDE": G_STRIDE,
           "NUMEL": G_NUMEL, "CELL": G_CELL, "ADD": G_ADD, "SUB": G_SUB, "MUL": G_MUL,
           "FLOORDIV": G_FLOORDIV, "MOD": G_MOD, "MIN": G_MIN, "MAX": G_MAX, "NEG": G_NEG,
           "OUT": G_OUT, "DEFAULT": G_DEFAULT, "GLOBAL": G_GLOBAL}


cdef class GridProgram:
    def __cinit__(self):
        self.ops = NULL
        self.n_ops = 0

    def __dealloc__(self):
        free(self.ops)

    def __init__(self, program, guards=()):
        cdef Py_ssize_t i
        self.program = tuple(program)
        names = {index: name for kind, index, name in guards if kind == G_GLOBAL}
        self.global_names = tuple(names[i] for i in range(len(names)))
        self.guards = tuple(g for g in guards if g[0] != G_GLOBAL)
        self.n_ops = len(self.program)
        self.uses_captures = False
        self.ops = <int64_t*>malloc(max(self.n_ops, 1) * sizeof(int64_t))
        if self.ops == NULL:
            raise MemoryError()
        for i in range(self.n_ops):
            self.ops[i] = <int64_t>self.program[i]
        i = 0
        while i < self.n_ops:   # does any leaf read the function's cells or defaults?
            op = self.program[i]
            if op == G_CELL or op == G_DEFAULT or op == G_GLOBAL:
                self.uses_captures = True
            i += 3 if op in (G_SHAPE, G_STRIDE) else 2 if op in (G_CONST, G_ARG, G_NUMEL, G_CELL, G_DEFAULT, G_GLOBAL) else 1

    def __repr__(self):
        return f"GridProgram({self.program}, guards={len(self.guards)})"


cdef inline int64_t _floordiv(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a / b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef inline int64_t _mod(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t r = a % b
    if r != 0 and ((r < 0) != (b < 0)):
        r += b
    return r


cdef inline PyObject* _captured(PyObject* closure, PyObject* defaults, int64_t op, Py_ssize_t index):
    """A closure cell's contents or a positional default of the grid function (borrowed)."""
    cdef PyObject* holder = closure if op == G_CELL else defaults
    if holder == NULL or index >= PyTuple_GET_SIZE(holder):
        return NULL
    if op == G_CELL:
        return PyCell_GET(PyTuple_GET_ITEM(holder, index))
    return PyTuple_GET_ITEM(holder, index)


cdef inline int _captured_int(PyObject* closure, PyObject* defaults, int64_t op, Py_ssize_t index,
                              int64_t* out) except -1:
    cdef PyObject* value = _captured(closure, defaults, op, index)
    return _as_int(value, out)


cdef inline int _as_int(PyObject* value, int64_t* out) except -1:
    cdef int overflow = 0
    if value == NULL or not PyLong_CheckExact(value):
        return 0
    out[0] = PyLong_AsLongLongAndOverflow(<object>value, &overflow)
    if overflow != 0:
        return 0
    return 1


cdef int eval_grid(GridProgram prog, const int64_t* slots, const ArgView* views, Py_ssize_t nargs,
                   object fn, unsigned int* out) except -1:
    """Run ``prog``: 1 with ``out`` = (gx, gy, gz), or 0 where the caller must call the grid in
    Python (a guard failed, a division by zero, an overflow, a size outside [0, 2**32))."""
    cdef int64_t stack[STACK]
    cdef int sp = 0, k = 0
    cdef Py_ssize_t pc = 0, i, d
    cdef int64_t op, a, b, r
    cdef const int64_t* ops = prog.ops
    cdef PyObject* closure = NULL
    cdef PyObject* defaults = NULL
    cdef PyObject* scope = NULL
    cdef const ArgView* v
    if fn is not None and PyFunction_Check(fn):
        closure = PyFunction_GetClosure(fn)
        defaults = PyFunction_GetDefaults(fn)
        scope = PyFunction_GetGlobals(fn)
    elif prog.guards or prog.uses_captures:
        return 0
    for kind, index, expected in prog.guards:   # immutable captures assumed unchanged
        if _captured(closure, defaults, kind, index) != <PyObject*>expected:
            return 0
    while pc < prog.n_ops:
        op = ops[pc]
        if op == G_CONST:
            stack[sp] = ops[pc + 1]; sp += 1; pc += 2
        elif op == G_ARG:
            if ops[pc + 1] >= nargs:
                return 0
            stack[sp] = slots[ops[pc + 1]]; sp += 1; pc += 2
        elif op == G_SHAPE or op == G_STRIDE:
            i = ops[pc + 1]; d = ops[pc + 2]
            if i >= nargs:
                return 0
            v = &views[i]
            if d >= v.ndim:
                return 0
            if op == G_SHAPE:
                stack[sp] = v.shape[d]
            elif v.strides != NULL:
                stack[sp] = v.strides[d]
            else:   # compact: the product of the later sizes
                r = 1
                for i in range(d + 1, v.ndim):
                    if fd_mul(r, v.shape[i], &r):
                        return 0
                stack[sp] = r
            sp += 1; pc += 3
        elif op == G_NUMEL:
            i = ops[pc + 1]
            if i >= nargs or views[i].ndim < 0:
                return 0
            r = 1
            for d in range(views[i].ndim):
                if fd_mul(r, views[i].shape[d], &r):
                    return 0
            stack[sp] = r; sp += 1; pc += 2
        elif op == G_CELL or op == G_DEFAULT:
            if not _captured_int(closure, defaults, op, ops[pc + 1], &stack[sp]):
                return 0
            sp += 1; pc += 2
        elif op == G_GLOBAL:   # a module global int, by name (~20 ns): follows reassignment
            if scope == NULL or ops[pc + 1] >= PyTuple_GET_SIZE(<PyObject*>prog.global_names):
                return 0
            if not _as_int(PyDict_GetItem(scope, PyTuple_GET_ITEM(<PyObject*>prog.global_names, ops[pc + 1])),
                           &stack[sp]):
                return 0
            sp += 1; pc += 2
        elif op == G_NEG:
            if stack[sp - 1] == (-9223372036854775807 - 1):
                return 0
            stack[sp - 1] = -stack[sp - 1]; pc += 1
        elif op == G_OUT:
            sp -= 1
            if stack[sp] < 0 or stack[sp] > 0xFFFFFFFF or k >= 3:
                return 0
            out[k] = <unsigned int>stack[sp]; k += 1; pc += 1
        else:
            b = stack[sp - 1]; a = stack[sp - 2]; sp -= 1
            if op == G_ADD:
                if fd_add(a, b, &r): return 0
            elif op == G_SUB:
                if fd_sub(a, b, &r): return 0
            elif op == G_MUL:
                if fd_mul(a, b, &r): return 0
            elif op == G_FLOORDIV or op == G_MOD:
                if b == 0 or (a == (-9223372036854775807 - 1) and b == -1):
                    return 0
                r = _floordiv(a, b) if op == G_FLOORDIV else _mod(a, b)
            elif op == G_MIN:
                r = a if a < b else b
            elif op == G_MAX:
                r = a if a > b else b
            else:
                return 0
            stack[sp - 1] = r; pc += 1
    while k < 3:
        out[k] = 1; k += 1
    return 1


def evaluate(GridProgram prog, args, fn=None):
    """Evaluate ``prog`` on Python ``args`` through the C evaluator (tests: C vs Python twin).
    Ints and tensors only; returns (gx, gy, gz) or None."""
    import torch
    cdef Py_ssize_t n = len(args), i
    cdef int64_t* slots = <int64_t*>malloc(max(n, 1) * sizeof(int64_t))
    cdef ArgView* views = <ArgView*>malloc(max(n, 1) * sizeof(ArgView))
    cdef int64_t* dims = <int64_t*>malloc(max(n, 1) * 2 * 8 * sizeof(int64_t))
    cdef unsigned int out[3]
    cdef int d, rc
    keep = []
    try:
        for i in range(n):
            a = args[i]
            views[i].ndim = -1
            views[i].shape = NULL
            views[i].strides = NULL
            slots[i] = 0
            if isinstance(a, torch.Tensor):
                if a.dim() > 8:
                    return None
                for d in range(a.dim()):
                    dims[i * 16 + d] = a.shape[d]
                    dims[i * 16 + 8 + d] = a.stride(d)
                views[i].ndim = a.dim()
                views[i].shape = &dims[i * 16]
                views[i].strides = &dims[i * 16 + 8]
            elif type(a) is int:
                if not -(1 << 63) <= a < (1 << 63):
                    return None
                slots[i] = a
        rc = eval_grid(prog, slots, views, n, fn, out)
        return (out[0], out[1], out[2]) if rc else None
    finally:
        free(slots); free(views); free(dims)
