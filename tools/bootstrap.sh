#!/usr/bin/env bash
# Prepare a machine for conntrack_lib: the Debian packages it drives, and a
# virtualenv (.venv) holding the library's dependencies.
#
#   bootstrap.sh [runtime|test]
#
# runtime: only what the package imports (requirements.txt): enough for the
#          demo and the CLI.  test (the default): also the test and doc tools.
# Safe to run again: it installs only what is missing.  Each step prints one
# line with its elapsed time on stderr.
set -euo pipefail

mode="${1:-test}"
case "$mode" in
    runtime|test) ;;
    *) echo "usage: $0 [runtime|test]" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="${CONNTRACK_LIB_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

step_start=0
begin() { step_start=$(date +%s%N); }
done_step() {
    local ms=$(( ($(date +%s%N) - step_start) / 1000000 ))
    printf 'bootstrap: %s (%d.%01d s)\n' "$1" $((ms / 1000)) $((ms % 1000 / 100)) >&2
}

need_debs=()
command -v conntrack >/dev/null 2>&1 || [ -x /usr/sbin/conntrack ] || need_debs+=(conntrack)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need_debs+=(iproute2)
"$python" -c 'import venv, ensurepip' >/dev/null 2>&1 || need_debs+=(python3-venv)
# The functional tests check etc/sudoers.d against the real sudo, and load
# an nft rule that makes the kernel keep conntrack labels.
if [ "$mode" = test ]; then
    [ -x /usr/bin/sudo ] || need_debs+=(sudo)
    command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need_debs+=(nftables)
fi
# The documentation build's intersphinx inventories (Python's, oslo's, cliff's)
# come from Debian's doc packages: the build needs no network besides.
if [ "$mode" = test ] && [ "${CONNTRACK_LIB_DOC_DEPS:-1}" != 0 ]; then
    for deb in python3-doc python-oslo.config-doc python-oslo.log-doc python-oslo.privsep-doc \
               python-oslo.concurrency-doc python-cliff-doc; do
        if ! dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "ok installed"; then
            if [ "$(id -u)" -eq 0 ]; then
                need_debs+=("$deb")
            else
                echo "bootstrap: $deb is missing: the docs build will fetch its inventory" >&2
            fi
        fi
    done
fi
if [ "${#need_debs[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: missing Debian packages ${need_debs[*]}; run as root or install them" >&2
        exit 1
    fi
    begin
    export DEBIAN_FRONTEND=noninteractive
    # Another apt run (unattended upgrades) may hold the lock: wait for it.
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need_debs[@]}" >/dev/null
    done_step "installed ${need_debs[*]}"
fi

# pip's and uv's output goes to a log, shown only when a step fails.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
quietly() {
    if ! "$@" >"$log" 2>&1; then
        grep -v "^WARNING: Location" "$log" >&2
        echo "bootstrap: failed: $*" >&2
        exit 1
    fi
}

if [ ! -x "$venv/bin/python" ]; then
    begin
    # No pip inside: seeding it costs seconds, and uv (below) installs faster.
    "$python" -m venv --without-pip "$venv"
    done_step "created $venv"
fi

# The installer: uv when it can be had (it resolves and downloads in
# parallel, several times faster than pip here), else pip.
uv="$venv/bin/uv"
if [ ! -x "$uv" ] && [ -z "${CONNTRACK_LIB_NO_UV:-}" ]; then
    begin
    if "$python" -m pip --version >/dev/null 2>&1 \
            && "$python" -m pip --python "$venv/bin/python" install -q --no-compile uv \
                >"$log" 2>&1; then
        done_step "installed the uv installer"
    fi
fi
ensure_pip() {
    "$venv/bin/python" -m pip --version >/dev/null 2>&1 && return
    begin
    quietly "$venv/bin/python" -m ensurepip -q
    done_step "seeded pip into the venv"
}
install() {
    if [ -x "$uv" ]; then
        quietly "$uv" pip install -q --python "$venv/bin/python" "$@"
    else
        ensure_pip
        quietly "$venv/bin/python" -m pip install -q "$@"
    fi
}

# CONNTRACK_LIB_DOC_DEPS=0 leaves out the documentation tools (tools/test.sh's
# extra unit-test venvs need none).
files=("$root/requirements.txt")
reqs=(-r "$root/requirements.txt")
if [ "$mode" = test ]; then
    files+=("$root/test-requirements.txt")
    [ "${CONNTRACK_LIB_DOC_DEPS:-1}" = 0 ] || files+=("$root/doc-requirements.txt")
    # pip itself: the packaging test builds a wheel with it.
    reqs=("${files[@]/#/--requirement=}" pip)
fi
stamp="$venv/.conntrack_lib-$mode"
want=$(cat "${files[@]}" | sha256sum)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    begin
    install "${reqs[@]}"
    echo "$want" > "$stamp"
    done_step "installed the $mode requirements into $venv"
fi

# The package itself, editable, so console scripts and entry points exist.
if ! "$venv/bin/python" -c 'import importlib.metadata as m; m.distribution("conntrack_lib")' \
        >/dev/null 2>&1; then
    begin
    install --no-deps -e "$root"
    done_step "installed conntrack_lib (editable)"
fi
