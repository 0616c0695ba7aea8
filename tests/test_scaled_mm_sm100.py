"""CPU tests of the Blackwell scaled_mm kernel: compiled for sm_100a without a GPU, checked
on its PTX ("compiled, not run"), plus the PTX helpers it is checked with.

Each variant is compiled once per module (~1.5 s each on this machine)."""

import re

import pytest

from fastdispatch.kernels.scaled_mm._ptx import count_ptx_ops, ptx_opcodes, ptxas_resource_usage

# A snippet that trips naive counting: opcodes in comments, guarded and labelled
# instructions, inline asm with several statements per line, near-miss prefixes.
PTX_SNIPPET = r"""
.visible .entry k(
	.param .u64 k_param_0
)
{
	.reg .pred %p<3>;
	// tcgen05.mma.cta_group::2 in a comment does not count
	/* cp.async.bulk.tensor neither,
	   tcgen05.ld across lines */
	@%p1 tcgen05.mma.cta_group::2.kind::f8f6f4 [%r1], %rd1, %rd2, %r2, %p2;
	@!%p2 bra $L__BB0_1;
$L__BB0_1: tcgen05.mma.cta_group::1.kind::f16 [%r1], %rd1, %rd2, %r2, %p2;
	{ .reg .pred P1; LAB_WAIT: mbarrier.try_wait.parity.shared.b64 P1, [%r3], %r4; @P1 bra.uni DONE; bra.uni LAB_WAIT; DONE: }
	mbarrier.arrive.expect_tx.shared.b64 %rd3, [%r5], %r6;
	tcgen05.ld.sync.aligned.32x32b.x32.b32 {%r7, %r8}, [%r9];
	tcgen05.wait::ld.sync.aligned;
	cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%r1], [%rd4, {%r2, %r3}], [%r4];
	cp.async.bulk.commit_group;
	wgmma.fence.sync.aligned;
	wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {%f1}, %rd5, %rd6, 1, 1, 1;
	ret;
}
"""


def test_count_ptx_ops_snippet():
    counts = count_ptx_ops(
        PTX_SNIPPET,
        prefixes=("tcgen05.mma", "tcgen05.ld", "tcgen05.wait", "cp.async.bulk.tensor", "cp.async.bulk",
                  "mbarrier", "wgmma.mma_async", "bra", "tcgen05.alloc"),
    )
    assert counts == {
        "tcgen05.mma": 2,  # guarded one + labelled one, not the comment
        "tcgen05.ld": 1,  # not tcgen05.wait::ld, not the block comment
        "tcgen05.wait": 1,
        "cp.async.bulk.tensor": 1,
        "cp.async.bulk": 2,  # prefixes overlap on purpose: tensor copy + commit_group
        "mbarrier": 2,  # one inside the inline-asm block
        "wgmma.mma_async": 1,  # not wgmma.fence
        "bra": 3,  # @!%p2 bra, @P1 bra.uni, bra.uni
        "tcgen05.alloc": 0,
    }
    ops = list(ptx_opcodes(PTX_SNIPPET))
    assert "k_param_0" not in " ".join(ops) and ")" not in ops and "LAB_WAIT:" not in ops


cutlass = pytest.importorskip("cutlass", reason="nvidia-cutlass-dsl not installed")
sm100 = pytest.importorskip("fastdispatch.kernels.scaled_mm.sm100")

MCAST_CONFIG = dict(cluster_m=2, cluster_n=2)


@pytest.fixture(scope="module")
def ptx():
    """PTX per variant: default config with and without bias, and a multicast cluster."""
    default = sm100.default_config(4096, 4096, 4096)
    mcast = sm100.Sm100Config(**MCAST_CONFIG)
    return {
        "plain": sm100.ptx_sm100(default, has_bias=False),
        "bias": sm100.ptx_sm100(default, has_bias=True),
        "mcast": sm100.ptx_sm100(mcast, has_bias=False),
    }


