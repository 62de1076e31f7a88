"""PPO (the paper's RLHF) as a row of `superhf compare`, in its own environment.

    make ppo-env                                        # .venv-ppo: trl==1.12.0, once
    run_ppo(MethodRun(method="ppo", ...))               # from superhf's own environment
    .venv-ppo/bin/python -m superhf.compare.ppo_baseline output_dir/ppo_spec.json   # what it runs

TRL 1.16 (the `compare` extra, for GRPO and RLOO) has no PPO; trl 1.12.0 still has it as
`trl.experimental.ppo`, so `run_ppo` runs this module's `__main__` with `.venv-ppo`'s Python
(the superhf source it runs from is the caller's). Inside, everything superhf controls is as
for GRPO (`baseline_run`): the start policy, LoRA, the prompts in SuperHF's order (encoded with
`superhf.batching.encode_prompt`: PPO takes pre-tokenized `input_ids`), the sampled-token
budget and the run files. The reward is superhf's `RewardScorer` behind a module TRL's PPO
calls as a reward model: its `get_reward` is wrapped so that, for that module, the sampled
ids are cut and decoded as SuperHF cuts its samples and scored with `Prompt.prompt`.

What PPO does differently, by TRL's design (all of it in settings.json):
- one completion per prompt: an update samples prompts_per_step x num_generations prompts
  (shuffled by TRL's dataloader), so its completions per update match the other methods';
- a value model (the start policy with a fresh one-logit head, trained in full) and
  `num_ppo_epochs` passes over each batch;
- top_p = 1: PPO's old log-probs are taken from the sampler's processed scores, which a top_p
  below 1 would truncate, unlike the update's log-probs;
- a pad token distinct from EOS (the tokenizer's first special token found in no prompt); the
  saved tokenizer is superhf's own.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from superhf.compare.baseline_run import (
    BaselineReward,
    ProgressLog,
    check_trl_overrides,
    max_updates,
    quiet_trl_args,
    split_extra,
    stop_sequences,
    training_prompts,
    write_run_files,
)
from superhf.compare.spec import MethodRun
from superhf.errors import ConfigError, SuperHFError, TrainingError

TRL_VERSION = "1.12.0"
SPEC_FILE = "ppo_spec.json"
ERROR_FILE = "ppo_error.json"
MAX_MICRO_BATCH = 8
"""Sequences per forward/backward pass: an update's batch is accumulated from these."""


def ppo_python() -> Path:
    """`.venv-ppo`'s Python: `$SUPERHF_PPO_PYTHON`, else beside this source tree's src/."""
    if os.environ.get("SUPERHF_PPO_PYTHON"):
        return Path(os.environ["SUPERHF_PPO_PYTHON"])
    return Path(__file__).resolve().parents[3] / ".venv-ppo" / "bin" / "python"


def run_ppo(run: MethodRun) -> None:
    """Train `run` with TRL 1.12's PPO in `.venv-ppo` (a subprocess; its output streams
    through); the run files are those of `run_trl_baseline`. ConfigError when the environment
    is missing or the run's settings are refused, TrainingError when the run fails."""
    if run.method != "ppo":
        raise ConfigError(f"method {run.method!r}: run_ppo runs method 'ppo'.")
    python = ppo_python()
    if not python.is_file():
        raise ConfigError(
            f"method ppo runs in its own environment (trl=={TRL_VERSION}), not found at "
            f"{python}: create it with `make ppo-env` in the superhf repository (or set "
            "SUPERHF_PPO_PYTHON to its Python)."
        )
    out = Path(run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ERROR_FILE).unlink(missing_ok=True)
    spec = out / SPEC_FILE
    spec.write_text(json.dumps(run.to_dict(), indent=2) + "\n", encoding="utf-8")
    src = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p),
        "TRL_EXPERIMENTAL_SILENCE": "1",
    }
    code = subprocess.run(
        [str(python), "-m", "superhf.compare.ppo_baseline", str(spec)], env=env, check=False
    ).returncode
    if code == 0:
        return
    error_file = out / ERROR_FILE
    if error_file.is_file():
        error = json.loads(error_file.read_text(encoding="utf-8"))
        cls = ConfigError if error["type"] == "ConfigError" else TrainingError
        raise cls(f"method ppo: {error['message']}")
    raise TrainingError(f"method ppo: the PPO process exited with {code}; its output is above.")


