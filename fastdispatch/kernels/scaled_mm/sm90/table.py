"""The sm_90a kernel's config table (per miss, plain Python: no tracing): the named configs
the table picks among, `shipped_configs` (what the tests compile) and `default_config`, the
pick per problem shape, measured on the lent H100/H200 (the figures beside each entry and
rule; bench/results/ has the runs). `config` defines what a config is and what fits.
"""

from __future__ import annotations

import dataclasses

from fastdispatch.kernels.scaled_mm.sm90.config import H100_SMS, Sm90Config, dtype_name

#: DeepGEMM's large-M blockwise tile (256x128 as two 128-row waves, A multicast over a 1x2
#: cluster), its scales through the consumers' own loads: the trials' base
#: (bench/results/blockwise_sweep_2026-12-01.txt).
BLOCK_WAVES = Sm90Config(tile_m=128, tile_n=128, tile_k=128, consumer_wgs=2, cluster_n=2, promote=1,
                         scales="block_1x128_128x128", row_blocks=2)
#: The same tile for rowwise scales (applied in each block's epilogue); not picked (+2.5% at 4096^3,
#: nothing elsewhere, 8192^3 worse: the sweep record's trial 8). `ROWWISE_LARGE` is the form
#: the table picks (`BLOCK_LARGE`'s loop and epilogue).
ROWWISE_WAVES = dataclasses.replace(BLOCK_WAVES, scales="rowwise")
#: What `default_config` picks for 1x128 x 128x128 block scales at large M: that tile with the
#: scales through SMEM slots, the whole 256x128 tile staged for its stores (3 stages) and
#: DeepGEMM's 128-SM grid. Interleaved on the lent H200 beside the 128x128 overlapped tile
#: (both with SMEM scales): 4096x4096x7168 218.2 vs 233.4 us, 8192^3 1031.9 vs 1104.3. Its K loop
#: runs in passes over the ring (``static_stages``): 0-2% faster at six M = 4096 / square shapes
#: (2026-12-02, bench/results/h200_2026-12-02/probeE_static.log: 4096x7168x16384 817.7 vs 830.7 us,
#: 4096x7168x2048 104.4 vs 106.7, 8192^3 957.7 either way). With ``early_wait`` (the next stage
#: tested before each promotion): 0-4% faster in two interleaved probes, 4096^3 112.8 vs 117.0 us,
#: 4096x7168x16384 790.8 vs 816.0, 8192^3 934.4 vs 947.5, 4096x24576x1536 equal
#: (bench/results/h200_2026-12-02/probeE_early.log).
BLOCK_LARGE = dataclasses.replace(BLOCK_WAVES, epi_n=64, epi_stages=4, num_sms=128, smem_scales=True,
                                  static_stages=True, early_wait=True)
#: How much faster the 256x128 block tile computes the same output than two 128x128 tiles, its
#: coarser waves aside: 1.05-1.07 at full waves on the lent H200 (4096x4096x7168, 8192^3).
ROW_BLOCKS_GAIN = 1.06

#: Where 128-wide tiles leave the last wave mostly empty: 128x176 tiles, which span up to three
#: of B's 128-column scale blocks (`smem_budget.scale_b_blocks`; SMEM scales only). N = 2112 is
#: 12 x 176: 2.9 waves at M = 4096 where 128x128 makes 4.1. On the lent H200 (2026-12-02,
#: bench/results/h200_2026-12-02/probeS.log) 128.9 us against the 128x128 tile's 136.5
#: (DeepGEMM's 256x88 120.0; 128x192 143.2, 256x96 141.5; the whole tile staged, 16x11, the
#: same 128.7). With ``early_wait``: 118.6 vs 123.7 us at 4096x2112x7168, DeepGEMM 113.5
#: (probeL_early.log).
BLOCK_SPAN = Sm90Config(tile_m=128, tile_n=176, tile_k=128, consumer_wgs=2, cluster_m=2, promote=1, epi_n=16,
                        epi_stages=4, scales="block_1x128_128x128", smem_scales=True, early_wait=True)
