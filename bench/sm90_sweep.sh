#!/usr/bin/env bash
# Config sweep of the sm90 scaled_mm kernel on the lent H100 (not a test): candidate configs
# per shape group beside the shipped default and torch._scaled_mm (clean-flushed L2 timing),
# then correctness of the candidates. Usage on the GPU machine (after building the extension):
#   bash bench/sm90_sweep.sh [small|m128|large|check|kcheck|ksplit|latency|tilek|wide|widex|m128split|widecheck|overlap|kfixed|medium|raster|energy]...
set -uo pipefail
export PYTHONUNBUFFERED=1
probe() { timeout 300 python3 bench/sm90_probe.py "$@" || echo "PROBE EXIT $?"; }
# Split-K candidates (split_k: CTAs of a cluster along K). kcheck checks each in its own
# process (a hang costs one timeout) and keeps those that pass for ksplit. (An earlier
# candidate, consumer warpgroups splitting K inside one CTA, measured no gain and was removed.)
KS_ALL=${KS_ALL:-"small_m16=split_k:1 small_m16=split_k:2,tile_k:128 small_m32=split_k:2 small_m64=split_k:2"}
KS=()
NS="tile_m:64,consumer_wgs:1,epi_n:32"   # non-swapped, one consumer warpgroup, narrow N tiles
W2S="tile_m:128,consumer_wgs:2,split_k:2"  # swap-AB, 128-row tiles over two warpgroups, split-K 2
M128S="small_m128=$W2S"
# Fifth session: promotions overlapped with WGMMAs (groups of k-tiles), whole-tile epilogue
# staging, 176-wide tiles; measured against the base configs of the time (large = plain 128x128
# promote=1, large_wide = 128x192 with 5 stages), which these results then replaced.
OVERLAP_ALL=${OVERLAP_ALL:-"large=overlap_promotion:2 large=overlap_promotion:4 large=overlap_promotion:8 large=overlap_promotion:4,epi_stages:4 large=overlap_promotion:4,cluster_m:1 large_wide=epi_stages:6 large=tile_n:176,epi_n:16"}
LARGE_SHAPES="4096,4096,4096;8192,8192,8192;16384,8192,8192"
# Check every candidate config in its own process, all at once (compiles are CPU-bound), then
# time those that passed against the defaults and cuBLAS: check_then_time SHAPES CONFIG...
check_then_time() {
  local shapes=$1; shift
  local ok=() i=0 c
  for c in "$@"; do
    timeout 200 python3 bench/sm90_probe.py --check-extra --no-time --config "$c" > "/tmp/check.$i.log" 2>&1 &
    i=$((i + 1))
  done
  wait; i=0
  for c in "$@"; do
    if grep -q "correctness: all OK" "/tmp/check.$i.log"; then ok+=(--config "$c")
    else echo "CHECK FAILED $c"; grep -h "^FAIL" "/tmp/check.$i.log" | head -3; tail -3 "/tmp/check.$i.log"; fi
    i=$((i + 1))
  done
  [ ${#ok[@]} -gt 0 ] && probe --no-check --shapes "$shapes" "${ok[@]}"
}
steps=${*:-"small m128 large check"}
for step in $steps; do
  echo "=== sweep $step"
  case $step in
    small) probe --no-check --shapes "1,4096,4096;1,8192,8192;16,8192,8192" \
             --config "small_m16=promote:0" --config "medium=$NS,tile_n:32" --config "medium=$NS,tile_n:64" ;;
    m128) probe --no-check --shapes "128,8192,8192" \
             --config "small_m128=promote:0" --config "small_m128=cluster_m:2" --config "small_m128=promote:2" ;;
    large) probe --no-check --shapes "4096,4096,4096;8192,8192,8192;16384,8192,8192" \
             --config "large=promote:2" --config "large=promote:4" --config "medium=promote:2" ;;
    kcheck) for c in $KS_ALL; do
              if timeout 120 python3 bench/sm90_probe.py --check-extra --no-time --config "$c"; then KS+=(--config "$c")
              else echo "KCHECK FAILED $c"; fi
            done ;;
    ksplit) [ ${#KS[@]} -gt 0 ] || KS=($(for c in $KS_ALL; do echo --config "$c"; done))
            probe --no-check --shapes "1,4096,4096;16,4096,4096;1,8192,8192;16,8192,8192;128,8192,8192;128,4096,4096" "${KS[@]}" ;;
    latency) probe --no-check --shapes "1,64,128;1,4096,128;1,64,4096;1,4096,4096;16,8192,8192" \
               --config "small_m16=stages:4" --config "small_m16=pdl:True" --config "small_m16=split_k:2,pdl:True" ;;
    tilek) probe --no-check --shapes "1,4096,4096;16,4096,4096;1,8192,8192;16,8192,8192;128,4096,4096;128,8192,8192" \
             --config "small_m16=tile_k:256" --config "small_m16=tile_k:256,split_k:2" \
             --config "small_m16=split_k:2,pdl:True" --config "small_m128=tile_k:256" ;;
    wide) probe --no-check --shapes "4096,4096,4096;8192,8192,8192;16384,8192,8192" \
             --config "large=tile_n:192" --config "large=tile_n:192,promote:2" --config "large=tile_n:192,epi_n:64" ;;
    widex) probe --no-check --shapes "4096,4096,4096;8192,8192,8192;16384,8192,8192" \
             --config "large_wide=promote:0" --config "large_wide=cluster_n:2" --config "large_wide=group_m:4" \
             --config "large=group_m:4" ;;
    m128split) probe --no-check --shapes "128,8192,8192;128,4096,4096;64,8192,8192;100,8192,8192" \
             --config "$M128S,tile_k:128" --config "$M128S,tile_k:256" --config "small_m64=$W2S,tile_n:64,tile_k:128" ;;
    widecheck) for c in "large=tile_n:192" "large=tile_n:192,promote:2" "$M128S,tile_k:128" \
                        "small_m64=$W2S,tile_n:64,tile_k:128"; do
                 timeout 150 python3 bench/sm90_probe.py --check-extra --no-time --config "$c" || echo "WIDECHECK FAILED $c"
               done ;;
    overlap) check_then_time "$LARGE_SHAPES" $OVERLAP_ALL ;;
    raster) # Cluster shape (A multicast along N instead of B along M) and L2 group height of the
            # shipped large configs.
            check_then_time "$LARGE_SHAPES" large=cluster_m:1,cluster_n:2 large=group_m:16 \
              large_wide=group_m:16 large_wide=cluster_m:1,cluster_n:2 large=overlap_promotion:8 ;;
    energy) # Sixth session: the large squares run at the 700 W power cap (bench/power_probe.py):
            # less L2 traffic per FLOP (B multicast over 4 CTAs), 256-deep k-tiles (promotion every 256).
            check_then_time "$LARGE_SHAPES" large=cluster_m:4 large_wide=cluster_m:4 \
              large=tile_k:256,overlap_promotion:0,epi_stages:2 ${ENERGY_EXTRA:-} ;;
    kfixed) # Per-tile fixed cost vs per-k-tile cost of the shipped defaults: time ~ a + b * K.
            probe --no-check --shapes "8192,8192,1024;8192,8192,2048;8192,8192,4096;8192,8192,8192;4096,4096,1024;4096,4096,2048" ;;
    medium) probe --no-check --shapes "1024,2048,4096;2048,1024,8192;1536,1536,4096" \
              --config "medium=overlap_promotion:4,epi_stages:4" ;;
    check) probe --check-extra --no-time \
             --config "large=promote:2" --config "medium=$NS,tile_n:32" ;;
  esac
done
