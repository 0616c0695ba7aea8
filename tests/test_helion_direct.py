"""The direct-launch outer entry of a replayed Helion launch (issue 15, ``helion_direct``).

CPU tier: ``Entry.result_index`` on both key builders (the Cython direct launch of an empty grid,
which returns before any driver call), the plan remapping as a pure function, and the checks
that decide whether a direct entry is the inner entry's launch. The end-to-end direct entry
needs compiled binaries: the GPU tests (marked ``gpu``) check it on Helion 1.4's bound kernels.
"""
from __future__ import annotations

import pytest
import torch

from fastdispatch import _keys_py, keys

try:
    from fastdispatch import _keys as _keys_c
except ImportError:
    _keys_c = None
try:   # the GPU tests' kernels (module globals: Helion refuses closures); the CPU tests need none
    import helion
    import helion.language as hl
except ImportError:
    helion = hl = None

needs_ext = pytest.mark.skipif(_keys_c is None, reason="fastdispatch._keys is not built")
PTR, I32, NULL = 0, 1, 6     # ParamKind values (launchers/_driver.pxd)


def _plan(kinds, args):
    return {"function": 0, "context": 0, "block_x": 128, "num_ctas": 1, "shared_bytes": 0,
            "param_kinds": list(kinds), "param_args": list(args), "attrs": []}


# -- Entry.result_index ---------------------------------------------------------------------------
class _NoExchangeApi:
    """The Cython key builder without torch's DLPack exchange API and with a NULL stream, so a
    MODE_DRIVER entry runs on the CPU: tensors are read by the twin, the empty grid (0, 1, 1)
    makes launch_plan return before any driver call."""

    def __enter__(self):
        _keys_c.configure(torch.Tensor, torch.nn.Parameter, None, lambda device: 0)

    def __exit__(self, *exc):
        _keys_c.configure(torch.Tensor, torch.nn.Parameter, keys._capsule, keys._raw_stream)


@needs_ext
def test_driver_entry_returns_the_argument_at_result_index():
    k = _keys_c.FastKernel(bytes([keys.ROLE_EXACT] * 3), lambda *a: "miss")
    x, y, out = torch.zeros(4), torch.zeros(4), torch.zeros(4)
    words = k.key_of(x, y, out)
    plan = _plan([PTR, PTR, PTR, NULL], [0, 1, 2, 0])
    entry = _keys_c.Entry(words, keys.MODE_DRIVER, plan=plan, grid=(0,), slow=lambda a: "slow",
                          result_index=2)
    assert entry.result_index == 2
    assert k.publish(entry)
    with _NoExchangeApi():
        assert k(x, y, out) is out                       # a hit through the direct launch
        assert entry.hits == 1
        assert entry.launch(k, (x, y, out)) is out       # the miss's own launch: not a hit
        assert entry.hits == 1
        plain = _keys_c.Entry(words, keys.MODE_DRIVER, plan=plan, grid=(0,), slow=lambda a: "slow")
        assert plain.result_index == -1 and plain.launch(k, (x, y, out)) is None
        beyond = _keys_c.Entry(words, keys.MODE_DRIVER, plan=plan, grid=(0,), slow=lambda a: "slow",
                               result_index=3)
        with pytest.raises(IndexError, match="result_index 3"):
            beyond.launch(k, (x, y, out))


@needs_ext
def test_driver_entry_slow_branches_return_what_slow_returns():
    """A guard that fires takes the slow launch, whose result is the call's (so a direct entry's
    slow must return what result_index names)."""
    k = _keys_c.FastKernel(bytes([keys.ROLE_EXACT] * 2), lambda *a: "miss")
    x, out = torch.zeros(4), torch.zeros(4)
    scope = {"BLOCK": 1}
    entry = _keys_c.Entry(k.key_of(x, out), keys.MODE_DRIVER, plan=_plan([PTR, PTR], [0, 1]),
                          grid=(0,), slow=lambda a: a[1], globals_guard=((scope, "BLOCK", 2),),
                          result_index=1)
    k.publish(entry)
    assert k(x, out) is out and entry.hits == 1


