"""Measured energy of a real run, to be written next to the carbon model's figure.

``with EnergyMeter() as meter: run()`` then ``meter.result`` (a ``Measurement``). Methods, best
first (``method="auto"``): codecarbon's offline tracker where the GPU has an NVML energy counter
(Volta and newer); NVML power sampling integrated over time where it has none (M40/P40/P100:
codecarbon reads no GPU energy there); RAPL package energy (/sys/class/powercap) on a CPU-only
machine; otherwise a 'not measurable here' result. Joules throughout. Imports no torch; pynvml
(nvidia-ml-py) and codecarbon are optional and imported only when used.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from m2sim.carbon.report import CarbonReport

METHODS = ("auto", "codecarbon", "nvml_energy_counter", "nvml_power_sampling", "rapl")
POWERCAP = Path("/sys/class/powercap")
J_PER_KWH = 3.6e6


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """What a meter read over one run; ``energy_j`` is None where nothing could be measured."""

    method: str  # one of METHODS but "auto", or "none"
    duration_s: float
    energy_j: Optional[float]
    energy_by_component_j: dict[str, float] = field(default_factory=dict)
    note: str = ""  # what was measured, what was estimated, or why nothing was

    @property
    def measurable(self) -> bool:
        return self.energy_j is not None

    def to_summary(self) -> dict[str, Any]:
        return {"measured_method": self.method, "measured_duration_s": self.duration_s,
                "measured_energy_j": self.energy_j,
                "measured_energy_by_component_j": dict(self.energy_by_component_j),
                "measured_note": self.note}


def integrate_power_j(times_s: Sequence[float], powers_w: Sequence[float]) -> float:
    """Trapezoid integral of sampled power over time (J)."""
    if len(times_s) != len(powers_w):
        raise ValueError(f"{len(times_s)} times but {len(powers_w)} power samples")
    return sum((t1 - t0) * (p0 + p1) / 2.0 for t0, t1, p0, p1
               in zip(times_s, times_s[1:], powers_w, powers_w[1:]))


class Rapl:
    """Package energy counters of /sys/class/powercap (``*-rapl:N``), with wrap-around."""

    def __init__(self, root: Path = POWERCAP):
        self.root = root
        self._start: dict[Path, int] = {}

    def domains(self) -> list[Path]:
        """Package zones only: core/uncore subzones are inside them, psys would count them
        twice; DRAM subzones are left out (not every machine has one)."""
        zones = (p for p in self.root.glob("*-rapl:*") if p.name.count(":") == 1)
        return sorted(p for p in zones
                      if not (p / "name").exists() or _read_text(p / "name").startswith("package"))

    def readable(self) -> bool:
        domains = self.domains()
        try:
            for d in domains:
                _read_int(d / "energy_uj")
        except (OSError, ValueError):  # root-only since the PLATYPUS fix (CVE-2020-8694)
            return False
        return bool(domains)

    def start(self) -> None:
        self._start = {d: _read_int(d / "energy_uj") for d in self.domains()}

    def stop_j(self) -> float:
        total_uj = 0
        for d, e0 in self._start.items():
            e1 = _read_int(d / "energy_uj")
            if e1 < e0:  # the counter wrapped once
                e1 += _read_int(d / "max_energy_range_uj")
            total_uj += e1 - e0
        return total_uj * 1e-6


class NvmlPowerSampler:
    """Samples one GPU's board power (nvmlDeviceGetPowerUsage, mW) on a thread."""

    def __init__(self, nvml: Any, handle: Any, interval_s: float, clock=time.monotonic):
        self._nvml, self._handle, self._interval_s, self._clock = nvml, handle, interval_s, clock
        self.times_s: list[float] = []
        self.powers_w: list[float] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _sample(self) -> None:
        self.powers_w.append(self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0)
        self.times_s.append(self._clock())

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def start(self) -> None:
        self._sample()  # the first sample marks the start
        self._thread = threading.Thread(target=self._loop, name="nvml-power", daemon=True)
        self._thread.start()

    def stop_j(self) -> float:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()  # the last sample marks the end
        return integrate_power_j(self.times_s, self.powers_w)


