"""``run_real``: serve the workload on real weights through the shared policies and planner.

Set-up: load the checkpoint, build (once) and open the tiered store, build the run exactly as
the simulator does (``m2sim.build.build_run``) but with a live activation source fed by the
predictor, warm the tiers the policies start with (DRAM fixed area, resident/hot neurons),
then prefill and decode token by token with the ``RealExecutor`` supplying every FFN.
Results use the simulator's ``summary.json`` schema plus the generated tokens and text.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from m2sim.build import Run, build_run
from m2sim.carbon.activity import Activity
from m2sim.carbon.assess import assess
from m2sim.errors import M2SimError
from m2sim.plan import Phase
from m2sim.planner import Planner
from m2sim.policy.atu import ATU
from m2sim.policy.bands import band_counts
from m2sim.policy.lru import LRU
from m2sim.policy.static_hot import StaticHot
from m2sim.policy.streaming import Resident
from m2sim.results import Results, summarize
from m2sim.trace import ReplayTraceConfig
from m2sim.trace.file import TraceWriter
from m2sim.types import BANDS, Link
from real.allocator import keep_freed_memory
from real.checkpoint import smollm2_gguf_path
from real.checkpoint_cache import CheckpointCache
from real.config import PredictorKind, RealConfig, RealRunConfig
from real.device_cache import DeviceNeuronCache
from real.dram import DRAMCache
from real.energy import EnergyMeter, Measurement, side_by_side
from real.executor import RealExecutor, Scorer
from real.live import LiveSource
from real.model import Transformer
from real.prefetch import Prefetcher
from real.quality import heldout_ids
from real.ssd import SSDReader
from real.store import Store, convert_store, open_store

_HF = {"attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj",
       "attention.wv": "self_attn.v_proj", "attention.wo": "self_attn.o_proj",
       "attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
       "feed_forward.w_gate": "mlp.gate_proj", "feed_forward.w_up": "mlp.up_proj",
       "feed_forward.w_down": "mlp.down_proj"}


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """The model's weights under Hugging Face LLaMA names (what the store converter reads)."""
    out = {"model.embed_tokens.weight": model.tok_embeddings.weight,
           "model.norm.weight": model.norm.weight}
    if model.output is not None:
        out["lm_head.weight"] = model.output.weight
    for i, block in enumerate(model.layers):
        for name, t in block.state_dict().items():
            mod, _, leaf = name.rpartition(".")
            out[f"model.layers.{i}.{_HF[mod]}.{leaf}"] = t
    return out


def checkpoint_path(cfg: RealRunConfig) -> Path:
    if cfg.real.checkpoint is not None:
        return Path(cfg.real.checkpoint)
    if cfg.model.name == "smollm2_135m":
        return smollm2_gguf_path()
    raise M2SimError(f"real.checkpoint: required for model {cfg.model.name} (a Hugging Face "
                     f"LLaMA directory or a .gguf file)")


def check_model(model: Transformer, cfg: RealRunConfig, path: Path) -> None:
    a, m = model.args, cfg.model
    got = (a.n_layers, a.d_model, a.d_ff, a.n_heads, a.n_kv_heads, a.vocab_size)
    want = (m.num_layers, m.d_model, m.d_ff, m.num_heads, m.num_kv_heads, m.vocab_size)
    if got != want:
        raise M2SimError(f"model: {path.name} has (layers, d_model, d_ff, heads, kv heads, vocab) "
                         f"= {got} but model={m.name} says {want}")


def store_path(cfg: RealRunConfig) -> Path:
    return Path(cfg.real.store_dir or f"stores/{cfg.model.name}")


def ensure_store(cfg: RealRunConfig, model: Transformer, precisions) -> Store:
    path = store_path(cfg)
    if not path.exists():
        weights = {k: v.detach().cpu() for k, v in hf_state_dict(model).items()}
        convert_store(weights, path, precisions=BANDS, quant=cfg.quant)
    store = open_store(path)
    missing = [p.name for p in precisions if p not in store.manifest.precisions]
    if missing:
        raise M2SimError(f"real.store_dir: {path} lacks precisions {missing}")
    return store


def _drop_ffn_weights(model: Transformer) -> None:
    """FFN weights live only in the tiers from here on (the executor supplies every FFN)."""
    for block in model.layers:
        for lin in (block.feed_forward.w_gate, block.feed_forward.w_up, block.feed_forward.w_down):
            lin.weight = torch.nn.Parameter(torch.empty(0), requires_grad=False)


