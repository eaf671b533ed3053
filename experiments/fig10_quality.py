"""Figure 10, quality half: perplexity and predictive entropy per FP16/INT8/INT4 split (§6.3).

Covers: precision bands on real weights (real.quality.banded_model: each token's active set,
        ranked by a selector, split into FP16/INT8/INT4 rows quantized as the store holds them),
        perplexity on held-out pydoc text, Eq. 2 predictive entropy
        (real.algorithm1.predictive_entropy), Algorithm 1's choice at the default byte budget;
        SmolLM2-135M with the oracle and the trained low-rank predictor (results/predictor_l20).
Splits: the speed half's (conf/experiment/fig10_precision.yaml), at the model's active_frac.
Needs:  results/predictor_l20/ and results/algorithm1.csv from experiments/quality_table.py
        (or --selectors oracle --algorithm1 run: Algorithm 1 searched here, ~1 min more).
Run:    .venv/bin/python -m experiments.fig10_quality [--tokens 1024] [--selectors oracle,...]
Output: results/paper/fig10_quality.csv (~4 min, 1 core); fig10_precision.py joins and plots it
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from experiments import common
from m2sim.compose import load_config
from real.algorithm1 import (
    Fracs,
    algorithm1,
    mean_neuron_bytes,
    predictive_entropy,
    spec_for,
)
from real.checkpoint import CheckpointError, load_model, smollm2_gguf_path
from real.predictor import LowRankPredictor, PredictorFormatError
from real.quality import (
    FFNTables,
    ScoreFn,
    banded_model,
    banded_parts_fn,
    fp16_rounded,
    heldout_ids,
    importance_scores,
    perplexity,
)
from real.run import check_model
from real.tokenizer import load_tokenizer

NAME = "fig10_quality"
SWEEP_FILE = common.REPO / "conf" / "experiment" / "fig10_precision.yaml"
FP16: Fracs = (1.0, 0.0, 0.0)
BUDGET_SPLIT: Fracs = (0.25, 0.25, 0.5)  # paper's 13B split; its bytes = Algorithm 1's budget
A1_STEP = 1 / 16  # Algorithm 1's grid, as experiments/quality_table.py
PROMPT_STARTS = (0.9, 0.92, 0.94, 0.96)  # Eq. 2 prompts, as experiments/quality_table.py


def speed_splits() -> list[Fracs]:
    """The (fp16, int8, int4) splits the speed half sweeps, read from its experiment file."""
    bands = OmegaConf.load(SWEEP_FILE).hydra.sweeper.params["policy.bands"]
    sweep = OverridesParser.create().parse_override(f"policy.bands={bands}")
    return [(b["fp16_frac"], b["int8_frac"], b["int4_frac"]) for b in sweep.sweep_iterator()]


def encoder(path: Path, vocab_size: int):
    """The checkpoint's tokenizer; for a bare checkpoint (tests), UTF-8 bytes as token ids."""
    try:
        return load_tokenizer(path).encode
    except CheckpointError:
        if vocab_size < 256:
            raise SystemExit(f"{path.name} has no tokenizer and a vocabulary below 256 "
                             f"bytes") from None
        return lambda text: list(text.encode("utf-8"))


def selectors(names: list[str], model, predictors: Path) -> dict[str, ScoreFn]:
    """``oracle`` (true importance) or a saved low-rank predictor ``predictors/<name>``."""
    out = {}
    for name in names:
        try:
            out[name] = importance_scores(model) if name == "oracle" else \
                LowRankPredictor.load(predictors / name, args=model.args).logits
        except PredictorFormatError as e:
            raise SystemExit(f"--selectors {name}: {e} (experiments/quality_table.py trains and "
                             f"saves it; or use --selectors oracle)") from None
    return out


