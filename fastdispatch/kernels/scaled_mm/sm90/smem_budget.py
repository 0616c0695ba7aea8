"""The SMEM one CTA of the sm_90a kernel uses for a config (per key, plain Python: no tracing):
the A/B ring's stages, the scale ring's slots (``smem_scales``), the epilogue's staging buffers
and the split-K reduction slots, and from them the deepest ring that fits (`max_stages`, which
`Sm90Config.resolved` fills in) and the total (`smem_bytes`). The kernel's layouts are sized
by the same functions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # (config imports this module: the type only for annotations)
    from fastdispatch.kernels.scaled_mm.sm90.config import Sm90Config

#: Dynamic SMEM one CTA may use on H100 (227 KB).
SMEM_CAPACITY = 232448
#: Reserved for the mbarriers and alignment padding.
SMEM_RESERVED = 1024


def epi_buffers(cfg: Sm90Config) -> int:
    """The epilogue's SMEM buffers: ``epi_stages``, one set per consumer warpgroup with
    ``pingpong`` (their epilogues run at different times, each through its own)."""
    return cfg.epi_stages * (cfg.consumer_wgs if cfg.pingpong else 1)


def unswizzled_epilogue(cfg: Sm90Config) -> bool:
    """Whether the epilogue's SMEM buffers are plain row-major (no swizzle): 8-column subtiles
    and whole-width ones of a width no swizzle atom fits (56, 88: 112- / 176-byte rows, an odd
    number of 16-byte units, so the 8 rows of a stmatrix matrix still fall in 8 distinct
    16-byte bank groups; an even number would conflict)."""
    return cfg.epi_n not in (16, 32, 64)


def scale_slot_rows(cfg: Sm90Config) -> int:
    """``smem_scales``: row values of A's scale per 128-deep scale block of a k-tile's slot
    (the CTA tile's rows); the block value of B's follows them."""
    return cfg.tile_m * cfg.row_blocks


def scale_b_blocks(cfg: Sm90Config) -> int:
    """``smem_scales``: the most 128-column scale blocks of B one tile's columns touch. 1 where
    tile_n divides 128; else 2 or 3 (tile n starts at column n * tile_n, a multiple of
    gcd(tile_n, 128), so it begins at most 128 - gcd columns into a block): 2 for 88 or 192
    columns, 3 for 176. DeepGEMM's tiles that fill the SMs (256x88 at N = 2112) need it."""
    step = math.gcd(cfg.tile_n, 128)
    return (cfg.tile_n + 128 - step - 1) // 128 + 1


def scale_slot_floats(cfg: Sm90Config) -> int:
    """``smem_scales``: floats per 128-deep scale block of a slot: the rows, the tile's
    `scale_b_blocks` block values (at most 3), padding to 16 bytes (``scale_a_tma`` keeps the
    rows and the block values in two regions: `smem_scales`)."""
    return scale_slot_rows(cfg) + 4


def scale_ring_slots(cfg: Sm90Config, stages: int) -> int:
    """``smem_scales``: slots of the scale ring, a power of two (cheap ring arithmetic) of at
    least twice the A/B stages: the loader copies a k-tile's values up to that many k-tiles
    before they are read, where a slot per A/B stage gave its copies one k-tile less than the
    A/B ring's depth to land (on the lent H200 the two ran within the runs' spread of each
    other: bench/results/blockwise_sweep_2026-12-01.txt, trial 9)."""
    return 1 << (2 * stages - 1).bit_length()


def _stage_bytes(cfg: Sm90Config) -> int:
    return (cfg.tile_m * cfg.row_blocks + cfg.tile_n) * cfg.tile_k  # 1 byte per e4m3 element


def _scale_ring_bytes(cfg: Sm90Config, stages: int) -> int:
    if not cfg.smem_scales:
        return 0
    return scale_ring_slots(cfg, stages) * scale_slot_floats(cfg) * (cfg.tile_k // 128) * 4  # fp32 values


def _epilogue_bytes(cfg: Sm90Config) -> int:
    return 0 if cfg.swap_ab else epi_buffers(cfg) * cfg.tile_m * cfg.epi_n * 2  # bf16 staging


def _reduce_bytes(cfg: Sm90Config) -> int:
    # One fp32 slot per split-K partial that is not the leader's own, in the leader CTA
    # (every CTA allocates the same layout: distributed SMEM addresses are the local ones).
    return (cfg.split_k - 1) * cfg.tile_m * cfg.tile_n * 4


def max_stages(config: Sm90Config) -> int:
    """Deepest A/B ring that fits the SMEM budget (232448 B per CTA on H100, minus the epilogue
    staging, 1 KB for barriers and with ``smem_scales`` the scale ring, whose depth follows the
    A/B ring's): 4 at 128x256x128, 8 at 128x128x128."""
    free = SMEM_CAPACITY - SMEM_RESERVED - _epilogue_bytes(config) - _reduce_bytes(config)
    stages = free // _stage_bytes(config)
    while stages > 2 and stages * _stage_bytes(config) + _scale_ring_bytes(config, stages) > free:
        stages -= 1
    return stages


def smem_bytes(config: Sm90Config) -> int:
    """SMEM one CTA uses for ``config`` (ring + epilogue staging + reserved barrier space)."""
    cfg = config.resolved()
    return (cfg.stages * _stage_bytes(cfg) + _scale_ring_bytes(cfg, cfg.stages) + _epilogue_bytes(cfg)
            + _reduce_bytes(cfg) + SMEM_RESERVED)