class EnergyMeter:
    """Context manager measuring the energy of the code inside it; see the module docstring.

    Args:
        method: one of METHODS; "auto" picks the best that works here.
        gpu_index: the NVML index of the GPU to measure.
        sample_interval_s: NVML power sampling period (and codecarbon's measure_power_secs).
        country_iso_code: for codecarbon's offline tracker (its carbon figure is not used).
        use_nvml: False: never touch NVML (CPU-only runs, tests).
        nvml_module: an NVML binding to use instead of importing ``pynvml`` (tests).
    """

    def __init__(self, method: str = "auto", *, gpu_index: int = 0,
                 sample_interval_s: float = 0.1, country_iso_code: str = "USA",
                 powercap_root: Path = POWERCAP, use_nvml: bool = True,
                 nvml_module: Any = None, clock=time.monotonic):
        if method not in METHODS:
            raise ValueError(f"method {method!r} (allowed: {', '.join(METHODS)})")
        if sample_interval_s <= 0:
            raise ValueError(f"sample_interval_s must be > 0, got {sample_interval_s}")
        self.method, self.gpu_index, self.interval_s = method, gpu_index, sample_interval_s
        self.country_iso_code, self.use_nvml = country_iso_code, use_nvml
        self._nvml, self._clock, self._rapl = nvml_module, clock, Rapl(powercap_root)
        self.result: Optional[Measurement] = None

    def __enter__(self) -> EnergyMeter:
        self._handle, why_no_gpu = self._open_nvml()
        self._chosen, self._why = self._choose(why_no_gpu)
        self._cpu_rapl = self._chosen.startswith("nvml") and self._rapl.readable()
        if self._chosen == "codecarbon":
            self._tracker = self._codecarbon_tracker()  # slow to build: before the clock starts
            self._tracker.start()
        elif self._chosen == "nvml_energy_counter":
            self._e0_mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        elif self._chosen == "nvml_power_sampling":
            self._sampler = NvmlPowerSampler(self._nvml, self._handle, self.interval_s,
                                             self._clock)
            self._sampler.start()
        if self._chosen == "rapl" or self._cpu_rapl:
            self._rapl.start()
        self._t0 = self._clock()
        return self

    def __exit__(self, *exc: object) -> None:
        duration_s = self._clock() - self._t0
        by: dict[str, float] = {}
        note = self._why
        if self._chosen == "codecarbon":
            self._tracker.stop()
            d = self._tracker.final_emissions_data
            by = {"cpu": d.cpu_energy * J_PER_KWH, "gpu": d.gpu_energy * J_PER_KWH,
                  "ram": d.ram_energy * J_PER_KWH}
            gpu = ("GPU from the NVML energy counter" if self._handle is not None
                   else "no GPU measured")
            note = (f"codecarbon offline tracker: {gpu}; RAM is codecarbon's estimate; CPU from "
                    f"RAPL where readable, else codecarbon's TDP estimate")
        elif self._chosen == "nvml_energy_counter":
            e1_mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            by = {"gpu": (e1_mj - self._e0_mj) / 1000.0}
        elif self._chosen == "nvml_power_sampling":
            by = {"gpu": self._sampler.stop_j()}
            duration_s = self._sampler.times_s[-1] - self._sampler.times_s[0]  # the window
            note += f"; {len(self._sampler.times_s)} samples every {self.interval_s} s"
        if self._chosen == "rapl" or self._cpu_rapl:
            by["cpu"] = self._rapl.stop_j()
            note += "; CPU package energy from RAPL" if self._cpu_rapl else ""
        if self._handle is not None and self.use_nvml:
            self._nvml.nvmlShutdown()
        energy = sum(by.values()) if self._chosen != "none" else None
        self.result = Measurement(method=self._chosen, duration_s=duration_s, energy_j=energy,
                                  energy_by_component_j=by, note=note.lstrip("; "))

    def _open_nvml(self) -> tuple[Any, str]:
        """An NVML handle for the GPU, or None and why not."""
        if not self.use_nvml:
            return None, "NVML not used"
        try:
            if self._nvml is None:
                import pynvml  # nvidia-ml-py
                self._nvml = pynvml
            self._nvml.nvmlInit()
        except Exception as e:  # no package, no driver, no GPU
            return None, f"no NVML GPU ({type(e).__name__}: {e})"
        try:
            return self._nvml.nvmlDeviceGetHandleByIndex(self.gpu_index), ""
        except Exception as e:
            self._nvml.nvmlShutdown()
            return None, f"no NVML GPU {self.gpu_index} ({e})"

    def _has_energy_counter(self) -> bool:
        try:  # Volta and newer; NotSupported on M40/P40/P100
            self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            return True
        except Exception:
            return False

    def _choose(self, why_no_gpu: str) -> tuple[str, str]:
        """The method to use and a note; 'none' with the reason when nothing works here."""
        want = self.method
        gpu = self._handle is not None
        counter = gpu and self._has_energy_counter()
        if want == "auto":
            if gpu:
                if counter:
                    return ("codecarbon", "") if _has_codecarbon() else (
                        "nvml_energy_counter", "NVML energy counter (codecarbon not installed)")
                return "nvml_power_sampling", "GPU has no energy counter: NVML power sampling"
            if self._rapl.readable():
                return "rapl", "CPU-only: RAPL package energy (DRAM and other parts not measured)"
            return "none", (f"not measurable here: {why_no_gpu}, and no readable RAPL counter "
                            f"under {POWERCAP}")
        why_not = {
            "codecarbon": None if _has_codecarbon() else "codecarbon is not installed",
            "nvml_energy_counter": None if counter else why_no_gpu or "the GPU has no counter",
            "nvml_power_sampling": None if gpu else why_no_gpu,
            "rapl": None if self._rapl.readable() else
            f"no readable RAPL counter under {self._rapl.root}"}[want]
        if why_not is not None:
            return "none", f"not measurable here: method {want!r} is unavailable ({why_not})"
        return want, f"method {want!r} as asked"

    def _codecarbon_tracker(self) -> Any:
        from codecarbon import OfflineEmissionsTracker
        kw = dict(country_iso_code=self.country_iso_code, log_level="error",
                  measure_power_secs=self.interval_s, tracking_mode="machine",
                  gpu_ids=[self.gpu_index] if self._handle is not None else None,
                  allow_multiple_runs=True)
        try:  # codecarbon >= 3.3: no output at all; older ones: no emissions.csv
            return OfflineEmissionsTracker(output_methods=[], **kw)
        except TypeError:
            return OfflineEmissionsTracker(save_to_file=False, **kw)


