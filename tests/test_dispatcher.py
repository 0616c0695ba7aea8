"""The slow path with the CPU reference backend: one build per key, binding, validation,
single-flight compiles under 32 threads, publishing and clearing."""
import threading
import time

import pytest
import torch

from fastdispatch import keys
from fastdispatch.backends.reference import ReferenceKernel, reference_kernel


def axpy_kernel(**kwargs):
    """out = alpha * x + y, one build per key (``builds`` counts them)."""
    def make(args):
        return lambda x, y, out, alpha: out.copy_(alpha * x + y)
    return ReferenceKernel(make, ["x", "y", "out", "alpha"], **kwargs)


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def test_one_build_per_key_and_hits_do_not_rebuild():
    """Repeated calls with one key build once; the result is right on every call."""
    k = axpy_kernel()
    x, y = rand(64, seed=1), rand(64, seed=2)
    for i in range(5):
        out = torch.full_like(x, float("nan"))
        k(x, y, out, 2.0 + i)
        torch.testing.assert_close(out, (2.0 + i) * x + y)
    assert k.builds == 1 and k.num_entries == 1
    assert k.entries()[0].hits == 4     # the first call was the miss
    assert k.entries()[0].mode == keys.MODE_CALL


def test_new_key_builds_again():
    """A new dtype, shape or int class builds a new entry; old keys still hit."""
    k = axpy_kernel()
    x, y = rand(8, seed=1), rand(8, seed=2)
    k(x, y, torch.empty(8), 1.0)
    k(x.double(), y.double(), torch.empty(8, dtype=torch.float64), 1.0)
    k(rand(9), rand(9), torch.empty(9), 1.0)
    k(x, y, torch.empty(8), 3)            # int alpha: another key
    k(x, y, torch.empty(8), 1.5)          # float again: a hit
    assert k.builds == 4 and k.num_entries == 4


def test_keyword_and_default_binding():
    """Keyword arguments and defaults bind to the right parameters (and then hit)."""
    k = axpy_kernel(defaults={"alpha": 3.0})
    x, y = rand(16, seed=3), rand(16, seed=4)
    out = torch.full_like(x, float("nan"))
    k(x, y, out)                                        # default alpha
    torch.testing.assert_close(out, 3.0 * x + y)
    out2 = torch.full_like(x, float("nan"))
    k(y=x, x=y, out=out2, alpha=0.5)                    # all by keyword, swapped
    torch.testing.assert_close(out2, 0.5 * y + x)
    out3 = torch.full_like(x, float("nan"))
    k(x, y, alpha=-1.0, out=out3)
    torch.testing.assert_close(out3, -x + y)
    assert k.builds == 1 and k.num_entries == 1


@pytest.mark.parametrize("call, match", [
    (lambda k, x: k(x, x, x, 1.0, 2.0), r"takes 4 arguments \(x, y, out, alpha\) but 5 were given"),
    (lambda k, x: k(x, x, x), r"missing argument 'alpha'"),
    (lambda k, x: k(x, x, x, 1.0, beta=2), r"unexpected keyword argument 'beta'"),
    (lambda k, x: k(x, x, x, alpha=1.0, x=x), r"multiple values for argument 'x'"),
])
def test_bad_arguments_raise_type_error_naming_them(call, match):
    """Wrong count, missing, unknown or duplicate arguments: TypeError naming the argument."""
    k = axpy_kernel()
    with pytest.raises(TypeError, match=match):
        call(k, torch.randn(4))
    assert k.builds == 0 and k.num_entries == 0


def test_validation_error_publishes_nothing(stats_delta):
    """A validate() failure raises before anything is built or published."""
    def validate(args):
        if args[0].dtype != torch.float32:
            raise ValueError("argument 'x' must be float32")

    k = axpy_kernel(validate=validate)
    with pytest.raises(ValueError, match="argument 'x'"):
        k(torch.ones(4, dtype=torch.int32), rand(4), torch.empty(4), 1.0)
    assert k.builds == 0 and k.num_entries == 0 and stats_delta("misses") == 0
    k(rand(4), rand(4), torch.empty(4), 1.0)
    assert k.builds == 1


def test_make_failure_publishes_nothing():
    """An exception while building leaves no entry; the next call retries the build."""
    attempts = []

    def make(args):
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("compiler crashed")
        return lambda x, out: out.copy_(x)

    k = ReferenceKernel(make, ["x", "out"])
    x = rand(4)
    with pytest.raises(RuntimeError, match="compiler crashed"):
        k(x, torch.empty(4))
    assert k.num_entries == 0
    out = torch.empty(4)
    k(x, out)
    assert torch.equal(out, x) and k.num_entries == 1 and len(attempts) == 2


