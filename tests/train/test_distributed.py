"""One run over two CPU processes (gloo) is the one-process run, and survives faults; so is
one over two FSDP2 processes (the policy sharded, gloo).

The runs are real `accelerate launch` / `torchrun` processes on the tiny random-init model with
a deterministic length reward. Their setting makes batch shapes match between the layouts:
generation_batch_size = num_generations (each prompt sampled alone, so no padding differs),
float32 sampling (the held-out prompts, one sample each, still share calls: 4 in one call on one
process, 2 and 2 on two; with a bf16 copy on an AMX CPU those batch shapes round differently and
a sampled token changed, while fp32 gives every row the same logits whatever the batch) and
lora_dropout 0 (dropout masks come from each process's own stream). Fine-tuning batches do
differ in shape (one minibatch of 4 vs two of 2), so the weights match to float tolerance.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from superhf.config import ConfigError, SamplingSettings, SuperHFConfig
from superhf.generation import generate_completions
from superhf.train.distributed import Processes
from superhf.train.trainer import SuperHFTrainer

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [{"prompt": f"Question {i}: tell me about topic {i}."} for i in range(40)]
TIMING = ("time/", "step_time", "tokens_per_second", "peak_memory_mb")
PER_DEVICE = ("train_micro_batch_size",)  # the micro-batch in use is per process
_calls = 0


def length_reward(prompts, completions, **kw):
    """Longer is better. On call SUPERHF_TEST_PAUSE_AT of the process whose RANK is
    SUPERHF_TEST_PAUSE_RANK, write its pid to SUPERHF_TEST_MARKER and sleep."""
    global _calls
    _calls += 1
    paused = os.environ.get("SUPERHF_TEST_PAUSE_RANK") == os.environ.get("RANK")
    if paused and str(_calls) == os.environ.get("SUPERHF_TEST_PAUSE_AT"):
        Path(os.environ["SUPERHF_TEST_MARKER"]).write_text(str(os.getpid()))
        time.sleep(float(os.environ.get("SUPERHF_TEST_PAUSE_SECONDS", "600")))
    return [len(c) / 40 for c in completions]


def _settings(model_dir: Path, prompts: Path, output_dir: Path, per_device: int) -> list[str]:
    return [
        "--model_name_or_path", str(model_dir),
        "--dataset_name", str(prompts),
        "--reward_funcs", "tests.train.test_distributed:length_reward",
        "--num_generations", "4",
        "--generation_batch_size", "4",
        "--num_kept_per_prompt", "2",
        "--max_completion_length", "8",
        "--prompts_per_iteration", "4",
        "--per_device_train_batch_size", str(per_device),
        "--max_iterations", "3",
        "--save_steps", "2",
        "--learning_rate", "1e-2",
        "--lora_dropout", "0",
        "--top_k", "20",
        "--sampling_dtype", "float32",
        "--seed", "3",
        "--num_eval_prompts", "4",
        "--eval_steps", "3",
        "--ddp_timeout", "60",
        "--output_dir", str(output_dir),
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launcher(kind: str, script: str | None = None) -> list[str]:
    """Two processes with `kind` ("accelerate", "torchrun", "fsdp": accelerate with
    configs/accelerate/fsdp_cpu_2proc.yaml), or one ("python")."""
    target = [script] if script else ["-m", "superhf"]
    if kind == "python":
        return [sys.executable, *target]
    if kind == "fsdp":
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(ROOT / "configs/accelerate/fsdp_cpu_2proc.yaml"),
                "--main_process_port", str(_free_port()), *target]  # fmt: skip
    if kind == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", "2", *target]  # fmt: skip
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
            *target]  # fmt: skip


def _start(command: list[str], args: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*command, "train", *args],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}",
            "COLUMNS": "400",
            "OMP_NUM_THREADS": "1",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(process: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def _wait_for(marker: Path, process: subprocess.Popen, timeout: float = 300) -> int:
    deadline = time.monotonic() + timeout
    while not (marker.exists() and marker.read_text()):
        if process.poll() is not None:
            raise AssertionError(f"run ended before pausing:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError("run never reached the pause")
        time.sleep(0.1)
    return int(marker.read_text())


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(TIMING + PER_DEVICE)} for r in rows]


def _assert_same_run(run: Path, reference: Path, rel: float = 1e-5, skip: tuple = ()) -> None:
    """The same completions, rewards and kept samples; losses and weights to float tolerance."""
    assert (run / "completions.jsonl").read_text() == (reference / "completions.jsonl").read_text()
    got, expected = _metrics(run), _metrics(reference)
    assert [m["iteration"] for m in got] == [m["iteration"] for m in expected] == [0, 1, 2, 3]
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys()
        for key in set(a) - set(skip):
            if isinstance(b[key], float):
                assert math.isclose(a[key], b[key], rel_tol=rel, abs_tol=1e-7), (key, a, b)
            else:
                assert a[key] == b[key], (key, a, b)
    weights, expected_weights = (
        load_file(r / "adapter_model.safetensors") for r in (run, reference)
    )
    assert weights.keys() == expected_weights.keys()
    for name in weights:
        torch.testing.assert_close(weights[name], expected_weights[name], rtol=1e-4, atol=1e-5)


def _one_process_trainer(runs, output_dir: Path, prompts_per_iteration: int) -> SuperHFTrainer:
    """An in-process trainer with the runs' model, prompts and seed, to resume `output_dir`."""
    config = SuperHFConfig(
        model_name_or_path=str(runs.model),
        dataset_name=str(runs.prompts),
        output_dir=str(output_dir),
        max_iterations=3,
        prompts_per_iteration=prompts_per_iteration,
        num_eval_prompts=4,
        seed=3,
    )
    return SuperHFTrainer(reward_funcs=length_reward, args=config)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """The same run on one process (minibatch 4) and on two (2 per process), uninterrupted."""
    root = tmp_path_factory.mktemp("distributed")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
    one, two = root / "one", root / "two"
    code, output = _finish(_start(_launcher("python"), _settings(tiny_model_dir, prompts, one, 4)))
    assert code == 0, output
    args = _settings(tiny_model_dir, prompts, two, 2)
    code, output = _finish(_start(_launcher("accelerate"), args))
    assert code == 0, output
    assert output.count("Done.") == 1, output  # only the main process speaks
    return SimpleNamespace(model=tiny_model_dir, prompts=prompts, one=one, two=two)


