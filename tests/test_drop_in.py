"""Drop-in Triton (issue 14) and the serving-side key/table behaviour (issue 13), CPU only.

a. Interpreter numerics (``TRITON_INTERPRET=1``, one subprocess): every kernel of
   ``tests/real_kernels.py`` through ``fastdispatch.triton_kernel(kernel)[grid]`` equals Triton's
   own launch of the same kernel object bit for bit and is close to torch (fp32: torch.testing's
   defaults, rtol 1.3e-6, atol 1e-5); a second and third call (a new shape, then the first shape
   again) on the same wrapper still match; autotuned kernels tune once per tuning key.
b. Wrap forms: JITFunction, Heuristics, Autotuner and both nestings; plain functions refused.
c. AOT compiles for sm_90 bind like a call (keywords, omitted constexpr default, per-call
   ``num_warps``, heuristics over autotune with a decision); a grid error is raised before
   anything is published.
d. Keys: a new shape of the same class is the same key; autotune key values are not; keyword
   calls bound in C reach the entry the positional call does (hypothesis, both key builders).
e. Heuristics never stale (hypothesis over int/float/bool/tensor-shape arguments): the binary a
   call launches was built for the heuristic values Triton computes for that call.
f. The autotune decision cache: a second process reuses, corrupt files are rejected, another
   GPU's decision is not found, export/import round trip, foreign files refused.
g. Bounded tables: 100k distinct keys, entries stay under the bound, memory flat, CLOCK keeps
   hot entries.
h. stats: a first call that fails is not a hit.
"""
import functools
import glob
import json
import os
import resource
import subprocess
import sys
import textwrap
import tracemalloc
import types

import pytest
import torch
import triton
import triton.language as tl
from hypothesis import HealthCheck, given, settings, strategies as st
from triton.backends.compiler import GPUTarget
from triton.runtime.autotuner import Autotuner, Heuristics

import fastdispatch
from fastdispatch import keys
from fastdispatch.backends import triton as tb
from fastdispatch.backends.reference import reference_kernel
from fastdispatch.backends.triton import decisions
from fastdispatch.knobs import knobs, scope

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)
import real_kernels as rk  # noqa: E402

_kernel_module = sys.modules["fastdispatch.backends.triton.kernel"]
_offpath_module = sys.modules["fastdispatch.backends.triton.offpath"]
H100 = GPUTarget("cuda", 90, 32)
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
needs_cython = pytest.mark.skipif(keys.IMPLEMENTATION != "cython",
                                  reason="needs the compiled key builder")


def _subprocess_env(cache_dir):
    return dict(os.environ, FASTDISPATCH_CACHE_DIR=str(cache_dir),
                PYTHONPATH=os.pathsep.join([REPO, TESTS, os.environ.get("PYTHONPATH", "")]))


# == a. interpreter numerics =======================================================================
INTERPRETER_SCRIPT = textwrap.dedent("""
    import json, torch, fastdispatch
    import real_kernels as rk

    def compare(triton_out, fast_out, ref):
        try:
            torch.testing.assert_close(fast_out, ref)   # fp32: rtol 1.3e-6, atol 1e-5
            close = None
        except AssertionError as exc:
            close = str(exc)[:400]
        return {"bitwise": bool(torch.equal(triton_out, fast_out)), "close": close}

    import triton
    # Triton 3.6's interpreter cannot run the matmul kernel itself (its own launch raises
    # InterpreterError "only 0-dimensional arrays can be converted to Python scalars"); the GPU
    # test runs it there. 3.7+ interprets it.
    old_interpreter = tuple(int(v) for v in triton.__version__.split(".")[:2]) < (3, 7)
    skip = {"matmul"} if old_interpreter else set()
    report = {"cases": {}, "calls": {}, "skipped": sorted(skip)}
    for name, case in rk.CASES.items():
        if name not in skip:
            report["cases"][name] = compare(*case())

    g = torch.Generator().manual_seed(1234)
    rand = lambda *shape: torch.randn(*shape, generator=g)
    def mm(shape):
        M, N, K = shape
        a, b = rand(M, K), rand(K, N)
        return (a, b), (lambda k: rk.matmul(k, a, b)), a @ b
    def sc(n):
        x = rand(n)
        return (x,), (lambda k: rk.scale(k, x, 1.5)), x * 1.5
    def sm(shape):
        x = rand(*shape)
        return (x,), (lambda k: rk.softmax(k, x)), torch.softmax(x, dim=1)
    def ax(n):
        x, y = rand(n), rand(n)
        return (x, y), (lambda k: rk.axpy(k, x, y, 0.5)), 0.5 * x + y
    def rs(zero_first):
        def make(shape):
            x = rand(*shape)
            return (x,), (lambda k: rk.row_sum(k, x, zero_first)), x.sum(1)
        return make
    # (kernel object, inputs for a shape, shapes: first, new, first again). Autotune decisions
    # are per process (and disk), so the shapes are tuning keys the cases above did not use.
    runs = {
        "matmul": (rk.matmul_kernel, mm, [(40, 24, 48), (33, 70, 17), (40, 24, 48)]),
        "scale": (rk.scale_kernel, sc, [999, 1024, 999]),        # 1024 flips EVEN_N
        "softmax": (rk.softmax_kernel, sm, [(7, 100), (3, 300), (7, 100)]),
        "axpy": (rk.axpy_kernel, ax, [777, 1501, 777]),          # one int class: one entry
        "row_sum_pre_hook": (rk.row_sum_pre_hook, rs(False), [(5, 180), (4, 96), (5, 180)]),
        "row_sum_reset": (rk.row_sum_reset, rs(True), [(6, 150), (3, 64), (6, 150)]),
    }
    for name, (kernel, make, shapes) in runs.items():
        if name in skip:
            continue
        fast = fastdispatch.triton_kernel(kernel)
        rows = []
        for shape in shapes:
            _, run, ref = make(shape)
            triton_out = run(kernel)
            tunes = fastdispatch.stats().get("tunes", 0)
            fast_out = run(fast)
            row = compare(triton_out, fast_out, ref)
            row.update(tunes=fastdispatch.stats().get("tunes", 0) - tunes, entries=fast.num_entries,
                       hits=sum(e.hits for e in fast.published()))
            rows.append(row)
        report["calls"][name] = rows
    print(json.dumps(report))
""")

