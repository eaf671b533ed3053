"""Per-layer low-rank activation predictors (Deja Vu style, paper §2), trained offline on CPU.

Layer l's predictor maps the normalized FFN input x (d,) to one logit per neuron,
``W_out (W_in x) + b_out`` (W_in (r, d), W_out (f, r): Linear(d, r) -> Linear(r, f)); the sigmoid
is the neuron's score; a token runs the predicted top-k, k = active_frac * d_ff. Labels: neuron
i is positive iff it is in the token's top label_frac * d_ff by |act(gate x) * up x| (default
label_frac = active_frac); the loss is BCE with positives weighted by negatives / positives.
Inputs and importance come from dense forwards (``record_ffn``) over offline text. All layers
train together as batched matmuls with hand-written gradients (the BCE autograd path is ~10x
slower on CPU). Stored as ``predictor.safetensors`` + ``predictor.json`` in a directory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from real.model import FFNPart, FFNPartsFn, LlamaArgs, Transformer, record_ffn

FORMAT_NAME = "m2sim-lowrank-predictor"
FORMAT_VERSION = 1
WEIGHTS_NAME = "predictor.safetensors"
META_NAME = "predictor.json"


class PredictorFormatError(ValueError):
    """A saved predictor that is missing, of another format version, or of other shapes."""


@dataclass(frozen=True)
class PredictorConfig:
    """Training hyper-parameters (defaults: SmolLM2-135M on 6k tokens, ~1.3 min on one core)."""

    rank: int = 128  # r of Linear(d, r) -> Linear(r, d_ff)
    active_frac: float = 0.5  # neurons run per token: the predicted top active_frac * d_ff
    # DECISION: positives are the top label_frac (default active_frac) by importance. A label
    # set tighter than the active set (e.g. 0.2 for 0.5) aims the loss at the neurons that
    # matter most: on SmolLM2, keep-0.5 perplexity 27.9 -> 20.5 (oracle 12.9) at about the same
    # recall@k (0.67 -> 0.66), since the misses are then the less important neurons.
    label_frac: Optional[float] = None
    epochs: int = 6
    batch_tokens: int = 256
    lr: float = 1e-2  # peak of a one-cycle schedule (Adam)
    weight_decay: float = 0.0
    seed: int = 0

    @property
    def positive_frac(self) -> float:
        return self.active_frac if self.label_frac is None else self.label_frac

    def __post_init__(self) -> None:
        for name in ("active_frac", "label_frac"):
            frac = getattr(self, name)
            if frac is not None and not 0.0 < frac < 1.0:
                raise ValueError(f"PredictorConfig.{name} must be in (0, 1), got {frac}")
        for name in ("rank", "epochs", "batch_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"PredictorConfig.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True)
class LayerMetrics:
    """Held-out quality of one layer's predictor."""

    layer: int
    recall_at_k: float  # |predicted top-k ∩ true top-k| / k, mean over tokens
    importance_recall: float  # importance summed over predicted top-k / over true top-k
    predicted_active_frac: float  # fraction of neurons with score > 0.5
    random_recall: float  # what random scores reach: k / d_ff


@dataclass(frozen=True, eq=False)
class FFNSamples:
    """FFN inputs and true neuron importance of every layer for N tokens."""

    inputs: Tensor  # (L, N, d) float32, normalized FFN inputs
    importance: Tensor  # (L, N, f) float16, |act(gate x) * up x|

    @property
    def num_tokens(self) -> int:
        return self.inputs.shape[1]


def active_count(d_ff: int, active_frac: float) -> int:
    """k = round(active_frac * d_ff), at least 1 (as ``real.quality.oracle_topk_parts_fn``)."""
    return max(1, round(active_frac * d_ff))