@needs_ext
def test_globals_guard_identity_then_equality():
    """The globals guard (Triton's "global changed" check, e.g. Helion's ``_BLOCK_SIZE_0 =
    tl.constexpr(1024)``): the same object or an equal one launches; another value, a
    removed name or a non-dict scope that changed takes the slow launch."""
    import triton.language as tl

    k = _keys_c.FastKernel(bytes([keys.ROLE_EXACT] * 2), lambda *a: "miss")
    x, out = torch.zeros(4), torch.zeros(4)
    block = tl.constexpr(1024)

    class Scope:   # not a dict: read with .get, as Triton does
        def __init__(self, **values):
            self.values = values

        def get(self, name, default=None):
            return self.values.get(name, default)

    cases = [({"B": block}, True), ({"B": tl.constexpr(1024)}, True), ({"B": tl.constexpr(512)}, False),
             ({}, False), ({"B": 1024}, True), (Scope(B=block), True), (Scope(B=7), False)]
    for scope, launches in cases:
        entry = _keys_c.Entry(k.key_of(x, out), keys.MODE_DRIVER, plan=_plan([PTR, PTR], [0, 1]),
                              grid=(0,), slow=lambda a: "slow", globals_guard=((scope, "B", block),))
        k.clear()
        k.publish(entry)
        with _NoExchangeApi():
            assert k(x, out) == (None if launches else "slow"), scope


def test_python_twin_entry_has_result_index():
    entry = _keys_py.Entry((1, 2), keys.MODE_DRIVER, slow=lambda a: a[0], result_index=0)
    assert entry.result_index == 0
    assert _keys_py.Entry((1, 2), keys.MODE_DRIVER, slow=lambda a: None).result_index == -1
    x = torch.zeros(2)
    assert entry.run((x,)) is x                          # the twin runs slow, which returns it


def test_every_role_gives_a_tensor_its_data_pointer_slot():
    """The twin's slots (the C builder's are the same, ``_keys_table.pxi``: ``slots[i] = data +
    byte_offset`` after every role's words): a direct entry may read a tensor's slot under the
    outer call's role where the inner call keyed it under another."""
    base = torch.zeros(64)
    t = base[3:35]
    for role in (keys.ROLE_CLASS, keys.ROLE_EXACT, keys.ROLE_VALUE, keys.ROLE_LAYOUT):
        _, slots, _ = _keys_py.build_words((t,), bytes([role]))
        assert slots == [t.data_ptr()]


# -- the plan remapping (pure) --------------------------------------------------------------------
def test_plan_constants_agree_with_the_triton_backend():
    import ast
    import inspect

    from fastdispatch.backends import helion_direct
    from fastdispatch.backends.triton import plan as triton_plan

    assert helion_direct.PARAM_NULL == triton_plan.PARAM_NULL
    assert (PTR, I32) == (triton_plan.PARAM_PTR, triton_plan.PARAM_I32)
    tree = ast.parse(inspect.getsource(triton_plan.launch_plan))
    (returned,) = [n.value for n in ast.walk(tree) if isinstance(n, ast.Return)]
    assert {k.value for k in returned.keys} == helion_direct.PLAN_FIELDS


def test_remap_plan_moves_argument_indices():
    from fastdispatch.backends.helion_direct import remap_plan

    inner = _plan([PTR, PTR, PTR, NULL, NULL], [0, 1, 2, 0, 0])
    frozen = {k: (list(v) if isinstance(v, list) else v) for k, v in inner.items()}
    assert remap_plan(inner, {0: 0, 1: 1, 2: 2}) == inner              # the common shape
    moved = remap_plan(inner, {0: 1, 1: 2, 2: 0, 3: 7})                # out first in the call
    assert moved["param_args"] == [1, 2, 0, 0, 0]
    assert moved["param_kinds"] == inner["param_kinds"]
    assert {k: v for k, v in moved.items() if k != "param_args"} == \
        {k: v for k, v in inner.items() if k != "param_args"}
    assert inner == frozen                                             # not modified


def test_remap_plan_refuses_what_it_cannot_map():
    from fastdispatch.backends.helion_direct import remap_plan

    # a runtime scalar among the constants (inner argument 3): no outer slot holds it
    assert remap_plan(_plan([PTR, PTR, I32], [0, 1, 3]), {0: 0, 1: 1}) is None
    assert remap_plan(_plan([PTR], [0]), {}) is None
    assert remap_plan({**_plan([PTR], [0]), "scratch_arg": 0}, {0: 0}) is None   # unknown field
    bad = _plan([PTR, PTR], [0])
    assert remap_plan(bad, {0: 0}) is None                             # kinds/args disagree
    assert remap_plan(_plan([NULL, NULL], [0, 0]), {}) == _plan([NULL, NULL], [0, 0])


def test_replay_describes_the_inner_call():
    from fastdispatch.backends.helion_replay import Replay

    r = Replay(None, None, (1,), (("arg", 1), ("const", 8), ("arg", 0)), (4, 1), None)
    assert r.inner_args(("a", "b")) == ("b", 8, "a", 4, 1)
    assert r.index_map() == {0: 1, 2: 0}


# -- the checks on the inner entry -----------------------------------------------------------------
def _replay(launch, result_index=2, grid=(4,)):
    from fastdispatch.backends.helion_replay import Replay

    return Replay(lambda *a: a[result_index], None, grid, launch, (4, 1, None), result_index)


