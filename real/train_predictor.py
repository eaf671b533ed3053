"""The ``m2real-train-predictor`` command (also ``python -m real.train_predictor``).

    m2real-train-predictor model=smollm2_135m real.device=cpu \\
        real.predictor_train.rank=128 real.predictor_train.label_frac=0.2 hydra.run.dir=D

Trains the Deja Vu low-rank predictor of the model's store (built first if absent) on offline
text and installs it as ``<store>/predictor``, which ``m2real`` then uses (``real.predictor=auto``
-> lowrank). Prints the per-layer held-out recall table and writes it to
``D/predictor_metrics.csv``. Shares ``conf/real.yaml`` with ``m2real``; training fields:
``real.predictor_train`` (real/config.py). User errors print one line and exit 2, before
anything is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from m2sim.cli import to_config
from m2sim.errors import M2SimError
from m2sim.results import _atomic, _atomic_text
from real.checkpoint import CheckpointError
from real.config import register_real_configs
from real.predictor import metrics_table
from real.predictor_training import TrainedPredictor, metrics_rows, train_store_predictor

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
METRICS_NAME = "predictor_metrics.csv"


def report(done: TrainedPredictor) -> str:
    """The per-layer table, then one line each of what was trained and the held-out means."""
    p, ms = done.predictor, done.predictor.metrics
    recall = sum(m.recall_at_k for m in ms) / len(ms)
    active = sum(m.predicted_active_frac for m in ms) / len(ms)
    return "\n".join([
        f"held-out recall of each token's top {p.active_frac:g} of neurons "
        f"({done.heldout_tokens} tokens of {done.text}):",
        metrics_table(ms),
        f"trained: rank {p.rank}, labels = top {p.label_frac:g}, on {done.train_tokens} tokens "
        f"of {done.text} (collect {done.collect_s:.0f} s, train {done.train_s:.0f} s)",
        f"mean recall@k {recall:.3f} (random {ms[0].random_recall:.3f}), "
        f"mean predicted-active fraction {active:.3f}",
        f"predictor: {done.path}"])


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="real")
def _main(dcfg: DictConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        cfg = to_config(dcfg)
        done = train_store_predictor(cfg)
    except (M2SimError, CheckpointError, FileNotFoundError) as e:
        print(f"m2real-train-predictor: error: {e}", file=sys.stderr)
        sys.exit(2)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(metrics_rows(done.predictor))
    _atomic(out / METRICS_NAME, lambda p: df.to_csv(p, index=False))
    _atomic_text(out / "config.yaml", OmegaConf.to_yaml(dcfg))
    print(report(done))
    print(f"metrics: {out / METRICS_NAME}")


def main() -> None:
    register_real_configs()
    _main()


if __name__ == "__main__":
    main()
