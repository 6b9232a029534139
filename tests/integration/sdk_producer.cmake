# SPDX-License-Identifier: Apache-2.0
# libspindle's producer (src/sdk/producer*.c) against spindled: in-process
# sessions (4 threads, flush acks, deferred stops, startup SMB; also run
# under TSan), and a spindled process killed and restarted mid-trace
# (fork + exec, so kept out of the TSan run).
spn_add_test(NAME sdk_producer_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/sdk_producer_test.c
             LIBS spindle_static spn_svc_harness LABELS concurrency TIMEOUT 180)
target_compile_definitions(sdk_producer_test PRIVATE
                           SPINDLED_BIN="$<TARGET_FILE:spindled>")
target_include_directories(sdk_producer_test PRIVATE ${CMAKE_BINARY_DIR}/gen)
add_dependencies(sdk_producer_test spindled)
set_tests_properties(sdk_producer_test PROPERTIES ENVIRONMENT
                     "SPN_TEST_SKIP=restart_*")
add_test(NAME sdk_producer_restart_test COMMAND sdk_producer_test)
set_tests_properties(sdk_producer_restart_test PROPERTIES TIMEOUT 180
                     ENVIRONMENT "SPN_TEST_FILTER=restart_*")

# The producer against Perfetto v14's own service bytes (the test plays
# traced with the captured frames and reads the SMB like a service).
spn_add_test(NAME sdk_producer_v14_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/sdk_producer_v14_test.c
                     ${CMAKE_CURRENT_SOURCE_DIR}/unit/sdk_test_service.c
             LIBS spindle_static LABELS concurrency TIMEOUT 60)
target_include_directories(sdk_producer_v14_test PRIVATE
                           ${CMAKE_CURRENT_SOURCE_DIR}/unit ${CMAKE_BINARY_DIR}/gen)
