"""Key builder: the compiled ``_keys`` and the Python twin ``_keys_py`` produce identical words,
the words differ wherever a binary could differ, and the fast key is strictly finer than
Triton's own compile key (DESIGN §2, STYLE §3). No GPU: tensors are CPU tensors (the device
word is tested separately)."""
import pytest
import torch
import triton
import triton.knobs as triton_knobs
import triton.language as tl
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from triton.backends.compiler import GPUTarget

from fastdispatch import _keys_py, keys
from fastdispatch.backends.triton import TritonKernel

try:
    from fastdispatch import _keys as _keys_c
except ImportError:
    _keys_c = None

needs_ext = pytest.mark.skipif(_keys_c is None, reason="fastdispatch._keys is not built")
H100 = GPUTarget("cuda", 90, 32)
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
          torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64,
          torch.complex128, torch.float8_e4m3fn, torch.float8_e5m2]
for _name in ("uint16", "uint32", "uint64", "float8_e4m3fnuz", "float8_e5m2fnuz"):
    if hasattr(torch, _name):
        DTYPES.append(getattr(torch, _name))

INT_EDGES = [0, 1, -1, 2, 15, 16, 17, -16, -17, 32, 2**31 - 16, 2**31 - 1, 2**31, 2**31 + 16,
             -2**31, -2**31 - 1, -2**31 - 16, 2**32, 2**40, 2**63 - 16, 2**63 - 1, 2**63,
             2**63 + 16, -2**63, -2**63 - 1, 2**64 - 16, 2**64 - 1, 2**64, 2**64 + 16, 2**100,
             -2**100]


def _noop(*args):
    return None


def make_tensor(dtype, shape, offset, layout):
    """A CPU tensor of ``shape`` starting ``offset`` elements into its storage, made
    non-contiguous by ``layout`` ('contig', 'transpose', 'step', 'expand')."""
    numel = 1
    for s in shape:
        numel *= s
    base = torch.empty(numel * 2 + offset + 8, dtype=dtype)
    if layout == "step" and shape:
        t = base[offset:offset + 2 * numel:2][:numel].view(-1)
        t = t.as_strided(shape, [2 * st_ for st_ in torch.empty(shape).stride()], offset)
        return t
    t = base[offset:offset + numel].view(shape)
    if layout == "transpose" and t.dim() >= 2:
        return t.transpose(0, 1)
    if layout == "expand" and t.dim() >= 1 and shape[0] == 1:
        return t.expand(3, *shape[1:])
    return t


tensors = st.builds(
    make_tensor,
    st.sampled_from(DTYPES),
    st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple),
    st.integers(0, 17),
    st.sampled_from(["contig", "transpose", "step", "expand"]),
)
ints = st.one_of(st.sampled_from(INT_EDGES), st.integers(-2**70, 2**70),
                 st.integers(-2**20, 2**20).map(lambda v: v * 16))
floats = st.floats(allow_nan=True, allow_infinity=True)
runtime_values = st.one_of(tensors, ints, floats, st.booleans(), st.none())
constexpr_values = st.one_of(ints, floats, st.booleans(), st.none(), st.text(max_size=6),
                             st.tuples(st.integers(-5, 5), st.integers(-5, 5)))


@st.composite
def arg_tuples(draw):
    n = draw(st.integers(0, 7))
    # every role: CLASS (twice as likely), CONSTEXPR, EXACT, LAYOUT, VALUE
    roles = bytes(draw(st.lists(st.sampled_from([0, 0, 1, 2, 3, 4]), min_size=n, max_size=n)))
    args = tuple(draw(constexpr_values if r == 1 else runtime_values) for r in roles)
    return roles, args


def key(module, roles, args, knobs=None):
    return module.FastKernel(roles, _noop, knobs).key_of(*args)


# -- agreement ------------------------------------------------------------------------------------
@needs_ext
@SETTINGS
@given(arg_tuples())
def test_compiled_and_python_keys_agree(case):
    """Random argument tuples: the C key words equal the twin's, before and after interning."""
    roles, args = case
    first_c = key(_keys_c, roles, args)        # C first: constexpr strings not yet interned
    py = key(_keys_py, roles, args)
    again_c = key(_keys_c, roles, args)
    assert first_c == py == again_c
    assert tuple(_keys_py.build_words(args, roles)[0]) == py


