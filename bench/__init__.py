"""Benchmarks of conntrack_lib; run one with ``python -m bench.NAME`` as root."""

import warnings

# oslo.privsep imports eventlet, whose deprecation notice would bury the figures.
warnings.filterwarnings("ignore", message="\nEventlet is deprecated")
