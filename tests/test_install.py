"""What a user installs is what the library needs: fastdispatch imports and wraps (and AOT
compiles) a Triton kernel with only its declared dependencies. numpy is not one of them (it is in
the ``test`` extra for Triton's interpreter only), so it is hidden here by a ``sys.meta_path``
finder in a fresh interpreter, where nothing imported earlier can mask an import of it."""
import json
import os
import subprocess
import sys
import textwrap

import fastdispatch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(fastdispatch.__file__)))

# Run in a subprocess, from a file (``@triton.jit`` reads its source): the blocker must be in
# place before torch, triton or fastdispatch load.
NO_NUMPY_SCRIPT = textwrap.dedent("""
    import json, sys, traceback

    class NoNumpy:
        '''Finds numpy and numpy.* as missing, as on a machine without it; records who asked.'''
        attempts = []

        def find_spec(self, name, path=None, target=None):
            if name == "numpy" or name.startswith("numpy."):
                caller = next((f.filename for f in reversed(traceback.extract_stack()[:-1])
                               if "importlib" not in f.filename), "?")
                self.attempts.append((name, caller))
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)",
                                          name=name)
            return None

    blocker = NoNumpy()
    sys.meta_path.insert(0, blocker)

    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    import torch
    import fastdispatch

    @triton.jit
    def copy(src, dst, n, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(dst + i, tl.load(src + i, mask=i < n), mask=i < n)

    k = fastdispatch.triton_kernel(copy, grid=(1,))
    x = torch.zeros(256)
    key_text, files = k.compile_for(x, torch.empty_like(x), 256, 128,
                                    target=GPUTarget("cuda", 90, 32))
    print(json.dumps({
        "numpy_loaded": sorted(m for m in sys.modules if m == "numpy" or m.startswith("numpy.")),
        "interpreter_loaded": "triton.runtime.interpreter" in sys.modules,
        "attempts": sorted({caller for _, caller in blocker.attempts}),
        "key": key_text,
        "files": sorted(files),
        "cubin_magic": next(d for f, d in files.items() if f.endswith(".cubin"))[:4].hex(),
    }))
""")


def test_wraps_and_compiles_a_triton_kernel_without_numpy(tmp_path):
    """With numpy unimportable, import + triton_kernel + an sm_90 AOT compile all work, and no
    fastdispatch or Triton-interpreter code asks for numpy (torch's own optional probe may)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["FASTDISPATCH_DISK_CACHE"] = "0"  # nothing written to the user's cache
    script = tmp_path / "no_numpy.py"
    script.write_text(NO_NUMPY_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["numpy_loaded"] == []
    assert not result["interpreter_loaded"]
    askers = [c for c in result["attempts"]
              if f"{os.sep}fastdispatch{os.sep}" in c or f"{os.sep}triton{os.sep}" in c]
    assert askers == [], f"asked for numpy: {askers}"
    assert "arch=cuda:90:32" in result["key"]
    assert result["cubin_magic"] == b"\x7fELF".hex()
