"""Shared fixtures: the real SmolLM2 tokenizer and a tiny random-init Llama built on it.

The tiny model is for the loop's mechanics only (never for claims about quality).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def tokenizer():
    from superhf.config import EMBEDDED_MODEL
    from superhf.models import load_tokenizer

    return load_tokenizer(EMBEDDED_MODEL)


def make_tiny_llama(vocab_size: int, seed: int = 0, head: str = "causal-lm", **config_kwargs):
    """A 2-layer Llama with random weights: `head` is "causal-lm" or "sequence-classification"."""
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        **config_kwargs,
    )
    if head == "sequence-classification":
        return LlamaForSequenceClassification(config)
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A local model folder (config, weights, tokenizer), as a user would pass one."""
    path = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_llama(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