@needs_ext
@SETTINGS
@given(arg_tuples())
def test_compiled_table_finds_entries_published_under_python_words(case):
    """An entry published under the twin's words is a hit for the C hot path (no miss)."""
    roles, args = case
    misses = []
    kernel = _keys_c.FastKernel(roles, lambda k, a, kw, grid: misses.append(a))
    words = _keys_py.build_words(args, roles)[0]
    assert kernel.publish(_keys_c.Entry(words, keys.MODE_CALL, fn=lambda *a: "hit", slow=_noop))
    assert kernel(*args) == "hit"
    assert misses == []


@needs_ext
@SETTINGS
@given(st.lists(st.integers(0, 2**64 - 1), max_size=40))
def test_hash_agrees(words):
    """`_keys.hash_words` equals `_keys_py.hash_words` on random word sequences."""
    assert _keys_c.hash_words(words) == _keys_py.hash_words(words)


@needs_ext
def test_tag_and_mode_constants_equal():
    """The word tags and entry modes of both implementations are the same numbers."""
    for name, value in _keys_c.WORD_TAGS.items():
        assert getattr(_keys_py, name) == value, name
    assert len(set(_keys_c.WORD_TAGS.values())) == len(_keys_c.WORD_TAGS)
    for name, value in _keys_c.ENTRY_MODES.items():
        assert getattr(_keys_py, name) == value, name
    for name, value in _keys_c.ROLES.items():
        assert getattr(_keys_py, name) == value, name


def test_emitted_tags(keys_impl):
    """The low byte of each header word is the documented tag (checked on emitted words)."""
    x = torch.randn(2, 3)
    words = key(keys_impl, bytes([keys.ROLE_EXACT, 0, 0, 0, 0, 1, 0]), (x, 7, 1.5, True, None, "c", [1]))
    p = _keys_py
    assert words[0] & 0xFF == p.T_NARGS and words[0] >> 8 == 7
    assert words[1] & 0xFF == p.T_TENSOR and words[1] >> 8 == 2
    assert words[2] == 2 | (32 << 8) | (1 << 16)                 # DLPack float32
    assert words[3] == 1                                         # kDLCPU, device 0
    assert list(words[4:8]) == [2, 3, 3, 1]                      # shape, strides
    tags = [w & 0xFF for w in (words[8], words[9], words[10], words[11], words[12], words[14])]
    assert tags == [p.T_INT, p.T_FLOAT, p.T_BOOL, p.T_NONE, p.T_CONST, p.T_OBJ]
    assert words[-2] & 0xFF == p.T_ALIGN and words[-2] >> 8 == 1


def test_python_twin_is_live_only_without_extension():
    """The selector says which builder is live and why."""
    assert keys.IMPLEMENTATION in ("cython", "python")
    assert keys.impl.IMPLEMENTATION == keys.IMPLEMENTATION
    assert isinstance(keys.reason, str) and keys.reason


