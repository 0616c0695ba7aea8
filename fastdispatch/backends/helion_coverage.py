"""Whether a Helion bound kernel's specialization is a function of fastdispatch's key.

Lifetime: per key (a miss asks once, before a fast entry is built; see ``helion.py``'s module
docstring for what each key holds). Helion keys a bound kernel on its base specialization key
plus extractors found while compiling; :func:`uncovered_reason` names the first one our key
does not determine, or returns None.
"""
from __future__ import annotations

import operator

from fastdispatch.dispatcher import ROLE_CONSTEXPR

_METADATA_EXTRACTORS = frozenset({"size_extractor", "stride_extractor", "td_layout_extractor"})


def _argument_index(extractor):
    """The argument index a value extractor reads (1.4.0 itemgetter, 1.5 local_extractor)."""
    if isinstance(extractor, operator.itemgetter):
        reduced = extractor.__reduce__()[1]
        return reduced[0] if len(reduced) == 1 and isinstance(reduced[0], int) else None
    if getattr(extractor, "__name__", "") == "local_extractor":
        defaults = getattr(extractor, "__defaults__", None) or ()
        return defaults[0] if defaults and isinstance(defaults[0], int) else None
    return None


def _uncovered_extractor(extractor, roles: bytes, args: tuple):
    """None when ``extractor(args)`` is a function of our key; else why not."""
    kind = type(extractor).__name__
    if kind in ("_PreparedMetadataSpecializationExtractor", "_CompilerSeedSpecializationExtractor"):
        return None   # tensor metadata / device facts (1.5)
    if kind == "_SpecializationAlias":
        for inner in extractor.schemas.get(extractor.canonical_signature, ()):
            reason = _uncovered_extractor(inner, roles, args)
            if reason:
                return reason
        return None
    name = getattr(extractor, "__name__", kind)
    if name in _METADATA_EXTRACTORS:
        return None   # tensor size / stride / descriptor layout (1.4.0)
    index = _argument_index(extractor)
    if index is not None:
        if 0 <= index < len(roles) and (roles[index] == ROLE_CONSTEXPR or type(args[index]) is str):
            return None
        return (f"Helion specializes on the value of argument {index} (hl.specialize); annotate "
                f"it hl.constexpr to give it its own entries")
    return f"Helion specializes on {name} (not a function of the key)"


def uncovered_reason(kernel, bound, roles: bytes, args: tuple):
    """Why a fast entry for ``bound`` would be coarser than Helion's key; None when it is not."""
    if getattr(bound, "_run", None) is None:
        return "no compiled host function (ref mode or not compiled)"
    if kernel._key_fn is not None:
        return "the kernel has a key= function"
    if kernel.settings.distributed or getattr(kernel, "_declares_process_group", False):
        return "distributed kernel"
    try:
        if kernel._compute_is_distributed(args):
            return "distributed arguments"
    except Exception as exc:  # noqa: BLE001  (a probe: anything odd means Helion's own call)
        return f"distributed check failed: {type(exc).__name__}"
    signature = bound._base_spec_key
    extractors = list(kernel._specialize_extra.get(signature) or ())
    extractors += list(getattr(kernel, "_compiler_seed_specialize_extra", {}).get(signature) or ())
    for extractor in extractors:
        reason = _uncovered_extractor(extractor, roles, args)
        if reason:
            return reason
    return None
