"""Never lose a run: kill it (SIGKILL, SIGTERM) mid-iteration, resume, and get the same run.

The runs are real `superhf train` processes on the tiny random-init model; a reward function in
this module pauses at a chosen call and leaves a marker file, so that the kill lands while an
iteration is in progress.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from superhf.config import SuperHFConfig
from superhf.train.checkpoint import list_checkpoints
from superhf.train.trainer import SuperHFTrainer, TrainingError

ROOT = Path(__file__).resolve().parents[2]
PYTHONPATH = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
"""src first: the runs are this tree's code, not whichever superhf the venv has installed."""
PROMPTS = [{"prompt": f"Question {i}: tell me about topic {i}."} for i in range(64)]
TIMING = ("time/", "step_time", "tokens_per_second", "peak_memory_mb")
_calls = 0


def pausing_length_reward(prompts, completions, **kw):
    """Longer is better; on call SUPERHF_TEST_PAUSE_AT, write the marker file and sleep."""
    global _calls
    _calls += 1
    if str(_calls) == os.environ.get("SUPERHF_TEST_PAUSE_AT"):
        Path(os.environ["SUPERHF_TEST_MARKER"]).write_text("paused")
        time.sleep(float(os.environ.get("SUPERHF_TEST_PAUSE_SECONDS", "600")))
    return [len(c) / 40 for c in completions]


def _settings(model_dir: Path, prompts: Path, output_dir: Path) -> list[str]:
    return [
        "--model_name_or_path", str(model_dir),
        "--dataset_name", str(prompts),
        "--reward_funcs", "tests.train.test_resume:pausing_length_reward",
        "--num_generations", "4",
        "--max_completion_length", "8",
        "--prompts_per_iteration", "4",
        "--per_device_train_batch_size", "2",
        "--max_iterations", "6",
        "--save_steps", "2",
        "--learning_rate", "1e-2",
        "--top_k", "20",
        "--seed", "3",
        "--output_dir", str(output_dir),
    ]  # fmt: skip


def _start(args: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "superhf.cli", "train", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": PYTHONPATH, "COLUMNS": "400", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(marker: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"run ended before pausing:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("run never reached the pause")
        time.sleep(0.1)


def _finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith(TIMING)} for row in rows]


