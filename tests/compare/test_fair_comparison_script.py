"""scripts/fair_comparison.sh: each step of the fair comparison in order, with a stand-in
`superhf` that records its arguments (the real runs take about 30 CPU-hours)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_each_lane_runs_its_sweep_then_its_longer_runs_and_the_timing_runs_come_last(tmp_path):
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "bin" / "superhf"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$OMP_NUM_THREADS $*" >> {calls}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("OMP_NUM_THREADS", None)
    out = tmp_path / "runs"
    subprocess.run(["bash", "scripts/fair_comparison.sh", str(out)], cwd=ROOT, env=env, check=True)
    lines = calls.read_text().splitlines()
    assert len(lines) == 6
    for task in ("length", "hh"):
        mine = [line for line in lines[:4] if f"fair_{task}" in line]
        sweep, longer = mine  # the sweep first: the longer runs read the rates it chose
        config = f"--config configs/compare/fair_{task}.yaml"
        assert sweep == f"1 compare {config} --output_dir {out}/compare-fair-{task}"
        assert longer.startswith(f"1 compare --config configs/compare/fair_{task}_48k.yaml")
        assert f"--chosen_rates_from {out}/compare-fair-{task}/results.json" in longer
    for task, line in zip(("length", "hh"), lines[4:], strict=True):  # alone: all threads
        assert line.startswith(f" compare --config configs/compare/fair_{task}_48k.yaml")
        assert "--sampled_token_budget 16000 --seeds 0" in line
        assert line.endswith(f"--output_dir {out}/compare-fair-{task}-timing")
