#!/usr/bin/env bash
# Run every test of conntrack_lib:
#   1. the unit suite on each supported Python (3.10 to 3.13) found here;
#   2. the documentation build (sphinx -n -W), then the functional suite
#      against the system's conntrack and kernel, in
#      throwaway network namespaces;
#   3. the version matrix (tools/matrix.sh): the whole functional suite
#      against every conntrack-tools release of a directory of source
#      tarballs (--tarballs DIR or $CONNTRACK_LIB_TARBALLS) within a time
#      budget (run_matrix below; $CONNTRACK_LIB_MATRIX_TESTS narrows it).
# Installs what it needs first (tools/bootstrap.sh; one virtualenv per Python
# in .venvs/).  In CI mode (CI=true or CONNTRACK_LIB_CI=1) a missing Python or
# tarball directory is a failure; elsewhere the run says in one line what it
# skipped.  Other arguments go to every pytest run.  The last line sums up
# every run: "N passed, N failed".
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tarballs="${CONNTRACK_LIB_TARBALLS:-}"
if [ "${1:-}" = "--tarballs" ]; then
    tarballs=${2:?--tarballs needs a directory}
    shift 2
fi
ci=0
if [ "${CI:-}" = "true" ] || [ "${CONNTRACK_LIB_CI:-}" = "1" ]; then ci=1; fi
pythons=(3.10 3.11 3.12 3.13)
release_tests="tests/functional/test_release.py tests/functional/test_release_capabilities.py"
release_tests+=" tests/functional/test_netlink_create.py"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
# Building the releases takes minutes of mostly single-threaded autoreconf and
# configure: start it first, so it overlaps the venvs and unit suites.
build_pid=
if [ -n "$tarballs" ] && [ -d "$tarballs" ] && [ "$(id -u)" -eq 0 ]; then
    "$root/tools/build_conntrack.sh" "$tarballs" >"$logs/builds" 2>"$logs/builds.err" &
    build_pid=$!
fi

"$root/tools/bootstrap.sh"
venv="${CONNTRACK_LIB_VENV:-$root/.venv}"
# As root, a functional test that cannot run is a failure, not a skip.
if [ "$(id -u)" -eq 0 ]; then
    export CONNTRACK_LIB_REQUIRE_FUNCTIONAL=1
fi
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}"

status=0
skipped=()
passed=0
failed=0

# Add a pytest log's closing counts (errors count as failed) to the totals.
tally() {
    local line n
    line=$(grep -E '[0-9]+ (passed|failed|errors?)\b.* in [0-9.]+s' "$1" | tail -n1 || true)
    if [ -z "$line" ]; then failed=$((failed + 1)); return; fi
    n=$(grep -oE '[0-9]+ passed' <<<"$line" | cut -d' ' -f1 || true); passed=$((passed + ${n:-0}))
    n=$(grep -oE '[0-9]+ failed' <<<"$line" | cut -d' ' -f1 || true); failed=$((failed + ${n:-0}))
    n=$(grep -oE '[0-9]+ errors?' <<<"$line" | cut -d' ' -f1 || true); failed=$((failed + ${n:-0}))
}

# Run pytest with PYTHON on the remaining arguments; keep its output visible.
run_pytest() {
    local python=$1 log; shift
    log=$(mktemp -p "$logs")
    "$python" -m pytest -q -p no:cacheprovider -rs "$@" 2>&1 | tee "$log" || status=1
    tally "$log"
}

# Print the interpreter of Python X.Y: pyenv's, else one on PATH.
find_python() {
    local candidate
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python "$(command -v "python$1" || true)"; do
        if [ -x "$candidate" ] && "$candidate" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$1'.split('.')))" 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    return 1
}

# Print the venv for Python X.Y: the main one when it runs X.Y, else .venvs/pyX.Y.
unit_venv() {
    local version=$1 python
    if [ "$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$version" ]; then
        echo "$venv"; return 0
    fi
    python=$(find_python "$version") || return 1
    # bootstrap.sh checks the dependency stamp, so a warm venv costs nothing.
    CONNTRACK_LIB_VENV="$root/.venvs/py$version" PYTHON="$python" CONNTRACK_LIB_DOC_DEPS=0 \
        "$root/tools/bootstrap.sh" >&2
    echo "$root/.venvs/py$version"
}