def device_slots(run: Run) -> list[tuple[int, int, int]]:
    """Slot-pool sizes per layer and band for the HBM policy (its entries at most)."""
    lay, hbm = run.layout, run.hbm
    out = []
    for layer in range(lay.num_layers):
        if isinstance(hbm, ATU):
            out.append(band_counts(lay.max_active[layer], lay.fracs))
        elif isinstance(hbm, LRU):  # any band mix up to the capacity: a pool per band at full size
            out.append(tuple(hbm.capacity[layer] // b if f > 0 else 0
                             for b, f in zip(lay.id_bytes, lay.fracs)))
        elif isinstance(hbm, StaticHot):
            row = [0, 0, 0]
            row[hbm.band] = len(hbm.hot_ids(layer))
            out.append(tuple(row))
        elif isinstance(hbm, Resident):
            out.append(tuple(lay.num_ids if f > 0 else 0 for f in lay.fracs))
        else:
            out.append((0, 0, 0))  # streaming: scratch only
    return out


def _warm(run: Run, store: Store, ssd: SSDReader, dram: DRAMCache,
          dev: DeviceNeuronCache) -> None:
    """Fill what the policies start with (untimed, like loading a model)."""
    stored = run.sizes.stored
    for layer in run.dram.initial_layers():
        dram.put_layer(layer, {p: ssd.read_layer(layer, p) for p in stored})
    hbm = run.hbm
    for layer in range(run.num_layers):
        if isinstance(hbm, StaticHot):
            ids = hbm.hot_ids(layer)
            p = BANDS[hbm.band]
            dev.load(layer, p, ids, ssd.read_layer(layer, p), rows=ids)
        elif isinstance(hbm, Resident):
            ids = np.arange(run.layout.num_ids)
            for p, f in zip(BANDS, run.layout.fracs):
                if f > 0:
                    dev.load(layer, p, ids, ssd.read_layer(layer, p), rows=ids)


def _uses_lowrank(cfg: RealRunConfig, store_dir: Path) -> bool:
    kind = cfg.real.predictor
    return kind is PredictorKind.LOWRANK or (kind is PredictorKind.AUTO
                                             and (store_dir / "predictor").exists())


def _scorer(cfg: RealRunConfig, model: Transformer, store: Store) -> tuple[Scorer, str]:
    if _uses_lowrank(cfg, Path(store.path)):
        from real.predictor import LowRankPredictor

        pred = LowRankPredictor.load(Path(store.path) / "predictor")
        # in the predictor's own dtype: no per-call copy of its weights
        return (lambda layer, h: pred.scores(layer, h.to(pred.w_in.dtype)).cpu().numpy()), \
            "lowrank"
    gates = [b.feed_forward.w_gate.weight.detach().clone() for b in model.layers]
    ups = [b.feed_forward.w_up.weight.detach().clone() for b in model.layers]
    act = model.layers[0].feed_forward.act

    def oracle(layer: int, h: torch.Tensor) -> np.ndarray:
        return (act(gates[layer] @ h) * (ups[layer] @ h)).abs().float().cpu().numpy()

    return oracle, "oracle"


def host_settings(r: RealConfig) -> None:
    """The process-wide settings a run asks for: torch's threads, the host allocator's."""
    if r.torch_threads:
        torch.set_num_threads(r.torch_threads)
    keep_freed_memory(r.malloc_mmap_threshold_bytes, r.malloc_trim_threshold_bytes)