#: The span tile 192 wide in static passes over its 4-stage ring (``static_stages``: each
#: stage a trace-time index; 2 classes of B's scale blocks to trace where 176 makes 8), the
#: whole width staged. `default_config` takes it in `BLOCK_SPAN`'s place where that is picked
#: and 192 wide makes no more waves (N = 2112: 11 x 32 tiles, 3 waves as 176 makes). On the
#: lent H200 at
#: 4096x2112x7168 in three interleaved probes: 109.3 / 110.3 / 110.2 us vs `BLOCK_SPAN`'s
#: 114.4 / 113.0 / 113.0 (128x128 137.3, DeepGEMM 117.0-119.2, torch's blockwise 119.3-120.0;
#: bench/results/h200_2026-12-08/probe192*.log). The 176-wide tile in static passes ran 165.2;
#: 192 wide with the dynamic loop 113.9 / 114.7.
BLOCK_SPAN_WIDE = dataclasses.replace(BLOCK_SPAN, tile_n=192, epi_n=32, epi_stages=6, static_stages=True)
#: Its work per column against the 128x128 tile's in the waves x width estimate: 0.875, from
#: that pair (3 waves x 176 against 5 x 128 columns, 128.9 vs 136.5 us; the 128x128 tile's
#: short last wave runs faster than a full one, which the estimate does not see).
SPAN_TILE_GAIN = 0.875

# Shipped configs (`shipped_configs`: `default_config` picks among them; tests compile each).

#: Fast accumulation: 128x256 tiles (fewest bytes per FLOP) in a 2x1 cluster, the whole tile
#: staged for its stores (4 buffers of 128x64: one barrier pair per tile, 3 stages left). Against
#: 32-column subtiles through 2 buffers (4 stages) on the lent H200: call by call 55.9 / 108.4 /
#: 218.9 / 435.2 vs 56.9 / 109.4 / 221.5 / 437.2 us at 4096x4096xK, K = 2048..16384 (cuBLAS fast
#: 52.4 / 103.6 / 214.7 / 429.6: the same slope per K, ours ~1.7 us more per call, was ~2.6);
#: back to back at the power cap 118.5 vs 120.0 us at 4096^3, 895.8 vs 905.9 at 8192^3 (cuBLAS
#: 115.9 / 901.0; bench/results/h200_2026-12-04/fastprobe3_k.log, fastpower4.log).
FAST_LARGE = Sm90Config(tile_m=128, tile_n=256, tile_k=128, consumer_wgs=2, cluster_m=2, promote=0, epi_n=64,
                        epi_stages=4)
#: Fast accumulation with the two consumer warpgroups taking turns at 64x256 tiles
#: (``pingpong``: one's epilogue under the other's WGMMAs; B multicast over 2x1, as
#: `FAST_LARGE`: without it 1.5x slower). A trial, not picked: call by call (clean-flush
#: medians, interleaved) it beat `FAST_LARGE` from K = 8192 on the lent H200, 8192^3 878-888 vs
#: 878-898 us, 16384x8192x8192 1763-1837 vs 1800-1899 (bench/results/h200_2026-12-03/fastpp*.log,
#: h200_2026-12-04/fastprobe*.log), but run back to back at the 700 W cap, as a busy server runs
#: it, it was 5-8% slower: 8192^3 945.1 / 951.7 vs 894.4 / 888.3 us (0.658 vs 0.613 J a call),
#: 16384x8192x8192 1978.0 vs 1839.6, 4096^3 119.6-120.2 vs 117.9-118.7
#: (h200_2026-12-04/fastpower*.log). cuBLAS's use_fast_accum=True: 890.0 / 888.2, 1758.1, 113.5-114.0.
FAST_PINGPONG = Sm90Config(tile_m=64, tile_n=256, tile_k=128, consumer_wgs=2, cluster_m=2, promote=0, pingpong=True,
                           early_wait=True)