FSDP_SETTINGS = ["--prompts_per_iteration", "5", "--num_kept_per_prompt", "1"]
"""5 kept samples in minibatches of 4 and 1: the second leaves process 1 nothing to train on,
so it runs idle passes. (With float32 sampling, as in all these runs, the FSDP run samples and
evaluates from its whole copy, the one-process run from the policy itself.)"""


@pytest.fixture(scope="module")
def fsdp_runs(runs):
    """The same run on one process (minibatch 4) and on two FSDP2 processes (2 per process)."""
    one, two = runs.prompts.parent / "fsdp-one", runs.prompts.parent / "fsdp-two"
    args = [*_settings(runs.model, runs.prompts, one, 4), *FSDP_SETTINGS]
    code, output = _finish(_start(_launcher("python"), args))
    assert code == 0, output
    args = [*_settings(runs.model, runs.prompts, two, 2), *FSDP_SETTINGS]
    code, output = _finish(_start(_launcher("fsdp"), args))
    assert code == 0, output
    assert "2 processes (FSDP2: the policy sharded" in output, output
    return SimpleNamespace(one=one, two=two, output=output)


# --- fast: the pieces ---------------------------------------------------------------------------


def _processes(rank: int, size: int) -> Processes:
    accelerator = SimpleNamespace(process_index=rank, num_processes=size, device="cpu")
    return Processes(accelerator, "runs/x")


def test_a_finished_process_of_many_ends_with_its_code_before_pythons_shutdown(monkeypatch, capsys):
    """Many processes: gloo's worker threads outlive destroy_process_group (the policy's DDP
    reducer or FSDP2 mesh holds the group), and one dropping its last collective while Python
    finalizes aborts the process; so the process flushes and leaves by os._exit. Alone: it
    returns, and Python ends as usual."""
    ended = []

    def fake_exit(code: int) -> None:
        ended.append((code, capsys.readouterr().out))

    monkeypatch.setattr(os, "_exit", fake_exit)
    _processes(0, 1).exit(0)
    assert ended == []
    print("Done.", end="")  # written before the exit, flushed by it
    _processes(1, 2).exit(143)
    assert ended == [(143, "Done.")]


@pytest.mark.parametrize("count", [0, 1, 5, 8])
def test_blocks_are_contiguous_whole_and_in_rank_order(count):
    blocks = [list(_processes(r, 3).block(count)) for r in range(3)]
    assert [i for b in blocks for i in b] == list(range(count))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= (1 if count else 0)


