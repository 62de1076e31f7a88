"""Slow, real data: a reward model from `superhf reward train` on HH-RLHF, scored through the path
`superhf train` uses (prepare_prompts -> load_reward_funcs -> RewardScorer), ranks its held-out
pairs exactly as `superhf reward train` reported. Before the fix, HH prompts reached the scorer
as bare questions joined to the answer without a separator, a text the model was never trained
on. Needs ../shared/data/hh-rlhf (read in place; a slice is written to tmp)."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys

import pytest
import torch

from superhf.data import DatasetError, prepare_prompts
from superhf.rewards.scoring import RewardScorer, load_reward_funcs
from superhf.rewards.training import EMBEDDED_MINILM, load_pairs, load_reward_backbone, split_rows
from superhf.rewards.training import RewardTrainingConfig as RMConfig
from tests.conftest import SHARED

HH = SHARED / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
NUM_ROWS = 160  # first single-turn rows of the file: 120 to train on, 40 held out
SPLIT = "train:0.75"
MAX_LENGTH = 128  # tokens; longer pairs are skipped (and counted) by both sides


def _split(transcript: str) -> tuple[str, str]:
    cut = transcript.rindex("\n\nAssistant:") + len("\n\nAssistant:")
    return transcript[:cut], transcript[cut:]


@pytest.mark.slow
@pytest.mark.skipif(not HH.is_file(), reason=f"needs the shared HH-RLHF data at {HH}")
def test_trainer_scorer_reproduces_reward_train_held_out_accuracy(tmp_path, tokenizer):
    rows = []
    with gzip.open(HH, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            single_turn = all(row[k].count("\n\nHuman:") == 1 for k in ("chosen", "rejected"))
            if single_turn and _split(row["chosen"])[0] == _split(row["rejected"])[0]:
                rows.append(row)
            if len(rows) == NUM_ROWS:
                break
    data = tmp_path / "hh-slice.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "rm"
    result = subprocess.run(
        [sys.executable, "-m", "superhf", "reward", "train"]
        + ["--model_name_or_path", EMBEDDED_MINILM, "--dataset_name", str(data)]
        + ["--num_train_epochs", "4", "--split", SPLIT]
        + ["--max_length", str(MAX_LENGTH), "--output_dir", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    reported = [m for m in lines if "eval_accuracy" in m][-1]
    # It learned its training pairs, so its scores depend on what it reads.
    assert reported["accuracy"] > 0.65, reported

    # The held-out pairs `superhf reward train` evaluated: the last quarter, minus skipped rows.
    _, rm_tokenizer = load_reward_backbone(RMConfig(model_name_or_path=EMBEDDED_MINILM))
    held_out = []
    for row in (rows[i] for i in split_rows(len(rows), SPLIT)[1]):
        try:
            load_pairs([row], rm_tokenizer, MAX_LENGTH, "row")
        except DatasetError:
            continue
        held_out.append(row)
    assert len(held_out) == reported["num_eval_pairs"] > 25

    # What `superhf train` does: prompts from prepare_prompts, completions as a policy emits
    # them after "Assistant:", scored by the reward model folder through RewardScorer.
    prompts, _ = prepare_prompts(held_out, tokenizer, max_prompt_length=10_000)
    assert len(prompts) == len(held_out)
    scorer = RewardScorer(*load_reward_funcs([str(out)]))
    chosen = [_split(r["chosen"])[1] for r in held_out]
    rejected = [_split(r["rejected"])[1] for r in held_out]
    samples = [p.prompt for p in prompts]
    c = torch.tensor(scorer(samples, chosen).total)
    r = torch.tensor(scorer(samples, rejected).total)
    accuracy = float(((c > r).float() + 0.5 * (c == r).float()).mean())
    loss = float(-torch.nn.functional.logsigmoid(c - r).mean())
    assert math.isfinite(loss)
    assert accuracy == pytest.approx(reported["eval_accuracy"], abs=1e-9), (accuracy, reported)
    assert loss == pytest.approx(reported["eval_loss"], abs=1e-4), (loss, reported)
