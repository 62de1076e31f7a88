"""What the comparison hands to one method's run, and what every run leaves behind.

Every method (SuperHF, best-of-n, SFT, TRL GRPO/RLOO, PPO) is run from one `MethodRun` and
must leave in `output_dir`:

- a policy `superhf eval` can load: a PEFT adapter folder (adapter_config.json naming the
  base model) with the tokenizer, or a full model folder;
- `config.yaml` with at least `model_name_or_path` (the start policy), and `settings.json`
  with every setting the method ran with (TRL's included), for results.json;
- `progress.jsonl`: one line per update, `ProgressRecord`'s fields;
- `done.json` last, written atomically: a run with it is finished and never redone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from superhf.config import SweepSettings, TaskSettings
from superhf.files import PROGRESS_FILE  # noqa: F401 (compare's runs write it)

DONE_FILE = "done.json"
SETTINGS_FILE = "settings.json"


@dataclass(kw_only=True)
class MethodRun(TaskSettings, SweepSettings):
    """One run of one method: the comparison's task (`TaskSettings`: start policy, LoRA,
    prompts, sampling, rewards; the same for every method), this run's learning rate, beta and
    seed (`SweepSettings`), and what the comparison adds.

    `dataset_name` is the training prompts file the comparison wrote (a path `superhf.data`
    reads); `reward_funcs` the train reward, as `superhf.rewards.load_reward_funcs` reads it;
    `test_reward_model` the held-out reward model, evaluated, never trained on."""

    method: str
    """"superhf", "best_of_n", "sft", "grpo", "rloo" or "ppo"."""
    output_dir: str
    prompts_per_step: int
    sampled_token_budget: int
    """Stop once this many completion tokens were sampled (prompt tokens not counted)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Method-specific settings (TRL's config fields, SuperHF's options), written to settings."""
    variant: str = ""
    """A named SuperHF variant (its settings are in `extra`), or "" for the method itself."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProgressRecord:
    step: int
    """The update; 0: the start policy, a line only for its in-run evaluation."""
    sampled_tokens: int
    """Completion tokens sampled so far, cumulative."""
    train_reward: float | None
    """Mean train reward of this step's samples (None at step 0)."""
    wall_time_s: float
    """Seconds since the run started, cumulative."""
    peak_memory_mb: float
    """Peak resident memory of the process so far (ru_maxrss), or accelerator memory on a GPU."""
    eval_reward: float | None = None
    """Train reward of the in-run held-out answers, at evaluation steps only (else None)."""
    eval_test_reward: float | None = None
    """Test reward of the same answers: the held-out curve along the run."""
    seconds_sampling: float | None = None
    """This update's seconds drawing its training samples."""
    seconds_scoring: float | None = None
    """This update's seconds scoring them with the train reward."""
    seconds_update: float | None = None
    """The rest of the update's training time: log-probabilities, loss, backward, optimizer
    (the in-run evaluation left out)."""