def _inner(plan, *, pre_call=None, device=0, mode=keys.MODE_DRIVER, guard=()):
    """A published-looking inner entry and its recipe (a real Entry: a plan is just numbers)."""
    info = {"key": "k", "device": device, "name": "_helion_add2", "values": {}}
    recipe = dict(plan=plan, grid=None, grid_fn=None, grid_slow=None, slow=lambda a, g=None: None,
                  globals_guard=guard, watch_hooks=True, pre_call=pre_call, info=info)
    if mode == keys.MODE_DRIVER:
        entry = keys.Entry((1,), keys.MODE_DRIVER, **recipe)
    else:
        entry = keys.Entry((1,), mode, slow=recipe["slow"], info={**info, "fallback": "TRITON_INTERPRET=1"})
    return entry, recipe


ADD2 = (("arg", 0), ("arg", 1), ("arg", 2), ("const", 1024))


def test_direct_keywords_for_a_mappable_launch():
    from fastdispatch.backends.helion_direct import direct_keywords

    scope = {"_BLOCK_SIZE_0": 1024}
    entry, recipe = _inner(_plan([PTR, PTR, PTR, NULL, NULL], [0, 1, 2, 0, 0]),
                           guard=((scope, "_BLOCK_SIZE_0", 1024),))
    kw, why = direct_keywords(_replay(ADD2), 0, entry, recipe, {"path": "fast"}, "add2")
    assert why is None
    assert kw["plan"]["param_args"] == [0, 1, 2, 0, 0] and kw["grid"] == (4,)
    assert kw["result_index"] == 2
    assert kw["globals_guard"] is recipe["globals_guard"] and kw["watch_hooks"] is True
    assert kw["info"]["direct"] is True and kw["info"]["path"] == "fast"
    assert kw["info"]["recipe"] is recipe                 # keeps the inner binary referenced
    x, y, out = torch.zeros(2), torch.zeros(2), torch.zeros(2)
    assert kw["slow"]((x, y, out)) is out and kw["slow"]((x, y, out), (1,)) is out
    with pytest.raises(TypeError, match="computes its own grid"):
        kw["grid_slow"](None, (x, y, out), lambda meta: (1,))
    built = keys.Entry((1, 2), keys.MODE_DRIVER, **kw)
    assert built.mode == keys.MODE_DRIVER and built.result_index == 2
    # out first in the call, launched last (Helion orders launch arguments by first use)
    scale = (("arg", 1), ("arg", 2), ("arg", 0))
    kw, why = direct_keywords(_replay(scale, result_index=0), 0, entry, recipe, {}, "scale")
    assert why is None and kw["plan"]["param_args"] == [1, 2, 0, 0, 0] and kw["result_index"] == 0
    none_returned = _replay(ADD2, result_index=None)
    kw, why = direct_keywords(none_returned, 0, entry, recipe, {}, "add2")
    assert kw["result_index"] == -1


@pytest.mark.parametrize("case", ["slow_entry", "not_from_recipe", "no_recipe", "pre_call",
                                  "runtime_scalar", "other_device", "no_cuda_tensor",
                                  "grid_range", "grid_type"])
def test_direct_keywords_refuses(case):
    from fastdispatch.backends.helion_direct import direct_keywords

    plan = _plan([PTR, PTR, PTR, NULL], [0, 1, 2, 0])
    entry, recipe = _inner(plan)
    replay, device = _replay(ADD2), 0
    if case == "slow_entry":
        entry, _ = _inner(plan, mode=keys.MODE_SLOW)
    elif case == "not_from_recipe":
        entry = keys.Entry((1,), keys.MODE_DRIVER, **{**recipe, "info": dict(recipe["info"])})
    elif case == "no_recipe":
        recipe = None
    elif case == "pre_call":
        entry, recipe = _inner(plan, pre_call=lambda a: None)
    elif case == "runtime_scalar":
        entry, recipe = _inner(_plan([PTR, PTR, PTR, I32], [0, 1, 2, 3]))
    elif case == "other_device":
        device = 1
    elif case == "no_cuda_tensor":
        device = None
    elif case == "grid_range":
        replay = _replay(ADD2, grid=(2 ** 32,))
    elif case == "grid_type":
        replay = _replay(ADD2, grid=(4.0,))
    kw, why = direct_keywords(replay, device, entry, recipe, {}, "add2")
    assert kw is None and why


def test_direct_recipe_refuses_before_touching_the_inner_wrapper():
    from fastdispatch.backends.helion_direct import direct_recipe, first_cuda_device

    x = torch.zeros(2)
    kw, why = direct_recipe(_replay(ADD2), (x, x, x), {}, name="add2", knobs_keyed=False)
    assert kw is None and "knob" in why
    kw, why = direct_recipe(_replay(ADD2), (x, x, x), {}, name="add2", knobs_keyed=True)
    assert kw is None and "layers" in why                # inner None: not a TritonKernel
    assert first_cuda_device((x, 3, None)) is None