AUTOTUNED = {"matmul", "scale", "row_sum_pre_hook", "row_sum_reset"}


@pytest.fixture(scope="module")
def interpreter_report(tmp_path_factory):
    cache = tmp_path_factory.mktemp("interp-cache")
    env = dict(_subprocess_env(cache), TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", INTERPRETER_SCRIPT], capture_output=True, text=True,
                          env=env, timeout=600, cwd=str(cache))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(rk.CASES))
def test_interpreter_case_equals_triton_and_torch(interpreter_report, name):
    """``real_kernels.CASES``: fastdispatch's output is Triton's own, bit for bit, and torch's
    within fp32 tolerance (poisoned outputs, so a skipped store shows as NaN)."""
    if name in interpreter_report["skipped"]:
        pytest.skip(f"Triton {triton.__version__}'s interpreter cannot run {name} itself (its own launch fails)")
    row = interpreter_report["cases"][name]
    assert row["bitwise"], f"{name}: fastdispatch differs from Triton's own launch"
    assert row["close"] is None, row["close"]


@pytest.mark.parametrize("name", sorted(rk.CASES))
def test_interpreter_new_shape_and_repeat(interpreter_report, name):
    """One wrapper, three calls (a shape, a new shape, the first again): every output equals
    Triton's and torch's; autotuned kernels tune once per new tuning key and never on a repeat;
    the repeat is a hit (no new entry)."""
    if name in interpreter_report["skipped"]:
        pytest.skip(f"Triton {triton.__version__}'s interpreter cannot run {name} itself (its own launch fails)")
    rows = interpreter_report["calls"][name]
    for i, row in enumerate(rows):
        assert row["bitwise"], f"{name} call {i}: differs from Triton's own launch"
        assert row["close"] is None, (i, row["close"])
    expected_tunes = [1, 1, 0] if name in AUTOTUNED else [0, 0, 0]
    assert [row["tunes"] for row in rows] == expected_tunes
    assert rows[2]["entries"] == rows[1]["entries"]
    assert rows[2]["hits"] == rows[1]["hits"] + 1
    if name == "axpy":   # 777 and 1501: the same dtype, alignment and int class
        assert [row["entries"] for row in rows] == [1, 1, 1]
        assert [row["hits"] for row in rows] == [0, 1, 2]
    else:
        assert rows[1]["entries"] == 2


# == b. wrap forms ===================================================================================
@triton.jit
def _copy(x, out, n, BLOCK: tl.constexpr, EVEN: tl.constexpr = False):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out + offs, tl.load(x + offs, mask=offs < n), mask=offs < n)


_CONFIGS = [triton.Config({"BLOCK": 64}), triton.Config({"BLOCK": 128})]
_EVEN = {"EVEN": lambda args: args["n"] % 128 == 0}


def _wrap_forms():
    return {
        "jit": _copy,
        "heuristics": triton.heuristics(_EVEN)(_copy),
        "autotune": triton.autotune(configs=_CONFIGS, key=["n"])(_copy),
        "heuristics(autotune)": triton.heuristics(_EVEN)(triton.autotune(configs=_CONFIGS, key=["n"])(_copy)),
        "autotune(heuristics)": triton.autotune(configs=_CONFIGS, key=["n"])(triton.heuristics(_EVEN)(_copy)),
    }


@pytest.mark.parametrize("form", sorted(_wrap_forms()))
def test_wrap_forms_accepted(form):
    """Every Triton kernel object wraps; its layers are seen outer to inner over the JITFunction."""
    obj = _wrap_forms()[form]
    k = fastdispatch.triton_kernel(obj)
    assert k.fn is _copy and k.kernel is obj
    kinds = [type(layer) for layer in k.layers.layers]
    expected = {"jit": [], "heuristics": [Heuristics], "autotune": [Autotuner],
                "heuristics(autotune)": [Heuristics, Autotuner],
                "autotune(heuristics)": [Autotuner, Heuristics]}[form]
    assert kinds == expected
    # what the layers provide is not a call parameter; the rest are, in order
    provided = {"jit": set(), "heuristics": {"EVEN"}, "autotune": {"BLOCK"}}.get(form, {"EVEN", "BLOCK"})
    assert k.param_names == tuple(n for n in ("x", "out", "n", "BLOCK", "EVEN") if n not in provided)