# --- inside .venv-ppo --------------------------------------------------------------------------


def ppo_settings(run: MethodRun, use_cpu: bool) -> dict[str, Any]:
    """Every PPOConfig value superhf sets, before `run.extra`'s overrides."""
    completions = run.prompts_per_step * run.num_generations
    micro = math.gcd(completions, MAX_MICRO_BATCH)
    return dict(
        output_dir=run.output_dir,
        seed=run.seed,
        response_length=run.max_completion_length,
        temperature=run.temperature,
        stop_token="eos",
        missing_eos_penalty=None,
        # One update = `completions` prompts, one completion each, in micro-batches.
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=completions // micro,
        num_mini_batches=1,
        local_rollout_forward_batch_size=completions,
        total_episodes=max_updates(run, completions) * completions,  # the budget ends it
        num_ppo_epochs=4,  # TRL's default, written so that it is recorded
        learning_rate=run.learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.01,
        kl_coef=run.beta,
        bf16=False,
        fp16=False,
        use_cpu=use_cpu,
        gradient_checkpointing=False,
        num_sample_generations=0,
        **quiet_trl_args(),
    )


def distinct_pad_id(tokenizer: Any, prompt_ids: list[list[int]], stop_ids: list[int]) -> int:
    """A special token that is no stop token, no BOS and in no prompt: PPO masks by pad id."""
    used = {t for row in prompt_ids for t in row} | set(stop_ids) | {tokenizer.bos_token_id}
    for token_id in sorted(tokenizer.added_tokens_decoder):
        if token_id not in used:
            return token_id
    raise ConfigError(
        "method ppo: TRL's PPO needs a pad token distinct from EOS that no prompt contains; "
        "this tokenizer has no such special token."
    )


class _BudgetReached(Exception):
    """Raised after the update that reached the budget: trl 1.12's PPO loop has no stop flag."""


def _reward_module(reward: BaselineReward, index: dict[tuple[int, ...], int], pad_id: int):
    """A torch module PPO holds as its reward model; `score` is what the wrapped get_reward
    returns for it."""
    import torch

    class SuperHFRewardModule(torch.nn.Module):
        def score(self, query_responses: torch.Tensor, context_length: int) -> torch.Tensor:
            indices, rows = [], []
            for row in query_responses.tolist():
                query, response = row[:context_length], row[context_length:]
                indices.append(index[tuple(t for t in query if t != pad_id)])
                end = response.index(pad_id) if pad_id in response else len(response)
                rows.append(response[:end])
            scores = reward.score_ids(indices, rows)
            return torch.tensor(scores, dtype=torch.float32, device=query_responses.device)

    return SuperHFRewardModule()


def _wrap_get_reward(ppo_module: Any, reward_module: Any) -> None:
    original = ppo_module.get_reward

    def get_reward(model: Any, query_responses: Any, pad_token_id: int, context_length: int):
        if model is not reward_module:
            return original(model, query_responses, pad_token_id, context_length)
        from trl.experimental.utils import first_true_indices

        responses = query_responses[:, context_length:]
        lengths = first_true_indices(responses == pad_token_id) - 1 + context_length
        return None, reward_module.score(query_responses, context_length), lengths

    ppo_module.get_reward = get_reward


