#!/usr/bin/env bash
# Commit the fair comparison's finished runs as they land, so that a machine that does not last
# (a session, a spot instance) loses none: every few minutes, `superhf.compare.archive save`
# copies each finished, evaluated run of RUNS_DIR without its weights or prompt texts into
# RECORD_DIR, and what changed there is committed (only RECORD_DIR; nothing else staged goes
# with it). `bash scripts/fair_comparison.sh RUNS_DIR RECORD_DIR` restores it before resuming.
#
#   bash scripts/keep_fair_runs.sh runs results/fair-comparison [MINUTES]   # default 10
set -uo pipefail
runs="${1:?RUNS_DIR}" record="${2:?RECORD_DIR}" every="${3:-10}"
while :; do
    "${PYTHON:-python}" -m superhf.compare.archive save "$runs" "$record"
    git add -- "$record"
    if ! git diff --cached --quiet -- "$record"; then
        count="$(find "$record" -name compare_eval.json -path '*/runs/*' | wc -l)"
        for try in 1 2 3 4 5; do  # another git command may hold the index for a moment
            git commit -q -m "fair comparison: finished runs saved ($count in all)" \
                --only -- "$record" && break
            sleep 10
        done
    fi
    sleep "$((every * 60))"
done
