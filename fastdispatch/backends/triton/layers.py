"""``@triton.heuristics`` and ``@triton.autotune`` layers, resolved once per key.

Lifetime: per miss. A wrapped kernel may be any nesting of Triton's ``Heuristics`` and
``Autotuner`` over a ``JITFunction``. On a miss, :meth:`Layers.resolve` walks the layers outer
to inner as Triton's own ``run`` methods would for this call (heuristics computed on
``{**named args, **kwargs}``, the autotuner's config merged in), and records what decided the
result, so the key can hold exactly that (``kernel.py`` turns it into key roles):

- every argument a heuristic read: ints, floats and bools by exact value (ROLE_VALUE); tensors
  by what was read (dtype/device/rank are in every key; sizes or strides need ROLE_VALUE's exact
  shape); a read the key cannot hold (``data_ptr()``, an unknown attribute, a tensor passed on
  to a function) makes the kernel *opaque*: every call then takes Triton's own path, which
  recomputes the heuristics per call, as Triton does;
- the autotuner's ``key`` arguments (exact values) and every tensor's dtype: Triton's own
  tuning key. Its decision comes from :mod:`decisions` (memory, disk, a shipped file, rank 0)
  or, the first time, from Triton's ``Autotuner.run`` itself (which benchmarks with the user's
  ``do_bench``/``warmup``/``rep``/``use_cuda_graph``, pre/post hooks, ``reset_to_zero``,
  ``restore_value`` and ``prune_configs_by``, and launches this call).

A heuristic is assumed to be a function of what it reads (Triton calls it on a fresh dict per
call, so it can see nothing else of the call); the tests check on random arguments that no
call launches a binary built for another heuristic value.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch
from triton.runtime.autotuner import Autotuner, Heuristics

# What of a tensor the CLASS key already holds (dtype, device, rank), and what its exact shape
# and strides (ROLE_VALUE) decide; any other attribute makes a heuristic opaque.
_CLASS_ATTRS = frozenset({"dtype", "device", "ndim", "dim", "is_cuda", "element_size", "itemsize",
                          "is_floating_point", "is_complex", "layout"})
_SHAPE_ATTRS = frozenset({"shape", "size", "stride", "numel", "nelement", "is_contiguous"})


class _Opaque(Exception):
    """A heuristic read something the key cannot hold."""


class _TensorProbe:
    """A tensor seen by a heuristic: forwards attribute reads and records which ones."""

    __slots__ = ("_tensor", "_name", "_reads")

    def __init__(self, tensor, name, reads):
        self._tensor, self._name, self._reads = tensor, name, reads

    def __getattr__(self, attr):
        if attr in _SHAPE_ATTRS:
            self._reads.add(self._name)
        elif attr not in _CLASS_ATTRS:
            raise _Opaque(f"heuristic reads {self._name}.{attr}")
        return getattr(self._tensor, attr)


class _ReadRecorder(dict):
    """The dict a heuristic gets: records the names it reads; tensors come wrapped in probes."""

    def __init__(self, values, tensor_names, reads, shape_reads):
        super().__init__(values)
        self._tensor_names, self._reads, self._shape_reads = tensor_names, reads, shape_reads

    def __getitem__(self, name):
        value = super().__getitem__(name)
        if name in self._tensor_names and isinstance(value, torch.Tensor):
            return _TensorProbe(value, name, self._shape_reads)   # dtype etc. are keyed already
        self._reads.add(name)
        return value

    def get(self, name, default=None):
        return self[name] if name in self else default

    def __iter__(self):
        raise _Opaque("heuristic iterates over all arguments")

    def items(self):
        raise _Opaque("heuristic iterates over all arguments")

    values = keys = items


@dataclass
class Resolution:
    """What the layers decided for one call."""

    values: dict                     # constexprs and launch options the layers set
    value_reads: set = field(default_factory=set)   # argument names whose exact value decided it
    pre_hooks: list = field(default_factory=list)   # config pre_hooks to run on every call
    launched: bool = False           # Triton's autotuner launched this call while tuning
    opaque: str | None = None        # why the key cannot hold what decided it


class Layers:
    """The Heuristics/Autotuner wrappers of a kernel object, outer to inner."""

    def __init__(self, kernel):
        self.layers = []
        obj = kernel
        while isinstance(obj, (Heuristics, Autotuner)):
            self.layers.append(obj)
            obj = obj.fn
        self.base = obj
        self.provided: set = set()      # names the layers set (the caller does not pass them)
        self.autotune_keys: set = set()
        self._locks = {id(layer): threading.Lock() for layer in self.layers}
        for layer in self.layers:
            if isinstance(layer, Heuristics):
                self.provided.update(layer.values)
            else:
                for config in layer.configs:
                    self.provided.update(config.kwargs)
                if len(layer.configs) > 1:
                    self.autotune_keys.update(layer.keys)

    @property
    def autotuners(self):
        return [layer for layer in self.layers if isinstance(layer, Autotuner)]

    def resolve(self, named: dict, kwargs: dict, tensor_names: set, decide, tune) -> Resolution:
        """Run the layers for a call: ``named`` its arguments by name (positional order),
        ``kwargs`` the per-call options given. ``decide(layer, tuning_key)`` returns a known
        Config or None; ``tune(layer, kwargs)`` runs Triton's autotuner for this call (which
        launches it) and returns the chosen Config."""
        out = Resolution(values=dict(kwargs))
        shape_reads: set = set()
        for layer in self.layers:
            if isinstance(layer, Heuristics):
                for name, heuristic in layer.values.items():
                    recorder = _ReadRecorder({**named, **out.values}, tensor_names,
                                             out.value_reads, shape_reads)
                    try:
                        out.values[name] = heuristic(recorder)
                    except _Opaque as exc:
                        out.opaque = str(exc)
                        out.values[name] = heuristic({**named, **out.values})
                    except Exception:
                        # the probes changed what the heuristic saw (e.g. torch.is_tensor):
                        # its value is Triton's, from plain arguments; the key cannot hold it
                        out.values[name] = heuristic({**named, **out.values})
                        out.opaque = f"heuristic {name!r} needs the arguments themselves"
                continue
            if len(layer.configs) == 1:
                config = layer.configs[0]
            else:
                all_args = {**named, **out.values}
                tuning_key = tuning_key_of(layer, all_args)
                out.value_reads.update(k for k in layer.keys if k in named)
                config = decide(layer, tuning_key)
                if config is None:
                    with self._locks[id(layer)]:   # Triton's Autotuner keeps per-call state
                        config = decide(layer, tuning_key)
                        if config is None:
                            config = tune(layer, dict(out.values))
                            out.launched = True
            conflicts = set(config.kwargs) & set(kwargs)
            if conflicts:
                raise ValueError(f"Conflicting meta-parameters: {', '.join(sorted(conflicts))}. "
                                 f"Make sure that you don't re-define auto-tuned symbols.")
            out.values.update(config.all_kwargs())
            if config.pre_hook is not None:
                out.pre_hooks.append(config.pre_hook)
        out.value_reads.update(shape_reads)
        return out


def tuning_key_of(layer: Autotuner, all_args: dict) -> tuple:
    """Triton's ``Autotuner.run`` key: the key arguments' values, then every tensor's dtype."""
    args = {k: v for k, v in all_args.items() if k in layer.arg_names}
    key = [args[k] for k in layer.keys if k in args]
    key += [str(v.dtype) for v in args.values() if hasattr(v, "dtype")]
    return tuple(key)
