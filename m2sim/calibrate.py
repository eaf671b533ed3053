"""Calibration: fit the simulator's hardware and fixed-cost knobs to measurements of a machine.

Measuring lives in ``real/profile.py`` (it needs torch and the machine itself); this module only
fits, so it is tested on synthetic measurements with known parameters. The models fitted:

- every fit is over the mean time of the samples at each shape (``m2sim.fits`` says why
  means, not medians or the raw samples);
- the backend's ops are timed twice, in an op loop and inside real decodes
  (``Measurements.ops``). The cache unit's evictions and loads, and copies to scratch (the
  link), are fitted to the decodes' times where there are any: an eviction's cost depends on
  which slots a policy frees, which the op loop's random ids do not reproduce. Attention, FFN
  and LM head are fitted to the op loop's, which is timed before every real run of a
  validation, unless ``compute_from_decodes``;
- affine (``m2sim.fits.fit_affine``): GEMV, memcpy, host->device copies and SSD layer
  reads; the SSD's latency, bandwidth and queue depth (``fit_ssd``) from batches of reads;
  whole layers read one at a time against queued back to back give the slowdown of a lone
  read (``SSDConfig.lone_read_slowdown_frac``, median over layer sizes of the ratio);
- linear costs (nonnegative least squares): an FFN op = fixed + per band + per weight per
  precision; a cache-unit load = fixed + per id + per byte; an eviction = per band + per id +
  per byte (it moves rows to keep the pool compact);
- residuals: a measured op minus the roofline of the plan's op (``m2sim.cost``) is the op's
  fixed host cost (``OverheadConfig.attention_us`` etc.);
- contention, both ways: how much slower the real backend's decode runs while the SSD reader
  reads beside it (``OverheadConfig.ssd_busy_host_slowdown_frac``), and how much slower a
  decode mostly on SSD gets its reads than the reader alone reads
  (``OverheadConfig.host_busy_ssd_slowdown_frac``);
- the executor's own host time per layer (planning, issuing, records), means: a dense decode's
  is every policy's (``layer_us``), and a sparse decode's extra is the planning of its HBM
  cache, charged with each layer's cache work (``cache_mgmt_per_layer_us``).

``calibrate`` turns one machine's ``Measurements`` into the values of a ``gpu``, a ``host``, an
``ssd`` and an ``overheads`` config (plain dicts, written as YAML by the profiler).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from m2sim.cost import OverheadConfig, gpu_roofline
from m2sim.fits import fit_affine, fit_linear, fit_ssd
from m2sim.hardware import GB, GPUConfig
from m2sim.plan import Compute
from m2sim.policy.preload import SEQUENTIAL_REQUEST_BYTES
from m2sim.types import BANDS

COMPUTE_OPS = ("attention", "ffn", "lm_head")


@dataclass
class Measurements:
    """What ``real/profile.py`` measured (rates: medians of repeats; the backend's ops: one sample
    per row). Sizes in bytes.

    The ops (attention, FFN, LM head) are the real backend's own code at the model's shapes;
    ``ffn`` rows give ids per band (FP16, INT8, INT4) as the plan counts them.
    """

    gemv: list[tuple[int, float]] = field(default_factory=list)  # (weight bytes, s)
    gemm: list[tuple[float, float]] = field(default_factory=list)  # (FLOPs, s)
    cpu_gemm: list[tuple[float, float]] = field(default_factory=list)  # on the host CPU (GPU runs)
    memcpy: list[tuple[int, float]] = field(default_factory=list)  # (bytes copied, s)
    h2d: list[tuple[int, float]] = field(default_factory=list)  # host -> device (bytes, s)
    ssd_qd: list[tuple[int, int, int, float]] = field(default_factory=list)  # (qd, B, n, s)
    ssd_layer: list[tuple[int, float]] = field(default_factory=list)  # (layer bytes, s)
    ssd_lone: list[tuple[int, float]] = field(default_factory=list)  # the same, one at a time
    attention: list[tuple[int, int, float]] = field(default_factory=list)  # (T, context, s)
    ffn: list[tuple[int, int, int, int, float]] = field(default_factory=list)  # (T, ids x3, s)
    lm_head: list[float] = field(default_factory=list)  # s per token
    load: list[tuple[int, int, float]] = field(default_factory=list)  # (band, ids, s) to unit
    evict: list[tuple[int, int, float]] = field(default_factory=list)  # (band, ids, s)
    link: list[tuple[int, int, float]] = field(default_factory=list)  # (band, ids, s) to scratch
    gather: list[tuple[int, int, float]] = field(default_factory=list)  # (band, ids, s) from unit
    quantize: list[tuple[int, float]] = field(default_factory=list)  # (weights, s)
    layer_host: list[float] = field(default_factory=list)  # executor's own s per layer
    # the same for a dense decode (no HBM cache to plan or update): the part of the above that
    # every policy pays; the rest is a sparse policy's cache planning, per layer
    layer_host_dense: list[float] = field(default_factory=list)
    # the real backend's decode with the SSD reader running beside it: (bytes read while it
    # ran, its seconds, the same decode's seconds alone)
    contention: list[tuple[int, float, float]] = field(default_factory=list)
    # the SSD reads of a real decode mostly on SSD, against the reader alone: (bytes the decode
    # read, the seconds any of its reads was in flight, bytes read alone, their seconds)
    ssd_beside: list[tuple[int, float, int, float]] = field(default_factory=list)
    # the same ops timed inside real decodes of the backend (``real.record_op_times``), rows
    # as above (which of the two the fits take: ``ops``)
    attention_in_decode: list[tuple[int, int, float]] = field(default_factory=list)
    ffn_in_decode: list[tuple[int, int, int, int, float]] = field(default_factory=list)
    lm_head_in_decode: list[float] = field(default_factory=list)
    evict_in_decode: list[tuple[int, int, float]] = field(default_factory=list)
    load_in_decode: list[tuple[int, int, float]] = field(default_factory=list)
    link_in_decode: list[tuple[int, int, float]] = field(default_factory=list)

    def ops(self, name: str, compute_from_decodes: bool = False) -> list:
        """The rows of op ``name`` the fits use (the module docstring says why): the cache
        unit's evictions and loads and the copies to scratch timed inside real decodes where
        there are any; the compute ops (attention, FFN, LM head) from the op loop unless
        ``compute_from_decodes``."""
        decode = getattr(self, f"{name}_in_decode")
        if name in COMPUTE_OPS and not compute_from_decodes:
            return getattr(self, name) or decode
        return decode or getattr(self, name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def extend(self, other: Measurements) -> None:
        """Add ``other``'s rows (a later pass over the same machine) to these."""
        for f in dataclasses.fields(self):
            getattr(self, f.name).extend(getattr(other, f.name))

    @staticmethod
    def from_dict(d: dict) -> Measurements:
        known = {f.name for f in dataclasses.fields(Measurements)}
        return Measurements(**{k: [tuple(r) if isinstance(r, list) else r for r in v]
                               for k, v in d.items() if k in known})


