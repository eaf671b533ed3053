"""Sim-to-real validation on a CUDA machine (a lent GPU; never in CI).

Covers: the whole pipeline of ``experiments/validate_sim.py`` with the real backend on CUDA --
profile the machine (``real.profile`` with ``--device cuda``), record a trace, run every
configuration on both sides -- on a model of SmolLM2-135M's shapes with random weights (the
bundled SmolLM2 file stays on the development machine), so its numbers are reported apart
from the CPU reference table.
Run:    python experiments/gpu_validate.py --out DIR [--repeats 2] [--tokens 24]
Output: DIR/validate_sim.md, DIR/validate_sim.csv, DIR/profile.json, DIR/real_runs.json,
        DIR/trace.m2trace, DIR/steps.json (each step's status, seconds and error if it failed)
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import traceback
from pathlib import Path

from experiments.validate_sim import validate
from m2sim.compose import load_config
from real.profile import Options, profile
from real.random_llama import save_random_llama
from real.validate import Setup


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--quick", action="store_true", help="quick profile (a dry run on CPU)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    steps: list[dict] = []

    def step(name, fn):
        t0 = time.perf_counter()
        try:
            out = fn()
            steps.append({"step": name, "ok": True, "s": round(time.perf_counter() - t0, 1)})
            return out
        except Exception as e:  # noqa: BLE001 -- record it, keep the others' results
            steps.append({"step": name, "ok": False, "s": round(time.perf_counter() - t0, 1),
                          "error": f"{type(e).__name__}: {e}",
                          "trace": traceback.format_exc()[-3000:]})
            raise
        finally:
            (a.out / "steps.json").write_text(json.dumps(steps, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        m = load_config(f"model={a.model}").model
        ckpt = step("random checkpoint", lambda: save_random_llama(tmp / "ckpt", m))
        o = Options(model=a.model, name="gpu_here", device=a.device, dtype=a.dtype,
                    checkpoint=str(ckpt), store=str(tmp / "store"), conf_dir=tmp / "conf",
                    out_json=a.out / "profile.json", quick=a.quick)
        step("profile", lambda: profile(o))
        s = Setup(model=a.model, profile="gpu_here", checkpoint=str(ckpt), store=str(tmp / "store"),
                  prompt_tokens=16, output_tokens=a.tokens, device=a.device, dtype=a.dtype,
                  conf_dir=str(tmp / "conf"))
        step("validate", lambda: validate(s, tmp / "val", a.repeats))
        for f in ("validate_sim.md", "validate_sim.csv", "real_runs.json", "trace.m2trace"):
            shutil.copy(tmp / "val" / f, a.out / f)
    print((a.out / "validate_sim.md").read_text())


if __name__ == "__main__":
    main()
