"""Config trials for the blockwise kernel (GPU; each trial checked against the fp64 reference,
then timed with do_bench medians, trials of one shape interleaved over ``--rounds`` rounds, 2 by
default): ``python bench/blockwise_probe.py [--shapes 64x2112x7168,...] [--only pick,...] [--torch]``.
The trials are the table's pick and its neighbours at small M, the wave rule's candidates at
mid M, the large-M tiles and feed variants above (`trials`). Prints one line per shape and
trial: time, TFLOP/s, the ratio to DeepGEMM timed beside them (and with ``--torch`` to
torch's blockwise)."""
import argparse
import dataclasses
import statistics

import cutlass
import cutlass.cute as cute
import torch

from fastdispatch.kernels.scaled_mm import sm90
from fastdispatch.kernels.scaled_mm.sm90.table import block_tile_by_waves
from fastdispatch.kernels.scaled_mm.bench_blockwise import (DSV3_NK, _median_us, _rel, block_inputs, deepgemm_for,
                                                             dequantized_product)

RECIPE = "block_1x128_128x128"


def trials(m, n, k):
    """(name, config) pairs: the table's pick and its neighbours, each also as ``<name>_late``
    (``late_scale_loads``), ``<name>_smem`` (``smem_scales``; ``_smem_tma`` with ``scale_a_tma``),
    ``<name>_evn`` (EVICT_NORMAL
    TMA loads) and the timing-only twins: ``<name>_noscale`` (constant scales), with SMEM
    scales ``<name>_nofeed`` / ``<name>_ones`` (a loader that copies nothing)."""
    out = _trials(m, n, k)
    for name, cfg in list(out.items()):
        if not cfg.late_scale_loads and not cfg.smem_scales:   # (the two do not combine)
            out[name + "_late"] = dataclasses.replace(cfg, late_scale_loads=True)
        if not cfg.swap_ab:
            out[name + "_smem"] = dataclasses.replace(cfg, smem_scales=True, stages=None).resolved()
            if m % 4 == 0:   # (A's scales by TMA: torch's scale layout with M % 4 == 0)
                out[name + "_smem_tma"] = dataclasses.replace(out[name + "_smem"], scale_a_tma=True)
    for name, cfg in list(out.items()):
        out[name + "_evn"] = cfg
        if not cfg.smem_scales:   # (its scales come through the loader: _nofeed / _ones)
            out[name + "_noscale"] = cfg
        if cfg.smem_scales and not cfg.scale_a_tma:   # (the copy-free loader arrives as the copies do)
            out[name + "_nofeed"] = cfg
            out[name + "_ones"] = cfg
        if cfg.scale_a_tma:   # which of the TMA feed's two copies costs what (_nofeed's split)
            for drop in FEED_PARTS:
                out[f"{name}_no{drop}"] = cfg
    return out


def compile_noscale(cfg):
    """A measurement, not a kernel: ``cfg`` (scales through the consumers' own loads) compiled
    with every block-scale load replaced by the constant 1.0 (wrong results), so its time
    minus the real one is what loading the scales costs."""
    from fastdispatch.kernels.scaled_mm.sm90 import block_scales

    real = block_scales.load_raw

    def constant_scales(cfg, ctx, j, dst):
        for i in range(cute.size(dst)):
            dst[i] = cutlass.Float32(1.0)

    block_scales.load_raw = constant_scales
    try:
        return sm90.raw_callable(sm90.compile_sm90(cfg, has_bias=False))
    finally:
        block_scales.load_raw = real


def compile_evict_normal(cfg):
    """``cfg`` with its TMA loads carrying CUTLASS's EVICT_NORMAL L2 policy (DeepGEMM's hint)
    instead of the DSL's 0 (``_schedule.TMA_LOAD_POLICY``)."""
    from fastdispatch.kernels.scaled_mm import _schedule

    _schedule.TMA_LOAD_POLICY = 0x1000000000000000
    try:
        return sm90.raw_callable(sm90.compile_sm90(cfg, has_bias=False))
    finally:
        _schedule.TMA_LOAD_POLICY = None


