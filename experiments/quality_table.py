"""Quality table: SmolLM2-135M perplexity under FFN quantization, sparsity and precision bands.

Covers: FP16 / INT8 / INT4 neurons (real.quant), oracle vs trained low-rank predictor
(real.predictor), bands 25/25/50 over the active set, Algorithm 1 (real.algorithm1).
Text: pydoc topics; perplexity on the first --tokens tokens, predictors trained from 50% of the
text on (positives: the top 50% or the top 20% of neurons; both run their top 50%), recall
measured from 80%, Algorithm 1 prompts (ranked by the top-20%-label predictor) from 90%.
Run:    .venv/bin/python experiments/quality_table.py [--tokens 1024] [--train-tokens 6144]
Output: results/quality_table.csv, results/predictor_metrics.csv, results/algorithm1.csv,
        results/predictor_l50/, results/predictor_l20/ (trained predictors)   (~8 min, 1 core)
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from real.algorithm1 import algorithm1, mean_neuron_bytes, spec_for
from real.checkpoint import load_model, smollm2_gguf_path
from real.predictor import (
    LowRankPredictor,
    PredictorConfig,
    PredictorFormatError,
    collect_samples,
    metrics_table,
)
from real.predictor_training import fit_predictor, install_predictor, text_ids
from real.quality import (
    FFNTables,
    banded_model,
    fp16_rounded,
    heldout_ids,
    importance_scores,
    perplexity,
)
from real.tokenizer import load_tokenizer

FP16, INT8, INT4, BANDS = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.25, 0.25, 0.5)
LABEL_FRACS = (0.5, 0.2)  # positives in training; every predictor runs the top 0.5 (active_frac)
A1_RANKER = "predictor_l20"  # ranks neurons for Algorithm 1 (plus one oracle run)
OUT = Path("results")


def get_predictors(model, encode, args) -> dict[str, LowRankPredictor]:
    """Per label fraction, load results/predictor_l{NN} if it fits, else train it (and save)."""
    preds, samples = {}, None
    for label in LABEL_FRACS:
        name, where = f"predictor_l{round(label * 100)}", OUT / f"predictor_l{round(label * 100)}"
        try:
            if not args.retrain:
                preds[name] = LowRankPredictor.load(where, args=model.args)
                continue
        except PredictorFormatError as e:
            print(f"training {name} ({e})")
        t0 = time.perf_counter()
        if samples is None:  # collected once, shared by every label fraction
            train_ids, test_ids = text_ids(encode)  # the text from 50% on, and from 80% on
            if len(train_ids) < args.train_tokens:
                raise SystemExit(f"--train-tokens: at most {len(train_ids)} (the training text)")
            samples = (collect_samples(model, train_ids[:args.train_tokens]),
                       collect_samples(model, test_ids[:1024]))
            print(f"collected FFN inputs in {time.perf_counter() - t0:.0f} s")
        cfg = PredictorConfig(active_frac=0.5, label_frac=label)
        preds[name] = fit_predictor(*samples, cfg)
        install_predictor(preds[name], where)
        print(f"{name} trained in {time.perf_counter() - t0:.0f} s")
    return preds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--train-tokens", type=int, default=6144)
    ap.add_argument("--keeps", default="1.0,0.5,0.3,0.2")
    ap.add_argument("--threads", type=int, default=1)  # 2 threads on a shared 2-core box thrash
    ap.add_argument("--retrain", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    OUT.mkdir(exist_ok=True)
    path = smollm2_gguf_path()
    encode = load_tokenizer(path).encode
    model = fp16_rounded(load_model(path))
    spec, tables = spec_for(model.args), FFNTables.build(model)
    preds = get_predictors(model, encode, args)
    for name, pred in preds.items():
        print(f"{name}: recall of the top {pred.active_frac} on held-out tokens\n"
              f"{metrics_table(pred.metrics)}")
    pd.DataFrame([{"predictor": name, "label_frac": p.label_frac, **asdict(m)}
                  for name, p in preds.items() for m in p.metrics]).to_csv(
        OUT / "predictor_metrics.csv", index=False)
    ids = heldout_ids(encode, args.tokens)
    scorers = {"oracle": importance_scores(model), **{n: p.logits for n, p in preds.items()}}
    rows: list[dict] = []

    def measure(name: str, selector: str, keep: float, fracs: tuple) -> None:
        t0 = time.perf_counter()
        sparse = banded_model(model, tables, scorers.get(selector), keep_frac=keep, fracs=fracs)
        ppl = perplexity(sparse, ids)
        nbytes = mean_neuron_bytes(spec, fracs)
        rows.append({"config": name, "selector": selector, "keep_frac": keep,
                     "fp16_frac": fracs[0], "int8_frac": fracs[1], "int4_frac": fracs[2],
                     "bytes_per_active_neuron": nbytes,
                     "ffn_bytes_vs_fp16": keep * nbytes / mean_neuron_bytes(spec, FP16),
                     "perplexity": ppl, "wall_s": time.perf_counter() - t0})
        print(f"{name:>18} {selector:>15} keep={keep:.2f} ppl={ppl:8.3f}", flush=True)

    for name, fracs in (("dense_fp16", FP16), ("dense_int8", INT8), ("dense_int4", INT4)):
        measure(name, "-", 1.0, fracs)
    keeps = [float(k) for k in args.keeps.split(",")]
    for selector in scorers:
        for keep in keeps:
            if keep < 1.0:
                measure("sparse_fp16", selector, keep, FP16)
            measure("bands_25_25_50", selector, keep, BANDS)

    prompts = [heldout_ids(encode, 32, start_frac=f) for f in (0.9, 0.92, 0.94, 0.96)]
    a1_rows = []
    for ranker, budget in ((A1_RANKER, mean_neuron_bytes(spec, BANDS)), (A1_RANKER, 1300.0),
                           ("oracle", mean_neuron_bytes(spec, BANDS))):
        t0 = time.perf_counter()
        res = algorithm1(model, prompts, budget_bytes_per_neuron=budget, keep_frac=0.5,
                         tables=tables, score_fn=scorers[ranker], spec=spec, step=1 / 16,
                         max_new_tokens=24)
        print(f"Algorithm 1 ({ranker}) @ {budget:.1f} B/neuron: best {res.best.fracs} "
              f"({time.perf_counter() - t0:.0f} s, {len(res.table)} candidates)", flush=True)
        a1_rows += [{"ranker": ranker, "budget_bytes_per_neuron": budget, **asdict(r),
                     "entropy_per_token": r.entropy_per_token, "best": r == res.best}
                    for r in res.table]
        measure(f"algorithm1@{budget:.0f}B", ranker, 0.5, res.best.fracs)
    pd.DataFrame(a1_rows).to_csv(OUT / "algorithm1.csv", index=False)

    df = pd.DataFrame(rows)
    dense = df.loc[df.config == "dense_fp16", "perplexity"].iloc[0]
    df["vs_dense_fp16"] = df.perplexity / dense
    df.to_csv(OUT / "quality_table.csv", index=False)
    with pd.option_context("display.width", 160, "display.precision", 3):
        print(df.drop(columns=["wall_s"]).to_string(index=False))
        print(pd.DataFrame(a1_rows).to_string(index=False))


if __name__ == "__main__":
    main()
