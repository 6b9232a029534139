# SPDX-License-Identifier: Apache-2.0
# CloneSession against an in-process spindled (svc_clone_test), also
# through the spindle CLI (--clone).
spn_add_test(NAME svc_clone_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/svc_clone_test.c
             LIBS spn_svc_harness LABELS concurrency TIMEOUT 120)
target_compile_definitions(svc_clone_test PRIVATE
                           SPINDLE_BIN="$<TARGET_FILE:spindle_cli>")
add_dependencies(svc_clone_test spindle_cli)
