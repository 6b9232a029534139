# SPDX-License-Identifier: Apache-2.0
# The spindled command line, run as a child process.
spn_add_test(NAME spindled_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/spindled_test.c
             TIMEOUT 60)
target_compile_definitions(spindled_test PRIVATE
                           SPINDLED_BIN="$<TARGET_FILE:spindled>")
add_dependencies(spindled_test spindled)
