"""Compose configs from conf/ for simulator tests."""

import pytest

from m2sim.compose import load_config


@pytest.fixture
def make_cfg():
    return load_config
