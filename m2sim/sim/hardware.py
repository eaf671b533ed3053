"""The modelled machine: one ``Server`` per link and device, and the durations of ops on them.

Links: SSD->DRAM (one queue; latencies overlap ``queue_depth`` wide inside a job) and DRAM->HBM
(``gpu_copy_engines`` DMA engines). Devices: the GPU (kernels serialize on one stream), the
cache-management CPU core (the paper's single core) and the CPU cores that compute cold
neurons (PowerInfer). Durations come from ``m2sim.cost``.
"""

from __future__ import annotations

import simpy

from m2sim.config import M2SimConfig
from m2sim.cost import cpu_compute_s, gpu_compute_s, mgmt_s, ssd_read_s, transfer_s
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

    def transfer_s(self, t: Transfer) -> float:
        if t.link is Link.SSD_TO_DRAM:
            return ssd_read_s(t.nbytes, t.num_requests, self.cfg.host.ssd, self.ssd_bytes_per_s)
        return transfer_s(t.nbytes, self.h2d_bytes_per_s, self.cfg.host.gpu_link_latency_s)

    def transfer(self, t: Transfer, token: int) -> simpy.Event:
        return self.links[t.link].submit(self.transfer_s(t),
                                         priority=PREFETCH if t.prefetch else DEMAND,
                                         label=t.payload.value, layer=t.layer, token=token,
                                         nbytes=t.nbytes)

    def compute_s(self, op: Compute) -> float:
        if op.device is Device.GPU:
            return gpu_compute_s(op, self.cfg.gpu, self.ov)
        return cpu_compute_s(op, self.cfg.host, self.ov)

    def compute(self, op: Compute, token: int) -> simpy.Event:
        server = self.gpu if op.device is Device.GPU else self.cpu
        return server.submit(self.compute_s(op), label=op.what, layer=op.layer, token=token,
                             nbytes=op.weight_bytes)

    def cache_work(self, w: CacheWork, token: int) -> simpy.Event:
        dur = mgmt_s(w.ids_changed, w.ids_gathered, w.gather_bytes, self.cfg.host, self.ov)
        return self.mgmt.submit(dur, label="cache_mgmt", layer=w.layer, token=token,
                                nbytes=w.gather_bytes)
