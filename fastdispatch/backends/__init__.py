"""Backends: how to compile (or load) a binary for one specialization key.

Lifetime: per key (a miss). ``triton`` (``triton.compile`` for the tensors' GPU or any
``GPUTarget``), ``cute`` (``cute.compile`` with TVM-FFI) and ``reference`` (CPU callables, so the
dispatcher and caches are testable without a GPU). Each subclasses
:class:`fastdispatch.dispatcher.Dispatcher`.
"""
