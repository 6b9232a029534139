# SPDX-License-Identifier: Apache-2.0
# The spindle CLI: its parsers in-process (spindle_parse.c is compiled in),
# its flag errors, and end-to-end runs of build/bin/spindle against an
# in-process spindled.
spn_add_test(NAME cli_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/cli_test.c
                     ${CMAKE_SOURCE_DIR}/src/cmd/spindle_parse.c
             LIBS spn_core PkgConfig::ZLIB TIMEOUT 120)
target_compile_definitions(cli_test PRIVATE
                           SPINDLE_BIN="$<TARGET_FILE:spindle_cli>")
add_dependencies(cli_test spindle_cli)
