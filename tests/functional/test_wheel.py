"""The built wheel installs alone and carries what packagers need.

The wheel is built from this checkout, installed with its runtime
requirements into a fresh virtual environment, and checked there: the
package imports, ``conntrack-lib --help`` runs, and the distribution holds
LICENSE, the SPDX license expression and the ``etc/`` files.  The requirements come from
the package index (the same one the test command installs from).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA_FILES = ("etc/conntrack_lib/rootwrap.conf",
              "etc/oslo-config-generator/conntrack_lib.conf",
              "etc/conntrack_lib/rootwrap.d/conntrack-lib.filters",
              "etc/sudoers.d/conntrack-lib")
#: What the package imports at run time, and nothing else.
RUNTIME = {"pbr", "netaddr", "oslo.concurrency", "oslo.config", "oslo.log", "oslo.privsep",
           "cliff", "fixtures"}


def _run(*argv: str | pathlib.Path, cwd: pathlib.Path = ROOT) -> str:
    # Without PYTHONPATH: the fresh venv must import the installed wheel,
    # never a checkout a caller put on the path.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False, env=env)
    assert done.returncode == 0, f"{argv}: {done.stderr[-2000:]}"
    return done.stdout


def test_wheel_installs_into_a_fresh_venv_with_license_and_etc_files() -> None:
    uv = pathlib.Path(sys.executable).parent / "uv"
    with tempfile.TemporaryDirectory(prefix="conntrack-lib-wheel-") as tmp:
        work = pathlib.Path(tmp)
        _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
             "-w", work / "dist", ".")
        (wheel,) = (work / "dist").glob("conntrack_lib-*.whl")
        venv = work / "venv"
        _run(uv, "venv", "-q", "--python", sys.executable, venv)
        python = venv / "bin" / "python"
        _run(uv, "pip", "install", "-q", "--python", python, wheel)
        # Outside the checkout, so the import cannot pick up the source tree.
        probe = ("import importlib.metadata as m, conntrack_lib, sys; "
                 "d = m.distribution('conntrack_lib'); "
                 "print(conntrack_lib.__file__); "
                 "print('LICENSE-EXPRESSION', d.metadata['License-Expression']); "
                 "print('\\n'.join(str(f) for f in d.files)); "
                 "print('REQUIRES', *(r.split('>')[0].split(';')[0] for r in d.requires))")
        out = _run(python, "-c", probe, cwd=work)
        assert out.splitlines()[0].startswith(str(venv)), out.splitlines()[0]
        files = set(out.splitlines())
        assert any(f.endswith("dist-info/licenses/LICENSE") for f in files), files
        assert "LICENSE-EXPRESSION Apache-2.0" in files, out
        installed = {f.split("data/", 1)[-1] for f in files}
        for path in DATA_FILES:
            assert any(f.endswith(path) for f in installed), path
            assert (venv / path).read_text() == (ROOT / path).read_text()
        requires = set(out.rsplit("REQUIRES", 1)[1].split())
        assert requires == RUNTIME, requires
        helped = _run(venv / "bin" / "conntrack-lib", "--help", cwd=work)
        assert "flush" in helped and "delete" in helped
