"""Hopper (sm_90a, WGMMA) fp8 GEMM with rowwise or block scales, in CuTe DSL (per key).

    out[m, n] = bf16((A[m, :] @ Bt[n, :]) * scale_a[m] * scale_b[n] (+ bias[n]))

The binary takes torch._scaled_mm's layouts (A e4m3 [M, K] row-major, B e4m3 [K, N]
column-major, rowwise scales fp32 [M, 1] and [1, N], optional bias bf16 [N], out bf16 [M, N]
row-major) and views them as the kernel's operands without moving data: Bt [N, K] row-major
(K-major B: Hopper fp8 WGMMA reads both operands K-major only) and unit-stride scale vectors
(`_compile.TorchLayoutEntries`). Accumulation in fp32 registers; both scales (and the bias) are
applied in fp32 before the one bf16 rounding.

Tensorwise scales: the kernel always reads one scale per row of A and per column of B; a
caller with tensorwise (one-element) scales passes them expanded to contiguous [M, 1] and
[1, N] (``api._kernel_call`` does this). Contiguous, not stride-0 views: the binary assumes
unit stride.

Structure (one CTA per SM, clusters of ``cluster_m x cluster_n`` CTAs):
- persistent: the grid holds ``num_sms // cluster size`` clusters that walk the output tiles
  in our own static, L2-grouped order (`_tile_coords`), the same in every role;
- warp specialization: warpgroup 0 is the producer (warp 0 issues the TMA loads of A and Bt,
  multicast across the cluster where ``cluster_m/n > 1``; its registers are given to the
  consumers with ``setmaxnreg``), warpgroups 1..``consumer_wgs`` issue WGMMA and run the
  epilogue; the consumers split the tile along M (64 or 128 rows each);
- a ``stages``-deep A/B SMEM ring (`PipelineTmaAsync`); a consumer frees a stage once the
  MMAs reading it retired: with fast accumulation it keeps one k-tile of WGMMAs in flight
  (``wgmma.wait_group 1``) and frees the k-tile before; promoting every k-tile, it waits for
  that k-tile's WGMMAs anyway (``wait_group 0``) and frees its stage at once; with
  ``overlap_promotion`` two temporaries alternate so each promotion runs under the next
  k-tile's WGMMAs (``wait_group 1``), in groups drained at the loop edge (ptxas serializes
  WGMMAs whose accumulators are carried in flight through a loop or branch merge);
- epilogue: the fp32 accumulator is scaled in place (row scale x column scale, + bias) with
  coordinates from an identity tensor partitioned like the accumulator, then either staged
  through SMEM (``stmatrix``) and written with TMA stores in ``tile_m x epi_n`` subtiles (the
  normal path; TMA clips partial tiles; the whole tile at once when ``epi_stages`` buffers
  hold it), or written with predicated stores (``swap_ab``).

Small M (decode, M <= 128) is bandwidth-bound on B: ``swap_ab`` computes out^T = Bt @ A^T so
that N fills the MMA's 64-row side and M (8..128) its N side; the grid then has N / 64 tiles.
Where those are few (N <= 4224), ``split_k`` gives each tile a cluster of CTAs that split its
K range and sum their fp32 partials in rank order through distributed SMEM (``st.async`` into
rank 0's SMEM, mbarrier hand-off both ways): twice the SMs streaming Bt, no global workspace,
and the same bits every run. Small-M configs also launch with programmatic dependent launch
(``pdl``): their fixed cost (launch, barrier init) overlaps the previous kernel's tail.

Block scales (torch's BlockWise1x128 for A with BlockWise128x128 or BlockWise1x128 for B,
the DeepSeek-V3 recipe): the scale factors of each 128-deep k-tile multiply its partial sum
where it is promoted into the fp32 accumulator (`_block_scales`), so they cost an FMA in
place of the promotion's add, plus a few L2-resident loads per k-tile; the epilogue adds
only the bias.

Element types: e4m3 or e5m2 operands (each its own; WGMMA reads either), bf16 or fp16 out
(the same 16-bit stmatrix/TMA epilogue), bias in the output's type.

Requirements on the arguments (the dispatcher checks them, the binary assumes them): 16-byte
aligned data pointers, A's row stride and B's column stride multiples of 16 elements (>= K:
padded leading dimensions are TMA strides), out contiguous row-major, K % 16 == 0,
N % 8 == 0, M, N, K >= 1. One binary per (config, bias) serves every M/N/K.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import cutlass
import cutlass.cute as cute
import cutlass.pipeline as pipeline
from cutlass._mlir.dialects.nvvm import MemScopeKind
from cutlass.cute.nvgpu import cpasync, warpgroup
from cutlass.pipeline import pipeline_init_arrive, pipeline_init_wait
from cutlass.utils import SmemAllocator

__all__ = [
    "Sm90Config",
    "compile_sm90",
    "default_config",
    "kernel_supports",
    "max_stages",
    "ptx_sm90",
    "raw_callable",
    "smem_bytes",
]

ARCH = "sm_90a"
#: Dynamic SMEM one CTA may use on H100 (227 KB).
SMEM_CAPACITY = 232448
#: Reserved for the mbarriers and alignment padding.
SMEM_RESERVED = 1024
#: Streaming multiprocessors of an H100 SXM (sizes the persistent grid).
H100_SMS = 132
#: Scale recipes the binary applies: rowwise ([M, 1] x [1, N] in the epilogue; tensorwise
#: scales come expanded to it), and torch's blockwise ScalingTypes, applied at every 128-deep
#: promotion: A BlockWise1x128 ([M, ceil(K/128)]) with B BlockWise128x128
#: ([ceil(K/128), ceil(N/128)]) or B BlockWise1x128 ([ceil(K/128), N]).
SCALE_RECIPES = ("rowwise", "block_1x128_128x128", "block_1x128_1x128")
#: Operand and output element types by name (the config is a hashable cache key).
OPERAND_DTYPES = {"e4m3": "Float8E4M3FN", "e5m2": "Float8E5M2"}
OUT_DTYPES = {"bf16": "BFloat16", "fp16": "Float16"}
#: The binaries take A with any row stride and B with any column stride (multiples of 16
#: elements): views into larger buffers (padded leading dimensions) are TMA strides.
PADDED_STRIDES = True

from fastdispatch.kernels.scaled_mm._compile import (  # noqa: E402
    ArgSpec, TorchLayoutEntries, compile_kernel, ptx_of, resolve_stages)
from fastdispatch.kernels.scaled_mm import _block_scales as block_scales  # noqa: E402
from fastdispatch.kernels.scaled_mm._schedule import grouped_cluster_tile, load_k_tiles  # noqa: E402


@dataclass(frozen=True)
class Sm90Config:
    """Compile-time configuration of the sm_90a scaled_mm kernel (hashable: a cache key).

    Tile sizes are in the kernel's own MMA terms: ``tile_m`` rows of the first operand (A, or
    Bt when ``swap_ab``) by ``tile_n`` rows of the second (Bt, or A), ``tile_k`` deep.

    - ``tile_m``: 64 or 128 per consumer warpgroup times ``consumer_wgs`` (at most 128 rows
      per warpgroup: the accumulator lives in registers).
    - ``tile_n``: a multiple of 8 in [8, 256] (WGMMA N); a multiple of ``epi_n`` unless
      ``swap_ab``.
    - ``tile_k``: 64, 128 or 256 (128: one 128-byte swizzle row of fp8; 256: two, loaded as
      two TMA boxes per operand and stage).
    - ``consumer_wgs``: WGMMA warpgroups (1 or 2); they split ``tile_m``.
    - ``stages``: A/B ring depth; ``None`` = as many as fit in SMEM (`max_stages`).
    - ``cluster_m, cluster_n``: cluster shape; ``cluster_n > 1`` multicasts A tiles along N,
      ``cluster_m > 1`` multicasts B tiles along M.
    - ``swap_ab``: compute out^T = Bt @ A^T (small M): epilogue with predicated stores.
    - ``split_k``: CTAs of a cluster that split one tile's K range (contiguous parts) and sum
      their partials through distributed SMEM, so a small grid of tiles fills more SMs
      (swap_ab only, no multicast cluster). The sum runs in a fixed order: the result does
      not depend on timing.
    - ``promote``: k-tiles WGMMA accumulates on its own before the partial sum is added to
      the fp32 accumulator (two-level accumulation, as torch._scaled_mm's default
      use_fast_accum=False): promote=1 adds every tile_k of K (128 for the large configs, 256
      for the small-M ones: rel. error 8.7e-4 against 6.8e-4 at K=8192, measured, both far
      from fast accumulation's 3e-3); 0 = fast accumulation (WGMMA accumulates all of K,
      fewer registers: the only way a 128x256 tile fits).
    - ``pdl``: launch with programmatic dependent launch: the prologue (barrier init, SMEM
      carve-up, TMA descriptor prefetch) may overlap the previous kernel's tail on the stream;
      every global read and write waits for that kernel (``griddepcontrol.wait``), and the
      next kernel may start its own prologue once every CTA is past that point.
    - ``overlap_promotion``: 0, or with ``promote == 1`` a group size U >= 2: two temporary
      accumulators alternate, so adding k-tile j into the fp32 accumulator runs while k-tile
      j+1's WGMMAs execute, within groups of U k-tiles (the same sums in the same order:
      bit-identical results). A third accumulator's registers: at most 64 per accumulator
      (64x128 per consumer warpgroup).
    - ``epi_n``: columns per TMA-store subtile (normal path), ``epi_stages`` its SMEM buffers.
      When the buffers hold the whole tile (``epi_stages * epi_n >= tile_n``) the epilogue
      stages all of it and issues the stores after one barrier, instead of two per subtile.
    - ``group_m``: height (in cluster tiles) of the L2 groups of the tile order.
    - ``num_sms``: SMs of the target part; the grid holds ``num_sms // cluster size`` clusters.
    """

    tile_m: int = 128
    tile_n: int = 128
    tile_k: int = 128
    consumer_wgs: int = 2
    stages: Optional[int] = None
    cluster_m: int = 1
    cluster_n: int = 1
    swap_ab: bool = False
    split_k: int = 1
    promote: int = 1
    pdl: bool = False
    overlap_promotion: int = 0
    epi_n: int = 32
    epi_stages: int = 2
    group_m: int = 8
    num_sms: int = H100_SMS
    scales: str = "rowwise"
    a_dtype: str = "e4m3"
    b_dtype: str = "e4m3"
    out_dtype: str = "bf16"

    def __post_init__(self):
        errs = []
        if self.scales not in SCALE_RECIPES:
            errs.append(f"scales must be one of {SCALE_RECIPES}")
        elif self.scales != "rowwise" and not (self.promote == 1 and self.tile_k == 128):
            errs.append("block scales are applied at each promotion: they need promote == 1 and tile_k == 128")
        elif self.scales != "rowwise" and self.tile_m // self.consumer_wgs != 64:
            errs.append("block scales need 64 rows per consumer warpgroup (one m64 WGMMA accumulator)")
        elif self.scales != "rowwise" and 128 % (self.tile_m if self.swap_ab else self.tile_n):
            errs.append("block scales need the tile's side along N to divide 128 (one 128x128 scale block)")
        if self.a_dtype not in OPERAND_DTYPES or self.b_dtype not in OPERAND_DTYPES:
            errs.append(f"a_dtype and b_dtype must be in {tuple(OPERAND_DTYPES)}")
        if self.out_dtype not in OUT_DTYPES:
            errs.append(f"out_dtype must be in {tuple(OUT_DTYPES)}")
        if self.consumer_wgs not in (1, 2):
            errs.append("consumer_wgs must be 1 or 2")
        elif self.tile_m % self.consumer_wgs or self.tile_m // self.consumer_wgs not in (64, 128):
            errs.append("tile_m // consumer_wgs must be 64 or 128")
        if not (8 <= self.tile_n <= 256 and self.tile_n % 8 == 0):
            errs.append("tile_n must be a multiple of 8 in [8, 256]")
        if self.tile_k not in (64, 128, 256):
            errs.append("tile_k must be 64, 128 or 256")
        for c in (self.cluster_m, self.cluster_n):
            if c < 1 or c & (c - 1):
                errs.append("cluster_m and cluster_n must be powers of two")
        if self.cluster_m * self.cluster_n > 4:
            errs.append("cluster size must be <= 4")
        if not self.swap_ab and self.tile_m != 64 * self.consumer_wgs:
            errs.append("the TMA-store epilogue (swap_ab=False) needs 64 rows per consumer warpgroup")
        if not self.swap_ab and (self.epi_n not in (16, 32, 64) or self.tile_n % self.epi_n):
            errs.append("epi_n must be 16, 32 or 64 and divide tile_n")
        cluster_size = self.cluster_m * self.cluster_n * self.split_k
        if self.epi_stages < 1 or self.group_m < 1 or self.num_sms < cluster_size:
            errs.append("epi_stages, group_m >= 1 and num_sms >= cluster size")
        if self.split_k not in (1, 2, 4):
            errs.append("split_k must be 1, 2 or 4")
        elif self.split_k > 1 and not (
            self.swap_ab and self.cluster_m == self.cluster_n == 1
        ):
            errs.append("split_k > 1 needs swap_ab and no multicast cluster")
        if self.promote < 0:
            errs.append("promote must be >= 0")
        elif self.promote and (self.tile_m // self.consumer_wgs) * self.tile_n // 128 > 96:
            errs.append("promote > 0 needs two accumulators: at most 96 fp32 registers each "
                        "(tile_m // consumer_wgs * tile_n <= 12288)")
        if self.overlap_promotion and not (
            self.overlap_promotion >= 2 and self.promote == 1
            and (self.tile_m // self.consumer_wgs) * self.tile_n // 128 <= 64
        ):
            errs.append("overlap_promotion (a group of >= 2 k-tiles) needs promote == 1 and three "
                        "accumulators of at most 64 fp32 registers (tile_m // consumer_wgs * tile_n <= 8192)")
        if self.stages is not None and self.stages < 2:
            errs.append("stages must be >= 2")
        if errs:
            raise ValueError(f"invalid Sm90Config {self}: " + "; ".join(errs))

    def resolved(self) -> "Sm90Config":
        """This config with ``stages`` filled in (and checked against the SMEM budget)."""
        return resolve_stages(self, "stages", max_stages(self))


def _stage_bytes(cfg: Sm90Config) -> int:
    return (cfg.tile_m + cfg.tile_n) * cfg.tile_k  # 1 byte per e4m3 element


def _epilogue_bytes(cfg: Sm90Config) -> int:
    return 0 if cfg.swap_ab else cfg.epi_stages * cfg.tile_m * cfg.epi_n * 2  # bf16 staging


def _reduce_bytes(cfg: Sm90Config) -> int:
    # One fp32 slot per split-K partial that is not the leader's own, in the leader CTA
    # (every CTA allocates the same layout: distributed SMEM addresses are the local ones).
    return (cfg.split_k - 1) * cfg.tile_m * cfg.tile_n * 4


def max_stages(config: Sm90Config) -> int:
    """Deepest A/B ring that fits the SMEM budget (232448 B per CTA on H100, minus the epilogue
    staging and 1 KB for barriers): 4 at 128x256x128, 8 at 128x128x128."""
    free = SMEM_CAPACITY - SMEM_RESERVED - _epilogue_bytes(config) - _reduce_bytes(config)
    return free // _stage_bytes(config)


def smem_bytes(config: Sm90Config) -> int:
    """SMEM one CTA uses for ``config`` (ring + epilogue staging + reserved barrier space)."""
    cfg = config.resolved()
    return cfg.stages * _stage_bytes(cfg) + _epilogue_bytes(cfg) + _reduce_bytes(cfg) + SMEM_RESERVED


#: Shipped configs: (name, config). `default_config` picks among them; tests compile each.
FAST_LARGE = Sm90Config(tile_m=128, tile_n=256, tile_k=128, consumer_wgs=2, cluster_m=2, promote=0)
# 128x128 tiles, each promotion overlapped with the next k-tile's WGMMAs (groups of 4 k-tiles),
# the whole tile staged for its TMA stores (4 buffers: still 6 stages). Interleaved on the lent
# H100 (bench/results/sm90_sweep_2026-11-23.txt, fifth session): 4096^3 119.5 -> 112.2 us.
LARGE = Sm90Config(tile_m=128, tile_n=128, tile_k=128, consumer_wgs=2, cluster_m=2, promote=1,
                   overlap_promotion=4, epi_stages=4)
# 64x192 per consumer warpgroup: two 96-register accumulators (promotion) still fit, no third
# for overlapping, and each WGMMA reads 85 instead of 96 bytes of SMEM per cycle of MMA work.
# Whole-tile epilogue staging (6 buffers) at the cost of a stage (5 -> 4): 8192^3 924.8 ->
# 898.7 us, 16384x8192x8192 1813.7 -> 1762.3 us.
LARGE_WIDE = dataclasses.replace(LARGE, tile_n=192, overlap_promotion=0, epi_stages=6)
#: How much faster the 192-wide tiles compute the same output, their coarser waves aside
#: (time ~ waves x tile width / gain): 1.06-1.09 on the lent H100, measured interleaved with
#: the 128x128 tiles (fifth session: 8192^3 898.7 vs 964.8 us, 21 vs 32 waves;
#: 16384x8192x8192 1762.3 vs 1912.9 us; 4096^3, where the wide tiles leave the last of 6
#: waves two-thirds empty, 117.8 vs 112.2 us).
WIDE_TILE_GAIN = 1.08
MEDIUM = Sm90Config(tile_m=128, tile_n=128, tile_k=128, consumer_wgs=2, promote=1)


def _small_m_config(m: int, split_k: int = 1) -> Sm90Config:
    # N side 64 rows per tile (N=8192 -> 128 CTAs streaming Bt), M side rounded up to the
    # WGMMA N granularity, 256-deep k-tiles (two 128-byte TMA boxes per row and stage), the
    # deepest ring that fits, programmatic dependent launch. Measured on the lent H100 with
    # a clean L2 (bench/results/sm90_sweep_2026-11-23.txt): up to M = 64 these read Bt
    # faster than torch.sum reads the same bytes (M = 128: 2-6% slower); 256-deep k-tiles are
    # 3-14% faster than 128-deep ones.
    tile_n = 16 if m <= 16 else (32 if m <= 32 else (64 if m <= 64 else 128))
    return Sm90Config(tile_m=64, tile_n=tile_n, tile_k=256, consumer_wgs=1, swap_ab=True, split_k=split_k,
                      pdl=True)


def _small_m_block_config(m: int, n: int, cluster_n: int = 1) -> Sm90Config:
    """Block scales at M <= 128: not swap-AB. Swapped, every thread would need a scale of A
    per MMA column (tile_n / 4 loads and multiplies per k-tile; 2.0-2.6x the rowwise time
    on the lent H200), unswapped it needs its 2 rows' and one block value. The M side is
    one or two 64-row consumer warpgroups; N is cut into narrow tiles (16..128 columns)
    so that the grid fills the SMs: estimated time = rounds of the persistent grid x the
    bytes a tile's k-tile reads (tile_n rows of B + the M side's rows of A)."""
    rows = 64 if m <= 64 else 128

    def cost(tile_n):
        tiles = -(-m // rows) * -(-n // tile_n)
        return -(-tiles // H100_SMS) * (tile_n + rows)

    tile_n = min((128, 64, 32, 16), key=cost)
    return Sm90Config(tile_m=rows, tile_n=tile_n, tile_k=128, consumer_wgs=rows // 64, cluster_n=cluster_n,
                      epi_n=min(tile_n, 32), epi_stages=max(1, tile_n // 32) if tile_n >= 32 else 1, pdl=True)


def shipped_configs() -> dict[str, Sm90Config]:
    """Every config `default_config` can return, by name (what the tests compile)."""
    return {
        "fast_large": FAST_LARGE,
        "large": LARGE,
        "large_wide": LARGE_WIDE,
        "medium": MEDIUM,
        **{f"small_m{m}": _small_m_config(m) for m in (16, 32, 64, 128)},
        "small_m16_split_k2": _small_m_config(16, split_k=2),
    }


_TORCH_NAMES = {"float8_e4m3fn": "e4m3", "float8_e5m2": "e5m2", "bfloat16": "bf16", "float16": "fp16"}
#: What the compiled kernel implements (the rest goes to torch._scaled_mm; `kernel_supports`).
IMPLEMENTED = {"scales": SCALE_RECIPES, "a_dtype": tuple(OPERAND_DTYPES), "b_dtype": tuple(OPERAND_DTYPES),
               "out_dtype": tuple(OUT_DTYPES)}


def dtype_name(dtype) -> str | None:
    """The config's name of a torch dtype ('e4m3', 'e5m2', 'bf16', 'fp16'), or None."""
    return _TORCH_NAMES.get(str(dtype).removeprefix("torch."))


