"""real.validate's comparison of one configuration: the energy columns compare the simulator's
energy over the same components the real run's meter measured."""

import pytest

from real.validate import Case, compare, modelled_energy_j

MODEL = {"gpu": 100.0, "cpu": 20.0, "dram": 5.0, "ssd": 1.0, "pcie": 0.5, "facility": 50.0}
SIM = {"energy_j": 176.5, "energy_by_component_j": MODEL}


@pytest.mark.parametrize("measured, device, want_j, scope", [
    ({"gpu": 80.0}, "cuda", 100.0, "gpu"),  # NVML: the GPU alone
    ({"cpu": 90.0}, "cpu", 120.0, "cpu+gpu"),  # RAPL where the device is the host CPU
    ({"cpu": 15.0}, "cuda", 20.0, "cpu"),  # RAPL beside a GPU
    ({"gpu": 1.0, "cpu": 1.0, "ram": 1.0}, "cuda", 125.0, "cpu+dram+gpu"),  # codecarbon
    ({}, "cpu", 126.5, "all"),  # nothing measured: the hardware's, without the facility
    ({"fan": 3.0}, "cpu", 126.5, "all"),  # a component the simulator does not model
])
def test_the_simulated_energy_covers_what_was_measured(measured, device, want_j, scope):
    assert modelled_energy_j(SIM, measured, device) == (pytest.approx(want_j), scope)


def test_without_a_breakdown_the_total_is_compared():
    assert modelled_energy_j({"energy_j": 7.0}, {"gpu": 1.0}, "cuda") == (7.0, "all")


def _summary(tpot_s, energy=None):
    s = {"policy": "dense", "tpot_s": tpot_s, "ttft_s": 0.1, "tokens_per_s": 1 / tpot_s,
         "bytes_by_link": {"SSD_TO_DRAM": 0}, "hit_rate_by_tier": {"hbm": 1.0},
         "peak_bytes_by_tier": {"dram": 0}}
    if energy is not None:
        s["measured_energy"] = {"measured_method": "nvml_energy_counter",
                                "measured_energy_j": energy,
                                "measured_energy_by_component_j": {"gpu": energy}}
    return s


def test_a_row_compares_the_gpu_measured_with_the_gpu_modelled():
    sim = {**_summary(0.11), **SIM}
    row = compare(Case("dense", "d", ()), [_summary(0.1, 80.0), _summary(0.1, 120.0)], sim,
                  device="cuda")
    assert row["real_energy_j"] == pytest.approx(100.0) and row["sim_energy_j"] == 100.0
    assert row["energy_scope"] == "gpu" and row["err_energy"] == pytest.approx(0.0)
    assert row["err_tpot_ms"] == pytest.approx(0.1)
    assert row["energy_note"] == "nvml_energy_counter"


def test_unmeasured_energy_has_no_error_and_says_why():
    sim = {**_summary(0.1), **SIM}
    real = _summary(0.1)
    real["measured_energy"] = {"measured_note": "no readable RAPL counter"}
    row = compare(Case("dense", "d", ()), [real], sim)
    assert row["real_energy_j"] is None and row["err_energy"] is None
    assert row["sim_energy_j"] == pytest.approx(126.5) and row["energy_scope"] == "all"
    assert row["energy_note"] == "no readable RAPL counter"


def test_the_table_shows_measured_against_modelled_energy_or_why_not():
    import pandas as pd

    from experiments.validate_sim import energy_markdown

    rows = [compare(Case("dense", "d", ()), [_summary(0.1, 80.0)], {**_summary(0.1), **SIM},
                    device="cuda")]
    md = energy_markdown(pd.DataFrame(rows))
    assert "| dense | 80.0 | 100.0 | +25.0% | gpu | nvml_energy_counter |" in md
    assert "median 25.0%" in md
    real = _summary(0.1)
    real["measured_energy"] = {"measured_note": "no readable RAPL counter"}
    md = energy_markdown(pd.DataFrame([compare(Case("dense", "d", ()), [real],
                                               {**_summary(0.1), **SIM})]))
    assert "not measured (no readable RAPL counter)" in md
