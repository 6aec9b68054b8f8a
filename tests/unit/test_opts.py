"""Unit tests of conntrack_lib.opts."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest
from oslo_config import cfg

from conntrack_lib import constants, opts

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def conf() -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf([], default_config_files=[])
    return conf


def test_defaults(conf: cfg.ConfigOpts) -> None:
    group = conf[opts.GROUP]
    assert group.conntrack_binary == constants.CONNTRACK_BINARY
    assert group.command_timeout == 60.0
    assert group.retries == 2
    assert group.chunk_size == opts.DEFAULT_CHUNK_SIZE == 4 * 1024 * 1024
    assert group.batch_size == 1000
    assert group.exact_delete_backend == "auto"
    assert group.zone_store_path is None
    assert group.zone_store_migrate_from is None


def test_privsep_options_live_in_the_context_section(conf: cfg.ConfigOpts) -> None:
    section = conf[opts.PRIVSEP_SECTION]
    assert section.helper_command is None
    assert section.thread_pool_size >= 1


def test_section_name_matches_the_privsep_context() -> None:
    from conntrack_lib import privileged

    assert opts.PRIVSEP_SECTION == privileged.PRIVSEP_SECTION
    assert privileged.default.cfg_section == opts.PRIVSEP_SECTION


def test_registering_twice_is_harmless(conf: cfg.ConfigOpts) -> None:
    opts.register_opts(conf)
    assert conf[opts.GROUP].retries == 2


@pytest.mark.parametrize(("name", "value"), [
    ("exact_delete_backend", "magic"),
    ("retries", -1),
    ("chunk_size", 0),
    ("chunk_size", opts.MAX_CHUNK_SIZE + 1),
    ("command_timeout", 0.0),
    ("batch_size", 0),
])
def test_bad_values_are_refused(conf: cfg.ConfigOpts, name: str, value: object) -> None:
    with pytest.raises(ValueError):
        conf.set_override(name, value, group=opts.GROUP)


def test_config_file_values_are_read(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "agent.conf"
    path.write_text("[conntrack_lib]\nconntrack_binary = /opt/ct/conntrack\nretries = 0\n"
                    "[conntrack_lib_privileged]\nhelper_command = sudo privsep-helper\n")
    conf = cfg.ConfigOpts()
    opts.register_opts(conf)
    conf(["--config-file", str(path)], default_config_files=[])
    assert conf[opts.GROUP].conntrack_binary == "/opt/ct/conntrack"
    assert conf[opts.GROUP].retries == 0
    assert conf[opts.PRIVSEP_SECTION].helper_command == "sudo privsep-helper"


def test_list_opts_names_every_option() -> None:
    listed = dict(opts.list_opts())
    assert set(listed) == {opts.GROUP, opts.PRIVSEP_SECTION}
    assert {o.name for o in listed[opts.GROUP]} == {
        "conntrack_binary", "command_timeout", "retries", "chunk_size", "batch_size",
        "exact_delete_backend", "zone_store_path", "zone_store_migrate_from"}
    assert "helper_command" in {o.name for o in listed[opts.PRIVSEP_SECTION]}
    # Copies, so a generator run cannot alter the registered options.
    assert all(a is not b for a, b in zip(listed[opts.GROUP], opts.OPTS, strict=True))


def test_every_option_has_help() -> None:
    for _group, options in opts.list_opts():
        assert all(option.help for option in options)


def test_importing_registers_nothing() -> None:
    code = ("import conntrack_lib, conntrack_lib.opts, conntrack_lib.executor; "
            "from oslo_config import cfg; "
            "print('conntrack_lib' in cfg.CONF, 'conntrack_lib_privileged' in cfg.CONF)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "False"]
