"""TRL's GRPO and RLOO (trl==1.16.0) as rows of `superhf compare`, on SuperHF's terms.

    pip install 'superhf[compare]'
    run_trl_baseline(MethodRun(method="grpo", ...))   # or method="rloo"

The start policy and tokenizer load through `superhf.models` (embedded names resolve), LoRA
uses the run's settings, the prompts are `superhf.data`'s in SuperHFTrainer's order
(`baseline_run.split_prompts`), and the reward is superhf's `RewardScorer` reading the
text a SuperHF run's reward reads (`baseline_run.BaselineReward`); each sample is trained on
through the stop sequence that ended it, as SuperHF's are (`stopping_at_sequences`; TRL alone
trains through the EOS). TRL's defaults differ from
ours (GRPO: lr 1e-6, beta 0, bf16 on, gradient checkpointing on, 8 generations, top_p 1), so
every setting that shapes sampling or the update is set here explicitly; `run.extra` overrides
any TRL config field, and the whole final config goes to settings.json.

One update = one generation round: `prompts_per_step` prompts x `num_generations` completions
(generation_batch_size = their product), one optimizer step on all of them (TRL's
num_iterations = 1), accumulated over micro-batches of at most `MAX_MICRO_BATCH` completions
(per_device_train_batch_size x gradient_accumulation_steps = the product, so TRL's
steps_per_generation = gradient_accumulation_steps): the whole batch in one pass held 10.9 GB
for SmolLM2-135M at 4 x 8 x 48 tokens. The run stops after the update whose
sampled completion tokens reach `sampled_token_budget`. A stopped run resumes from its last
checkpoint, taken every few minutes (`superhf.compare.baseline_checkpoint`).

A run that evaluates along the way (`extra["eval_steps"]` > 0, at least 2 held-out prompts)
is watched by the reward-hacking monitor SuperHF runs have (`RewardHackingCallback`): it
answers the held-out prompts at the in-run evaluation's steps, with its seeds and sampling,
and progress.jsonl reads those very numbers (`monitored_run`), so nothing is generated twice;
it also reads every training sample through the reward function (`watch`). Its rows and
warnings go to monitor.jsonl, which `superhf monitor RUN_DIR` replays and results.json reads.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from superhf.compare.baseline_checkpoint import (
    checkpoint_callback,
    checkpoint_step,
    last_checkpoint,
    read_state,
    remove_checkpoints,
)
from superhf.compare.baseline_run import (
    BaselineReward,
    InRunEvaluation,
    ProgressLog,
    check_trl_overrides,
    max_updates,
    prompt_ids_match,
    quiet_trl_args,
    split_extra,
    split_prompts,
    stop_sequences,
    write_run_files,
)
from superhf.compare.spec import MethodRun
from superhf.data import Prompt
from superhf.errors import ConfigError
from superhf.files import MONITOR_FILE

TRL_VERSION = "1.16.0"
METHODS = ("grpo", "rloo")
INSTALL_HINT = "pip install 'superhf[compare]'"
MAX_MICRO_BATCH = 8
"""Completions per forward/backward pass; an update's gradient is accumulated over them."""


def _import_trl() -> Any:
    try:
        import trl
    except ImportError as err:
        raise ConfigError(
            f"method grpo/rloo needs TRL {TRL_VERSION}, which is not installed: {INSTALL_HINT}."
        ) from err
    if trl.__version__ != TRL_VERSION:
        raise ConfigError(
            f"method grpo/rloo is pinned to TRL {TRL_VERSION} (its defaults and logging are what "
            f"this module sets); found {trl.__version__}: {INSTALL_HINT}."
        )
    return trl


