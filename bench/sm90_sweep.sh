#!/usr/bin/env bash
# Config sweep of the sm90 scaled_mm kernel on the lent H100 (not a test): candidate configs
# per shape group beside the shipped default and torch._scaled_mm (clean-flushed L2 timing),
# then correctness of the candidates. Usage on the GPU machine (after building the extension):
#   bash bench/sm90_sweep.sh [small|m128|large|check]...
set -uo pipefail
export PYTHONUNBUFFERED=1
probe() { python3 bench/sm90_probe.py "$@"; }
NS="tile_m:64,consumer_wgs:1,epi_n:32"   # non-swapped, one consumer warpgroup, narrow N tiles
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
    check) probe --check-extra --no-time \
             --config "large=promote:2" --config "medium=$NS,tile_n:32" ;;
  esac
done
