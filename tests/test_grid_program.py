"""Grid programs (issue 13, item 1): a grid callable traced once on symbolic stand-ins
(``fastdispatch.grid_program``) and evaluated per call in C (``fastdispatch._grid``).

Property tests: for random argument values the C evaluator, its Python twin
(``grid_program.evaluate``) and the real grid callable agree, for the grids real code writes
(Triton's ``lambda META: (triton.cdiv(n, META["BLOCK"]),)`` over closure ints, the matmul
tutorial's ``cdiv(M, BM) * cdiv(N, BN)``, 2-D/3-D grids, tensor sizes and strides, min/max,
floor division and modulo of negative operands, argument-style grids). A program is traced on
one call and evaluated on others (as the hot path does: the entry's program, a fresh lambda of
the same code per call). Grids a program cannot express raise ``NotTraceable``; a division by
zero or an out-of-range size makes both evaluators give up (None), so the caller runs the grid
in Python. CPU only: tensors are meta tensors (any size, no memory)."""
import math

import pytest
import torch
import triton
from hypothesis import HealthCheck, example, given, settings, strategies as st

from fastdispatch import grid_program as gp

_grid = pytest.importorskip("fastdispatch._grid", reason="fastdispatch._grid is not built")

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
SMALL = st.integers(-(1 << 20), 1 << 20)
POSITIVE = st.integers(1, 1 << 20)
EXTREME = st.one_of(SMALL, st.sampled_from([0, 1, -1, I64_MIN, I64_MAX, I64_MIN + 1, 1 << 32,
                                             (1 << 32) - 1, 1 << 31, -(1 << 31), 1 << 62]),
                    st.integers(I64_MIN, I64_MAX))
BLOCKS = st.sampled_from([1, 16, 64, 128, 1024])


def real_sizes(call):
    """The real grid as (gx, gy, gz), or None where Python raises on it or a size is outside
    [0, 2**32) (what the evaluators must give up on)."""
    try:
        result = call()
    except ZeroDivisionError:
        return None
    result = (result,) if isinstance(result, int) else tuple(result)
    if not all(0 <= v < (1 << 32) for v in result):
        return None
    return result + (1,) * (3 - len(result))


def trace_meta(grid, meta):
    program, guards = gp.trace(grid, lambda fn: fn(meta))
    return program, guards


def both(program, guards, args, fn):
    """(C result, Python twin result) of ``program`` on ``args`` with ``fn``'s closure."""
    c = _grid.evaluate(_grid.GridProgram(program, guards), tuple(args), fn)
    py = gp.evaluate(program, tuple(args), fn.__closure__ if fn is not None else None)
    return c, py


def check_agree(program, guards, args, fn, real, exact=True):
    c, py = both(program, guards, args, fn)
    assert c == py, (program, args, c, py)
    if exact:   # small operands: no int64 overflow is possible, so nobody may give up
        assert c == real, (program, args, c, real)
    else:       # extreme operands: C may give up on an int64 overflow Python does not have
        assert c is None or c == real, (program, args, c, real)
        if real is None:
            assert c is None
    return c


# -- opcodes -----------------------------------------------------------------------------------
def test_opcodes_agree():
    """The C evaluator's opcodes are the tracer's constants, one for one."""
    names = ["CONST", "ARG", "SHAPE", "STRIDE", "NUMEL", "CELL", "ADD", "SUB", "MUL", "FLOORDIV",
             "MOD", "MIN", "MAX", "NEG", "OUT", "DEFAULT", "GLOBAL"]
    assert _grid.OPCODES == {name: getattr(gp, name) for name in names}
    assert len(set(_grid.OPCODES.values())) == len(names)


# -- META grids over closure ints ------------------------------------------------------------------
def cdiv_grid(n):
    return lambda META: (triton.cdiv(n, META["BLOCK"]),)


def matmul_grid(M, N):
    return lambda META: (triton.cdiv(M, META["BLOCK_M"]) * triton.cdiv(N, META["BLOCK_N"]),)


def grid_2d(rows, cols):
    return lambda META: (rows, triton.cdiv(cols, META["BLOCK"]))


