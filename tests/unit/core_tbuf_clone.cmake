# SPDX-License-Identifier: Apache-2.0
# svc_tbuf_clone(): snapshots of a trace buffer, one of them while two lanes
# write (so it also runs under ThreadSanitizer).
spn_add_test(NAME core_tbuf_clone_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/core_tbuf_clone_test.c
             LIBS spn_core LABELS concurrency TIMEOUT 120)
