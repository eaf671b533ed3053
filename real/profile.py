"""``python -m real.profile``: measure this machine into hardware configs for the simulator.

    python -m real.profile --model smollm2_135m --name vm_cpu      # CPU: the CPU is the "GPU"
    python -m real.profile --model tiny --checkpoint DIR --device cuda --name h100

writes ``conf/gpu/NAME.yaml``, ``conf/host/NAME.yaml``, ``conf/host/ssd/NAME.yaml`` and
``conf/sim/overheads/NAME.yaml`` (each with a ``profile`` header: schema version, machine
identity, date, the model shapes measured at) plus ``results/profiles/NAME.json`` (the raw
measurements and fit quality). The simulator then runs this machine with
``gpu=NAME host=NAME sim/overheads=NAME``. Steps (a progress bar counts them): a short real
decode replaying a synthetic trace, alone and with SSD reads running beside it (builds the
store if needed; gives the executor's own per-layer host time and the contention both ways), the
backend's ops timed inside real decodes of a trace the model records on a profiling prompt
(``decode_ops``: m2cache, each band alone, mixed precision, dense), the same ops in an op
loop at the model's shapes (``microbench.decode_rows``; the fits use it where no decode timed
an op), GEMV/GEMM/memcpy (/host->device) rates and O_DIRECT SSD reads. ``m2sim.calibrate`` fits them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm import tqdm

from m2sim.build import build_run
from m2sim.calibrate import Calibration, Measurements, OpShapes, calibrate
from m2sim.compose import CONF_DIR, load_config
from m2sim.config import M2SimConfig
from m2sim.errors import M2SimError
from m2sim.hardware import GIB, PROFILE_SCHEMA_VERSION, ProfileHeader
from m2sim.planner import Planner
from m2sim.types import BANDS, Precision
from real import microbench as mb
from real.checkpoint_cache import CheckpointCache
from real.config import RealConfig
from real.profile_decodes import decode_ops, executor_decode
from real.run import host_settings
from real.ssd import SSDReader
from real.store import Store

REPO = CONF_DIR.parent


def machine_identity(device: str = "cpu") -> str:
    """What a profile is valid for: CPU model, CPUs usable, RAM, accelerator, host name."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    acc = "no accelerator"
    if device.startswith("cuda"):
        acc = torch.cuda.get_device_name(torch.device(device))
    return f"{platform.node()} | {cpu} | {mb.cpu_count()} CPUs | {ram:.0f} GiB | {acc}"


@dataclasses.dataclass(frozen=True)
class Options:
    model: str
    name: str
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1
    checkpoint: Optional[str] = None
    store: Optional[str] = None
    conf_dir: Path = CONF_DIR
    out_json: Optional[Path] = None
    quick: bool = False  # fewer sizes and repeats (tests)
    rounds: Optional[int] = None  # passes over the rates and ops; None: 3 (quick: 1)
    tokens: int = 8  # decode steps of each timed loop
    contention_pairs: Optional[int] = None  # decodes beside SSD reads per pass; None: 3 (quick: 1)
    # fit attention, FFN and LM head to their times inside the real decodes, not the op loop's
    # (m2sim.calibrate.Measurements.ops)
    compute_from_decodes: bool = False


def op_shapes(cfg: M2SimConfig, m: Measurements) -> OpShapes:
    """The plan's compute ops at every shape measured (``cfg``: the model, policy m2cache)."""
    run = build_run(cfg, cfg.policy)
    planner = Planner(run, num_decode_tokens=1)
    att = {(t, c): planner.attention_op(0, t, c, prefill=t > 1)
           for t, c, _ in m.attention + m.attention_in_decode}
    ffn = {(t, *c): planner.ffn_op(0, tuple(c), t) for t, *c, _ in m.ffn + m.ffn_in_decode}
    return OpShapes(attention=att, ffn=ffn, lm_head=planner.lm_head_op(run.num_layers - 1),
                    id_weights=planner.id_weights, id_bytes=tuple(run.sizes.id_bytes))


