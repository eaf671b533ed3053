"""Real-backend benchmark (issue 4): m2cache vs Accelerate disk offload vs dense, on this machine.

Covers: real/ end to end (store, SSD/DRAM/device tiers, executor), the m2cache preset and two
variants, Hugging Face Accelerate's disk offload as the peer, dense in RAM, the I/O roofline.
Run:    sudo .venv/bin/python experiments/bench_real.py [--models smollm2_135m,llama_1b_relu]
Output: results/bench_real.csv (one row per run) and results/bench_real.md (the table, medians)

Each contender runs in a fresh subprocess inside its own cgroup-v1 memory cgroup limited to the
budget (experiments/cgroup.py): the page cache it fills is charged to it, so no contender's
"disk" reads are served from RAM beyond the budget, and the page cache is dropped before each
run. m2cache's DRAM cache is the budget minus a stated fixed overhead (Python + torch, dense
weights, device pool, predictor, KV cache, working memory). Models: SmolLM2-135M (its GGUF,
saved once as FP16 safetensors so every contender loads the same weights) and a random
LLaMA-2-shaped 1.1B ReGLU model (real/random_llama.py, 2.2 GB of FP16 safetensors). The I/O
roofline is m2cache's SSD bytes per decode token over the disk bandwidth measured with our
O_DIRECT reader. Needs root (cgroups, drop_caches); ~1 h for both models with 3 repeats.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments import cgroup  # noqa: E402

GIB = 2**30
PY = sys.executable


@dataclass(frozen=True)
class Model:
    name: str  # conf/model option
    budget_gib: float  # the cgroup budget every contender gets
    prompt_tokens: int
    new_tokens: int


MODELS = {
    "smollm2_135m": Model("smollm2_135m", budget_gib=0.75, prompt_tokens=16, new_tokens=16),
    "llama_1b_relu": Model("llama_1b_relu", budget_gib=2.5, prompt_tokens=16, new_tokens=8),
}

# m2cache variants: (label, extra overrides). The preset first, as the paper has it.
M2CACHE = {
    "m2cache": [],  # FP16/INT8/INT4 bands 25/25/50, all three precisions on SSD and in DRAM
    "m2cache_ssd_fp16": ["policy.stored_precisions=[FP16]"],  # INT8/INT4 quantized at load
    "m2cache_fp16": ["policy.stored_precisions=[FP16]", "policy.bands.fp16_frac=1.0",
                     "policy.bands.int8_frac=0.0", "policy.bands.int4_frac=0.0"],
}


# ---- set-up (outside any budget) ---------------------------------------------------------
def prepare(m: Model, data: Path) -> tuple[Path, Path]:
    """The model as a Hugging Face FP16 directory, and its store (+ low-rank predictor)."""
    ckpt, store = data / "models" / m.name, data / "stores" / m.name
    if not (ckpt / "config.json").exists():
        _log(f"{m.name}: writing the checkpoint to {ckpt}")
        if m.name == "smollm2_135m":
            _smollm2_hf(ckpt)
        else:
            from m2sim.compose import load_config
            from real.random_llama import save_random_llama

            save_random_llama(ckpt, load_config(f"model={m.name}").model)
    if not (store / "manifest.json").exists():
        _log(f"{m.name}: converting to the store {store}")
        _m2real(m, ckpt, store, ["workload.output_tokens=2", "real.predictor=ORACLE"],
                data / "runs" / "convert", limit=None)
    if not (store / "predictor" / "predictor.json").exists():
        _log(f"{m.name}: training the low-rank predictor")
        _train_predictor(m, ckpt, store / "predictor")
    return ckpt, store


def _smollm2_hf(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from real.checkpoint import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    from transformers import LlamaConfig, LlamaForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                              dtype=torch.float32, local_files_only=True)
    cfg = hf.config.to_dict()
    cfg.pop("quantization_config", None)  # a plain FP16 copy: no longer GGUF-quantized
    plain = LlamaForCausalLM(LlamaConfig(**cfg))
    plain.load_state_dict(hf.state_dict())
    plain.to(torch.float16).save_pretrained(out)


def _train_predictor(m: Model, ckpt: Path, out: Path) -> None:
    import torch

    from m2sim.compose import load_config
    from real.checkpoint import load_model, smollm2_gguf_path
    from real.predictor import PredictorConfig, collect_samples
    from real.predictor_training import fit_predictor, install_predictor
    from real.quality import heldout_ids
    from real.tokenizer import load_tokenizer

    torch.set_num_threads(2)
    frac = load_config(f"model={m.name}").model.active_frac
    model = load_model(ckpt, dtype=torch.float32)
    if m.name == "smollm2_135m":  # English text; the random model gets random ids
        ids = heldout_ids(load_tokenizer(smollm2_gguf_path()).encode, 2048)
    else:
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, model.args.vocab_size, (1024,), generator=gen).tolist()
    samples = collect_samples(model, ids, window=256)
    # metrics on the training tokens themselves, as in the runs of results/bench_real.md
    install_predictor(fit_predictor(samples, samples, PredictorConfig(active_frac=frac)), out)


def disk_bandwidth(store_dir: Path, repeats: int) -> float:
    """Bytes/s of whole-layer O_DIRECT reads (real.ssd.SSDReader) of the FP16 layer files,
    page cache dropped first; the median of ``repeats``."""
    from m2sim.types import Precision
    from real.ssd import SSDReader
    from real.store import open_store

    store = open_store(store_dir)
    rates = []
    for _ in range(repeats):
        cgroup.drop_page_cache()
        with SSDReader(store, num_threads=4) as ssd:
            t0 = time.perf_counter()
            futs = [ssd.submit_layer(layer, Precision.FP16)
                    for layer in range(store.manifest.num_layers)]
            nbytes = sum(f.result().numel() for f in futs)
            rates.append(nbytes / (time.perf_counter() - t0))
    return statistics.median(rates)


# ---- contenders --------------------------------------------------------------------------
def _m2real(m: Model, ckpt: Path, store: Path, extra: list[str], run_dir: Path,
            limit: int | None, name: str = "m2real") -> dict:
    argv = [PY, "-m", "real", f"model={m.name}", "policy=m2cache", f"real.checkpoint={ckpt}",
            f"real.store_dir={store}", "real.measure_energy=false", "real.torch_threads=1",
            "real.dtype=float16", f"workload.prompt_tokens={m.prompt_tokens}",
            f"workload.output_tokens={m.new_tokens}", f"hydra.run.dir={run_dir}", *extra]
    r = cgroup.run_limited(name, limit, argv, cwd=str(ROOT), timeout_s=3600)
    out = {"returncode": r.returncode, "peak_bytes": r.peak_bytes, "wall_s": r.wall_s,
           "error": _error(r)}
    summary = run_dir / "summary.json"
    if r.returncode == 0 and summary.exists():
        s = json.loads(summary.read_text())
        out.update(decode_tokens_per_s=s["decode_tokens_per_s"], ttft_s=s["ttft_s"],
                   generated_token_ids=s["generated_token_ids"], summary=s)
    return out


def _peer(kind: str, m: Model, ckpt: Path, offload: Path, limit: int | None,
          weights_gib: float) -> dict:
    argv = [PY, "-m", "experiments.bench_peers", kind, "--model", str(ckpt),
            "--offload", str(offload), "--weights-gib", str(weights_gib),
            "--prompt-tokens", str(m.prompt_tokens), "--new-tokens", str(m.new_tokens),
            "--threads", "1"]
    r = cgroup.run_limited(kind, limit, argv, cwd=str(ROOT), timeout_s=3600)
    out = {"returncode": r.returncode, "peak_bytes": r.peak_bytes, "wall_s": r.wall_s,
           "error": _error(r)}
    if r.returncode == 0:
        res = json.loads(r.stdout.strip().splitlines()[-1])
        out.update(decode_tokens_per_s=res["decode_tokens_per_s"], ttft_s=res["ttft_s"],
                   generated_token_ids=res["generated_token_ids"],
                   placement=res["placement"])
    return out


def _error(r: cgroup.Limited) -> str:
    if r.returncode == 0:
        return ""
    if r.returncode < 0:
        return f"killed by signal {-r.returncode} (9: the cgroup's OOM killer)"
    lines = r.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit {r.returncode}"


def m2cache_overhead(m: Model, store: Path, extra: list[str]) -> dict:
    """What m2cache holds besides its DRAM cache (bytes): the runtime (Python, torch and the
    libraries, measured in a cgroup), dense weights in FP16, the device pool, the predictor,
    the KV cache, and working memory (a layer of FP16 dequantized/requantized on the fly)."""
    from m2sim.build import build_run
    from m2sim.compose import load_config

    cfg = load_config(f"model={m.name}", "policy=m2cache", "host.dram_gib=1000", *extra,
                      f"workload.prompt_tokens={m.prompt_tokens}",
                      f"workload.output_tokens={m.new_tokens}")
    run = build_run(cfg, cfg.policy)
    spec, mc = run.spec, cfg.model
    probe = cgroup.run_limited("probe", None, [PY, "-c", "import real.run, real.cli"],
                               cwd=str(ROOT))
    pred = store / "predictor" / "predictor.safetensors"
    ctx = m.prompt_tokens + m.new_tokens
    dense = mc.num_layers * spec.attn_layer_bytes(_fp16()) + 2 * mc.vocab_size * mc.d_model * (
        1 if mc.tie_embeddings else 2)
    parts = {"runtime": probe.peak_bytes, "dense_fp16": dense,
             "device_pool": run.placement.ffn_cache_bytes,
             "predictor": pred.stat().st_size if pred.exists() else 0,
             "kv_cache": ctx * spec.kv_bytes_per_token(),
             "working": 3 * spec.ffn_layer_bytes(_fp16()) + 64 * 2**20}
    parts["total"] = sum(parts.values())
    return parts


def _fp16():
    from m2sim.types import Precision

    return Precision.FP16


# ---- driver ------------------------------------------------------------------------------
def bench_model(m: Model, data: Path, repeats: int, bw: float, rows: list[dict],
                contenders: list[str]) -> None:
    ckpt, store = prepare(m, data)
    limit = int(m.budget_gib * GIB)
    plans = []
    for label in contenders:
        if label in M2CACHE:
            over = m2cache_overhead(m, store, M2CACHE[label])
            _log(f"{m.name} {label}: overhead (GiB) "
                 + ", ".join(f"{k} {v / GIB:.3f}" for k, v in over.items()))
            dram_gib = (limit - over["total"]) / GIB
            extra = [*M2CACHE[label], f"host.dram_gib={dram_gib:.4f}", "host.os_reserved_gib=0"]
            plans.append((label, "m2real", extra, limit, dram_gib, over["total"]))
        elif label == "accelerate_disk":
            plans.append((label, "accelerate", None, limit, 0.0, None))
        elif label == "accelerate_auto":  # what fits the budget in RAM, the rest on disk
            w = max(0.0, m.budget_gib - ACCEL_RUNTIME_GIB)
            plans.append((label, "accelerate", None, limit, w, None))
        elif label == "dense":
            plans.append((label, "dense", None, None, 0.0, None))
    for rep in range(repeats):
        for label, kind, extra, lim, dram_or_w, overhead in plans:  # interleaved: noise hits all alike
            _log(f"{m.name} {label} run {rep + 1}/{repeats}")
            if kind == "m2real":
                res = _m2real(m, ckpt, store, extra, data / "runs" / f"{m.name}_{label}_{rep}",
                              lim, name=label)
            else:
                res = _peer(kind, m, ckpt, data / "offload" / m.name, lim, dram_or_w)
            s = res.pop("summary", None) or {}
            row = {"model": m.name, "contender": label, "run": rep,
                   "cgroup_limit_gib": None if lim is None else round(lim / GIB, 3),
                   "dram_budget_gib": round(dram_or_w, 4) if kind == "m2real" else None,
                   "m2cache_overhead_gib": round(overhead / GIB, 3) if overhead else None,
                   "accelerate_cpu_weights_gib": dram_or_w if kind == "accelerate" else None,
                   "decode_tokens_per_s": res.get("decode_tokens_per_s"),
                   "ttft_s": res.get("ttft_s"),
                   "peak_gib": round(res["peak_bytes"] / GIB, 3) if res["peak_bytes"] else None,
                   "wall_s": round(res["wall_s"], 1), "returncode": res["returncode"],
                   "error": res["error"][:200],
                   "ssd_bytes_per_token": _ssd_per_token(s) if s else None,
                   "dram_fixed_layers": s.get("placement", {}).get("dram_fixed_layers"),
                   "hbm_hit": s.get("hit_rate_by_tier", {}).get("hbm"),
                   "disk_bytes_per_s": bw,
                   "generated_token_ids": " ".join(map(str, res.get("generated_token_ids", [])))}
            _log(f"  -> {row['decode_tokens_per_s']} tok/s, peak {row['peak_gib']} GiB "
                 f"{row['error']}")
            rows.append(row)


ACCEL_RUNTIME_GIB = 0.75  # Python + torch + transformers + accelerate + page cache for its reads


def _ssd_per_token(s: dict) -> float:
    """Steady-state SSD bytes per decode token: the layers outside the DRAM fixed area, read
    whole at every stored precision (the planner's LayerLookahead reads)."""
    pl = s["placement"]
    return (pl["num_layers"] - pl["dram_fixed_layers"]) * _layer_bytes(s)


def _layer_bytes(s: dict) -> float:
    from m2sim.compose import load_config
    from m2sim.specs import ModelSpec
    from m2sim.types import Precision

    cfg = load_config(f"model={s['model']}")
    spec = ModelSpec.of(cfg.model, cfg.quant)
    return sum(spec.ffn_layer_bytes(Precision[p]) for p in s["placement"]["stored_precisions"])


def _log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--contenders",
                   default="m2cache,m2cache_ssd_fp16,m2cache_fp16,accelerate_disk,"
                           "accelerate_auto,dense")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", type=Path, default=ROOT / "outputs" / "bench_real")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench_real.csv")
    args = p.parse_args()
    if not cgroup.available():
        sys.exit("bench_real: needs root and a writable cgroup-v1 memory controller")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows: list[dict] = []
    bws = {}
    for name in args.models.split(","):
        m = MODELS[name]
        _, store = prepare(m, args.data)
        bws[name] = disk_bandwidth(store, 3)
        _log(f"{name}: disk {bws[name] / 1e9:.2f} GB/s (O_DIRECT, whole FP16 layers)")
        bench_model(m, args.data, args.repeats, bws[name], rows, args.contenders.split(","))
        _write(rows, args.out)
    table = report(rows)
    args.out.with_suffix(".md").write_text(table)
    print(table)


