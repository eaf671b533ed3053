"""The real-backend benchmark's peers, run in a child process: Accelerate disk offload and dense.

    python -m experiments.bench_peers accelerate --model DIR --offload DIR --weights-gib 1.0 ...
    python -m experiments.bench_peers dense --model DIR ...

Both load the Hugging Face checkpoint with transformers and decode greedily, one token per
forward with a KV cache, from the same fixed prompt ids ``run_real`` uses for a checkpoint
without a tokenizer (or the given ``--prompt-ids``). ``accelerate`` is what a user reaches for
when the model does not fit: ``from_pretrained(device_map="auto", max_memory={"cpu": W},
offload_folder=...)`` -- Accelerate keeps the modules that fit W in RAM and offloads the rest to
disk (``--weights-gib 0``: everything on disk, i.e. ``accelerate.disk_offload``), loading each
offloaded module's weights at its forward. ``dense`` keeps every weight in RAM. Prints one JSON
line: per-token times, generated ids, load time, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def fixed_prompt(num_tokens: int, vocab_size: int) -> list[int]:
    """The prompt ids ``real.run`` uses when the checkpoint has no tokenizer."""
    return [(7 * i + 1) % vocab_size for i in range(num_tokens)]


def _load(args):
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    dtype = getattr(torch, args.dtype)
    if args.kind == "dense":
        return AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype,
                                                    local_files_only=True).eval()
    os.makedirs(args.offload, exist_ok=True)
    max_memory = {"cpu": int(args.weights_gib * 2**30)}
    if args.weights_gib <= 0:  # accelerate.disk_offload: every module on disk
        return AutoModelForCausalLM.from_pretrained(
            args.model, dtype=dtype, device_map={"": "disk"}, offload_folder=args.offload,
            local_files_only=True).eval()
    return AutoModelForCausalLM.from_pretrained(
        args.model, dtype=dtype, device_map="auto", max_memory=max_memory,
        offload_folder=args.offload, local_files_only=True).eval()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["accelerate", "dense"])
    p.add_argument("--model", required=True)
    p.add_argument("--offload", default=None, help="Accelerate's offload folder")
    p.add_argument("--weights-gib", type=float, default=0.0,
                   help="Accelerate max_memory for weights in RAM (0: all on disk)")
    p.add_argument("--dtype", default="float16")
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = _load(args)
    load_s = time.perf_counter() - t0
    vocab = model.config.vocab_size
    prompt = fixed_prompt(args.prompt_tokens, vocab)
    placement = {}
    for dev in (getattr(model, "hf_device_map", None) or {"": "cpu"}).values():
        placement[str(dev)] = placement.get(str(dev), 0) + 1
    ids, times = [], []
    with torch.inference_mode():
        start = time.perf_counter()
        out = model(torch.tensor([prompt]), use_cache=True)
        past, nxt = out.past_key_values, int(out.logits[0, -1].argmax())
        ids.append(nxt)
        first = time.perf_counter()
        for _ in range(args.new_tokens - 1):
            t = time.perf_counter()
            out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, int(out.logits[0, -1].argmax())
            ids.append(nxt)
            times.append(time.perf_counter() - t)
        end = time.perf_counter()
    decode_s = end - first
    print(json.dumps({
        "kind": args.kind, "load_s": load_s, "ttft_s": first - start, "decode_s": decode_s,
        "decode_tokens_per_s": (args.new_tokens - 1) / decode_s if decode_s else None,
        "token_s": times, "generated_token_ids": ids, "placement": placement,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
