"""TRL GRPO and RLOO as `superhf compare` rows, on the tiny random Llama: one or two updates.

They stop at the sampled-token budget (within one update of it), write what the comparison
reads (progress.jsonl, settings.json, done.json, an adapter `superhf.models.load_policy`
loads), and their reward model reads byte for byte the text it reads in a SuperHF run.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from superhf.compare.spec import DONE_FILE, PROGRESS_FILE, SETTINGS_FILE, MethodRun
from superhf.errors import ConfigError
from tests.compare import rewards
from tests.test_reward_text_e2e import RecordingReward

pytest.importorskip(
    "trl", reason="the TRL baselines need the compare extra: pip install '.[compare]'"
)

QUESTIONS = [f"How do I look after plant number {i}?" for i in range(12)]


def _rows(form: str) -> list[dict[str, Any]]:
    if form == "plain":
        return [{"prompt": f"Question: {q}\nAnswer:"} for q in QUESTIONS]
    if form == "hh-transcript":
        return [
            {"chosen": f"\n\nHuman: {q}\n\nAssistant: Water it.", "rejected": "x"}
            for q in QUESTIONS
        ]
    if form == "conversation":
        return [
            {"prompt": [{"role": "user", "content": q}], "source": f"s{i}"}
            for i, q in enumerate(QUESTIONS)
        ]
    raise ValueError(form)


def _run(
    tmp_path: Path, model_dir: Path, method: str, form: str = "plain", **overrides
) -> MethodRun:
    data = tmp_path / f"{form}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(form)), encoding="utf-8")
    values: dict[str, Any] = dict(
        method=method,
        output_dir=str(tmp_path / method),
        model_name_or_path=str(model_dir),
        dataset_name=str(data),
        dataset_train_split="train",
        apply_chat_template=False,
        max_prompt_length=128,
        reward_funcs=["tests.compare.rewards:length_reward"],
        reward_weights=None,
        test_reward_model=None,
        num_generations=2,
        max_completion_length=4,
        temperature=1.0,
        top_p=0.95,
        prompts_per_step=2,
        learning_rate=1e-3,
        beta=0.1,
        seed=0,
        sampled_token_budget=20,
    )
    return MethodRun(**{**values, **overrides})


def _read_progress(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (folder / PROGRESS_FILE).read_text().splitlines()]


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_stops_at_the_token_budget_and_writes_the_run(method, tmp_path, tiny_model_dir):
    from superhf.compare.trl_baselines import run_trl_baseline
    from superhf.models import load_policy

    run = _run(tmp_path, tiny_model_dir, method)
    run_trl_baseline(run)
    out = Path(run.output_dir)

    # 2 prompts x 2 samples x 4 tokens a step (the random model never samples its EOS): the
    # budget of 20 is crossed by the second step, and the run stops there.
    records = _read_progress(out)
    assert [r["step"] for r in records] == [1, 2]
    assert [r["sampled_tokens"] for r in records] == [16, 32]
    assert records[-1]["sampled_tokens"] >= run.sampled_token_budget > records[-2]["sampled_tokens"]
    assert all(r["train_reward"] > 0 and r["peak_memory_mb"] > 0 for r in records)
    assert records[0]["wall_time_s"] < records[1]["wall_time_s"]
    for r, before in zip(records, [0.0, records[0]["wall_time_s"]], strict=True):
        stages = r["seconds_sampling"] + r["seconds_scoring"] + r["seconds_update"]
        assert r["seconds_sampling"] > 0 and r["seconds_scoring"] > 0
        assert stages == pytest.approx(r["wall_time_s"] - before, rel=1e-6)

    done = json.loads((out / DONE_FILE).read_text())
    assert done["stop_reason"] == "sampled_token_budget" and done["sampled_tokens"] == 32
    assert done["optimizer_steps"] == done["generation_rounds"] == 2  # one step per round
    settings = json.loads((out / SETTINGS_FILE).read_text())
    trl_config = settings["trl_config"]
    expected = {
        "num_generations": 2,
        "max_completion_length": 4,
        "temperature": 1.0,
        "top_p": 0.95,
        "top_k": 0,
        "learning_rate": 1e-3,
        "beta": 0.1,
        "per_device_train_batch_size": 4,
        "generation_batch_size": 4,
        "steps_per_generation": 1,
        "seed": 0,
        "bf16": False,
        "report_to": [],
        "max_grad_norm": 1.0,
        "disable_dropout": True,
    }
    if method == "grpo":
        expected["loss_type"] = "dapo"
    assert {k: trl_config[k] for k in expected} == expected
    assert settings["run"]["method"] == method and not settings["notes"]
    # no evaluation along the run: no reward-hacking monitor
    assert settings["reward_hacking_monitor"] is None and not (out / "monitor.jsonl").exists()
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model_name_or_path"] == str(tiny_model_dir)

    model, _, reference, _ = load_policy(str(out))
    assert reference is model  # a LoRA adapter: its reference is itself, adapter disabled
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == run.lora_r and set(adapter["target_modules"]) == set(
        run.lora_target_modules
    )


def test_trl_warms_up_on_superhfs_schedule(tmp_path, tiny_model_dir):
    """transformers' constant_with_warmup trains step 0 at rate 0; the baselines step on
    SuperHF's schedule, whose first update trains at learning_rate / warmup_steps."""
    from superhf.compare.trl_baselines import build_trl_trainer

    extra = {"lr_scheduler_type": "constant_with_warmup", "warmup_steps": 2}
    trainer, *_ = build_trl_trainer(_run(tmp_path, tiny_model_dir, "grpo", extra=extra))
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    rates = []
    for _ in range(3):
        rates.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert rates == pytest.approx([0.5e-3, 1e-3, 1e-3])


