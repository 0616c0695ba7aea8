"""The sm_100a kernel's compile-time configuration (per key, plain Python: no tracing):
`Sm100Config` (a hashable cache key) and its checks, the SMEM budget that sizes the A/B ring,
and `default_config`, the pick per problem shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fastdispatch.kernels.scaled_mm._compile import resolve_stages

ARCH = "sm_100a"
#: Dynamic SMEM one CTA may use on B200 (228 KB per SM minus the 1 KB the driver keeps).
SMEM_CAPACITY = 232448
#: Reserved for mbarriers, the TMEM address slot and alignment padding.
SMEM_RESERVED = 1024
#: Streaming multiprocessors of a B200 (sizes the persistent grid).
B200_SMS = 148


@dataclass(frozen=True)
class Sm100Config:
    """Compile-time configuration of the sm_100a scaled_mm kernel (hashable: a cache key).

    - ``tile_m, tile_n, tile_k``: the 2-CTA MMA tile of one CTA pair; each CTA owns
      ``tile_m // 2`` rows of it and half of B's ``tile_n`` rows. ``tile_m`` must be 256
      (each CTA's 128 accumulator rows map onto the 128 TMEM lanes), ``tile_n`` a multiple
      of 32 in [32, 256], ``tile_k`` a multiple of 32 (one fp8 MMA instruction is K=32).
    - ``cluster_m, cluster_n``: cluster shape in CTAs; ``cluster_m`` even (CTA pairs
      along M), ``cluster_n > 1`` multicasts A across the cluster's N direction.
    - ``ab_stages``: A/B SMEM ring depth; ``None`` = the most that fit (`max_ab_stages`).
    - ``acc_stages``: TMEM accumulator buffers (``acc_stages * tile_n <= 512`` columns).
    - ``epi_n``: epilogue subtile width (columns per tcgen05.ld / TMA store).
    - ``c_stages``: SMEM buffers of the TMA-store epilogue.
    - ``group_m``: tile-order group height (in cluster tiles) for L2 reuse of B.
    - ``num_sms``: SMs of the target part; the grid holds ``num_sms // cluster size`` clusters.
    """

    tile_m: int = 256
    tile_n: int = 128
    tile_k: int = 128
    cluster_m: int = 2
    cluster_n: int = 1
    ab_stages: Optional[int] = None
    acc_stages: int = 2
    epi_n: int = 32
    c_stages: int = 2
    group_m: int = 8
    num_sms: int = B200_SMS

    def __post_init__(self):
        errs = []
        if self.tile_m != 256:
            errs.append("tile_m must be 256 (2-CTA MMA, 128 TMEM lanes per CTA)")
        if not (32 <= self.tile_n <= 256 and self.tile_n % 32 == 0):
            errs.append("tile_n must be a multiple of 32 in [32, 256]")
        if self.tile_k < 32 or self.tile_k % 32:
            errs.append("tile_k must be a positive multiple of 32")
        if self.cluster_m < 2 or self.cluster_m % 2 or self.cluster_m & (self.cluster_m - 1):
            errs.append("cluster_m must be a power of two >= 2")
        if self.cluster_n < 1 or self.cluster_n & (self.cluster_n - 1):
            errs.append("cluster_n must be a power of two")
        if self.cluster_m * self.cluster_n > 16:
            errs.append("cluster size must be <= 16")
        if self.acc_stages < 1 or self.acc_stages * self.tile_n > 512:
            errs.append("acc_stages * tile_n must be in [tile_n, 512] TMEM columns")
        if self.epi_n not in (16, 32, 64) or self.tile_n % self.epi_n:
            errs.append("epi_n must be 16, 32 or 64 and divide tile_n")
        if self.c_stages < 1 or self.group_m < 1 or self.num_sms < self.cluster_m * self.cluster_n:
            errs.append("c_stages, group_m >= 1 and num_sms >= cluster size")
        if self.ab_stages is not None and self.ab_stages < 2:
            errs.append("ab_stages must be >= 2")
        if errs:
            raise ValueError(f"invalid Sm100Config {self}: " + "; ".join(errs))

    @property
    def cta_tile_m(self) -> int:
        """Accumulator rows owned by one CTA of the pair."""
        return self.tile_m // 2

    def resolved(self) -> "Sm100Config":
        """This config with ``ab_stages`` filled in (and checked against the SMEM budget)."""
        return resolve_stages(self, "ab_stages", max_ab_stages(self))


def _stage_bytes(cfg: Sm100Config) -> int:
    # Per CTA: its half of A's tile_m rows and its half of B's tile_n rows (2-CTA MMA splits
    # B between the pair), 1 byte per e4m3 element.
    return (cfg.tile_m // 2) * cfg.tile_k + (cfg.tile_n // 2) * cfg.tile_k


def _epilogue_bytes(cfg: Sm100Config) -> int:
    return cfg.c_stages * cfg.cta_tile_m * cfg.epi_n * 2  # bf16 staging for the TMA store


def max_ab_stages(config: Sm100Config) -> int:
    """Deepest A/B ring that fits the SMEM budget (232448 B per CTA on B200, minus the
    epilogue staging and 1 KB for barriers): 8 for the default 256x128x128 tile.
    The kernel re-derives the stage size from its SMEM layouts and checks it matches."""
    free = SMEM_CAPACITY - SMEM_RESERVED - _epilogue_bytes(config)
    return free // _stage_bytes(config)


def smem_bytes(config: Sm100Config) -> int:
    """SMEM one CTA uses for ``config`` (ring + epilogue staging + reserved barrier space)."""
    cfg = config.resolved()
    return cfg.ab_stages * _stage_bytes(cfg) + _epilogue_bytes(cfg) + SMEM_RESERVED


def default_config(m: int, n: int, k: int) -> Sm100Config:
    """The config for an M x N x K problem: the seed's 256x128x128, cluster (2, 1), deepest
    ring. One tile shape serves every size for now (small-M specializations would go here)."""
    del m, n, k
    return Sm100Config().resolved()