def stopping_at_sequences(trainer_cls: type, reward: BaselineReward) -> type:
    """`trainer_cls` training on the ids SuperHF trains on: each sample cut where
    `superhf.generation.trim_completion` cuts it (through the token that completed a stop
    sequence such as "\n\nHuman:"), not TRL's through-the-EOS ids. Without this, a sample that
    wrote a fake next turn is scored on its answer but trained on the fake turn too. The
    sampled-token budget still counts every id sampled (`BaselineReward.count`), as SuperHF's
    does."""

    class StoppingTrainer(trainer_cls):
        def _generate(self, prompts: list) -> tuple:
            started = time.perf_counter()
            out = list(super()._generate(prompts))
            reward.stage_seconds["sampling"] += time.perf_counter() - started
            reward.generation_rounds += 1
            sampled = out[1]  # completion ids, one list per sample (GRPO and RLOO alike)
            reward.count(sampled)
            keep = [len(reward.completion(ids).token_ids or ids) for ids in sampled]
            out[1] = [ids[:n] for ids, n in zip(sampled, keep, strict=True)]
            # GRPO also returns per-token tool masks (2) and sampling log-probs (4), or None.
            for i in (2, 4) if len(out) > 4 else ():
                if out[i] is not None:
                    out[i] = [row[:n] for row, n in zip(out[i], keep, strict=True)]
            return tuple(out)

    StoppingTrainer.__name__ = StoppingTrainer.__qualname__ = trainer_cls.__name__
    return StoppingTrainer


LR_SCHEDULE = "superhf.train.schedule.iteration_scheduler"


def on_superhf_schedule(trainer_cls: type) -> type:
    """`trainer_cls` stepping its learning rate as SuperHF does (`LR_SCHEDULE`): the warm-up
    moved one step earlier, so the first update trains at learning_rate / warmup_steps, not at
    transformers' 0. With one optimizer step per round, every method's k-th update then
    trains at the same rate."""
    from superhf.train.schedule import iteration_scheduler

    class Scheduled(trainer_cls):
        def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
            if self.lr_scheduler is None:
                self.lr_scheduler = iteration_scheduler(
                    self.args.lr_scheduler_type,
                    optimizer or self.optimizer,
                    self.args.get_warmup_steps(num_training_steps),
                    num_training_steps,
                )
                self._created_lr_scheduler = True
            return self.lr_scheduler

    Scheduled.__name__ = Scheduled.__qualname__ = trainer_cls.__name__
    return Scheduled


def trl_settings(run: MethodRun, use_cpu: bool) -> dict[str, Any]:
    """Every TRL config value superhf sets, before `run.extra`'s overrides."""
    completions = run.prompts_per_step * run.num_generations
    micro = math.gcd(completions, MAX_MICRO_BATCH)
    settings: dict[str, Any] = dict(
        output_dir=run.output_dir,
        seed=run.seed,
        # Sampling, as SuperHF samples (top_k 0 = off, as superhf's default).
        num_generations=run.num_generations,
        max_completion_length=run.max_completion_length,
        temperature=run.temperature,
        top_p=run.top_p,
        top_k=0,
        # One generation round per optimizer step, accumulated over micro-batches.
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=completions // micro,
        generation_batch_size=completions,
        num_iterations=1,
        shuffle_dataset=False,  # SuperHF's prompt order (training_prompts)
        max_steps=max_updates(run, completions),  # a bound: the budget ends the run
        # The update.
        learning_rate=run.learning_rate,
        lr_scheduler_type="constant",  # the number of updates is set by the budget
        warmup_steps=0,
        weight_decay=0.01,  # SuperHF's AdamW weight decay
        max_grad_norm=1.0,  # transformers' default, written so that it is recorded
        # Dropout off while sampling and training (TRL samples in train mode; SuperHF
        # samples in eval mode): with lora_dropout 0, the comparison's default, both match.
        disable_dropout=True,
        beta=run.beta,
        # fp32 (TRL turns bf16 on by default), no gradient checkpointing (TRL: on).
        bf16=False,
        fp16=False,
        use_cpu=use_cpu,
        gradient_checkpointing=False,
        **quiet_trl_args(),
        log_completions=False,
    )
    if run.method == "grpo":
        settings["loss_type"] = "dapo"  # TRL 1.16's default, written so that it is recorded
    return settings