# Run the functional suite against every built release (tools/matrix.sh, one
# release at a time): the whole suite on each release but the system's (whose
# whole suite ran above; its build gets the release-specific tests), as long
# as the run's time budget ($CONNTRACK_LIB_BUDGET seconds, default 1800:
# CI stops at 35 minutes) holds another whole run; past it, a release gets
# the release-specific tests only, and the summary says so.
run_matrix() {
    local budget=${CONNTRACK_LIB_BUDGET:-1800} system estimate release binary tests log start
    local whole=() partial=()
    system=$(/usr/sbin/conntrack --version 2>&1 | grep -oE 'v[0-9]+\.[0-9]+\.[0-9]+' | tr -d v || true)
    # The stress test soaks 60 s on the system's release, 15 s on the others.
    estimate=$((functional_seconds - 30))
    # Oldest release first; the system's release last.
    while read -r release binary; do
        log="$logs/matrix-$release"
        if [ -n "${CONNTRACK_LIB_MATRIX_TESTS:-}" ]; then
            tests=$CONNTRACK_LIB_MATRIX_TESTS
        elif [ "$release" = "$system" ]; then
            tests=$release_tests; partial+=("$release (its whole suite ran on the system's binary)")
        elif [ $((SECONDS + estimate)) -gt "$budget" ]; then
            tests=$release_tests; partial+=("$release (time budget of ${budget}s)")
        else
            tests=tests/functional; whole+=("$release")
        fi
        start=$SECONDS
        CONNTRACK_LIB_MATRIX_TESTS="$tests" CONNTRACK_LIB_STRESS_SECONDS=15 \
            CONNTRACK_LIB_PYTEST_ARGS="$*" "$root/tools/matrix.sh" "$tarballs" "$release" 2>&1 \
            | tee "$log" || status=1
        if [ "$tests" = tests/functional ]; then estimate=$((SECONDS - start)); fi
        # The release's closing pytest line adds to the totals.
        grep -E '[0-9]+ (passed|failed|errors?)\b.* in [0-9.]+s' "$log" | tail -n1 >"$logs/one" || true
        tally "$logs/one"
    done < <(sort -t. -k3,3n "$logs/builds" | awk -v s="$system" '{print ($1 == s ? "1" : "0"), $0}' \
             | sort -s -k1,1n | cut -d' ' -f2-)
    echo "test.sh: matrix: whole functional suite on: ${whole[*]:-none}"
    if [ "${#partial[@]}" -gt 0 ]; then
        echo "test.sh: matrix: release-specific tests only on: $(printf '%s; ' "${partial[@]}")"
    fi
}

# Make the other Pythons' venvs in the background while the unit suite runs
# on the system's Python, which needs none of its own.
main_version=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
ordered=("$main_version")
for version in "${pythons[@]}"; do
    [ "$version" = "$main_version" ] || ordered+=("$version")
done
for version in "${ordered[@]:1}"; do
    unit_venv "$version" >/dev/null 2>"$logs/venv-$version.err" || true
    touch "$logs/venv-$version.done"
done &
venvs_pid=$!

for version in "${ordered[@]}"; do
    # Wait until the background job is past this Python's venv.
    while [ "$version" != "$main_version" ] && [ ! -e "$logs/venv-$version.done" ] \
            && kill -0 "$venvs_pid" 2>/dev/null; do
        sleep 1
    done
    if ! env=$(unit_venv "$version"); then
        skipped+=("unit suite on Python $version (no python$version found)")
        continue
    fi
    echo "test.sh: ===== unit suite on Python $version (at ${SECONDS}s)"
    run_pytest "$env/bin/python" tests/unit "$@"
done

echo "test.sh: ===== documentation, nitpicky (at ${SECONDS}s)"
# Every warning is an error (-n -W): a broken reference fails the run.
if "$venv/bin/sphinx-build" -q -n -W --keep-going -b html docs "$logs/docs-html" \
        >"$logs/docs.log" 2>&1; then
    echo "test.sh: documentation built without a warning"
    passed=$((passed + 1))
else
    grep -v -i "eventlet" "$logs/docs.log" >&2 || true
    echo "test.sh: documentation build FAILED" >&2
    status=1; failed=$((failed + 1))
fi

# Typed seams: how many annotations still say Any (tools/count_any.py).
echo "test.sh: $("$venv/bin/python" "$root/tools/count_any.py" 2>&1 | tail -n1)"

echo "test.sh: ===== functional suite on the system's conntrack (at ${SECONDS}s)"
functional_start=$SECONDS
run_pytest "$venv/bin/python" tests/functional "$@"
functional_seconds=$((SECONDS - functional_start))

if [ -n "$build_pid" ]; then
    if ! wait "$build_pid"; then
        cat "$logs/builds.err" >&2
        echo "test.sh: building the releases of $tarballs failed" >&2
        status=1; failed=$((failed + 1))
    else
        echo "test.sh: ===== version matrix on $tarballs (at ${SECONDS}s)"
        run_matrix "$@"
    fi
elif [ -z "$tarballs" ]; then
    skipped+=("version matrix (no tarball directory: pass --tarballs DIR or set CONNTRACK_LIB_TARBALLS)")
elif [ ! -d "$tarballs" ]; then
    skipped+=("version matrix (no directory $tarballs)")
else
    skipped+=("version matrix (needs root)")
fi

if [ "${#skipped[@]}" -gt 0 ]; then
    what=$(printf '%s; ' "${skipped[@]}")
    if [ "$ci" -eq 1 ]; then
        status=1
        echo "test.sh: FAILED, CI must run everything, did not run: ${what%; }"
    else
        echo "test.sh: did not run: ${what%; }"
    fi
fi
echo "test.sh: finished in ${SECONDS}s"
echo "$passed passed, $failed failed"
exit "$status"
