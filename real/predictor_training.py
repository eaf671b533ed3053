"""Training a store's low-rank predictor (``m2real-train-predictor``): text, fit, atomic install.

Text: ``pydoc_data.topics`` (``real.quality.heldout_text``), split at topic boundaries: tokens
from 50% of its characters on train, tokens from 80% on are held out for the reported recall,
and the first half stays unseen (m2real's default prompt and the perplexity slice start at 0).
A checkpoint without a tokenizer (random test models) uses seeded random token ids instead.
The predictor goes into ``<store>/predictor`` atomically (a hidden temporary directory, then a
rename), so ``real.predictor=auto`` never finds a partial one.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from m2sim.errors import ConfigError, check_range
from real.checkpoint import CheckpointError, load_model
from real.config import RealRunConfig
from real.model import Transformer
from real.predictor import (
    FFNSamples,
    LowRankPredictor,
    PredictorConfig,
    collect_samples,
    train_predictor,
)
from real.quality import heldout_text, topic_start
from real.run import check_model, checkpoint_path, ensure_store, host_settings
from real.store import _fsync_dir, _replace
from real.tokenizer import load_tokenizer

# DECISION: as experiments/quality_table.py, so its saved predictors and this command's agree
TRAIN_START_FRAC = 0.5  # training tokens start at the first topic after 50% of the text
HELDOUT_START_FRAC = 0.8  # held-out tokens (the reported recall) from 80% on
PREDICTOR_DIR = "predictor"  # <store>/predictor: what real.predictor=auto looks for


def text_ids(encode: Callable[[str], list[int]]) -> tuple[list[int], list[int]]:
    """Every token id of the training part and of the held-out part of ``heldout_text()``."""
    text = heldout_text()
    a, b = topic_start(text, TRAIN_START_FRAC), topic_start(text, HELDOUT_START_FRAC)
    return encode(text[a:b]), encode(text[b:])


def random_ids(vocab_size: int, num_tokens: int, *, seed: int) -> list[int]:
    """Seeded uniform token ids: the text of a checkpoint without a tokenizer."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (num_tokens,), generator=gen).tolist()


def fit_predictor(train: FFNSamples, heldout: FFNSamples, cfg: PredictorConfig) -> LowRankPredictor:
    """Train on ``train``; the result carries its per-layer metrics on ``heldout``."""
    pred = train_predictor(train, cfg)
    return pred.with_metrics(pred.evaluate(heldout))


def install_predictor(pred: LowRankPredictor, directory: Path) -> Path:
    """Save ``pred`` as ``directory`` atomically: written and fsynced in a hidden sibling, then
    renamed into place (an older predictor there is replaced). An interrupted install leaves
    the old predictor or none, never a partial one under ``directory``'s name."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        pred.save(tmp)
        for file in tmp.iterdir():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        _replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def predictor_config(cfg: RealRunConfig) -> PredictorConfig:
    """``real.predictor_train`` as a ``PredictorConfig``; active_frac defaults to what m2real
    runs (``trace.active_frac``, else ``model.active_frac``)."""
    t = cfg.real.predictor_train
    frac = t.active_frac or getattr(cfg.trace, "active_frac", None) or cfg.model.active_frac
    if not 0.0 < frac < 1.0:  # model.active_frac may be 1 (dense); a predictor needs a subset
        raise ConfigError("real.predictor_train.active_frac",
                          f"got {frac} from the model or trace (allowed: 0 < active_frac < 1)")
    return PredictorConfig(rank=t.rank, active_frac=frac, label_frac=t.label_frac,
                           epochs=t.epochs, batch_tokens=t.batch_tokens, lr=t.lr,
                           weight_decay=t.weight_decay, seed=t.seed)


@dataclass(frozen=True, kw_only=True)
class TrainedPredictor:
    """What ``train_store_predictor`` did: the predictor (with held-out metrics) and where."""

    predictor: LowRankPredictor
    path: Path  # <store>/predictor
    text: str  # "pydoc topics" or "random ids"
    train_tokens: int
    heldout_tokens: int
    collect_s: float  # dense forwards that record FFN inputs and importance
    train_s: float


def check_model_fit(cfg: RealRunConfig, model: Transformer) -> None:
    """The training fields bounded by the model: rank <= d_model, window <= its context."""
    t, a = cfg.real.predictor_train, model.args
    check_range("real.predictor_train.rank", t.rank, 1, a.d_model)
    check_range("real.predictor_train.window_tokens", t.window_tokens, 1, a.max_context)


def training_ids(cfg: RealRunConfig, encode: Optional[Callable[[str], list[int]]],
                 vocab_size: int) -> tuple[list[int], list[int], str]:
    """(train ids, held-out ids, what they are), of ``real.predictor_train``'s lengths."""
    t = cfg.real.predictor_train
    if encode is None:
        gen_ids = random_ids(vocab_size, t.train_tokens + t.heldout_tokens, seed=t.seed)
        return gen_ids[:t.train_tokens], gen_ids[t.train_tokens:], "random ids"
    train, heldout = text_ids(encode)
    for name, ids, want in (("train_tokens", train, t.train_tokens),
                            ("heldout_tokens", heldout, t.heldout_tokens)):
        check_range(f"real.predictor_train.{name}", want, 1, len(ids))  # the text's length
    return train[:t.train_tokens], heldout[:t.heldout_tokens], "pydoc topics"


