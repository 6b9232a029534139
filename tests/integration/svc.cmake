# SPDX-License-Identifier: Apache-2.0
# spindled integration tests: a real service on sockets in a temp dir.
add_library(spn_svc_harness STATIC
            ${CMAKE_CURRENT_SOURCE_DIR}/integration/svc_harness.c)
target_link_libraries(spn_svc_harness PUBLIC spn_core spn_ipc spn_smb
                      spn_proto PkgConfig::CMOCKA)
target_compile_definitions(spn_svc_harness PRIVATE
                           SPN_TESTDATA_DIR="${SPN_TESTDATA_DIR}")

spn_add_test(NAME svc_replay_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/svc_replay_test.c
             LIBS spn_core spn_ipc spn_smb spn_proto LABELS concurrency
             TIMEOUT 120)
# Not under TSan: its scribbler thread races with the writer on purpose.
spn_add_test(NAME svc_hostile_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/svc_hostile_test.c
             LIBS spn_svc_harness TIMEOUT 120)
spn_add_test(NAME svc_read_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/svc_read_test.c
             LIBS spn_svc_harness LABELS concurrency TIMEOUT 120)
spn_add_test(NAME svc_compress_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/svc_compress_test.c
             LIBS spn_svc_harness LABELS concurrency TIMEOUT 120)
spn_add_test(NAME svc_producer_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/svc_producer_test.c
             LIBS spn_svc_harness LABELS concurrency TIMEOUT 120)
spn_add_test(NAME svc_control_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/svc_control_test.c
             LIBS spn_svc_harness LABELS concurrency TIMEOUT 120)
target_include_directories(svc_control_test PRIVATE ${CMAKE_SOURCE_DIR}/bench)
spn_add_test(NAME svc_session_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/svc_session_test.c
             LIBS spn_svc_harness LABELS concurrency TIMEOUT 120)
target_include_directories(svc_session_test PRIVATE ${CMAKE_SOURCE_DIR}/bench)
spn_add_test(NAME svc_uids_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/svc_uids_test.c
             LIBS spn_svc_harness TIMEOUT 60)
target_compile_definitions(svc_uids_test PRIVATE
                           SPINDLED_BIN="$<TARGET_FILE:spindled>")
add_dependencies(svc_uids_test spindled)
# It measures commit rates: never beside another test.
set_tests_properties(svc_control_test PROPERTIES RUN_SERIAL TRUE)