def run_real(cfg: RealRunConfig, checkpoints: Optional[CheckpointCache] = None) -> Results:
    """Serve ``cfg``'s workload on the real backend. ``checkpoints``: where to take the model and
    its tokenizer from, for many runs in one process (default: read the file for this run)."""
    checkpoints = checkpoints or CheckpointCache(keep=False)
    host_settings(cfg.real)
    if cfg.real.device.startswith("cuda") and not torch.cuda.is_available():
        raise M2SimError(f"real.device: {cfg.real.device} requested but CUDA is not available "
                         f"here (allowed: cpu)")
    path = checkpoint_path(cfg)
    replay = isinstance(cfg.trace, ReplayTraceConfig)
    built = (store_path(cfg) / "manifest.json").exists()
    oracle = cfg.policy.sparse and not replay and not _uses_lowrank(cfg, store_path(cfg))
    # FFN weights are read only to build the store or for the oracle predictor
    model = checkpoints.model(path, dtype=getattr(torch, cfg.real.dtype),
                              device=cfg.real.device, ffn=not built or oracle)
    check_model(model, cfg, path)
    tok = checkpoints.tokenizer(path)
    w = cfg.workload
    if tok is None:  # a bare checkpoint (tests, random models): fixed ids, no text
        if w.prompt:
            raise M2SimError(f"workload.prompt: {path.name} has no tokenizer; give "
                             f"workload.prompt_tokens instead")
        prompt = [(7 * i + 1) % model.args.vocab_size for i in range(w.prompt_tokens)]
    else:
        prompt = tok.encode(w.prompt) if w.prompt else heldout_ids(tok.encode, w.prompt_tokens)
    if len(prompt) + w.output_tokens > model.args.max_context:
        raise M2SimError(f"workload.prompt: {len(prompt)} prompt tokens + {w.output_tokens} "
                         f"output tokens exceed the context of {model.args.max_context}")
    cfg = dataclasses.replace(cfg, workload=dataclasses.replace(w, prompt_tokens=len(prompt)))
    store = ensure_store(cfg, model, cfg.policy.stored)
    source, scorer, predictor = None, None, "trace"
    if cfg.policy.sparse and not replay:
        scorer, predictor = _scorer(cfg, model, store)
        frac = getattr(cfg.trace, "active_frac", None) or cfg.model.active_frac
        writer = None
        if cfg.real.record_trace:
            writer = TraceWriter(model=cfg.model.name, num_layers=cfg.model.num_layers,
                                 num_neurons=cfg.model.d_ff, d_model=cfg.model.d_model,
                                 notes={"predictor": predictor, "checkpoint": path.name})
        source = LiveSource(num_layers=cfg.model.num_layers, num_neurons=cfg.model.d_ff,
                            k=max(1, round(frac * cfg.model.d_ff)), writer=writer)
    run = build_run(cfg, cfg.policy, source=source)
    pl = run.placement
    if pl.num_attn_resident < run.num_layers or not pl.lm_head_resident:
        raise M2SimError("gpu.memory_gib: the real backend keeps dense weights resident, but the "
                         f"placement streams {run.num_layers - pl.num_attn_resident} attention "
                         "layers; give the GPU more memory or use the simulator for this case")
    _drop_ffn_weights(model)
    n_decode = w.num_requests * (w.output_tokens - 1)
    planner = Planner(run, num_decode_tokens=n_decode)
    return _serve(cfg, run, planner, model, store, source, scorer, prompt, tok, predictor)


def _serve(cfg, run, planner, model, store, source, scorer, prompt, tok, predictor) -> Results:
    w, dev_name = cfg.workload, cfg.real.device
    dram = DRAMCache(run.placement.dram_ffn_bytes)
    # LIMITATION: LRU/window pools are sized per band at the full capacity (the band mix of an
    # LRU unit varies), so they may allocate up to 3x the plan's FFN cache bytes.
    budget = None if isinstance(run.hbm, LRU) else run.placement.ffn_cache_bytes
    dev_cache = DeviceNeuronCache(d_model=cfg.model.d_model, ffn_mats=cfg.model.ffn_mats,
                                  quant=cfg.quant, slots=device_slots(run),
                                  capacity_bytes=budget, device=dev_name)
    ids_out: list[int] = []
    requests, token_end = [], []
    with SSDReader(store, num_threads=cfg.real.io_threads) as ssd, dev_cache as dev, \
            Prefetcher(ssd, dram, dev) as pf, torch.inference_mode():
        _warm(run, store, ssd, dram, dev)
        ex = RealExecutor(run=run, planner=planner, store=store, dram=dram, device=dev,
                          prefetcher=pf, source=source, scorer=scorer,
                          record_ops=cfg.real.record_op_times)
        token = 0
        meter = _meter(cfg)
        if meter is not None:
            meter.__enter__()
        for r in range(w.num_requests):
            cache = model.new_cache(max_len=len(prompt) + w.output_tokens)
            start = ex.now()
            ex.begin_prefill(r, len(prompt))
            x = torch.tensor([prompt], device=dev_name)
            logits = model(x, cache, 0, ffn_parts_fn=ex.parts_fn, last_only=True)
            nxt = int(logits[0, -1].argmax())
            first = ex.now()
            out = [nxt]
            for i in range(w.output_tokens - 1):
                ex.begin_decode(token)
                x = torch.tensor([[nxt]], device=dev_name)
                logits = model(x, cache, len(prompt) + i, ffn_parts_fn=ex.parts_fn,
                               op_timer=ex if ex.record_ops else None)
                nxt = int(logits[0, -1].argmax())
                out.append(nxt)
                token_end.append(ex.now())
                token += 1
            requests.append((r, start, first, ex.now()))
            ids_out = out
        pf.wait_all()
        if dev_name.startswith("cuda"):
            torch.cuda.synchronize()
        if meter is not None:
            meter.__exit__(None, None, None)
        stats = {"ssd": ssd.stats(), "dram": dram.stats(), "device": dev.stats()}
    if source is not None and source.writer is not None:
        source.writer.save(cfg.real.record_trace)
    dense = sum(t.numel() * t.element_size() for t in model.parameters())
    return _results(cfg, run, ex, stats, requests, token_end, ids_out, tok, predictor, dense,
                    meter.result if meter is not None else None)