def _ops(text):
    return list(ptx_opcodes(text))


# --- configuration and SMEM budget -------------------------------------------------------


def test_default_config_stages_fill_smem():
    cfg = sm100.default_config(4096, 4096, 4096)
    assert (cfg.tile_m, cfg.tile_n, cfg.tile_k, cfg.cluster_m) == (256, 128, 128, 2)
    assert cfg.ab_stages == sm100.max_ab_stages(cfg) == 8
    used = sm100.smem_bytes(cfg)
    assert used <= sm100.SMEM_CAPACITY
    # One more stage would not fit: the ring is as deep as the budget allows.
    stage = sm100.smem_bytes(cfg) - sm100.smem_bytes(sm100.Sm100Config(ab_stages=7))
    assert used + stage > sm100.SMEM_CAPACITY
    with pytest.raises(ValueError, match="does not fit"):
        sm100.Sm100Config(ab_stages=9).resolved()


@pytest.mark.parametrize(
    "bad", [dict(tile_m=128), dict(tile_n=96 + 8), dict(cluster_m=1), dict(cluster_m=3),
            dict(acc_stages=5), dict(epi_n=48), dict(ab_stages=1)]
)
def test_invalid_configs_rejected(bad):
    with pytest.raises(ValueError):
        sm100.Sm100Config(**bad)


def test_config_is_hashable_key():
    assert hash(sm100.Sm100Config()) == hash(sm100.Sm100Config())
    assert sm100.Sm100Config().resolved() == sm100.default_config(1, 1, 1)


# --- PTX structure -----------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "bias", "mcast"])
def test_ptx_is_sm100a_tcgen05_kernel(ptx, variant):
    text = ptx[variant]
    assert re.search(r"^\.target sm_100a", text, re.M)
    ops = _ops(text)
    cfg = sm100.default_config(1, 1, 1)
    mma = [o for o in ops if o.startswith("tcgen05.mma")]
    # One rolled K-loop body: tile_k / 32 fp8 MMAs, all 2-CTA f8f6f4.
    assert len(mma) == cfg.tile_k // 32
    assert all(".cta_group::2" in o and ".kind::f8f6f4" in o for o in mma)
    # Epilogue: one 32x32b TMEM load per subtile, unrolled.
    t2r = [o for o in ops if o.startswith("tcgen05.ld")]
    assert len(t2r) == cfg.tile_n // cfg.epi_n and all("32x32b" in o for o in t2r)
    counts = count_ptx_ops(text, ("tcgen05.alloc", "tcgen05.dealloc", "tcgen05.relinquish_alloc_permit"))
    assert counts == {"tcgen05.alloc": 1, "tcgen05.dealloc": 1, "tcgen05.relinquish_alloc_permit": 1}
    assert all(".cta_group::2" in o for o in ops if o.startswith(("tcgen05.alloc", "tcgen05.dealloc")))
    # MMA completion is signalled to both CTAs of the pair.
    commits = [o for o in ops if o.startswith("tcgen05.commit")]
    assert commits and all(".cta_group::2" in o and ".multicast::cluster" in o for o in commits)
    # Cluster-wide barrier init handshake.
    assert "barrier.cluster.wait" in ops
    # No local memory at all (spills or stack arrays).
    assert count_ptx_ops(text, ("ld.local", "st.local")) == {"ld.local": 0, "st.local": 0}