# -- keys that must differ ----------------------------------------------------------------------
def _aligned(dtype=torch.float32, n=64):
    t = torch.empty(n + 16, dtype=dtype)
    return t if t.data_ptr() % 16 == 0 else t[(16 - t.data_ptr() % 16) // t.element_size():][:n]


DIFFER = {
    "dtype": ((torch.empty(8, dtype=torch.float32),), (torch.empty(8, dtype=torch.int32),)),
    "dtype fp8": ((torch.empty(8, dtype=torch.float8_e4m3fn),), (torch.empty(8, dtype=torch.float8_e5m2),)),
    "dtype bool/u8": ((torch.empty(8, dtype=torch.bool),), (torch.empty(8, dtype=torch.uint8),)),
    "shape": ((torch.empty(8),), (torch.empty(9),)),
    "rank": ((torch.empty(8),), (torch.empty(8, 1),)),
    "stride": ((torch.empty(4, 4),), (torch.empty(4, 4).t(),)),
    "0-d vs 1-elem": ((torch.tensor(1.0),), (torch.tensor([1.0]),)),
    "alignment": ((_aligned(),), (_aligned()[1:65],)),
    "int ==1": ((1,), (2,)),
    "int %16": ((32,), (33,)),
    "int i32/i64": ((2**31 - 16,), (2**31 + 16,)),
    "int i64/u64": ((2**63 - 16,), (2**63 + 16,)),
    "int neg i32/i64": ((-2**31,), (-2**31 - 16,)),
    "int vs float": ((2,), (2.0,)),
    "bool vs int": ((True,), (1,)),
    "None vs int": ((None,), (0,)),
    "tensor vs None": ((torch.empty(2),), (None,)),
}


@pytest.mark.parametrize("case", sorted(DIFFER))
def test_keys_differ(keys_impl, case):
    """Argument pairs whose binaries may differ get different keys (role EXACT: every
    difference listed, shapes and strides included)."""
    a, b = DIFFER[case]
    roles = bytes([keys.ROLE_EXACT] * len(a))
    assert key(keys_impl, roles, a) != key(keys_impl, roles, b)
    if case not in ("shape", "stride"):   # role CLASS: all but shapes and strides
        assert key(keys_impl, bytes(len(a)), a) != key(keys_impl, bytes(len(a)), b)


def test_class_role_ignores_shapes_and_strides(keys_impl):
    """Role CLASS (Triton's): one key for every shape and stride of a dtype/rank/alignment."""
    base = torch.empty(4096 + 64)
    shapes = [base[:n] for n in (16, 32, 4096)] + [base[::2][:64]]
    assert len({key(keys_impl, b"\0", (t,)) for t in shapes}) == 1
    assert key(keys_impl, b"\0", (torch.empty(4, 4),)) != key(keys_impl, b"\0", (torch.empty(16),))


def test_layout_role_holds_compactness(keys_impl):
    """Role LAYOUT (CuTe's size-generic class): sizes free, compact vs strided told apart."""
    r = bytes([keys.ROLE_LAYOUT])
    a, b = torch.empty(8, 16), torch.empty(32, 64)
    assert key(keys_impl, r, (a,)) == key(keys_impl, r, (b,))
    assert key(keys_impl, r, (a,)) != key(keys_impl, r, (b.t(),))
    assert key(keys_impl, r, (b[:, :16],)) != key(keys_impl, r, (a,))


def test_value_role_holds_exact_values(keys_impl):
    """Role VALUE: ints, floats and bools by exact value (autotune keys, heuristics inputs)."""
    r = bytes([keys.ROLE_VALUE])
    assert key(keys_impl, r, (4096,)) != key(keys_impl, r, (8192,))
    assert key(keys_impl, r, (0.5,)) != key(keys_impl, r, (0.25,))
    assert key(keys_impl, r, (True,)) != key(keys_impl, r, (False,))
    assert key(keys_impl, b"\0", (4096,)) == key(keys_impl, b"\0", (8192,))


CONST_DIFFER = {
    "True vs 1": (True, 1), "False vs 0": (False, 0), "1 vs 1.0": (1, 1.0), "0.0 vs -0.0": (0.0, -0.0),
    "ints": (64, 128), "strings": ("ieee", "tf32"), "None vs 0": (None, 0), "str vs int": ("1", 1),
    "huge ints": (2**70, 2**70 + 1), "tuple": ((1, 2), (2, 1)),
}


@pytest.mark.parametrize("case", sorted(CONST_DIFFER))
def test_constexpr_values_differ(keys_impl, case):
    """A constexpr's value is in the key, type included (True is not 1)."""
    a, b = CONST_DIFFER[case]
    x = torch.empty(4)
    assert key(keys_impl, b"\0\1", (x, a)) != key(keys_impl, b"\0\1", (x, b))


def test_constexpr_tuples_of_equal_but_different_types_differ(keys_impl):
    """(1,), (True,) and (1.0,) as a constexpr are different Triton specializations."""
    x = torch.empty(4)
    keys = {key(keys_impl, b"\0\1", (x, v)) for v in ((1,), (True,), (1.0,))}
    assert len(keys) == 3


def test_same_class_same_key(keys_impl):
    """Values Triton does not tell apart share a key: ints of one class, floats, bools."""
    roles = bytes(4)
    x = _aligned()
    assert key(keys_impl, roles, (x, 32, 1.5, True)) == key(keys_impl, roles, (_aligned(), 4096, -7.25, False))
    assert key(keys_impl, roles, (x, 17, 0.0, True)) == key(keys_impl, roles, (x, 2**31 - 1, 1e30, True))


def test_device_word(keys_impl):
    """The device word separates cpu, meta and (by index) cuda devices."""
    cpu, meta = torch.empty(4), torch.empty(4, device="meta")
    assert key(keys_impl, b"\0", (cpu,)) != key(keys_impl, b"\0", (meta,))
    assert _keys_py._device_word(torch.device("cuda", 0)) != _keys_py._device_word(torch.device("cuda", 1))
    assert _keys_py._device_word(torch.device("cuda", 1)) == 2 | (1 << 32)
    assert _keys_py._device_word(torch.device("cpu")) == 1


def test_knob_word_follows_triton_debug(keys_impl):
    """Flipping triton.knobs.runtime.debug (or instrumentation mode) changes the key."""
    import fastdispatch.backends.triton  # noqa: F401  (injects Triton's knobs into _keys)

    knobs = (triton_knobs.runtime, triton_knobs.compilation)
    args = (torch.empty(4), 3)
    before = key(keys_impl, b"\0\0", args, knobs)
    with triton_knobs.runtime.scope():
        triton_knobs.runtime.debug = not triton_knobs.runtime.debug
        flipped = key(keys_impl, b"\0\0", args, knobs)
    assert flipped != before
    assert key(keys_impl, b"\0\0", args, knobs) == before
    saved = triton_knobs.compilation.instrumentation_mode
    try:
        triton_knobs.compilation.instrumentation_mode = "fpsan-test"
        assert key(keys_impl, b"\0\0", args, knobs) != before
    finally:
        triton_knobs.compilation.instrumentation_mode = saved
    assert key(keys_impl, b"\0\0", args, knobs) == before


def test_unhashable_constexpr_is_a_clear_type_error(keys_impl):
    """A list passed as a constexpr raises TypeError naming the argument index."""
    with pytest.raises(TypeError, match="argument 1: constexpr values must be hashable"):
        key(keys_impl, b"\0\1", (torch.empty(2), [1, 2]))


class Sub(torch.Tensor):
    pass


def test_tensor_subclass_keys_like_its_base(keys_impl):
    """A torch.Tensor subclass goes through the twin and keys like the plain tensor."""
    x = torch.randn(4, 4)[:, 1:]
    s = x.as_subclass(Sub)
    roles = bytes(2)
    assert key(keys_impl, roles, (s, 5)) == key(keys_impl, roles, (x, 5)) == key(_keys_py, roles, (s, 5))


def test_parameter_keys_like_tensor(keys_impl):
    """nn.Parameter (read in C) keys like the tensor it wraps."""
    x = torch.randn(3, 5)
    assert key(keys_impl, b"\0", (torch.nn.Parameter(x),)) == key(keys_impl, b"\0", (x,))


def test_table_publish_lookup_clear(keys_impl):
    """publish refuses a duplicate key; lookup finds it; clear empties the table."""
    k = keys_impl.FastKernel(b"\0\0", _noop)
    words = k.key_of(torch.empty(3), 5)
    e = keys_impl.Entry(words, keys.MODE_CALL, fn=lambda *a: 7, slow=_noop)
    assert k.publish(e) is True
    assert k.publish(keys_impl.Entry(words, keys.MODE_CALL, fn=lambda *a: 8, slow=_noop)) is False
    assert k.num_entries == 1 and k.lookup(words) is e
    assert k(torch.empty(3), 21) == 7 and e.hits == 1
    k.clear()
    assert k.num_entries == 0 and k.lookup(words) is None


def test_table_grows_past_its_initial_capacity(keys_impl):
    """Many entries (forcing resizes) all stay findable by the call path."""
    k = keys_impl.FastKernel(bytes([keys.ROLE_EXACT]), _noop)
    for n in range(200):
        words = k.key_of(torch.empty(n))
        assert k.publish(keys_impl.Entry(words, keys.MODE_CALL, fn=lambda t, n=n: n, slow=_noop))
    assert k.num_entries == 200
    assert [k(torch.empty(n)) for n in range(200)] == list(range(200))


def test_entry_requires_fn_and_slow(keys_impl):
    """A MODE_CALL entry needs fn; any launching entry needs a slow launch."""
    with pytest.raises(ValueError, match="fn"):
        keys_impl.Entry((1,), keys.MODE_CALL, slow=_noop)
    with pytest.raises(ValueError, match="slow"):
        keys_impl.Entry((1,), keys.MODE_SLOW)


# -- the fast key is strictly finer than Triton's compile key ----------------------------------------
@triton.jit
def _spec_kernel(p, n, f, q, flag, BLOCK: tl.constexpr):
    pass


SPEC_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int8,
               torch.uint8, torch.float8_e4m3fn, torch.float8_e5m2, torch.bool, torch.int64]