def topk_mask(scores: Tensor, k: int) -> Tensor:
    """(..., f) -> bool (..., f), True on each row's k largest entries."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    return mask.scatter_(-1, scores.topk(k, dim=-1).indices, True)


def collect_samples(model: Transformer, ids: Sequence[int], *, window: int = 512,
                    active_frac: Optional[float] = None) -> FFNSamples:
    """Dense forwards over ``ids`` in windows of ``window`` tokens (each from position 0).

    ``active_frac`` is ignored (labels are made at training time); kept for older callers.
    """
    del active_frac
    device = model.tok_embeddings.weight.device
    inputs, importance = [], []
    for start in range(0, len(ids), window):
        tokens = torch.tensor([list(ids[start:start + window])], device=device)  # (1, T)
        x, imp = record_ffn(model, tokens)  # (L, T, d), (L, T, f)
        inputs.append(x.float().cpu())
        importance.append(imp.to(torch.float16).cpu())  # halves the largest buffer
    return FFNSamples(torch.cat(inputs, dim=1), torch.cat(importance, dim=1))


class LowRankPredictor:
    """Stacked per-layer predictors: ``w_in`` (L, r, d), ``w_out`` (L, f, r), ``b_out`` (L, f)."""

    def __init__(self, w_in: Tensor, w_out: Tensor, b_out: Tensor, *, active_frac: float,
                 label_frac: Optional[float] = None,
                 metrics: Sequence[LayerMetrics] = ()) -> None:
        L, r, d = w_in.shape
        if w_out.shape[::2] != (L, r) or b_out.shape != (L, w_out.shape[1]):
            raise PredictorFormatError(f"inconsistent predictor shapes: w_in {tuple(w_in.shape)}, "
                                       f"w_out {tuple(w_out.shape)}, b_out {tuple(b_out.shape)}")
        self.w_in, self.w_out, self.b_out = w_in, w_out, b_out
        self.active_frac = active_frac
        self.label_frac = active_frac if label_frac is None else label_frac
        self.metrics = tuple(metrics)

    @property
    def num_layers(self) -> int:
        return self.w_in.shape[0]

    @property
    def rank(self) -> int:
        return self.w_in.shape[1]

    @property
    def d_model(self) -> int:
        return self.w_in.shape[2]

    @property
    def d_ff(self) -> int:
        return self.w_out.shape[1]

    def logits(self, layer: int, x: Tensor) -> Tensor:
        """Pre-sigmoid scores (..., f) for normalized FFN inputs x (..., d)."""
        w_in = self.w_in[layer].to(x.device, x.dtype)
        w_out = self.w_out[layer].to(x.device, x.dtype)
        return (x @ w_in.T) @ w_out.T + self.b_out[layer].to(x.device, x.dtype)

    def scores(self, layer: int, h_normed: Tensor) -> Tensor:
        """Sigmoid scores (d_ff,) of one token's neurons; h_normed holds one token ((1, 1, d))."""
        if h_normed.numel() != self.d_model:
            raise ValueError(f"scores needs one token's FFN input ({self.d_model} values), got "
                             f"shape {tuple(h_normed.shape)}")
        return torch.sigmoid(self.logits(layer, h_normed.reshape(self.d_model)).float())

    def check_model(self, args: LlamaArgs) -> None:
        """Raise ``PredictorFormatError`` unless this predictor fits a model of ``args``."""
        have = (self.num_layers, self.d_model, self.d_ff)
        want = (args.n_layers, args.d_model, args.d_ff)
        if have != want:
            raise PredictorFormatError(f"predictor is for (n_layers, d_model, d_ff) = {have}, "
                                       f"the model has {want}")

    @torch.no_grad()
    def evaluate(self, samples: FFNSamples, keep_frac: Optional[float] = None
                 ) -> list[LayerMetrics]:
        """Per layer: recall@k of the true top-k set (k from ``keep_frac``, default
        ``active_frac``), importance captured, and the fraction of scores above 0.5."""
        k = active_count(self.d_ff, self.active_frac if keep_frac is None else keep_frac)
        out = []
        for layer in range(self.num_layers):
            z = self.logits(layer, samples.inputs[layer])  # (N, f)
            imp = samples.importance[layer].float()  # (N, f)
            true_top, pred_top = imp.topk(k, dim=-1), z.topk(k, dim=-1).indices  # (N, k)
            hits = topk_mask(imp, k).gather(-1, pred_top)  # (N, k) bool; ties count as true
            captured = imp.gather(-1, pred_top).sum(-1) / true_top.values.sum(-1).clamp_min(1e-30)
            out.append(LayerMetrics(layer=layer, recall_at_k=float(hits.float().mean()),
                                    importance_recall=float(captured.mean()),
                                    predicted_active_frac=float((z > 0).float().mean()),
                                    random_recall=k / self.d_ff))
        return out

    def with_metrics(self, metrics: Sequence[LayerMetrics]) -> LowRankPredictor:
        return LowRankPredictor(self.w_in, self.w_out, self.b_out, active_frac=self.active_frac,
                                label_frac=self.label_frac, metrics=metrics)

    # ---- persistence ------------------------------------------------------------------
    def save(self, directory: Union[str, Path]) -> Path:
        """Write ``predictor.safetensors`` and ``predictor.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"w_in": self.w_in.contiguous(), "w_out": self.w_out.contiguous(),
                   "b_out": self.b_out.contiguous()}, str(directory / WEIGHTS_NAME))
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "num_layers": self.num_layers,
                "d_model": self.d_model, "d_ff": self.d_ff, "rank": self.rank,
                "active_frac": self.active_frac, "label_frac": self.label_frac,
                "metrics": [asdict(m) for m in self.metrics]}
        (directory / META_NAME).write_text(json.dumps(meta, indent=1) + "\n")
        return directory

    @staticmethod
    def load(directory: Union[str, Path], *, args: Optional[LlamaArgs] = None) -> LowRankPredictor:
        """Read a saved predictor; with ``args``, also check it fits that model."""
        directory = Path(directory)
        meta_path, weights_path = directory / META_NAME, directory / WEIGHTS_NAME
        for p in (meta_path, weights_path):
            if not p.is_file():
                raise PredictorFormatError(f"{p}: no such file (not a saved predictor)")
        meta = _read_meta(meta_path)
        t = load_file(str(weights_path))
        L, r, d, f = meta["num_layers"], meta["rank"], meta["d_model"], meta["d_ff"]
        expect = {"w_in": (L, r, d), "w_out": (L, f, r), "b_out": (L, f)}
        for name, shape in expect.items():
            if name not in t or tuple(t[name].shape) != shape:
                got = tuple(t[name].shape) if name in t else "missing"
                raise PredictorFormatError(f"{weights_path}: tensor {name} is {got}, "
                                           f"{META_NAME} says {shape}")
        pred = LowRankPredictor(t["w_in"], t["w_out"], t["b_out"], active_frac=meta["active_frac"],
                                label_frac=meta.get("label_frac"),
                                metrics=[LayerMetrics(**m) for m in meta["metrics"]])
        if args is not None:
            pred.check_model(args)
        return pred


_META_FIELDS = {"num_layers", "rank", "d_model", "d_ff", "active_frac", "metrics"}


def _read_meta(path: Path) -> dict:
    """``predictor.json``, checked for format, version and fields."""
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PredictorFormatError(f"{path}: not JSON ({e})") from None
    meta = meta if isinstance(meta, dict) else {}
    if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
        raise PredictorFormatError(f"{path}: format {meta.get('format')!r} version "
                                   f"{meta.get('version')!r}, expected {FORMAT_NAME!r} version "
                                   f"{FORMAT_VERSION}")
    missing = sorted(_META_FIELDS - meta.keys())
    if missing:
        raise PredictorFormatError(f"{path}: missing fields {missing}")
    return meta


def train_predictor(samples: FFNSamples, cfg: PredictorConfig) -> LowRankPredictor:
    """Fit every layer's predictor at once with Adam on weighted BCE (one-cycle learning rate)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    L, N, d = samples.inputs.shape
    f, r = samples.importance.shape[2], cfg.rank
    k = active_count(f, cfg.positive_frac)
    labels = torch.stack([topk_mask(imp.float(), k) for imp in samples.importance])  # (L, N, f)
    w_in = (torch.randn(L, r, d, generator=gen) / math.sqrt(d)).requires_grad_()
    w_out = (torch.randn(L, f, r, generator=gen) / math.sqrt(r)).requires_grad_()
    b_out = torch.zeros(L, f, requires_grad=True)
    params = (w_in, w_out, b_out)
    batch = min(cfg.batch_tokens, N)
    steps = cfg.epochs * (N // batch)
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    pos_weight = (f - k) / k  # balance positives against negatives
    for _ in range(cfg.epochs):
        order = torch.randperm(N, generator=gen)
        for start in range(0, N - batch + 1, batch):
            idx = order[start:start + batch]
            x, y = samples.inputs[:, idx], labels[:, idx]  # (L, B, d), (L, B, f)
            _bce_step(params, x, y, pos_weight)
            opt.step()
            sched.step()
    return LowRankPredictor(w_in.detach(), w_out.detach(), b_out.detach(),
                            active_frac=cfg.active_frac, label_frac=cfg.positive_frac)


@torch.no_grad()
def _bce_step(params: tuple[Tensor, Tensor, Tensor], x: Tensor, y: Tensor,
              pos_weight: float) -> None:
    """Set .grad of (w_in, w_out, b_out) to d(mean weighted BCE)/dparam, summed over layers."""
    w_in, w_out, b_out = params
    h = torch.bmm(x, w_in.transpose(1, 2))  # (L, B, r)
    g = torch.baddbmm(b_out[:, None, :], h, w_out.transpose(1, 2)).sigmoid_()  # (L, B, f)
    # d/dz of -(w y log s + (1 - y) log(1 - s)) = s (1 + (w - 1) y) - w y
    yf = y.to(g.dtype)
    if pos_weight != 1.0:
        g.mul_(yf.mul(pos_weight - 1.0).add_(1.0))
    g.sub_(yf.mul_(pos_weight)).div_(g.shape[1] * g.shape[2])  # mean over tokens and neurons
    w_out.grad = torch.bmm(g.transpose(1, 2), h)  # (L, f, r)
    b_out.grad = g.sum(1)  # (L, f)
    w_in.grad = torch.bmm(torch.bmm(g, w_out).transpose(1, 2), x)  # (L, r, d)


def predicted_topk_parts_fn(model: Transformer, predictor: LowRankPredictor,
                            keep_frac: Optional[float] = None) -> FFNPartsFn:
    """Per layer, one float part with the predictor's top ``keep_frac`` neurons (one token)."""
    predictor.check_model(model.args)
    frac = predictor.active_frac if keep_frac is None else keep_frac
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"keep_frac must be in (0, 1], got {frac}")
    k = active_count(model.args.d_ff, frac)

    def parts_fn(layer: int, h_normed: Tensor) -> Sequence[FFNPart]:
        if h_normed.shape[:2] != (1, 1):
            raise ValueError(f"predicted top-k needs one token of batch 1, got input "
                             f"{tuple(h_normed.shape)}")
        ids = predictor.scores(layer, h_normed).topk(k).indices
        return [model.layers[layer].feed_forward.part(ids)]

    return parts_fn


def metrics_table(metrics: Sequence[LayerMetrics]) -> str:
    """Per-layer recall, importance recall and predicted-active fraction, then mean and min."""
    lines = ["layer  recall@k  importance  pred_active  random"]
    lines += [f"{m.layer:5d}  {m.recall_at_k:8.3f}  {m.importance_recall:10.3f}  "
              f"{m.predicted_active_frac:11.3f}  {m.random_recall:6.3f}" for m in metrics]
    if metrics:
        recall = [m.recall_at_k for m in metrics]
        imp = [m.importance_recall for m in metrics]
        lines.append(f" mean  {sum(recall) / len(recall):8.3f}  {sum(imp) / len(imp):10.3f}")
        lines.append(f"  min  {min(recall):8.3f}  {min(imp):10.3f}")
    return "\n".join(lines)