def build_trl_trainer(run: MethodRun) -> tuple[Any, BaselineReward, list[Prompt], list[str]]:
    """The TRL trainer of `run`, its reward, the held-out prompts of its in-run evaluation
    (`split_prompts`) and notes for settings.json. Settings, prompts and rewards are checked
    before the model loads."""
    if run.method not in METHODS:
        raise ConfigError(f"method {run.method!r}: run_trl_baseline runs {' or '.join(METHODS)}.")
    trl = _import_trl()
    import torch
    from datasets import Dataset
    from transformers import set_seed

    from superhf.generation import stop_token_ids
    from superhf.models import load_model, load_tokenizer, lora_config
    from superhf.rewards.scoring import RewardScorer, load_reward_funcs

    config_cls, trainer_cls = (
        (trl.GRPOConfig, trl.GRPOTrainer)
        if run.method == "grpo"
        else (trl.RLOOConfig, trl.RLOOTrainer)
    )
    _, overrides = split_extra(run)
    check_trl_overrides(overrides, config_cls, run.method)
    stops = stop_sequences(run)
    tokenizer = load_tokenizer(run.model_name_or_path)
    prompts, heldout = split_prompts(run, tokenizer)
    funcs, weights = load_reward_funcs(run.reward_funcs, run.reward_weights)
    scorer = RewardScorer(funcs, weights)
    use_cpu = not torch.cuda.is_available()
    try:
        args = config_cls(**{**trl_settings(run, use_cpu), **overrides})
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{config_cls.__name__} refused the run's settings: {err}") from err
    notes = []
    if not prompt_ids_match(
        prompts, tokenizer, tokenizer(text=[p.text for p in prompts])["input_ids"]
    ):
        notes.append(
            "TRL encodes some prompts differently from superhf.batching.encode_prompt (a BOS)."
        )

    set_seed(run.seed)  # before LoRA's initialisation, as SuperHFTrainer does
    model = load_model(run.model_name_or_path)
    reward = BaselineReward(prompts, scorer, tokenizer, stop_token_ids(model, tokenizer), stops)
    reward.count_on_score = False  # counted before the cut, in StoppingTrainer._generate
    trainer_cls = on_superhf_schedule(stopping_at_sequences(trainer_cls, reward))
    dataset = Dataset.from_list(
        [{"prompt": p.text, "superhf_index": i} for i, p in enumerate(prompts)]
    )
    trainer = trainer_cls(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(run),
    )
    return trainer, reward, heldout, notes


def monitored_run(
    run: MethodRun, evaluation: InRunEvaluation, reward: BaselineReward, progress: ProgressLog
) -> Any:
    """The reward-hacking monitor of a run that evaluates along the way, or None (no in-run
    evaluation, or fewer than 2 held-out prompts: METEOR compares answers across prompts).

    Its held-out evaluation is the run's `evaluation`, the only one made: the same prompts,
    sampling (`eval_config`), seed, train scorer and test scorer (the very objects), at the
    same steps (every `eval_steps` updates, the start, and the last update, the budget's
    included: `InRunEvaluation.due`). It runs before `budget_callback`, which reads the
    numbers and seconds of the step (`evaluations`) for progress.jsonl instead of sampling
    again.
    """
    if not evaluation.every or len(evaluation.prompts) < 2:
        return None
    from superhf.evaluation.monitor_callback import RewardHackingCallback

    def due(step: int, state: Any) -> bool:  # InRunEvaluation's steps, the budget's last too
        last = progress.budget_reached(reward.sampled_tokens) or step >= state.max_steps
        return evaluation.due(step, last)

    return RewardHackingCallback(
        evaluation.prompts,
        reward_funcs=reward.scorer,
        test_reward_model=evaluation.test_scorer,  # the one InRunEvaluation loaded
        eval_steps=evaluation.every,
        sampling=evaluation.config,
        output_dir=run.output_dir,
        seed=run.seed,
        sampled_tokens=lambda: reward.sampled_tokens,  # as the budget counts them
        due=due,
    )


