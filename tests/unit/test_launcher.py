"""One process launcher and one summary parser serve every executor path.

``execute`` and ``iter_lines`` start conntrack through ``netns.launch`` and
read the "N flow entries" line through ``parser.summary``: a binary that
cannot run gives the same typed error on both, and hostile digit runs cost
a linear scan on both.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from oslo_config import cfg

from conntrack_lib import commands, executor, netns, parser
from conntrack_lib import exceptions as exc

LIST = commands.ListCommand()
DELETE = commands.DeleteCommand(zone=7)


@pytest.fixture
def not_executable(tmp_path: Path) -> str:
    binary = tmp_path / "conntrack"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o644)
    return str(binary)


def test_launch_reports_a_missing_binary_as_exit_127(tmp_path: Path) -> None:
    out = netns.launch([str(tmp_path / "absent")])
    assert isinstance(out, netns.ProcessOutput)
    assert out.exit_code == netns.EXIT_NOT_FOUND


def test_launch_reports_a_binary_it_cannot_run_as_exit_126(not_executable: str) -> None:
    if Path(not_executable).stat().st_mode & 0o111:  # pragma: no cover - odd filesystem
        pytest.skip("the filesystem ignores modes")
    out = netns.launch([not_executable])
    assert isinstance(out, netns.ProcessOutput)
    assert out.exit_code == netns.EXIT_CANNOT_EXECUTE
    assert not_executable in out.stderr


@pytest.mark.parametrize("missing", [False, True], ids=["not-executable", "missing"])
def test_execute_and_iter_lines_map_a_bad_binary_alike(conf: cfg.ConfigOpts, tmp_path: Path,
                                                      not_executable: str,
                                                      missing: bool) -> None:
    binary = str(tmp_path / "absent") if missing else not_executable
    run = executor.ProcessExecutor(binary=binary, conf=conf)
    with pytest.raises(exc.ConntrackUnavailableError) as executed:
        run.execute(LIST)
    with pytest.raises(exc.ConntrackUnavailableError) as streamed:
        list(run.iter_lines(LIST))
    assert executed.value.exit_code == streamed.value.exit_code


def test_line_stream_reports_a_binary_it_cannot_run(not_executable: str) -> None:
    stream = netns.LineStream([not_executable], timeout=5)
    assert list(stream) == []
    assert stream.exit_code == netns.EXIT_CANNOT_EXECUTE


HOSTILE = "1" * 16_000 + " flow entries have been deleted.\n"


def test_a_long_digit_run_in_stderr_costs_milliseconds() -> None:
    # The executor used a pattern of its own whose unbounded \d+ rescanned
    # the run from every start: about 2.4 s for these 16,000 digits.
    started = time.perf_counter()
    with pytest.raises(exc.CommandError):
        executor.interpret(("conntrack", "-D"), 1, "", HOSTILE, DELETE)
    assert time.perf_counter() - started < 0.2


def test_executor_and_parser_read_the_same_summary() -> None:
    stderr = "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.\n"
    result = executor.interpret(("conntrack", "-D"), 0, "", stderr, DELETE)
    assert result.count == parser.summary_count(stderr, "deleted") == 3
    assert parser.parse_summary(stderr) == (3, "deleted")
    zero = stderr.replace("3 flow", "0 flow")
    assert executor.interpret(("conntrack", "-D"), 1, "", zero, DELETE).count == 0


def test_summary_count_tells_events_from_entries() -> None:
    stderr = "2 flow events have been shown.\n5 flow entries have been shown.\n"
    assert parser.summary_count(stderr, "shown", noun="flow events") == 2
    assert parser.summary_count(stderr, "shown") == 5
    assert parser.summary_count(stderr, "deleted") is None
    assert parser.summary_count(HOSTILE, "deleted") is None


@pytest.mark.parametrize(("asked", "expected"), [(None, 64 * 1024),
                                                 (netns.LISTING_PIPE, netns.LISTING_PIPE)])
def test_launch_grows_the_stdout_pipe_when_asked(asked: int | None, expected: int) -> None:
    import fcntl

    proc = netns.launch(["/bin/sleep", "5"], pipe_size=asked)
    assert not isinstance(proc, netns.ProcessOutput)
    try:
        assert proc.stdout is not None
        size = fcntl.fcntl(proc.stdout.fileno(), fcntl.F_GETPIPE_SZ)
        assert size == expected
    finally:
        proc.kill()
        proc.communicate()
