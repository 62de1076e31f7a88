#!/usr/bin/env bash
# The fair comparison (docs/COMPARE.md, "The fair comparison"), every step in order. Each
# command resumes, so run this again after a stop and nothing finished is redone.
#
#   bash scripts/fair_comparison.sh [RUNS_DIR [RECORD_DIR]]    # default runs/
#
# RECORD_DIR: the finished runs saved by `scripts/keep_fair_runs.sh` (committed, without
# weights), restored into RUNS_DIR first, so a new machine goes on where the last one stopped.
#
# Two lanes side by side, one thread each: each task's 16,000-token sweep, then its first
# 48,000-token seed at the rates the sweep chose, then the other 48k seeds of both tasks,
# taken by whichever lane is free; then the timing runs alone: one seed of each main arm at
# 16,000 tokens with nothing else on the machine, the stage times to quote. Run it from the
# repository root (the length reward is imported from bench/, the HH data read from
# ../shared); a frozen `git worktree` keeps edits to the tree out of runs in flight.
#
# Cost on the 2-core dev machine, from the runs so far: a SuperHF run takes 3-8 minutes at
# 16,000 tokens, a TRL GRPO or RLOO run 10-45 (more rounds where answers get short), about
# three times that at 48,000: about 65 CPU-hours in all, some 32 hours of both lanes.
set -euo pipefail
# This tree's code, ahead of the editable install (which points at the main checkout, where
# edits would otherwise reach the runs still to start).
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
out="${1:-runs}"
out="$(mkdir -p "$out" && cd "$out" && pwd)"
if [ -n "${2:-}" ] && [ -d "$2" ]; then
    "${PYTHON:-python}" -m superhf.compare.archive restore "$2" "$out"
fi
compare() { superhf compare --config "configs/compare/$1.yaml" "${@:2}"; }

longer() {  # a task's 48,000-token runs at the rates its sweep chose
    local task="$1"
    OMP_NUM_THREADS=1 compare "fair_${task}_48k" --output_dir "$out/compare-fair-$task-48k" \
        --chosen_rates_from "$out/compare-fair-$task/results.json" "${@:2}"
}

# The 48k seeds after each task's first, one process each, taken by whichever lane is free:
# the lanes' work is uneven (a length-task GRPO run takes longer than an HH one), and a lane
# that had a fixed share would sit idle for hours while the other worked. Two processes with
# disjoint seeds share a comparison's folder (its prompts, reward models and start
# evaluation), so a lane takes a task's seed only once that task's start is evaluated.
shared_seeds=(length:1 hh:1 length:2 hh:2 length:3 hh:3 length:4 hh:4)
taken="$(mktemp -d)"  # this invocation's claims (mkdir is atomic); a rerun claims afresh
trap 'rm -rf "$taken"' EXIT

take_shared_seeds() {  # until every shared seed is taken; a finished one resumes at once
    local job left
    while :; do
        left=0
        for job in "${shared_seeds[@]}"; do
            [ -d "$taken/$job" ] && continue
            left=1
            [ -f "$out/compare-fair-${job%:*}-48k/start/compare_eval.json" ] || continue
            mkdir "$taken/$job" 2>/dev/null || continue  # the other lane took it just now
            longer "${job%:*}" --seeds "${job#*:}"
            continue 2
        done
        [ "$left" = 0 ] && return
        sleep 5  # what is left waits for the other task's start evaluation
    done
}

lane() {  # a task's sweep, its first 48k seed (which evaluates the start), then shared seeds
    OMP_NUM_THREADS=1 compare "fair_$1" --output_dir "$out/compare-fair-$1"
    longer "$1" --seeds 0
    take_shared_seeds
}

lane length >> "$out/fair-length.log" 2>&1 &
lane hh >> "$out/fair-hh.log" 2>&1 &
wait
# Each 48k process wrote a report of its own seed; these read all five (no training).
for task in length hh; do
    longer "$task" --report_only >> "$out/fair-$task.log" 2>&1
done

for task in length hh; do  # alone on the machine: these times are the ones to quote
    compare "fair_${task}_48k" --sampled_token_budget 16000 --seeds 0 \
        --chosen_rates_from "$out/compare-fair-$task/results.json" \
        --output_dir "$out/compare-fair-$task-timing" >> "$out/fair-$task-timing.log" 2>&1
done
echo "Done: $out/compare-fair-{length,hh}{,-48k,-timing}/report.md"