def _meter(cfg: RealRunConfig) -> Optional[EnergyMeter]:
    """Measures the serving loop: NVML on CUDA, RAPL on a CPU where readable (else the result
    says why not); None when ``real.measure_energy`` is off."""
    if not cfg.real.measure_energy:
        return None
    dev = torch.device(cfg.real.device)
    on_gpu = dev.type == "cuda"
    return EnergyMeter("auto", gpu_index=(dev.index or 0) if on_gpu else 0, use_nvml=on_gpu)


@dataclasses.dataclass
class _Busy:  # what ``summarize`` reads of a hardware model, from measured times
    busy_s: float


class _Measured:
    def __init__(self, busy: dict):
        self.gpu, self.mgmt, self.cpu = (_Busy(busy["gpu"]), _Busy(busy["cpu_mgmt"]),
                                         _Busy(busy["cpu"]))
        self.links = {link: _Busy(busy[link.name]) for link in Link}


def _results(cfg, run, ex, stats, requests, token_end, ids_out, tok, predictor,
             dense_bytes: int, measured: Optional[Measurement]) -> Results:
    mem = dataclasses.make_dataclass("Peaks", ["peak_hbm", "peak_dram"])(
        stats["device"].peak_bytes + dense_bytes, stats["dram"].peak_bytes)
    total = max(r[3] for r in requests) - min(r[1] for r in requests)
    act = Activity(runtime_s=total, gpu_busy_compute_s=0.0,
                   gpu_busy_memory_s=min(ex.busy["gpu"], total),
                   gpu_wait_io_s=max(0.0, total - ex.busy["gpu"]),
                   cpu_busy_core_s=ex.busy["cpu_mgmt"],
                   dram_resident_gb_s=stats["dram"].peak_bytes / 1e9 * total,
                   dram_bytes_moved=stats["dram"].bytes_moved,
                   ssd_active_s=min(ex.busy[Link.SSD_TO_DRAM.name], total),
                   pcie_bytes_moved=stats["device"].bytes_moved,
                   num_tokens=cfg.workload.output_tokens * cfg.workload.num_requests)
    report = assess(act, cfg.gpu, cfg.host, cfg.carbon)
    res = summarize(run, _Measured(ex.busy), ex.records, ex.log, mem, requests, token_end,
                    carbon=report)
    s = res.summary
    s["backend"] = "real"
    s["device"] = cfg.real.device
    s["predictor"] = predictor
    s["generated_token_ids"] = ids_out
    s["generated_text"] = tok.decode(ids_out) if tok is not None else None
    s["tier_stats"] = {k: dataclasses.asdict(v) for k, v in stats.items()}
    # when the requests were served, on time.perf_counter(): what ran beside them can be
    # counted within (the profiler's reads beside a decode)
    s["serving_perf_counter_s"] = [ex.t0 + min(r[1] for r in requests),
                                   ex.t0 + max(r[3] for r in requests)]
    own = {ph.value: [x for q, x in ex.host_s if q is ph] for ph in Phase}
    # the executor's own host time per layer (planning, issuing, records): what the
    # simulator's sim.overheads.layer_us stands for
    s["executor_host_s_per_layer"] = {k: float(np.median(v)) if v else None
                                      for k, v in own.items()}
    if ex.record_ops:
        s["executor_op_samples"] = {k: [list(r) for r in v] for k, v in ex.op_s.items()}
    if measured is not None:
        s["measured_energy"] = side_by_side(measured, report)
    return res

