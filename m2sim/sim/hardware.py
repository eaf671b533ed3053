"""The modelled machine: one ``Server`` per link and device, and the durations of ops on them.

Links: SSD->DRAM (one queue; latencies overlap ``queue_depth`` wide inside a job) and DRAM->HBM
(``gpu_copy_engines`` DMA engines). Devices: the GPU (kernels serialize on one stream), the
cache-management CPU core (the paper's single core) and the CPU cores that compute cold
neurons (PowerInfer). Durations come from ``m2sim.cost``.
"""

from __future__ import annotations

import simpy

from m2sim.config import M2SimConfig
from m2sim.cost import cpu_compute_s, gpu_roofline, mgmt_s, ssd_read_s, transfer_s
from m2sim.plan import CacheWork, Compute, Transfer
from m2sim.sim.server import DEMAND, PREFETCH, Server
from m2sim.types import Device, Link


class Hardware:
    def __init__(self, env: simpy.Environment, cfg: M2SimConfig, log: list):
        self.env = env
        self.cfg = cfg
        gpu, host = cfg.gpu, cfg.host
        self.ov = cfg.sim.overheads
        self.ssd_bytes_per_s = host.ssd_link_bytes_per_s()
        self.h2d_bytes_per_s = host.gpu_link_bytes_per_s(gpu)
        self.links = {
            Link.SSD_TO_DRAM: Server(env, Link.SSD_TO_DRAM.name, 1, log),
            Link.DRAM_TO_HBM: Server(env, Link.DRAM_TO_HBM.name, host.gpu_copy_engines, log),
        }
        self.gpu = Server(env, "GPU", 1, log)
        self.mgmt = Server(env, "CPU_MGMT", 1, log)
        self.cpu = Server(env, "CPU", 1, log)
        self.gpu_memory_bound_s = 0.0  # GPU busy time split by roofline regime (for power)
        self.gpu_compute_bound_s = 0.0
        self.cpu_weight_bytes = 0  # weights the CPU read from DRAM (cold neurons)
        self._link_bytes = {link: 0 for link in Link}

    def bytes_moved(self, link: Link) -> int:
        return self._link_bytes[link]

    def transfer_s(self, t: Transfer) -> float:
        if t.link is Link.SSD_TO_DRAM:
            return ssd_read_s(t.nbytes, t.num_requests, self.cfg.host.ssd, self.ssd_bytes_per_s)
        return transfer_s(t.nbytes, self.h2d_bytes_per_s, self.cfg.host.gpu_link_latency_s)

    def transfer(self, t: Transfer, token: int) -> simpy.Event:
        self._link_bytes[t.link] += t.nbytes
        return self.links[t.link].submit(self.transfer_s(t),
                                         priority=PREFETCH if t.prefetch else DEMAND,
                                         label=t.payload.value, layer=t.layer, token=token,
                                         nbytes=t.nbytes)

    def compute(self, op: Compute, token: int) -> simpy.Event:
        if op.device is Device.GPU:
            dur, memory_bound = gpu_roofline(op, self.cfg.gpu, self.ov)
            if memory_bound:
                self.gpu_memory_bound_s += dur
            else:
                self.gpu_compute_bound_s += dur
            server = self.gpu
        else:
            dur, server = cpu_compute_s(op, self.cfg.host, self.ov), self.cpu
            self.cpu_weight_bytes += op.weight_bytes
        return server.submit(dur, label=op.what, layer=op.layer, token=token,
                             nbytes=op.weight_bytes)

    def cache_work(self, w: CacheWork, token: int) -> simpy.Event:
        dur = mgmt_s(w.ids_changed, w.ids_gathered, w.gather_bytes, self.cfg.host, self.ov,
                     w.weights_quantized)
        return self.mgmt.submit(dur, label="cache_mgmt", layer=w.layer, token=token,
                                nbytes=w.gather_bytes)