# -- allocations: Entry(allocs=...) and the host functions whose allocation replays ---------------
@needs_ext
def test_driver_entry_allocates_and_returns_the_allocation():
    """allocs: a new tensor per call (empty_like of the named argument, or make()), returned
    when result_index points past the call's arguments; the miss's own launch the same."""
    k = _keys_c.FastKernel(bytes([keys.ROLE_EXACT] * 2), lambda *a: "miss")
    x, y = torch.zeros(4, 3), torch.zeros(4, 3)
    words = k.key_of(x, y)
    made = []

    def like(t):
        made.append(torch.empty_like(t))
        return made[-1]
    plan = _plan([PTR, PTR, PTR, PTR, NULL], [0, 1, 2, 3, 0])
    entry = _keys_c.Entry(words, keys.MODE_DRIVER, plan=plan, grid=(0,), slow=lambda a: "slow",
                          allocs=((like, 1), (lambda: torch.empty(2), -1)), result_index=2)
    assert entry.allocs[0] == (like, 1) and entry.allocs[1][1] == -1
    k.publish(entry)
    with _NoExchangeApi():
        first = k(x, y)
        second = k(x, y)
        assert first is made[0] and second is made[1]          # the first allocation, per call
        assert first is not x and first.shape == (4, 3) and entry.hits == 2
        assert entry.launch(k, (x, y)) is made[2] and entry.hits == 2
        scratch = _keys_c.Entry(words, keys.MODE_DRIVER, plan=plan, grid=(0,), slow=lambda a: None,
                                allocs=((like, 0), (like, 0)), result_index=3)
        assert scratch.launch(k, (x, y)) is made[-1]
        with pytest.raises(ValueError, match="allocates nothing"):
            entry.floor_loop(k, (x, y), 1)
        bad_index = _keys_c.Entry(words, keys.MODE_DRIVER, plan=plan, grid=(0,), slow=lambda a: None,
                                  allocs=((like, 5),))
        with pytest.raises(IndexError, match="allocs\\[0\\] reads argument 5"):
            bad_index.launch(k, (x, y))
        not_tensor = _keys_c.Entry(words, keys.MODE_DRIVER, plan=plan, grid=(0,), slow=lambda a: None,
                                   allocs=((lambda: 3, -1),))
        with pytest.raises(TypeError, match="made int, not a tensor"):
            not_tensor.launch(k, (x, y))
    for bad in [((like,),), ((3, 0),), ((like, "0"),), ((like, -2),), (like,)]:
        with pytest.raises(ValueError, match="allocs"):
            _keys_c.Entry(words, keys.MODE_DRIVER, plan=plan, grid=(0,), slow=lambda a: None, allocs=bad)
    assert _keys_c.Entry(words, keys.MODE_DRIVER, plan=plan, grid=(0,), slow=lambda a: None,
                         allocs=()).allocs is None
    twin = _keys_py.Entry(words, keys.MODE_DRIVER, slow=lambda a: "slow", allocs=((like, 0),))
    assert twin.allocs == ((like, 0),) and twin.run((x, y)) == "slow"


# Host functions shaped like Helion's generated code (their source is read: module level).
def _host_alloc(t0, t1, *, _launcher=None):
    """doc"""
    m, n = t0.size()
    assert t1.size(0) == m, f"{t1.size(0)} rows for {m}"
    out = torch.empty_like(t0)
    tmp = torch.empty([m], dtype=torch.float32, device=t0.device)
    _BLOCK = 1024
    _launcher(_host_alloc, (m,), t0, t1, out, tmp, _BLOCK, num_warps=4, num_stages=1)
    return out


def _host_zeros(t0, t1, *, _launcher=None):
    out = torch.zeros_like(t0)
    _launcher(_host_zeros, (1,), t0, t1, out, num_warps=4)
    return out


def _host_fill(t0, t1, *, _launcher=None):
    out = torch.empty_like(t0)
    out.fill_(0)
    _launcher(_host_fill, (1,), t0, t1, out, num_warps=4)
    return out


def _host_copy(t0, t1, *, _launcher=None):
    out = t0.clone()
    _launcher(_host_copy, (1,), t0, t1, out, num_warps=4)
    return out


def _host_branch(t0, t1, *, _launcher=None):
    out = torch.empty_like(t0)
    if t0.size(0) > 2:
        pass
    _launcher(_host_branch, (1,), t0, t1, out, num_warps=4)
    return out