SPEC_INTS = [v for v in INT_EDGES if -2**63 <= v < 2**64]



@st.composite
def spec_batches(draw):
    """Up to 12 argument tuples drawn from a small per-example palette, so that equal fast
    keys are common while the palette itself ranges over every dtype, offset and int edge."""
    dtypes = draw(st.lists(st.sampled_from(SPEC_DTYPES), min_size=1, max_size=2))
    offsets = draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 8, 16]), min_size=1, max_size=2))
    n_values = draw(st.lists(st.sampled_from(SPEC_INTS), min_size=1, max_size=3))
    flags = draw(st.lists(st.one_of(st.booleans(), st.sampled_from([1, 16, 17, 2**40, 0.5])),
                          min_size=1, max_size=2))
    blocks = draw(st.lists(st.sampled_from([64, 128]), min_size=1, max_size=2))

    def tensor():
        return make_tensor(draw(st.sampled_from(dtypes)), (16,), draw(st.sampled_from(offsets)), "contig")

    batch = []
    for _ in range(draw(st.integers(2, 12))):
        batch.append((tensor(), draw(st.sampled_from(n_values)), draw(st.floats(allow_nan=False, width=32)),
                      draw(st.one_of(st.none(), st.just(None).map(lambda _: tensor()))),
                      draw(st.sampled_from(flags)), draw(st.sampled_from(blocks))))
    return batch


