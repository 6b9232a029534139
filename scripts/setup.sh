#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Shared set-up for scripts/test.sh and scripts/demo.sh: installs the Debian
# packages Spindle needs when any is missing, then configures and builds
# into build/ (incremental on the second run). Source it, don't run it.
set -euo pipefail

SPN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SPN_BUILD=${SPN_BUILD:-$SPN_ROOT/build}
SPN_JOBS=${SPN_JOBS:-$(nproc)}

spn_packages=(cmake gcc make pkg-config liburing-dev libck-dev libprotobuf-c-dev
              protobuf-c-compiler libcmocka-dev zlib1g-dev)
# Fuzz targets (tests/fuzz) are built with clang's libFuzzer.
if compgen -G "$SPN_ROOT/tests/fuzz/*.c" >/dev/null; then
  spn_packages+=(clang)
fi

spn_install_missing() {
  local missing=() p
  for p in "${spn_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

spn_build() {
  if [ ! -f "$SPN_BUILD/CMakeCache.txt" ]; then
    cmake -S "$SPN_ROOT" -B "$SPN_BUILD" "$@" >/dev/null
  fi
  cmake --build "$SPN_BUILD" -j "$SPN_JOBS" -- --no-print-directory
}

spn_install_missing
