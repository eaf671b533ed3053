"""Sim-to-real validation: one configuration on the real backend and in the simulator, on the
same recorded activation trace, compared (``experiments/validate_sim.py`` drives it).

The real backend replays the trace (``real.predictor=TRACE``); the simulator replays it with
this machine's profile (``gpu=P host=P sim/overheads=P``), ``sim.predict_after_attention=true``
(the real predictor reads the FFN input), ``sim.charge_predictor=false`` (no predictor
runs), ``sim.blocking_ffn_prefetch=true`` and ``sim.single_host_thread=true`` (one Python
thread issues and waits for every op, copy and cache update). Both run the same policy code on
the same trace, so bytes per link and hit rates must agree exactly; the latency difference is
the simulator's error on this machine.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from m2sim.compose import load_config
from m2sim.hardware import check_profile
from m2sim.sim.engine import simulate
from real.checkpoint_cache import CheckpointCache
from real.profile import machine_identity


@dataclass(frozen=True)
class Case:
    name: str
    what: str  # one line: what this configuration varies
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Setup:
    model: str
    profile: str  # the gpu/host/sim.overheads option written by real.profile
    checkpoint: Optional[str]
    store: str
    prompt_tokens: int
    output_tokens: int
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1
    conf_dir: Optional[str] = None  # where the profile's configs are, if not in conf/

    def workload(self) -> list[str]:
        extra = [f"hydra.searchpath=[file://{Path(self.conf_dir).resolve()}]"] \
            if self.conf_dir else []
        return [*extra, f"model={self.model}", f"workload.prompt_tokens={self.prompt_tokens}",
                f"workload.output_tokens={self.output_tokens}", f"gpu={self.profile}",
                f"host={self.profile}", f"sim/overheads={self.profile}"]

    def real(self) -> list[str]:
        out = [f"real.store_dir={self.store}", f"real.device={self.device}",
               f"real.dtype={self.dtype}", f"real.torch_threads={self.threads}"]
        return out + ([f"real.checkpoint={self.checkpoint}"] if self.checkpoint else [])


def check_setup(s: Setup) -> None:
    """Refuse a profile of another machine, an older profile schema, or other model shapes."""
    cfg = load_config(*s.workload())
    here = machine_identity(s.device)
    for field, node in (("gpu", cfg.gpu), ("host", cfg.host), ("sim.overheads",
                                                                cfg.sim.overheads)):
        check_profile(node.profile, field=field, machine=here, model=cfg.model)


def real_run(s: Setup, *overrides: str,
             checkpoints: Optional[CheckpointCache] = None) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir

    from m2sim.cli import to_config
    from m2sim.compose import CONF_DIR
    from real.config import register_real_configs
    from real.run import run_real

    register_real_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        d = compose(config_name="real", overrides=[*s.workload(), *s.real(), *overrides])
    return run_real(to_config(d), checkpoints).summary


def record_trace(s: Setup, path: Path, *overrides: str,
                 checkpoints: Optional[CheckpointCache] = None) -> Path:
    """The activation trace every configuration replays: a live run of the real backend
    (its predictor: the store's low-rank one, else the oracle)."""
    real_run(s, "policy=m2cache", f"real.record_trace={path}", *overrides,
             checkpoints=checkpoints)
    return path


def replay(trace: Path) -> list[str]:
    return ["trace=replay", f"trace.path={trace}"]


def sim_run(s: Setup, trace: Path, case: Case) -> dict[str, Any]:
    cfg = load_config(*s.workload(), *replay(trace), "sim.predict_after_attention=true",
                      "sim.charge_predictor=false", "sim.blocking_ffn_prefetch=true",
                      "sim.single_host_thread=true",
                      "sim.progress=false", *case.overrides)
    return simulate(cfg).summary


def _err(sim: Optional[float], real: Optional[float]) -> Optional[float]:
    return None if sim is None or not real else (sim - real) / real


def compare(case: Case, reals: Sequence[dict], sim: dict, device: str = "cpu"
            ) -> dict[str, Any]:
    """One row of the validation table: real means over the repeats (and their spread) beside
    the simulation. Means, not medians: the simulator predicts the expected time on this
    machine (the profile's op costs are means over their samples, slow ones included), and a
    mean over repeats estimates the same thing; on a machine whose slow spells are skewed the
    median of either lies below it. Energy: the simulator's over the components the real
    run's meter measured (``modelled_energy_j``; ``device``: the real backend's)."""
    row: dict[str, Any] = {"config": case.name, "what": case.what, "policy": sim["policy"],
                           "repeats": len(reals)}
    for key, name in (("tpot_s", "tpot_ms"), ("ttft_s", "ttft_ms"),
                      ("tokens_per_s", "tokens_per_s")):
        vals = [r[key] for r in reals]
        scale = 1e3 if name.endswith("_ms") else 1.0
        mean = statistics.fmean(vals)
        row[f"real_{name}"] = mean * scale
        row[f"real_{name}_min"] = min(vals) * scale
        row[f"real_{name}_max"] = max(vals) * scale
        row[f"sim_{name}"] = sim[key] * scale
        row[f"err_{name}"] = _err(sim[key], mean)
    r0 = reals[0]
    for link, b in sim["bytes_by_link"].items():
        row[f"real_bytes_{link}"] = r0["bytes_by_link"][link]
        row[f"sim_bytes_{link}"] = b
    for tier, h in sim["hit_rate_by_tier"].items():
        row[f"real_hit_{tier}"] = r0["hit_rate_by_tier"][tier]
        row[f"sim_hit_{tier}"] = h
    row["bytes_match"] = all(r["bytes_by_link"] == sim["bytes_by_link"] for r in reals)
    row["hits_match"] = all(r["hit_rate_by_tier"] == sim["hit_rate_by_tier"] for r in reals)
    row["real_peak_dram_bytes"] = r0["peak_bytes_by_tier"]["dram"]
    me = r0.get("measured_energy") or {}
    measured = [r.get("measured_energy", {}).get("measured_energy_j") for r in reals]
    row["real_energy_j"] = (statistics.fmean(measured) if all(m is not None for m in measured)
                            else None)
    row["sim_energy_j"], row["energy_scope"] = modelled_energy_j(
        sim, me.get("measured_energy_by_component_j") or {}, device)
    row["err_energy"] = _err(row["sim_energy_j"], row["real_energy_j"])
    row["energy_note"] = me.get("measured_method", "off") if row["real_energy_j"] is not None \
        else me.get("measured_note", "not measured")
    return row


# what each component of the energy meter (real.energy) covers, in the simulator's components
MEASURED_AS_MODELLED = {"gpu": ("gpu",), "cpu": ("cpu",), "ram": ("dram",)}


def modelled_energy_j(sim: dict, measured_by_component: dict, device: str
                      ) -> tuple[Optional[float], str]:
    """The simulator's energy over what the meter measured, and which components that is.

    NVML measures the GPU alone and RAPL the CPU package: compared with the simulator's whole
    machine (GPU, CPU, DRAM, SSD, links) either would look 30-60% cheaper than modelled. Where
    the device is the host CPU (``device`` "cpu"), the package runs what the simulator splits
    into its "gpu" (the compute) and its "cpu". With nothing measured, or a component the
    simulator does not model, the whole machine at the hardware ("all": every component but
    the facility's overhead, which no meter sees)."""
    model = sim.get("energy_by_component_j") or {}
    if not model:
        return sim.get("energy_j"), "all"
    keys: set[str] = set()
    if all(c in MEASURED_AS_MODELLED for c in measured_by_component):
        for c in measured_by_component:
            keys.update(("gpu", "cpu") if c == "cpu" and device == "cpu"
                        else MEASURED_AS_MODELLED[c])
    if not keys or not keys <= model.keys():  # as m2sim's CarbonReport.it_energy_j
        return sim["energy_j"] - model.get("facility", 0.0), "all"
    return sum(model[k] for k in keys), "+".join(sorted(keys))