def _write(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def report(rows: list[dict]) -> str:
    """Markdown: per model and contender the median decode tokens/s, the ratio to Accelerate
    disk offload, the roofline, the peak memory; then how it was measured."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == model]
        med = {}
        for label in dict.fromkeys(r["contender"] for r in rs):
            ok = [r for r in rs if r["contender"] == label and r["decode_tokens_per_s"]]
            med[label] = (statistics.median(r["decode_tokens_per_s"] for r in ok) if ok
                          else None, ok, [r for r in rs if r["contender"] == label])
        acc = [v[0] for k, v in med.items() if k.startswith("accelerate") and v[0]]
        best_acc = max(acc) if acc else None
        m = MODELS[model]
        lines += [f"**{model}** — cgroup budget {m.budget_gib} GiB per contender "
                  f"(dense: no limit), prompt {m.prompt_tokens} tokens, "
                  f"{m.new_tokens} generated", "",
                  "| contender | decode tok/s (median) | runs | vs best Accelerate | "
                  "SSD MB/token | roofline tok/s | of roofline | DRAM cache GiB | "
                  "peak GiB |", "|---|---|---|---|---|---|---|---|---|"]
        for label, (tps, ok, all_runs) in med.items():
            r0 = (ok or all_runs)[0]
            ssd = r0["ssd_bytes_per_token"]
            roof = r0["disk_bytes_per_s"] / ssd if ssd else None
            cells = [label, _f(tps), f"{len(ok)}/{len(all_runs)}",
                     _f(tps / best_acc if tps and best_acc else None, "x"),
                     _f(ssd / 1e6 if ssd else None), _f(roof),
                     _f(tps / roof if tps and roof else None, "", pct=True),
                     _f(r0["dram_budget_gib"]), _f(max((r["peak_gib"] or 0) for r in all_runs))]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"Machine: {platform.processor() or platform.machine()}, "
                 f"{os.cpu_count()} cores (shared), 1 torch thread per contender, "
                 f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GIB:.0f} GiB RAM. "
                 "Medians of the runs; contenders interleaved.")
    return "\n".join(lines) + "\n"


def _f(x, suffix: str = "", pct: bool = False) -> str:
    if x is None:
        return "-"
    if pct:
        return f"{100 * x:.0f}%"
    return f"{x:.3g}{suffix}"


if __name__ == "__main__":
    main()