def _host_twice(t0, t1, *, _launcher=None):
    out = torch.empty_like(t0)
    _launcher(_host_twice, (1,), t0, t1, out, num_warps=4)
    _launcher(_host_twice, (1,), t0, out, out, num_warps=4)
    return out


def _host_view(t0, t1, *, _launcher=None):
    out = torch.empty([2 * t0.size(0), t0.size(1)], dtype=t0.dtype, device=t0.device)[: t0.size(0)]
    _launcher(_host_view, (1,), t0, t1, out, num_warps=4)
    return out


def _host_transposed(t0, t1, *, _launcher=None):
    out = torch.empty_strided([t0.size(0), t0.size(1)], [1, t0.size(0)], dtype=t0.dtype, device=t0.device)
    _launcher(_host_transposed, (1,), t0, t1, out, num_warps=4)
    return out


def _host_eps(x, w, eps, *, _launcher=None):
    m, n = x.size()
    out = torch.empty_like(x)
    _RDIM = 1024
    _launcher(_host_eps, (m,), x, w, out, eps, _RDIM, num_warps=4, num_stages=1)
    return out


def _host_eps_scaled(x, w, eps, *, _launcher=None):
    out = torch.empty_like(x)
    _launcher(_host_eps_scaled, (1,), x, w, out, eps * 2, num_warps=4, num_stages=1)
    return out


def _host_eps_grid(x, w, eps, *, _launcher=None):
    out = torch.empty_like(x)
    _launcher(_host_eps_grid, (int(eps * 100) + 1,), x, w, out, eps, num_warps=4, num_stages=1)
    return out


def _host_in_place(x, *, _launcher=None):   # an in-place kernel: returns None explicitly
    _launcher(_host_in_place, (1,), x, num_warps=4)
    return None


def _host_returns_call(x, *, _launcher=None):
    _launcher(_host_returns_call, (1,), x, num_warps=4)
    return x.sum()


def test_host_source_reason_reads_the_host_source():
    from fastdispatch.backends.helion_replay import host_source_reason

    assert host_source_reason(_host_alloc) is None
    assert host_source_reason(_host_in_place) is None
    assert "Return statement" in host_source_reason(_host_returns_call)
    assert host_source_reason(_host_transposed) is None
    assert "zeros_like" in host_source_reason(_host_zeros)
    assert "fill_" in host_source_reason(_host_fill)
    assert "clone" in host_source_reason(_host_copy)
    assert "If statement" in host_source_reason(_host_branch)
    assert "2 times" in host_source_reason(_host_twice)
    assert "no source" in host_source_reason(eval("lambda *a, _launcher=None: None"))
    fake = type(_host_alloc)(_host_alloc.__code__, {"torch": object()})
    assert "not the modules" in host_source_reason(fake)


class _FakeInner:
    """The inner fastdispatch wrapper a replay launches: records its calls."""

    def __init__(self, names):
        self.param_names, self.option_names, self.calls = names, ("num_warps", "num_stages"), []

    def __getitem__(self, grid):
        return lambda *a: self.calls.append((grid, a))


def _build(run, args, names):
    from fastdispatch.backends.helion_replay import build_replay

    inner = _FakeInner(names)
    return build_replay(run, args, bytes([keys.ROLE_EXACT] * len(args)), lambda fn: inner,
                        keys.ROLE_RUNTIME), inner


def test_build_replay_replays_the_allocations():
    x, y = torch.randn(3, 5), torch.randn(3, 5)
    replay, inner = _build(_host_alloc, (x, y), ("t0", "t1", "out", "tmp", "BLOCK"))
    assert replay is not None
    assert replay.launch == (("arg", 0), ("arg", 1), ("arg", 2), ("arg", 3), ("const", 1024))
    assert replay.allocs[0] == (torch.empty_like, 0)          # out: empty_like(t0)
    make, index = replay.allocs[1]                             # tmp: empty_strided, recorded
    assert index == -1 and make().shape == (3,) and make().dtype == torch.float32
    assert replay.result_index == 2 and replay.index_map()[2] == 2
    assert replay.alloc_devices == (x.device, x.device)
    got = replay.fn(x, y)
    (grid, launched), = inner.calls
    assert grid == (3,) and launched[0] is x and launched[1] is y and launched[2] is got
    assert got.shape == x.shape and got.stride() == x.stride() and got is not x
    assert launched[3].shape == (3,) and launched[4:] == (1024, 4, 1)
    assert replay.fn(x, y) is not got                          # a new tensor per call
    ext = replay.extended((x, y))
    assert len(ext) == 4 and ext[2].shape == x.shape
    transposed, _ = _build(_host_transposed, (x, y), ("t0", "t1", "out"))
    make, index = transposed.allocs[0]                         # not what empty_like(t0) gives
    assert index == -1 and make().stride() == (1, 3)


