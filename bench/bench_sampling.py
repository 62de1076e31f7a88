"""Sampling speed: superhf's decode loop (fp32, and bf16 where native) against HF `generate`.

    make bench                                   # runs this, then bench_iteration.py
    .venv/bin/python bench/bench_sampling.py --repeats 2 --out bench/results/sampling.json

On SmolLM2-135M-Instruct wrapped with LoRA r16 on q/k/v/o as in training (B matrices set to
small random values, as after some updates), real prompts (the embedded test split), exactly
48 new tokens per sample (stop tokens off, so every sampler does the same work), temperature
1, top_p 0.95, top_k 0, in one process:

- HF `generate` called as a user would: its own warpers, `num_return_sequences=n`, fp32;
- superhf's decode loop, fp32 (`sampling_dtype float32`): on the LoRA-wrapped policy itself
  (`--no_merge_adapter_for_sampling`), and on the fp32 copy with the adapter merged that the
  trainer samples from by default (`merge_adapter_for_sampling`, `SamplingModel`);
- superhf's decode loop on the bf16 sampling copy, LoRA merged (`SamplingModel`), when the
  CPU has native bf16 (`superhf.sampling_model.native_bf16`; otherwise it says why and skips);
- the bf16 copy's next-token distributions against the fp32 policy's, teacher-forced on the
  fp32 samples: mean KL(fp32 || bf16) and total variation per position.

Each timing is the best of `--repeats` after a warm-up. Run it alone: two torch jobs on 2
cores slow each other 5-10x.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from superhf.config import SuperHFConfig
from superhf.data import embedded_prompts, prepare_prompts
from superhf.generation import NucleusSampler, sample_shared_prompts
from superhf.models import load_model, load_tokenizer, prepare_policy
from superhf.sampling_model import SamplingModel, native_bf16

NEW_TOKENS, N = 48, 8


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def hf_generate(model, tokenizer, texts: list[str]) -> None:
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        model.generate(
            **batch,
            do_sample=True,
            temperature=1.0,
            top_p=0.95,
            top_k=0,
            num_return_sequences=N,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            pad_token_id=tokenizer.pad_token_id,
        )


def decode_loop(model, prompts: list[list[int]], pad_id: int) -> list[list[int]]:
    sampler = NucleusSampler(1.0, 0, 0.95)
    seeds = list(range(len(prompts) * N))
    return sample_shared_prompts(model, prompts, N, NEW_TOKENS, sampler, [], pad_id, seeds)


@torch.no_grad()
def distribution_shift(policy, copy, prompts: list[list[int]], samples: list[list[int]]):
    """Mean KL(fp32 || bf16) and total variation of the next-token distributions along the
    fp32 policy's own samples (one sample per prompt, every position of its answer)."""
    kls, tvs = [], []
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([prompt + samples[i * N]])
        logp = torch.log_softmax(policy(input_ids=ids).logits[0, len(prompt) - 1 : -1].float(), -1)
        logq = torch.log_softmax(copy(input_ids=ids).logits[0, len(prompt) - 1 : -1].float(), -1)
        kls.append((logp.exp() * (logp - logq)).sum(-1))
        tvs.append(0.5 * (logp.exp() - logq.exp()).abs().sum(-1))
    kl, tv = torch.cat(kls), torch.cat(tvs)
    return {
        "positions": len(kl),
        "mean_kl": kl.mean().item(),
        "max_kl": kl.max().item(),
        "mean_tv": tv.mean().item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="Timed runs per sampler (best).")
    parser.add_argument("--shapes", type=int, nargs="+", default=[4, 32], help="Prompts per call.")
    parser.add_argument("--out", default="bench/results/sampling.json")
    cli = parser.parse_args()

    torch.manual_seed(0)
    config = SuperHFConfig(output_dir="/tmp/superhf-bench")
    tokenizer = load_tokenizer(config.model_name_or_path)
    policy = prepare_policy(load_model(config.model_name_or_path), config).eval()
    with torch.no_grad():  # as after some updates: the adapter changes the outputs
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    eval_prompts, _ = prepare_prompts(embedded_prompts("test"), tokenizer, config.max_prompt_length)
    pad = tokenizer.pad_token_id
    native, why = native_bf16("cpu")
    copy = SamplingModel(policy, torch.bfloat16).model if native else None
    merged = SamplingModel(policy, torch.float32, always_copy=True).model
    flags = sorted(
        f
        for f in Path("/proc/cpuinfo").read_text().split()
        if f.startswith(("avx512", "amx", "avx2"))
    )
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": sorted(set(flags)),
        "native_bf16": native,
        "native_bf16_evidence": why,
        "torch": torch.__version__,
        "setup": f"SmolLM2-135M-Instruct, LoRA r16 q/k/v/o, {N} samples x {NEW_TOKENS} tokens, "
        f"temperature 1, top_p 0.95, top_k 0, best of {cli.repeats}",
        "shapes": {},
    }
    for num_prompts in cli.shapes:
        texts = [p.text for p in eval_prompts[:num_prompts]]
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        tokens = num_prompts * N * NEW_TOKENS
        row = {"tokens": tokens}
        row["hf_generate_fp32_s"] = best_seconds(
            lambda t=texts: hf_generate(policy, tokenizer, t), cli.repeats
        )
        row["superhf_fp32_s"] = best_seconds(lambda i=ids: decode_loop(policy, i, pad), cli.repeats)
        row["superhf_fp32_vs_hf"] = row["hf_generate_fp32_s"] / row["superhf_fp32_s"]
        row["superhf_fp32_merged_s"] = best_seconds(
            lambda i=ids: decode_loop(merged, i, pad), cli.repeats
        )
        row["superhf_fp32_merged_vs_hf"] = row["hf_generate_fp32_s"] / row["superhf_fp32_merged_s"]
        if copy is not None:
            row["superhf_bf16_s"] = best_seconds(
                lambda i=ids: decode_loop(copy, i, pad), cli.repeats
            )
            row["superhf_bf16_vs_hf_fp32"] = row["hf_generate_fp32_s"] / row["superhf_bf16_s"]
        for key in [k for k in row if k.endswith("_s")]:
            row[key.removesuffix("_s") + "_tok_per_s"] = tokens / row[key]
        result["shapes"][f"{num_prompts}x{N}"] = row
        print(f"{num_prompts} prompts x {N}: " + json.dumps(row), flush=True)
    if copy is not None:
        ids = [tokenizer(p.text, add_special_tokens=False)["input_ids"] for p in eval_prompts[:32]]
        samples = decode_loop(policy, ids, pad)
        result["bf16_vs_fp32_distribution"] = distribution_shift(policy, copy, ids, samples)
    else:
        result["bf16_skipped"] = f"no native bf16 on this CPU ({why}): fp32 stays the default"
    Path(cli.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cli.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "cpu_flags"}, indent=2))


if __name__ == "__main__":
    main()