@pytest.mark.parametrize("form", sorted(_wrap_forms()))
def test_traced_direct_form_positional_limit(form):
    """torch.compile's direct form (Triton's own call of the kernel object, the fixed constexprs
    as keywords) takes at most the parameters before the first fixed or layer-provided one
    positionally; more positional arguments are bound in Python first."""
    obj = _wrap_forms()[form]
    k = fastdispatch.triton_kernel(obj)
    limit = {"jit": 5, "heuristics": 4}.get(form, 3)   # x, out, n | BLOCK | EVEN
    assert k._traced[1:3] == ({}, limit)
    if form == "jit":
        k = fastdispatch.triton_kernel(obj, constexprs={"BLOCK": 64})
        assert k._traced[1:3] == ({"BLOCK": 64}, 3)


def test_eager_triton_calls_bypass_the_traced_methods(monkeypatch):
    """Eager ``k[grid]`` and ``k(...)`` run the C slots, not the Python methods torch.compile
    traces (OffHotPath.__getitem__ / __call__)."""
    from fastdispatch import keys
    from fastdispatch.backends.triton.offpath import OffHotPath
    if keys.IMPLEMENTATION != "cython":
        pytest.skip("the pure-Python key builder has no C slots")

    def fail(self, *args, **kwargs):
        raise AssertionError("an eager call went through a traced method")

    monkeypatch.setattr(OffHotPath, "__getitem__", fail)
    monkeypatch.setattr(OffHotPath, "__call__", fail)
    k = fastdispatch.triton_kernel(_copy)   # a new instance re-installs the C slots on its type
    assert type(k[(1,)]).__name__ == "BoundLaunch"
    with pytest.raises(TypeError, match="missing argument"):   # C binder -> miss -> bind's error
        k(torch.zeros(4))


def test_subscript_stays_in_c_after_specialization(monkeypatch):
    """``k[grid]`` repeated (past CPython's warm-up, where it specializes BINARY_SUBSCR to a
    direct call of a Python ``__getitem__``) still runs the C slot, and so do calls: the general
    traced methods' one global read, ``_is_compiling``, counts any call that reaches them, and
    the Triton kernel's own generated methods (``traced.py``) are wrapped to count."""
    from fastdispatch import dispatcher, keys
    from fastdispatch.backends.triton import offpath
    if keys.IMPLEMENTATION != "cython":
        pytest.skip("the pure-Python key builder has no C slots")
    reached = []

    def counting():
        reached.append(1)
        return False
    monkeypatch.setattr(offpath, "_is_compiling", counting)
    monkeypatch.setattr(dispatcher, "_is_compiling", counting)
    grid = (1,)
    generated = fastdispatch.triton_kernel(_copy)
    cls = type(generated)
    for name in ("__getitem__", "__call__"):
        def counted(*args, _original=cls.__dict__[name], **kwargs):
            reached.append(1)
            return _original(*args, **kwargs)
        monkeypatch.setattr(cls, name, counted)
    keys.impl.adopt_class(generated, cls)   # setting them re-derived the slots from Python

    def subscripts(kernel):
        for _ in range(500):
            kernel[grid]
    for k in (generated, reference_kernel(lambda x: None, ["x"])):
        subscripts(k)
        subscripts(k)
        assert reached == [], type(k).__name__
    k, x = reference_kernel(lambda x: None, ["x"]), torch.zeros(2)
    for _ in range(1000):    # calls too: tp_call, whatever CPython specializes CALL to
        k(x)
    assert reached == [] and k.entries()[0].hits == 999


def test_plain_function_rejected():
    """A plain function is refused with a TypeError naming @triton.jit."""
    def plain(x, out, n):
        pass

    with pytest.raises(TypeError, match=r"@triton\.jit"):
        fastdispatch.triton_kernel(plain)


def test_call_without_any_grid_is_a_type_error():
    """No grid at wrap time and none per call: TypeError mentioning the grid; nothing published."""
    from triton.runtime.interpreter import InterpretedFunction

    k = fastdispatch.triton_kernel(InterpretedFunction(_copy.fn))
    x = torch.randn(256)
    with pytest.raises(TypeError, match="grid"):
        k(x, torch.empty_like(x), 256, 64)
    assert k.num_entries == 0


# == c. AOT compiles bind like a call =================================================================
def _metadata(files):
    return json.loads(next(data for name, data in files.items() if name.endswith(".json")))


def test_compile_for_keywords_and_omitted_constexpr_default(stats_delta):
    """axpy by keyword with BLOCK left out compiles the BLOCK=256 binary: the same compile key
    as BLOCK=256 given, not that of BLOCK=512; the ASTSource holds 256."""
    k = fastdispatch.triton_kernel(rk.axpy_kernel)
    x = torch.randn(777)
    key_kw, files = k.compile_for(x_ptr=x, y_ptr=x, out_ptr=x, a=0.5, n=777, target=H100)
    assert any(name.endswith(".cubin") for name in files) and _metadata(files)["name"] == "axpy_kernel"
    key_explicit, _ = k.compile_for(x, x, x, 0.5, 777, BLOCK=256, target=H100)
    assert key_explicit == key_kw
    bound = k.bind((x, x, x, 0.5, 777), {})
    assert bound[5] == 256
    _, src, _ = k.specialize(bound, H100)
    assert 256 in src.constants.values()
    other = k.bind((x, x, x, 0.5, 777), {"BLOCK": 512})
    assert k.specialize(other, H100)[0] != key_kw
    assert k.num_entries == 0   # AOT publishes nothing


