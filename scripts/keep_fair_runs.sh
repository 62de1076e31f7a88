#!/usr/bin/env bash
# Commit the fair comparison's finished runs as they land, so that a machine that does not last
# (a session, a spot instance) loses none: every few minutes, `superhf.compare.archive save`
# copies each finished, evaluated run of RUNS_DIR without its weights or prompt texts into
# RECORD_DIR, and what changed there is committed (only RECORD_DIR; nothing else staged goes
# with it). `bash scripts/fair_comparison.sh RUNS_DIR RECORD_DIR` restores it before resuming.
#
#   bash scripts/keep_fair_runs.sh runs results/fair-comparison [MINUTES]   # default 10, 0: once
set -uo pipefail
runs="${1:?RUNS_DIR}" record="${2:?RECORD_DIR}" every="${3:-10}"
while :; do
    "${PYTHON:-python}" -m superhf.compare.archive save "$runs" "$record"
    git add -- "$record"
    ignored="$(git ls-files --others --ignored --exclude-standard -- "$record" | head -3)"
    if [ -n "$ignored" ]; then  # a .gitignore pattern would keep the record from git
        echo "keep_fair_runs.sh: git ignores files of $record, e.g.: $ignored" >&2
        exit 1
    fi
    if ! git diff --cached --quiet -- "$record"; then
        count="$(find "$record" -name compare_eval.json -path '*/runs/*' | wc -l)"
        for try in 1 2 3 4 5; do  # another git command may hold the index for a moment
            git commit -q -m "fair comparison: finished runs saved ($count in all)" \
                --only -- "$record" && break
            sleep 10
        done
    fi
    [ "$every" = 0 ] && break  # 0: once
    sleep "$((every * 60))"
done