# 128x128 tiles, each promotion overlapped with the next k-tile's WGMMAs (groups of 4 k-tiles),
# the whole tile staged for its TMA stores (4 buffers: still 6 stages). Interleaved on the lent
# H100 (bench/results/sm90_sweep_2026-11-23.txt, fifth session): 4096^3 119.5 -> 112.2 us.
LARGE = Sm90Config(tile_m=128, tile_n=128, tile_k=128, consumer_wgs=2, cluster_m=2, promote=1,
                   overlap_promotion=4, epi_stages=4)
# 64x192 per consumer warpgroup: two 96-register accumulators (promotion) still fit, no third
# for overlapping, and each WGMMA reads 85 instead of 96 bytes of SMEM per cycle of MMA work.
# Whole-tile epilogue staging (6 buffers) at the cost of a stage (5 -> 4): 8192^3 924.8 ->
# 898.7 us, 16384x8192x8192 1813.7 -> 1762.3 us.
# With ``early_wait`` (the next stage tested before each promotion, so the next WGMMAs issue
# as soon as the FMAs are done) the plain 128x128 loop beats the overlapped one: on the lent
# H200 (bench/results/h200_2026-12-02/rowearly.log) 4096x4096x7168 187.3 vs 193.8 us, 4096^3
# 128.4 vs 133.3 (cuBLAS 188.7, 129.8); without it 213.3 and 146.5. The rowwise large-M tile.
LARGE_EARLY = dataclasses.replace(LARGE, overlap_promotion=0, early_wait=True)
LARGE_WIDE = dataclasses.replace(LARGE, tile_n=192, overlap_promotion=0, epi_stages=6, early_wait=True)
#: What a rowwise large-M tile costs besides its K loop (prologue, epilogue, the hand-over to
#: the next tile), as K of one output column: the estimate of `_rowwise_large_tile` is waves x
#: (tile width x K + this), the two tiles otherwise alike per column. Fitted on the lent H200 to
#: two interleaved pairs, 192-wide (`LARGE_WIDE`) against 128-wide (`LARGE_EARLY`) tiles, both
#: with ``early_wait``: 8192^3 881.6 vs 907.7 us (21 vs 32 waves) and 4096x24576x1536 261.2 /
#: 248.4 vs 271.9 / 262.2 (32 vs 47 waves; bench/results/h200_2026-12-03/rowwide*.log). It then
#: predicts the other two measured pairs' winner and margin: 4096x7168x16384 128-wide by 6.3%
#: (measured 5.7%: 780.4 vs 824.7), 4096x7168x2048 128-wide by 1.4% (2.3-2.5%). A width gain
#: alone (the earlier rule, 1.013 from 8192^3) picked the 128-wide tile at 4096x24576x1536.
TILE_FIXED_COST = 50_000
#: Rowwise on the blockwise large-M tile as `BLOCK_LARGE` runs it (256x128 as two 128-row
#: blocks, A multicast over 1x2, static passes over a 3-stage ring, the whole tile staged, 128
#: SMs). `_rowwise_large_tile` counts it as a 256-column tile of 128 rows. On the lent H200,
#: clean-flush, two interleaved passes beside the table's earlier pick and cuBLAS
#: (bench/results/h200_2026-12-07/rowpin*.log): 4096^3 118.8 / 117.0 vs 122.0 / 120.7 us
#: (cuBLAS 124.4 / 122.8), 4096x7168x2048 137.0 / 135.7 vs 140.9 / 139.6, 4096x4096x7168
#: 201.7 / 198.4 vs 204.6 / 201.9, 4096x24576x1536 277.1 / 249.7 vs 279.6 / 250.7 (the 192-wide
#: tile), 4096x7168x16384 782.7 / 782.3 vs 780.2 / 778.6 (the estimate's one miss, 0.3%). Where
#: the estimate keeps the 192-wide tile it was right: 8192^3 919.1 vs 894.9, 4096x2112x7168
#: 140.5 vs 109.3. With the picks it makes, do_bench bench runs 21-23 (h200_2026-12-08/): rowwise
#: 1.02-1.07x cuBLAS at every M = 4096 shape and the squares (4096x7168x16384 1.05-1.07x).
ROWWISE_LARGE = dataclasses.replace(BLOCK_LARGE, scales="rowwise", smem_scales=False)
#: Where `ROWWISE_LARGE` was measured (M = 4096, 8192); below it, where the waves are few and
#: the estimate untested for that tile (it would take it from M = 256 at N = 16384), it is not
#: considered.
ROWWISE_LARGE_FROM_M = 4096
MEDIUM = Sm90Config(tile_m=128, tile_n=128, tile_k=128, consumer_wgs=2, promote=1)


