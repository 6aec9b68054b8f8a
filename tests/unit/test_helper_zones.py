"""ConntrackHelper's zones on an SQLite store: many at once, from the options, recovered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from oslo_config import cfg

from conntrack_lib import exceptions, opts
from conntrack_lib.helper import ConntrackHelper
from conntrack_lib.testing import FakeConntrack
from conntrack_lib.zones import MemoryZoneStore, SQLiteZoneStore


def flow(sport: int, zone: int) -> dict[str, Any]:
    return {"proto": "tcp", "src": "10.0.0.1", "dst": "10.0.0.2", "sport": sport,
            "dport": 80, "state": "ESTABLISHED", "timeout": 600, "zone": zone}


def conf_with(**values: Any) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf([], default_config_files=[])
    for name, value in values.items():
        conf.set_override(name, value, group=opts.GROUP)
    return conf


@pytest.fixture
def private(tmp_path: Path) -> Path:
    tmp_path.chmod(0o700)
    return tmp_path


def test_allocate_zones_skips_zones_with_live_flows_and_no_owner(private: Path) -> None:
    fake = FakeConntrack()
    ConntrackHelper(executor=fake).create_entries([flow(1, 11), flow(2, 13)])
    helper = ConntrackHelper(executor=fake, zone_range=(10, 16),
                             zone_store=SQLiteZoneStore(private / "zones.db"))
    zones = helper.allocate_zones(["p1", "p2", "p3", "p1"])
    assert zones == {"p1": 10, "p2": 12, "p3": 14}
    assert helper.allocator.held() == frozenset({11, 13})
    with pytest.raises(exceptions.ZoneExhaustedError):
        helper.allocate_zones(["p4", "p5", "p6"])
    assert helper.zones() == {"p1": 10, "p2": 12, "p3": 14}
    # Held zones come back only once their flows are flushed.
    assert helper.flush_zone(11) == 1
    assert helper.allocate_zones(["p4", "p5", "p6"]) == {"p4": 15, "p5": 16, "p6": 11}


def test_allocate_zones_matches_allocate_zone_on_memory() -> None:
    one = ConntrackHelper(executor=FakeConntrack(), zone_range=(1, 50))
    many = ConntrackHelper(executor=FakeConntrack(), zone_range=(1, 50))
    keys = [f"port-{n}" for n in range(20)]
    assert many.allocate_zones(keys) == {key: one.allocate_zone(key) for key in keys}
    with pytest.raises(exceptions.InvalidArgumentError):
        many.allocate_zones(["ok", ""])


def test_the_option_names_the_default_store(private: Path) -> None:
    path = private / "zones.db"
    conf = conf_with(zone_store_path=str(path))
    first = ConntrackHelper(executor=FakeConntrack(), conf=conf)
    assert isinstance(first.allocator.store, SQLiteZoneStore)
    assert first.allocator.store.path == str(path)
    zone = first.allocate_zone("router-1")
    second = ConntrackHelper(executor=FakeConntrack(), conf=conf, batch_size=5,
                             exact_delete_backend="cli")
    assert second.get_zone("router-1") == zone


def test_without_the_option_the_store_is_in_memory(private: Path) -> None:
    helper = ConntrackHelper(executor=FakeConntrack(), conf=conf_with())
    assert isinstance(helper.allocator.store, MemoryZoneStore)
    explicit = SQLiteZoneStore(private / "mine.db")
    conf = conf_with(zone_store_path=str(private / "other.db"))
    helper = ConntrackHelper(executor=FakeConntrack(), conf=conf, zone_store=explicit)
    assert helper.allocator.store is explicit
    assert not (private / "other.db").exists()


def test_the_migration_option_imports_the_json_file(private: Path) -> None:
    from conntrack_lib.zones import FileZoneStore, ZoneAllocator

    document = private / "zones.json"
    with pytest.warns(DeprecationWarning):
        ZoneAllocator((1, 100), store=FileZoneStore(document)).allocate("legacy")
    conf = conf_with(zone_store_path=str(private / "zones.db"),
                     zone_store_migrate_from=str(document))
    helper = ConntrackHelper(executor=FakeConntrack(), conf=conf, zone_range=(1, 100))
    assert helper.zones() == {"legacy": 1}
    assert document.exists()


def test_an_unsafe_configured_store_is_refused_at_construction(tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    conf = conf_with(zone_store_path=str(tmp_path / "zones.db"))
    with pytest.raises(exceptions.ZoneStoreError, match="writable"):
        ConntrackHelper(executor=FakeConntrack(), conf=conf)
