"""Bad input around machine profiles: an older profile schema, a profile of another machine or
of other model shapes is refused with one line naming the field (never used silently)."""

import dataclasses

import pytest
from omegaconf import OmegaConf

from m2sim.errors import ConfigError
from m2sim.hardware import PROFILE_SCHEMA_VERSION, ProfileHeader, check_profile

HERE = "vm | Some CPU | 2 CPUs | 24 GiB | no accelerator"


def _header(**kw) -> ProfileHeader:
    base = dict(schema_version=PROFILE_SCHEMA_VERSION, machine=HERE, date="2026-01-01T00:00:00",
                model="tiny", num_layers=4, d_model=64, d_ff=256, num_heads=4, num_kv_heads=2,
                vocab_size=512)
    return ProfileHeader(**{**base, **kw})


def test_an_older_profile_schema_is_refused():
    with pytest.raises(ConfigError, match="profile.schema_version.*real.profile"):
        _header(schema_version=PROFILE_SCHEMA_VERSION - 1)


def test_an_older_profile_schema_is_refused_when_a_config_loads(load_cfg, tmp_path):
    """A profile YAML written by an older profiler (as ``real.profile`` writes them)."""
    old = OmegaConf.to_container(OmegaConf.structured(_header()))
    old["schema_version"] = PROFILE_SCHEMA_VERSION - 1
    gpu = dataclasses.asdict(load_cfg("gpu=t4").gpu)
    gpu.update(name="old_profile", profile=old)
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "old_profile.yaml").write_text(
        "defaults:\n  - base_gpu\n  - _self_\n" + OmegaConf.to_yaml(OmegaConf.create(gpu)))
    with pytest.raises(ConfigError, match="profile.schema_version"):
        load_cfg(f"hydra.searchpath=[file://{tmp_path}]", "model=tiny", "workload=tiny",
                 "gpu=old_profile")


def test_a_profile_of_another_machine_is_refused(load_cfg):
    model = load_cfg("model=tiny", "workload=tiny").model
    check_profile(_header(), field="gpu", machine=HERE, model=model)  # this machine: fine
    with pytest.raises(ConfigError, match="gpu.profile.machine: .*measured on"):
        check_profile(_header(machine="other | CPU | 64 CPUs"), field="gpu", machine=HERE)


def test_a_profile_of_other_model_shapes_is_refused(load_cfg):
    model = load_cfg("model=smollm2_135m", "workload=tiny").model
    with pytest.raises(ConfigError, match="host.profile.model: measured at tiny shapes"):
        check_profile(_header(), field="host", machine=HERE, model=model)


def test_a_config_without_a_profile_is_refused_where_one_is_needed(load_cfg):
    cfg = load_cfg("model=tiny", "workload=tiny")
    with pytest.raises(ConfigError, match="gpu.profile: is missing"):
        check_profile(cfg.gpu.profile, field="gpu", machine=HERE)
    assert dataclasses.asdict(_header())["schema_version"] == PROFILE_SCHEMA_VERSION
