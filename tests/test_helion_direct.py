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
