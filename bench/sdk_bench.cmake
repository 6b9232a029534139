# SPDX-License-Identifier: Apache-2.0
# sdk_bench: the SDK's benchmark: ns per track event (disabled category,
# slice begin/end, counter, two annotations, raw 1 KiB packet; 1 and 2
# threads; median, p99, p99.9 and untimed mean) beside a bare TSC read and
# clock_gettime, into a real SMB with a drainer thread; writes
# bench/results/sdk_bench.json.
add_executable(sdk_bench ${CMAKE_CURRENT_SOURCE_DIR}/sdk_bench.c
               ${CMAKE_SOURCE_DIR}/src/sdk/track_event.c
               ${CMAKE_SOURCE_DIR}/src/sdk/track_event_emit.c
               ${CMAKE_SOURCE_DIR}/src/sdk/track_event_clock.c)
target_link_libraries(sdk_bench PRIVATE spn_smb spn_proto Threads::Threads)
target_include_directories(sdk_bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_compile_definitions(sdk_bench PRIVATE
                           SPN_BENCH_RESULTS_DIR="${SPN_BENCH_RESULTS_DIR}")