def kernel_supports(a_dtype, b_dtype, out_dtype, scales: str) -> bool:
    """Whether this kernel computes a problem of these torch dtypes and scale recipe
    ('tensorwise', 'rowwise' or a name in `SCALE_RECIPES`); otherwise torch._scaled_mm does."""
    scales = "rowwise" if scales == "tensorwise" else scales
    wanted = {"scales": scales, "a_dtype": dtype_name(a_dtype), "b_dtype": dtype_name(b_dtype),
              "out_dtype": dtype_name(out_dtype)}
    return all(value in IMPLEMENTED[field] for field, value in wanted.items())


def default_config(m: int, n: int, k: int, *, fast_accum: bool = False, scales: str = "rowwise",
                   a_dtype="e4m3", b_dtype="e4m3", out_dtype="bf16") -> Sm90Config:
    """The config for an M x N x K problem (a small table, measured on the lent H100):
    M <= 128 -> swap-AB with the M side rounded up to 16/32/64/128, and for M <= 16 split-K
    over a 2-CTA cluster while the N tiles fill at most half the SMs (N <= 4224) and K has
    four k-tiles or more; otherwise 128x128x128 tiles, with a 2x1 cluster (B multicast) once
    there is a wave of tiles, or 128x192x128 where its waves come out shorter. ``fast_accum``
    (torch._scaled_mm's use_fast_accum=True) allows the 128x256x128 fast-accumulation tile.
    Block scales (``scales`` not 'rowwise') promote every 128 of K, so they take 128-deep
    k-tiles and tiles no wider than one 128-column scale block. Dtypes are torch dtypes or
    the config's names."""
    types = {"scales": "rowwise" if scales == "tensorwise" else scales,
             "a_dtype": dtype_name(a_dtype) or a_dtype, "b_dtype": dtype_name(b_dtype) or b_dtype,
             "out_dtype": dtype_name(out_dtype) or out_dtype}
    blockwise = types["scales"] != "rowwise"
    if blockwise and m <= 128:
        cfg = _small_m_block_config(m, n)
    elif m <= 128:
        tile_k = 128 if blockwise else 256
        # Split-K was measured for the 16-wide tile only (1x4096x4096: 12.4 -> 11.9 us).
        few_tiles = -(-n // 64) * 2 <= H100_SMS
        split_k = 2 if m <= 16 and few_tiles and k >= 4 * tile_k else 1
        cfg = dataclasses.replace(_small_m_config(m, split_k), tile_k=tile_k)
    elif fast_accum and not blockwise and -(-m // 128) * -(-n // 256) >= H100_SMS:
        cfg = FAST_LARGE
    elif -(-m // 128) * -(-n // 128) < H100_SMS:
        cfg = MEDIUM
    elif blockwise:
        cfg = LARGE
    else:
        # The wider tile does more per cycle but comes in fewer, coarser waves: pick the smaller
        # estimated time, waves x tile width (/ its measured gain).
        wide = _waves(LARGE_WIDE, m, n) * LARGE_WIDE.tile_n / WIDE_TILE_GAIN
        cfg = LARGE_WIDE if wide < _waves(LARGE, m, n) * LARGE.tile_n else LARGE
    return dataclasses.replace(cfg, **types).resolved()


def _waves(cfg: Sm90Config, m: int, n: int) -> int:
    """Rounds of the persistent grid over the cluster tiles of an M x N output."""
    clusters = -(-m // (cfg.tile_m * cfg.cluster_m)) * -(-n // (cfg.tile_n * cfg.cluster_n))
    per_round = cfg.num_sms // (cfg.cluster_m * cfg.cluster_n)
    return -(-clusters // per_round)


# ---------------------------------------------------------------------------------------
# The kernel
# ---------------------------------------------------------------------------------------

Float32, Int32 = cutlass.Float32, cutlass.Int32
# Cluster-scope arrivals: the DSMEM hand-off of partial sums needs cross-CTA ordering. (The
# enum has no public alias in 4.8.1; cute.arch's own wrappers import it from here too.)
_CLUSTER_SCOPE = MemScopeKind.CLUSTER


def _ring_state(stages: int, pos):
    """The consumer's pipeline state at ring position `pos` (slot pos % stages; the consumer's
    phase bit starts at 0 and flips every pass over the ring)."""
    return pipeline.PipelineState(stages, pos, pos % stages, pos // stages % 2)


class ScaledMmSm90(TorchLayoutEntries):
    """One compiled variant: a resolved `Sm90Config` plus has_bias. Entry points `run` /
    `run_bias` (from `TorchLayoutEntries`, traced by cute.compile), device code in
    `kernel` and the epilogues."""

    def __init__(self, cfg: Sm90Config, has_bias: bool):
        self.cfg = cfg
        self.has_bias = has_bias
        # The MMA's first operand is A, or Bt with swap_ab (out^T = Bt @ A^T): its element
        # type names the WGMMA kind (e5m2 x e4m3 is not e4m3 x e5m2).
        a_type = getattr(cutlass, OPERAND_DTYPES[cfg.a_dtype])
        b_type = getattr(cutlass, OPERAND_DTYPES[cfg.b_dtype])
        self.a_dtype, self.b_dtype = (b_type, a_type) if cfg.swap_ab else (a_type, b_type)
        self.acc_dtype = Float32
        self.c_dtype = getattr(cutlass, OUT_DTYPES[cfg.out_dtype])
        # Block scales are applied per k-tile in the K loop; the epilogue then adds only the bias.
        self.blockwise = cfg.scales != "rowwise"
        self.tiler = (cfg.tile_m, cfg.tile_n, cfg.tile_k)
        self.epi_tile = (cfg.tile_m, cfg.epi_n)
        self.cluster_mn = (cfg.cluster_m, cfg.cluster_n)
        # The launch cluster: the multicast cluster, or split_k CTAs along K (never both).
        self.launch_cluster = (cfg.cluster_m * cfg.split_k, cfg.cluster_n)
        self.max_clusters = cfg.num_sms // (self.launch_cluster[0] * self.launch_cluster[1])
        self.consumer_threads = 128 * cfg.consumer_wgs
        self.threads = 128 + self.consumer_threads
        # setmaxnreg budgets (65536 registers per SM): the producer warpgroup keeps 40, the
        # consumers take the rest (232 with two consumer warpgroups: 40*128 + 232*256 <= 64K).
        self.producer_regs = 40
        self.consumer_regs = 232 if cfg.consumer_wgs == 2 else 240
        self.epi_bar_id = 1
        # Swap-AB tiles with one consumer warpgroup hold few scales per thread (240 registers
        # to spare): their loads are issued before the K loop, so the HBM latency hides under
        # it instead of following it. With two warpgroups (168 registers per thread until
        # setmaxnreg) they would spill: loaded after the K loop, as for the large tiles.
        self.early_scales = cfg.swap_ab and cfg.consumer_wgs == 1

    def __repr__(self):
        # Goes into the kernel's symbol name (profiles, PTX): stable and descriptive.
        c = self.cfg
        return (
            f"scaled_mm_sm90_{c.tile_m}x{c.tile_n}x{c.tile_k}_w{c.consumer_wgs}_c{c.cluster_m}x{c.cluster_n}"
            f"_s{c.stages}p{c.promote}{'_swap' if c.swap_ab else ''}{'_pdl' if c.pdl else ''}{f'_ovl{c.overlap_promotion}' if c.overlap_promotion else ''}"
            f"{f'_splitk{c.split_k}' if c.split_k > 1 else ''}{'_bias' if self.has_bias else ''}"
            f"{'' if c.scales == 'rowwise' else '_' + c.scales}"
            f"{'' if (c.a_dtype, c.b_dtype, c.out_dtype) == ('e4m3', 'e4m3', 'bf16') else f'_{c.a_dtype}x{c.b_dtype}_{c.out_dtype}'}"
        )

    # -- host side (traced once per compile) ------------------------------------------

    def _tiled_mma(self):
        cfg = self.cfg
        op = warpgroup.MmaF8Op(
            self.a_dtype,
            self.b_dtype,
            self.acc_dtype,
            (64, cfg.tile_n, 32),
            warpgroup.OperandSource.SMEM,
            warpgroup.OperandMajorMode.K,
            warpgroup.OperandMajorMode.K,
        )
        # Consumer warpgroups stacked along M; a warpgroup with 128 rows runs 2 m64 atoms.
        return cute.make_tiled_mma(cute.make_mma_atom(op), (cfg.consumer_wgs, 1, 1))

    def _ab_smem_layout(self, rows: int):
        # 128-byte swizzle atoms (64-byte at tile_k=64), repeated along K for tile_k=256.
        kind = (
            warpgroup.SmemLayoutAtomKind.K_SW128 if self.cfg.tile_k >= 128 else warpgroup.SmemLayoutAtomKind.K_SW64
        )
        atom = warpgroup.make_smem_layout_atom(kind, self.a_dtype)  # both operands: 1 byte
        return cute.tile_to_shape(atom, (rows, self.cfg.tile_k, self.cfg.stages), order=(0, 1, 2))

    def _c_smem_layout(self):
        # bf16 row-major subtile: epi_n * 2 bytes per row picks the swizzle (64 -> 128 B).
        kind = {
            16: warpgroup.SmemLayoutAtomKind.K_SW32,
            32: warpgroup.SmemLayoutAtomKind.K_SW64,
            64: warpgroup.SmemLayoutAtomKind.K_SW128,
        }[self.cfg.epi_n]
        atom = warpgroup.make_smem_layout_atom(kind, self.c_dtype)
        return cute.tile_to_shape(atom, (*self.epi_tile, self.cfg.epi_stages), order=(0, 1, 2))

    @cute.jit
    def _launch(self, a, bt, scale_a, scale_b, out, bias, stream):
        cfg = self.cfg
        m, n = out.shape
        if cutlass.const_expr(cfg.swap_ab):
            # out^T = Bt @ A^T: the MMA's rows are out's columns. The transposed view of out
            # is written with plain stores; scale_b scales its rows, scale_a its columns.
            mP, mQ, row_scale, col_scale = bt, a, scale_b, scale_a
            mC = cute.make_tensor(out.iterator, cute.make_layout((n, m), stride=(1, n)))
        else:
            mP, mQ, row_scale, col_scale = a, bt, scale_a, scale_b
            mC = out
        tiled_mma = self._tiled_mma()
        cta_layout_mnk = cute.make_layout((*self.cluster_mn, 1))
        a_smem = self._ab_smem_layout(cfg.tile_m)
        b_smem = self._ab_smem_layout(cfg.tile_n)
        a_smem_one = cute.slice_(a_smem, (None, None, 0))
        b_smem_one = cute.slice_(b_smem, (None, None, 0))
        tx_bytes = cute.size_in_bytes(self.a_dtype, a_smem_one) + cute.size_in_bytes(self.b_dtype, b_smem_one)
        # max_stages() sized the ring in plain Python; hold it to the real layouts.
        assert tx_bytes == _stage_bytes(cfg), tx_bytes

        # A tiles are shared by the cluster's CTAs along N, B tiles by those along M: each CTA
        # loads its 1/cluster slice and multicasts it.
        def g2s(mcast):
            return cpasync.CopyBulkTensorTileG2SMulticastOp() if mcast > 1 else cpasync.CopyBulkTensorTileG2SOp()

        tma_atom_a, tma_a = cpasync.make_tiled_tma_atom(
            g2s(cfg.cluster_n), mP, a_smem_one, (cfg.tile_m, cfg.tile_k), num_multicast=cfg.cluster_n
        )
        tma_atom_b, tma_b = cpasync.make_tiled_tma_atom(
            g2s(cfg.cluster_m), mQ, b_smem_one, (cfg.tile_n, cfg.tile_k), num_multicast=cfg.cluster_m
        )
        tma_atom_c, tma_c, c_smem = None, mC, None
        if cutlass.const_expr(not cfg.swap_ab):
            c_smem = self._c_smem_layout()
            assert cute.size_in_bytes(self.c_dtype, c_smem) == _epilogue_bytes(cfg)
            tma_atom_c, tma_c = cpasync.make_tiled_tma_atom(
                cpasync.CopyBulkTensorTileS2GOp(), mC, cute.slice_(c_smem, (None, None, 0)), self.epi_tile
            )

        rows, cols = mC.shape
        tiles_m = (rows + cfg.tile_m * cfg.cluster_m - 1) // (cfg.tile_m * cfg.cluster_m)
        tiles_n = (cols + cfg.tile_n * cfg.cluster_n - 1) // (cfg.tile_n * cfg.cluster_n)
        num_clusters = cutlass.min(tiles_m * tiles_n, self.max_clusters)

        self.kernel(
            tiled_mma, tma_atom_a, tma_a, tma_atom_b, tma_b, tma_atom_c, tma_c,
            row_scale, col_scale, bias, cta_layout_mnk, a_smem, b_smem, c_smem,
            tiles_m, tiles_n, tx_bytes,
        ).launch(
            grid=(*self.launch_cluster, num_clusters),
            block=[self.threads, 1, 1],
            cluster=(*self.launch_cluster, 1),
            min_blocks_per_mp=1,
            stream=stream,
            use_pdl=cfg.pdl,
        )

    # -- device side ------------------------------------------------------------------

    @cute.jit
    def _tile_coords(self, tile, tiles_m, tiles_n, cluster_coord):
        """Linear cluster-tile index -> this CTA's tile (m, n): L2 groups of `group_m` cluster
        rows, walked column by column inside a group (every role computes the same)."""
        cm, cn = grouped_cluster_tile(tile, tiles_m, tiles_n, self.cfg.group_m)
        return cm * self.cfg.cluster_m + cluster_coord[0], cn * self.cfg.cluster_n + cluster_coord[1]

    @cute.kernel
    def kernel(
        self,
        tiled_mma: cute.TiledMma,
        tma_atom_a: cute.CopyAtom,
        mA: cute.Tensor,
        tma_atom_b: cute.CopyAtom,
        mB: cute.Tensor,
        tma_atom_c: Optional[cute.CopyAtom],
        mC: cute.Tensor,
        mRowScale: cute.Tensor,
        mColScale: cute.Tensor,
        mBias: Optional[cute.Tensor],
        cta_layout_mnk: cute.Layout,
        a_smem: cute.ComposedLayout,
        b_smem: cute.ComposedLayout,
        c_smem: Optional[cute.ComposedLayout],
        tiles_m: Int32,
        tiles_n: Int32,
        tx_bytes: cutlass.Constexpr,
    ):
        cfg = self.cfg
        tidx, _, _ = cute.arch.thread_idx()
        warp_idx = cute.arch.make_warp_uniform(cute.arch.warp_idx())
        wg_idx = cute.arch.make_warp_uniform(tidx // 128)
        # Hoisted once: this CTA's place in its cluster and the persistent walk. A split_k
        # cluster's CTAs all work on the same tile: their rank is their part of K.
        cta_rank = cute.arch.make_warp_uniform(cute.arch.block_idx_in_cluster())
        k_rank = Int32(0)
        if cutlass.const_expr(cfg.split_k > 1):
            k_rank = cta_rank
            cluster_coord = cta_layout_mnk.get_flat_coord(0)
        else:
            cluster_coord = cta_layout_mnk.get_flat_coord(cta_rank)
        _, _, cluster_id = cute.arch.block_idx()
        _, _, num_clusters = cute.arch.grid_dim()
        num_tiles = tiles_m * tiles_n

        if warp_idx == 0:
            cpasync.prefetch_descriptor(tma_atom_a)
            cpasync.prefetch_descriptor(tma_atom_b)
            if cutlass.const_expr(not cfg.swap_ab):
                cpasync.prefetch_descriptor(tma_atom_c)

        @cute.struct
        class SharedStorage:
            ab_mbar: cute.struct.MemRange[cutlass.Int64, cfg.stages * 2]
            red_mbar: cute.struct.MemRange[cutlass.Int64, 2]  # partials full / slots empty

        smem = SmemAllocator()
        storage = smem.allocate(SharedStorage)
        # A stage is free once every consumer warp of every CTA that reads it (this CTA and
        # the multicast peers that received the same tiles) has arrived on its empty barrier.
        ab_pipe = pipeline.PipelineTmaAsync.create(
            barrier_storage=storage.ab_mbar.data_ptr(),
            num_stages=cfg.stages,
            producer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread),
            consumer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, self.consumer_threads),
            tx_count=tx_bytes,
            cta_layout_vmnk=cute.make_layout((1, *cta_layout_mnk.shape)),
            enable_multicast_signaling=True,
            defer_sync=True,
        )
        if cutlass.const_expr(cfg.split_k > 1):
            # No multicast: lane 0 of each consumer warp frees the stage in its own CTA (the
            # helper would derive the signalling lanes from the launch cluster's rank).
            ab_pipe = dataclasses.replace(ab_pipe, is_signaling_thread=tidx % 32 == 0)
        red_full = storage.red_mbar.data_ptr()
        red_empty = red_full + 1
        if cutlass.const_expr(cfg.split_k > 1):
            if tidx == 0:
                # full (used in rank 0): rank 0's expect-tx arrival, then the partials' bytes
                # (st.async); empty (in the other ranks): each rank-0 consumer thread arrives
                # once it has read them.
                cute.arch.mbarrier_init(red_full, 1)
                cute.arch.mbarrier_init(red_empty, self.consumer_threads)
        pipeline_init_arrive(cluster_shape_mn=self.launch_cluster, is_relaxed=True)

        sA = smem.allocate_tensor(self.a_dtype, a_smem.outer, byte_alignment=1024, swizzle=a_smem.inner)
        sB = smem.allocate_tensor(self.b_dtype, b_smem.outer, byte_alignment=1024, swizzle=b_smem.inner)
        sRed = None
        if cutlass.const_expr(cfg.split_k > 1):
            # Partial slots, fp32 in accumulator-fragment order: (4 values, thread, vector,
            # slot), so each thread moves 16 B at a time and a warp 512 contiguous bytes.
            threads = self.consumer_threads
            vecs = cfg.tile_m * cfg.tile_n // threads // 4
            red_layout = cute.make_layout((4, threads, vecs, cfg.split_k - 1),
                                          stride=(1, 4, 4 * threads, 4 * threads * vecs))
            sRed = smem.allocate_tensor(Float32, red_layout, byte_alignment=16)

        gA = cute.local_tile(mA, (cfg.tile_m, cfg.tile_k), (None, None))  # (TM, TK, RestM, RestK)
        gB = cute.local_tile(mB, (cfg.tile_n, cfg.tile_k), (None, None))
        k_tiles = cute.size(gA, mode=[3])
        # This CTA's contiguous part of every tile's K loop.
        k_begin = Int32(0)
        k_count = k_tiles
        if cutlass.const_expr(cfg.split_k > 1):
            per_cta = (k_tiles + cfg.split_k - 1) // cfg.split_k
            k_begin = k_rank * per_cta
            k_count = cutlass.max(cutlass.min(per_cta, k_tiles - k_begin), 0)
        tAsA, tAgA = cpasync.tma_partition(
            tma_atom_a,
            cluster_coord[1],
            cute.make_layout(cute.slice_(cta_layout_mnk, (0, None, 0)).shape),
            cute.group_modes(sA, 0, 2),
            cute.group_modes(gA, 0, 2),
        )
        tBsB, tBgB = cpasync.tma_partition(
            tma_atom_b,
            cluster_coord[0],
            cute.make_layout(cute.slice_(cta_layout_mnk, (None, 0, 0)).shape),
            cute.group_modes(sB, 0, 2),
            cute.group_modes(gB, 0, 2),
        )

        pipeline_init_wait(cluster_shape_mn=self.launch_cluster)
        if cutlass.const_expr(cfg.pdl):
            # Everything above touched only SMEM and the kernel parameters; from here on the
            # previous kernel's results must be visible.
            cute.arch.griddepcontrol_wait()
            cute.arch.griddepcontrol_launch_dependents()

        # ---------------- producer warpgroup: warp 0 issues every TMA load ----------------
        if wg_idx == 0:
            cute.arch.setmaxregister_decrease(self.producer_regs)
            if warp_idx == 0:
                a_mcast = Int32(0)
                b_mcast = Int32(0)
                if cutlass.const_expr(cfg.cluster_n > 1):
                    a_mcast = cute.make_layout_image_mask(cta_layout_mnk, cluster_coord, mode=1)
                if cutlass.const_expr(cfg.cluster_m > 1):
                    b_mcast = cute.make_layout_image_mask(cta_layout_mnk, cluster_coord, mode=0)
                state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, cfg.stages)
                tile = cluster_id
                while tile < num_tiles:
                    tm, tn = self._tile_coords(tile, tiles_m, tiles_n, cluster_coord)
                    tAgA_t = tAgA[(None, tm, None)]
                    tBgB_t = tBgB[(None, tn, None)]
                    state = load_k_tiles(ab_pipe, state, k_begin, k_count, tma_atom_a, tAgA_t, tAsA, a_mcast,
                                         tma_atom_b, tBgB_t, tBsB, b_mcast)
                    tile += num_clusters
                ab_pipe.producer_tail(state)

        # ---------------- consumer warpgroups: WGMMA + epilogue --------------------------
        if wg_idx > 0:
            cute.arch.setmaxregister_increase(self.consumer_regs)
            ctidx = tidx - 128
            # A/B descriptors are per warpgroup (slice at its first thread); the accumulator
            # coordinates are per thread (slice at this thread).
            thr_mma = tiled_mma.get_slice((wg_idx - 1) * 128)
            tCrA = tiled_mma.make_fragment_A(thr_mma.partition_A(sA))
            tCrB = tiled_mma.make_fragment_B(thr_mma.partition_B(sB))
            tCcC = tiled_mma.get_slice(ctidx).partition_C(cute.make_identity_tensor((cfg.tile_m, cfg.tile_n)))
            acc = cute.make_rmem_tensor(tCcC.shape, self.acc_dtype)
            # Block scales: the scale values of the next `lookahead` k-tiles, one register
            # tensor per k-tile in flight (k-tile t's in rings[t % lookahead]).
            rings = None
            if cutlass.const_expr(self.blockwise):
                rings = tuple(cute.make_rmem_tensor((block_scales.raw_count(cfg),), Float32)
                              for _ in range(block_scales.lookahead(cfg)))
            acc_tmp = None
            acc_tmp2 = None
            if cutlass.const_expr(cfg.promote > 0):
                acc_tmp = cute.make_rmem_tensor(tCcC.shape, self.acc_dtype)
            if cutlass.const_expr(cfg.overlap_promotion):
                acc_tmp2 = cute.make_rmem_tensor(tCcC.shape, self.acc_dtype)

            epi = None
            if cutlass.const_expr(not cfg.swap_ab):
                epi = self._tma_epilogue_setup(ctidx, tiled_mma, acc, tma_atom_c, mC, c_smem, smem)

            consumed = Int32(0)  # ring position of this CTA's next tile
            n_done = Int32(0)
            tile = cluster_id
            while tile < num_tiles:
                tm, tn = self._tile_coords(tile, tiles_m, tiles_n, cluster_coord)
                early = None
                if cutlass.const_expr(self.early_scales):
                    early = self._load_scales(tCcC, tm, tn, mRowScale, mColScale, mBias)
                # (The MMA's accumulate flag is state: rebinding carries it through the loop.)
                # Block scales: what the K loop needs to load each k-tile's factors.
                blocks = None
                if cutlass.const_expr(self.blockwise):
                    ctx = block_scales.tile_context(cfg, tCcC, tm, tn, k_begin, mRowScale, mColScale)
                    for d in cutlass.range_constexpr(len(rings)):   # the first k-tiles'; the loops load ahead
                        block_scales.load_raw(cfg, ctx, d, rings[d])
                    blocks = (ctx, rings)
                if cutlass.const_expr(cfg.overlap_promotion):
                    self._mainloop_overlapped(ab_pipe, acc, acc_tmp, acc_tmp2, tCrA, tCrB, consumed, k_count,
                                              blocks)
                elif cutlass.const_expr(self.blockwise):
                    self._mainloop_blocks(ab_pipe, acc, acc_tmp, tCrA, tCrB, consumed, k_count, blocks)
                else:
                    tiled_mma = self._mainloop(ab_pipe, tiled_mma, acc, acc_tmp, tCrA, tCrB, consumed, k_count)
                consumed += k_count
                if cutlass.const_expr(cfg.split_k > 1):
                    self._reduce_partials(acc, sRed, red_full, red_empty, k_rank, ctidx, n_done)
                # The CTA of rank 0 holds the sum (split_k) and stores it.
                if k_rank == 0:
                    if cutlass.const_expr(self.early_scales):
                        self._scale(acc, early)
                    else:
                        self._scale(acc, self._load_scales(tCcC, tm, tn, mRowScale, mColScale, mBias))
                    if cutlass.const_expr(cfg.swap_ab):
                        self._store_epilogue(acc, tCcC, tm, tn, mC)
                    else:
                        self._tma_epilogue(epi, acc, tm, tn, n_done, warp_idx)
                n_done += 1
                tile += num_clusters
            if cutlass.const_expr(not cfg.swap_ab):
                epi[-1].producer_tail()
            if cutlass.const_expr(cfg.split_k > 1):
                if k_rank != 0:
                    # The leader's last arrival on this CTA's barrier must land before exit.
                    cute.arch.mbarrier_wait(red_empty, (n_done + 1) % 2)

    @cute.jit
    def _mainloop(self, ab_pipe, tiled_mma, acc, acc_tmp, tCrA, tCrB, consumed, k_count):
        """One tile's K loop: the CTA's `k_count` k-tiles, at ring positions ``consumed``
        onwards (the producer loads them in that order). Leaves the (partial, with split_k)
        sum in `acc`; returns `tiled_mma` (its accumulate flag is traced state)."""
        cfg = self.cfg
        num_kblocks = cute.size(tCrA, mode=[2])
        # Advanced per k-tile, not recomputed from the position: a div/mod by `stages` per
        # k-tile would sit on the loop's critical path.
        read = _ring_state(cfg.stages, consumed)
        release = _ring_state(cfg.stages, consumed)

        acc.fill(0.0)
        if cutlass.const_expr(cfg.promote == 0):
            # Fast accumulation: WGMMA accumulates all of K itself (its fp8 accumulation
            # keeps fewer bits than fp32: rel. error 2.6e-3 at K=8192, measured, against
            # 1.7e-3 from the bf16 rounding alone).
            tiled_mma.set(warpgroup.Field.ACCUMULATE, True)
            warpgroup.fence()
            for j in cutlass.range(k_count, unroll=1):
                ab_pipe.consumer_wait(read)
                for kb in cutlass.range_constexpr(num_kblocks):
                    crd = (None, None, kb, read.index)
                    cute.gemm(tiled_mma, acc, tCrA[crd], tCrB[crd], acc)
                warpgroup.commit_group()
                # One k-tile of WGMMAs stays in flight; the one before it has retired,
                # so its stage can go back to the producer.
                warpgroup.wait_group(1)
                if j > 0:
                    ab_pipe.consumer_release(release)
                    release.advance()
                read.advance()
            warpgroup.wait_group(0)
        else:
            # Two-level accumulation (torch._scaled_mm's default, use_fast_accum=False):
            # WGMMA accumulates `promote` k-tiles into acc_tmp, then acc += acc_tmp in
            # fp32. The add needs the k-tile's WGMMAs retired: another consumer warpgroup
            # keeps the tensor cores busy meanwhile.
            for j in cutlass.range(k_count, unroll=1):
                ab_pipe.consumer_wait(read)
                # The first k-block of a promotion period overwrites acc_tmp.
                tiled_mma.set(warpgroup.Field.ACCUMULATE, j % cfg.promote != 0)
                warpgroup.fence()
                for kb in cutlass.range_constexpr(num_kblocks):
                    crd = (None, None, kb, read.index)
                    cute.gemm(tiled_mma, acc_tmp, tCrA[crd], tCrB[crd], acc_tmp)
                    tiled_mma.set(warpgroup.Field.ACCUMULATE, True)
                warpgroup.commit_group()
                if cutlass.const_expr(cfg.promote == 1):
                    # Every k-tile is promoted, so its WGMMAs have all retired here: its
                    # stage goes back to the producer at once, not one k-tile later as
                    # below. One more stage of loads in flight: 8192^3 (128x192 tiles, 5
                    # stages) 988 -> 909 us on the lent H100; small M unchanged.
                    warpgroup.wait_group(0)
                    ab_pipe.consumer_release(read)
                    block_scales.promote(acc, acc_tmp, None)
                else:
                    if j % cfg.promote == cfg.promote - 1 or j == k_count - 1:
                        warpgroup.wait_group(0)
                        for i in cutlass.range_constexpr(cute.size(acc)):
                            acc[i] = acc[i] + acc_tmp[i]
                    else:
                        warpgroup.wait_group(1)
                    if j > 0:
                        ab_pipe.consumer_release(release)
                        release.advance()
                read.advance()
        if cutlass.const_expr(cfg.promote != 1):
            if k_count > 0:
                ab_pipe.consumer_release(release)
        return tiled_mma

    @cute.jit
    def _issue_k_tile(self, ab_pipe, read, mma_first, mma_rest, tCrA, tCrB, tmp):
        """Wait for the k-tile at ``read`` and issue its WGMMAs into ``tmp`` as one commit
        group: ``mma_first`` (ACCUMULATE off: overwrites) for its first k-block, ``mma_rest``
        after (two fixed MMA objects: a field set inside a dynamic branch cannot leave it).
        Returns ``read`` advanced (callers assign it, so a dynamic branch carries it out)."""
        ab_pipe.consumer_wait(read)
        warpgroup.fence()
        for kb in cutlass.range_constexpr(cute.size(tCrA, mode=[2])):
            crd = (None, None, kb, read.index)
            cute.gemm(mma_first if kb == 0 else mma_rest, tmp, tCrA[crd], tCrB[crd], tmp)
        warpgroup.commit_group()
        read.advance()
        return read

    @cute.jit
    def _retire_k_tile(self, ab_pipe, release, acc, tmp, factors):
        """The k-tile in ``tmp`` has retired (the caller waited): free its stage, acc += tmp
        (times its block-scale ``factors``, if any). Returns ``release`` advanced."""
        ab_pipe.consumer_release(release)
        release.advance()
        block_scales.promote(acc, tmp, factors)
        return release

    @cute.jit
    def _take_values(self, blocks, t, g):
        """Block scales: the scale values of the CTA's k-tile ``t`` (loaded `lookahead`
        k-tiles ago, in registers ``g % lookahead``: ``g`` is t's place in an unrolled
        group, t's residue known at trace time), and start loading those of k-tile
        t + lookahead into the same registers. None for rowwise scales."""
        if cutlass.const_expr(blocks is None):
            return None
        ctx, rings = blocks
        ring = rings[g % len(rings)]
        values = block_scales.snapshot(ring)
        block_scales.load_raw(self.cfg, ctx, t + len(rings), ring)
        return values

    def _factors(self, values):
        """Per accumulator element its factor from `_take_values` (None: rowwise)."""
        if values is None:
            return None
        per_thread = self.cfg.tile_m // self.cfg.consumer_wgs * self.cfg.tile_n // 128
        return block_scales.factors(self.cfg, values, per_thread)

    @cute.jit
    def _mainloop_blocks(self, ab_pipe, acc, tmp, tCrA, tCrB, consumed, k_count, blocks):
        """`_mainloop` with block scales (promote=1): the K loop unrolled by the lookahead
        (the scale values' registers are indexed at trace time), each k-tile issued, waited
        for and promoted with its factors; the k_count % lookahead k-tiles left over run
        under a guard each."""
        cfg = self.cfg
        ahead = len(blocks[1])
        read = _ring_state(cfg.stages, consumed)
        release = _ring_state(cfg.stages, consumed)
        mma_first = self._tiled_mma()
        mma_first.set(warpgroup.Field.ACCUMULATE, False)
        mma_rest = self._tiled_mma()
        mma_rest.set(warpgroup.Field.ACCUMULATE, True)
        acc.fill(0.0)
        for it in cutlass.range(k_count // ahead, unroll=1):
            for g in cutlass.range_constexpr(ahead):
                values = self._take_values(blocks, it * ahead + g, g)
                read = self._issue_k_tile(ab_pipe, read, mma_first, mma_rest, tCrA, tCrB, tmp)
                warpgroup.wait_group(0)
                release = self._retire_k_tile(ab_pipe, release, acc, tmp, self._factors(values))
        base = k_count - k_count % ahead
        for g in cutlass.range_constexpr(ahead - 1):
            if g < k_count % ahead:
                values = self._take_values(blocks, base + g, g)
                read = self._issue_k_tile(ab_pipe, read, mma_first, mma_rest, tCrA, tCrB, tmp)
                warpgroup.wait_group(0)
                release = self._retire_k_tile(ab_pipe, release, acc, tmp, self._factors(values))

    @cute.jit
    def _mainloop_overlapped(self, ab_pipe, acc, tmp0, tmp1, tCrA, tCrB, consumed, k_count, blocks):
        """`_mainloop` with promote=1, the promotions overlapped with WGMMAs
        (``overlap_promotion`` = U): the K loop runs in groups of U k-tiles, alternating
        between two temporaries; after issuing k-tile j, ``wait_group(1)`` retires k-tile j-1,
        which is promoted while j runs. Only the group's last k-tile is waited for alone.
        Nothing is in flight across the loop's back edge: an accumulator register carried
        through a loop or branch merge while its WGMMAs run makes ptxas serialize every WGMMA
        (warnings C7514/C7517, measured in the SASS). The k_count % U k-tiles left over run
        as in `_mainloop`."""
        cfg = self.cfg
        group = cfg.overlap_promotion
        read = _ring_state(cfg.stages, consumed)
        release = _ring_state(cfg.stages, consumed)
        mma_first = self._tiled_mma()
        mma_first.set(warpgroup.Field.ACCUMULATE, False)
        mma_rest = self._tiled_mma()
        mma_rest.set(warpgroup.Field.ACCUMULATE, True)
        temps = (tmp0, tmp1)
        acc.fill(0.0)
        # Block scales: a k-tile's values are taken when it is issued (loaded `lookahead`
        # k-tiles earlier; the lookahead divides the group, so which registers is known at
        # trace time) and turned into factors when it retires.
        for it in cutlass.range(k_count // group, unroll=1):
            read = self._issue_k_tile(ab_pipe, read, mma_first, mma_rest, tCrA, tCrB, temps[0])
            pending = self._take_values(blocks, it * group, 0)
            for g in cutlass.range_constexpr(1, group):
                read = self._issue_k_tile(ab_pipe, read, mma_first, mma_rest, tCrA, tCrB, temps[g % 2])
                issued = self._take_values(blocks, it * group + g, g)
                warpgroup.wait_group(1)
                release = self._retire_k_tile(ab_pipe, release, acc, temps[(g - 1) % 2], self._factors(pending))
                pending = issued
            warpgroup.wait_group(0)
            release = self._retire_k_tile(ab_pipe, release, acc, temps[(group - 1) % 2], self._factors(pending))
        if cutlass.const_expr(blocks is None):
            for it in cutlass.range(k_count % group, unroll=1):
                read = self._issue_k_tile(ab_pipe, read, mma_first, mma_rest, tCrA, tCrB, tmp0)
                warpgroup.wait_group(0)
                release = self._retire_k_tile(ab_pipe, release, acc, tmp0, None)
        else:
            base = k_count - k_count % group
            for g in cutlass.range_constexpr(group - 1):
                if g < k_count % group:
                    values = self._take_values(blocks, base + g, g)
                    read = self._issue_k_tile(ab_pipe, read, mma_first, mma_rest, tCrA, tCrB, tmp0)
                    warpgroup.wait_group(0)
                    release = self._retire_k_tile(ab_pipe, release, acc, tmp0, self._factors(values))

    @cute.jit
    def _reduce_partials(self, acc, sRed, red_full, red_empty, k_rank, thread, n_done):
        """Sum the split-K parts of one tile into the `acc` of the cluster's CTA of rank 0, in
        rank order (so the result does not depend on timing). Every other CTA waits until
        its slot in rank 0's SMEM is free (rank 0 has read the previous tile's), then writes
        its accumulator there with ``st.async`` (distributed SMEM; the bytes complete rank 0's
        `red_full` barrier). All CTAs hold their fragments in the same order, so thread t's
        value i goes to (i % 4, t, i // 4) of the slot and rank 0's thread t reads it back."""
        cfg = self.cfg
        vecs = cute.size(acc) // 4
        if k_rank == 0:
            if thread == 0:
                cute.arch.mbarrier_arrive_and_expect_tx(red_full, _reduce_bytes(cfg))
            cute.arch.mbarrier_wait(red_full, n_done % 2)
            for s in cutlass.range_constexpr(cfg.split_k - 1):
                for i in cutlass.range_constexpr(cute.size(acc)):
                    acc[i] = acc[i] + sRed[(i % 4, thread, i // 4, s)]
            # Slots read: the other CTAs may write the next tile's partials.
            for r in cutlass.range_constexpr(1, cfg.split_k):
                cute.arch.mbarrier_arrive(red_empty, r, scope=_CLUSTER_SCOPE)
        else:
            cute.arch.mbarrier_wait(red_empty, (n_done + 1) % 2)
            bits = cute.recast_tensor(acc, Int32)
            for v in cutlass.range_constexpr(vecs):
                dst = sRed[(None, thread, v, k_rank - 1)].iterator
                value = (bits[4 * v], bits[4 * v + 1], bits[4 * v + 2], bits[4 * v + 3])
                cute.arch.store_async_dsmem(dst, value, red_full, 0)

    @cute.jit
    def _load_scales(self, tCcC, tm, tn, mRowScale, mColScale, mBias):
        """This thread's epilogue operands for tile (tm, tn): per accumulator element its row
        scale, column scale and (with bias) bias, as lists of registers. Coordinates past the
        problem are clamped (those values are never stored), so the loads need no predicates;
        repeated rows/columns are loaded once (CSE)."""
        cfg = self.cfg
        r0 = tm * cfg.tile_m
        c0 = tn * cfg.tile_n
        row_scale, col_scale, bias = [], [], []
        if cutlass.const_expr(self.blockwise):
            # The K loop applied the block scales: only the bias is left (N = its extent).
            if cutlass.const_expr(self.has_bias):
                n_last = mBias.shape[0] - 1
                for i in cutlass.range_constexpr(cute.size(tCcC)):
                    r, c = tCcC[i]
                    bias.append(Float32(mBias[cutlass.min((r0 + r) if cfg.swap_ab else (c0 + c), n_last)]))
            return row_scale, col_scale, bias
        rows = mRowScale.shape[0]
        cols = mColScale.shape[0]
        for i in cutlass.range_constexpr(cute.size(tCcC)):
            r, c = tCcC[i]
            r = cutlass.min(r0 + r, rows - 1)
            c = cutlass.min(c0 + c, cols - 1)
            row_scale.append(mRowScale[r])
            col_scale.append(mColScale[c])
            if cutlass.const_expr(self.has_bias):
                bias.append(Float32(mBias[r if cfg.swap_ab else c]))
        return row_scale, col_scale, bias

    @cute.jit
    def _scale(self, acc, scales):
        """acc *= row_scale * col_scale (+ bias), in fp32, over the whole fragment."""
        row_scale, col_scale, bias = scales
        for i in cutlass.range_constexpr(cute.size(acc)):
            v = acc[i]
            if cutlass.const_expr(not self.blockwise):
                v = v * row_scale[i] * col_scale[i]
            if cutlass.const_expr(self.has_bias):
                v = v + bias[i]
            acc[i] = v

    @cute.jit
    def _store_epilogue(self, acc, tCcC, tm, tn, mC):
        """Predicated bf16 stores straight from registers (swap-AB: out is tiny next to Bt)."""
        cfg = self.cfg
        rows, cols = mC.shape
        r0 = tm * cfg.tile_m
        c0 = tn * cfg.tile_n
        for i in cutlass.range_constexpr(cute.size(acc)):
            r, c = tCcC[i]
            if r0 + r < rows and c0 + c < cols:
                mC[(r0 + r, c0 + c)] = acc[i].to(self.c_dtype)

    @cute.jit
    def _tma_epilogue_setup(self, ctidx, tiled_mma, acc, tma_atom_c, mC, c_smem, smem):
        """Per-CTA epilogue state: the stmatrix copy, its views of SMEM and of the accumulator,
        the TMA-store partition of out and the store pipeline."""
        sC = smem.allocate_tensor(self.c_dtype, c_smem.outer, byte_alignment=1024, swizzle=c_smem.inner)
        stm = cute.make_copy_atom(cute.nvgpu.warp.StMatrix8x8x16bOp(False, 4), self.c_dtype)
        r2s = cute.make_tiled_copy_S(stm, cute.make_tiled_copy_C_atom(stm, tiled_mma))
        thr_r2s = r2s.get_slice(ctidx)
        tRS_sC = thr_r2s.partition_D(sC)  # (R2S, R2S_M, R2S_N, EPI_STAGE)
        tRS_rAcc = r2s.retile(acc)  # the accumulator in stmatrix order, subtile after subtile
        sub_shape = cute.shape(thr_r2s.partition_S(sC))[:3]
        tRS_rC = cute.make_rmem_tensor(sub_shape, self.c_dtype)
        gC = cute.local_tile(mC, (self.cfg.tile_m, self.cfg.tile_n), (None, None))  # (TM, TN, RestM, RestN)
        gC_epi = cute.flat_divide(gC, self.epi_tile)  # (EPI_M, EPI_N, 1, SUB, RestM, RestN)
        bSG_sC, bSG_gC = cpasync.tma_partition(
            tma_atom_c, 0, cute.make_layout(1), cute.group_modes(sC, 0, 2), cute.group_modes(gC_epi, 0, 2)
        )
        c_pipe = pipeline.PipelineTmaStore.create(
            num_stages=self.cfg.epi_stages,
            producer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, self.consumer_threads),
        )
        return tRS_sC, tRS_rAcc, tRS_rC, r2s, bSG_sC, bSG_gC, tma_atom_c, c_pipe

    @cute.jit
    def _tma_epilogue(self, epi, acc, tm, tn, n_done, warp_idx):
        """Scaled accumulator -> bf16 -> SMEM (stmatrix) -> TMA store, one tile_m x epi_n
        subtile at a time through `epi_stages` buffers (TMA clips partial tiles)."""
        cfg = self.cfg
        tRS_sC, tRS_rAcc, tRS_rC, r2s, bSG_sC, bSG_gC, tma_atom_c, c_pipe = epi
        epi_bar = pipeline.NamedBarrier(barrier_id=self.epi_bar_id, num_threads=self.consumer_threads)
        subtiles = cfg.tile_n // cfg.epi_n
        per_sub = cute.size(tRS_rC)

        def stage_subtile(s, buf):
            # Subtile s of the accumulator -> bf16 -> SMEM buffer `buf` (stmatrix).
            for v in cutlass.range_constexpr(per_sub):
                tRS_rC[v] = tRS_rAcc[s * per_sub + v].to(self.c_dtype)
            cute.copy(r2s, tRS_rC, tRS_sC[(None, None, None, buf)])

        if cutlass.const_expr(cfg.epi_stages >= subtiles):
            # The buffers hold the whole tile: stage all of it, then one barrier and the
            # stores. The buffers' last reader is the previous tile's stores, issued a whole
            # mainloop ago: the wait below normally finds them done.
            if warp_idx == 4:
                cute.arch.cp_async_bulk_wait_group(0, read=True)
            epi_bar.arrive_and_wait()
            for s in cutlass.range_constexpr(subtiles):
                stage_subtile(s, s)
            cute.arch.fence_proxy("async.shared", space="cta")
            epi_bar.arrive_and_wait()
            if warp_idx == 4:
                for s in cutlass.range_constexpr(subtiles):
                    cute.copy(tma_atom_c, bSG_sC[(None, s)], bSG_gC[(None, 0, s, tm, tn)])
                c_pipe.producer_commit()
        else:
            for s in cutlass.range_constexpr(subtiles):
                buf = (n_done * subtiles + s) % cfg.epi_stages
                stage_subtile(s, buf)
                # Make the st.shared visible to the TMA (async proxy) before it reads.
                cute.arch.fence_proxy("async.shared", space="cta")
                epi_bar.arrive_and_wait()
                if warp_idx == 4:
                    cute.copy(tma_atom_c, bSG_sC[(None, buf)], bSG_gC[(None, 0, s, tm, tn)])
                    c_pipe.producer_commit()
                    c_pipe.producer_acquire()
                epi_bar.arrive_and_wait()


def compile_sm90(config: Sm90Config, *, has_bias: bool, out_dtype=None, keep_ptx: bool = False):
    """Compile the kernel for sm_90a: one binary for all M/N/K, TVM-FFI enabled.

    Call the result with torch tensors, on torch's current stream (graph capture works):
    ``fn(a, b, scale_a, scale_b, out)`` (torch._scaled_mm's layouts: b [K, N] column-major,
    scales [M, 1] and [1, N]) or, with ``has_bias``, ``fn(..., out, bias)``.
    4.8.1 wraps it in a kwargs wrapper; `raw_callable` gives the positional fast path. See the
    module docstring for the argument requirements. ``keep_ptx`` keeps the PTX and cubin
    reachable as ``fn.__ptx__`` / ``fn.__cubin__``. Compiles under a process lock
    (cute.compile is not thread-safe); compiling needs no GPU.
    """
    cfg = config.resolved()
    if out_dtype is not None and out_dtype != cfg.out_dtype:   # the older keyword still works
        cfg = dataclasses.replace(cfg, out_dtype=out_dtype)
    spec = ArgSpec(a_dtype=cfg.a_dtype, b_dtype=cfg.b_dtype, out_dtype=cfg.out_dtype, scales=cfg.scales,
                   padded=PADDED_STRIDES)
    return compile_kernel(ScaledMmSm90(cfg, has_bias), ARCH, has_bias, cfg.out_dtype, keep_ptx=keep_ptx, spec=spec)


def raw_callable(compiled):
    """The positional TVM-FFI function under `compile_sm90`'s kwargs wrapper (~0.36 us a call
    on the lent H100, against several us through the wrapper)."""
    return compiled.__tvm_ffi_object__()


def ptx_sm90(config: Sm90Config, *, has_bias: bool = False) -> str:
    """Compile for sm_90a (no GPU needed) and return the kernel's PTX."""
    return ptx_of(compile_sm90(config, has_bias=has_bias, keep_ptx=True))