def test_compile_for_per_call_num_warps():
    """softmax with ``num_warps=8`` per call: the binary's metadata says 8 warps."""
    k = fastdispatch.triton_kernel(rk.softmax_kernel)
    x = torch.randn(7, 100)
    _, files = k.compile_for(x, x, 100, 100, 100, BLOCK=128, num_warps=8, target=H100)
    assert _metadata(files)["num_warps"] == 8


def test_compile_for_heuristics_over_autotune_with_a_decision(fresh_cache_dir):
    """scale (heuristics over autotune): without a decision compile_for refuses clearly; with one
    it compiles the decided config (its num_warps), without tuning."""
    k = fastdispatch.triton_kernel(rk.scale_kernel)
    x = torch.randn(1000)
    with pytest.raises(RuntimeError, match="no autotune decision"):
        k.compile_for(x, x, 1000, 1.5, target=H100)
    layer = k.layers.autotuners[0]
    named = {"x_ptr": x, "out_ptr": x, "n": 1000, "alpha": 1.5, "EVEN_N": False}
    from fastdispatch.backends.triton.layers import tuning_key_of
    decisions.record(k._scope(layer, None), tuning_key_of(layer, named), 0)   # BLOCK 64, 2 warps
    _, files = k.compile_for(x, x, 1000, 1.5, target=H100)
    assert _metadata(files)["num_warps"] == 2
    assert k.num_entries == 0


def test_compile_for_raises_the_grid_error_before_publishing(stats_delta):
    """A META grid that raises (a misspelt key) is raised by compile_for; nothing is published."""
    k = fastdispatch.triton_kernel(rk.axpy_kernel,
                                   grid=lambda META: (triton.cdiv(META["n"], META["BLOK"]),))
    x = torch.randn(777)
    with pytest.raises(KeyError, match="BLOK"):
        k.compile_for(x, x, x, 0.5, 777, target=H100)
    assert k.num_entries == 0 and stats_delta("misses") == 0


# == d. keys ===========================================================================================
def test_new_shape_same_class_same_key():
    """A new length of the same dtype/alignment/int class is the same key; alignment, dtype and
    int class are not."""
    k = fastdispatch.triton_kernel(rk.axpy_kernel)
    x, y = torch.randn(777), torch.randn(5000)

    def key(a, n, **kw):
        return k.key_of(*k.bind((a, a, a, 0.5, n), kw))

    assert key(x, 777) == key(y, 4999) == key(x[16:], 1501)
    assert key(x, 777) != key(x[1:], 777)                   # unaligned pointer
    assert key(x, 777) != key(x.double(), 777)              # dtype
    assert key(x, 777) != key(x, 784)                       # divisible by 16
    assert key(x, 777) != key(x, 1)                         # == 1
    assert key(x, 777) != key(x, 777, BLOCK=512)            # constexpr
    assert key(x, 777) != key(x, 777, num_warps=8)          # per-call launch option


def test_autotune_key_values_give_different_keys():
    """matmul (key M, N, K): other M/N/K values are other keys; other strides of one class are not."""
    k = fastdispatch.triton_kernel(rk.matmul_kernel)
    a = torch.randn(64, 64)

    def key(M, N, K, s=64):
        return k.key_of(*k.bind((a, a, a, M, N, K, s, 1, s, 1, s, 1), {}))

    assert key(48, 40, 24) != key(64, 40, 24) != key(64, 40, 25)
    assert key(48, 40, 24) == key(48, 40, 24, s=96)


_NAMES = ("x", "y", "n", "BLOCK", "num_warps")


@st.composite
def keyword_splits(draw):
    """A call of (x, y, n, BLOCK=256, *, num_warps=None) split at random: a positional prefix,
    then each later parameter by keyword or (when it has a default) left out."""
    n = draw(st.sampled_from([1, 16, 17, 4096, 2**40 + 3]))
    block = draw(st.sampled_from([None, 128, 256]))
    warps = draw(st.sampled_from([None, 4, 8]))
    values = {"x": "X", "y": "Y", "n": n, "BLOCK": block, "num_warps": warps}
    n_pos = draw(st.integers(0, 4))
    args, kwargs = [], {}
    for i, name in enumerate(_NAMES):
        value = values[name]
        if name in ("BLOCK", "num_warps") and value is None:
            if i < n_pos and name == "BLOCK":
                value = 256            # positional: must be given
            else:
                continue               # left out: the default
        if i < n_pos:
            args.append(value)
        else:
            kwargs[name] = value
    order = draw(st.permutations(list(kwargs)))
    kwargs = {name: kwargs[name] for name in order}
    expected = (values["x"], values["y"], n, block if block is not None else 256, warps)
    return tuple(args), kwargs, expected