def compile_nofeed(cfg, ones=False):
    """A measurement, not a kernel: ``cfg`` (``smem_scales``) compiled with a scale loader
    that marks each slot of the scale ring full without copying anything (the slots keep
    stale values: wrong results), so its time minus the real one is what waiting for the
    scale copies costs. Stale slots may hold zeros, and zero factors draw less power at the
    700 W cap; with ``ones`` the loader first writes 1.0 into every slot (``_ones``)."""
    import cutlass.pipeline as pipeline
    from fastdispatch.kernels.scaled_mm.sm90 import kernel
    from fastdispatch.kernels.scaled_mm.sm90.smem_budget import scale_ring_slots

    real = kernel.ScaledMmSm90._scale_loader

    @cute.jit
    def arrive_only(self, scale_pipe, sS, mRowScale, mColScale, tiles_m, tiles_n, num_tiles, cluster_id,
                    num_clusters, cluster_coord, k_begin, k_count, lane, scale_tma=None):
        state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer,
                                             scale_ring_slots(self.cfg, self.cfg.stages))
        if cutlass.const_expr(ones):   # (ordered before the consumers' reads by the arrivals)
            for i in cutlass.range_constexpr(cute.size(sS) // 32):
                sS[lane + 32 * i] = cutlass.Float32(1.0)
        tile = cluster_id
        while tile < num_tiles:
            for _ in cutlass.range(k_count, unroll=1):
                scale_pipe.sync_object_empty.wait(state.index, state.phase)
                scale_pipe.producer_commit(state)
                state.advance()
            tile += num_clusters

    kernel.ScaledMmSm90._scale_loader = arrive_only
    try:
        return sm90.raw_callable(sm90.compile_sm90(cfg, has_bias=False))
    finally:
        kernel.ScaledMmSm90._scale_loader = real


#: The ``scale_a_tma`` loader's parts a timing twin may drop: A's row box, lane 0's cp.async of
#: B's block values, or both (``<name>_norows`` / ``_noblock`` / ``_nocopy``).
FEED_PARTS = ("rows", "block", "copy")


def compile_feed_part(cfg, drop):
    """A measurement, not a kernel: ``cfg`` (``scale_a_tma``) compiled with a scale loader that
    skips part of each slot's feed (``drop`` in `FEED_PARTS`; its arrivals stay, so slots go
    full at once and keep stale values: wrong results). Its time minus the real one is what
    that part costs; ``copy`` is `compile_nofeed`'s twin for the TMA feed."""
    from fastdispatch.kernels.scaled_mm.sm90 import kernel
    from fastdispatch.kernels.scaled_mm.sm90.producer import _one
    from fastdispatch.kernels.scaled_mm.sm90.smem_budget import scale_b_blocks, scale_ring_slots, scale_slot_rows
    from fastdispatch.kernels.scaled_mm.sm90.smem_scales import tma_views
    from cutlass.cute.nvgpu import cpasync
    import cutlass.pipeline as pipeline

    rows_too, block_too = drop == "block", drop == "rows"   # the parts kept

    @cute.jit
    def partial_feed(self, scale_pipe, sS, mColScale, tiles_m, tiles_n, num_tiles, cluster_id, num_clusters,
                     cluster_coord, k_begin, k_count, lane, scale_tma):
        cfg = self.cfg
        halves = cfg.tile_k // 128
        atom_s, tSgS, tSsS = scale_tma
        _, block_values = tma_views(cfg, sS)
        atom = cute.make_copy_atom(cpasync.CopyG2SOp(), cutlass.Float32, num_bits_per_copy=32)
        kb_last = mColScale.shape[0] - 1
        state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, scale_ring_slots(cfg, cfg.stages))
        tile = cluster_id
        while tile < num_tiles:
            tm, tn = self._tile_coords(tile, tiles_m, tiles_n, cluster_coord)
            nb = tn * cfg.tile_n // 128
            for kt in cutlass.range(k_count, unroll=1):
                scale_pipe.sync_object_empty.wait(state.index, state.phase)
                full = scale_pipe.sync_object_full.get_barrier(state.index)
                with cute.arch.elect_one():
                    cute.arch.mbarrier_arrive_and_expect_tx(full, scale_slot_rows(cfg) * 4 * halves if rows_too else 0)
                if cutlass.const_expr(rows_too):
                    for h in cutlass.range_constexpr(halves):
                        cute.copy(atom_s, tSgS[(None, tm, (k_begin + kt) * halves + h)],
                                  tSsS[(None, h + halves * state.index)], tma_bar_ptr=full)
                if lane == 0:
                    if cutlass.const_expr(block_too):
                        for h in cutlass.range_constexpr(halves):
                            kb = cutlass.min((k_begin + kt) * halves + h, kb_last)
                            for b in cutlass.range_constexpr(scale_b_blocks(cfg)):
                                cute.copy(atom, _one(mColScale, (kb, self._block_of(nb, b, mColScale))),
                                          _one(block_values, (b, h, state.index)))
                    scale_pipe.producer_commit(state)
                state.advance()
            tile += num_clusters
        cute.arch.cp_async_commit_group()
        cute.arch.cp_async_wait_group(0)

    real = kernel.ScaledMmSm90._scale_loader_tma
    kernel.ScaledMmSm90._scale_loader_tma = partial_feed
    try:
        return sm90.raw_callable(sm90.compile_sm90(cfg, has_bias=False))
    finally:
        kernel.ScaledMmSm90._scale_loader_tma = real


