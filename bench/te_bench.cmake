# SPDX-License-Identifier: Apache-2.0
# te_bench: ns per track event (disabled category, slice begin/end, counter,
# two annotations, raw 1 KiB packet; 1 and 2 threads; p50/p99/p99.9 and
# untimed mean) beside a bare TSC read and clock_gettime, into a real SMB
# with a drainer thread; writes bench/results/te_bench.json.
add_executable(te_bench ${CMAKE_CURRENT_SOURCE_DIR}/te_bench.c
               ${CMAKE_SOURCE_DIR}/src/sdk/track_event.c
               ${CMAKE_SOURCE_DIR}/src/sdk/track_event_emit.c
               ${CMAKE_SOURCE_DIR}/src/sdk/track_event_clock.c)
target_link_libraries(te_bench PRIVATE spn_smb spn_proto Threads::Threads)
target_include_directories(te_bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_compile_definitions(te_bench PRIVATE
                           SPN_BENCH_RESULTS_DIR="${SPN_BENCH_RESULTS_DIR}")
