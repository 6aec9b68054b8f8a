"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest
from oslo_config import cfg


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    """Return a fresh oslo.config object that read no file and no argument."""
    conf = cfg.ConfigOpts()
    conf([], default_config_files=[])
    return conf