@dataclass(frozen=True)
class OpShapes:
    """The plan's ops at the measured shapes (``Planner.attention_op`` etc.), and sizes."""

    attention: dict  # (T, context) -> Compute
    ffn: dict  # (T, ids fp16, ids int8, ids int4) -> Compute
    lm_head: Compute
    id_weights: int  # weights of one id (neurons_per_id * ffn_mats * d_model)
    id_bytes: tuple[int, int, int]  # bytes of one id per band


@dataclass
class Calibration:
    gpu: dict
    host: dict
    ssd: dict
    overheads: dict
    fits: dict  # fit quality and intermediate values (for the profile's report)


def _median(xs) -> float:
    return float(np.median(np.asarray(xs, dtype=float)))


def _times_by_key(rows) -> dict[tuple, list[float]]:
    """The seconds of (key..., seconds) rows, grouped by key."""
    out: dict[tuple, list[float]] = {}
    for *key, t in rows:
        out.setdefault(tuple(key), []).append(t)
    return out


def _by_size(rows) -> dict[int, float]:
    """Median seconds per size of (bytes, seconds) rows."""
    return {b: _median(ts) for (b,), ts in _times_by_key(rows).items()}


def _mean(xs) -> float:
    return float(np.mean(np.asarray(xs, dtype=float)))


def _in_decode_over_op_loop(m: Measurements) -> dict[str, float]:
    """Per op and shape timed both ways: the mean time inside real decodes over the op loop's
    (below 1: the op loop times the op slower than the decodes ran it)."""
    out = {}
    for name in (*COMPUTE_OPS, "evict", "load", "link"):
        loop, dec = getattr(m, name), getattr(m, f"{name}_in_decode")
        if name == "lm_head":
            loop, dec = [(t,) for t in loop], [(t,) for t in dec]
        by_loop, by_dec = _times_by_key(loop), _times_by_key(dec)
        for key in by_dec.keys() & by_loop.keys():
            out[f"{name}{list(key) if key else ''}"] = _mean(by_dec[key]) / _mean(by_loop[key])
    return out


def _residual_us(samples, ops: dict, gpu: GPUConfig, ov: OverheadConfig) -> float:
    """Mean of measured seconds minus the roofline (fixed costs 0) of the op, in us."""
    res = [s - gpu_roofline(ops[tuple(key)], gpu, ov)[0] for *key, s in samples]
    return max(0.0, _mean(res) * 1e6)


