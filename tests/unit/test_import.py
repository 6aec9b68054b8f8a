"""Importing conntrack_lib has no side effects."""

import subprocess
import sys


def test_import_starts_nothing_and_reads_no_config() -> None:
    code = (
        "import sys, threading, subprocess\n"
        "calls = []\n"
        "orig = subprocess.Popen.__init__\n"
        "def spy(self, *a, **k):\n"
        "    calls.append(a)\n"
        "    return orig(self, *a, **k)\n"
        "subprocess.Popen.__init__ = spy\n"
        "before = threading.active_count()\n"
        "import conntrack_lib\n"
        "assert calls == [], calls\n"
        "assert threading.active_count() == before\n"
        "assert 'oslo_privsep.daemon' not in sys.modules\n"
        "from oslo_config import cfg\n"
        "assert not cfg.CONF._args, 'config parsed at import'\n"
        "print('clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"
