"""scripts/fair_comparison.sh: each step of the fair comparison in order, with a stand-in
`superhf` that records its arguments (the real runs take about 30 CPU-hours)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


STAND_IN = """#!/bin/sh
echo "$OMP_NUM_THREADS $*" >> {calls}
echo "$PYTHONPATH" >> {calls}.path
# like superhf compare: the start policy's evaluation lands in <output_dir>/start first
while [ $# -gt 0 ]; do
  [ "$1" = --output_dir ] && mkdir -p "$2/start" && echo {{}} > "$2/start/compare_eval.json"
  shift
done
"""


def stand_in(tmp_path: Path, script: str) -> tuple[Path, dict[str, str]]:
    """A `superhf` on PATH that records its calls in calls.txt, and the environment to find it."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "bin" / "superhf"
    fake.parent.mkdir()
    fake.write_text(script.format(calls=calls))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("OMP_NUM_THREADS", None)
    return calls, env


def longer_runs(out: Path, task: str) -> str:
    """The arguments of a task's 48k comparison: its folder, and the sweep whose rates it uses."""
    return (
        f"compare --config configs/compare/fair_{task}_48k.yaml --output_dir "
        f"{out}/compare-fair-{task}-48k --chosen_rates_from {out}/compare-fair-{task}/results.json"
    )


def test_each_lane_runs_its_sweep_then_its_longer_runs_and_the_timing_runs_come_last(tmp_path):
    calls, env = stand_in(tmp_path, STAND_IN)
    out = tmp_path / "runs"
    subprocess.run(["bash", "scripts/fair_comparison.sh", str(out)], cwd=ROOT, env=env, check=True)
    lines = calls.read_text().splitlines()
    assert len(lines) == 16, lines
    # every run imports this tree's code, not the editable install's (another checkout's)
    paths = set(Path(f"{calls}.path").read_text().splitlines())
    assert {p.split(os.pathsep)[0] for p in paths} == {str(ROOT / "src")}
    lanes, reports, timing = lines[:12], lines[12:14], lines[14:]
    for task in ("length", "hh"):
        sweep = f"1 compare --config configs/compare/fair_{task}.yaml"
        sweep += f" --output_dir {out}/compare-fair-{task}"
        first = f"1 {longer_runs(out, task)} --seeds 0"  # it evaluates the start: alone
        assert lanes.count(sweep) == 1 and lanes.count(first) == 1
        assert lanes.index(sweep) < lanes.index(first)  # the 48k runs read the rates it chose
        for seed in (1, 2, 3, 4):  # each other seed once, in either lane, after the start
            line = f"1 {longer_runs(out, task)} --seeds {seed}"
            assert lanes.count(line) == 1 and lanes.index(line) > lanes.index(first)
        # each 48k process reported its own seed; one more report reads all five
        assert f"1 {longer_runs(out, task)} --report_only" in reports
    for task, line in zip(("length", "hh"), timing, strict=True):  # alone: all threads
        assert line.startswith(f" compare --config configs/compare/fair_{task}_48k.yaml")
        assert "--sampled_token_budget 16000 --seeds 0" in line
        assert line.endswith(f"--output_dir {out}/compare-fair-{task}-timing")


WITHOUT_HH_START = """#!/bin/sh
echo "$*" >> {calls}
# the length task's comparisons evaluate their start; the HH task's never get that far
while [ $# -gt 0 ]; do
  case "$1$2" in
    --output_dir*length*) mkdir -p "$2/start" && echo {{}} > "$2/start/compare_eval.json";;
  esac
  shift
done
"""


def test_a_free_lane_takes_any_task_with_its_start_evaluated_and_waits_for_the_rest(tmp_path):
    """The HH start never appears: both lanes share the length task's seeds, and none of the
    HH task's (a second process in its folder before its start) runs; the script waits."""
    calls, env = stand_in(tmp_path, WITHOUT_HH_START)
    out = tmp_path / "runs"
    process = subprocess.Popen(
        ["bash", "scripts/fair_comparison.sh", str(out)], cwd=ROOT, env=env, start_new_session=True
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=4)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    lines = calls.read_text().splitlines()
    for seed in (0, 1, 2, 3, 4):
        assert lines.count(f"{longer_runs(out, 'length')} --seeds {seed}") == 1, lines
    hh_48k = [line for line in lines if "fair_hh_48k" in line]
    assert hh_48k == [f"{longer_runs(out, 'hh')} --seeds 0"], lines
    assert len(lines) == 8, lines  # and the two sweeps


def test_the_saved_record_is_restored_before_any_comparison_starts(tmp_path):
    """With RECORD_DIR (what scripts/keep_fair_runs.sh commits), its runs are back in RUNS_DIR
    before the first `superhf compare`: the stand-in sees them when it starts."""
    import sys

    checks = tmp_path / "seen.txt"
    script = STAND_IN.replace(
        "#!/bin/sh\n",
        f"#!/bin/sh\nls {tmp_path}/runs/compare-fair-hh/runs/grpo-s0 >> {checks} 2>&1\n",
    )
    calls, env = stand_in(tmp_path, script)
    env["PYTHON"] = sys.executable  # the restore's; `superhf` stays the stand-in
    saved = tmp_path / "record" / "compare-fair-hh"
    for name in ("compare_config.json", "runs/grpo-s0/done.json", "runs/grpo-s0/compare_eval.json"):
        (saved / name).parent.mkdir(parents=True, exist_ok=True)
        (saved / name).write_text("{}\n")
    out = tmp_path / "runs"
    subprocess.run(
        ["bash", "scripts/fair_comparison.sh", str(out), str(tmp_path / "record")],
        cwd=ROOT,
        env=env,
        check=True,
    )
    seen = checks.read_text().splitlines()
    assert seen[:2] == ["compare_eval.json", "done.json"], seen
    assert (out / "compare-fair-hh" / "runs" / "grpo-s0" / "done.json").is_file()


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


@pytest.mark.parametrize("ignore", ["", "runs/\n"])
def test_keep_fair_runs_commits_the_record_and_stops_where_git_would_ignore_it(tmp_path, ignore):
    """scripts/keep_fair_runs.sh in a repository: the finished run's record is committed, and
    only it; a .gitignore pattern that would silently keep the record's runs/ out stops it."""
    import sys

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    (repo / ".gitignore").write_text(ignore + "/runs/\n")
    (repo / "other.txt").write_text("staged, not the record's\n")
    _git(repo, "add", ".gitignore", "other.txt")
    run = repo / "runs" / "compare-x" / "runs" / "grpo-s0"
    run.mkdir(parents=True)
    (repo / "runs" / "compare-x" / "compare_config.json").write_text("{}\n")
    for name in ("done.json", "compare_eval.json", "adapter_model.safetensors"):
        (run / name).write_text("{}\n")
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT / "src")}
    keep = subprocess.run(
        ["bash", str(ROOT / "scripts" / "keep_fair_runs.sh"), "runs", "kept", "0"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    if ignore:
        assert keep.returncode == 1 and "git ignores files of kept" in keep.stderr
        return
    assert keep.returncode == 0, keep.stderr
    committed = set(_git(repo, "show", "--name-only", "--format=", "HEAD").split())
    assert committed == {
        "kept/compare-x/compare_config.json",
        "kept/compare-x/runs/grpo-s0/compare_eval.json",
        "kept/compare-x/runs/grpo-s0/done.json",
    }
    assert "other.txt" in _git(repo, "diff", "--cached", "--name-only")  # still only staged
