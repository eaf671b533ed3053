"""Hardware and activity fixtures for the carbon tests (plain values, no Hydra)."""

from __future__ import annotations

import dataclasses

import pytest

from m2sim.carbon import Activity, CarbonConfig
from m2sim.hardware import GPUConfig, HostConfig, SSDConfig


def _gpu(**kw) -> GPUConfig:
    values = dict(name="test_gpu", memory_gib=24, memory_bandwidth_gb_per_s=900, fp32_tflops=10,
                  fp16_tflops=20, tdp_w=250.0, idle_w=50.0, die_area_mm2=600.0, process_nm=12,
                  release_year=2017)
    return GPUConfig(**{**values, **kw})


def _host(**kw) -> HostConfig:
    ssd = SSDConfig(name="test_ssd", capacity_gb=1000, seq_read_gb_per_s=3.5, read_latency_us=50,
                    active_w=6.0, idle_w=0.5)
    values = dict(name="test_host", dram_gib=64, dram_bandwidth_gb_per_s=76.8, pcie_gen=3,
                  ssd=ssd, cpu_cores=10, cpu_gflops_per_core=48, cpu_tdp_w=140.0,
                  cpu_idle_w=30.0)
    return HostConfig(**{**values, **kw})


def _activity(**kw) -> Activity:
    values = dict(runtime_s=100.0, gpu_busy_compute_s=10.0, gpu_busy_memory_s=50.0,
                  gpu_wait_io_s=30.0, cpu_busy_core_s=100.0, dram_resident_gb_s=4000.0,
                  dram_bytes_moved=200 * 10**9, ssd_active_s=20.0,
                  pcie_bytes_moved=100 * 10**9, num_tokens=128)
    return Activity(**{**values, **kw})


def _idle_activity(runtime_s: float, **kw) -> Activity:
    """A run in which nothing is busy: only idle and resident power count."""
    values = dict(runtime_s=runtime_s, gpu_busy_compute_s=0.0, gpu_busy_memory_s=0.0,
                  gpu_wait_io_s=0.0, cpu_busy_core_s=0.0, dram_resident_gb_s=0.0,
                  dram_bytes_moved=0, ssd_active_s=0.0, pcie_bytes_moved=0, num_tokens=1)
    return Activity(**{**values, **kw})


def _with(cfg: CarbonConfig, **kw) -> CarbonConfig:
    """A copy of ``cfg`` with fields replaced (re-runs its checks)."""
    return dataclasses.replace(cfg, **kw)


@pytest.fixture
def make_gpu():
    return _gpu


@pytest.fixture
def make_host():
    return _host


@pytest.fixture
def make_activity():
    return _activity


@pytest.fixture
def idle_activity():
    return _idle_activity


@pytest.fixture
def with_():
    return _with


@pytest.fixture
def gpu() -> GPUConfig:
    return _gpu()


@pytest.fixture
def host() -> HostConfig:
    return _host()


@pytest.fixture
def activity() -> Activity:
    return _activity()
