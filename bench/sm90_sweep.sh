#!/usr/bin/env bash
# Config sweep of the sm90 scaled_mm kernel on the lent H100 (not a test): candidate configs
# per shape group beside the shipped default and torch._scaled_mm, then correctness of every
# candidate. Usage on the GPU machine (after building the extension):
#   bash bench/sm90_sweep.sh [small|m128|large|check]...
set -uo pipefail
export PYTHONUNBUFFERED=1
probe() { python3 bench/sm90_probe.py "$@"; }
OV=overlap_promotion:True
steps=${*:-"small m128 large check"}
for step in $steps; do
  echo "=== sweep $step"
  case $step in
    small) probe --no-check --shapes "1,4096,4096;1,8192,8192;16,8192,8192" \
             --config "small_m16=$OV" --config "small_m16=promote:0" \
             --config "small_m16=cluster_m:2,$OV" \
             --config "medium=tile_m:64,tile_n:32,consumer_wgs:1,epi_n:32,$OV" \
             --config "medium=tile_m:64,tile_n:64,consumer_wgs:1,epi_n:32,$OV" ;;
    m128) probe --no-check --shapes "128,8192,8192;64,8192,8192" \
             --config "small_m128=$OV" --config "small_m128=promote:0" \
             --config "small_m128=cluster_m:2" --config "small_m128=cluster_m:2,$OV" \
             --config "small_m128=cluster_m:4" ;;
    large) probe --no-check --shapes "4096,4096,4096;8192,8192,8192;16384,8192,8192" \
             --config "large=$OV" --config "fast_large=group_m:8" ;;
    check) probe --check-extra --no-time \
             --config "small_m16=$OV" --config "small_m128=cluster_m:2,$OV" --config "large=$OV" \
             --config "medium=tile_m:64,tile_n:32,consumer_wgs:1,epi_n:32,$OV" ;;
  esac
done
