"""Activation traces of a real model for Fig. 6 (``experiments/fig6_overlap.py``), two ways.

``record_real``: the real backend (``python -m real``, policy m2cache, oracle predictor: each
decode step's top-k neurons by |act(gate x) * up x| at the model's active_frac) writes its
``.m2trace`` while greedily continuing the first ``PROMPT_TOKENS`` held-out pydoc tokens. Its
prefill is dense and unrecorded, so the trace holds decode steps of generated text only.
``teacher_forced``: the dense model reads the held-out text itself (``real.model.record_ffn``)
and the same oracle top-k is kept for the ``PROMPT_TOKENS``-th token on: the same positions,
the true text instead of the model's own continuation. Both are read by ``RecordedTrace``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from experiments import common
from m2sim.compose import load_config
from m2sim.trace.file import TraceWriter

PROMPT_TOKENS = 64  # the real run's prompt (workload default): its decode starts at this position


def record_real(path: Path, model: str, num_tokens: int, checkpoint: Optional[Path]) -> Path:
    """Record ``num_tokens`` decode steps of the real backend into ``path``; the run's
    summary.json (generated text) is kept beside it. The store is built in a temporary folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "real", f"model={model}", "policy=m2cache",
               "real.device=cpu", "real.predictor=ORACLE", "real.torch_threads=1",
               "real.measure_energy=false", f"workload.prompt_tokens={PROMPT_TOKENS}",
               f"workload.output_tokens={num_tokens + 1}", f"real.store_dir={tmp}/store",
               f"real.record_trace={path}", f"hydra.run.dir={tmp}/run"]
        if checkpoint is not None:
            cmd.append(f"real.checkpoint={checkpoint}")
        print("$ " + " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=common.REPO, check=True, stdout=subprocess.DEVNULL)
        shutil.copy(Path(tmp) / "run" / "summary.json", path.with_suffix(".summary.json"))
    return path


def teacher_forced(path: Path, model: str, num_tokens: int, checkpoint: Optional[Path]) -> Path:
    """Write the oracle top-k of the dense model reading held-out text, positions
    ``PROMPT_TOKENS`` .. ``PROMPT_TOKENS + num_tokens - 1``, as a trace at ``path``."""
    import torch

    from experiments.fig10_quality import encoder
    from real.checkpoint import load_model, smollm2_gguf_path
    from real.model import record_ffn
    from real.predictor import active_count
    from real.quality import heldout_ids
    from real.run import check_model

    cfg = load_config(f"model={model}")
    ckpt = checkpoint or smollm2_gguf_path()
    net = load_model(ckpt)
    check_model(net, cfg, ckpt)
    ids = heldout_ids(encoder(ckpt, net.args.vocab_size), PROMPT_TOKENS + num_tokens)
    with torch.inference_mode():
        _, importance = record_ffn(net, torch.tensor([ids]))  # (L, T, f)
    m = cfg.model
    k = active_count(m.d_ff, m.active_frac)
    writer = TraceWriter(model=m.name, num_layers=m.num_layers, num_neurons=m.d_ff,
                         d_model=m.d_model, notes={"predictor": "oracle", "mode":
                                                   "teacher-forced", "checkpoint": ckpt.name})
    for t in range(num_tokens):
        for layer in range(m.num_layers):
            top = importance[layer, PROMPT_TOKENS + t].topk(k)
            writer.add(t, layer, top.indices.numpy(), top.values.numpy())
    path.parent.mkdir(parents=True, exist_ok=True)
    return writer.save(path)
