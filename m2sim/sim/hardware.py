"""The modelled machine: one ``Server`` per link and device, and the durations of ops on them.

Links: SSD->DRAM (one queue; latencies overlap ``queue_depth`` wide inside a job) and DRAM->HBM
(``gpu_copy_engines`` DMA engines). Devices: the GPU (kernels serialize on one stream), the
cache-management CPU core (the paper's single core) and the CPU cores that compute cold
neurons (PowerInfer). On a CPU-only machine's profile (``gpu.is_host_cpu``) the "GPU" is the
host CPU's one compute thread: it also copies into the device cache, manages it and runs the
CPU's FFN share, so the DRAM->HBM link, the management core and the CPU are that same server
(only SSD reads run beside it, on I/O threads). ``sim.single_host_thread`` serializes the same
way on a GPU: an executor whose one host thread issues every kernel, copy and cache update and
waits for each (m2real). Host threads run ``1 + sim.overheads.ssd_busy_host_slowdown_frac``
times slower while an SSD read is in flight, and SSD reads
``1 + sim.overheads.host_busy_ssd_slowdown_frac`` times slower while a host thread is busy: a
job progresses at the speed of the moment, which changes whenever the other side starts or
stops (``Server.slowdown``). A read with no other read queued behind it runs
``1 + host.ssd.lone_read_slowdown_frac`` times slower.
Durations come from ``m2sim.cost``.
"""

from __future__ import annotations

import simpy

from m2sim.config import M2SimConfig
from m2sim.cost import cpu_compute_s, gpu_roofline, mgmt_s, ssd_read_s, transfer_s
from m2sim.plan import CacheWork, Compute, Transfer
from m2sim.sim.server import DEMAND, PREFETCH, Server
from m2sim.types import Device, Link


def _contend(ssd: Server, host: tuple[Server, ...], host_frac: float, ssd_frac: float,
             lone_frac: float) -> None:
    """Host threads run ``1 + host_frac`` times slower while the SSD reads; the SSD reads
    ``1 + ssd_frac`` times slower while a host thread is busy, and ``1 + lone_frac`` times
    slower while no other read waits behind the one in service."""
    if host_frac:
        for h in host:
            h.slowdown = lambda: 1.0 + host_frac if ssd.busy else 1.0
            h.watch(ssd)
    if ssd_frac or lone_frac:
        def read_slowdown() -> float:
            beside = 1.0 + ssd_frac if any(h.busy for h in host) else 1.0
            return beside * (1.0 + lone_frac if not ssd.queued else 1.0)

        ssd.slowdown = read_slowdown
        for h in host:
            ssd.watch(h)


class Hardware:
    def __init__(self, env: simpy.Environment, cfg: M2SimConfig, log: list):
        self.env = env
        self.cfg = cfg
        gpu, host = cfg.gpu, cfg.host
        self.ov = cfg.sim.overheads
        self.ssd_bytes_per_s = host.ssd_link_bytes_per_s()
        self.h2d_bytes_per_s = host.gpu_link_bytes_per_s(gpu)
        ssd = Server(env, Link.SSD_TO_DRAM.name, 1, log)
        if gpu.is_host_cpu or cfg.sim.single_host_thread:  # one thread computes (or issues
            # and waits for each kernel), copies into the device cache and manages it
            self.gpu = Server(env, "GPU", 1, log)
            self.links = {Link.SSD_TO_DRAM: ssd, Link.DRAM_TO_HBM: self.gpu}
            self.mgmt = self.cpu = self.gpu
            threads: tuple[Server, ...] = (self.gpu,)
        else:
            self.gpu = Server(env, "GPU", 1, log)
            self.links = {
                Link.SSD_TO_DRAM: ssd,
                Link.DRAM_TO_HBM: Server(env, Link.DRAM_TO_HBM.name, host.gpu_copy_engines,
                                         log),
            }
            self.mgmt = Server(env, "CPU_MGMT", 1, log)
            self.cpu = Server(env, "CPU", 1, log)
            threads = (self.mgmt, self.cpu)
        _contend(ssd, threads, self.ov.ssd_busy_host_slowdown_frac,
                 self.ov.host_busy_ssd_slowdown_frac, host.ssd.lone_read_slowdown_frac)
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
                                         nbytes=t.nbytes, role=t.link.name)

    def compute(self, op: Compute, token: int) -> simpy.Event:
        if op.device is Device.GPU or self.cfg.gpu.is_host_cpu:
            dur, memory_bound = gpu_roofline(op, self.cfg.gpu, self.ov)
            if memory_bound:
                self.gpu_memory_bound_s += dur
            else:
                self.gpu_compute_bound_s += dur
            server = self.gpu
        else:
            dur, server = cpu_compute_s(op, self.cfg.host, self.ov), self.cpu
        if op.device is Device.CPU:
            self.cpu_weight_bytes += op.weight_bytes
        return server.submit(dur, label=op.what, layer=op.layer, token=token,
                             nbytes=op.weight_bytes, role="GPU" if server is self.gpu else "CPU")

    def host_work(self, layer: int, token: int) -> simpy.Event:
        """The executor's own per-layer work (planning, records) on the management core."""
        return self.mgmt.submit(self.ov.layer_us * 1e-6, label="layer", layer=layer, token=token,
                                role="CPU_MGMT")

    def cache_work(self, w: CacheWork, token: int) -> simpy.Event:
        dur = mgmt_s(w.ids_changed, w.ids_gathered, w.gather_bytes, self.cfg.host, self.ov,
                     w.weights_quantized, w.unit_loads, w.evictions, w.evicted_bytes)
        return self.mgmt.submit(dur, label="cache_mgmt", layer=w.layer, token=token,
                                nbytes=w.gather_bytes, role="CPU_MGMT")