def _small_m_config(m: int, split_k: int = 1) -> Sm90Config:
    # N side 64 rows per tile (N=8192 -> 128 CTAs streaming Bt), M side rounded up to the
    # WGMMA N granularity, 256-deep k-tiles (two 128-byte TMA boxes per row and stage), the
    # deepest ring that fits, programmatic dependent launch. Measured on the lent H100 with
    # a clean L2 (bench/results/sm90_sweep_2026-11-23.txt): up to M = 64 these read Bt
    # faster than torch.sum reads the same bytes (M = 128: 2-6% slower); 256-deep k-tiles are
    # 3-14% faster than 128-deep ones. ``early_wait`` from M = 33 (where it was measured): on the
    # lent H200 at the ten DeepSeek-V3 shapes with M = 64 / 128, 2.8% / 2.3% faster by geometric
    # mean (64x24576x1536 16.2 vs 17.4 us, 128x4096x7168 17.4 vs 18.8; at most 0.2 us slower,
    # 64x7168x2048 9.7 vs 9.5; bench/results/h200_2026-12-03/rowsmall*.log).
    tile_n = 16 if m <= 16 else (32 if m <= 32 else (64 if m <= 64 else 128))
    return Sm90Config(tile_m=64, tile_n=tile_n, tile_k=256, consumer_wgs=1, swap_ab=True, split_k=split_k,
                      pdl=True, early_wait=m > 32)


#: Rowwise at M = 65..128 where the swap-AB tiles take several rounds of the grid: one row of
#: 128x192 tiles (`LARGE_WIDE` without its cluster; the grid only as large as the tiles). On the
#: lent H200 against the swap-AB tile: 128x24576x1536 16.8 / 16.2 vs 19.8 / 19.6 us (cuBLAS 19.0
#: / 24.5), 96x24576x1536 16.1 vs 19.9, 128x19200x1536 14.8 vs 18.5, 128x16384x1536 14.0 vs
#: 14.6, 128x12288x1536 (64 tiles) 13.2 vs 14.0 (bench/results/h200_2026-12-03/rowsmall128.log,
#: routeprobe.log); where the swap-AB tiles make one round it ran 1.4-1.8x slower (128x2112x7168
#: 31.1 vs 16.8, N = 4096 / 7168), which `_small_m_rowwise_config`'s cost keeps there.
SMALL_M_WIDE = dataclasses.replace(LARGE_WIDE, cluster_m=1)


