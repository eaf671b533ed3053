"""real/energy.py: measured energy of a real run (RAPL, NVML, codecarbon) with fakes on CPU."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from m2sim.carbon import CarbonConfig, assess
from real.energy import EnergyMeter, Measurement, integrate_power_j, side_by_side


def test_trapezoid_integral_of_power_samples():
    # 0-1 s ramps 100 -> 200 W (150 J), 1-3 s holds 200 W (400 J)
    assert integrate_power_j([0.0, 1.0, 3.0], [100.0, 200.0, 200.0]) == 550.0
    with pytest.raises(ValueError):
        integrate_power_j([0.0, 1.0], [1.0])


def rapl_zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = 10**7) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zone


def test_rapl_measures_package_energy_on_a_cpu_only_machine(tmp_path):
    pkg = rapl_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    core = rapl_zone(tmp_path, "intel-rapl:0:0", "core", 5)  # inside the package: not added
    psys = rapl_zone(tmp_path, "intel-rapl:1", "psys", 7)  # whole platform: would double count
    with EnergyMeter(use_nvml=False, powercap_root=tmp_path) as meter:
        (pkg / "energy_uj").write_text("3500000\n")
        (core / "energy_uj").write_text("999999\n")
        (psys / "energy_uj").write_text("9999999\n")
    m = meter.result
    assert m.method == "rapl" and m.measurable
    assert m.energy_j == pytest.approx(2.5)
    assert m.energy_by_component_j == {"cpu": pytest.approx(2.5)}


def test_rapl_counter_wrap_around(tmp_path):
    pkg = rapl_zone(tmp_path, "intel-rapl:0", "package-0", 9_000_000, max_uj=10_000_000)
    with EnergyMeter("rapl", use_nvml=False, powercap_root=tmp_path) as meter:
        (pkg / "energy_uj").write_text("1000000\n")
    assert meter.result.energy_j == pytest.approx(2.0)  # 1 J to the wrap + 1 J after it


def test_nothing_measurable_gives_a_clear_result(tmp_path):
    with EnergyMeter(use_nvml=False, powercap_root=tmp_path) as meter:
        pass
    m = meter.result
    assert m.method == "none" and not m.measurable and m.energy_j is None
    assert "not measurable here" in m.note
    unreadable = tmp_path / "intel-rapl:0"
    (unreadable / "energy_uj").mkdir(parents=True)  # reading it fails, as for a root-only file
    with EnergyMeter("rapl", use_nvml=False, powercap_root=tmp_path) as meter:
        pass
    assert meter.result.method == "none" and "'rapl' is unavailable" in meter.result.note


class FakeNvml:
    """Just enough of pynvml: a GPU at constant power, with or without an energy counter."""

    class NVMLError(Exception):
        pass

    def __init__(self, power_w: float, counter_step_mj: int | None):
        self.power_w, self.step, self.counter_mj, self.open = power_w, counter_step_mj, 0, 0

    def nvmlInit(self):
        self.open += 1

    def nvmlShutdown(self):
        self.open -= 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("gpu", i)

    def nvmlDeviceGetPowerUsage(self, handle):
        return int(self.power_w * 1000)  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if self.step is None:
            raise self.NVMLError("Not Supported")  # M40 / P40 / P100
        self.counter_mj += self.step
        return self.counter_mj


def test_gpu_without_energy_counter_is_sampled_and_integrated(tmp_path):
    nvml = FakeNvml(150.0, counter_step_mj=None)
    with EnergyMeter(nvml_module=nvml, sample_interval_s=0.005, powercap_root=tmp_path) as meter:
        time.sleep(0.1)
    m = meter.result
    assert m.method == "nvml_power_sampling"
    assert m.duration_s >= 0.1
    assert m.energy_j == pytest.approx(150.0 * m.duration_s, rel=1e-9)  # over the sampled window
    assert nvml.open == 0  # NVML shut down again


def test_gpu_energy_counter_difference(tmp_path):
    nvml = FakeNvml(150.0, counter_step_mj=2500)
    with EnergyMeter("nvml_energy_counter", nvml_module=nvml, powercap_root=tmp_path) as meter:
        pass
    assert meter.result.method == "nvml_energy_counter"
    assert meter.result.energy_by_component_j == {"gpu": 2.5}


def test_measured_energy_sits_beside_the_modelled_figure(gpu, host, activity):
    report = assess(activity, gpu, host, CarbonConfig(grid="france", pue=1.2))
    measured = Measurement(method="rapl", duration_s=100.0, energy_j=report.it_energy_j / 2,
                           energy_by_component_j={"cpu": report.it_energy_j / 2})
    row = side_by_side(measured, report)
    assert row["modelled_energy_j"] == report.it_energy_j
    assert row["measured_over_modelled"] == pytest.approx(0.5)
    assert row["measured_operational_carbon_g"] == pytest.approx(
        report.it_energy_j / 2 * 1.2 / 3.6e6 * 56.039)
    none = side_by_side(Measurement(method="none", duration_s=1.0, energy_j=None), report)
    assert none["measured_energy_j"] is None and none["measured_over_modelled"] is None


def test_real_energy_imports_without_torch():
    code = "import sys, real.energy; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_codecarbon_offline_tracker_when_asked(tmp_path):
    pytest.importorskip("codecarbon")
    with EnergyMeter("codecarbon", use_nvml=False, sample_interval_s=0.5,
                     powercap_root=tmp_path) as meter:
        time.sleep(0.6)
    m = meter.result
    assert m.method == "codecarbon" and m.measurable
    assert set(m.energy_by_component_j) == {"cpu", "gpu", "ram"}
    assert "estimate" in m.note and "no GPU measured" in m.note