def test_build_replay_passes_a_runtime_float_through():
    """A class-keyed float (Helion's runtime ``eps``) that reaches the launch as itself reads the
    call's argument; one that changes a constant or the grid keeps the host function."""
    from fastdispatch.backends.helion_replay import build_replay

    x, w, eps = torch.randn(4, 8), torch.randn(8), 1e-5
    roles = bytes([keys.ROLE_EXACT, keys.ROLE_EXACT, keys.ROLE_RUNTIME])
    inner = _FakeInner(("x", "w", "out", "eps", "RDIM"))
    replay = build_replay(_host_eps, (x, w, eps), roles, lambda fn: inner, keys.ROLE_RUNTIME)
    assert replay is not None
    assert replay.launch == (("arg", 0), ("arg", 1), ("arg", 3), ("arg", 2), ("const", 1024))
    assert replay.index_map() == {0: 0, 1: 1, 2: 3, 3: 2} and replay.result_index == 3
    got = replay.fn(x, w, 0.5)
    (grid, launched), = inner.calls
    assert launched[3] == 0.5 and launched[2] is got and grid == (4,)
    for host in (_host_eps_scaled, _host_eps_grid):
        assert build_replay(host, (x, w, eps), roles, lambda fn: _FakeInner(("x", "w", "out", "eps")),
                            keys.ROLE_RUNTIME) is None
    assert build_replay(_host_eps, (x, w, float("nan")), roles, lambda fn: inner,
                        keys.ROLE_RUNTIME) is None           # no second value to record with
    assert build_replay(_host_eps, (x, w, 3), roles, lambda fn: inner,
                        keys.ROLE_RUNTIME) is None           # an int keyed by class


def _host_zero_then_accumulate(x, out, *, _launcher=None):   # out given, zeroed by the host
    out.zero_()
    _launcher(_host_zero_then_accumulate, (1,), x, out, num_warps=4)
    return out


def test_build_replay_refuses_in_place_host_work_before_running_it():
    """``out.zero_()`` before an atomic-add kernel: a replay would skip it, and a recording
    run would zero the miss's result in the call's own ``out``; refused from the source."""
    x, out = torch.randn(8), torch.full((8,), 3.0)
    replay, _ = _build(_host_zero_then_accumulate, (x, out), ("x", "out"))
    assert replay is None
    assert torch.equal(out, torch.full((8,), 3.0))            # the host function did not run


@pytest.mark.parametrize("host", [_host_zeros, _host_fill, _host_copy, _host_branch, _host_twice,
                                  _host_view])
def test_build_replay_keeps_the_host_function(host):
    x, y = torch.randn(3, 5), torch.randn(3, 5)
    replay, _ = _build(host, (x, y), ("t0", "t1", "out"))
    assert replay is None


# -- GPU: the direct entry end to end (Helion 1.4) ---------------------------------------------------
def _helion_14() -> bool:
    if helion is None:
        return False
    from fastdispatch.backends.helion import helion_version
    return helion_version().startswith("1.4")


needs_helion_14 = pytest.mark.skipif(
    not _helion_14(), reason="direct entries are built from Helion 1.4 replays only "
                             "(helion_direct.py); Helion >= 1.5 keeps its host function")


def _local_kernels():
    """Kernels of other shapes than the add kernels (defined here: Helion reads their source)."""
    @helion.kernel(config=helion.Config(block_sizes=[16, 32], num_warps=4, num_stages=1),
                   static_shapes=True)
    def scale_rows(out: torch.Tensor, x: torch.Tensor, w: torch.Tensor,
                   alpha: hl.constexpr) -> torch.Tensor:
        # out first in the call, launched last (Helion orders launch arguments by first use);
        # 2-D tiles, a broadcast row, a constexpr scalar.
        m, n = x.size()
        for tile_m, tile_n in hl.tile([m, n]):
            out[tile_m, tile_n] = x[tile_m, tile_n] * w[tile_n][None, :] * alpha
        return out

    @helion.kernel(config=helion.Config(block_sizes=[512], num_warps=4, num_stages=1),
                   static_shapes=True)
    def scale_(x: torch.Tensor, alpha: hl.constexpr) -> None:
        # in place, returns None (result_index -1)
        for tile in hl.tile(x.size(0)):
            x[tile] = x[tile] * alpha

    return scale_rows, scale_


