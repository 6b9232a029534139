# SPDX-License-Identifier: Apache-2.0
# tw_bench: ns per raw packet through the trace writer's hot path (small
# and 1 KiB packets, 1 and 2 threads, p50/p99/p99.9) beside an rdtsc pair
# and a clock_gettime; writes bench/results/tw_bench.json.
add_executable(tw_bench ${CMAKE_CURRENT_SOURCE_DIR}/tw_bench.c)
target_link_libraries(tw_bench PRIVATE spn_smb spn_proto Threads::Threads)
target_include_directories(tw_bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_compile_definitions(tw_bench PRIVATE
                           SPN_BENCH_RESULTS_DIR="${SPN_BENCH_RESULTS_DIR}")