def train_store_predictor(cfg: RealRunConfig) -> TrainedPredictor:
    """Load the checkpoint, build its store if absent, train and install ``<store>/predictor``.

    Every check runs before the store is built or anything is written.
    """
    host_settings(cfg.real)
    if cfg.real.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("real.device", f"{cfg.real.device} requested but CUDA is not "
                          f"available here (allowed: cpu)")
    pcfg = predictor_config(cfg)
    path = checkpoint_path(cfg)
    model = load_model(path, dtype=getattr(torch, cfg.real.dtype), device=cfg.real.device)
    check_model(model, cfg, path)
    check_model_fit(cfg, model)
    encode = _encoder(path)
    train_ids, heldout_ids, text = training_ids(cfg, encode, model.args.vocab_size)
    store = ensure_store(cfg, model, ())
    m, a = store.manifest, model.args
    if (m.num_layers, m.d_model, m.d_ff) != (a.n_layers, a.d_model, a.d_ff):
        raise ConfigError("real.store_dir", f"{store.path} holds (layers, d_model, d_ff) = "
                          f"{(m.num_layers, m.d_model, m.d_ff)}, the checkpoint has "
                          f"{(a.n_layers, a.d_model, a.d_ff)} (allowed: the checkpoint's store)")
    window = cfg.real.predictor_train.window_tokens
    t0 = time.perf_counter()
    train = collect_samples(model, train_ids, window=window)
    heldout = collect_samples(model, heldout_ids, window=window)
    t1 = time.perf_counter()
    pred = fit_predictor(train, heldout, pcfg)
    t2 = time.perf_counter()
    where = install_predictor(pred, Path(store.path) / PREDICTOR_DIR)
    return TrainedPredictor(predictor=pred, path=where, text=text, train_tokens=len(train_ids),
                            heldout_tokens=len(heldout_ids), collect_s=t1 - t0, train_s=t2 - t1)


def _encoder(path: Path) -> Optional[Callable[[str], list[int]]]:
    """The checkpoint's ``encode``, or None when it ships without a tokenizer."""
    try:
        return load_tokenizer(path).encode
    except CheckpointError:
        return None


def metrics_rows(pred: LowRankPredictor) -> list[dict]:
    """One row per layer: the held-out metrics with the predictor's rank and fractions."""
    return [{"rank": pred.rank, "active_frac": pred.active_frac, "label_frac": pred.label_frac,
             **dataclasses.asdict(m)} for m in pred.metrics]