def test_32_threads_one_cold_key_build_once(run_threads):
    """32 threads missing on one key at once: one build, every thread gets its right result."""
    n_threads = 32
    in_make = []

    def make(args):
        in_make.append(threading.get_ident())
        time.sleep(0.2)                 # a slow "compile": the other threads pile up on the lock
        return lambda x, out, s: out.copy_(x * s)

    k = ReferenceKernel(make, ["x", "out", "s"])
    xs = [rand(32, seed=i) for i in range(n_threads)]
    outs = [torch.full((32,), float("nan")) for _ in range(n_threads)]
    errors = run_threads(n_threads, lambda i: k(xs[i], outs[i], float(i + 1)))
    assert errors == []
    assert k.builds == 1 and len(in_make) == 1 and k.num_entries == 1
    for i in range(n_threads):
        torch.testing.assert_close(outs[i], xs[i] * float(i + 1))


def test_32_threads_distinct_keys(run_threads):
    """32 threads with 32 different keys: 32 builds, 32 entries, each result right."""
    n_threads = 32

    def make(args):
        time.sleep(0.01)
        return lambda x, out: out.copy_(x + 1)

    k = ReferenceKernel(make, ["x", "out"])
    xs = [rand(i + 1, seed=i) for i in range(n_threads)]      # shapes differ: keys differ
    outs = [torch.full((i + 1,), float("nan")) for i in range(n_threads)]
    def calls(i):
        for _ in range(3):
            k(xs[i], outs[i])

    errors = run_threads(n_threads, calls)
    assert errors == []
    assert k.builds == n_threads and k.num_entries == n_threads
    for i in range(n_threads):
        torch.testing.assert_close(outs[i], xs[i] + 1)


def test_publish_twice_is_refused():
    """Publishing a second entry under a published key returns False and keeps the first."""
    k = axpy_kernel()
    x = rand(4)
    k(x, x, torch.empty(4), 1.0)
    first = k.entries()[0]
    words = k.key_of(x, x, torch.empty(4), 1.0)
    assert tuple(first.key_words) == tuple(words)
    dup = keys.Entry(words, keys.MODE_CALL, fn=lambda *a: None, slow=lambda a: None)
    assert k.publish(dup) is False
    assert k.num_entries == 1 and k.lookup(words) is first


def test_clear_entries_forces_rebuild():
    """clear_entries() forgets every entry; the next call builds again."""
    k = axpy_kernel()
    x = rand(4)
    k(x, x, torch.empty(4), 1.0)
    k(rand(5), rand(5), torch.empty(5), 1.0)
    assert k.num_entries == 2
    k.clear_entries()
    assert k.num_entries == 0 and k.entries() == []
    out = torch.empty(4)
    k(x, x, out, 1.0)
    torch.testing.assert_close(out, 2 * x)
    assert k.builds == 3 and k.num_entries == 1


def test_constexpr_role_values_are_keys():
    """A constexpr-role parameter builds one entry per value (strings included)."""
    seen = []

    def make(args):
        seen.append(args[2])
        return lambda x, out, mode: out.copy_(x.abs() if mode == "abs" else x.neg())

    k = ReferenceKernel(make, ["x", "out", "mode"], roles=bytes([0, 0, 1]))
    x = rand(8, seed=5)
    for mode in ("abs", "neg", "abs", "neg"):
        out = torch.full_like(x, float("nan"))
        k(x, out, mode)
        torch.testing.assert_close(out, x.abs() if mode == "abs" else -x)
    assert seen == ["abs", "neg"]


def test_tensor_subclass_hits_entry_of_plain_tensor():
    """A tensor subclass (read by the Python twin) hits the entry built for a plain tensor."""
    class Sub(torch.Tensor):
        pass

    k = axpy_kernel()
    x, y = rand(8, seed=6), rand(8, seed=7)
    k(x, y, torch.empty(8), 2.0)
    out = torch.full((8,), float("nan"))
    k(x.as_subclass(Sub), y, out, 2.0)
    torch.testing.assert_close(out, 2.0 * x + y)
    assert k.builds == 1


def test_null_kernel_hit_returns_none():
    """MODE_NULL entries (the key benchmark) run nothing on a hit."""
    from fastdispatch.backends.reference import null_kernel

    k = null_kernel(3)
    args = (rand(4), rand(4), 7)
    assert k(*args) is None and k(*args) is None
    assert k.entries()[0].mode == keys.MODE_NULL and k.entries()[0].hits == 1


def test_reference_kernel_repr_and_names():
    """reference_kernel takes its name from the function; repr lists the parameters."""
    def scale(x, out):
        out.copy_(x * 2)

    k = reference_kernel(scale, ["x", "out"])
    assert k.name == "scale" and repr(k) == "<ReferenceKernel scale(x, out)>"