def side_by_side(measured: Measurement,
                 modelled: Optional[CarbonReport] = None) -> dict[str, Any]:
    """The measurement beside the model's figure; measured carbon uses the model's PUE and grid."""
    out = measured.to_summary()
    if modelled is None:
        return out
    out["modelled_energy_j"] = modelled.it_energy_j  # at the hardware, without facility overhead
    out["measured_over_modelled"] = (measured.energy_j / modelled.it_energy_j
                                     if measured.energy_j is not None and modelled.it_energy_j
                                     else None)
    consts = modelled.constants_used
    if measured.energy_j is not None and "grid_g_per_kwh" in consts and "pue" in consts:
        out["measured_operational_carbon_g"] = (measured.energy_j * consts["pue"].value
                                                / J_PER_KWH * consts["grid_g_per_kwh"].value)
    return out


def write_side_by_side(path: str | Path, measured: Measurement,
                       modelled: Optional[CarbonReport] = None) -> Path:
    """Write ``side_by_side`` as JSON (e.g. ``energy.json`` beside ``summary.json``)."""
    p = Path(path)
    p.write_text(json.dumps(side_by_side(measured, modelled), indent=2))
    return p


def _has_codecarbon() -> bool:
    try:
        import codecarbon  # noqa: F401
    except Exception:
        return False
    return True


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())