def test_global_minibatches_are_the_one_process_minibatches_split():
    encoded = [([1], [7] * (i + 1)) for i in range(7)]  # 7 examples of 1..7 completion tokens

    def count(rows):
        return sum(len(c) for _, c in rows)

    one = _processes(0, 1).minibatches(encoded, 4, count)
    halves = [_processes(r, 2).minibatches(encoded, 2, count) for r in range(2)]
    assert [len(mb) for mb, _, _ in one] == [4, 3]
    for m, (whole, tokens, count) in enumerate(one):
        assert halves[0][m][0] + halves[1][m][0] == whole
        assert halves[0][m][1:] == halves[1][m][1:] == (tokens, count)
        assert tokens == sum(len(c) for _, c in whole)


def test_a_prompt_gets_the_same_samples_alone_or_in_any_batch(tokenizer, tiny_model_dir):
    from superhf.models import load_model

    model = load_model(str(tiny_model_dir), "float32")
    texts = ["Tell me a story.", "What is up?", "Name a colour.", "Hello there"]
    config = SamplingSettings(num_generations=4, max_completion_length=10, top_k=20)
    seeds = [11, 22, 33, 44]
    whole, _ = generate_completions(model, tokenizer, texts, config, 16, seeds)
    split, _ = generate_completions(model, tokenizer, texts, config, 2, seeds)  # 2 per call
    alone, _ = generate_completions(model, tokenizer, texts[2:3], config, 4, seeds[2:3])
    ids = [c.token_ids for c in whole]
    assert ids == [c.token_ids for c in split]
    assert [c.token_ids for c in whole if c.prompt_index == 2] == [c.token_ids for c in alone]
    assert len({tuple(i) for i in ids}) > len(texts)  # the samples of a prompt differ
    other, _ = generate_completions(model, tokenizer, texts, config, 16, [5, 6, 7, 8])
    assert [c.token_ids for c in other] != ids


# --- slow: real runs on two processes -----------------------------------------------------------


@pytest.mark.slow
def test_two_processes_equal_one_process_of_the_same_global_batch(runs):
    _assert_same_run(runs.two, runs.one)
    state = json.loads((runs.two / "checkpoints/checkpoint-3/trainer_state.json").read_text())
    assert state["num_processes"] == 2
    files = {p.name for p in (runs.two / "checkpoints/checkpoint-3").iterdir()}
    assert {"rng_state.json", "rng_state_rank1.json", "rng_state_rank1.safetensors"} <= files


@pytest.mark.slow
def test_resuming_on_another_number_of_processes_is_refused(runs, tmp_path):
    trainer = _one_process_trainer(runs, runs.two, prompts_per_iteration=4)
    with pytest.raises(ConfigError, match="written by 2 processes; this run has 1"):
        trainer.train(resume_from_checkpoint=str(runs.two))


@pytest.mark.slow
def test_a_killed_process_stops_the_other_in_bounded_time_and_resume_continues(runs, tmp_path):
    run, marker = tmp_path / "run", tmp_path / "paused"
    args = _settings(runs.model, runs.prompts, run, 2)
    # call 4 of process 1: the scoring of iteration 3 (after eval at start, iterations 1, 2)
    process = _start(
        _launcher("torchrun"),
        args,
        SUPERHF_TEST_PAUSE_RANK="1",
        SUPERHF_TEST_PAUSE_AT="4",
        SUPERHF_TEST_MARKER=str(marker),
    )
    pid = _wait_for(marker, process)
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    code, output = _finish(process, timeout=120)
    assert time.monotonic() - killed < 90, output  # not the 30-minute default
    assert code != 0
    assert "lost contact with the others" in output or "exitcode  : -9" in output, output
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("checkpoint")] == [
        "checkpoint-2"
    ]
    code, output = _finish(_start(_launcher("torchrun"), ["--resume", str(run)]))
    assert code == 0, output
    _assert_same_run(run, runs.two, rel=1e-9)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_after_the_same_iteration(runs, tmp_path):
    run, marker = tmp_path / "run", tmp_path / "paused"
    args = [*_settings(runs.model, runs.prompts, run, 2), "--save_steps", "5"]
    # process 1 pauses 5 s in iteration 2's scoring; SIGTERM reaches it alone meanwhile
    process = _start(
        _launcher("torchrun"),
        args,
        SUPERHF_TEST_PAUSE_RANK="1",
        SUPERHF_TEST_PAUSE_AT="3",
        SUPERHF_TEST_PAUSE_SECONDS="5",
        SUPERHF_TEST_MARKER=str(marker),
    )
    os.kill(_wait_for(marker, process), signal.SIGTERM)
    code, output = _finish(process)
    assert code != 0, output
    assert "Stopped by SIGTERM after iteration 2 of 3" in output, output
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-2"], checkpoints
    assert [m["iteration"] for m in _metrics(run)] == [0, 1, 2]


