"""Training: the SuperHF loop and what only it uses.

- `trainer`: `SuperHFTrainer`, the loop: one iteration = sample -> score -> filter ->
  fine-tune -> evaluate -> log;
- `build`: what a run is built from (tokenizer, prompts and their split, rewards, policy);
- `filtering`: `top_k_per_prompt`, keep the best completions of each prompt, and
  `select_training_samples`, the same with the options' weights, negatives and skips;
- `update`: `PolicyUpdate`, the optimizer steps (micro-batches, FSDP idle passes, agreement
  on out-of-memory, non-finite steps skipped), and `OutOfMemoryBackoff`;
- `loss`: `superhf_loss`, cross-entropy on the kept completions plus the KL prior;
- `schedule`: `iteration_scheduler`, the learning rate stepped once per iteration;
- `checkpoint`: atomic, verified checkpoints, resume, and `TrainingState` (what they hold);
- `run_log`: metrics.jsonl, completions.jsonl, the console line, the iteration's metrics and
  the peak-memory probe;
- `distributed`: one run over many processes (DDP or FSDP2), and the stop signals.

The names below load on first use (the trainer imports torch and accelerate).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from superhf.train.filtering import select_training_samples, top_k_per_prompt
    from superhf.train.loss import LossOutput, superhf_loss
    from superhf.train.trainer import SuperHFTrainer

_WHERE = {
    "SuperHFTrainer": "superhf.train.trainer",
    "top_k_per_prompt": "superhf.train.filtering",
    "select_training_samples": "superhf.train.filtering",
    "superhf_loss": "superhf.train.loss",
    "LossOutput": "superhf.train.loss",
}
__all__ = [
    "LossOutput",
    "SuperHFTrainer",
    "select_training_samples",
    "superhf_loss",
    "top_k_per_prompt",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'superhf.train' has no attribute {name!r}")
