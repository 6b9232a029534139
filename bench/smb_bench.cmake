# SPDX-License-Identifier: Apache-2.0
# smb_bench: chunk state machine cycles per second per layout, 1 and 2
# threads, beside a 4 KiB memcpy loop; writes bench/results/smb_bench.json.
add_executable(smb_bench ${CMAKE_CURRENT_SOURCE_DIR}/smb_bench.c)
target_link_libraries(smb_bench PRIVATE spn_smb Threads::Threads)
target_include_directories(smb_bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_compile_definitions(smb_bench PRIVATE
                           SPN_BENCH_RESULTS_DIR="${SPN_BENCH_RESULTS_DIR}")
