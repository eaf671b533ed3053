"""The tiny random store every tier test reads."""

from __future__ import annotations

import pytest

from real.store import Store, convert_store
from tests.real.tiers.common import tiny_weights


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return convert_store(tiny_weights(), tmp_path_factory.mktemp("tiers") / "store")