def _trials(m, n, k):
    # The table's pick as the API runs it for torch's scale_a layout (A's scales by TMA above
    # M = 128 where M % 4 == 0), and its two scale feeds: ``copies`` (every value a cp.async)
    # and ``tma`` (``scale_a_tma``); one of them is the pick.
    copies = sm90.default_config(m, n, k, scales=RECIPE)
    out = {"pick": sm90.with_scale_a_layout(copies, torch.empty(-(-k // 128), m).t()), "copies": copies}
    if copies.smem_scales and m % 4 == 0:
        out["tma"] = dataclasses.replace(copies, scale_a_tma=True)
    pick = out["pick"]
    if pick.smem_scales and not pick.overlap_promotion:
        # The K loop in passes over the ring, each k-tile's stage known at trace time, or not
        out["dynamic" if pick.static_stages else "static"] = dataclasses.replace(
            pick, static_stages=not pick.static_stages)
        if not pick.static_stages:   # the static loop testing each next stage before the promotion
            out["static_early"] = dataclasses.replace(pick, static_stages=True, early_wait=True)
    # The pick with each next stage tested before the promotion (``early_wait``), or without
    if pick.promote == 1 and not pick.overlap_promotion:
        out["plain_wait" if pick.early_wait else "early"] = dataclasses.replace(pick, early_wait=not pick.early_wait)
    if m > 128:
        if pick.cluster_n > 1:   # DeepGEMM's A feed: the first CTA along N multicasts all of it
            out["aleader"] = dataclasses.replace(pick, a_from_leader=True)
        if pick.row_blocks > 1:   # the second consumer warpgroup a k-tile behind the first
            out["stagger"] = dataclasses.replace(pick, stagger_wgs=True)
        for name, change in (("overlap0", dict(overlap_promotion=0)), ("c1x2", dict(cluster_m=1, cluster_n=2)),
                             ("c2x2", dict(cluster_n=2)), ("group16", dict(group_m=16))):
            out[name] = dataclasses.replace(pick, **change, stages=None).resolved()
        # Tiles over several of B's 128-column scale blocks (SMEM scales only): 128x176 (N = 2112:
        # 12 x 32 tiles = 2.9 waves, where 128x128 makes 4.1), 128x192, 256x96 (DeepGEMM's
        # 256x88 needs an 8-column epilogue); A's scales fed as the pick feeds them.
        span = dataclasses.replace(sm90.LARGE, scales=RECIPE, overlap_promotion=0, smem_scales=True,
                                   scale_a_tma=pick.scale_a_tma, stages=None)
        for name, change in (("span176", dict(tile_n=176, epi_n=16, epi_stages=4)),
                             ("span176_e11", dict(tile_n=176, epi_n=16, epi_stages=11)),
                             ("span176_c1x2", dict(tile_n=176, epi_n=16, epi_stages=4, cluster_m=1, cluster_n=2)),
                             ("span176_sm128", dict(tile_n=176, epi_n=16, epi_stages=4, num_sms=128)),
                             ("span192", dict(tile_n=192, epi_n=64, epi_stages=3))):
            out[name] = dataclasses.replace(span, **change).resolved()
        if (pick.tile_m, pick.tile_n) == (128, 176):
            # The span pick 192 wide (`sm90.BLOCK_SPAN_WIDE`; N = 2112: 11 x 32 tiles, still 3
            # waves, 2 traced classes instead of 8), A's scales fed as the pick feeds them, in
            # static passes or the dynamic loop.
            wide = dataclasses.replace(sm90.BLOCK_SPAN_WIDE, scale_a_tma=pick.scale_a_tma).resolved()
            out["pick192_static"] = wide
            out["pick192"] = dataclasses.replace(wide, static_stages=False)
        # The table's other large-M picks, as the pick feeds A's scales (where it is the span tile).
        out["large"] = dataclasses.replace(sm90.LARGE, scales=RECIPE, smem_scales=True, scale_a_tma=pick.scale_a_tma,
                                           stages=None).resolved()
        out["block_large"] = dataclasses.replace(sm90.BLOCK_LARGE, scale_a_tma=pick.scale_a_tma, stages=None).resolved()
        # Mid M (one or two waves): 128-row tiles of every width the SMEM scales allow up to the
        # registers' 192 (DeepGEMM picks its width by waves, then the last wave's fill), and
        # 64-row ones (one consumer warpgroup).
        if m <= 2048:
            for width in (96, 112, 128, 144, 160, 176, 192):
                epi_n = 32 if width % 32 == 0 else 16
                out[f"w{width}"] = dataclasses.replace(span, tile_n=width, epi_n=epi_n, epi_stages=4).resolved()
            for width in (128, 176):
                epi_n = 32 if width % 32 == 0 else 16
                out[f"m64_w{width}"] = dataclasses.replace(span, tile_m=64, consumer_wgs=1, tile_n=width, epi_n=epi_n,
                                                           epi_stages=4).resolved()
        # DeepGEMM's choice by waves in our tiles (`sm90.table.block_tile_by_waves`, the pick up
        # to M = 2048), with DeepGEMM's multicast rule, and on all SMs.
        waves = dataclasses.replace(block_tile_by_waves(m, n), scale_a_tma=pick.scale_a_tma)
        out["waves"] = waves.resolved()
        out["waves_dgc"] = dataclasses.replace(block_tile_by_waves(m, n, dg_cluster=True),
                                               scale_a_tma=pick.scale_a_tma, stages=None).resolved()
        out["waves_allsms"] = dataclasses.replace(waves, num_sms=sm90.H100_SMS).resolved()
        out["rows2_96"] = dataclasses.replace(sm90.BLOCK_LARGE, tile_n=96, epi_n=32, epi_stages=6,
                                              scale_a_tma=pick.scale_a_tma, stages=None).resolved()
        # DeepGEMM's 256x88 at N = 2112 (16 x 24 tiles: 3 waves on 128 SMs), through the 8-column
        # epilogue, the whole tile staged (22 buffers) or half of it.
        for name, stages in (("rows2_88", 22), ("rows2_88_e11", 11)):
            out[name] = dataclasses.replace(sm90.BLOCK_LARGE, tile_n=88, epi_n=8, epi_stages=stages,
                                            scale_a_tma=pick.scale_a_tma, stages=None).resolved()
        # ... or DeepGEMM's way: unswizzled 88-column buffers, one TMA store per row block.
        out["rows2_88_w"] = dataclasses.replace(out["rows2_88"], epi_n=88, epi_stages=2)
        # ... with DeepGEMM's A feed (the leader loads all of A and multicasts it), on all SMs,
        # B multicast over 2x1 instead of A over 1x2, the dynamic K loop.
        for name, change in (("al", dict(a_from_leader=True)), ("sm132", dict(num_sms=sm90.H100_SMS)),
                             ("c2x1", dict(cluster_m=2, cluster_n=1)), ("dyn", dict(static_stages=False))):
            out["rows2_88_w_" + name] = dataclasses.replace(out["rows2_88_w"], **change, stages=None).resolved()
        # DeepGEMM's 256x128 tiles (two 128-row blocks per k-stage), A multicast over 1x2 or not;
        # its epilogue (the whole tile staged, one barrier: 3 stages), its 128-SM grid, 64-wide
        # tiles (N = 2112: 33 x 16 tiles = 4 waves, where 128-wide tiles make 2.06)
        rows2 = sm90.BLOCK_WAVES
        for name, change in (("rows2", {}), ("rows2_c1", dict(cluster_n=1)), ("rows2_e64", dict(epi_n=64)),
                             ("rows2_wt", dict(epi_n=64, epi_stages=4)),
                             ("rows2_wt_c1", dict(epi_n=64, epi_stages=4, cluster_n=1)),
                             ("rows2_wt_sm128", dict(epi_n=64, epi_stages=4, num_sms=128)),
                             ("rows2_wt_g16", dict(epi_n=64, epi_stages=4, group_m=16)),
                             ("rows2_n64", dict(tile_n=64, epi_n=64, epi_stages=2))):
            out[name] = dataclasses.replace(rows2, stages=None, **change).resolved()
        return out
    for tile_n in (16, 32, 64, 128):
        if tile_n != pick.tile_n:
            out[f"tile_n{tile_n}"] = dataclasses.replace(
                pick, tile_n=tile_n, epi_n=min(tile_n, 32), epi_stages=max(1, tile_n // 32), stages=None).resolved()
    # DeepGEMM's widths that 16 does not divide (N = 7168 / 56 = 128 tiles), through the 8-column
    # epilogue with the whole tile staged, 128-deep k-tiles and (spanning two scale blocks) 256.
    for tile_n in (56, 88):
        narrow = dataclasses.replace(pick, tile_n=tile_n, epi_n=8, epi_stages=tile_n // 8, tile_k=128, stages=None)
        out[f"tile_n{tile_n}"] = narrow.resolved()
        out[f"tile_n{tile_n}_k256"] = dataclasses.replace(narrow, tile_k=256).resolved()
        for name in (f"tile_n{tile_n}", f"tile_n{tile_n}_k256"):   # one unswizzled whole-width buffer
            out[name + "_w"] = dataclasses.replace(out[name], epi_n=tile_n, epi_stages=1)
    if pick.tile_k == 256:   # the 128-deep k-tiles it replaced (one promotion each)
        out["k128"] = dataclasses.replace(pick, tile_k=128, stages=None).resolved()
    if -(-n // pick.tile_n) % 2 == 0:
        out["cluster_n2"] = dataclasses.replace(pick, cluster_n=2).resolved()
    swap = dataclasses.replace(sm90._small_m_config(m), tile_k=128, scales=RECIPE, stages=None).resolved()
    out["swap"] = swap
    # DeepGEMM's choice by waves in our tiles (the mid-M rule), 64-row tiles at M = 128 (two
    # row tiles: DeepGEMM's own pick there, less of A and B per tile than 128 rows) with the
    # width the small-M cost would take for them, and DeepGEMM's 112-wide tiles (N = 7168: 64
    # tiles per row, 128 in all).
    out["waves"] = dataclasses.replace(block_tile_by_waves(m, n), stages=None).resolved()
    out["waves_pdl"] = dataclasses.replace(out["waves"], pdl=True)
    if m > 64:
        rows64 = dataclasses.replace(pick, tile_m=64, consumer_wgs=1)
        for width in (32, 64, 128):
            out[f"rows64_w{width}"] = dataclasses.replace(rows64, tile_n=width, epi_n=min(width, 32),
                                                          epi_stages=max(1, width // 32), stages=None).resolved()
    for rows in (64, 128):
        out[f"m{rows}_w112"] = sm90.Sm90Config(tile_m=rows, tile_n=112, tile_k=128, consumer_wgs=rows // 64,
                                               promote=1, epi_n=16, epi_stages=4, scales=RECIPE, smem_scales=True,
                                               early_wait=True, pdl=True).resolved()
    out["m128_w96"] = dataclasses.replace(out["m128_w112"], tile_n=96, epi_n=32, stages=None).resolved()
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default=",".join(f"{m}x{n}x{k}" for m in (64, 128) for n, k in DSV3_NK))
    parser.add_argument("--only", default="", help="comma-separated trial names to run (default: all)")
    parser.add_argument("--unit-scales", action="store_true",
                        help="every scale 1.0 (same layouts), for every trial and DeepGEMM: what the values cost "
                             "(power at the cap) apart from moving them")
    parser.add_argument("--torch", action="store_true", help="time torch._scaled_mm's blockwise beside the trials")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per shape (medians over them)")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    deep_gemm, reason = deepgemm_for(shapes)
    dg = deep_gemm is not None
    print(f"DeepGEMM: {'timed beside the trials' if dg else 'skipped (' + reason + ')'}", flush=True)
    fns = {}
    for m, n, k in shapes:
        _, _, a, sa, bt, sb, ref = block_inputs(m, n, k)
        if args.unit_scales:
            sa, sb = torch.ones_like(sa), torch.ones_like(sb)
            ref = dequantized_product(a, sa, bt, sb)
        out = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        calls = {}
        for name, cfg in trials(m, n, k).items():
            if only and name not in only:
                continue
            feed_parts = tuple("no" + part for part in FEED_PARTS)
            trick = next((t for t in ("noscale", "nofeed", "ones", "evn", *feed_parts) if name.endswith("_" + t)),
                         None)
            noscale = trick in ("noscale", "nofeed", "ones", *feed_parts)
            try:
                if trick:   # its own binary: the cache holds the real one under the same config
                    if (cfg, trick) not in fns:
                        fns[(cfg, trick)] = (compile_noscale(cfg) if trick == "noscale"
                                             else compile_evict_normal(cfg) if trick == "evn"
                                             else compile_feed_part(cfg, trick[2:]) if trick in feed_parts
                                             else compile_nofeed(cfg, ones=trick == "ones"))
                    fn = fns[(cfg, trick)]
                else:
                    if cfg not in fns:
                        fns[cfg] = sm90.raw_callable(sm90.compile_sm90(cfg, has_bias=False))
                    fn = fns[cfg]
                out.fill_(float("nan"))
                fn(a, bt.t(), sa, sb.t(), out)
                err = 0.0 if noscale else _rel(out, ref)
                if not err < 2e-3:
                    print(f"{m}x{n}x{k} {name}: WRONG rel_err {err:.2e}", flush=True)
                    continue
                calls[name] = (lambda fn=fn: fn(a, bt.t(), sa, sb.t(), out), cfg)
            except Exception as exc:
                print(f"{m}x{n}x{k} {name}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
        if dg:
            sa_dg = deep_gemm.get_col_major_tma_aligned_tensor(sa)
            calls["deepgemm"] = (lambda: deep_gemm.gemm_fp8_fp8_bf16_nt((a, sa_dg), (bt, sb), out), None)
        if args.torch:   # torch's blockwise (cuBLAS), what fastdispatch.scaled_mm routes to otherwise
            calls["torch"] = (lambda: torch._scaled_mm(a, bt.t(), scale_a=sa, scale_b=sb.t(), out_dtype=torch.bfloat16),
                              None)
        times = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, (call, _) in calls.items():
                times[name].append(_median_us(call))
        dg_us = statistics.median(times["deepgemm"]) if "deepgemm" in times else None
        for name, (_, cfg) in calls.items():
            us = statistics.median(times[name])
            vs = f" {dg_us / us:5.3f}x DG" if dg_us else ""
            if "torch" in times:
                vs += f" {statistics.median(times['torch']) / us:5.3f}x torch"
            what = (f"{cfg.tile_m * cfg.row_blocks}x{cfg.tile_n} swap={cfg.swap_ab} c={cfg.cluster_m}x{cfg.cluster_n} "
                    f"st={cfg.stages} epi={cfg.epi_n}x{cfg.epi_stages} sms={cfg.num_sms}") if cfg else name
            print(f"{m}x{n}x{k} {name:<14} {us:7.1f} us {2 * m * n * k / us / 1e6:6.0f} TFLOP/s{vs}  {what}", flush=True)


if __name__ == "__main__":
    main()