def _direct_cases():
    """name -> (kernel, make_args(size, seed), index of the returned argument or None)."""
    from fastdispatch.kernels import helion_kernels as hk

    def gen(seed):
        return torch.Generator(device="cuda").manual_seed(seed)

    cases = {}
    for n, kern in hk.ADD_KERNELS.items():
        def make(size, seed, n=n):
            g = gen(seed)
            return (*[torch.randn(size, device="cuda", generator=g) for _ in range(n)],
                    torch.full((size,), float("nan"), device="cuda"))
        cases[f"add{n}"] = (kern, make, n)
        cases[f"add{n}_alloc"] = (hk.ADD_ALLOC_KERNELS[n], lambda size, seed, make=make: make(size, seed)[:-1],
                                  NEW)
    def make_rms(size, seed):   # bf16 rows of 256, a runtime eps that differs per call
        g = gen(seed)
        return (torch.randn(size // 256, 256, device="cuda", generator=g).to(torch.bfloat16),
                torch.randn(256, device="cuda", generator=g).to(torch.bfloat16), 1e-5 * (seed + 1))
    cases["rms_norm"] = (hk.rms_norm, make_rms, NEW)
    scale_rows, scale_ = _local_kernels()

    def make_rows(size, seed):
        g = gen(seed)
        return (torch.full((size // 64, 64), float("nan"), device="cuda"),
                torch.randn(size // 64, 64, device="cuda", generator=g),
                torch.randn(64, device="cuda", generator=g), 0.5)
    cases["scale_rows"] = (scale_rows, make_rows, 0)

    def make_inplace(size, seed):
        return (torch.randn(size, device="cuda", generator=gen(seed)), 3.0)
    cases["scale_"] = (scale_, make_inplace, None)
    return cases


#: ``result_at`` of a kernel returning a tensor its host function allocated.
NEW = "new"


def _poison_allocator(like: torch.Tensor) -> None:
    """Leave a NaN-filled block of ``like``'s size in the caching allocator, so the next
    allocation of that size (the kernel's output) starts as NaN, not as zeros or old results."""
    torch.full_like(like, float("nan"))
    torch.cuda.synchronize()


def _copies(args):
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)


def _check_call(wrapped, kern, make, result_at, size, seed):
    """One call of ``wrapped`` on fresh random data against Helion's own call on copies."""
    args = make(size, seed)
    theirs = _copies(args)
    expected = kern(*theirs)
    if result_at == NEW:
        _poison_allocator(expected)
    result = wrapped(*args)
    torch.cuda.synchronize()
    if result_at is None:
        assert result is None and expected is None
        got, want = args[0], theirs[0]
    elif result_at == NEW:                                # allocated per call, like Helion's
        assert all(result is not a and result.data_ptr() != a.data_ptr()
                   for a in args if isinstance(a, torch.Tensor))
        assert result.shape == expected.shape and result.stride() == expected.stride()
        got, want = result, expected
    else:
        assert result is args[result_at]                  # the call's own out, not a copy
        got, want = result, expected
    assert torch.equal(got, want) and not torch.isnan(got).any()


@pytest.mark.gpu
@needs_helion_14
@pytest.mark.parametrize("name", ["add2", "add8", "add16", "scale_rows", "scale_", "add2_alloc",
                                  "add8_alloc", "add16_alloc", "rms_norm"])
def test_gpu_direct_entry_is_bit_identical_to_helion(name):
    """After the miss the entry is the direct launch; each hit on fresh random data (outputs
    NaN-poisoned) equals Helion's own call bit for bit and returns the call's own ``out``; a
    second shape gets its own direct entry."""
    import fastdispatch

    kern, make, result_at = _direct_cases()[name]
    wrapped = fastdispatch.helion_kernel(kern)
    _check_call(wrapped, kern, make, result_at, 4096, 0)          # the miss: Helion's own call
    (entry,) = wrapped.entries()
    assert entry.mode == keys.MODE_DRIVER, entry.info.get("direct")
    assert entry.info["direct"] is True and entry.info["replay"] is True
    n_args = len(make(64, 0))
    assert entry.result_index == {None: -1, NEW: n_args}.get(result_at, result_at)
    assert (entry.allocs is not None) == (result_at == NEW)
    for seed in (1, 2, 3):
        _check_call(wrapped, kern, make, result_at, 4096, seed)   # hits: the direct launch
    assert entry.hits == 3
    _check_call(wrapped, kern, make, result_at, 8192, 4)          # a second shape: its entry
    assert wrapped.num_entries == 2
    other = next(e for e in wrapped.entries() if e is not entry)
    assert other.mode == keys.MODE_DRIVER and other.info["direct"] is True
    _check_call(wrapped, kern, make, result_at, 8192, 5)
    assert other.hits == 1 and entry.hits == 3


@pytest.mark.gpu
@needs_helion_14
def test_gpu_direct_entry_under_cuda_graph_capture():
    """Warmed up outside capture, the direct entry launches on the capturing stream like any
    MODE_DRIVER entry: the graph replays exactly; a miss in capture is still refused."""
    import fastdispatch
    from fastdispatch.kernels import helion_kernels as hk

    k = fastdispatch.helion_kernel(hk.add2)
    x, y = torch.randn(4096, device="cuda"), torch.randn(4096, device="cuda")
    out = torch.full_like(x, float("nan"))
    expected = hk.add2(x, y, torch.empty_like(x))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        k(x, y, out)                                  # the miss, outside capture
        k(x, y, out)
    torch.cuda.current_stream().wait_stream(side)
    (entry,) = k.entries()
    assert entry.mode == keys.MODE_DRIVER and entry.info["direct"] is True
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(10):
            assert k(x, y, out) is out
    assert entry.hits == 11
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, expected)
    z = torch.randn(2048, device="cuda")
    with pytest.raises(RuntimeError, match="(?i)warm up first"):
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            k(z, z.clone(), torch.empty_like(z))


@pytest.mark.gpu
@needs_helion_14
def test_gpu_allocating_direct_entry_under_cuda_graph_capture():
    """An allocating direct entry captured after warm-up: its allocation comes from the graph's
    pool, and each replay rewrites that tensor with the graph's inputs."""
    import fastdispatch
    from fastdispatch.kernels import helion_kernels as hk

    k = fastdispatch.helion_kernel(hk.add2_alloc)
    x, y = torch.randn(4096, device="cuda"), torch.randn(4096, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        k(x, y)                                       # the miss, outside capture
        k(x, y)
    torch.cuda.current_stream().wait_stream(side)
    (entry,) = k.entries()
    assert entry.mode == keys.MODE_DRIVER and entry.allocs is not None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = k(x, y)
    captured.fill_(float("nan"))
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, hk.add2_alloc(x, y))


_CFG = helion.Config(block_sizes=[256], num_warps=4, num_stages=1) if helion else None
_CFG_OTHER = helion.Config(block_sizes=[128], num_warps=2, num_stages=1) if helion else None


def _own_add():
    @helion.kernel(config=_CFG, static_shapes=True)
    def direct_add(x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        for tile in hl.tile(out.size(0)):
            out[tile] = x[tile] + y[tile]
        return out
    return direct_add


@pytest.mark.gpu
@needs_helion_14
def test_gpu_set_config_and_reset_clear_direct_entries():
    """set_config re-points Helion's bound kernel: the direct entry (a launch of the old
    binary with the old grid) is dropped, and the next call builds one for the new config;
    reset drops them too."""
    import fastdispatch

    kern = _own_add()
    k = fastdispatch.helion_kernel(kern)
    x, y = torch.randn(4096, device="cuda"), torch.randn(4096, device="cuda")
    k(x, y, torch.empty_like(x))
    (entry,) = k.entries()
    assert entry.mode == keys.MODE_DRIVER and entry.info["config"] == _CFG
    kern.bind((x, y, torch.empty_like(x))).set_config(_CFG_OTHER)
    assert k.num_entries == 0
    out = torch.full_like(x, float("nan"))
    assert k(x, y, out) is out                        # a miss: Helion's call with the new config
    (entry2,) = k.entries()
    assert entry2.mode == keys.MODE_DRIVER and entry2.info["config"] == _CFG_OTHER
    assert entry2.info["inner"]["key"] != entry.info["inner"]["key"]   # another binary
    out.fill_(float("nan"))
    assert k(x, y, out) is out and entry2.hits == 1
    torch.cuda.synchronize()
    assert torch.equal(out, x + y)
    kern.reset()
    assert k.num_entries == 0


@pytest.mark.gpu
@needs_helion_14
def test_gpu_direct_entry_falls_back_to_the_replay_for_launch_hooks():
    """A Triton launch hook makes the direct entry take its slow launch (the replay, then the
    inner wrapper's Triton launcher), which still returns the call's out; the hook sees it."""
    import triton.knobs as triton_knobs

    import fastdispatch
    from fastdispatch.kernels import helion_kernels as hk

    k = fastdispatch.helion_kernel(hk.add2)
    x, y = torch.randn(4096, device="cuda"), torch.randn(4096, device="cuda")
    k(x, y, torch.empty_like(x))
    (entry,) = k.entries()
    assert entry.mode == keys.MODE_DRIVER
    seen = []

    def hook(metadata):
        seen.append(metadata)

    triton_knobs.runtime.launch_enter_hook.add(hook)
    try:
        out = torch.full_like(x, float("nan"))
        assert k(x, y, out) is out
    finally:
        triton_knobs.runtime.launch_enter_hook.remove(hook)
    torch.cuda.synchronize()
    assert len(seen) == 1 and torch.equal(out, x + y)
    assert k(x, y, out) is out and len(seen) == 1     # hook gone: the direct launch again
