"""``m2real-train-predictor`` (real/train_predictor.py, real/predictor_training.py) on the tiny
random LLaMA: installs ``<store>/predictor`` that ``m2real`` then picks, reports per-layer
held-out recall, refuses bad input before writing anything, and never leaves a partial
predictor behind."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

import real.predictor
from m2sim.cli import to_config
from m2sim.compose import CONF_DIR
from m2sim.errors import ConfigError
from real.config import register_real_configs
from real.predictor import LowRankPredictor, PredictorFormatError
from real.predictor_training import (
    install_predictor,
    text_ids,
    train_store_predictor,
    training_ids,
)
from real.quality import heldout_text, topic_start
from real.run import run_real
from real.tiny import save_tiny_llama

# small enough for seconds on one core; rank <= the tiny model's d_model (64)
TRAIN = ["real.predictor_train.rank=16", "real.predictor_train.train_tokens=1024",
         "real.predictor_train.heldout_tokens=256", "real.predictor_train.epochs=20",
         "real.predictor_train.batch_tokens=128", "real.predictor_train.window_tokens=128"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("ckpt") / "tiny")


def _command(ckpt: Path, store: Path, run_dir: Path, *overrides: str):
    return subprocess.run([sys.executable, "-m", "real.train_predictor", "model=tiny",
                           f"real.checkpoint={ckpt}", f"real.store_dir={store}",
                           f"hydra.run.dir={run_dir}", *overrides],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tiny_ckpt, tmp_path_factory):
    """The command run once on a store that does not exist yet: (store, run dir, stdout)."""
    tmp = tmp_path_factory.mktemp("trained")
    store, run_dir = tmp / "store", tmp / "run"
    r = _command(tiny_ckpt, store, run_dir, *TRAIN)
    assert r.returncode == 0, r.stderr
    return store, run_dir, r.stdout


def _cfg(*overrides: str):
    register_real_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_config(compose(config_name="real", overrides=list(overrides)))


def _serve(ckpt: Path, store: Path):
    return run_real(_cfg("model=tiny", "workload=tiny", "workload.output_tokens=4",
                         "policy=m2cache", f"real.checkpoint={ckpt}", f"real.store_dir={store}",
                         "real.measure_energy=false", "real.predictor=AUTO"))


def test_the_command_builds_the_store_and_m2real_auto_then_runs_its_predictor(trained,
                                                                               tiny_ckpt):
    store, _, stdout = trained
    assert (store / "manifest.json").is_file()  # converted on the way
    pred = LowRankPredictor.load(store / "predictor")
    assert (pred.num_layers, pred.rank, pred.d_ff) == (4, 16, 256)
    assert (pred.active_frac, pred.label_frac) == (0.25, 0.2)  # model.active_frac; the default
    assert not [p for p in store.iterdir() if p.name.startswith(".")]  # no temporary left
    assert "mean recall@k" in stdout and f"predictor: {store / 'predictor'}" in stdout
    assert _serve(tiny_ckpt, store).summary["predictor"] == "lowrank"


def test_recall_is_reported_per_layer_on_heldout_tokens(trained):
    store, run_dir, stdout = trained
    table = pd.read_csv(run_dir / "predictor_metrics.csv")
    assert table["layer"].tolist() == [0, 1, 2, 3]
    for col in ("recall_at_k", "importance_recall", "predicted_active_frac"):
        assert table[col].between(0.0, 1.0).all(), col
    assert (table["random_recall"] == 0.25).all()
    # trained scores rank the true top-k better than random ones on the held-out tokens
    assert table["recall_at_k"].mean() > 0.25 + 0.02
    saved = LowRankPredictor.load(store / "predictor").metrics
    assert [m.recall_at_k for m in saved] == pytest.approx(table["recall_at_k"].tolist())
    for m in saved:  # every layer's row is printed
        assert f"{m.layer:5d}  {m.recall_at_k:8.3f}" in stdout


def test_bad_input_exits_2_naming_the_field_and_writes_nothing(tiny_ckpt, tmp_path):
    store, run_dir = tmp_path / "store", tmp_path / "run"
    r = _command(tiny_ckpt, store, run_dir, "real.predictor_train.label_frac=1.5")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "real.predictor_train.label_frac: got 1.5 (allowed: 0.0 < label_frac < 1.0)" in r.stderr
    assert not store.exists() and not (run_dir / "predictor_metrics.csv").exists()


@pytest.mark.parametrize("override, field", [
    ("real.predictor_train.rank=0", "rank"),
    ("real.predictor_train.epochs=0", "epochs"),
    ("real.predictor_train.lr=0", "lr"),
    ("real.predictor_train.active_frac=1.0", "active_frac"),
    ("real.predictor_train.train_tokens=0", "train_tokens"),
])
def test_out_of_range_fields_are_config_errors(override, field):
    with pytest.raises(ConfigError, match=rf"^real\.predictor_train\.{field}: got .*allowed"):
        _cfg("model=tiny", override)


@pytest.mark.parametrize("override, match", [
    ("real.predictor_train.rank=65", r"rank: got 65 \(allowed: 1 <= rank <= 64\)"),
    ("real.predictor_train.window_tokens=513", r"window_tokens: got 513 .*<= 512\)"),
])
def test_fields_bounded_by_the_model_fail_before_the_store_is_built(override, match, tiny_ckpt,
                                                                     tmp_path):
    cfg = _cfg("model=tiny", f"real.checkpoint={tiny_ckpt}", f"real.store_dir={tmp_path / 's'}",
               *TRAIN, override)
    with pytest.raises(ConfigError, match=match):
        train_store_predictor(cfg)
    assert not (tmp_path / "s").exists()


def test_text_split_is_disjoint_topic_aligned_and_checked():
    text = heldout_text()
    a, b = topic_start(text, 0.5), topic_start(text, 0.8)
    train, heldout = text_ids(lambda s: [ord(c) for c in s])  # one id per character
    assert "".join(map(chr, train)) == text[a:b] and "".join(map(chr, heldout)) == text[b:]
    assert text[a - 2:a] == text[b - 2:b] == "\n\n"
    cfg = _cfg("model=tiny", f"real.predictor_train.train_tokens={b - a + 1}")
    with pytest.raises(ConfigError, match=rf"train_tokens: got {b - a + 1} .*<= {b - a}\)"):
        training_ids(cfg, lambda s: [ord(c) for c in s], 512)
    cfg = _cfg("model=tiny", *TRAIN)  # no tokenizer: seeded random ids, the same every time
    first, second = training_ids(cfg, None, 512), training_ids(cfg, None, 512)
    assert first == second and (len(first[0]), len(first[1]), first[2]) == (1024, 256,
                                                                            "random ids")


def test_an_interrupted_install_leaves_no_predictor_that_looks_valid(trained, tiny_ckpt,
                                                                     tmp_path, monkeypatch):
    src, _, _ = trained
    old = LowRankPredictor.load(src / "predictor")
    store = tmp_path / "store"
    shutil.copytree(src, store, ignore=shutil.ignore_patterns("predictor"))
    seen = []

    def crash(tensors, filename):  # half the weights file, then the process "dies"
        Path(filename).write_bytes(b"\0" * 100)
        seen.append(Path(filename).parent)
        raise KeyboardInterrupt

    monkeypatch.setattr(real.predictor, "save_file", crash)
    new = LowRankPredictor(old.w_in * 2, old.w_out, old.b_out, active_frac=old.active_frac)
    for where in (store / "predictor", src / "predictor"):  # none before; a valid one before
        with pytest.raises(KeyboardInterrupt):
            install_predictor(new, where)
        # a kill at the crash would have left only a hidden sibling, never <store>/predictor
        assert seen[-1].parent == where.parent and seen[-1].name.startswith(".predictor.")
        assert not seen[-1].exists()  # and an exception cleans it up
    assert not (store / "predictor").exists()
    with pytest.raises(PredictorFormatError):
        LowRankPredictor.load(store / "predictor")
    assert torch.equal(LowRankPredictor.load(src / "predictor").w_in, old.w_in)  # untouched
    monkeypatch.undo()
    assert _serve(tiny_ckpt, store).summary["predictor"] == "oracle"
    install_predictor(old, store / "predictor")
    install_predictor(new, store / "predictor")  # replaces the first one whole
    assert torch.equal(LowRankPredictor.load(store / "predictor").w_in, new.w_in)
    assert sorted(p.name for p in store.glob("*predictor*")) == ["predictor"]
