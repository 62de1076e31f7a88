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


def test_each_lane_runs_its_sweep_then_its_longer_runs_and_the_timing_runs_come_last(tmp_path):
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "bin" / "superhf"
    fake.parent.mkdir()
    fake.write_text(STAND_IN.format(calls=calls))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("OMP_NUM_THREADS", None)
    out = tmp_path / "runs"
    subprocess.run(["bash", "scripts/fair_comparison.sh", str(out)], cwd=ROOT, env=env, check=True)
    lines = calls.read_text().splitlines()
    assert len(lines) == 8
    # every run imports this tree's code, not the editable install's (another checkout's)
    paths = set(Path(f"{calls}.path").read_text().splitlines())
    assert {p.split(os.pathsep)[0] for p in paths} == {str(ROOT / "src")}
    lanes, report, timing = lines[:5], lines[5], lines[6:]
    hh_48k = (
        f"--output_dir {out}/compare-fair-hh-48k "
        f"--chosen_rates_from {out}/compare-fair-hh/results.json"
    )
    for task in ("length", "hh"):
        mine = [line for line in lanes if f"fair_{task}" in line]
        sweep, *longer = mine  # the sweep first: the longer runs read the rates it chose
        config = f"--config configs/compare/fair_{task}.yaml"
        assert sweep == f"1 compare {config} --output_dir {out}/compare-fair-{task}"
        for line in longer:
            assert line.startswith(f"1 compare --config configs/compare/fair_{task}_48k.yaml")
            assert f"--chosen_rates_from {out}/compare-fair-{task}/results.json" in line
    # the HH 48k seeds split between the lanes, the length lane's share after its own runs and
    # after the HH lane's 48k start evaluation exists; then one report over all five seeds
    hh_longer = [line for line in lanes if "fair_hh_48k" in line]
    assert sorted(line.split(hh_48k)[1] for line in hh_longer) == [" --seeds 0 1 2", " --seeds 3 4"]
    assert lanes.index(next(x for x in lanes if "--seeds 3 4" in x)) > lanes.index(
        next(x for x in lanes if "fair_length_48k" in x)
    )
    assert report == f"1 compare --config configs/compare/fair_hh_48k.yaml {hh_48k} --report_only"
    for task, line in zip(("length", "hh"), timing, strict=True):  # alone: all threads
        assert line.startswith(f" compare --config configs/compare/fair_{task}_48k.yaml")
        assert "--sampled_token_budget 16000 --seeds 0" in line
        assert line.endswith(f"--output_dir {out}/compare-fair-{task}-timing")


def test_the_length_lane_waits_for_the_hh_lanes_48k_start_before_sharing_its_folder(tmp_path):
    """No stand-in start evaluation: the length lane must still be waiting when stopped."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "bin" / "superhf"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(
        ["bash", "scripts/fair_comparison.sh", str(tmp_path / "runs")],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=3)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    lines = calls.read_text().splitlines()
    assert len(lines) == 4 and not any("--seeds 3 4" in line for line in lines), lines
