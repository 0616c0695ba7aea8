from libc.stdint cimport int64_t, int32_t

# What the key builder saw of one argument, for grid programs: a tensor's sizes and strides
# (pointers into the tensor's own metadata, valid while the call's argument tuple is alive;
# strides NULL means compact row-major), ndim -1 for a non-tensor.
ctypedef struct ArgView:
    const int64_t* shape
    const int64_t* strides
    int32_t ndim

cdef class GridProgram:
    """A traced grid (``fastdispatch.grid_program``) as C ops, plus its closure-cell guards."""
    cdef int64_t* ops
    cdef Py_ssize_t n_ops
    cdef readonly tuple guards       # ((CELL or DEFAULT, index, object), ...): identity-checked
    cdef readonly bint uses_captures # some leaf reads the grid function's cells, defaults, globals
    cdef readonly tuple global_names # names of the int globals GLOBAL leaves read
    cdef readonly tuple program      # the Python tuple it was built from (tests, repr)

cdef int eval_grid(GridProgram prog, const int64_t* slots, const ArgView* views, Py_ssize_t nargs,
                   object fn, unsigned int* out) except -1