def _combos(k: int, d_ff: int, quick: bool) -> list[tuple[int, int, int]]:
    """Ids per band (FP16, INT8, INT4) of the FFN ops timed: mixes around ``k`` active ids,
    and every neuron in FP16 (dense and streamed layers run that)."""
    h, q, e = k // 2, k // 4, k // 8
    mixes = [(q, q, h), (k, 0, 0), (0, k, 0), (0, 0, k), (h, 0, 0), (0, h, 0), (0, 0, h),
             (h, q, q), (q, h, q), (e, e, q), (d_ff, 0, 0)]
    return mixes[:6] if quick else mixes


def model_config(o: Options) -> M2SimConfig:
    return load_config(f"model={o.model}", "policy=m2cache", "gpu=h100_pcie", "host=server_pcie4")


def measure(o: Options, checkpoints: Optional[CheckpointCache] = None
            ) -> tuple[Measurements, dict]:
    """Everything, in ``rounds`` passes spread over time (the machine's speed drifts on a scale
    of seconds; medians over the passes), after one short real decode. The real decodes take
    the model from ``checkpoints`` (default: one cache for this call)."""
    checkpoints = checkpoints or CheckpointCache()
    host_settings(RealConfig(torch_threads=o.threads))  # threads, allocator: as a real run
    device, dtype = torch.device(o.device), getattr(torch, o.dtype)
    m = model_config(o).model
    rounds, reps = (1, 5) if o.quick else (3, 9)
    rounds = o.rounds or rounds
    meas, info = Measurements(), {}
    mib = 1 << 20
    sizes = [mib // 2, 2 * mib, 8 * mib, 32 * mib] if o.quick else \
        [mib // 2, mib, 2 * mib, 4 * mib, 8 * mib, 16 * mib, 32 * mib, 64 * mib]
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=1 + 3 * rounds, desc="profile",
                                                     unit="step", file=sys.stderr) as bar:
        bar.set_postfix_str("real decode, alone and beside SSD reads")
        decoded = executor_decode(o, Path(tmp), checkpoints)
        meas.layer_host, meas.layer_host_dense, rows, beside, store = decoded
        meas.contention.extend(rows)
        meas.ssd_beside.extend(beside)
        bar.update(1)
        for _ in range(rounds):
            bar.set_postfix_str("the backend's ops inside real decodes")
            meas.extend(decode_ops(o, Path(tmp), checkpoints))
            bar.set_postfix_str("the backend's ops at the model's shapes (op loop)")
            meas.extend(measure_ops(o))
            bar.update(1)
            bar.set_postfix_str("GEMV, GEMM, memcpy rates")
            meas.gemv += mb.gemv_rows(m.d_model, dtype, device, sizes, reps)
            meas.gemm += mb.gemm_rows(m.d_model, 64, dtype, device, reps)
            meas.memcpy += mb.memcpy_rows(sizes, reps)
            if device.type == "cuda":
                meas.h2d += mb.h2d_rows(device, sizes, reps)
                meas.cpu_gemm += mb.gemm_rows(m.d_model, 64, torch.float32,
                                              torch.device("cpu"), reps)
            bar.update(1)
            bar.set_postfix_str("SSD (O_DIRECT)")
            with SSDReader(store) as reader:
                info["ssd_direct_io"] = reader.uses_direct_io(store.ffn_path(0, Precision.FP16))
                meas.ssd_qd += mb.ssd_qd_rows(reader, store, sizes=[4096, 65536, mib],
                                              depths=[1, 2, 4, 8] if o.quick else
                                              [1, 2, 4, 8, 16, 32],
                                              requests=16 if o.quick else 32)
            meas.extend(measure_reads(o, store))
            with SSDReader(store) as reader:
                meas.ssd_lone += mb.ssd_layer_rows(reader, store, m.num_layers, LAYER_SETS, 1,
                                                   one_at_a_time=True)
            bar.update(1)
    info["store"] = str(store.path)
    info["capacity_gb"] = shutil.disk_usage(store.path).total / 1e9
    return meas, info


LAYER_SETS = [BANDS, (Precision.FP16,), (Precision.INT8,), (Precision.INT4,)]  # read at once


def measure_reads(o: Options, store: Store) -> Measurements:
    """Every layer of ``store`` read queued back to back, as a preloader running ahead reads
    them, once per set of precisions (about 0.5 s for SmolLM2 on the development VM): a pass
    of ``measure`` reads them once, and ``validate_sim`` with ``--interleave-profile`` also
    before every real run. The shared disk's rate moves more than the machine's compute (0.86
    to 1.73 GB/s between the passes of one validation), and the configurations mostly on SSD
    run at its pace, so the fitted bandwidth samples the same moments as the runs."""
    m = model_config(o).model
    with SSDReader(store) as reader:
        return Measurements(ssd_layer=mb.ssd_layer_rows(reader, store, m.num_layers, LAYER_SETS,
                                                        1))


def measure_ops(o: Options) -> Measurements:
    """The backend's ops at the model's shapes over one short synthetic decode (about 2 s on
    the development VM): a pass of ``measure`` times them once, and ``validate_sim`` with
    ``--interleave-profile`` also before every real run, so that the op costs sample the same
    moments of a drifting machine as the runs they predict."""
    host_settings(RealConfig(torch_threads=o.threads))
    cfg = model_config(o)
    m = cfg.model
    k = max(8, round(m.active_frac * m.d_ff))
    rows = mb.decode_rows(m, cfg.quant, dtype=getattr(torch, o.dtype), device=torch.device(o.device),
                          combos=_combos(k, m.d_ff, o.quick),
                          load_ids=[max(1, k // d) for d in (16, 8, 4, 2)],
                          tokens=o.tokens, prompt_tokens=16)
    return Measurements(**dataclasses.asdict(rows))  # DecodeRows' fields are Measurements'


def header(o: Options, cfg: M2SimConfig) -> dict:
    m = cfg.model
    h = ProfileHeader(schema_version=PROFILE_SCHEMA_VERSION, machine=machine_identity(o.device),
                      date=datetime.datetime.now().isoformat(timespec="seconds"),
                      device=o.device, dtype=o.dtype, torch_threads=o.threads, model=m.name,
                      num_layers=m.num_layers, d_model=m.d_model, d_ff=m.d_ff,
                      num_heads=m.num_heads, num_kv_heads=m.num_kv_heads,
                      vocab_size=m.vocab_size)
    return dataclasses.asdict(h)


def _yaml(path: Path, comment: str, base: str, values: dict, extra_defaults: str = "") -> None:
    from omegaconf import OmegaConf

    body = OmegaConf.to_yaml(OmegaConf.create(values))
    text = (f"# {comment}\n# Written by `python -m real.profile`; rerun it rather than editing.\n"
            f"defaults:\n  - {base}\n{extra_defaults}  - _self_\n{body}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_configs(o: Options, cal: Calibration, hdr: dict, info: dict) -> list[Path]:
    is_cpu = o.device == "cpu"
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    n = mb.cpu_count()
    if is_cpu:
        mem_gib, tdp, idle, area, node = ram, 10.0 * n, 2.0 * n, 100.0, 10.0
    else:
        props = torch.cuda.get_device_properties(torch.device(o.device))
        mem_gib, tdp, idle, area, node = props.total_memory / GIB, 350.0, 50.0, 800.0, 5.0
    src = (f"measured on {hdr['machine']} ({hdr['date']}) at {hdr['model']} shapes, "
           f"{o.dtype}, {o.threads} torch thread(s); power, die area and node assumed")
    gpu = {"name": o.name, "memory_gib": round(mem_gib, 2), **cal.gpu, "tdp_w": tdp,
           "idle_w": idle, "pcie_gen": 5, "pcie_lanes": 16, "die_area_mm2": area,
           "process_nm": node, "release_year": datetime.date.today().year, "reserved_gib": 0.0,
           "profile": hdr, "source": src}
    ssd = {"name": o.name, "capacity_gb": round(info["capacity_gb"], 1), "pcie_gen": 5,
           **cal.ssd, "profile": hdr,
           "source": f"O_DIRECT reads of the store ({'direct' if info['ssd_direct_io'] else 'buffered + DONTNEED'}) on {hdr['machine']}"}
    host = {"name": o.name, "dram_gib": round(ram, 2), "os_reserved_gib": 0.5, "pcie_gen": 5,
            "pcie_lanes": 16, **cal.host, "gpu_copy_engines": 1, "cpu_name": hdr["machine"].split(" | ")[1],
            "cpu_cores": n, "cpu_tdp_w": 10.0 * n, "cpu_idle_w": 2.0 * n, "profile": hdr,
            "source": src}
    ov = {**cal.overheads, "profile": hdr}
    d = o.conf_dir
    paths = [d / "gpu" / f"{o.name}.yaml", d / "host" / "ssd" / f"{o.name}.yaml",
             d / "host" / f"{o.name}.yaml", d / "sim" / "overheads" / f"{o.name}.yaml"]
    what = f"{o.name}: profile of {hdr['machine']}"
    _yaml(paths[0], what, "base_gpu", _rounded(gpu))
    _yaml(paths[1], what, "base_ssd", _rounded(ssd))
    _yaml(paths[2], what, "base_host", _rounded(host), extra_defaults=f"  - ssd: {o.name}\n")
    _yaml(paths[3], what, "base_overheads", _rounded(ov))
    return paths


def _rounded(d: dict) -> dict:
    def r(v):
        if isinstance(v, float):
            return float(f"{v:.5g}")
        if isinstance(v, dict):
            return {k: r(x) for k, x in v.items()}
        return v
    return {k: r(v) for k, v in d.items()}


def profile(o: Options, from_json: Optional[Path] = None) -> tuple[Calibration, list[Path]]:
    """Measure (or reread the measurements of ``from_json``), fit, write the configs."""
    if from_json is not None:
        saved = json.loads(Path(from_json).read_text())
        return fit_and_write(o, Measurements.from_dict(saved["measurements"]), saved["info"],
                             saved["header"])
    return fit_and_write(o, *measure(o))


def fit_and_write(o: Options, meas: Measurements, info: dict,
                  hdr: Optional[dict] = None) -> tuple[Calibration, list[Path]]:
    """Fit ``meas`` and write the configs and the profile's JSON (``hdr``: this machine's
    header, now, unless given)."""
    cfg = model_config(o)
    cal = calibrate(meas, op_shapes(cfg, meas), is_host_cpu=o.device == "cpu",
                    compute_from_decodes=o.compute_from_decodes)
    hdr = hdr or header(o, cfg)
    paths = write_configs(o, cal, hdr, info)
    out = o.out_json or REPO / "results" / "profiles" / f"{o.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"header": hdr, "info": info, "fits": cal.fits,
                               "gpu": cal.gpu, "host": cal.host, "ssd": cal.ssd,
                               "overheads": cal.overheads, "measurements": meas.to_dict()},
                              indent=1, default=_json))
    return cal, [*paths, out]


def _json(x):
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, Precision):
        return x.name
    return str(x)


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m real.profile", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a conf/model option, e.g. smollm2_135m")
    ap.add_argument("--name", required=True, help="name of the configs to write")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (as real.torch_threads)")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--store", default=None)
    ap.add_argument("--conf-dir", type=Path, default=CONF_DIR)
    ap.add_argument("--out-json", type=Path, default=None)
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--compute-from-decodes", action="store_true",
                    help="fit attention, FFN and LM head to their times inside real decodes "
                         "(default: the op loop's; evictions and loads come from the decodes)")
    ap.add_argument("--from-json", type=Path, default=None,
                    help="fit again from the measurements saved by an earlier profile")
    a = ap.parse_args(argv)
    o = Options(model=a.model, name=a.name, device=a.device, dtype=a.dtype, threads=a.threads,
                checkpoint=a.checkpoint, store=a.store, conf_dir=a.conf_dir,
                out_json=a.out_json, quick=a.quick, tokens=a.tokens,
                compute_from_decodes=a.compute_from_decodes)
    try:
        cal, paths = profile(o, a.from_json)
    except M2SimError as e:
        print(f"real.profile: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps({"gpu": cal.gpu, "host": cal.host, "ssd": cal.ssd,
                      "overheads": cal.overheads}, indent=1, default=_json))
    for p in paths:
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