def budget_callback(
    reward: BaselineReward,
    progress: ProgressLog,
    evaluation: InRunEvaluation,
    tokenizer: Any,
    monitor: Any = None,
) -> Any:
    """A TrainerCallback: the held-out evaluation of the start (step 0) when evaluating; after
    each update, the evaluation when due, a progress line; at the budget, stop. With the
    `monitor` of `monitored_run` (added before this callback), the evaluation is the one the
    monitor just made at the step."""
    from transformers import TrainerCallback

    def held_out(model: Any, step: int) -> tuple[dict[str, Any], float]:
        taken = monitor.evaluations.pop(step, None) if monitor is not None else None
        return taken if taken is not None else evaluation(model, tokenizer)

    class SampledTokenBudget(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if evaluation.every and not progress.records:  # not when resumed
                progress.record_start(*held_out(kwargs["model"], state.global_step))
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            last = progress.budget_reached(reward.sampled_tokens) or (
                state.global_step >= state.max_steps
            )
            numbers, seconds = None, 0.0
            if evaluation.due(state.global_step, last):
                numbers, seconds = held_out(kwargs["model"], state.global_step)
            progress.record(
                state.global_step,
                reward.sampled_tokens,
                reward.take_step_rewards(),
                numbers,
                seconds,
                reward.take_stage_seconds(),
            )
            if progress.budget_reached(reward.sampled_tokens):
                control.should_training_stop = True
            return control

    return SampledTokenBudget()


def run_trl_baseline(run: MethodRun) -> None:
    """Train `run.method` ("grpo" or "rloo") with TRL until the sampled-token budget; write the
    adapter, tokenizer, config.yaml, settings.json, progress.jsonl and, last, done.json."""
    trainer, reward, heldout, notes = build_trl_trainer(run)
    Path(run.output_dir).mkdir(parents=True, exist_ok=True)
    progress = ProgressLog(run.output_dir, run.sampled_token_budget)
    evaluation = InRunEvaluation(run, heldout, reward.scorer)
    monitor = monitored_run(run, evaluation, reward, progress)
    if monitor is not None:  # first: budget_callback reads the evaluation it makes
        trainer.add_callback(monitor)
        trainer.reward_funcs = [monitor.watch(f) for f in trainer.reward_funcs]
    elif evaluation.every:
        notes.append(
            "No reward-hacking monitor: it needs at least 2 held-out prompts (num_eval_prompts)."
        )
    trainer.add_callback(
        budget_callback(reward, progress, evaluation, trainer.processing_class, monitor)
    )

    def state() -> dict[str, Any]:  # superhf's part of a checkpoint, at the end of an update
        return {
            "sampled_tokens": reward.sampled_tokens,
            "generation_rounds": reward.generation_rounds,
            "progress": progress.state_dict(),
            "monitor": None if monitor is None else monitor.state_dict(),
        }

    trainer.add_callback(checkpoint_callback(state))  # last: after the budget may stop the run
    checkpoint = last_checkpoint(run.output_dir)
    if checkpoint is not None:
        saved = read_state(checkpoint)
        reward.sampled_tokens = saved["sampled_tokens"]
        reward.generation_rounds = saved["generation_rounds"]
        progress.load_state_dict(saved["progress"])
        if monitor is not None:
            monitor.load_state_dict(saved["monitor"])
    trainer.train(resume_from_checkpoint=None if checkpoint is None else str(checkpoint))
    reached = progress.budget_reached(reward.sampled_tokens)
    settings = {
        "method": run.method,
        "trl_version": TRL_VERSION,
        "trl_config": trainer.args.to_dict(),
        "lr_schedule": LR_SCHEDULE,
        "lora": run.lora_kwargs(),
        "stop_sequences": reward.stop_sequences,
        "num_prompts": len(reward.prompts),
        "notes": notes,
        "reward_hacking_monitor": None
        if monitor is None
        else {
            "file": MONITOR_FILE,
            "eval_steps": monitor.eval_steps,
            "window": monitor.monitor.window,
            "meteor_threshold": monitor.monitor.meteor_threshold,
            "thresholds": monitor.monitor.thresholds,
            "warnings": monitor.warnings,
        },
        "run": run.to_dict(),
    }
    write_run_files(
        run,
        trainer.model,
        trainer.processing_class,
        settings,
        progress,
        "sampled_token_budget" if reached else "max_steps",
        optimizer_steps=trainer.state.global_step,  # transformers counts optimizer steps
        generation_rounds=reward.generation_rounds,
        resumed_from_step=None if checkpoint is None else checkpoint_step(checkpoint),
    )
    remove_checkpoints(run.output_dir)
