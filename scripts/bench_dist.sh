#!/usr/bin/env bash
# `make bench-dist`: SegFormer-B0 data-parallel training step at H x W (default 512 x 512), global
# batch 4: 1 process x 2 threads, then 2 processes x 1 thread (mpirun --oversubscribe), one JSON line
# each (step time, global img/s, all-reduce time per step and the fraction hidden behind backward,
# bytes all-reduced per step). BENCH_DIST_STEPS (default 5), BENCH_DIST_HW="512 512", BENCH_DIST_BUCKET_MB (25)
# are honoured. Not a test; it takes minutes at 512 x 512.
set -euo pipefail
bin=${1:-build/bench/bench_dist}
steps=${BENCH_DIST_STEPS:-5}
read -r h w <<<"${BENCH_DIST_HW:-512 512}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
OMP_NUM_THREADS=2 "$bin" "$h" "$w" 4 2 "$steps"
OMP_NUM_THREADS=1 mpirun --oversubscribe -np 2 -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS ${BENCH_DIST_BUCKET_MB:+-x BENCH_DIST_BUCKET_MB} "$bin" "$h" "$w" 4 1 "$steps"
