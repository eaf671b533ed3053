"""The sim-to-real validation end to end on the tiny model: profile this machine, record a
trace, run every configuration on the real backend and in the simulator, write the table.
Timings are not asserted (CI machines are noisy); the table's columns and the exact agreement
of bytes and hit rates are."""

import dataclasses
import json

import pytest

pytest.importorskip("torch")

from experiments.validate_sim import cases, validate  # noqa: E402
from m2sim.compose import load_config  # noqa: E402
from real.profile import Options, profile  # noqa: E402
from real.tiny import save_tiny_llama  # noqa: E402
from real.validate import Setup  # noqa: E402

COLUMNS = ["config", "what", "policy", "repeats",
           *[f"{side}_{m}" for m in ("tpot_ms", "ttft_ms", "tokens_per_s") for side in
             ("real", "sim")],
           "err_tpot_ms", "err_ttft_ms", "err_tokens_per_s", "real_tpot_ms_min", "real_tpot_ms_max",
           "real_bytes_SSD_TO_DRAM", "sim_bytes_SSD_TO_DRAM", "real_bytes_DRAM_TO_HBM",
           "sim_bytes_DRAM_TO_HBM", "real_hit_hbm", "sim_hit_hbm", "real_hit_dram",
           "sim_hit_dram", "bytes_match", "hits_match", "real_energy_j", "sim_energy_j",
           "energy_scope", "energy_note"]


def test_validation_table_on_the_tiny_model(tmp_path):
    ckpt = save_tiny_llama(tmp_path / "ckpt")
    store = tmp_path / "store"
    profile(Options(model="tiny", name="tiny_ci", checkpoint=str(ckpt), store=str(store),
                    conf_dir=tmp_path / "conf", out_json=tmp_path / "p.json", quick=True,
                    tokens=2))
    s = Setup(model="tiny", profile="tiny_ci", checkpoint=str(ckpt), store=str(store),
              prompt_tokens=8, output_tokens=5, conf_dir=str(tmp_path / "conf"))
    df = validate(s, tmp_path / "out", repeats=1)
    assert len(df) == len(cases("tiny")) >= 8
    assert set(COLUMNS) <= set(df.columns)
    assert df.bytes_match.all() and df.hits_match.all()
    assert (df.real_tpot_ms > 0).all() and (df.sim_tpot_ms > 0).all()
    assert (df.sim_bytes_SSD_TO_DRAM > 0).any()  # some configurations read from SSD
    md = (tmp_path / "out" / "validate_sim.md").read_text()
    assert "TPOT err" in md and f"{len(df)} configurations" in md
    assert (tmp_path / "out" / "validate_sim.csv").is_file()


def _interleaved_setup(tmp_path, name: str) -> tuple[Setup, Options]:
    """The tiny model's validation setup and the quick profile options it interleaves."""
    ckpt = save_tiny_llama(tmp_path / "ckpt")
    store, conf = tmp_path / "store", tmp_path / "conf"
    s = Setup(model="tiny", profile=name, checkpoint=str(ckpt), store=str(store),
              prompt_tokens=8, output_tokens=4, conf_dir=str(conf))
    o = Options(model="tiny", name=name, checkpoint=str(ckpt), store=str(store),
                conf_dir=conf, out_json=tmp_path / "p.json", quick=True, tokens=2)
    return s, o


def test_interleaved_profile_samples_every_repeat(tmp_path):
    """--interleave-profile: no profile beforehand; one pass before each repeat, all fitted."""
    s, o = _interleaved_setup(tmp_path, "tiny_inter")
    conf = o.conf_dir
    df = validate(s, tmp_path / "out", repeats=2, only=["m2cache_dram", "dense"], interleave=o)
    assert list(df.config) == ["m2cache_dram", "dense"] and (df.repeats == 2).all()
    assert df.bytes_match.all() and df.hits_match.all()
    saved = json.loads((tmp_path / "p.json").read_text())
    assert len(saved["measurements"]["contention"]) == 2  # one row per pass, both fitted
    assert len(saved["measurements"]["ssd_beside"]) == 4  # the reader alone before and after
    # the layers read queued: 4 precision sets per pass and before every real run, one at a
    # time once per pass
    assert len(saved["measurements"]["ssd_layer"]) == 4 * (2 + 4)
    assert len(saved["measurements"]["ssd_lone"]) == 4 * 2
    assert len(saved["measurements"]["layer_host_dense"]) == 2  # a dense decode per pass
    # the ops: once per pass (2) and once before every real run (2 repeats x 2 configurations),
    # each over o.tokens decode steps of every layer
    layers = load_config("model=tiny").model.num_layers
    assert len(saved["measurements"]["attention"]) == (2 + 4) * o.tokens * layers
    assert (conf / "sim" / "overheads" / "tiny_inter.yaml").is_file()
    _pool_twice(tmp_path, s, o)


def _pool_twice(tmp_path, s, o):
    """experiments/pool_validations.py: two runs (here the same one twice) pool into one table
    of every repeat; a run of another machine is refused, naming the field."""
    import shutil

    from experiments.pool_validations import pool
    from m2sim.errors import M2SimError

    run = tmp_path / "out"
    shutil.copy(o.out_json, run / f"profile_{s.profile}.json")
    pooled = dataclasses.replace(s, conf_dir=str(tmp_path / "pooled_conf"))
    df = pool([run, run], pooled, run / "trace.m2trace", tmp_path / "pooled")
    assert list(df.config) == ["m2cache_dram", "dense"] and (df.repeats == 4).all()
    assert df.bytes_match.all() and df.hits_match.all()
    assert (tmp_path / "pooled" / "validate_sim.md").is_file()
    other = tmp_path / "other"
    shutil.copytree(run, other)
    saved = json.loads((other / f"profile_{s.profile}.json").read_text())
    saved["header"]["machine"] = "another box"
    (other / f"profile_{s.profile}.json").write_text(json.dumps(saved))
    with pytest.raises(M2SimError, match="profile.machine"):
        pool([run, other], pooled, run / "trace.m2trace", tmp_path / "pooled2")
    with pytest.raises(M2SimError, match="real_runs.json"):
        pool([run, tmp_path], pooled, run / "trace.m2trace", tmp_path / "pooled3")


def test_a_pass_before_every_nth_repeat_and_the_real_runs_kept_as_they_come(tmp_path):
    """--profile-every 2: of two repeats only the first has a profiling pass before it (the
    ops still before every real run); real_runs.json holds every repeat."""
    s, o = _interleaved_setup(tmp_path, "tiny_every")
    df = validate(s, tmp_path / "out", repeats=2, only=["dense"], interleave=o, profile_every=2)
    assert (df.repeats == 2).all() and df.bytes_match.all() and df.hits_match.all()
    saved = json.loads((tmp_path / "p.json").read_text())["measurements"]
    assert len(saved["layer_host_dense"]) == 1  # one pass
    layers = load_config("model=tiny").model.num_layers
    assert len(saved["attention"]) == (1 + 2) * o.tokens * layers  # the pass, 2 real runs
    assert len(json.loads((tmp_path / "out" / "real_runs.json").read_text())["dense"]) == 2


@pytest.mark.parametrize("kw, field", [({"repeats": 0}, "repeats"),
                                       ({"repeats": 1, "profile_every": 0}, "profile_every")])
def test_bad_repeats_or_pass_spacing_is_refused_naming_it(tmp_path, kw, field):
    s = Setup(model="tiny", profile="p", checkpoint=None, store=str(tmp_path / "s"),
              prompt_tokens=8, output_tokens=4)
    with pytest.raises(ValueError, match=field):
        validate(s, tmp_path / "out", **kw)
