#!/usr/bin/env bash
# Run the conntrack_lib demo in a throwaway network namespace (needs root).
# Installs only what the demo needs first (tools/bootstrap.sh runtime); every
# step prints one line with its elapsed time.  Options go to the demo, e.g.
# --ports 100 or --netns NAME (see: ./tools/demo.sh --help).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/bootstrap.sh" runtime
exec "${CONNTRACK_LIB_VENV:-$root/.venv}/bin/python" -m conntrack_lib.demo "$@"