def train_ppo(run: MethodRun) -> None:
    """The PPO run itself (in .venv-ppo); settings, prompts and rewards checked first."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, TrainerCallback, set_seed
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as ppo_module

    from superhf.batching import encode_prompt
    from superhf.generation import stop_token_ids
    from superhf.models import load_model, load_tokenizer, lora_config, resolve_model_path
    from superhf.rewards.scoring import RewardScorer, load_reward_funcs

    _, overrides = split_extra(run)
    check_trl_overrides(overrides, PPOConfig, "ppo")
    stops = stop_sequences(run)
    tokenizer = load_tokenizer(run.model_name_or_path)
    prompts = training_prompts(run, tokenizer)
    funcs, weights = load_reward_funcs(run.reward_funcs, run.reward_weights)
    scorer = RewardScorer(funcs, weights)
    try:
        args = PPOConfig(**{**ppo_settings(run, not torch.cuda.is_available()), **overrides})
    except (ValueError, TypeError) as err:
        raise ConfigError(f"PPOConfig refused the run's settings: {err}") from err

    set_seed(run.seed)  # before LoRA's and the value head's initialisation
    policy = load_model(run.model_name_or_path)
    stop_ids = stop_token_ids(policy, tokenizer)
    prompt_ids = [encode_prompt(tokenizer, p.text) for p in prompts]
    ppo_tokenizer = copy.deepcopy(tokenizer)
    ppo_tokenizer.pad_token = ppo_tokenizer.convert_ids_to_tokens(
        distinct_pad_id(tokenizer, prompt_ids, stop_ids)
    )
    value = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path(run.model_name_or_path), num_labels=1, dtype=torch.float32
    )
    value.config.pad_token_id = ppo_tokenizer.pad_token_id
    reward = BaselineReward(prompts, scorer, tokenizer, stop_ids, stops)
    index: dict[tuple[int, ...], int] = {}
    for i, ids in enumerate(prompt_ids):
        index.setdefault(tuple(ids), i)  # equal ids: equal text, the first prompt's
    reward_module = _reward_module(reward, index, ppo_tokenizer.pad_token_id)
    _wrap_get_reward(ppo_module, reward_module)

    Path(run.output_dir).mkdir(parents=True, exist_ok=True)
    progress = ProgressLog(run.output_dir, run.sampled_token_budget)

    class SampledTokenBudget(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            progress.record(state.global_step, reward.sampled_tokens, reward.take_step_rewards())
            if progress.budget_reached(reward.sampled_tokens):
                raise _BudgetReached
            return control

    trainer = PPOTrainer(
        args=args,
        processing_class=ppo_tokenizer,
        model=policy,
        ref_model=None,  # LoRA: the reference is the policy with its adapter disabled
        reward_model=reward_module,
        train_dataset=Dataset.from_list([{"input_ids": ids} for ids in prompt_ids]),
        value_model=value,
        callbacks=[SampledTokenBudget()],
        peft_config=lora_config(run),
    )
    stop_reason = "total_episodes"
    try:
        trainer.train()
    except _BudgetReached:
        stop_reason = "sampled_token_budget"
    settings = {
        "method": "ppo",
        "trl_version": TRL_VERSION,
        "trl_config": args.to_dict(),
        "generation": {"top_p": 1.0, "top_k": 0, "temperature": run.temperature},
        "pad_token": ppo_tokenizer.pad_token,
        "lora": run.lora_kwargs(),
        "value_model": "the start policy with a new one-logit head, trained in full",
        "stop_sequences": stops,
        "num_prompts": len(prompts),
        "notes": [
            "top_p 1.0, not run.top_p: PPO's old log-probs are the sampler's processed scores",
            "one completion per prompt; prompts shuffled by TRL's dataloader",
        ],
        "run": run.to_dict(),
    }
    policy_model = trainer.accelerator.unwrap_model(trainer.model).policy
    rounds = progress.records[-1].step if progress.records else 0
    steps = rounds * args.num_ppo_epochs * args.num_mini_batches  # PPO's loop, per batch
    write_run_files(run, policy_model, tokenizer, settings, progress, stop_reason, steps)


def main(argv: list[str]) -> int:
    """`python -m superhf.compare.ppo_baseline SPEC.json` (in .venv-ppo): run it; on a
    superhf error write ppo_error.json beside the spec for the caller, and exit non-zero."""
    if len(argv) != 1:
        print("usage: python -m superhf.compare.ppo_baseline SPEC.json", file=sys.stderr)
        return 2
    spec = Path(argv[0])
    run = MethodRun(**json.loads(spec.read_text(encoding="utf-8")))
    try:
        train_ppo(run)
    except SuperHFError as err:
        error = {"type": type(err).__name__, "message": str(err)}
        (spec.parent / ERROR_FILE).write_text(json.dumps(error) + "\n", encoding="utf-8")
        print(f"superhf: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