def test_keyword_binding_in_c_equals_python(keys_impl):
    """FastKernel with names/defaults (both key builders): a keyword call, with defaults left out,
    reaches the entry published for its positional form without a miss."""
    x, y = torch.randn(64), torch.randn(64)
    misses = []

    def on_miss(kernel, args, kwargs, grid):
        misses.append((args, kwargs))
        return "miss"

    roles = bytes([keys.ROLE_CLASS] * 3 + [keys.ROLE_CONSTEXPR] * 2)
    fk = keys_impl.FastKernel(roles, on_miss, names=_NAMES,
                              defaults=(keys.NO_DEFAULT,) * 3 + (256, None), n_positional=4)

    @SETTINGS
    @given(split=keyword_splits())
    def check(split):
        args, kwargs, expected = split
        tensors = {"X": x, "Y": y}
        args = tuple(tensors.get(a, a) if isinstance(a, str) else a for a in args)
        kwargs = {k: tensors.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
        expected = tuple(tensors.get(a, a) if isinstance(a, str) else a for a in expected)
        words = fk.key_of(*expected)
        if fk.lookup(words) is None:
            fk.publish(keys_impl.Entry(words, keys.MODE_CALL, fn=lambda *a: a, slow=lambda a: a))
        before = len(misses)
        got = fk(*args, **kwargs)
        # trailing keyword-only options left out reach the entry as absent (their key is None's)
        got = tuple(got) + (None,) * (len(expected) - len(got))
        assert len(misses) == before, (args, kwargs)
        assert len(got) == len(expected) and all(
            g is e or (not isinstance(g, torch.Tensor) and not isinstance(e, torch.Tensor) and g == e)
            for g, e in zip(got, expected)), (got, expected)

    check()
    # what only Python may decide comes to on_miss: unknown keyword, a duplicate, a missing argument
    for args, kwargs in [((x, y, 16), {"bogus": 1}), ((x, y, 16), {"x": x}), ((x,), {"n": 16})]:
        before = len(misses)
        assert fk(*args, **kwargs) == "miss" and len(misses) == before + 1


def test_keyword_binding_reaches_the_same_entry_on_a_triton_kernel(monkeypatch):
    """axpy (a TritonKernel): for random keyword/positional splits, omitted BLOCK and launch
    options, Python's bind gives the positional form, every split has that form's key, and the C
    binder (``k[grid](...)``) hits the entry published for it -- no miss."""
    misses = []
    original = tb.TritonKernel._handle_miss

    def counting(self, args, kwargs, grid=None):
        misses.append((args, kwargs))
        return original(self, args, kwargs, grid)

    monkeypatch.setattr(tb.TritonKernel, "_handle_miss", counting)
    k = fastdispatch.triton_kernel(rk.axpy_kernel)
    x, y, out = torch.randn(777), torch.randn(777), torch.empty(777)
    names = ("x_ptr", "y_ptr", "out_ptr", "a", "n", "BLOCK")
    grid = lambda META: (triton.cdiv(META["n"], META["BLOCK"]),)  # noqa: E731

    @SETTINGS
    @given(n_pos=st.integers(0, 6), n=st.sampled_from([777, 1501, 16, 1]),
           block=st.sampled_from([None, 256, 512]),
           options=st.dictionaries(st.sampled_from(["num_warps", "num_stages", "num_ctas"]),
                                   st.sampled_from([1, 2, 4, 8]), max_size=2),
           order=st.randoms())
    def check(n_pos, n, block, options, order):
        values = dict(zip(names, (x, y, out, 0.5, n, block)))
        args, kwargs = [], {}
        for i, name in enumerate(names):
            if name == "BLOCK" and block is None:
                if i >= n_pos:
                    continue              # left out: the default
                values[name] = 256
            if i < n_pos:
                args.append(values[name])
            else:
                kwargs[name] = values[name]
        shuffled = list(kwargs)
        order.shuffle(shuffled)
        kwargs = {name: kwargs[name] for name in shuffled}
        kwargs.update(options)
        full = tuple(values[name] if values[name] is not None else 256 for name in names)
        expected = full + tuple(options.get(o) for o in tb.LAUNCH_OPTIONS)
        assert k.bind(tuple(args), kwargs) == expected
        words = k.key_of(*expected)
        assert k.key_of(*k.bind(tuple(args), kwargs)) == words
        entry = k.lookup(words)
        if entry is None:
            entry = keys.Entry(words, keys.MODE_NULL)
            assert k.publish(entry)
        hits, before = entry.hits, len(misses)
        k[grid](*args, **kwargs)
        assert len(misses) == before, (len(args), sorted(kwargs))
        assert entry.hits == hits + 1

    check()


# == e. heuristics never stale ==========================================================================
@triton.jit
def _heur_scalars(x, out, n, m, alpha, flag, EVEN_N: tl.constexpr, BIG: tl.constexpr,
                  USE_FLAG: tl.constexpr, PICK: tl.constexpr, BOTH: tl.constexpr):
    tl.store(out + tl.arange(0, 16), tl.load(x + tl.arange(0, 16)))


SCALAR_HEURISTICS = {
    "EVEN_N": lambda a: a["n"] % 64 == 0,
    "BIG": lambda a: a["alpha"] > 1.0,
    "USE_FLAG": lambda a: a["flag"],
    # reads m or alpha depending on flag: what a call reads differs from call to call
    "PICK": lambda a: (a["m"] % 16 == 0) if a["flag"] else (a["alpha"] < 0),
    "BOTH": lambda a: a["EVEN_N"] and a["BIG"],      # reads earlier heuristics' values
}


@triton.jit
def _heur_shape(x, out, n, ROWS64: tl.constexpr, WIDE: tl.constexpr):
    tl.store(out + tl.arange(0, 16), tl.load(x + tl.arange(0, 16)))


SHAPE_HEURISTICS = {
    "ROWS64": lambda a: a["x"].shape[0] % 64 == 0,
    "WIDE": lambda a: a["x"].stride(0) > 4,
}


@triton.jit
def _heur_dtype(x, out, n, HALF: tl.constexpr):
    tl.store(out + tl.arange(0, 16), tl.load(x + tl.arange(0, 16)))


DTYPE_HEURISTICS = {"HALF": lambda a: a["x"].dtype == torch.float16}


@pytest.fixture
def fake_gpu(monkeypatch):
    """test_guards' fake GPU (device 0, sm_90, a fake loaded kernel), plus: CPU tensors pass
    validation, no binary is compiled (the compile key is still computed), entries launch
    through Triton's launcher (``disable_fast_path``), which records each launch's arguments
    by parameter name instead of launching."""
    launches = []
    monkeypatch.setattr(tb.TritonKernel, "_device_of", lambda self, args: 0)
    monkeypatch.setattr(tb.binaries, "target_for_device", lambda device: H100)
    monkeypatch.setattr(tb.binaries, "device_capability", lambda device: (9, 0))
    monkeypatch.setattr(tb.binaries, "loaded_kernel",
                        lambda key_text, src, files, device: types.SimpleNamespace(name="fake", src=src))
    monkeypatch.setattr(tb.binaries, "binary_files", lambda key_text, src, target, options: {})
    monkeypatch.setattr(tb.TritonKernel, "launch_plan", lambda self, kernel, src, device: {})
    monkeypatch.setattr(_kernel_module, "check_cuda_tensors", lambda *a, **kw: None)

    def record(kernel, device, grid, full_args):
        names = [p.name for p in kernel.src.fn.params]
        launches.append({"args": dict(zip(names, full_args)), "constants": dict(kernel.src.constants)})

    monkeypatch.setattr(_offpath_module, "triton_launch", record)
    with scope(disable_fast_path=True):
        yield launches


def triton_heuristics(values, named):
    """What Triton's Heuristics.run computes: each heuristic on the arguments by name plus the
    values of the heuristics before it."""
    out = {}
    for name, heuristic in values.items():
        out[name] = heuristic({**named, **out})
    return out


def check_calls(k, heuristics, calls, launches):
    """Run ``calls`` through ``k``; each launch and the entry its key finds carry Triton's values."""
    for args in calls:
        named = dict(zip(k.param_names, args))
        expected = triton_heuristics(heuristics, named)
        before = len(launches)
        k(*args)
        assert len(launches) == before + 1
        launched = launches[-1]["args"]
        assert {name: launched[name] for name in expected} == expected, (named, launched)
        # the binary's constants: the heuristic values at their parameter positions
        index = {p.name: i for i, p in enumerate(k.params)}
        constants = launches[-1]["constants"]
        assert {name: constants[(index[name],)] for name in expected} == expected
        entry = k.lookup(k.key_of(*k.bind(args, {})))
        assert entry is not None
        assert {name: entry.info["values"][name] for name in expected} == expected


INTS = st.one_of(st.sampled_from([0, 1, 16, 64, 128, -64, 2**31, 2**40 + 64, 2**63 + 64]),
                 st.integers(-(2**40), 2**40))
FLOATS = st.one_of(st.sampled_from([1.0, -0.0, 0.0, 1.0000001, float("inf"), -1.5]),
                   st.floats(allow_nan=True, width=64))


@needs_cython
def test_scalar_heuristics_never_stale(fake_gpu):
    """Random int/float/bool arguments, heuristics reading different arguments per call and
    each other's values: every call launches Triton's heuristic values."""
    x = torch.randn(64)

    @SETTINGS
    @given(calls=st.lists(st.tuples(INTS, INTS, FLOATS, st.booleans()), min_size=1, max_size=8))
    def check(calls):
        k = fastdispatch.triton_kernel(triton.heuristics(SCALAR_HEURISTICS)(_heur_scalars), grid=(1,))
        check_calls(k, SCALAR_HEURISTICS, [(x, x, n, m, alpha, flag) for n, m, alpha, flag in calls],
                    fake_gpu)

    check()


@needs_cython
def test_shape_heuristic_keys_exact_shapes(fake_gpu):
    """A heuristic reading ``x.shape[0]`` / ``x.stride(0)``: the key holds x's exact shape and
    strides (ROLE_VALUE), so every call launches the value for its own shape."""
    base = torch.randn(300 * 9)

    @SETTINGS
    @given(calls=st.lists(st.tuples(st.integers(1, 300), st.integers(1, 8), st.booleans()),
                          min_size=1, max_size=8))
    def check(calls):
        k = fastdispatch.triton_kernel(triton.heuristics(SHAPE_HEURISTICS)(_heur_shape), grid=(1,))
        args = []
        for rows, cols, transpose in calls:
            t = base[:rows * cols].view(rows, cols)
            args.append((t.t() if transpose else t, base, rows * cols))
        check_calls(k, SHAPE_HEURISTICS, args, fake_gpu)
        assert k.roles[0] == keys.ROLE_VALUE

    check()


@needs_cython
def test_dtype_heuristic_keeps_the_class_key(fake_gpu):
    """A heuristic reading only ``x.dtype``: right values per dtype, and x's shape stays out of
    the key (a new shape of one dtype is a hit, not a new entry)."""
    dtypes = [torch.float32, torch.float16, torch.bfloat16]

    @SETTINGS
    @given(calls=st.lists(st.tuples(st.sampled_from(dtypes), st.integers(16, 4096)), min_size=1, max_size=8))
    def check(calls):
        k = fastdispatch.triton_kernel(triton.heuristics(DTYPE_HEURISTICS)(_heur_dtype), grid=(1,))
        out = torch.empty(16)
        args = [(torch.empty(size // 16 * 16, dtype=dtype), out, 16) for dtype, size in calls]
        check_calls(k, DTYPE_HEURISTICS, args, fake_gpu)
        assert k.roles[0] == keys.ROLE_CLASS
        assert k.num_entries == len({dtype for dtype, _ in calls})

    check()


# == f. autotune decision cache ===========================================================================
H200 = "NVIDIA H200|sm_90"
TUNING_KEY = (48, 40, 24, "torch.float32", "torch.float32", "torch.float32")


def _scope(gpu=H200, arch=90):
    # the capability is part of the GPU identity ("<name>|sm_<cc>"); arch names the case
    return decisions.scope_of(rk.matmul_kernel, rk.matmul_kernel.fn, gpu)


LOOKUP_SCRIPT = textwrap.dedent("""
    import json, sys
    import fastdispatch
    from fastdispatch.backends.triton import decisions
    scope, key = json.loads(sys.argv[1])
    print(json.dumps({"index": decisions.lookup(scope, tuple(key)),
                      "disk_hits": fastdispatch.stats().get("disk_hits", 0)}))
""")


def test_decision_found_by_a_second_process(fresh_cache_dir):
    """record() in this process; lookup() in a fresh one (same cache dir) finds it on disk."""
    decisions.record(_scope(), TUNING_KEY, 2)
    assert decisions.lookup(_scope(), TUNING_KEY) == 2
    proc = subprocess.run([sys.executable, "-c", LOOKUP_SCRIPT, json.dumps([_scope(), list(TUNING_KEY)])],
                          capture_output=True, text=True, env=_subprocess_env(fresh_cache_dir), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"index": 2, "disk_hits": 1}


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other index"])
def test_corrupt_decision_file_rejected(fresh_cache_dir, stats_delta, damage):
    """A decision file changed on disk (garbage, truncated, or a valid JSON naming another
    config) fails its checksum: rejected, counted in disk_rejects, lookup None."""
    decisions.record(_scope(), TUNING_KEY, 1)
    (path,) = glob.glob(str(fresh_cache_dir / "autotune" / "*" / "decision.json"))
    data = open(path, "rb").read()
    damaged = {"garbage": b"\x00{not json", "truncated": data[:len(data) // 2],
               "other index": data.replace(b'"config": 1', b'"config": 2')}[damage]
    assert damaged != data
    open(path, "wb").write(damaged)
    decisions.clear_memory()
    stats_delta.reset()
    assert decisions.lookup(_scope(), TUNING_KEY) is None
    assert stats_delta("disk_rejects") == 1
    assert not os.path.exists(path)


def test_decision_of_another_gpu_not_found(fresh_cache_dir):
    """A decision is scoped by GPU name and capability: another GPU does not see it."""
    decisions.record(_scope(), TUNING_KEY, 1)
    for gpu, arch in [("NVIDIA A100-SXM4-80GB|sm_80", 80), ("NVIDIA H100 80GB HBM3|sm_90", 90)]:
        assert _scope(gpu, arch) != _scope()
        assert decisions.lookup(_scope(gpu, arch), TUNING_KEY) is None
    decisions.clear_memory()
    assert decisions.lookup(_scope("NVIDIA H100 80GB HBM3|sm_90", 90), TUNING_KEY) is None
    assert decisions.lookup(_scope(), TUNING_KEY) == 1        # its own GPU: from disk


def test_export_import_round_trip(fresh_cache_dir, tmp_path, monkeypatch):
    """export() then import_file() in a process with an empty cache: the decisions come back,
    in memory and (persist) on its disk."""
    other_key = (64, 64, 64, "torch.float32", "torch.float32", "torch.float32")
    decisions.record(_scope(), TUNING_KEY, 1)
    decisions.record(_scope(), other_key, 2)
    path = tmp_path / "decisions.json"
    assert decisions.export(str(path)) >= 2
    decisions.clear_memory()
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    monkeypatch.setattr(knobs, "cache_dir", str(empty))
    assert decisions.lookup(_scope(), TUNING_KEY) is None
    assert decisions.import_file(str(path)) >= 2
    assert decisions.lookup(_scope(), TUNING_KEY) == 1 and decisions.lookup(_scope(), other_key) == 2
    decisions.clear_memory()
    assert decisions.lookup(_scope(), other_key) == 2     # persisted into the new cache dir


@pytest.mark.parametrize("content", [
    json.dumps({"format": "triton-autotune-v0", "decisions": []}),
    json.dumps([{"scope": "x", "key": "()", "config": 0}]),
    "BLOCK: 32, num_warps: 4\n",       # not JSON at all (e.g. a Triton log)
])
def test_import_of_a_foreign_file_names_it(tmp_path, content):
    """A file not written by export(): ValueError naming the file; nothing imported."""
    path = tmp_path / "foreign.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="foreign.json"):
        decisions.import_file(str(path))


# == g. bounded tables =====================================================================================
def _rss_bytes():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def test_bounded_table_100k_keys(keys_impl, stats_delta):
    """100k distinct exact-shape keys through a FastKernel bounded at 64 (30k for the slower
    pure-Python twin): never more than 64 entries, every other publication evicts (counted on
    the kernel and in stats()), and memory stays flat from the 10k-th key on."""
    bound = 64
    n_keys = 100_000 if keys_impl.IMPLEMENTATION == "cython" else 30_000
    base = torch.empty(n_keys + 1)
    published = []

    def on_miss(kernel, args, kwargs, grid):
        words = kernel.key_of(*args)
        kernel.publish(keys_impl.Entry(words, keys.MODE_NULL))
        published.append(1)

    fk = keys_impl.FastKernel(bytes([keys.ROLE_EXACT]), on_miss, max_entries=bound)
    views = [base[:i] for i in range(1, n_keys + 1)]
    for v in views[:10_000]:
        fk(v)
    assert fk.num_entries == bound
    tracemalloc.start()
    try:
        traced_10k = tracemalloc.get_traced_memory()[0]
        rss_10k = _rss_bytes()
        for i, v in enumerate(views[10_000:]):
            fk(v)
            if i % 9973 == 0:
                assert fk.num_entries <= bound
        growth = tracemalloc.get_traced_memory()[0] - traced_10k
    finally:
        tracemalloc.stop()
    rss_growth = _rss_bytes() - rss_10k
    assert len(published) == n_keys and fk.num_entries == bound
    assert fk.evictions == n_keys - bound
    assert stats_delta("evictions") == n_keys - bound
    assert growth < 2 * 2**20, f"traced memory grew {growth / 2**20:.1f} MB from 10k to {n_keys} keys"
    assert rss_growth < 16 * 2**20, f"RSS grew {rss_growth / 2**20:.1f} MB from 10k to {n_keys} keys"
    fk(views[-1])                                  # the newest key is still there: a hit
    assert len(published) == n_keys


def test_bounded_dispatcher_through_the_knob(stats_delta):
    """The dispatcher path (a reference kernel, ROLE_EXACT) bounded by ``knobs.max_entries``:
    entries stay at the bound, stats() counts the evictions, evicted keys still run correctly."""
    with scope(max_entries=16):
        k = reference_kernel(lambda x: x.numel(), ["x"])
    base = torch.empty(1000)
    for i in range(1, 1000):
        assert k(base[:i]) == i
    assert k.num_entries == 16 and stats_delta("evictions") == 999 - 16
    assert k(base[:1]) == 1 and k.builds == 1000      # rebuilt after its eviction


@needs_cython
def test_clock_keeps_a_hot_entry():
    """CLOCK second chance: an entry hit since the hand last passed survives a sweep; a hot
    entry hit between insertions survives 10k insertions into a table of 64."""
    from fastdispatch import _keys

    base = torch.empty(20_000)
    fk = _keys.FastKernel(bytes([keys.ROLE_EXACT]), lambda k, a, kw, g: k.publish(
        _keys.Entry(k.key_of(*a), keys.MODE_NULL)), max_entries=4)
    views = [base[:i] for i in range(1, 6)]
    for v in views[:4]:
        fk(v)
    fk(views[0])                                   # hit the oldest
    fk(views[4])                                   # full: one eviction
    assert fk.lookup(fk.key_of(views[0])) is not None
    assert fk.lookup(fk.key_of(views[1])) is None  # the first entry not hit since
    assert fk.evictions == 1

    hot_fk = _keys.FastKernel(bytes([keys.ROLE_EXACT]), lambda k, a, kw, g: k.publish(
        _keys.Entry(k.key_of(*a), keys.MODE_NULL)), max_entries=64)
    hot = base[:19_999]
    hot_fk(hot)
    entry = hot_fk.lookup(hot_fk.key_of(hot))
    for i in range(1, 10_001):
        hot_fk(base[:i])
        hot_fk(hot)
    assert hot_fk.lookup(hot_fk.key_of(hot)) is entry and entry.hits == 10_000
    assert hot_fk.num_entries == 64 and hot_fk.evictions == 10_001 - 64


# == h. stats ===========================================================================================
def test_failed_first_call_is_not_a_hit(stats_delta):
    """A reference kernel whose function raises on its first call: that call is a miss, not a
    hit; the next call is the first hit."""
    calls = []

    def flaky(x):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return "ok"

    k = reference_kernel(flaky, ["x"])
    t = torch.empty(4)
    with pytest.raises(RuntimeError, match="first call fails"):
        k(t)
    assert stats_delta("hits") == 0 and stats_delta("misses") == 1
    assert k(t) == "ok"
    assert stats_delta("hits") == 1 and stats_delta("misses") == 1


def test_precompile_compiles_the_decided_config_without_a_gpu(fresh_cache_dir, tmp_path):
    """A decision exported on the serving GPU, imported here (no GPU): compile_for builds that
    GPU's config for sm_90, and refuses without the decision."""
    import json as _json
    from triton.backends.compiler import GPUTarget

    fast = fastdispatch.triton_kernel(rk.matmul_kernel)
    a, b, c = torch.randn(48, 24), torch.randn(24, 40), torch.empty(48, 40)
    args = (a, b, c, 48, 40, 24, a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1))
    target = GPUTarget("cuda", 90, 32)
    with pytest.raises(RuntimeError, match="no autotune decision"):
        fast.compile_for(*args, target=target, gpu=H200)
    decisions.record(_scope(), TUNING_KEY, 2)          # the serving GPU chose config 2
    exported = tmp_path / "decisions.json"
    decisions.export(str(exported))
    decisions.clear_memory()
    assert decisions.import_file(str(exported), persist=False) >= 1
    _, files = fast.compile_for(*args, target=target, gpu=H200)
    metadata = _json.loads(next(v for k, v in files.items() if k.endswith(".json")))
    assert metadata["num_warps"] == rk.MATMUL_CONFIGS[2].num_warps == 4
