#!/usr/bin/env bash
# `make test`: run the tests; on Linux without a display, under Xvfb.
#
# With a display, or on macOS/Windows: plain pytest. On Linux without one: when the packages of
# scripts/system_packages.sh are missing, install them (as root or with password-less sudo on
# Debian/Ubuntu), then run pytest under xvfb-run. Where they cannot be installed: print one line
# naming the packages and the command to run, run every test that needs no display (the GUI
# tests are skipped, or fail when NAPARI_LSR_REQUIRE_DISPLAY=1), then fail, saying the GUI tests
# did not run.
#
# Arguments go to pytest (make test PYTEST_ARGS="--test-order=shuffle").
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${VENV:-.venv}/bin/python"
export QT_API="${QT_API:-pyqt6}"
pytest=("$PY" -m pytest -q -p no:cacheprovider "$@")

if [ "$(uname -s)" != "Linux" ] || [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  exec "${pytest[@]}"
fi

can_run_xvfb() {
  command -v xvfb-run >/dev/null 2>&1 && [ -z "$(bash scripts/system_packages.sh missing)" ]
}

if ! can_run_xvfb; then
  # as root or with password-less sudo on Debian/Ubuntu; a no-op (exit 2) elsewhere
  bash scripts/system_packages.sh install || true
fi
if can_run_xvfb; then
  exec xvfb-run -a -s "-screen 0 1600x1200x24" "${pytest[@]}"
fi

remedy="$(bash scripts/system_packages.sh remedy)"
echo "make test: $remedy" >&2
echo "make test: running the tests that need no display; the GUI tests cannot run" >&2
"${pytest[@]}"
rc=$?
echo "make test: FAILED: the GUI tests did not run (no display, no Xvfb): $remedy" >&2
[ "$rc" -ne 0 ] || rc=1
exit "$rc"
