"""What a reward model reads during `superhf train` is what `superhf reward train` trained it on.

For each prompt form, the real SuperHFTrainer runs one iteration with a tiny random policy; the
texts its reward model (and test reward model) tokenize are recorded and compared, byte for
byte, with the texts `load_pairs` makes from reward-model training rows of the same prompt and
answer.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from superhf.config import SuperHFConfig
from superhf.rewards.scoring import RewardModel
from superhf.rewards.training import RewardTrainingConfig, load_pairs, load_reward_backbone
from superhf.train.trainer import SuperHFTrainer
from tests.conftest import make_tiny_llama

QUESTIONS = [f"How do I look after plant number {i}?" for i in range(6)]
REJECTED = " I refuse."


class RecordingTokenizer:
    """The reward model's tokenizer, noting every text it is asked to encode."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.texts: list[str] = []

    def __call__(self, texts: Any, *args: Any, **kwargs: Any) -> Any:
        self.texts += [texts] if isinstance(texts, str) else list(texts)
        return self.tokenizer(texts, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


class RecordingReward:
    """A RewardModel whose inputs (prompt, completion) and tokenized texts are recorded."""

    def __init__(self, path: str):
        self.rm = RewardModel(path)
        self.recorder = RecordingTokenizer(self.rm.tokenizer)
        self.rm.tokenizer = self.recorder
        self.samples: list[tuple[Any, str]] = []
        self.__name__ = "rm"

    def __call__(self, prompts: list[Any], completions: list[str], **kw: Any) -> list[float]:
        self.samples += list(zip(prompts, completions, strict=True))
        return self.rm(prompts, completions, **kw)


@pytest.fixture(scope="module")
def rm_dirs(tmp_path_factory, tokenizer) -> dict[str, Path]:
    """Tiny sequence-classification RM folders: SmolLM2's tokenizer with and without its chat
    template (without, conversations are rendered in the HH form, as for MiniLM)."""
    model = make_tiny_llama(len(tokenizer), head="sequence-classification", num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    dirs = {}
    for kind in ("chat-template", "no-template"):
        rm_tokenizer = copy.deepcopy(tokenizer)
        if kind == "no-template":
            rm_tokenizer.chat_template = None
        dirs[kind] = tmp_path_factory.mktemp(f"rm-{kind}")
        model.save_pretrained(dirs[kind])
        rm_tokenizer.save_pretrained(dirs[kind])
    return dirs


def _policy_rows(form: str) -> list[dict[str, Any]]:
    if form == "plain":
        return [{"prompt": f"Question: {q}\nAnswer:"} for q in QUESTIONS]
    if form == "hh-transcript":
        return [
            {"chosen": f"\n\nHuman: {q}\n\nAssistant: Water it.", "rejected": "x"}
            for q in QUESTIONS
        ]
    if form == "hh-string":
        return [{"prompt": f"\n\nHuman: {q}\n\nAssistant:"} for q in QUESTIONS]
    if form == "conversation":
        return [{"prompt": [{"role": "user", "content": q}]} for q in QUESTIONS]
    raise ValueError(form)


def _question(prompt: Any) -> str:
    """The question a policy prompt was built from (to build RM rows from it)."""
    text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
    return next(q for q in QUESTIONS if q in text)


def _rm_rows(form: str, prompt: Any, completion: str) -> list[dict[str, Any]]:
    """Reward-model training rows, in every shape that holds this prompt and answer."""
    q = _question(prompt)
    if form == "plain":
        return [{"prompt": f"Question: {q}\nAnswer:", "chosen": completion, "rejected": REJECTED}]
    if form in ("hh-transcript", "hh-string"):
        answer = completion.lstrip()
        return [
            # Anthropic HH: whole transcripts, the answer after "Assistant: ".
            {
                "chosen": f"\n\nHuman: {q}\n\nAssistant: {answer}",
                "rejected": f"\n\nHuman: {q}\n\nAssistant:{REJECTED}",
            },
            # TRL's explicit-prompt string form of the same pair.
            {"prompt": f"\n\nHuman: {q}\n\nAssistant:", "chosen": completion, "rejected": REJECTED},
        ]
    if form == "conversation":
        user = [{"role": "user", "content": q}]
        return [
            {
                "prompt": user,
                "chosen": [{"role": "assistant", "content": completion}],
                "rejected": [{"role": "assistant", "content": REJECTED}],
            },
            {
                "chosen": [*user, {"role": "assistant", "content": completion}],
                "rejected": [*user, {"role": "assistant", "content": REJECTED}],
            },
        ]
    raise ValueError(form)


@pytest.mark.parametrize(
    ("form", "rm_kind"),
    [
        ("plain", "chat-template"),
        ("hh-transcript", "chat-template"),
        ("hh-transcript", "no-template"),
        ("hh-string", "no-template"),
        ("conversation", "chat-template"),
        ("conversation", "no-template"),
    ],
)
def test_trainer_scores_the_text_reward_training_made(form, rm_kind, rm_dirs, tokenizer, tmp_path):
    rm_dir = rm_dirs[rm_kind]
    train_reward = RecordingReward(str(rm_dir))
    test_reward = RecordingReward(str(rm_dir))
    config = SuperHFConfig(
        num_generations=2,
        max_completion_length=6,
        prompts_per_iteration=4,
        max_iterations=1,
        num_eval_prompts=2,
        eval_steps=1,
        eval_on_start=False,
        per_device_train_batch_size=4,
        use_peft=False,
        beta=0.0,
        output_dir=str(tmp_path / "run"),
        seed=0,
    )
    trainer = SuperHFTrainer(
        model=make_tiny_llama(len(tokenizer)),
        reward_funcs=train_reward,
        test_reward_func=test_reward,
        args=config,
        processing_class=tokenizer,
        train_dataset=_policy_rows(form),
    )
    trainer.train()
    # Every scoring path ran: the filter (4 prompts x 2 samples) and the held-out evaluation
    # (one answer to each of the 2 eval prompts); the test RM on the evaluation and the kept.
    assert len(train_reward.samples) == 4 * 2 + 2
    assert len(test_reward.samples) == 2 + 4

    _, rm_tokenizer = load_reward_backbone(RewardTrainingConfig(model_name_or_path=str(rm_dir)))
    for reward in (train_reward, test_reward):
        assert len(reward.recorder.texts) == len(reward.samples)
        for (prompt, completion), scored in zip(reward.samples, reward.recorder.texts, strict=True):
            pairs, _ = load_pairs(_rm_rows(form, prompt, completion), rm_tokenizer, 10_000, "rows")
            for chosen, _ in pairs:
                assert chosen == scored, (form, prompt, completion)
            assert _question(prompt) in scored and completion.strip() in scored


def test_hh_prompt_is_what_reward_functions_receive(tokenizer):
    """HH rows reach reward functions in the HH form the reward model was trained on; files
    for people and the judge show the question alone."""
    from superhf.data import prepare_prompts

    rows = [{"chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Use flour.\n\nHuman: ok"}]
    prompts, _ = prepare_prompts(rows, tokenizer, 256)
    assert prompts[0].prompt == "\n\nHuman: How do I bake bread?\n\nAssistant:"
    assert prompts[0].text == "\n\nHuman: How do I bake bread?\n\nAssistant:"
    # `superhf eval` still writes (and the judge still reads) the question itself.
    from superhf.data import question_text

    assert question_text(prompts[0].prompt) == "How do I bake bread?"
