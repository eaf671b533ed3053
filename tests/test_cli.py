"""The ``m2sim`` command's contract, through the real entry points in fresh processes."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import result_files, run_cli

SUMMARY_KEYS = {"policy", "model", "gpu", "host", "tokens_per_s", "decode_tokens_per_s", "ttft_s",
                "tpot_s", "bytes_by_link", "hit_rate_by_tier", "peak_bytes_by_tier"}
CONSOLE_SCRIPT = Path(sys.executable).parent / "m2sim"
SHORT = re.compile(r"needs ([\d.]+) (\w+), has (-?[\d.]+) (\w+) \(short by ([\d.]+) (\w+)\)")
UNIT = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _check_summary(s: dict, *, policy, model, gpu, host, output_tokens, gpu_gib):
    assert SUMMARY_KEYS <= set(s)
    assert (s["policy"], s["model"], s["gpu"], s["host"]) == (policy, model, gpu, host)
    assert s["output_tokens"] == output_tokens
    for k in ("tokens_per_s", "decode_tokens_per_s", "ttft_s", "tpot_s"):
        assert s[k] > 0, k
    assert s["decode_tokens_per_s"] == pytest.approx(1 / s["tpot_s"], rel=1e-3)  # batch 1
    assert set(s["bytes_by_link"]) == {"SSD_TO_DRAM", "DRAM_TO_HBM"}
    assert all(v >= 0 for v in s["bytes_by_link"].values())
    assert {"hbm", "dram"} <= set(s["hit_rate_by_tier"])
    assert all(0 <= v <= 1 for v in s["hit_rate_by_tier"].values())
    assert {"hbm", "dram", "ssd"} <= set(s["peak_bytes_by_tier"])
    assert 0 < s["peak_bytes_by_tier"]["hbm"] <= gpu_gib * 2**30


def test_single_policy_writes_summary(tmp_path):
    d = tmp_path / "run"
    r = run_cli("policy=m2cache", "model=tiny", "gpu=rtx3090", "host=paper_3090",
                "workload=tiny", "workload.output_tokens=5", f"hydra.run.dir={d}")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    _check_summary(_summary(d), policy="m2cache", model="tiny", gpu="rtx3090",
                   host="paper_3090", output_tokens=5, gpu_gib=24)
    assert "m2cache" in r.stdout and str(d) in r.stdout


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="console script not installed")
def test_console_script_runs_other_hardware(tmp_path):
    d = tmp_path / "run"
    r = run_cli("policy=zero_infinity", "model=tiny", "gpu=a100_40gb", "host=server_pcie4",
                "workload=tiny", "workload.output_tokens=3", f"hydra.run.dir={d}",
                exe=[str(CONSOLE_SCRIPT)], cwd=tmp_path)  # works outside the repo too
    assert r.returncode == 0, r.stderr
    _check_summary(_summary(d), policy="zero_infinity", model="tiny", gpu="a100_40gb",
                   host="server_pcie4", output_tokens=3, gpu_gib=40)
    # Streaming every weight copies the whole model over PCIe each token; dense does not.
    assert _summary(d)["bytes_by_link"]["DRAM_TO_HBM"] > 0


def test_output_tokens_change_the_answer(tmp_path):
    """The override reaches the simulation (more tokens, more bytes streamed)."""
    runs = {}
    for n in (2, 8):
        d = tmp_path / f"n{n}"
        r = run_cli("policy=zero_infinity", "model=tiny", "workload=tiny",
                    f"workload.output_tokens={n}", f"hydra.run.dir={d}")
        assert r.returncode == 0, r.stderr
        runs[n] = _summary(d)
    assert runs[8]["bytes_by_link"]["DRAM_TO_HBM"] > runs[2]["bytes_by_link"]["DRAM_TO_HBM"]


def _table_lines(stdout: str) -> list[str]:
    header = [i for i, line in enumerate(stdout.splitlines()) if line.split()[:2] ==
              ["policy", "tokens_per_s"]]
    assert len(header) == 1, stdout  # exactly one comparison table
    rows = []
    for line in stdout.splitlines()[header[0] + 1:]:
        if line.startswith(("carbon constants", "results:")):
            break  # the table ends where the constants it used are printed
        if line.strip():
            rows.append(line)
    return rows


def test_no_policy_compares_every_default_preset(tmp_path, load_cfg):
    presets = load_cfg("model=tiny", "workload=tiny").compare
    d = tmp_path / "cmp"
    r = run_cli("model=tiny", "workload=tiny", f"hydra.run.dir={d}")
    assert r.returncode == 0, r.stderr
    rows = _table_lines(r.stdout)
    assert [row.split()[0] for row in rows] == presets
    assert not any("cannot run" in row for row in rows)  # the tiny model fits everywhere
    table = pd.read_csv(d / "comparison.csv")
    assert list(table["policy"]) == presets
    assert (table["tokens_per_s"] > 0).all()
    for name in presets:  # each preset's own results
        assert _summary(d / name)["policy"] == name


def test_compare_row_says_why_a_baseline_cannot_run(tmp_path):
    # 0.7503 GiB with 0.75 reserved: the INT4 model fits, the FP16 one does not.
    d = tmp_path / "cmp"
    r = run_cli("model=tiny", "workload=tiny", "gpu.memory_gib=0.7503",
                "compare=[uniform_int4,dense,zero_infinity]", f"hydra.run.dir={d}")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    rows = {row.split()[0]: row for row in _table_lines(r.stdout)}
    assert list(rows) == ["uniform_int4", "dense", "zero_infinity"]
    assert "cannot run" in rows["dense"] and "does not fit in HBM" in rows["dense"]
    assert SHORT.search(rows["dense"])
    assert "cannot run" not in rows["uniform_int4"] + rows["zero_infinity"]
    table = pd.read_csv(d / "comparison.csv").set_index("policy")
    assert table.loc["uniform_int4", "tokens_per_s"] > 0
    assert pd.isna(table.loc["dense", "tokens_per_s"])
    assert not (d / "dense" / "summary.json").exists()


def _check_does_not_fit(r, run_dir: Path, what: str, tier: str):
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "Traceback" not in out
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr  # one clear line
    assert what in lines[0] and f"does not fit in {tier}" in lines[0]
    m = SHORT.search(lines[0])
    assert m, lines[0]
    need, have, short = (float(m[i]) * UNIT[m[i + 1]] for i in (1, 3, 5))
    assert short > 0
    assert need - have == pytest.approx(short, rel=0.01, abs=0.01 * UNIT[m[6]])
    assert result_files(run_dir) == []


def test_dense_model_larger_than_gpu_fails_in_one_line(tmp_path):
    d = tmp_path / "run"
    r = run_cli("policy=dense", "model=llama2_70b", "gpu=rtx3090", "workload=tiny",
                f"hydra.run.dir={d}")
    _check_does_not_fit(r, d, "FFN weights", "HBM")
    assert "GiB" in r.stderr


def test_small_shortfall_is_not_rounded_to_zero(tmp_path):
    d = tmp_path / "run"
    r = run_cli("policy=m2cache", "model=tiny", "workload=tiny", "host.ssd.capacity_gb=0.0001",
                f"hydra.run.dir={d}")
    _check_does_not_fit(r, d, "stored model", "SSD")
    assert "0.00 GiB" not in r.stderr