def _small_m_rowwise_config(m: int, n: int, k: int) -> Sm90Config:
    """Rowwise at M <= 128: the swap-AB tile (`_small_m_config`), with split-K over a 2-CTA
    cluster for M <= 16 while the N tiles fill at most half the SMs and K has four k-tiles or
    more (measured for the 16-wide tile only: 1x4096x4096 12.4 -> 11.9 us); from M = 65 the
    128x192 tile (`SMALL_M_WIDE`) where its estimated time, rounds of the grid x the rows of A
    and B a k-tile reads (as `_small_m_block_config`'s), is the smaller."""
    few_tiles = -(-n // 64) * 2 <= H100_SMS
    split_k = 2 if m <= 16 and few_tiles and k >= 4 * 256 else 1
    swap = _small_m_config(m, split_k)
    if m > 64:
        swap_tiles, wide_tiles = -(-n // swap.tile_m), -(-n // SMALL_M_WIDE.tile_n)   # (one row of each)
        swap_cost = -(-swap_tiles // H100_SMS) * (swap.tile_m + swap.tile_n)
        wide_cost = -(-wide_tiles // H100_SMS) * (SMALL_M_WIDE.tile_n + SMALL_M_WIDE.tile_m)
        if wide_cost < swap_cost:
            return dataclasses.replace(SMALL_M_WIDE, num_sms=min(H100_SMS, wide_tiles))
    return swap


#: A 64-row blockwise tile at M = 65..128 (two row tiles, one consumer warpgroup each, no second
#: warpgroup's WGMMAs under its promotions) counts this many times its bytes in
#: `_small_m_block_config`'s cost. Between the two ratios measured on the lent H200
#: (bench/results/h200_2026-12-03/blocksmall.log): 128x2112x7168 64x32 13.5 us vs 128x16 15.9
#: (bytes 96 vs 144: the 64-row tile wins below 1.5), 128x4096x7168 64x64 19.6 vs 128x32 19.0
#: (128 vs 160: it loses above 1.25).
ONE_WARPGROUP_COST = 1.4
#: DeepGEMM's 56-wide tile at small M (N = 7168: 128 tiles, one per SM of a 132-SM wave, where
#: 64 wide makes 112). On the lent H200, 256-deep with one whole-width epilogue buffer, beside
#: the 64-wide pick: 64x7168x16384 41.8 vs 42.7 us (DeepGEMM 41.5; an 8-column epilogue 41.7
#: vs 43.0 the run before), 64x7168x2048 11.6 vs 11.6, 128x7168x2048 (128x56) 12.0 vs 12.5
#: (bench/results/h200_2026-12-06/probe56.log).
NARROW_SPAN = 56
# A trial, not yet picked: at M <= 64 (one 64-row tile) the 56-wide tile in 1x2 clusters (A
# multicast to both CTAs; blockwise_probe's ``cluster_n2``) ran on the lent H200 (2026-12-04,
# bench/results/h200_2026-12-09/probe_c2*.log, two runs, DeepGEMM and torch beside)
# 64x7168x2048 11.2 / 11.2 us vs 11.7 / 11.8 (DeepGEMM 11.4 / 11.4), 64x7168x16384 42.0 / 41.2
# vs 41.8 / 41.3 (a tie), 128x7168x2048 11.9 / 12.5 vs 11.8 / 11.8; correct there, but the
# device time ran out before its GPU tests (partial M, bias, both scale layouts) could run.


def _small_m_block_config(m: int, n: int, scales: str = "block_1x128_128x128", cluster_n: int = 1) -> Sm90Config:
    """Block scales at M <= 128: not swap-AB. Swapped, every thread would need a scale of A
    per MMA column (tile_n / 4 loads and multiplies per k-tile; 2.0-2.6x the rowwise time
    on the lent H200), unswapped it needs its 2 rows' and one block value. The M side is
    one or two 64-row consumer warpgroups; N is cut into narrow tiles (16..128 columns, with B
    per 128x128 also 192: SMEM scales span blocks) so that the grid fills the SMs: estimated
    time = rounds of the persistent grid x the bytes a tile's k-tile reads (tile_n rows of B
    + the M side's rows of A). With B per 128x128 the M side may also be two 64-row tiles from
    M = 65 (DeepGEMM's choice there; `ONE_WARPGROUP_COST`), and k-tiles are 256 deep, promoted
    in two halves, where the width divides 128 and 3 stages fit: half the pipeline hand-offs
    per K (each 128-deep k-tile cost ~0.34 us at 64x2112x7168, DeepGEMM's ~0.24). Ties keep
    128 rows and the widest of 16..128."""
    smem = scales == "block_1x128_128x128"
    rows_options = (128, 64) if m > 64 and smem else ((64,) if m <= 64 else (128,))
    widths = (128, 64, 32, 16) + ((192, NARROW_SPAN) if smem else ())

    def cost(shape):
        rows, tile_n = shape
        tiles = -(-m // rows) * -(-n // tile_n)
        return -(-tiles // H100_SMS) * (tile_n + rows) * (ONE_WARPGROUP_COST if rows < min(m, 128) else 1)

    rows, tile_n = min(((r, w) for r in rows_options for w in widths), key=cost)
    # ``early_wait`` where it was measured (B per 128x128): on the lent H200 faster or equal at 9
    # of the 10 DeepSeek-V3 shapes with M <= 128 (64x2112x7168 12.9 vs 13.2 us, 128x2112x7168
    # 15.9 vs 16.7), 128x4096x7168 19.4 vs 19.0 (bench/results/h200_2026-12-02/probeL_early.log).
    narrow = tile_n == NARROW_SPAN
    if narrow:
        # One unswizzled 56-column buffer (16 does not divide 56) and 256-deep k-tiles: their
        # halves span B's scale blocks as the tile does, which the SMEM scales serve (3 stages
        # or more: 4 at 128 rows, 7 at 64).
        tile_k, epi_n, epi_stages = 256, NARROW_SPAN, 1
    else:
        tile_k, epi_n, epi_stages = 128, min(tile_n, 32), max(1, min(4, tile_n // 32)) if tile_n >= 32 else 1
    cfg = Sm90Config(tile_m=rows, tile_n=tile_n, tile_k=tile_k, consumer_wgs=rows // 64, cluster_n=cluster_n,
                     epi_n=epi_n, epi_stages=epi_stages, pdl=True, early_wait=smem, scales=scales, smem_scales=smem)
    return _deep_k_tiles(cfg) if smem and not narrow else cfg


def _deep_k_tiles(cfg: Sm90Config) -> Sm90Config:
    """A B-per-128x128 block tile with 256-deep k-tiles (promoted in two halves) where its width
    divides 128 (one scale block per half) and 3 stages of them still fit; else as it is."""
    if 128 % cfg.tile_n:
        return cfg
    deep = dataclasses.replace(cfg, tile_k=256)
    return deep if deep.resolved().stages >= 3 else cfg


def shipped_configs() -> dict[str, Sm90Config]:
    """Every config `default_config` can return, by name (what the tests compile)."""
    return {
        "fast_large": FAST_LARGE,
        "large": LARGE,
        "large_early": LARGE_EARLY,
        "large_wide": LARGE_WIDE,
        "rowwise_large": ROWWISE_LARGE,
        "medium": MEDIUM,
        "small_m_wide": SMALL_M_WIDE,
        **{f"small_m{m}": _small_m_config(m) for m in (16, 32, 64, 128)},
        "small_m16_split_k2": _small_m_config(16, split_k=2),
    }


def default_config(m: int, n: int, k: int, *, fast_accum: bool = False, scales: str = "rowwise",
                   a_dtype="e4m3", b_dtype="e4m3", out_dtype="bf16") -> Sm90Config:
    """The config for an M x N x K problem (a small table, measured on the lent H100 / H200):
    rowwise M <= 128 -> `_small_m_rowwise_config` (swap-AB, or one row of 128x192 tiles);
    otherwise 128x128x128 tiles, with a 2x1 cluster (B multicast) once there is a wave of
    tiles, or 128x192x128 or 256x128x128 where their waves come out shorter
    (`_rowwise_large_tile`).
    ``fast_accum`` (torch._scaled_mm's use_fast_accum=True) allows the 128x256x128
    fast-accumulation tile (`FAST_LARGE`).
    Block scales (``scales`` not 'rowwise') promote every 128 of K, so they take 128-deep
    k-tiles (256-deep ones promoted in halves at small M) and tiles no wider than one
    128-column scale block, but with B per 128x128 (SMEM scales): up to M = 128
    `_small_m_block_config`, from M = 129 to
    `WAVES_UP_TO_M` DeepGEMM's choice by waves (`block_tile_by_waves`), above it the 256x128,
    128x128 or 128x176 tile by a waves x width estimate (the 176-wide one 192 wide,
    `BLOCK_SPAN_WIDE`, where that makes no more waves). Dtypes are torch dtypes or the
    config's names."""
    types = {"scales": "rowwise" if scales == "tensorwise" else scales,
             "a_dtype": dtype_name(a_dtype) or a_dtype, "b_dtype": dtype_name(b_dtype) or b_dtype,
             "out_dtype": dtype_name(out_dtype) or out_dtype}
    blockwise = types["scales"] != "rowwise"
    # 1x128 x 128x128 scales reach the promotion through SMEM slots (`smem_scales`): 4-12%
    # faster than the consumers' own look-ahead loads on the lent H200 at M = 64..8192.
    smem = {"smem_scales": True} if types["scales"] == "block_1x128_128x128" else {}
    if blockwise and m <= 128:
        cfg = _small_m_block_config(m, n, types["scales"])
    elif m <= 128:
        cfg = _small_m_rowwise_config(m, n, k)
    elif smem and m <= WAVES_UP_TO_M:
        cfg = block_tile_by_waves(m, n)
    elif fast_accum and not blockwise and -(-m // 128) * -(-n // 256) >= H100_SMS:
        cfg = FAST_LARGE
    elif -(-m // 128) * -(-n // 128) < H100_SMS:
        # Rowwise with ``early_wait``: on the lent H200 faster at 5 of 6 shapes below one wave
        # (256x7168x16384 49.7 vs 52.5 us, 512x2112x7168 29.3 vs 31.7, 1024x1536x4096 17.0 vs
        # 18.2), equal at 512x4096x7168 (bench/results/h200_2026-12-02/rowmid.log). Block
        # scales without SMEM slots keep the plain wait (not measured with it).
        cfg = MEDIUM if blockwise else dataclasses.replace(MEDIUM, early_wait=True)
    elif smem:
        # The 256x128 tile where its coarser waves cost less than its gain (N = 2112: 2.06
        # waves of 256x128 tiles, 4.1 of 128x128: the smaller tile, measured 134.6 vs 149.6 us),
        # the 176-wide one where its waves come out fewer still (N = 2112: 2.9).
        estimates = {BLOCK_LARGE: _waves(BLOCK_LARGE, m, n) * 256 / ROW_BLOCKS_GAIN,
                     LARGE: _waves(LARGE, m, n) * 128,
                     BLOCK_SPAN: _waves(BLOCK_SPAN, m, n) * 176 / SPAN_TILE_GAIN}
        cfg = min(estimates, key=estimates.get)   # (ties: the first, as before)
        if cfg is BLOCK_SPAN and _waves(BLOCK_SPAN_WIDE, m, n) <= _waves(BLOCK_SPAN, m, n):
            cfg = BLOCK_SPAN_WIDE   # the same waves of fewer, wider tiles (N = 2112: 11 x 192)
    elif blockwise:
        cfg = LARGE
    else:
        cfg = _rowwise_large_tile(m, n, k)
    return dataclasses.replace(cfg, **types, **smem).resolved()


def _rowwise_large_tile(m: int, n: int, k: int) -> Sm90Config:
    """Rowwise from one wave of 128x128 tiles: the 128-wide tile, the 192-wide one or the
    256x128 one (`ROWWISE_LARGE`: fewer tiles, coarser waves), whichever has the smallest
    estimated time, waves x (the tile's columns of 128 rows x K + `TILE_FIXED_COST`); ties
    keep the earlier of those three. The 256x128 tile only from `ROWWISE_LARGE_FROM_M`."""
    def estimate(cfg):
        return _waves(cfg, m, n) * (cfg.tile_n * cfg.row_blocks * k + TILE_FIXED_COST)

    tiles = (LARGE_EARLY, LARGE_WIDE) + ((ROWWISE_LARGE,) if m >= ROWWISE_LARGE_FROM_M else ())
    return min(tiles, key=estimate)


#: Blockwise 1x128 x 128x128 from M = 129 up to this M takes its tile by waves
#: (`block_tile_by_waves`); above it the 256x128 / 128x128 / 128x176 estimate below, measured
#: at M = 4096 and the squares.
WAVES_UP_TO_M = 2048
#: The widths `block_tile_by_waves` considers: 16 and multiples of 32 up to 192 (two fp32
#: accumulators of 64 x 192 / 128 = 96 registers per thread). On the lent H200 112 and 144 ran
#: behind 96 and 160 at one wave each (1024x2112x7168: 128x144 40.3-40.8 us, 128x160 38.9;
#: bench/results/h200_2026-12-02/probeM_midM.log).
WAVE_WIDTHS = (16, 32, 64, 96, 128, 160, 192)


def block_tile_by_waves(m: int, n: int, num_sms: int = H100_SMS, dg_cluster: bool = False) -> Sm90Config:
    """DeepGEMM's tile choice for 1x128 x 128x128 block scales (its `get_best_configs`) in our
    tiles: the fewest waves of 64- or 128-row tiles `WAVE_WIDTHS` wide (SMEM scales: any
    width) or of the 256x128 tile, then the fullest last wave; equal fills prefer, as
    DeepGEMM does, the narrower of two tiles of one height or the shorter of one width, else
    the wider. The grid then takes only the SMs those waves need (DeepGEMM: less L2, a higher
    clock). Unlike DeepGEMM, one wave takes no multicast cluster (at one wave the 2x1 cluster
    ran 13-15% slower on the lent H200: 256x2112x7168 128x128 28.1 vs 32.4 us, 512x4096x7168
    30.1 vs 34.5); from two waves B is multicast over 2x1 from M = 512 where the tile rows pair
    up (``dg_cluster``: DeepGEMM's rule at any wave count). 256-deep k-tiles where the width
    divides 128 and they still get 3 stages (256x2112x7168: 64x64 17.4 vs 19.8 us)."""
    def tiles(rows, width):
        return -(-m // rows) * -(-n // width)

    best = None
    for rows in (64, 128, 256):
        for width in ((128,) if rows == 256 else WAVE_WIDTHS):
            count = tiles(rows, width)
            waves, fill = -(-count // num_sms), count % num_sms or num_sms
            if best is not None:
                b_rows, b_width, b_waves, b_fill = best
                better = waves < b_waves or (waves == b_waves and (fill > b_fill or fill == b_fill and (
                    (rows == b_rows and width < b_width) or (width == b_width and rows < b_rows)
                    or (rows != b_rows and width > b_width))))
                if not better:
                    continue
            best = (rows, width, waves, fill)
    rows, width, waves, _ = best
    if rows == 256:
        cfg = BLOCK_LARGE
    elif (rows, width) == (128, 128) and waves == 1:
        cfg = dataclasses.replace(MEDIUM, scales="block_1x128_128x128", smem_scales=True,   # the table's 1-wave tile
                                  early_wait=True)
    else:
        pairs = m >= 512 and -(-m // rows) % 2 == 0
        cfg = Sm90Config(tile_m=rows, tile_n=width, tile_k=128, consumer_wgs=rows // 64,
                         cluster_m=2 if pairs and (waves > 1 or dg_cluster) else 1, promote=1,
                         epi_n=32 if width % 32 == 0 else 16, epi_stages=4, scales="block_1x128_128x128",
                         smem_scales=True, early_wait=True)
        cfg = _deep_k_tiles(cfg)
    cluster = cfg.cluster_m * cfg.cluster_n
    sms = -(-tiles(rows, width) // waves)
    return dataclasses.replace(cfg, num_sms=min(num_sms, -(-sms // cluster) * cluster))


def _waves(cfg: Sm90Config, m: int, n: int) -> int:
    """Rounds of the persistent grid over the cluster tiles of an M x N output."""
    clusters = -(-m // (cfg.tile_m * cfg.row_blocks * cfg.cluster_m)) * -(-n // (cfg.tile_n * cfg.cluster_n))
    per_round = cfg.num_sms // (cfg.cluster_m * cfg.cluster_n)
    return -(-clusters // per_round)
