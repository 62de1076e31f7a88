"""A stopped TRL baseline run resumes from its last checkpoint as if it had never stopped: the
same samples, progress lines, monitor rows, held-out answers and adapter (the tiny random
Llama, GRPO with a KL term and the reward-hacking monitor on)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from superhf.compare import baseline_checkpoint, trl_baselines
from superhf.compare.spec import DONE_FILE, PROGRESS_FILE
from tests.compare.test_trl_baselines import _run

pytest.importorskip(
    "trl", reason="the TRL baselines need the compare extra: pip install '.[compare]'"
)

TIMES = ("wall_time_s", "peak_memory_mb", "seconds_sampling", "seconds_scoring", "seconds_update")


class Stopped(Exception):
    """Stands for the process being killed."""


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def _stopping_at(step: int | None, monkeypatch) -> None:
    """Checkpoint after every update; with `step`, stop (raise) at that update's end, after
    its progress line and monitor row are written but before its checkpoint."""
    real = baseline_checkpoint.checkpoint_callback

    def callback(state, every_s=None):
        saver = real(state, every_s=0.0)
        on_step_end = saver.on_step_end

        def stop_or_go_on(args, trainer_state, control, **kwargs):
            if trainer_state.global_step == step:
                raise Stopped
            return on_step_end(args, trainer_state, control, **kwargs)

        saver.on_step_end = stop_or_go_on
        return saver

    monkeypatch.setattr(trl_baselines, "checkpoint_callback", callback)


def test_a_stopped_run_resumes_as_if_it_never_stopped(tmp_path, tiny_model_dir, monkeypatch):
    def run_in(name: str):
        (tmp_path / name).mkdir()
        return _run(
            tmp_path / name,
            tiny_model_dir,
            "grpo",
            test_reward_model="tests.compare.rewards:vowels",
            sampled_token_budget=80,  # 16 tokens an update: 5 updates
            beta=0.1,  # TRL logs its KL after the update's end: the monitor's row takes it
            extra={"num_eval_prompts": 2, "eval_steps": 2},
        )

    whole, stopped = run_in("whole"), run_in("stopped")
    _stopping_at(None, monkeypatch)
    trl_baselines.run_trl_baseline(whole)
    _stopping_at(4, monkeypatch)
    with pytest.raises(Stopped):
        trl_baselines.run_trl_baseline(stopped)
    out = Path(stopped.output_dir)
    assert not (out / DONE_FILE).exists()
    assert [r["step"] for r in _lines(out / PROGRESS_FILE)] == [0, 1, 2, 3, 4]
    assert [c.name for c in baseline_checkpoint.complete_checkpoints(out)] == ["checkpoint-3"]
    with (out / "eval_completions.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"iteration": 4, "prompt": "How do')  # a line the stop tore

    _stopping_at(None, monkeypatch)
    trl_baselines.run_trl_baseline(stopped)  # the comparison calls it again: it resumes

    a, b = Path(whole.output_dir), out
    done_a, done_b = (json.loads((x / DONE_FILE).read_text()) for x in (a, b))
    assert done_a["resumed_from_step"] is None and done_b["resumed_from_step"] == 3
    for key in ("steps", "optimizer_steps", "generation_rounds", "sampled_tokens"):
        assert done_a[key] == done_b[key], key
    progress_a, progress_b = _lines(a / PROGRESS_FILE), _lines(b / PROGRESS_FILE)
    assert [r["step"] for r in progress_b] == [0, 1, 2, 3, 4, 5]
    for ra, rb in zip(progress_a, progress_b, strict=True):  # every number but the times
        assert {k: v for k, v in ra.items() if k not in TIMES} == {
            k: v for k, v in rb.items() if k not in TIMES
        }
    assert rb["wall_time_s"] > progress_b[3]["wall_time_s"]  # goes on from the checkpoint's
    rows_a, rows_b = _lines(a / "monitor.jsonl"), _lines(b / "monitor.jsonl")
    assert [r["iteration"] for r in rows_b] == [0, 1, 2, 3, 4, 5]
    assert all("kl" in r for r in rows_b[1:])
    assert rows_a == rows_b
    assert _lines(a / "eval_completions.jsonl") == _lines(b / "eval_completions.jsonl")
    adapter_a, adapter_b = _adapter(a), _adapter(b)
    assert adapter_a.keys() == adapter_b.keys()
    assert all((adapter_a[k] == adapter_b[k]).all() for k in adapter_a)
    assert not list(a.glob("checkpoint-*")) and not list(b.glob("checkpoint-*"))  # removed


def test_only_a_checkpoint_with_superhfs_state_counts(tmp_path):
    (tmp_path / "checkpoint-4").mkdir()  # killed while the trainer was writing it
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / baseline_checkpoint.STATE_FILE).write_text("{}")
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / baseline_checkpoint.STATE_FILE).write_text("{}")
    assert baseline_checkpoint.last_checkpoint(tmp_path) == tmp_path / "checkpoint-10"  # not 4
    baseline_checkpoint.remove_checkpoints(tmp_path, keep=tmp_path / "checkpoint-10")
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-10"]
    assert baseline_checkpoint.last_checkpoint(tmp_path / "missing") is None
