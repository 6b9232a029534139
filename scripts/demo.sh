#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Sets up and runs Spindle's main job. Until spindled exists, that is the
# SMB benchmark: it prints its table and writes bench/results/smb_bench.json.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
spn_build
exec "$SPN_BUILD/bin/smb_bench" "$@"
