"""Time one SuperHF iteration's stages on SmolLM2-135M-Instruct (CPU), and compare samplers.

    make bench                       # or: .venv/bin/python bench/bench_iteration.py
    .venv/bin/python bench/bench_iteration.py --iterations 2 --out bench/results/cpu.json

Measures, in one process and on the same prompts:
1. one quickstart iteration (generate, score, fine-tune), sampled tokens/s;
2. generation of n samples per prompt: superhf's decode loop (each prompt computed once, its
   KV cache shared by its n samples) against one batched `generate` call with
   `num_return_sequences=n` (which copies each prompt n times before its forward pass), and
   against generating each sample alone (one call per sample);
3. transformers' own top-p warper against superhf's NucleusSampler (same kept tokens).
Run it alone: two torch jobs on 2 cores slow each other 5-10x.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from transformers import GenerationConfig, LogitsProcessorList

from superhf.config import SuperHFConfig
from superhf.data import embedded_prompts, prepare_prompts
from superhf.generation import NucleusSampler, sample_shared_prompts, stop_token_ids
from superhf.train.trainer import SuperHFTrainer


def time_generation(model, tokenizer, texts, n, max_new_tokens, batched, hf_top_p=False):
    """Seconds and sampled tokens for n samples of each text (fixed length: no early EOS)."""
    sampler = LogitsProcessorList([] if hf_top_p else [NucleusSampler(1.0, 0, 0.95)])
    config = GenerationConfig(
        do_sample=True,
        top_p=0.95 if hf_top_p else 1.0,
        top_k=0,
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        num_return_sequences=n if batched else 1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_token_ids(model, tokenizer),
    )
    tokenizer.padding_side = "left"
    start = time.perf_counter()
    with torch.no_grad():
        if batched:
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            model.generate(**batch, generation_config=config, logits_processor=sampler)
        else:
            for text in texts:
                one = tokenizer([text], return_tensors="pt", add_special_tokens=False)
                for _ in range(n):
                    model.generate(**one, generation_config=config, logits_processor=sampler)
    return time.perf_counter() - start, len(texts) * n * max_new_tokens


def time_decode_loop(model, tokenizer, texts, n, max_new_tokens):
    """superhf's sampler on the same work (no stop tokens: every sample runs to the end)."""
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    start = time.perf_counter()
    sampler = NucleusSampler(1.0, 0, 0.95)
    sample_shared_prompts(model, encoded, n, max_new_tokens, sampler, [], tokenizer.pad_token_id)
    return time.perf_counter() - start, len(texts) * n * max_new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--iterations", type=int, default=2, help="Timed iterations (after one warm-up)."
    )
    parser.add_argument("--out", default="bench/results/cpu.json")
    cli = parser.parse_args()

    config = SuperHFConfig(
        max_iterations=cli.iterations + 1, num_eval_prompts=0, output_dir="/tmp/superhf-bench"
    )
    trainer = SuperHFTrainer(args=config)
    prompts, _ = prepare_prompts(embedded_prompts(), trainer.tokenizer, config.max_prompt_length)
    prompts = prompts[: (cli.iterations + 1) * config.prompts_per_iteration]
    per_iteration = []
    for i in range(cli.iterations + 1):
        chunk = prompts[i * config.prompts_per_iteration : (i + 1) * config.prompts_per_iteration]
        metrics = trainer.step(chunk, iteration=i + 1)
        if i > 0:  # the first iteration warms up caches and lazy model loads
            per_iteration.append(metrics)
    keys = ["time/generate", "time/score", "time/fine_tune", "step_time", "tokens_per_second"]
    stages = {k: sum(m[k] for m in per_iteration) / len(per_iteration) for k in keys}

    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    texts = [p.text for p in prompts[: config.prompts_per_iteration]]
    n, new = config.num_generations, 32
    seconds, tokens = time_decode_loop(model, trainer.tokenizer, texts, n, new)
    generation = {
        "decode_loop_shared_prompt": {"seconds": seconds, "tokens_per_second": tokens / seconds}
    }
    for name, batched, hf in [
        ("generate_num_return_sequences", True, False),
        ("generate_each_sample_alone", False, False),
        ("generate_transformers_top_p", True, True),
    ]:
        seconds, tokens = time_generation(model, trainer.tokenizer, texts, n, new, batched, hf)
        generation[name] = {"seconds": seconds, "tokens_per_second": tokens / seconds}
    base = generation["decode_loop_shared_prompt"]["seconds"]
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "model": "SmolLM2-135M-Instruct (embedded, fp32, LoRA r=16 on q,k,v,o)",
        "quickstart_iteration": stages,
        "generation": {
            "setup": f"{len(texts)} prompts x {n} samples x {new} new tokens, top_p 0.95",
            **generation,
            "speedup_decode_loop_vs_generate": generation["generate_num_return_sequences"][
                "seconds"
            ]
            / base,
            "speedup_generate_batched_vs_alone": generation["generate_each_sample_alone"]["seconds"]
            / generation["generate_num_return_sequences"]["seconds"],
            "speedup_nucleus_sampler_vs_transformers_top_p": generation[
                "generate_transformers_top_p"
            ]["seconds"]
            / generation["generate_num_return_sequences"]["seconds"],
        },
    }
    Path(cli.out).parent.mkdir(parents=True, exist_ok=True)
    Path(cli.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