def calibrate(m: Measurements, ops: OpShapes, *, is_host_cpu: bool,
              compute_from_decodes: bool = False) -> Calibration:
    """Config values that make the simulator reproduce ``m`` (see the module docstring;
    ``compute_from_decodes``: see ``Measurements.ops``)."""
    fits: dict = {"compute_ops_from": "decodes" if compute_from_decodes else "op loop",
                  "in_decode_over_op_loop": _in_decode_over_op_loop(m)}
    gemv = fit_affine(*zip(*m.gemv))
    mem_bw = 1.0 / gemv.slope
    gemm_flops = _median([f / s for f, s in m.gemm])
    fits["gemv"] = dataclasses.asdict(gemv)
    copy = fit_affine(*zip(*m.memcpy))
    dram_bw = 1.0 / copy.slope
    fits["memcpy"] = dataclasses.asdict(copy)
    gpu = {"memory_bandwidth_gb_per_s": mem_bw / GB, "memory_efficiency_frac": 1.0,
           "fp32_tflops": gemm_flops / 1e12, "fp16_tflops": gemm_flops / 1e12,
           "int8_tops": None, "compute_efficiency_frac": 1.0, "is_host_cpu": is_host_cpu}
    base = GPUConfig(name="fit", memory_gib=1.0, memory_bandwidth_gb_per_s=mem_bw / GB,
                     fp32_tflops=gemm_flops / 1e12, fp16_tflops=gemm_flops / 1e12,
                     tdp_w=1.0, idle_w=0.0, die_area_mm2=1.0, process_nm=1.0, release_year=2000,
                     memory_efficiency_frac=1.0, compute_efficiency_frac=1.0,
                     **{f"{p.name.lower()}_dequant_ns_per_weight": 0.0 for p in BANDS})
    zero = OverheadConfig(kernel_launch_us=0.0)

    # FFN: fixed + per band + per weight per precision; the roofline's share of each weight is
    # its bytes over the GEMV bandwidth, the rest is the separate dequantization pass
    decode = [r for r in m.ops("ffn", compute_from_decodes) if r[0] == 1]
    feats = {"fixed": np.ones(len(decode)),
             "band": np.array([sum(1 for c in r[1:4] if c) for r in decode], dtype=float)}
    for b, p in enumerate(BANDS):
        feats[p.name] = np.array([r[1 + b] * ops.id_weights for r in decode], dtype=float)
    ffn = fit_linear(feats, [r[4] for r in decode])
    fits["ffn"] = dataclasses.asdict(ffn)
    for b, p in enumerate(BANDS):
        roof = ops.id_bytes[b] / ops.id_weights / mem_bw
        gpu[f"{p.name.lower()}_dequant_ns_per_weight"] = max(0.0, ffn.coef[p.name] - roof) * 1e9
    base = dataclasses.replace(base, **{k: v for k, v in gpu.items() if "dequant" in k})

    ov = {"kernel_launch_us": 0.0,
          "attention_us": _residual_us(m.ops("attention", compute_from_decodes),
                                       ops.attention, base, zero),
          "ffn_us": ffn.coef["fixed"] * 1e6, "ffn_band_us": ffn.coef["band"] * 1e6,
          "lm_head_us": _residual_us([(s,) for s in m.ops("lm_head", compute_from_decodes)],
                                     {(): ops.lm_head}, base, zero)}

    # DRAM -> device: a copy to scratch is the link (per load + per byte); a load into the
    # cache unit adds bookkeeping (per band + per id); so do evictions; an FFN over part of a
    # unit gathers its rows (per band + reading and writing them at memory bandwidth)
    def per_band(rows):
        return (np.ones(len(rows)), np.array([n for _, n, _ in rows], dtype=float),
                np.array([n * ops.id_bytes[b] for b, n, _ in rows], dtype=float),
                np.array([s for *_, s in rows], dtype=float))

    host = {"dram_bandwidth_gb_per_s": dram_bw / GB,
            "cpu_gflops_per_core": (_median([f / s for f, s in m.cpu_gemm]) if m.cpu_gemm
                                    else gemm_flops) / 1e9}
    ones, ids, nbytes, t = per_band(m.ops("link") if is_host_cpu else m.load)
    link = fit_linear({"call": ones, "byte": nbytes}, t)
    fits["link"] = dataclasses.asdict(link)
    link_bw = 1.0 / link.coef["byte"] if link.coef["byte"] > 0 else dram_bw
    if is_host_cpu:  # a load is the one copy into the device's memory
        host.update(gpu_link_gb_per_s=link_bw / GB, gpu_link_latency_us=link.coef["call"] * 1e6)
        ov.update(staged_gather=False, gather_per_id_ns=0.0)
    else:  # gathered into pinned staging on the CPU, then copied over the link
        h2d = fit_affine(*zip(*m.h2d))
        fits["h2d"] = dataclasses.asdict(h2d)
        host.update(gpu_link_gb_per_s=1.0 / h2d.slope / GB,
                    gpu_link_latency_us=(h2d.intercept + link.coef["call"]) * 1e6)
        ov.update(staged_gather=True, gather_per_id_ns=0.0,
                  gather_efficiency_frac=min(1.0, link_bw / dram_bw))
    ones, ids, nbytes, t = per_band(m.ops("load"))
    unit = fit_linear({"band": ones, "id": ids}, t - (link.coef["call"] + nbytes / link_bw),
                      relative=False)
    ones, ids, nbytes, t = per_band(m.ops("evict"))  # an eviction moves rows: per byte too
    ev = fit_linear({"band": ones, "id": ids, "byte": nbytes}, t)
    fits["unit_load"], fits["evict"] = dataclasses.asdict(unit), dataclasses.asdict(ev)
    ov.update(cache_mgmt_per_layer_us=0.0, cache_mgmt_per_id_ns=0.0,
              unit_load_per_band_us=unit.coef["band"] * 1e6,
              unit_load_per_id_ns=unit.coef["id"] * 1e9,
              evict_per_band_us=ev.coef["band"] * 1e6, evict_per_id_ns=ev.coef["id"] * 1e9,
              evict_per_byte_ns=ev.coef["byte"] * 1e9)
    if m.gather:
        _, _, nbytes, t = per_band(m.gather)
        ov["ffn_gather_per_band_us"] = max(0.0, _mean(t - 2 * nbytes / mem_bw) * 1e6)
    ov["cpu_efficiency_frac"] = min(1.0, mem_bw / dram_bw)
    if m.quantize:
        q = fit_affine(*zip(*m.quantize))
        ov["quantize_ns_per_weight"] = q.slope * 1e9
        fits["quantize"] = dataclasses.asdict(q)
    if m.contention:  # how much slower the decode ran with the SSD reader busy beside it
        slower = [max(0.0, loaded / alone - 1.0) for nread, loaded, alone in m.contention
                  if nread and alone > 0]
        if slower:
            ov["ssd_busy_host_slowdown_frac"] = _median(slower)
    if m.ssd_beside:  # how much slower a decode's reads ran than the reader's alone
        slower = [max(0.0, (n_alone / s_alone) / (n_beside / s_beside) - 1.0)
                  for n_beside, s_beside, n_alone, s_alone in m.ssd_beside
                  if n_beside and s_beside > 0 and s_alone > 0]
        if slower:
            ov["host_busy_ssd_slowdown_frac"] = _median(slower)
    if m.layer_host:  # the executor's own time per layer: every policy's, and a sparse one's
        ov["layer_us"] = _mean(m.layer_host) * 1e6
        if m.layer_host_dense:  # cache planning: charged with each sparse layer's cache work
            dense_us = _mean(m.layer_host_dense) * 1e6
            ov["cache_mgmt_per_layer_us"] = max(0.0, ov["layer_us"] - dense_us)
            ov["layer_us"] = min(ov["layer_us"], dense_us)

    ssd: dict = {}
    if m.ssd_qd:
        f = fit_ssd(*zip(*m.ssd_qd))
        fits["ssd_qd"] = dataclasses.asdict(f)
        ssd.update(read_latency_us=f.latency_s * 1e6, queue_depth=f.queue_depth,
                   seq_read_gb_per_s=f.bytes_per_s / GB)
    if m.ssd_layer:
        # DECISION: the preloader's whole-layer reads (every stored precision at once, split
        # over the reader's threads) set latency and bandwidth, and are one wave of requests
        # (the simulator issues them as 1 MiB requests): the policies validated read layers
        lay = fit_affine(*zip(*m.ssd_layer))
        fits["ssd_layer"] = dataclasses.asdict(lay)
        most = max(-(-b // SEQUENTIAL_REQUEST_BYTES) for b, _ in m.ssd_layer)
        ssd.update(seq_read_gb_per_s=1.0 / lay.slope / GB, read_latency_us=lay.intercept * 1e6,
                   queue_depth=max(ssd.get("queue_depth", 1), most))
        if m.ssd_lone:  # one layer at a time against queued: per size, then the median
            queued, lone = _by_size(m.ssd_layer), _by_size(m.ssd_lone)
            slower = [max(0.0, lone[b] / queued[b] - 1.0) for b in lone if b in queued]
            if slower:
                ssd["lone_read_slowdown_frac"] = _median(slower)
    return Calibration(gpu=gpu, host=host, ssd=ssd, overheads=ov, fits=fits)