@pytest.mark.slow
def test_out_of_memory_on_one_process_backs_off_on_both(runs, tmp_path):
    run = tmp_path / "run"
    process = _start(
        _launcher("torchrun", str(Path(__file__).with_name("dist_oom_launch.py"))),
        _settings(runs.model, runs.prompts, run, 2),
        SUPERHF_TEST_OOM_RANK="1",
    )
    code, output = _finish(process)
    assert code == 0, output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # process 0 (which writes the log) never ran out of memory itself: it halved by agreement
    assert [r["train_micro_batch_size"] for r in rows if r["iteration"]] == [1, 1, 1]
    assert rows[1]["num_oom_retries"] == 1
    _assert_same_run(run, runs.two, rel=1e-4, skip=("num_oom_retries",))


# --- FSDP2 ----------------------------------------------------------------------------------


def test_two_fsdp_processes_equal_one_process_of_the_same_global_batch(fsdp_runs):
    _assert_same_run(fsdp_runs.two, fsdp_runs.one)
    state = json.loads((fsdp_runs.two / "checkpoints/checkpoint-3/trainer_state.json").read_text())
    assert state["sharded"] is True and state["num_processes"] == 2
    assert fsdp_runs.output.count("Done.") == 1, fsdp_runs.output


@pytest.mark.slow
def test_an_fsdp_run_resumes_from_its_checkpoint_as_if_never_stopped(fsdp_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fsdp_runs.two, run)
    shutil.rmtree(run / "checkpoints/checkpoint-3")  # as if stopped after iteration 2
    code, output = _finish(_start(_launcher("fsdp"), ["--resume", str(run)]))
    assert code == 0, output
    assert "Resuming from" in output and "2 of 3 iterations done" in output, output
    _assert_same_run(run, fsdp_runs.two, rel=1e-9)


@pytest.mark.slow
def test_an_fsdp_checkpoint_is_not_resumed_without_fsdp(runs, fsdp_runs, tmp_path):
    trainer = _one_process_trainer(runs, fsdp_runs.two, prompts_per_iteration=5)
    with pytest.raises(ConfigError, match="written by a run with FSDP; this run is without"):
        trainer.train(resume_from_checkpoint=str(fsdp_runs.two))


@pytest.mark.slow
def test_full_fine_tuning_under_fsdp_equals_one_process(runs, tmp_path):
    extra = [*FSDP_SETTINGS, "--no_use_peft", "--learning_rate", "1e-3"]
    one, two = tmp_path / "one", tmp_path / "two"
    code, output = _finish(
        _start(_launcher("python"), [*_settings(runs.model, runs.prompts, one, 4), *extra])
    )
    assert code == 0, output
    code, output = _finish(
        _start(_launcher("fsdp"), [*_settings(runs.model, runs.prompts, two, 2), *extra])
    )
    assert code == 0, output
    assert (two / "completions.jsonl").read_text() == (one / "completions.jsonl").read_text()
    got, expected = (load_file(r / "model.safetensors") for r in (two, one))
    assert got.keys() == expected.keys()  # the tied lm_head saved once, as save_pretrained does
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"}, "fsdp_version: 2"),
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed is not supported"),
    ],
)
def test_engines_not_supported_are_refused_with_the_fix(monkeypatch, env, message):
    from superhf.train.distributed import make_accelerator

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=message):
        make_accelerator(SuperHFConfig())


@pytest.mark.slow
def test_out_of_memory_under_fsdp_stops_every_process_with_the_fix(runs, tmp_path):
    """FSDP's collectives run inside the forward and backward, so an out-of-memory there can
    not be agreed on: the run ends in bounded time with an error naming the fix."""
    run = tmp_path / "run"
    process = _start(
        _launcher("fsdp", str(Path(__file__).with_name("dist_oom_launch.py"))),
        [*_settings(runs.model, runs.prompts, run, 2), *FSDP_SETTINGS],
        SUPERHF_TEST_OOM_RANK="1",
    )
    started = time.monotonic()
    code, output = _finish(process, timeout=300)
    assert code != 0, output
    assert time.monotonic() - started < 200, output
    assert "out of memory on process 1 while fine-tuning under FSDP" in output, output
    assert "Lower per_device_train_batch_size" in output, output
