# SPDX-License-Identifier: Apache-2.0
# sdk_bench: ns per raw packet through the trace writer's hot path (small
# and 1 KiB packets, 1 and 2 threads, p50/p99/p99.9) beside an rdtsc pair
# and a clock_gettime; writes bench/results/sdk_bench.json.
add_executable(sdk_bench ${CMAKE_CURRENT_SOURCE_DIR}/sdk_bench.c)
target_link_libraries(sdk_bench PRIVATE spn_smb spn_proto Threads::Threads)
target_include_directories(sdk_bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_compile_definitions(sdk_bench PRIVATE
                           SPN_BENCH_RESULTS_DIR="${SPN_BENCH_RESULTS_DIR}")
