#!/usr/bin/env bash
# The system packages napari's GUI tests need on a Linux machine without a display: Xvfb, Mesa
# GL and the Qt xcb libraries (Debian/Ubuntu names). The one place the list lives: `make test`
# (scripts/test.sh) and CI (.ci/run) both use this script.
#
#   scripts/system_packages.sh list              the packages, one line
#   scripts/system_packages.sh missing           those not installed (dpkg), one line
#   scripts/system_packages.sh install [PKG...]  apt-get install them (and PKG...) when root or
#                                                with password-less sudo; exit 2 when it cannot
#   scripts/system_packages.sh remedy            one line: what is missing, the command to run
#
# NAPARI_LSR_NO_APT=1 makes `install` never run apt-get (as if not root and without sudo).
set -euo pipefail

PACKAGES=(
  xvfb xauth libgl1 libgl1-mesa-dri libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3
  libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0
  libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0
  libxcb-xfixes0 libxcb-xkb1
)

# The packages (of "$@") that dpkg does not list as installed, counting packages an installed
# one provides (Ubuntu 24.04's libglib2.0-0t64 provides libglib2.0-0), and xvfb whenever
# xvfb-run is not on the PATH. Without dpkg: all of them when xvfb-run is absent, else none.
missing() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    command -v xvfb-run >/dev/null 2>&1 || echo "$*"
    return 0
  fi
  local installed
  installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Provides}\n' 2>/dev/null || true)
  command -v xvfb-run >/dev/null 2>&1 || installed=$(echo "$installed" | grep -v '^ii *xvfb ' || true)
  echo "$installed" |
    awk -v want="$*" '
      $1 == "ii" { for (i = 2; i <= NF; i++) { sub(/,$/, "", $i); sub(/:.*/, "", $i); have[$i] = 1 } }
      END {
        n = split(want, w, " "); out = ""
        for (i = 1; i <= n; i++) if (!(w[i] in have)) out = out (out ? " " : "") w[i]
        print out
      }'
}

sudo_prefix() {
  # Prints the prefix that runs apt-get as root ("" as root), or fails.
  [ "${NAPARI_LSR_NO_APT:-0}" = "0" ] || return 1
  command -v apt-get >/dev/null 2>&1 || return 1
  if [ "$(id -u)" -eq 0 ]; then
    echo ""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    echo "sudo"
  else
    return 1
  fi
}

remedy() {
  local todo
  todo=$(missing "${PACKAGES[@]}")
  [ -n "$todo" ] || todo="${PACKAGES[*]}"
  if command -v apt-get >/dev/null 2>&1; then
    echo "missing system packages for the GUI tests: $todo; install them with:" \
      "sudo apt-get install -y --no-install-recommends $todo"
  else
    echo "missing Xvfb for the GUI tests (xvfb-run not found); install Xvfb, xauth, Mesa GL" \
      "and the Qt xcb libraries (on Debian/Ubuntu: apt-get install $todo)"
  fi
}

case "${1:-list}" in
  list)
    echo "${PACKAGES[*]}"
    ;;
  missing)
    missing "${PACKAGES[@]}"
    ;;
  remedy)
    remedy
    ;;
  install)
    shift
    if ! prefix=$(sudo_prefix); then
      exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    echo "system packages: apt-get install ${PACKAGES[*]} $*" >&2
    $prefix apt-get update -qq
    $prefix env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "${PACKAGES[@]}" "$@" >/dev/null
    ;;
  *)
    echo "usage: $0 [list|missing|install [PKG...]|remedy]" >&2
    exit 64
    ;;
esac
