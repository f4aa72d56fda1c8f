#!/usr/bin/env bash
# bench/tti.py for two checkouts alternately (before = $BEFORE_SRC, after = this one),
# on one isolated instance (bench/instance.sh), ROUNDS times: the shared host's load
# moves too much for runs minutes apart to compare.
#
#   BEFORE_SRC=/work/main/src bench/tti_ab.sh [ROUNDS] [tti.py args...]
set -u
cd "$(dirname "$0")/.."
ROUNDS=${1:-1}; shift || true
ARGS=${*:--n 20 --warm-pool default --modes sequential,burst2}
source bench/instance.sh "${BENCH_INSTANCE:-tti}" "${BENCH_INDEX:-7}"
for ((round = 1; round <= ROUNDS; round++)); do
  for label in before after; do
    if [ $label = before ]; then export PYTHONPATH=${BEFORE_SRC:?set BEFORE_SRC}; else unset PYTHONPATH; fi
    echo "=== round $round $label $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
    # shellcheck disable=SC2086
    timeout 900 .venv/bin/python bench/tti.py $ARGS --label $label 2>&1 | grep -v "create failed\|failure:" | tail -12
  done
done
