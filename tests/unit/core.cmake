# SPDX-License-Identifier: Apache-2.0
# Tests of src/core. core_tbuf_stress_test (two lanes and a reader on one
# buffer) also runs under ThreadSanitizer.
spn_add_test(NAME core_tbuf_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/core_tbuf_test.c
             LIBS spn_core)
spn_add_test(NAME core_tbuf_stress_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/core_tbuf_stress_test.c
             LIBS spn_core LABELS concurrency TIMEOUT 120)