@pytest.mark.parametrize("variant", ["plain", "bias", "mcast"])
def test_ptx_tma_loads_and_store(ptx, variant):
    ops = _ops(ptx[variant])
    loads = [o for o in ops if o.startswith("cp.async.bulk.tensor") and ".global.shared" not in o]
    stores = [o for o in ops if o.startswith("cp.async.bulk.tensor") and ".global.shared" in o]
    # A and B: one TMA each per K step, into cluster SMEM, completing on the leader's mbarrier.
    assert len(loads) == 2
    for o in loads:
        assert ".shared::cluster.global" in o and "complete_tx::bytes" in o and ".cta_group::2" in o, o
    # Output: one TMA store per epilogue subtile.
    assert len(stores) == sm100.default_config(1, 1, 1).tile_n // sm100.default_config(1, 1, 1).epi_n
    assert all(o.startswith("cp.async.bulk.tensor.2d.global.shared::cta") for o in stores)
    mcast = [o for o in loads if ".multicast::cluster" in o]
    # cluster (2, 1): nothing to multicast; cluster (2, 2): A is multicast along N.
    assert len(mcast) == (1 if variant == "mcast" else 0)


def test_ptx_ring_depth_matches_stages(ptx):
    # mbarriers: full+empty per A/B stage and per accumulator stage, plus the TMEM dealloc one.
    cfg = sm100.default_config(1, 1, 1)
    inits = count_ptx_ops(ptx["plain"], ("mbarrier.init",))["mbarrier.init"]
    assert inits == 2 * cfg.ab_stages + 2 * cfg.acc_stages + 1


def test_ptx_scale_and_bias_loads(ptx):
    cfg = sm100.default_config(1, 1, 1)
    subtiles = cfg.tile_n // cfg.epi_n
    plain, bias = (count_ptx_ops(ptx[v], ("ld.global.v4", "ld.global.b32")) for v in ("plain", "bias"))
    # scale_a: one scalar per tile; scale_b: 128-bit vectors, per subtile (not hoisted).
    assert plain["ld.global.b32"] == 1
    assert plain["ld.global.v4"] == subtiles * cfg.epi_n // 4
    # bias: 8 bf16 per 128-bit load.
    assert bias["ld.global.v4"] - plain["ld.global.v4"] == subtiles * cfg.epi_n // 8


@pytest.mark.parametrize("variant", ["plain", "bias", "mcast"])
def test_ptxas_no_spills(ptx, variant):
    usage = ptxas_resource_usage(ptx[variant], "sm_100a")
    if usage is None:
        pytest.skip("no ptxas that supports sm_100a")
    assert usage["spill_stores"] == 0 and usage["spill_loads"] == 0, usage
    assert usage["stack_frame"] == 0, usage
    assert usage["registers"] <= 168, usage  # 192 threads/CTA, 1 CTA/SM: far from the cap


# --- the TVM-FFI entry point -------------------------------------------------------------


@pytest.mark.parametrize("has_bias", [False, True])
def test_compiled_signature(has_bias):
    """The binary takes exactly (a, b, scale_a, scale_b, out[, bias]) torch tensors, the
    stream coming from torch's current stream; CPU tensors get past arity and dtypes and
    are refused only for their device."""
    torch = pytest.importorskip("torch")
    fn = sm100.compile_sm100(sm100.default_config(256, 128, 128), has_bias=has_bias)
    call = fn.__tvm_ffi_object__()
    if call is None:   # a GPU of another arch is present: the DSL builds no callable for sm_100a
        pytest.skip("no sm_100a callable on this machine's GPU; checked on CPU-only machines")
    m, n, k = 256, 128, 128
    args = [
        torch.zeros(m, k, dtype=torch.float8_e4m3fn),
        torch.zeros(n, k, dtype=torch.float8_e4m3fn).t(),
        torch.ones(m, 1),
        torch.ones(1, n),
        torch.empty(m, n, dtype=torch.bfloat16),
    ]
    if has_bias:
        args.append(torch.zeros(n, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="cuda"):
        call(*args)
    with pytest.raises(TypeError, match=f"Expects {len(args)} parameters"):
        call(*args[:-1])


def test_out_dtype_other_than_bf16_refused():
    with pytest.raises(NotImplementedError):
        sm100.compile_sm100(sm100.default_config(1, 1, 1), has_bias=False, out_dtype="fp16")
