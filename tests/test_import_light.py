"""Dependency boundaries, checked in fresh interpreters: the simulator never touches torch, and
the decision layer (policies, plans) never touches simpy.

An import hook records every *attempt* to import a watched package, so a guarded
``try: import torch`` counts as a violation too, not only a successful one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import REPO

WATCH = textwrap.dedent("""
    import json, sys
    WATCHED = {"torch", "simpy"}
    attempts = []

    class Watch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in WATCHED:
                attempts.append(name)
            return None

    sys.meta_path.insert(0, Watch())

    def report(**extra):
        loaded = sorted(m for m in WATCHED if m in sys.modules)
        print(json.dumps({"attempts": sorted(set(attempts)), "loaded": loaded, **extra}))
""")


def _run(body: str) -> dict:
    code = WATCH + textwrap.dedent(body)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_watch_hook_sees_imports():
    """The hook is not vacuous: importing simpy is seen and reported."""
    out = _run("import simpy\nreport()")
    assert "simpy" in out["attempts"] and out["loaded"] == ["simpy"]


def test_simulation_never_imports_torch():
    out = _run("""
        import m2sim, m2sim.policy.registry, m2sim.plan, m2sim.planner
        from hydra import compose, initialize_config_dir
        from omegaconf import OmegaConf
        from m2sim.config import register_configs
        from m2sim.sim.engine import simulate

        register_configs()
        with initialize_config_dir(config_dir=str(__import__("pathlib").Path("conf").resolve()),
                                   version_base="1.3"):
            dcfg = compose(config_name="config",
                           overrides=["policy=m2cache", "model=tiny", "workload=tiny",
                                      "sim.progress=false"])
        results = simulate(OmegaConf.to_object(dcfg))
        report(tokens_per_s=results.summary["tokens_per_s"])
    """)
    assert out["tokens_per_s"] > 0  # the simulation did run
    assert "torch" not in out["loaded"]
    assert not [m for m in out["attempts"] if m.startswith("torch")]


def test_decision_layer_never_imports_simpy_or_torch():
    out = _run("""
        import importlib, pkgutil
        import m2sim.policy
        names = sorted(m.name for m in pkgutil.iter_modules(m2sim.policy.__path__,
                                                            "m2sim.policy."))
        for name in names:
            importlib.import_module(name)
        import m2sim.plan
        report(modules=names)
    """)
    assert "m2sim.policy.registry" in out["modules"] and len(out["modules"]) >= 10
    assert out["attempts"] == [] and out["loaded"] == []