def _assert_same_run(run: Path, reference: Path) -> None:
    got, expected = _metrics(run), _metrics(reference)
    # iteration 0 is the evaluation of the starting policy
    assert [m["iteration"] for m in got] == [m["iteration"] for m in expected] == list(range(7))
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(b[key], float):
                assert math.isclose(a[key], b[key], rel_tol=1e-5, abs_tol=1e-7), (key, a, b)
            else:
                assert a[key] == b[key], (key, a, b)
    for name in ("completions.jsonl", "eval_completions.jsonl"):  # cut back, then run again
        assert (run / name).read_text() == (reference / name).read_text(), name
    weights, reference_weights = (
        load_file(r / "adapter_model.safetensors") for r in (run, reference)
    )
    assert weights.keys() == reference_weights.keys()
    for name in weights:
        torch.testing.assert_close(weights[name], reference_weights[name], rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("resume")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
    reference = root / "uninterrupted"
    code, output = _finish(_start(_settings(tiny_model_dir, prompts, reference)))
    assert code == 0, output
    return tiny_model_dir, prompts, reference


def test_sigkill_mid_iteration_then_resume_gives_the_same_run(setup, tmp_path):
    model_dir, prompts, reference = setup
    run, marker = tmp_path / "run", tmp_path / "paused"
    # Call 1 scores the start evaluation, call k + 1 iteration k's samples: call 6 pauses in
    # iteration 5, after checkpoint-4.
    process = _start(
        _settings(model_dir, prompts, run),
        SUPERHF_TEST_PAUSE_AT="6",
        SUPERHF_TEST_MARKER=str(marker),
    )
    _wait_for(marker, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-2", "checkpoint-4"]
    assert len(_metrics(run)) == 5  # the start evaluation and iterations 1-4

    code, output = _finish(_start(["--resume", str(run)]))
    assert code == 0, output
    assert "Resuming from" in output and "checkpoint-4" in output
    _assert_same_run(run, reference)


def test_sigterm_saves_then_resume_gives_the_same_run(setup, tmp_path):
    model_dir, prompts, reference = setup
    run, marker = tmp_path / "run", tmp_path / "paused"
    process = _start(
        _settings(model_dir, prompts, run),
        SUPERHF_TEST_PAUSE_AT="4",  # iteration 3
        SUPERHF_TEST_PAUSE_SECONDS="2",
        SUPERHF_TEST_MARKER=str(marker),
    )
    _wait_for(marker, process)
    process.send_signal(signal.SIGTERM)
    code, output = _finish(process)
    assert code == 128 + signal.SIGTERM, output
    assert "Stopped by SIGTERM after iteration 3" in output
    assert f"superhf train --resume {run}" in output.replace("\n", "")
    assert list_checkpoints(run)[-1].name == "checkpoint-3"
    assert not (run / "adapter_model.safetensors").exists()  # the final model is not written yet

    code, output = _finish(_start(["--resume", str(run)]))
    assert code == 0, output
    _assert_same_run(run, reference)


def test_corrupt_latest_checkpoint_resumes_from_the_one_before(setup, tmp_path):
    import shutil

    model_dir, prompts, reference = setup
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    newest = list_checkpoints(run)[-1]
    assert newest.name == "checkpoint-6"
    (newest / "optimizer.pt").write_bytes(b"torn write")
    code, output = _finish(_start(["--resume", str(run)]))
    assert code == 0, output
    assert "checkpoint-6 is not usable" in output.replace("\n", "")
    assert "Resuming from" in output and "checkpoint-4" in output
    _assert_same_run(run, reference)


# --- in-process faults --------------------------------------------------------------------------


def _config(tmp_path, model_dir, **overrides) -> SuperHFConfig:
    values = dict(
        model_name_or_path=str(model_dir),
        num_generations=4,
        max_completion_length=8,
        prompts_per_iteration=4,
        per_device_train_batch_size=4,
        max_iterations=2,
        top_k=20,
        learning_rate=1e-2,
        output_dir=str(tmp_path / "run"),
        seed=0,
        eval_on_start=False,
    )
    return SuperHFConfig(**{**values, **overrides})


def _length_reward(prompts, completions, **kw):
    return [len(c) / 40 for c in completions]


def test_logs_written_after_the_checkpoint_are_cut_back_on_resume(tmp_path, tiny_model_dir):
    """A run killed after logging iteration 2 but before checkpointing it: its samples and
    held-out answers of iteration 2 are past the sizes checkpoint-1 recorded. Resuming cuts
    both files back and logs iteration 2 once, as the uninterrupted run did."""
    import shutil

    settings = dict(save_steps=1, eval_steps=1, num_eval_prompts=4, eval_on_start=True)
    reference = tmp_path / "reference" / "run"
    SuperHFTrainer(
        reward_funcs=_length_reward,
        args=_config(tmp_path / "reference", tiny_model_dir, **settings),
        train_dataset=PROMPTS,
    ).train()
    run = tmp_path / "killed" / "run"
    shutil.copytree(reference, run)
    shutil.rmtree(run / "checkpoints" / "checkpoint-2")  # the kill came before this save
    trainer = SuperHFTrainer(
        reward_funcs=_length_reward,
        args=_config(tmp_path / "killed", tiny_model_dir, **settings),
        train_dataset=PROMPTS,
    )
    trainer.train(resume_from_checkpoint=str(run))
    for name in ("completions.jsonl", "eval_completions.jsonl"):
        rows = [json.loads(line) for line in (run / name).read_text().splitlines()]
        assert sorted({r["iteration"] for r in rows}) == ([0, 1, 2] if "eval" in name else [1, 2])
        assert (run / name).read_text() == (reference / name).read_text(), name


def test_too_many_non_finite_steps_stop_the_run_with_a_checkpoint(
    tmp_path, tiny_model_dir, monkeypatch
):
    import superhf.train.update

    config = _config(tmp_path, tiny_model_dir, max_skipped_minibatches=2, max_iterations=4)
    trainer = SuperHFTrainer(reward_funcs=_length_reward, args=config, train_dataset=PROMPTS)
    real_loss = superhf.train.update.superhf_loss

    def nan_loss(*args, **kwargs):  # as if the loss overflowed on every minibatch
        out = real_loss(*args, **kwargs)
        out.sft_loss = out.sft_loss * float("nan")
        return out

    monkeypatch.setattr(superhf.train.update, "superhf_loss", nan_loss)
    trainable = trainer.training_state.trainable_parameters
    before = {n: p.detach().clone() for n, p in trainable().items()}
    with pytest.raises(TrainingError, match="max_skipped_minibatches=2") as info:
        trainer.train()
    assert "stopped after iteration 2" in str(info.value)
    assert "checkpoint-2" in str(info.value)
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["num_skipped_minibatches_total"] for m in metrics] == [1, 2]
    for name, param in trainable().items():
        assert torch.equal(param.detach(), before[name]), name


def test_out_of_memory_in_fine_tuning_halves_the_micro_batch_and_keeps_the_gradient(
    tmp_path, tiny_model_dir
):
    from superhf.generation import Completion

    samples = [Completion(i % 2, f"answer number {i} " * (i + 1), 3, False) for i in range(8)]
    results = []
    for limit in (None, 1):
        config = _config(tmp_path / str(limit), tiny_model_dir, use_peft=False, beta=0.35)
        trainer = SuperHFTrainer(reward_funcs=_length_reward, args=config, train_dataset=PROMPTS)
        if limit is not None:
            forward = trainer.model.forward

            def limited(*args, forward=forward, limit=limit, **kwargs):
                if kwargs["input_ids"].shape[0] > limit:
                    raise torch.OutOfMemoryError("CUDA out of memory.")
                return forward(*args, **kwargs)

            trainer.model.forward = limited
        start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        metrics = trainer.fine_tune(samples, trainer.prompts[:2])
        weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        # the first iteration trains (warm-up starts above 0), so the comparison means something
        assert any((weights[n] - start[n]).abs().max() > 1e-3 for n in start)
        results.append((metrics, weights))
        assert trainer.backoff.train_micro_batch_size == (4 if limit is None else 1)
    (plain, plain_weights), (halved, halved_weights) = results
    assert halved["num_oom_retries"] == 2  # 4 -> 2 -> 1
    for key in ("loss", "loss/sft", "loss/kl", "kl"):
        assert math.isclose(plain[key], halved[key], rel_tol=1e-4), key
    for name, weight in plain_weights.items():
        # Adam's first step divides by |gradient|: float noise of the split is amplified for
        # gradients near eps, up to ~1e-5 here against updates of up to lr = 1e-2.
        torch.testing.assert_close(halved_weights[name], weight, rtol=1e-4, atol=2e-5)


def test_out_of_memory_in_generation_halves_the_batch_and_keeps_every_sample(
    tmp_path, tiny_model_dir, monkeypatch
):
    config = _config(tmp_path, tiny_model_dir, num_generations=4, generation_batch_size=16)
    trainer = SuperHFTrainer(reward_funcs=_length_reward, args=config, train_dataset=PROMPTS)
    import superhf.generation

    sample = superhf.generation.sample_shared_prompts

    def limited(model, prompts, samples, *args):
        if len(prompts) * samples > 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")
        return sample(model, prompts, samples, *args)

    monkeypatch.setattr(superhf.generation, "sample_shared_prompts", limited)
    metrics = trainer.step(trainer.prompts[:4], 1)
    assert trainer.backoff.generation_batch_size == 2
    assert metrics["num_oom_retries"] == 3  # 16 -> 8 -> 4 -> 2
    assert metrics["num_completions"] + metrics["completions/num_empty"] == 16


def test_other_runtime_errors_are_not_taken_for_out_of_memory(
    tmp_path, tiny_model_dir, monkeypatch
):
    trainer = SuperHFTrainer(
        reward_funcs=_length_reward,
        args=_config(tmp_path, tiny_model_dir),
        train_dataset=PROMPTS,
    )
    import superhf.generation

    def broken(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(superhf.generation, "sample_shared_prompts", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        trainer.step(trainer.prompts[:4], 1)


def test_full_disk_while_saving_warns_and_training_goes_on(tmp_path, tiny_model_dir, monkeypatch):
    import errno

    import superhf.train.checkpoint

    config = _config(tmp_path, tiny_model_dir, max_iterations=2, save_steps=1)
    trainer = SuperHFTrainer(reward_funcs=_length_reward, args=config, train_dataset=PROMPTS)
    real_save = superhf.train.checkpoint.torch.save
    calls = []

    def save_until_full(obj, path, *a, **kw):
        calls.append(str(path))
        if "checkpoint-2" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, path, *a, **kw)

    monkeypatch.setattr(superhf.train.checkpoint.torch, "save", save_until_full)
    from rich.console import Console

    trainer.console = Console(record=True, width=200)
    history = trainer.train()
    assert len(history) == 2
    text = trainer.console.export_text()
    assert "Checkpoint not saved" in text and "No space left on device" in text
    assert "checkpoint-1 is intact" in text
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint-1"]
    assert (tmp_path / "run" / "adapter_model.safetensors").exists()
