#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Sets up (packages, configure, build) and runs the whole test suite with
# ctest. The exit status is the suite's.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
spn_build
cd "$SPN_BUILD"
exec ctest --output-on-failure -j "$SPN_JOBS" "$@"
