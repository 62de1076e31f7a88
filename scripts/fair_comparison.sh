#!/usr/bin/env bash
# The fair comparison (docs/COMPARE.md, "The fair comparison"), every step in order. Each
# command resumes, so run this again after a stop and nothing finished is redone.
#
#   bash scripts/fair_comparison.sh [RUNS_DIR]    # default runs/; about 30 CPU-hours on 2 cores
#
# Two lanes side by side, one thread each (the length task, then the HH task; each its 16,000-
# token sweep, then its 48,000-token runs at the rates the sweep chose), then the timing runs
# alone: one seed of each main arm at 16,000 tokens with nothing else on the machine, the
# stage times to quote. Run it from the repository root (the length reward is imported from
# bench/, the HH data read from ../shared); a frozen `git worktree` keeps edits to the tree
# out of runs in flight.
set -euo pipefail
out="${1:-runs}"
out="$(mkdir -p "$out" && cd "$out" && pwd)"
compare() { superhf compare --config "configs/compare/$1.yaml" "${@:2}"; }

lane() {  # task: its sweep, then its longer runs at the rates the sweep chose
    local task="$1"
    OMP_NUM_THREADS=1 compare "fair_$task" --output_dir "$out/compare-fair-$task"
    OMP_NUM_THREADS=1 compare "fair_${task}_48k" --output_dir "$out/compare-fair-$task-48k" \
        --chosen_rates_from "$out/compare-fair-$task/results.json"
}

lane length >> "$out/fair-length.log" 2>&1 &
lane hh >> "$out/fair-hh.log" 2>&1 &
wait

for task in length hh; do  # alone on the machine: these times are the ones to quote
    compare "fair_${task}_48k" --sampled_token_budget 16000 --seeds 0 \
        --chosen_rates_from "$out/compare-fair-$task/results.json" \
        --output_dir "$out/compare-fair-$task-timing" >> "$out/fair-$task-timing.log" 2>&1
done
echo "Done: $out/compare-fair-{length,hh}{,-48k,-timing}/report.md"
