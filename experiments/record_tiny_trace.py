"""Record the golden activation trace of the sim/real parity test (tests/data/tiny.m2trace).

Covers: the real backend's trace recording (LiveSource + TraceWriter), the oracle predictor.
Run:    .venv/bin/python experiments/record_tiny_trace.py [--out tests/data/tiny.m2trace]
Output: a .m2trace for model=tiny (4 layers, d_ff 256) from a seeded random LLaMA (~seconds).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from m2sim.cli import to_config
from m2sim.compose import CONF_DIR
from real.config import register_real_configs
from real.run import run_real
from real.tiny import save_tiny_llama


def record(out: Path, output_tokens: int = 12) -> Path:
    from hydra import compose, initialize_config_dir

    register_real_configs()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_tiny_llama(Path(tmp) / "tiny")
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            d = compose(config_name="real", overrides=[
                "model=tiny", "workload=tiny", f"workload.output_tokens={output_tokens}",
                "policy=m2cache", "real.predictor=ORACLE", f"real.checkpoint={ckpt}",
                f"real.store_dir={Path(tmp) / 'store'}", f"real.record_trace={out}",
                "real.measure_energy=false"])
        run_real(to_config(d))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("tests/data/tiny.m2trace"))
    args = ap.parse_args()
    print(record(args.out))


if __name__ == "__main__":
    main()