def grid_3d(b, h, n):
    return lambda META: (triton.cdiv(n, META["BLOCK_M"]), b * h, 1)


def minmax_grid(n, cap):
    return lambda META: (min(triton.cdiv(n, META["BLOCK"]), cap), max(n // META["BLOCK"], 1),
                         max(1, min(n, cap, 7)))


def test_cdiv_grid_is_a_program_over_the_closure_cell():
    """Triton's convention: the closure int is a CELL leaf, the constexpr a constant."""
    program, guards = trace_meta(cdiv_grid(1000), {"BLOCK": 128})
    assert guards == ()
    assert gp.CELL in program and program[-1] == gp.OUT
    fn = cdiv_grid(5000)     # a fresh lambda of the same code, as a per-call grid is
    assert _grid.evaluate(_grid.GridProgram(program), (), fn) == (40, 1, 1)
    assert gp.evaluate(program, (), fn.__closure__) == (40, 1, 1)


@SETTINGS
@given(n0=POSITIVE, n=SMALL, block=BLOCKS)
def test_cdiv_property(n0, n, block):
    program, guards = trace_meta(cdiv_grid(n0), {"BLOCK": block})
    fn = cdiv_grid(n)
    check_agree(program, guards, (), fn, real_sizes(lambda: fn({"BLOCK": block})))


@SETTINGS
@given(M=SMALL, N=SMALL, bm=BLOCKS, bn=BLOCKS)
def test_matmul_tutorial_grid_property(M, N, bm, bn):
    meta = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": 32, "GROUP_M": 8}
    program, guards = trace_meta(matmul_grid(64, 64), meta)
    fn = matmul_grid(M, N)
    check_agree(program, guards, (), fn, real_sizes(lambda: fn(meta)))


@SETTINGS
@given(a=SMALL, b=SMALL, c=SMALL, block=BLOCKS)
def test_2d_3d_grids_property(a, b, c, block):
    meta = {"BLOCK": block, "BLOCK_M": block}
    for make, n_cells in ((grid_2d, 2), (grid_3d, 3)):
        program, guards = trace_meta(make(*[7] * n_cells), meta)
        fn = make(*(a, b, c)[:n_cells])
        check_agree(program, guards, (), fn, real_sizes(lambda: fn(meta)))


@SETTINGS
@given(n=SMALL, cap=SMALL, block=BLOCKS)
def test_min_max_property(n, cap, block):
    program, guards = trace_meta(minmax_grid(100, 10), {"BLOCK": block})
    fn = minmax_grid(n, cap)
    check_agree(program, guards, (), fn, real_sizes(lambda: fn({"BLOCK": block})))


@SETTINGS
@given(a=SMALL, b=SMALL, c=SMALL, block=BLOCKS)
@example(a=-7, b=2, c=3, block=1)      # floor towards -inf: -7 // 2 == -4, -7 % 2 == 1
@example(a=7, b=-2, c=-3, block=1)
@example(a=5, b=0, c=1, block=1)       # division by zero: both give up
def test_floordiv_mod_negative_operands_property(a, b, c, block):
    grid = lambda a, b, c: lambda META: ((a // b) % c + META["BLOCK"], (a - c) % b, -(a // -b))  # noqa: E731
    program, guards = trace_meta(grid(9, 4, 5), {"BLOCK": block})
    fn = grid(a, b, c)
    check_agree(program, guards, (), fn, real_sizes(lambda: fn({"BLOCK": block})))


@SETTINGS
@given(a=EXTREME, b=EXTREME, c=EXTREME)
@example(a=I64_MIN, b=-1, c=1)         # int64 overflow of the quotient
@example(a=I64_MIN, b=1, c=-1)         # -(I64_MIN)
@example(a=I64_MAX, b=I64_MAX, c=0)
def test_extreme_operands_c_equals_twin(a, b, c):
    """Near the int64 range: the twin gives up exactly where C does; a C result is the real one."""
    grid = lambda a, b, c: lambda META: (a * b // META["D"] + c, -a + (b - c), max(a, b) % (c + 0))  # noqa: E731
    program, guards = trace_meta(grid(3, 4, 5), {"D": 1})
    fn = grid(a, b, c)
    check_agree(program, guards, (), fn, real_sizes(lambda: fn({"D": 1})), exact=False)


def test_mod_of_int64_min_by_minus_one():
    """I64_MIN % -1 is 0 in Python (in range): the twin and C must agree on it."""
    grid = lambda a, b: lambda META: (a % b,)  # noqa: E731
    program, guards = trace_meta(grid(3, 4), {})
    c, py = both(program, guards, (), grid(I64_MIN, -1))
    assert c == py


# -- argument-style grids, tensor sizes and strides --------------------------------------------
def meta_tensor(shape, strides):
    return torch.empty_strided(shape, strides, device="meta")


def shapes(min_dims=1, max_dims=3):
    return st.lists(st.integers(0, 1 << 12), min_size=min_dims, max_size=max_dims)


@st.composite
def tensor_and_strides(draw, min_dims=2, max_dims=3):
    shape = draw(shapes(min_dims, max_dims))
    strides = draw(st.lists(st.integers(0, 1 << 20), min_size=len(shape), max_size=len(shape)))
    return meta_tensor(shape, strides)


ARG_GRIDS = {
    "add": lambda x, y, out, n: (triton.cdiv(n, 1024),),
    "shape0": lambda x, y, out, n: (triton.cdiv(x.shape[0], 16), x.shape[1]),
    "numel": lambda x, y, out, n: (triton.cdiv(x.numel(), 256),),
    "size1": lambda x, y, out, n: (x.size(1), triton.cdiv(y.size(0), 4), out.size(-1)),
    "stride0": lambda x, y, out, n: (x.stride(0) // 2 + 1, y.stride(-1) % 7),
    "minmax": lambda x, y, out, n: (min(x.shape[0], n), max(y.numel(), 1), min(max(n, 0), 65535)),
    "neg": lambda x, y, out, n: ((n - x.shape[0]) // 3 % 1024, (n % -5) + 5, -(-n // 16)),
    "prod": lambda x, y, out, n: (math.prod(x.shape) // max(out.shape[0], 1),),
}


@pytest.mark.parametrize("name", sorted(ARG_GRIDS))
@SETTINGS
@given(x=tensor_and_strides(), y=tensor_and_strides(), out=tensor_and_strides(), n=SMALL)
def test_argument_grids_property(name, x, y, out, n):
    """``lambda x, y, out, n: ...`` traced with arg_stand_ins on one call, evaluated on another."""
    grid = ARG_GRIDS[name]
    first = tuple(meta_tensor([8] * t.dim(), [1] * t.dim()) for t in (x, y, out)) + (4096,)
    program, guards = gp.trace(grid, lambda fn: fn(*gp.arg_stand_ins(first)))
    args = (x, y, out, n)
    check_agree(program, guards, args, grid, real_sizes(lambda: grid(*args)))


def test_arg_stand_ins_kinds():
    """Tensors are symbolic, ints are ARG leaves, constexprs and None concrete, floats opaque."""
    t = meta_tensor([4, 5], [5, 1])
    x, n, block, none, alpha = gp.arg_stand_ins((t, 7, 64, None, 0.5), constexpr_positions={2})
    assert isinstance(x, gp.SymTensor) and x.ndim == 2 and x.dtype == t.dtype
    assert isinstance(n, gp.Sym) and n.ops == (gp.ARG, 1)
    assert block == 64 and none is None and alpha is gp.OPAQUE


def test_constexpr_argument_stays_concrete():
    """A grid reading a constexpr argument bakes it in (the key holds it exactly)."""
    grid = lambda x, n, BLOCK: (triton.cdiv(n, BLOCK),)  # noqa: E731
    args = (meta_tensor([10], [1]), 1000, 128)
    program, _ = gp.trace(grid, lambda fn: fn(*gp.arg_stand_ins(args, constexpr_positions={2})))
    assert gp.ARG in program and 128 in program and gp.SHAPE not in program
    assert _grid.evaluate(_grid.GridProgram(program), (args[0], 5000, 128)) == (40, 1, 1)


# -- untraceable grids ---------------------------------------------------------------------------
def test_untraceable_grids_raise():
    """Anything needing a value (a branch, true division, bit tricks, a float) is refused."""
    n = 1000
    meta = {"BLOCK": 128}
    refused_meta = {
        "comparison": lambda META: (triton.cdiv(n, META["BLOCK"]) if n > 0 else 1,),
        "if": lambda META: ((1,) if n == 0 else (n,)),
        "math.ceil": lambda META: (math.ceil(n / META["BLOCK"]),),
        "next_power_of_2": lambda META: (triton.next_power_of_2(n),),
        "int()": lambda META: (int(n) // META["BLOCK"],),
        "bit shift": lambda META: (n >> 7,),
        "abs": lambda META: (abs(n),),
        "four dims": lambda META: (n, 1, 1, 1),
        "bool size": lambda META: (True,),
    }
    for what, grid in refused_meta.items():
        with pytest.raises(gp.NotTraceable):
            trace_meta(grid, meta)
        assert what   # (named for the failure message)
    t = meta_tensor([8], [1])
    refused_args = {
        "float argument": lambda x, alpha, n: (triton.cdiv(n, 16) * alpha,),
        "float used in a branch": lambda x, alpha, n: ((n,) if alpha > 0 else (1,)),
        "data_ptr": lambda x, alpha, n: (x.data_ptr() % 16,),
        "tensor comparison": lambda x, alpha, n: ((x.shape[0],) if x.shape[0] > 4 else (4,)),
    }
    for what, grid in refused_args.items():
        with pytest.raises(gp.NotTraceable):
            gp.trace(grid, lambda fn: fn(*gp.arg_stand_ins((t, 0.5, 1000))))


def test_untraceable_non_function_grid():
    """A callable object that is not a plain function cannot be rebuilt: NotTraceable."""
    class Grid:
        def __call__(self, META):
            return (4,)

    with pytest.raises(gp.NotTraceable):
        trace_meta(Grid(), {})


# -- giving up ---------------------------------------------------------------------------------------
def test_division_by_zero_and_out_of_range_give_none():
    """Both evaluators return None (the caller runs the grid in Python, raising Python's error)."""
    grid = lambda n, d: lambda META: (n // d, n % META["B"])  # noqa: E731
    program, guards = trace_meta(grid(10, 3), {"B": 4})
    assert both(program, guards, (), grid(10, 3)) == ((3, 2, 1), (3, 2, 1))
    assert both(program, guards, (), grid(10, 0)) == (None, None)          # // 0
    assert both(program, guards, (), grid(-10, 3)) == (None, None)         # negative size
    assert both(program, guards, (), grid(3 * (1 << 32), 3)) == (None, None)   # >= 2**32
    assert both(program, guards, (), grid(1 << 64, 3)) == (None, None)     # cell beyond int64
    mod0 = lambda n, d: lambda META: (n % d,)  # noqa: E731
    program, guards = trace_meta(mod0(10, 3), {})
    assert both(program, guards, (), mod0(10, 0)) == (None, None)
    mul = lambda a: lambda META: (a * a * a // (a * a),)  # noqa: E731
    program, guards = trace_meta(mul(3), {})
    assert both(program, guards, (), mul(1 << 30)) == (None, None)         # int64 overflow midway
    assert real_sizes(lambda: mul(1 << 30)({})) == (1 << 30, 1, 1)          # (Python has no overflow)


def test_non_int_cell_in_an_int_slot_gives_none():
    """A cell traced as an int that later holds a float/None: both give up."""
    program, guards = trace_meta(cdiv_grid(100), {"BLOCK": 16})
    for value in (100.0, None, "100", True):
        c, py = both(program, guards, (), cdiv_grid(value))
        assert c is None and py is None, value


def test_grid_without_a_function_gives_up():
    """A program with CELL leaves evaluated without a function (no closure): None."""
    program, guards = trace_meta(cdiv_grid(100), {"BLOCK": 16})
    assert _grid.evaluate(_grid.GridProgram(program, guards), (), None) is None


# -- closure-cell guards -----------------------------------------------------------------------------
def test_non_int_cell_is_guarded_by_identity():
    """A non-int cell is concrete in the program and guarded: another object there (a new
    closure of the same code) makes C give up; the same object keeps the C result."""
    def make(dims, n):
        return lambda META: (triton.cdiv(n, META["BLOCK"]) * len(dims), dims[0])

    dims = (3, 4)
    program, guards = trace_meta(make(dims, 100), {"BLOCK": 16})
    assert [obj for _, _, obj in guards] == [dims]
    prog = _grid.GridProgram(program, guards)
    assert _grid.evaluate(prog, (), make(dims, 1000)) == (63 * 2, 3, 1)
    assert _grid.evaluate(prog, (), make((5, 6, 7), 1000)) is None
    assert _grid.evaluate(prog, (), make((3, 4), 1000)) in (None, (126, 3, 1))   # equal, not identical


def test_closure_tensor_is_not_traced():
    """A closure tensor (flash attention's ``q.shape[2]``) is mutable (``resize_``): the grid
    is called in Python, never frozen into a program (nor kept alive by one)."""
    def make(q):
        return lambda META: (triton.cdiv(q.shape[2], META["BLOCK_M"]), q.shape[0] * q.shape[1], 1)

    q = meta_tensor([2, 3, 100, 64], [19200, 6400, 64, 1])
    with pytest.raises(gp.NotTraceable, match="Tensor"):
        trace_meta(make(q), {"BLOCK_M": 16})


# Module-level state a grid may read (servers keep sizes in a config object or a global).
GLOBAL_N = 1000


class _Config:
    n = 1000


def test_grid_reading_a_global_follows_the_global():
    """A grid reading a module global int (``BLOCK = 1024`` style): C reads it by name on every
    call, so after the global changes C gives the new grid -- never the traced value's."""
    global GLOBAL_N
    grid = lambda META: (triton.cdiv(GLOBAL_N, META["BLOCK"]),)  # noqa: E731
    saved = GLOBAL_N
    try:
        program, guards = trace_meta(grid, {"BLOCK": 128})
        prog = _grid.GridProgram(program, guards)
        assert _grid.evaluate(prog, (), grid) == (8, 1, 1)
        GLOBAL_N = 5000
        assert _grid.evaluate(prog, (), grid) == (40, 1, 1)
        assert gp.evaluate(program, (), None, None, guards, grid.__globals__) == (40, 1, 1)
        GLOBAL_N = "5000"                                   # no longer an int: C gives up
        assert _grid.evaluate(prog, (), grid) is None
    finally:
        GLOBAL_N = saved
    with pytest.raises(gp.NotTraceable, match="_Config"):   # a mutable global object refuses
        trace_meta(lambda META: (triton.cdiv(_CONFIG.n, META["BLOCK"]),), {"BLOCK": 128})


_CONFIG = _Config()


def test_grid_reading_a_closure_objects_attribute_follows_it():
    """``lambda META: (cdiv(self.n, META["BLOCK"]),)`` (a method's grid): after ``self.n``
    changes, C gives the new grid or gives up -- the identity guard on ``self`` cannot see it."""
    cfg = _Config()
    sizes = [1000]
    grids = {"attribute": lambda META: (triton.cdiv(cfg.n, META["BLOCK"]),),
             "list item": lambda META: (triton.cdiv(sizes[0], META["BLOCK"]),)}
    for name, grid in grids.items():   # mutable captures: called in Python, never frozen
        with pytest.raises(gp.NotTraceable, match="mutable"):
            trace_meta(grid, {"BLOCK": 128})


def test_grid_with_a_default_argument_follows_it():
    """The default-argument capture idiom (``lambda META, n=n: ...``, a fresh lambda per call):
    the hot path files a per-call grid's program under its code object, so a program traced on
    one lambda is evaluated on the next; C must give that lambda's grid or give up."""
    def make(n):
        return lambda META, n=n: (triton.cdiv(n, META["BLOCK"]),)

    program, guards = trace_meta(make(1000), {"BLOCK": 128})
    fn = make(5000)
    c = _grid.evaluate(_grid.GridProgram(program, guards), (), fn)
    assert c is None or c == (40, 1, 1), f"stale grid {c} (real {fn({'BLOCK': 128})})"
