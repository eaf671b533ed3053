"""The profiler on the tiny model: it writes gpu/host/ssd/overheads configs with a profile
header that the simulator loads like any other, and the validation refuses them elsewhere."""

from pathlib import Path

import pytest

from m2sim.compose import load_config
from m2sim.errors import ConfigError
from m2sim.hardware import PROFILE_SCHEMA_VERSION
from m2sim.sim.engine import simulate
from real.profile import Options, machine_identity, profile
from real.tiny import save_tiny_llama
from real.validate import Setup, check_setup


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("profile")
    ckpt = save_tiny_llama(tmp / "ckpt")
    o = Options(model="tiny", name="tiny_here", checkpoint=str(ckpt), store=str(tmp / "store"),
                conf_dir=tmp / "conf", out_json=tmp / "profile.json", quick=True, tokens=2)
    _, paths = profile(o)
    return tmp / "conf", ckpt, tmp / "store"


def _load(conf: Path, *over: str):
    return load_config(f"hydra.searchpath=[file://{conf}]", "model=tiny", "workload=tiny",
                       "gpu=tiny_here", "host=tiny_here", "sim/overheads=tiny_here", *over)


def test_profile_writes_configs_the_simulator_loads(tiny_profile):
    conf, *_ = tiny_profile
    for sub in ("gpu", "host", "host/ssd", "sim/overheads"):
        assert (conf / sub / "tiny_here.yaml").is_file()
    cfg = _load(conf, "policy=m2cache")
    for node in (cfg.gpu, cfg.host, cfg.host.ssd, cfg.sim.overheads):
        h = node.profile
        assert h.schema_version == PROFILE_SCHEMA_VERSION and h.machine == machine_identity()
        assert h.shapes == (4, 64, 256, 4, 2, 512) and h.model == "tiny"
    assert cfg.gpu.is_host_cpu and cfg.gpu.memory_bandwidth_gb_per_s > 0
    assert cfg.host.gpu_link_gb_per_s > 0 and cfg.host.ssd.seq_read_gb_per_s > 0
    assert cfg.sim.overheads.attention_us >= 0 and not cfg.sim.overheads.staged_gather
    s = simulate(cfg).summary
    assert s["tpot_s"] > 0 and s["gpu"] == "tiny_here"


def test_validation_refuses_a_profile_of_another_machine_or_model(tiny_profile, tmp_path):
    conf, ckpt, store = tiny_profile
    good = Setup(model="tiny", profile="tiny_here", checkpoint=str(ckpt), store=str(store),
                 prompt_tokens=8, output_tokens=4, conf_dir=str(conf))
    check_setup(good)  # this machine, these shapes: fine
    # the same profile copied as if measured elsewhere
    other = tmp_path / "conf"
    for sub in ("gpu", "host", "host/ssd", "sim/overheads"):
        (other / sub).mkdir(parents=True)
        text = (conf / sub / "tiny_here.yaml").read_text()
        (other / sub / "tiny_here.yaml").write_text(
            text.replace(machine_identity(), "elsewhere | Other CPU | 64 CPUs | 512 GiB | none"))
    with pytest.raises(ConfigError, match="gpu.profile.machine"):
        check_setup(Setup(**{**good.__dict__, "conf_dir": str(other)}))
    with pytest.raises(ConfigError, match="gpu.profile.model"):
        check_setup(Setup(**{**good.__dict__, "model": "smollm2_135m"}))


def test_busy_s_counts_overlapping_reads_once():
    from real.profile_decodes import busy_s

    assert busy_s([]) == 0.0
    assert busy_s([(0.0, 1.0)]) == 1.0
    # overlapping, nested, touching, then a gap: [0, 3] and [4, 5]
    assert busy_s([(2.0, 3.0), (0.0, 2.0), (0.5, 1.0), (4.0, 5.0), (1.5, 2.5)]) == 4.0
