"""PTX inspection helpers shared by the scaled_mm kernels (per compile, never per call).

The Blackwell kernel cannot be run here (no sm_100 GPU), so its tests check what was
generated instead: which instructions the PTX holds (`count_ptx_ops`) and what ptxas
makes of it (`ptxas_resource_usage`: registers and spills).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

__all__ = ["DEFAULT_PREFIXES", "count_ptx_ops", "find_ptxas", "ptxas_resource_usage", "ptx_opcodes"]

#: Opcode prefixes worth counting in a GEMM's PTX (Hopper and Blackwell).
DEFAULT_PREFIXES = (
    "tcgen05.mma",
    "tcgen05.ld",
    "tcgen05.st",
    "tcgen05.alloc",
    "tcgen05.dealloc",
    "tcgen05.commit",
    "wgmma.mma_async",
    "cp.async.bulk.tensor",
    "mbarrier",
    "st.async",          # split-K partials into a peer CTA's SMEM (distributed SMEM)
    "griddepcontrol",    # programmatic dependent launch
    "ld.global",
    "st.global",
    "ld.local",
    "st.local",
)

# A guard such as `@%p1`, `@!%p3` or (inside inline asm) `@P1` precedes a predicated opcode.
_GUARD = re.compile(r"^@!?%?\w+\s+")
# Labels (`$L__BB0_3:`) may share a line with the instruction that follows them.
_LABEL = re.compile(r"^[$\w]+:\s*")


def ptx_opcodes(ptx: str):
    """Yield the full opcode (e.g. ``cp.async.bulk.tensor.2d.shared::cluster...``) of every
    instruction in ``ptx``, skipping comments, directives, labels and braces."""
    ptx = re.sub(r"/\*.*?\*/", " ", ptx, flags=re.S)
    for line in ptx.splitlines():
        line = line.split("//", 1)[0]
        # Inline-asm blocks put several statements on one line, separated by ';'.
        for stmt in line.split(";"):
            stmt = stmt.strip().lstrip("{}").strip()
            while True:
                m = _LABEL.match(stmt)
                if not m:
                    break
                stmt = stmt[m.end():]
            stmt = _GUARD.sub("", stmt)
            # Directives (.reg, .param, ...) and the ( ) of an entry's parameter list.
            if not stmt or stmt[0] in ".{}()":
                continue
            yield stmt.split(None, 1)[0]


def count_ptx_ops(ptx: str, prefixes=DEFAULT_PREFIXES) -> dict[str, int]:
    """Count the instructions of ``ptx`` whose opcode starts with each prefix.

    Matching is on the opcode only (comments, operands and directives never count), so
    ``"tcgen05.mma"`` counts ``tcgen05.mma.cta_group::2.kind::f8f6f4`` but not a
    ``// tcgen05.mma`` comment. Returns ``{prefix: count}`` with every prefix present.
    """
    counts = dict.fromkeys(prefixes, 0)
    for op in ptx_opcodes(ptx):
        for p in prefixes:
            if op.startswith(p):
                counts[p] += 1
    return counts


def find_ptxas() -> str | None:
    """Path of a ptxas binary: ``$PTXAS``, then ``PATH``, then ``$CUDA_HOME/bin``, then the
    ``nvidia-cuda-nvcc`` wheel; ``None`` when there is none."""
    cands = [os.environ.get("PTXAS"), shutil.which("ptxas")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            cands.append(os.path.join(os.environ[var], "bin", "ptxas"))
    try:
        import nvidia.cuda_nvcc as _nvcc  # pip: nvidia-cuda-nvcc-cu12 / -cu13

        for root in getattr(_nvcc, "__path__", []):
            cands.append(os.path.join(root, "bin", "ptxas"))
    except ImportError:
        pass
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")
# ptxas too old for the PTX's .version or for the target: "not available", not a failure.
_TOO_OLD = re.compile(r"Unsupported \.version|not defined for option|is not a supported|Unknown option", re.I)


def ptxas_resource_usage(ptx: str, arch: str = "sm_100a", *, ptxas: str | None = None) -> dict | None:
    """Assemble ``ptx`` for ``arch`` with ``ptxas -v`` and report its resource usage.

    Returns ``None`` when no ptxas is found, or when the one found is too old for the PTX
    or the arch. Otherwise ``{"registers", "spill_stores", "spill_loads", "stack_frame"}``
    (maximum registers, summed bytes over all entry functions) plus ``"kernels"``: the
    same per entry function. A ptxas error on PTX it does support raises RuntimeError.
    """
    ptxas = ptxas or find_ptxas()
    if ptxas is None:
        return None
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        proc = subprocess.run(
            [ptxas, f"-arch={arch}", "-v", "-o", os.path.join(d, "k.cubin"), src],
            capture_output=True,
            text=True,
        )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        if _TOO_OLD.search(log):
            return None
        raise RuntimeError(f"ptxas failed ({proc.returncode}):\n{log[-4000:]}")
    kernels: dict[str, dict[str, int]] = {}
    cur = None
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            cur = kernels.setdefault(m.group(1), {})
        elif cur is not None and (m := _FRAME.search(line)):
            cur.update(stack_frame=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
        elif cur is not None and (m := _REGS.search(line)):
            cur["registers"] = int(m[1])
    if not kernels:
        raise RuntimeError(f"no entry function in ptxas output:\n{log[-4000:]}")
    return {
        "registers": max(k.get("registers", 0) for k in kernels.values()),
        "spill_stores": sum(k.get("spill_stores", 0) for k in kernels.values()),
        "spill_loads": sum(k.get("spill_loads", 0) for k in kernels.values()),
        "stack_frame": sum(k.get("stack_frame", 0) for k in kernels.values()),
        "kernels": kernels,
    }
