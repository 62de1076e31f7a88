"""Training: the SuperHF loop and what it owns.

- `trainer`: `SuperHFTrainer`, one iteration = sample -> score -> filter -> fine-tune;
- `filtering`: keep the best completions of each prompt;
- `loss`: cross-entropy on the kept completions plus the KL prior;
- `checkpoint`: atomic, verified checkpoints and resume;
- `run_log`: metrics.jsonl, completions.jsonl and the console line.
"""
