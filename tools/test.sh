#!/usr/bin/env bash
# Run every test of conntrack_lib: unit tests, then the functional tests
# against the real conntrack binary and kernel in throwaway network namespaces.
# Installs what it needs first (see tools/bootstrap.sh).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/bootstrap.sh"
py="${CONNTRACK_LIB_VENV:-$root/.venv}/bin/python"
cd "$root"

# As root, a functional test that cannot run is a failure, not a skip.
if [ "$(id -u)" -eq 0 ]; then
    export CONNTRACK_LIB_REQUIRE_FUNCTIONAL=1
fi
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}"

"$py" -m pytest -q -p no:cacheprovider -rs tests/unit "$@"
"$py" -m pytest -q -p no:cacheprovider -rs tests/functional "$@"
