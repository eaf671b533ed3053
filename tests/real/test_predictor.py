"""Low-rank activation predictors (real/predictor.py): training, recall, persistence, parts."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from real.checkpoint import load_model
from real.model import sparse_ffn
from real.predictor import (
    META_NAME,
    LowRankPredictor,
    PredictorConfig,
    PredictorFormatError,
    _bce_step,
    collect_samples,
    metrics_table,
    predicted_topk_parts_fn,
    topk_mask,
    train_predictor,
)

TINY_CFG = PredictorConfig(rank=16, active_frac=0.25, epochs=20, batch_tokens=128, lr=1e-2)


def _ids(n: int, seed: int) -> list[int]:
    return torch.randint(3, 97, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.fixture
def tiny_trained(make_tiny_llama):
    """A tiny model, a predictor trained on one token stream, held-out samples of another."""
    _, path = make_tiny_llama()
    model = load_model(path)
    train = collect_samples(model, _ids(1024, 0), window=32)
    heldout = collect_samples(model, _ids(256, 1), window=32)
    return model, train_predictor(train, TINY_CFG), heldout


def test_collected_samples_are_each_tokens_ffn_input_and_importance(make_tiny_llama):
    _, path = make_tiny_llama()
    model = load_model(path)
    s = collect_samples(model, _ids(40, 2), window=16)
    assert s.inputs.shape == (2, 40, 64) and s.importance.shape == (2, 40, 96)
    assert s.num_tokens == 40 and s.importance.dtype == torch.float16
    x = s.inputs[1, 20]  # token 20 = position 4 of the second window
    torch.testing.assert_close(s.importance[1, 20].float(),
                               model.layers[1].feed_forward.hidden(x).abs(), atol=1e-3,
                               rtol=1e-3)
    mask = topk_mask(s.importance[1].float(), 24)  # (N, f)
    assert (mask.sum(-1) == 24).all()


def test_trained_predictor_beats_random_scores_on_heldout_tokens(tiny_trained):
    _, pred, heldout = tiny_trained
    metrics = pred.evaluate(heldout)
    assert [m.layer for m in metrics] == [0, 1]
    for m in metrics:
        assert m.random_recall == pytest.approx(0.25)
        assert m.recall_at_k > m.random_recall + 0.1
        assert m.recall_at_k < m.importance_recall <= 1.0  # misses are the less important ones
        assert 0.0 < m.predicted_active_frac < 1.0
    gen = torch.Generator().manual_seed(3)
    rand = torch.rand(heldout.importance.shape[1:], generator=gen)  # (N, f) random scores
    labels = topk_mask(heldout.importance[0].float(), 24)
    rand_hits = labels.gather(-1, rand.topk(24, dim=-1).indices).float().mean()
    assert metrics[0].recall_at_k > float(rand_hits) + 0.1
    assert [m.random_recall for m in pred.evaluate(heldout, keep_frac=0.5)] == [0.5, 0.5]
    assert "mean" in metrics_table(metrics)


def test_a_tighter_label_set_is_recorded_and_trains(make_tiny_llama):
    _, path = make_tiny_llama()
    samples = collect_samples(load_model(path), _ids(256, 4), window=32)
    pred = train_predictor(samples, PredictorConfig(rank=8, active_frac=0.5, label_frac=0.125,
                                                    epochs=2, batch_tokens=64))
    assert (pred.active_frac, pred.label_frac) == (0.5, 0.125)
    assert pred.evaluate(samples)[0].random_recall == 0.5


def test_hand_written_bce_gradients_match_autograd():
    gen = torch.Generator().manual_seed(0)
    L, B, d, r, f, w = 2, 5, 7, 3, 11, 2.5
    x, y = torch.randn(L, B, d, generator=gen), torch.rand(L, B, f, generator=gen) > 0.6
    params = [torch.randn(s, generator=gen).requires_grad_() for s in ((L, r, d), (L, f, r),
                                                                        (L, f))]
    z = torch.bmm(torch.bmm(x, params[0].transpose(1, 2)), params[1].transpose(1, 2))
    z = z + params[2][:, None]
    loss = sum(F.binary_cross_entropy_with_logits(z[i], y[i].float(), pos_weight=torch.tensor(w))
               for i in range(L))
    expected = torch.autograd.grad(loss, params)
    _bce_step(tuple(params), x, y, w)
    for p, g in zip(params, expected):
        torch.testing.assert_close(p.grad, g, atol=1e-6, rtol=1e-5)


def test_save_load_round_trip_keeps_scores_and_metrics(tiny_trained, tmp_path):
    model, pred, heldout = tiny_trained
    pred = pred.with_metrics(pred.evaluate(heldout))
    loaded = LowRankPredictor.load(pred.save(tmp_path / "pred"), args=model.args)
    x = heldout.inputs[1, :3]  # (3, d)
    torch.testing.assert_close(loaded.logits(1, x), pred.logits(1, x), atol=0, rtol=0)
    assert loaded.metrics == pred.metrics and loaded.rank == 16
    assert (loaded.active_frac, loaded.label_frac) == (0.25, 0.25)


def test_load_names_the_mismatch(tiny_trained, tmp_path):
    model, pred, _ = tiny_trained
    d = pred.save(tmp_path / "pred")
    with pytest.raises(PredictorFormatError, match="no such file"):
        LowRankPredictor.load(tmp_path / "nowhere")
    with pytest.raises(PredictorFormatError, match=r"= \(2, 64, 96\), the model has \(2, 64, 48\)"):
        LowRankPredictor.load(d, args=replace(model.args, d_ff=48))
    meta = json.loads((d / META_NAME).read_text())
    (d / META_NAME).write_text(json.dumps({**meta, "rank": 8}))
    with pytest.raises(PredictorFormatError, match="tensor w_in"):
        LowRankPredictor.load(d)
    (d / META_NAME).write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(PredictorFormatError, match="version 99"):
        LowRankPredictor.load(d)
    (d / META_NAME).write_text(json.dumps({k: v for k, v in meta.items() if k != "rank"}))
    with pytest.raises(PredictorFormatError, match=r"missing fields \['rank'\]"):
        LowRankPredictor.load(d)
    (d / META_NAME).write_text("{")
    with pytest.raises(PredictorFormatError, match="not JSON"):
        LowRankPredictor.load(d)


def test_scores_are_one_tokens_sigmoids(tiny_trained):
    _, pred, heldout = tiny_trained
    x = heldout.inputs[0, 5]  # (d,)
    s = pred.scores(0, x[None, None])
    assert s.shape == (96,) and ((s > 0) & (s < 1)).all()
    torch.testing.assert_close(s, torch.sigmoid(pred.logits(0, x)))
    with pytest.raises(ValueError, match="one token"):
        pred.scores(0, heldout.inputs[0, :2][None])


def test_predicted_parts_run_exactly_the_predicted_top_k(tiny_trained):
    model, pred, heldout = tiny_trained
    ffn = model.layers[0].feed_forward
    h = heldout.inputs[0, 7].view(1, 1, 64)  # (B, T, d)
    parts = predicted_topk_parts_fn(model, pred, keep_frac=0.5)(0, h)
    keep = pred.scores(0, h).topk(48).indices
    mask = torch.zeros(96)
    mask[keep] = 1.0
    torch.testing.assert_close(sparse_ffn(h, parts, ffn.act), ffn.w_down(ffn.hidden(h) * mask),
                               atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="one token"):
        predicted_topk_parts_fn(model, pred)(0, torch.zeros(1, 2, 64))


def test_samples_and_config_validate():
    with pytest.raises(ValueError, match="active_frac"):
        PredictorConfig(active_frac=1.0)
    with pytest.raises(ValueError, match="label_frac"):
        PredictorConfig(label_frac=0.0)
    with pytest.raises(ValueError, match="rank"):
        PredictorConfig(rank=0)
    assert PredictorConfig(active_frac=0.3).positive_frac == 0.3
    assert PredictorConfig(active_frac=0.3, label_frac=0.1).positive_frac == 0.1