@pytest.fixture(scope="module")
def spec_kernel():
    return TritonKernel(_spec_kernel, grid=(1,))


@SETTINGS
@given(spec_batches())
def test_fast_key_strictly_finer_than_triton_key(keys_impl, spec_kernel, batch):
    """Arguments with equal fast keys get the same Triton compile key (for sm_90)."""
    fast_kernel = keys_impl.FastKernel(spec_kernel.roles, _noop,
                                       (triton_knobs.runtime, triton_knobs.compilation))
    groups: dict = {}
    for args in batch:
        groups.setdefault(fast_kernel.key_of(*args), []).append(args)
    for group in groups.values():
        triton_keys = {spec_kernel.specialize(args, H100)[0] for args in group}
        assert len(triton_keys) == 1, group


def test_finer_property_sees_alignment_and_int_class(spec_kernel):
    """Sanity for the property test: Triton's key does change with alignment and int class."""
    x = _aligned()
    base = (x, 32, 1.0, None, True, 64)
    k0 = spec_kernel.specialize(base, H100)[0]
    assert spec_kernel.specialize((x[1:], 32, 1.0, None, True, 64), H100)[0] != k0
    assert spec_kernel.specialize((x, 33, 1.0, None, True, 64), H100)[0] != k0
    assert spec_kernel.specialize((x, 1, 1.0, None, True, 64), H100)[0] != k0
    assert spec_kernel.specialize((x, 48, 2.0, None, False, 64), H100)[0] == k0