def test_extra_overrides_a_trl_field_and_refuses_an_unknown_one(tmp_path, tiny_model_dir):
    from superhf.compare.trl_baselines import build_trl_trainer

    run = _run(tmp_path, tiny_model_dir, "grpo", extra={"loss_type": "grpo", "max_steps": 1})
    trainer, _, _, _ = build_trl_trainer(run)
    assert trainer.args.loss_type == "grpo" and trainer.args.max_steps == 1
    with pytest.raises(ConfigError, match=r"extra: \['los_type'\]"):
        build_trl_trainer(replace(run, extra={"los_type": "grpo"}))
    with pytest.raises(
        ConfigError, match="at least 2 generations"
    ):  # TRL's own check, as our error
        build_trl_trainer(replace(run, num_generations=1))


@pytest.mark.parametrize(
    ("prompts", "generations", "micro", "accumulation"), [(4, 8, 8, 4), (3, 4, 4, 3)]
)
def test_one_generation_round_per_optimizer_step(
    prompts, generations, micro, accumulation, tmp_path
):
    """TRL 1.16 derives steps_per_generation from the accumulation: one round per update."""
    import trl

    from superhf.compare.trl_baselines import trl_settings

    run = _run(tmp_path, tmp_path, "grpo", prompts_per_step=prompts, num_generations=generations)
    args = trl.GRPOConfig(**trl_settings(run, use_cpu=True))
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (
        micro,
        accumulation,
    )
    assert args.generation_batch_size == prompts * generations
    assert args.steps_per_generation == accumulation and args.num_iterations == 1


