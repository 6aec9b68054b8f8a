"""The CLI's zones command: the store from the options, the legacy JSON file."""

from __future__ import annotations

from pathlib import Path

import pytest
from oslo_config import cfg

from conntrack_lib import opts
from conntrack_lib.testing import FakeConntrack
from conntrack_lib.zones import FileZoneStore, SQLiteZoneStore, ZoneAllocator
from tests.unit.test_cli import fake, run

__all__ = ["fake"]  # the fixture, shared with test_cli


def test_zones_reads_the_configured_store(fake: FakeConntrack, tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    path = tmp_path / "zones.db"
    ZoneAllocator((5, 9), store=SQLiteZoneStore(path)).allocate("port-a")
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf.set_override("zone_store_path", str(path), group=opts.GROUP)
    result = run(["zones", "-f", "json"], fake, conf=conf)
    assert result.code == 0, result.err
    assert result.json() == [{"key": "port-a", "zone": 5, "state": "allocated", "flows": 2}]


def test_zones_without_a_store_says_how_to_name_one(fake: FakeConntrack) -> None:
    result = run(["zones"], fake)
    assert result.code != 0
    assert len(result.err_lines) == 1 and "zone_store_path" in result.err


def test_zones_still_reads_a_file_store_document(fake: FakeConntrack, tmp_path: Path) -> None:
    path = tmp_path / "zones.json"
    with pytest.warns(DeprecationWarning):
        ZoneAllocator((5, 9), store=FileZoneStore(path)).allocate("port-b")
    result = run(["zones", "--store", str(path), "-f", "json"], fake)
    assert result.code == 0, result.err
    assert result.json() == [{"key": "port-b", "zone": 5, "state": "allocated", "flows": 2}]


def test_other_commands_never_open_the_configured_store(fake: FakeConntrack,
                                                        tmp_path: Path) -> None:
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf.set_override("zone_store_path", str(tmp_path / "absent" / "zones.db"),
                      group=opts.GROUP)
    result = run(["list", "-f", "json"], fake, conf=conf)
    assert result.code == 0, result.err
