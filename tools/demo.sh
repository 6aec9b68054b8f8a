#!/usr/bin/env bash
# Run the conntrack_lib demo in a throwaway network namespace (needs root).
# Installs what it needs first (see tools/bootstrap.sh).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/bootstrap.sh"
exec "${CONNTRACK_LIB_VENV:-$root/.venv}/bin/python" -m conntrack_lib.demo "$@"