def test_missing_trl_names_the_extra(tmp_path, tiny_model_dir, monkeypatch):
    from superhf.compare.trl_baselines import run_trl_baseline

    monkeypatch.setitem(sys.modules, "trl", None)  # `import trl` raises ImportError
    with pytest.raises(ConfigError, match=r"superhf\[compare\]"):
        run_trl_baseline(_run(tmp_path, tiny_model_dir, "grpo"))


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny sequence-classification reward model with SmolLM2's tokenizer (chat template)."""
    from tests.conftest import make_tiny_llama

    model = make_tiny_llama(len(tokenizer), head="sequence-classification", num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    path = tmp_path_factory.mktemp("rm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("form", ["conversation", "hh-transcript"])
def test_reward_model_reads_what_it_reads_under_superhf(form, rm_dir, tmp_path, tiny_model_dir):
    """One GRPO update; then SuperHF's own path (SuperHFTrainer's prompts, its cut of the same
    sampled ids, `SuperHFTrainer.score`) scores the same prompts and completions. Both reward
    models receive the same (prompt, completion) pairs and tokenize the same texts."""
    from superhf.compare.trl_baselines import build_trl_trainer
    from superhf.config import SuperHFConfig
    from superhf.generation import stop_token_ids, trim_completion
    from superhf.train.trainer import SuperHFTrainer

    run = _run(
        tmp_path,
        tiny_model_dir,
        "grpo",
        form,
        reward_funcs=["tests.compare.rewards:recording_reward"],
        extra={"max_steps": 1},
    )
    grpo_rm = rewards.RECORDERS["current"] = RecordingReward(str(rm_dir))
    trainer, reward, _, _ = build_trl_trainer(run)
    trainer.train()
    sampled = reward.last_samples  # (index into the baseline's prompts, sampled ids)
    assert len(sampled) == len(grpo_rm.samples) == 4

    superhf_rm = rewards.RECORDERS["current"] = RecordingReward(str(rm_dir))
    config = SuperHFConfig(
        model_name_or_path=str(tiny_model_dir),
        dataset_name=run.dataset_name,
        max_prompt_length=run.max_prompt_length,
        reward_funcs=run.reward_funcs,
        num_eval_prompts=0,
        use_peft=False,
        output_dir=str(tmp_path / "superhf"),
    )
    superhf = SuperHFTrainer(args=config)
    by_text = {p.text: j for j, p in enumerate(superhf.prompts)}
    stops = stop_token_ids(superhf.model, superhf.tokenizer)
    completions = [
        trim_completion(
            ids, stops, config.stop_sequences, superhf.tokenizer, by_text[reward.prompts[i].text]
        )
        for i, ids in sampled
    ]
    superhf.score(superhf.prompts, completions)

    assert grpo_rm.samples == superhf_rm.samples
    assert grpo_rm.recorder.texts == superhf_rm.recorder.texts
    # The reward saw the dataset's prompt (messages, HH form), the policy its rendering.
    prompt, _ = grpo_rm.samples[0]
    if form == "conversation":
        assert isinstance(prompt, list) and prompt[0]["role"] == "user"
        assert grpo_rm.recorder.texts[0].startswith("<|im_start|>")
    else:
        assert prompt.startswith("\n\nHuman: How do I") and prompt.endswith("\n\nAssistant:")


def test_in_run_evaluation_is_superhfs(tmp_path, tiny_model_dir):
    """The held-out curve of a baseline is SuperHF's: the same held-out prompts, sampling,
    seeds and rewards give the same numbers for the same policy (the start: LoRA starts at 0)."""
    from superhf.compare.baseline_run import InRunEvaluation, split_prompts
    from superhf.compare.methods import superhf_config
    from superhf.models import load_model, load_tokenizer
    from superhf.rewards.scoring import RewardScorer, load_reward_funcs
    from superhf.train.trainer import SuperHFTrainer

    held = {"num_eval_prompts": 3, "eval_steps": 1}
    run = _run(
        tmp_path,
        tiny_model_dir,
        "grpo",
        test_reward_model="tests.compare.rewards:vowels",
        max_completion_length=6,
        extra=held,
    )
    trainer = SuperHFTrainer(args=superhf_config(replace(run, method="superhf")))
    expected = trainer.evaluate()

    tokenizer = load_tokenizer(str(tiny_model_dir))
    train, heldout = split_prompts(run, tokenizer)
    assert [p.text for p in heldout] == [p.text for p in trainer.eval_prompts]
    assert len(train) == len(QUESTIONS) - 3
    evaluation = InRunEvaluation(run, heldout, RewardScorer(load_reward_funcs(run.reward_funcs)[0]))
    numbers, seconds = evaluation(load_model(str(tiny_model_dir)), tokenizer)
    assert seconds > 0
    for key in ("reward", "test_reward", "mean_length"):
        assert numbers[key] == pytest.approx(expected[f"eval_{key}"], abs=1e-6), key
    assert evaluation.due(1, last=False) and not InRunEvaluation(
        replace(run, extra={}), heldout, evaluation.scorer
    ).due(1, last=True)


def test_baseline_logs_the_held_out_curve(tmp_path, tiny_model_dir):
    from superhf.compare.trl_baselines import run_trl_baseline

    run = _run(
        tmp_path,
        tiny_model_dir,
        "grpo",
        test_reward_model="tests.compare.rewards:vowels",
        sampled_token_budget=40,
        extra={"num_eval_prompts": 2, "eval_steps": 2},
    )
    run_trl_baseline(run)
    records = _read_progress(Path(run.output_dir))
    # 2 x 2 x 4 = 16 tokens a step: the budget of 40 ends step 3; evaluations of the start
    # (step 0, nothing sampled), at step 2 and after the last
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert records[0]["sampled_tokens"] == 0 and records[0]["train_reward"] is None
    evaluated = [r["step"] for r in records if r["eval_test_reward"] is not None]
    assert evaluated == [0, 2, 3]
    assert all(0 <= r["eval_test_reward"] <= 1 for r in records if r["step"] in evaluated)
    assert records[1]["eval_reward"] is None
    done = json.loads((Path(run.output_dir) / DONE_FILE).read_text())
    assert done["steps"] == 3

    # The reward-hacking monitor made those evaluations (once): its rows hold progress's
    # numbers at the same steps, its sampled tokens the budget's, and results.json reads it.
    rows = [
        json.loads(x) for x in (Path(run.output_dir) / "monitor.jsonl").read_text().splitlines()
    ]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    assert [r["iteration"] for r in rows if "eval_reward" in r] == evaluated
    for row, record in zip(rows, records, strict=True):
        assert row["num_sampled_tokens_total"] == record["sampled_tokens"]
        assert row.get("eval_reward") == record["eval_reward"]
        assert row.get("eval_test_reward") == record["eval_test_reward"]
        assert "reward_hacking" in row and "reward_hacking_signals" in row
    assert all("completions/distinct_2" in r for r in rows[1:])
    assert all(r["eval_entropy"] > 0 for r in rows if "eval_reward" in r)
    answers = (Path(run.output_dir) / "eval_completions.jsonl").read_text().splitlines()
    assert len(answers) == 2 * len(evaluated)  # 2 held-out prompts per evaluation, no more
    settings = json.loads((Path(run.output_dir) / SETTINGS_FILE).read_text())
    assert settings["reward_hacking_monitor"]["eval_steps"] == 2
    from superhf.compare.results import run_record

    record = run_record(run, {"status": "done"}, None, False)
    assert record["monitored"] and record["reward_hacking"] == []


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_trains_through_the_stop_sequence_as_superhf_does(
    method, tmp_path, tiny_model_dir, monkeypatch
):
    """The ids the TRL loss trains on are SuperHF's (`trim_completion`'s token_ids): a sample
    that wrote a stop sequence is trained on through the token completing it, not on to its
    EOS; the budget still counts every sampled id. The random model writes "e" often, so a stop
    sequence "e" cuts most samples."""
    import trl

    from superhf.compare.trl_baselines import build_trl_trainer
    from superhf.models import load_tokenizer

    trained: list[list[int]] = []
    base = trl.GRPOTrainer if method == "grpo" else trl.RLOOTrainer
    original = base.compute_loss

    def recording_loss(self, model, inputs, *args, **kwargs):
        for ids, mask in zip(inputs["completion_ids"], inputs["completion_mask"], strict=True):
            trained.append([int(t) for t, m in zip(ids, mask, strict=True) if m])
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(base, "compute_loss", recording_loss)
    run = _run(
        tmp_path,
        tiny_model_dir,
        method,
        max_completion_length=8,
        extra={"max_steps": 1, "stop_sequences": ["e"]},
    )
    trainer, reward, _, _ = build_trl_trainer(run)
    trainer.train()
    tokenizer = load_tokenizer(str(tiny_model_dir))
    assert len(trained) == 4
    cut = 0
    for ids in trained:
        assert reward.completion(ids).token_ids == ids  # already SuperHF's cut
        if "e" in tokenizer.decode(ids):
            cut += 1
            assert "e" not in tokenizer.decode(ids[:-1])  # nothing after the stop sequence
    assert cut >= 1
    assert reward.sampled_tokens == 4 * 8 > sum(len(ids) for ids in trained)
