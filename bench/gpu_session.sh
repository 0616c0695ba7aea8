#!/usr/bin/env bash
# One device-machine session: build the extension, then run what is asked (default: info,
# bench keys, bench launch, GPU tests). Usage on the GPU machine: bash bench/gpu_session.sh [steps...]
set -uo pipefail
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
OUT=${OUT:-/tmp/fd-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}   # bench/*.py scripts import the checkout
python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
steps=${*:-"info keys launch tests"}
for step in $steps; do
  echo "=== $step"
  case $step in
    info) python3 -m fastdispatch info ;;
    keys) python3 -m fastdispatch bench keys ;;
    launch) timeout ${LAUNCH_TIMEOUT:-300} python3 -m fastdispatch bench launch --json "$OUT/launch.json" 2>&1 | tee "$OUT/launch.log" ;;
    helion) timeout ${HELION_TIMEOUT:-240} python3 -m pytest tests/test_helion.py tests/test_helion_direct.py -q -p no:cacheprovider -rs 2>&1 | tee "$OUT/helion.log" | tail -30 ;;
    launchall) python3 bench/launch_all.py --json "$OUT/launch_all.json" ;;
    probe) python3 bench/probe_hot_path.py ;;
    dropin) python3 bench/probe_dropin.py 2>&1 | tee "$OUT/probe_dropin.txt" ;;
    coldstart) python3 -m fastdispatch bench coldstart ;;
    server) python3 -m fastdispatch bench server --json "$OUT/server.json" ;;
    newtests) python3 -m pytest tests/test_gpu_drop_in.py tests/test_helion.py tests/test_gpu_launch.py tests/test_embedding.py -q -p no:cacheprovider -m gpu -rs 2>&1 | tee "$OUT/newtests.log" | tail -40 ;;
    scaledmm) python3 bench/bench_scaled_mm.py --json "$OUT/scaled_mm.json" ;;
    blockwise) python3 bench/bench_scaled_mm.py --recipe blockwise --json "$OUT/blockwise.json" 2>&1 | tee "$OUT/blockwise.log" ;;
    blockprobe) python3 bench/blockwise_probe.py ${BLOCKPROBE_ONLY:+--only $BLOCKPROBE_ONLY} --shapes ${BLOCKPROBE_SHAPES:-4096x2112x7168,4096x24576x1536,4096x7168x16384,4096x4096x7168,4096x7168x2048,4096x4096x4096,8192x8192x8192} 2>&1 | tee "$OUT/blockprobe.log" ;;
    blocktests) timeout ${BLOCKTESTS_TIMEOUT:-400} python3 -m pytest tests/test_scaled_mm_blockwise.py tests/test_scaled_mm_sm90.py -q -p no:cacheprovider -m gpu -rs 2>&1 | tee "$OUT/blocktests.log" | tail -30 ;;
    rbtests) timeout ${RBTESTS_TIMEOUT:-300} python3 -m pytest tests/test_scaled_mm_blockwise.py tests/test_scaled_mm_sm90.py -q -p no:cacheprovider -m gpu -k row_blocks -rs 2>&1 | tee "$OUT/rbtests.log" | tail -5 ;;
    ncu) ncu --clock-control none --profile-from-start off --section SpeedOfLight --section WarpStateStats \
           --section MemoryWorkloadAnalysis --metrics sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active \
           python3 bench/ncu_probe.py --shape ${NCU_SHAPE:-4096x4096x7168} --trials ${NCU_TRIALS:-pick,rows2,rows2_wt} \
           > "$OUT/ncu_${NCU_SHAPE:-4096x4096x7168}.txt" 2>&1; tail -3 "$OUT/ncu_${NCU_SHAPE:-4096x4096x7168}.txt" ;;
    ncusrc) ncu --clock-control none --profile-from-start off --section WarpStateStats --section SourceCounters \
           --section InstructionStats --section ComputeWorkloadAnalysis --section SchedulerStats --import-source no \
           -o "$OUT/ncusrc" python3 bench/ncu_probe.py --shape ${NCU_SHAPE:-4096x4096x7168} --trials ${NCU_TRIALS:-rows2} \
           > "$OUT/ncusrc.log" 2>&1; tail -3 "$OUT/ncusrc.log"
         ncu -i "$OUT/ncusrc.ncu-rep" --page details > "$OUT/ncusrc_details.txt" 2>&1
         ncu -i "$OUT/ncusrc.ncu-rep" --page source --csv --print-source sass > "$OUT/ncusrc_sass.csv" 2>&1
         ls -la "$OUT"/ncusrc* ;;
    scaledtests) timeout ${SCALEDTESTS_TIMEOUT:-560} python3 -m pytest tests/test_scaled_mm_*.py -q -p no:cacheprovider \
           -m gpu -rs --durations=15 2>&1 | tee "$OUT/scaledtests.log" | tail -40 ;;
    spantests) timeout ${SPANTESTS_TIMEOUT:-400} python3 -m pytest tests/test_scaled_mm_static_stages.py tests/test_scaled_mm_blockwise.py \
           tests/test_scaled_mm_waves.py tests/test_scaled_mm_routing.py -q -p no:cacheprovider -m gpu -rs --durations=8 \
           ${SPANTESTS_K:+-k "$SPANTESTS_K"} 2>&1 | tee "$OUT/spantests.log" | tail -25 ;;
    pingtests) timeout ${PINGTESTS_TIMEOUT:-200} python3 -m pytest tests/test_scaled_mm_pingpong.py -q -p no:cacheprovider -m gpu -rs 2>&1 \
           | tee "$OUT/pingtests.log" | tail -8 ;;
    fastncu) for shape in ${FASTNCU_SHAPES:-4096x4096x4096 8192x8192x8192}; do
             ncu --clock-control none --profile-from-start off --section SpeedOfLight --section LaunchStats \
               --section Occupancy --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
               --section WarpStateStats --section SchedulerStats \
               python3 bench/ncu_probe.py --rowwise --shape $shape \
               $(for c in ${FASTNCU_CONFIGS:-large_early= fast_large= fast_pingpong=}; do echo --config $c; done) \
               > "$OUT/ncu_fast_$shape.txt" 2>&1; tail -2 "$OUT/ncu_fast_$shape.txt"
             grep -E "^  [a-z]|Duration|SM Frequency|Elapsed Cycles|Registers Per|Grid Size|Cluster Size|Block Size|Shared Memory Config|Issue Slots Busy|Executed Ipc A|DRAM Through|L2 Hit|Warp Cycles Per Issued" \
               "$OUT/ncu_fast_$shape.txt" | cut -c1-150; done ;;
    fastpower) for shape in ${FASTPOWER_SHAPES:-4096,4096,4096 8192,8192,8192}; do
             python3 bench/power_probe.py --shape $shape --seconds ${FASTPOWER_SECONDS:-2} \
               $(for c in ${FASTPOWER_CONFIGS:-fast_large= fast_pingpong=}; do echo --config $c; done) 2>&1 | tee -a "$OUT/fastpower.log" | grep -E "POWER|SUSTAINED" | cut -c1-200; done ;;
    fastprobe) python3 bench/sm90_probe.py --check-extra --shapes "${FASTPROBE_SHAPES:-4096,4096,4096;8192,8192,8192;16384,8192,8192}" \
           $(for c in ${FASTPROBE_CONFIGS:-fast_large= fast_pingpong=}; do echo --config $c; done) \
           2>&1 | tee "$OUT/fastprobe.log" | grep -E "FAIL|TIME|correct" ;;
    rowprobe) python3 bench/sm90_probe.py --check-extra --shapes "${ROWPROBE_SHAPES:-4096,4096,4096;8192,8192,8192;4096,4096,7168;4096,7168,2048}" \
           --config large=overlap_promotion:0,cluster_m:1,cluster_n:2,row_blocks:2 \
           --config large=overlap_promotion:0,cluster_m:1,cluster_n:2,row_blocks:2,epi_n:64,epi_stages:4 \
           2>&1 | tee "$OUT/rowprobe.log" | grep -E "FAIL|TIME|correct" ;;
    deepgemm) mkdir -p /tmp/dga && tar xzf .anchors/deepgemm_bundle.tar.gz -C /tmp/dga && export DGANCHOR_DIR=/tmp/dga/dganchor && echo "DGANCHOR_DIR=$DGANCHOR_DIR" ;;
    profile) python3 bench/profile_kernels.py ;;
    power) for shape in 4096,4096,4096 8192,8192,8192 16384,8192,8192; do
             python3 bench/power_probe.py --shape $shape --seconds 3 | grep -E "POWER|SUSTAINED|H100"; done ;;
    gputests) timeout ${GPUTESTS_TIMEOUT:-300} python3 -m pytest tests -q -p no:cacheprovider -m "gpu" -rs 2>&1 | tee "$OUT/gputests.log" | tail -40 ;;
    tests) python3 -m pytest tests -q -x -p no:cacheprovider -m "gpu" 2>&1 | tail -30 ;;
    alltests) python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tail -40 ;;
    bench) python3 -m pytest bench -q -p no:cacheprovider -p fastdispatch.pytest_plugin --benchmark-only --benchmark-json "$OUT/bench.json" 2>&1 | tail -60 ;;
    *) echo "unknown step $step" ;;
  esac
done
