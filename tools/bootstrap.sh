#!/usr/bin/env bash
# Prepare a machine for conntrack_lib: the Debian packages it drives, and a
# virtualenv (.venv) holding the library and its test dependencies.
# Safe to run again: it installs only what is missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="${CONNTRACK_LIB_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

need_debs=()
command -v conntrack >/dev/null 2>&1 || [ -x /usr/sbin/conntrack ] || need_debs+=(conntrack)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need_debs+=(iproute2)
"$python" -c 'import venv, ensurepip' >/dev/null 2>&1 || need_debs+=(python3-venv)
if [ "${#need_debs[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: missing Debian packages ${need_debs[*]}; run as root or install them" >&2
        exit 1
    fi
    echo "bootstrap: installing ${need_debs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need_debs[@]}" >/dev/null
fi

stamp="$venv/.conntrack_lib-deps"
# CONNTRACK_LIB_DOC_DEPS=0 leaves out the documentation tools (tools/test.sh's
# extra unit-test venvs need none).
reqs=("$root/requirements.txt" "$root/test-requirements.txt")
[ "${CONNTRACK_LIB_DOC_DEPS:-1}" = 0 ] || reqs+=("$root/doc-requirements.txt")
want=$(cat "${reqs[@]}" | sha256sum)
if [ ! -x "$venv/bin/python" ]; then
    echo "bootstrap: creating $venv" >&2
    "$python" -m venv "$venv"
fi
# pip's output goes to a log, shown only when a step fails.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
quietly() {
    if ! "$@" >"$log" 2>&1; then
        grep -v "^WARNING: Location" "$log" >&2
        echo "bootstrap: failed: $*" >&2
        exit 1
    fi
}
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "bootstrap: installing Python dependencies into $venv" >&2
    "$venv/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
    quietly "$venv/bin/pip" install -q "${reqs[@]/#/--requirement=}"
    echo "$want" > "$stamp"
fi
# The package itself, editable, so console scripts and entry points exist.
if ! "$venv/bin/python" -c 'import importlib.metadata as m; m.distribution("conntrack_lib")' \
        >/dev/null 2>&1; then
    echo "bootstrap: installing conntrack_lib (editable) into $venv" >&2
    quietly "$venv/bin/pip" install -q --no-deps -e "$root"
fi
