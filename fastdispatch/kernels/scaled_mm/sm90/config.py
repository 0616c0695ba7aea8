"""The sm_90a kernel's compile-time configuration (per key, plain Python: no tracing).

`Sm90Config` (a hashable cache key) and its checks, the tables of what the binary implements
(scale recipes, element types, padded strides), where A's scales may come by TMA. The SMEM
budget that sizes the A/B ring and the scale ring is `smem_budget`; `table` picks a config per
problem shape; `kernel` reads a resolved config; nothing here is traced.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from fastdispatch.kernels.scaled_mm._compile import resolve_stages
from fastdispatch.kernels.scaled_mm.args import tma_aligned
from fastdispatch.kernels.scaled_mm.sm90.smem_budget import max_stages

ARCH = "sm_90a"
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
      8 (16-byte rows, no swizzle, two-matrix stmatrix) serves the widths that 16 does not
      divide (DeepGEMM's 56 and 88, which fill the SMs at N = 7168 and 2112); so does
      ``epi_n == tile_n`` for them (`unswizzled_epilogue`: plain row-major buffers, one TMA
      store per tile and row block, DeepGEMM's own epilogue for them).
    - ``row_blocks``: A row blocks of ``tile_m`` rows per CTA tile, sharing each B k-tile in SMEM
      (promote == 1). 2 is DeepGEMM's 256x128 tile: every k-tile is issued, waited for and
      promoted one 128-row wave after the other, so one temporary accumulator serves both
      (2 x 64 + 64 fp32 registers per thread) and each B tile feeds twice the MMAs.
    - ``late_scale_loads``: block scales only: load a k-tile's scale values for the
      look-ahead after its promotion instead of when it is taken (see
      `mainloop._refill_values`).
    - ``smem_scales``: 1x128 x 128x128 block scales (no swap_ab, no split_k) reach the
      consumers through a ring of SMEM slots of their own (`scale_ring_slots`), copied there
      by a producer warp (`smem_scales`), instead of their own look-ahead loads. Only then may
      ``tile_n`` not divide 128: a tile spans up to 3 of B's scale blocks (`scale_b_blocks`).
    - ``scale_a_tma``: with ``smem_scales``, A's scale rows reach each slot as one TMA copy per
      128-deep scale block (DeepGEMM's feed) instead of 4-byte ``cp.async`` copies; the binary
      then takes scale_a with unit stride along M, a 16-byte column stride and a 16-byte aligned
      pointer (torch's layout when M % 4 == 0: `scale_a_tma_ok`).
    - ``a_from_leader``: with ``cluster_n > 1``, the cluster's first CTA along N loads A's
      whole tile and multicasts it (DeepGEMM's way), instead of each CTA loading its
      1/cluster_n slice and multicasting that.
    - ``stagger_wgs``: with ``row_blocks > 1`` and two consumer warpgroups, the second starts
      each tile's K loop only once the first one's first WGMMAs have retired (a named
      barrier), so that one warpgroup's promotion FMAs run while the other's WGMMAs do,
      instead of both promoting at once with the tensor cores idle (trial knob).
    - ``static_stages``: with SMEM block scales (not overlapped) or rowwise row blocks, every
      tile's K loop starts at A/B stage 0 and runs in passes over the ring, unrolled by
      ``stages``, so each k-tile's stage (its barriers, its SMEM descriptors) is known at trace
      time (DeepGEMM's loop: "unrolling and kNumInnerStages are vital for performance"). The
      producer pads each tile's k-tiles to a
      multiple of ``stages`` with empty stages (an arrival without bytes; the consumers wait
      for them and free them). Picked for the 256x128 block tile only (`table.BLOCK_LARGE`): on
      the lent H200 the tiles of one row block ran 1-7% slower with it (ten shapes, M = 64 to
      4096), and rowwise row blocks spilled 848 bytes and ran 0.65x (bench/results/h200_2026-12-02/
      probeK_static_one_block.log, rowprobe_static_rowwise.log).
    - ``early_wait``: with promote == 1 and no ``overlap_promotion`` (every k-tile freed, then
      promoted), once a k-tile's stage is freed, test (without waiting) whether the next
      k-tile's stage has landed, before the promotion's FMAs; the next k-tile then waits only
      if it had not (DeepGEMM's SASS issues that test there: the barrier's round trip and the
      next WGMMAs' descriptor set-up run under the FMAs, where the plain wait, a retry loop,
      holds them behind the FMAs). The table picks it for every tile with plain promotions it
      measured with it on the lent H200 (0-18% faster: bench/results/blockwise_sweep_2026-12-01.txt,
      trial 13), not for B per 1x128 without SMEM slots (not measured). With promote == 0
      (fast accumulation) the test follows the freed stage with nothing to run under it.
    - ``pingpong``: the two consumer warpgroups take turns instead of sharing a tile: each
      computes whole ``tile_m`` (64) x ``tile_n`` tiles, the CTA's even tiles on the first,
      odd ones on the second, reading the one A/B ring in the producer's order, so one
      warpgroup's epilogue runs under the other's K loop (CUTLASS's ping-pong kernel; a named
      barrier each way starts a K loop only once the other's has waited for all its stages:
      `pingpong`). Rowwise, no promotion overlap, one row block; its epilogue has SMEM buffers
      and a named barrier per warpgroup.
    - ``scales_before_loop``: rowwise, one row block: each tile's row and column scales (and
      bias) are loaded before its K loop instead of after it, so their global-load latency
      runs under the loop, not between the loop and the stores (the swap-AB tiles with one
      consumer warpgroup always load them so). Costs a register per distinct value for the
      whole loop (66 at 128x256: no spills; with bias 130, and 204 bytes spill, ptxas). Trial
      knob, not yet run on a GPU.
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
    row_blocks: int = 1
    late_scale_loads: bool = False
    smem_scales: bool = False
    scale_a_tma: bool = False
    a_from_leader: bool = False
    stagger_wgs: bool = False
    static_stages: bool = False
    early_wait: bool = False
    pingpong: bool = False
    scales_before_loop: bool = False
    num_sms: int = H100_SMS
    scales: str = "rowwise"
    a_dtype: str = "e4m3"
    b_dtype: str = "e4m3"
    out_dtype: str = "bf16"

    def __post_init__(self):
        errs = []
        if self.scales not in SCALE_RECIPES:
            errs.append(f"scales must be one of {SCALE_RECIPES}")
        elif self.scales != "rowwise" and not (self.promote == 1 and self.tile_k in (128, 256)):
            errs.append("block scales are applied at each promotion: they need promote == 1 and tile_k 128 or 256")
        elif self.scales != "rowwise" and self.tile_k == 256 and not (
            self.scales == "block_1x128_128x128" and not self.swap_ab and not self.overlap_promotion
        ):
            errs.append("block scales with 256-deep k-tiles (two promotions each) need the 128x128 B recipe, "
                        "no swap_ab and no overlap_promotion")
        elif self.scales != "rowwise" and wg_rows(self) != 64:
            errs.append("block scales need 64 rows per consumer warpgroup (one m64 WGMMA accumulator)")
        elif self.scales != "rowwise" and 128 % (self.tile_m if self.swap_ab else self.tile_n) and not self.smem_scales:
            # (Through SMEM slots a tile may span up to 3 scale blocks along N: `scale_b_blocks`.)
            errs.append("block scales need the tile's side along N to divide 128 (one 128x128 scale block) "
                        "unless they come through SMEM (smem_scales)")
        if self.a_dtype not in OPERAND_DTYPES or self.b_dtype not in OPERAND_DTYPES:
            errs.append(f"a_dtype and b_dtype must be in {tuple(OPERAND_DTYPES)}")
        if self.out_dtype not in OUT_DTYPES:
            errs.append(f"out_dtype must be in {tuple(OUT_DTYPES)}")
        if self.consumer_wgs not in (1, 2):
            errs.append("consumer_wgs must be 1 or 2")
        elif self.pingpong and not (
            self.consumer_wgs == 2 and self.tile_m == 64 and self.scales == "rowwise" and not self.swap_ab
            and self.split_k == 1 and self.row_blocks == 1 and not self.overlap_promotion and not self.stagger_wgs
            and not self.static_stages
        ):
            errs.append("pingpong gives each of two consumer warpgroups its own 64-row tiles: it needs "
                        "consumer_wgs 2, tile_m 64, rowwise scales, no swap_ab, split_k, row_blocks, "
                        "overlap_promotion, stagger_wgs or static_stages")
        elif not self.pingpong and (self.tile_m % self.consumer_wgs or wg_rows(self) not in (64, 128)):
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
        if not self.swap_ab and wg_rows(self) != 64:
            errs.append("the TMA-store epilogue (swap_ab=False) needs 64 rows per consumer warpgroup")
        if not self.swap_ab and not (self.epi_n in (8, 16, 32, 64) and self.tile_n % self.epi_n == 0
                                     or self.epi_n == self.tile_n):
            errs.append("epi_n must be 8, 16, 32 or 64 and divide tile_n, or be tile_n")
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
        elif self.promote and wg_rows(self) * self.tile_n // 128 > 96:
            errs.append("promote > 0 needs two accumulators: at most 96 fp32 registers each "
                        "(tile_m // consumer_wgs * tile_n <= 12288)")
        if self.overlap_promotion and not (
            self.overlap_promotion >= 2 and self.promote == 1
            and wg_rows(self) * self.tile_n // 128 <= 64
        ):
            errs.append("overlap_promotion (a group of >= 2 k-tiles) needs promote == 1 and three "
                        "accumulators of at most 64 fp32 registers (tile_m // consumer_wgs * tile_n <= 8192)")
        if self.row_blocks not in (1, 2):
            errs.append("row_blocks must be 1 or 2")
        elif self.row_blocks > 1 and not (
            self.scales in ("rowwise", "block_1x128_128x128") and not self.swap_ab and self.tile_k == 128
            and self.promote == 1 and not self.overlap_promotion and self.split_k == 1
        ):
            # (B per 1x128 needs tile_n / 4 column values per row block and k-tile: 480+
            # spilled registers at 128x128, ptxas for sm_90a.)
            errs.append("row_blocks > 1 (row blocks promoted one after the other) needs rowwise or 1x128 x 128x128 "
                        "block scales, 128-deep k-tiles, promote == 1, no swap_ab, no overlap_promotion and no split_k")
        if self.late_scale_loads and self.scales == "rowwise":
            errs.append("late_scale_loads moves block-scale loads: it needs block scales")
        if self.smem_scales and not (
            self.scales == "block_1x128_128x128" and not self.swap_ab and self.split_k == 1
            and not self.late_scale_loads and self.tile_m * self.row_blocks % 32 == 0
        ):
            errs.append("smem_scales needs 1x128 x 128x128 block scales, no swap_ab, no split_k, "
                        "no late_scale_loads and a multiple of 32 rows per CTA tile")
        if self.scale_a_tma and not self.smem_scales:
            errs.append("scale_a_tma copies A's scales into the scale ring: it needs smem_scales")
        if self.stagger_wgs and not (self.row_blocks > 1 and self.consumer_wgs == 2):
            errs.append("stagger_wgs staggers two consumer warpgroups' row blocks: "
                        "it needs row_blocks > 1 and consumer_wgs 2")
        if self.static_stages and not (
            self.smem_scales and not self.overlap_promotion or self.row_blocks > 1 and self.scales == "rowwise"
        ):
            errs.append("static_stages unrolls the K loop over the ring: it needs SMEM block scales without "
                        "overlap_promotion, or rowwise row blocks (no register look-ahead)")
        if self.early_wait and not (self.promote in (0, 1) and not self.overlap_promotion):
            errs.append("early_wait tests the next k-tile's stage once a k-tile's stage is freed: "
                        "it needs promote 0 or 1 and no overlap_promotion")
        if self.scales_before_loop and not (self.scales == "rowwise" and self.row_blocks == 1):
            errs.append("scales_before_loop loads the rowwise scales before a tile's K loop: it needs rowwise "
                        "scales and one row block")
        if self.a_from_leader and self.cluster_n == 1:
            errs.append("a_from_leader multicasts A along N: it needs cluster_n > 1")
        if self.stages is not None and self.stages < 2:
            errs.append("stages must be >= 2")
        if errs:
            raise ValueError(f"invalid Sm90Config {self}: " + "; ".join(errs))

    def resolved(self) -> "Sm90Config":
        """This config with ``stages`` filled in (and checked against the SMEM budget)."""
        return resolve_stages(self, "stages", max_stages(self))


def wg_rows(cfg: Sm90Config) -> int:
    """Rows of a tile each consumer warpgroup computes: its share of ``tile_m``, or with
    ``pingpong`` all of it (its own tiles)."""
    return cfg.tile_m if cfg.pingpong else cfg.tile_m // cfg.consumer_wgs


def scale_a_tma_ok(scale_a) -> bool:
    """Whether a [M, ceil(K/128)] fp32 scale_a tensor can be a TMA source (``scale_a_tma``):
    unit stride along M, a column stride of a multiple of 4 floats, a 16-byte aligned pointer."""
    return scale_a.dim() == 2 and scale_a.stride(0) == 1 and scale_a.stride(1) % 4 == 0 and tma_aligned(scale_a)


#: ``scale_a_tma`` above this M (the large-M tiles). On the lent H200 (2026-12-02,
#: bench/results/h200_2026-12-01/probe_scale_a_tma.log, probeC_small.log) the TMA feed ran
#: 3-7% faster than the 4-byte copies at M = 4096 and the squares, but -8 .. +3% at ten shapes
#: with M <= 128 (16x4096x7168 22.5 vs 20.7 us): a small tile's slot is a few hundred bytes,
#: where a TMA round trip is slower than 32 lanes' cp.async.
SCALE_A_TMA_ABOVE_M = 128


def with_scale_a_layout(cfg: Sm90Config, scale_a) -> Sm90Config:
    """``cfg`` for this [M, ceil(K/128)] scale_a tensor: with ``scale_a_tma`` where its scales
    come through SMEM, M > `SCALE_A_TMA_ABOVE_M` and the tensor can be a TMA source
    (`scale_a_tma_ok`; the same SMEM either way)."""
    if (not cfg.smem_scales or cfg.scale_a_tma or scale_a.shape[0] <= SCALE_A_TMA_ABOVE_M
            or not scale_a_tma_ok(scale_a)):
        return cfg
    return dataclasses.replace(cfg, scale_a_tma=True)


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
