#!/usr/bin/env bash
# The fair comparison (docs/COMPARE.md, "The fair comparison"), every step in order. Each
# command resumes, so run this again after a stop and nothing finished is redone.
#
#   bash scripts/fair_comparison.sh [RUNS_DIR]    # default runs/; about 30 CPU-hours on 2 cores
#
# Two lanes side by side, one thread each (the length task, then the HH task; each its 16,000-
# token sweep, then its 48,000-token runs at the rates the sweep chose; the length lane, done
# first, then runs two of the HH task's five 48k seeds), then the timing runs
# alone: one seed of each main arm at 16,000 tokens with nothing else on the machine, the
# stage times to quote. Run it from the repository root (the length reward is imported from
# bench/, the HH data read from ../shared); a frozen `git worktree` keeps edits to the tree
# out of runs in flight.
set -euo pipefail
# This tree's code, ahead of the editable install (which points at the main checkout, where
# edits would otherwise reach the runs still to start).
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
out="${1:-runs}"
out="$(mkdir -p "$out" && cd "$out" && pwd)"
compare() { superhf compare --config "configs/compare/$1.yaml" "${@:2}"; }

longer() {  # a task's 48,000-token runs at the rates its sweep chose
    local task="$1"
    OMP_NUM_THREADS=1 compare "fair_${task}_48k" --output_dir "$out/compare-fair-$task-48k" \
        --chosen_rates_from "$out/compare-fair-$task/results.json" "${@:2}"
}

lane_length() {  # the shorter lane: then it takes two of the HH task's five 48k seeds
    OMP_NUM_THREADS=1 compare fair_length --output_dir "$out/compare-fair-length"
    longer length
    # The HH lane writes its 48k start evaluation once its sweep is done and its reward models
    # are built; from then on a second process may share the folder (disjoint seeds).
    until [ -f "$out/compare-fair-hh-48k/start/compare_eval.json" ]; do sleep 5; done
    longer hh --seeds 3 4
}

lane_hh() {
    OMP_NUM_THREADS=1 compare fair_hh --output_dir "$out/compare-fair-hh"
    longer hh --seeds 0 1 2
}

lane_length >> "$out/fair-length.log" 2>&1 &
lane_hh >> "$out/fair-hh.log" 2>&1 &
wait
# Each HH 48k process wrote a report of its own seeds; this one reads all five (no training).
longer hh --report_only >> "$out/fair-hh.log" 2>&1

for task in length hh; do  # alone on the machine: these times are the ones to quote
    compare "fair_${task}_48k" --sampled_token_budget 16000 --seeds 0 \
        --chosen_rates_from "$out/compare-fair-$task/results.json" \
        --output_dir "$out/compare-fair-$task-timing" >> "$out/fair-$task-timing.log" 2>&1
done
echo "Done: $out/compare-fair-{length,hh}{,-48k,-timing}/report.md"