def algorithm1_choice(source: Path, selector: str, budget: float) -> Fracs:
    """Algorithm 1's split for ``selector`` at ``budget``: the best row of the
    ``algorithm1.csv`` that experiments/quality_table.py writes."""
    if not source.is_file():
        raise SystemExit(f"--algorithm1: {source} not found (experiments/quality_table.py writes "
                         f"it; or --algorithm1 run to search here)")
    t = pd.read_csv(source)
    best = t[(t.ranker == selector) & t.best & np.isclose(t.budget_bytes_per_neuron, budget)]
    if len(best) != 1:
        raise SystemExit(f"{source}: no Algorithm 1 choice for {selector} at {budget:g} bytes "
                         f"per neuron (run experiments/quality_table.py, or --algorithm1 run)")
    r = best.iloc[0]
    return (float(r.fp16_frac), float(r.int8_frac), float(r.int4_frac))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=common.PAPER_OUT)
    ap.add_argument("--model", default="smollm2_135m", help="conf/model option (active_frac)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="default: bundled SmolLM2")
    ap.add_argument("--tokens", type=int, default=1024, help="held-out tokens for perplexity")
    ap.add_argument("--prompt-tokens", type=int, default=32, help="per Eq. 2 prompt (4 prompts)")
    ap.add_argument("--new-tokens", type=int, default=24, help="decode steps per Eq. 2 prompt")
    ap.add_argument("--selectors", default="oracle,predictor_l20")
    ap.add_argument("--predictors", type=Path, default=common.REPO / "results")
    ap.add_argument("--algorithm1", default=str(common.REPO / "results" / "algorithm1.csv"),
                    help="quality_table.py's algorithm1.csv, or 'run' to search here")
    ap.add_argument("--threads", type=int, default=1)  # 2 threads on a shared 2-core box thrash
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(f"model={args.model}")
    path = args.checkpoint or smollm2_gguf_path()
    model = fp16_rounded(load_model(path))
    check_model(model, cfg, path)
    encode = encoder(path, model.args.vocab_size)
    keep, spec, tables = cfg.model.active_frac, spec_for(model.args), FFNTables.build(model)
    ids = heldout_ids(encode, args.tokens)
    prompts = [heldout_ids(encode, args.prompt_tokens, start_frac=f) for f in PROMPT_STARTS]
    budget = mean_neuron_bytes(spec, BUDGET_SPLIT)
    scorers = selectors(args.selectors.split(","), model, args.predictors)
    choices = {} if args.algorithm1 == "run" else {  # read up front: fail before measuring
        sel: algorithm1_choice(Path(args.algorithm1), sel, budget) for sel in scorers}
    rows: list[dict] = []

    def measure(config: str, selector: str, score_fn, keep_frac: float, fracs: Fracs) -> None:
        t0 = time.perf_counter()
        ppl = perplexity(banded_model(model, tables, score_fn, keep_frac=keep_frac, fracs=fracs),
                         ids)
        parts = None if score_fn is None else banded_parts_fn(
            tables, score_fn, d_ff=model.args.d_ff, keep_frac=keep_frac, fracs=fracs)
        nats, steps = predictive_entropy(model, prompts, args.new_tokens, parts)
        rows.append({"model": cfg.model.name, "selector": selector, "config": config,
                     "keep_frac": keep_frac, "fp16_frac": fracs[0], "int8_frac": fracs[1],
                     "int4_frac": fracs[2], "mean_bits": 16 * fracs[0] + 8 * fracs[1] + 4 * fracs[2],
                     "bytes_per_active_neuron": mean_neuron_bytes(spec, fracs),
                     "perplexity": ppl, "entropy_nats": nats,
                     "entropy_per_token_nats": nats / steps, "ppl_tokens": len(ids),
                     "entropy_tokens": steps, "wall_s": time.perf_counter() - t0})
        print(f"{config:>10} {selector:>14} {fracs} ppl={ppl:8.3f} "
              f"H/token={nats / steps:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    measure("dense_fp16", "-", None, 1.0, FP16)
    for selector, score_fn in scorers.items():
        for fracs in speed_splits():
            measure("split", selector, score_fn, keep, fracs)
        a1 = choices[selector] if choices else algorithm1(
            model, prompts, budget_bytes_per_neuron=budget, keep_frac=keep, tables=tables,
            score_fn=score_fn, spec=spec, step=A1_STEP, max_new_tokens=args.new_tokens).best.fracs
        measure("algorithm1", selector, score_fn, keep, a1)
    df = pd.DataFrame(rows)
    df["ppl_vs_dense_fp16"] = df.perplexity / df.perplexity.iloc[0]
    common.save_csv(df, args.out, NAME)


if __name__ == "__main__":
    main()
