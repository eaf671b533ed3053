"""Config composition: every option of every group composes, converts and builds a run; and one
test per OmegaConf feature the schemas rely on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, ValidationError

from m2sim.build import build_run
from m2sim.cli import to_config
from m2sim.config import M2SimConfig
from m2sim.errors import ConfigError
from m2sim.hardware import GIB, GPUConfig, HostConfig, SSDConfig
from m2sim.policy.all_in_dram import AllInDramConfig
from m2sim.policy.atu import ATUConfig
from m2sim.policy.bands import BandsConfig
from m2sim.policy.config import PolicyConfig
from m2sim.policy.hbm import HBMCacheConfig
from m2sim.policy.layer_lru import LayerLRUConfig
from m2sim.policy.layer_window import LayerWindowConfig
from m2sim.policy.lru import LRUConfig, WindowConfig
from m2sim.policy.neuron_window import NeuronWindowConfig
from m2sim.policy.placement import DenseMode
from m2sim.policy.preload import LayerLookaheadConfig, NeuronLookaheadConfig, OnDemandConfig
from m2sim.policy.registry import HBM_CACHES
from m2sim.policy.static_hot import StaticHotConfig
from m2sim.policy.streaming import ResidentConfig, StreamingConfig
from m2sim.specs import FFNKind, ModelConfig
from m2sim.trace import ReplayTraceConfig, SyntheticTrace, SyntheticTraceConfig, write_trace
from m2sim.types import Precision
from m2sim.workload import WorkloadConfig
from tests.conftest import CONF_DIR, TINY

# Options whose type is the point of choosing them (a config subclass per option).
SUBCLASS_OF_OPTION = {
    "policy/hbm_cache": {"atu": ATUConfig, "lru": LRUConfig, "window": WindowConfig,
                         "static_hot": StaticHotConfig, "streaming": StreamingConfig,
                         "resident": ResidentConfig},
    "policy/dram_cache": {"layer_window": LayerWindowConfig, "layer_lru": LayerLRUConfig,
                          "all_in_dram": AllInDramConfig, "neuron_window": NeuronWindowConfig},
    "policy/preload": {"layer_lookahead": LayerLookaheadConfig,
                       "neuron_lookahead": NeuronLookaheadConfig, "on_demand": OnDemandConfig},
    "trace": {"synthetic": SyntheticTraceConfig, "replay": ReplayTraceConfig},
}
# experiment/ holds global sweep configs (+experiment=NAME, tested in tests/experiments) and
# hydra/ launcher options; every other folder is a config group of M2SimConfig.
GROUPS = sorted(g for g in {str(p.parent.relative_to(CONF_DIR)) for p in CONF_DIR.rglob("*.yaml")}
                if g != "." and g.split("/")[0] not in ("experiment", "hydra"))
ROOT_DEFAULTS = {next(iter(d)) for d in OmegaConf.load(CONF_DIR / "config.yaml").defaults
                 if isinstance(d, DictConfig)}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


CASES = [(g, o) for g in GROUPS for o in _options(g)]


def test_every_group_and_option_is_covered():
    assert {"gpu", "host", "host/ssd", "model", "workload", "trace", "policy"} <= set(GROUPS)
    for group, table in SUBCLASS_OF_OPTION.items():
        assert set(_options(group)) == set(table), f"{group}: map each option to its schema"
    assert len(CASES) >= 50  # 10 GPUs, 4 hosts, 5 SSDs, 6 models, 3 workloads, 11 policies...


@pytest.fixture(scope="module")
def tiny_trace_file(tmp_path_factory, load_cfg) -> Path:
    """A recorded trace of the tiny model (what `trace=replay` reads)."""
    cfg = load_cfg(*TINY, "policy=m2cache")
    m = cfg.model
    src = SyntheticTrace(SyntheticTraceConfig(), num_layers=m.num_layers, d_ff=m.d_ff,
                         default_active_frac=m.active_frac,
                         default_overlap_frac=m.overlap_frac, seed=0)
    path = tmp_path_factory.mktemp("trace") / "tiny.m2trace"
    return write_trace(src, path, num_tokens=32, model=m.name, d_model=m.d_model)


def _overrides(group: str, option: str, trace_file: Path) -> list[str]:
    base = {"model": "tiny", "workload": "tiny", "policy": "m2cache"}
    extra = []
    if group in base:
        base[group] = option
    else:  # a group the root does not list yet is added, not overridden
        extra.append(f"{'' if group in ROOT_DEFAULTS or '/' in group else '+'}{group}={option}")
    if (group, option) == ("trace", "replay"):
        extra.append(f"trace.path={trace_file}")
    if (group, option) == ("policy/hbm_cache", "static_hot"):  # fills what dense weights leave
        extra.append("policy.placement.dense_first=true")
    return [f"{k}={v}" for k, v in base.items()] + extra


def _node(cfg: M2SimConfig, group: str):
    node = cfg
    for part in group.split("/"):
        node = getattr(node, part)
    return node


def _dictconfigs_in(obj, path="cfg"):
    """Paths of any DictConfig/ListConfig left in a converted config tree."""
    if isinstance(obj, (DictConfig, ListConfig)):
        return [path]
    if dataclasses.is_dataclass(obj):
        return [p for f in dataclasses.fields(obj)
                for p in _dictconfigs_in(getattr(obj, f.name), f"{path}.{f.name}")]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in _dictconfigs_in(v, f"{path}[{i}]")]
    return []


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_converts_and_builds(group, option, compose_dict, tiny_trace_file):
    dcfg = compose_dict(*_overrides(group, option, tiny_trace_file))
    cfg = OmegaConf.to_object(dcfg)

    assert type(cfg) is M2SimConfig
    assert _dictconfigs_in(cfg) == []
    node = _node(cfg, group)
    assert dataclasses.is_dataclass(node)
    if hasattr(node, "name"):
        assert node.name == option  # the file's `name` matches its option name
    if group in SUBCLASS_OF_OPTION:
        assert type(node) is SUBCLASS_OF_OPTION[group][option]
    run = build_run(cfg, cfg.policy)
    assert run.policy is cfg.policy
    assert run.num_layers == cfg.model.num_layers
    assert isinstance(run.hbm, HBM_CACHES[type(cfg.policy.hbm_cache)])
    assert all(v >= 0 for v in run.placement.hbm_bytes.values())
    assert sum(run.placement.hbm_bytes.values()) <= cfg.gpu.usable_bytes


# ---- one test per OmegaConf feature relied on ------------------------------------------------

def test_subclass_config_in_base_typed_field(load_cfg):
    hints = {f.name: f.type for f in dataclasses.fields(PolicyConfig)}
    assert hints["hbm_cache"] in (HBMCacheConfig, "HBMCacheConfig")
    lru = load_cfg(*TINY, "policy=m2cache", "policy/hbm_cache=lru",
                   "policy.hbm_cache.capacity_scale=2.0").policy.hbm_cache
    assert type(lru) is LRUConfig
    assert lru.capacity_scale == 2.0
    assert type(load_cfg(*TINY, "policy=m2cache").policy.hbm_cache) is ATUConfig


def test_subclass_trace_replaces_the_default_trace_type(load_cfg, tiny_trace_file):
    # The root's `trace` field is typed TraceConfig: a sibling subclass must merge in.
    cfg = load_cfg(*TINY, "policy=m2cache", "trace=replay", f"trace.path={tiny_trace_file}")
    assert type(cfg.trace) is ReplayTraceConfig
    assert cfg.trace.path == str(tiny_trace_file)
    assert type(load_cfg(*TINY, "policy=m2cache").trace) is SyntheticTraceConfig


def test_enums_by_name(load_cfg):
    cfg = load_cfg(*TINY, "policy=m2cache", "policy.placement.precision=INT8",
                   "policy.placement.mode=STREAMED", "model.ffn=PLAIN")
    assert cfg.policy.placement.precision is Precision.INT8
    assert cfg.policy.placement.mode is DenseMode.STREAMED
    assert cfg.model.ffn is FFNKind.PLAIN
    assert load_cfg(*TINY, "policy=powerinfer").policy.hbm_cache.precision is Precision.INT4


def test_enum_unknown_name_fails(compose_dict):
    with pytest.raises(ConfigCompositionException) as e:
        compose_dict(*TINY, "policy=m2cache", "policy.placement.precision=INT3")
    assert "INT8" in str(e.value.__cause__)  # names the allowed values


def test_bands_node_override_converts_to_its_schema(load_cfg):
    cfg = load_cfg(*TINY, "policy=m2cache",
                   "policy.bands={fp16_frac: 0.5, int8_frac: 0.5, int4_frac: 0.0}")
    assert type(cfg.policy.bands) is BandsConfig
    assert cfg.policy.bands.used == (Precision.FP16, Precision.INT8)
    assert load_cfg(*TINY, "policy=uniform_int4").policy.bands.used == (Precision.INT4,)


def test_post_init_validates_during_to_object(compose_dict):
    dcfg = compose_dict(*TINY, "policy=m2cache", "policy.bands.fp16_frac=0.5")
    with pytest.raises(ConfigError) as e:
        OmegaConf.to_object(dcfg)
    assert e.value.field == "policy.bands"


def test_cross_field_check_runs_on_the_root(compose_dict):
    # Look-ahead deeper than the (4-layer) model is checked with the model in hand.
    dcfg = compose_dict(*TINY, "policy=zero_infinity", "policy.hbm_cache.prefetch_layers=5")
    with pytest.raises(ConfigError) as e:
        OmegaConf.to_object(dcfg)
    assert e.value.field == "policy.hbm_cache.prefetch_layers"


def test_properties_convert_human_units(load_cfg):
    cfg = load_cfg(*TINY, "policy=m2cache", "gpu.memory_gib=10", "host.ssd.read_latency_us=50")
    assert cfg.gpu.memory_bytes == 10 * GIB
    assert cfg.host.ssd.read_latency_s == pytest.approx(50e-6)
    assert isinstance(cfg.gpu, GPUConfig) and isinstance(cfg.host, HostConfig)
    assert isinstance(cfg.host.ssd, SSDConfig) and isinstance(cfg.model, ModelConfig)
    assert isinstance(cfg.workload, WorkloadConfig)


def test_unknown_key_fails(compose_dict):
    with pytest.raises(ConfigCompositionException):
        compose_dict(*TINY, "policy=m2cache", "policy.bogus=1")
    with pytest.raises(ConfigCompositionException):
        compose_dict(*TINY, "policy=m2cache", "gpu.memory_gb=24")


def test_appended_unknown_key_fails_at_conversion(compose_dict):
    # `+key=...` bypasses struct mode and OmegaConf.to_object keeps extras as attributes;
    # the entry point's conversion must refuse them.
    dcfg = compose_dict(*TINY, "policy=m2cache", "+policy.bands.fp17_frac=1")
    with pytest.raises(ConfigError) as e:
        to_config(dcfg)
    assert e.value.field == "policy.bands.fp17_frac"
    assert "int8_frac" in str(e.value)  # lists the allowed keys


def test_missing_required_fields_fail(compose_dict):
    with pytest.raises(MissingMandatoryValue) as e:
        OmegaConf.to_object(compose_dict(*TINY, "policy=m2cache", "trace=replay"))
    assert e.value.full_key == "trace.path"
    with pytest.raises(MissingMandatoryValue) as e:
        OmegaConf.to_object(compose_dict(*TINY, "policy=m2cache", "gpu=base_gpu"))
    assert e.value.full_key.startswith("gpu.")
    with pytest.raises(ConfigError) as c:
        to_config(compose_dict(*TINY, "policy=m2cache", "trace=replay"))
    assert c.value.field == "trace.path"


def test_wrong_type_fails(compose_dict):
    with pytest.raises(ConfigCompositionException) as e:
        compose_dict(*TINY, "policy=m2cache", "workload.output_tokens=1.5")
    assert isinstance(e.value.__cause__, ValidationError)


def test_no_policy_means_compare(load_cfg):
    cfg = load_cfg(*TINY)
    assert cfg.policy is None
    assert type(cfg.compare) is list and "m2cache" in cfg.compare and "dense" in cfg.compare
    assert all((CONF_DIR / "policy" / f"{name}.yaml").is_file() for name in cfg.compare)


def test_two_composes_do_not_share_state(load_cfg):
    a = load_cfg(*TINY, "policy=m2cache", "gpu.memory_gib=10")
    b = load_cfg(*TINY, "policy=m2cache")
    assert a.gpu.memory_gib == 10 and b.gpu.memory_gib == 24
    assert a.policy is not b.policy and a.policy == b.policy


def test_tiny_cfg_builds_fresh_runs(tiny_cfg, rng):
    assert (tiny_cfg.model.name, tiny_cfg.workload.name, tiny_cfg.policy.name) == (
        "tiny", "tiny", "m2cache")
    a, b = build_run(tiny_cfg, tiny_cfg.policy), build_run(tiny_cfg, tiny_cfg.policy)
    assert a.hbm is not b.hbm and a.dram is not b.dram  # policies hold state: built per run
    assert a.placement == b.placement
    token, layer = int(rng.integers(0, 4)), int(rng.integers(0, tiny_cfg.model.num_layers))
    ids_a, ids_b = (r.predictor.predict(token, layer).ids.tolist() for r in (a, b))
    assert ids_a == ids_b and len(ids_a) > 0  # same seed, same trace
