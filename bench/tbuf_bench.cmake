# SPDX-License-Identifier: Apache-2.0
# tbuf_bench: trace buffer commit MB/s per lane (1 and 2 lanes, 4 KiB and
# 32 KiB chunks) beside memcpy of the same chunks, and read throughput;
# writes bench/results/tbuf_bench.json.
if(TARGET spn_core)
  add_executable(tbuf_bench ${CMAKE_CURRENT_SOURCE_DIR}/tbuf_bench.c)
  target_link_libraries(tbuf_bench PRIVATE spn_core Threads::Threads)
  target_include_directories(tbuf_bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_compile_definitions(tbuf_bench PRIVATE
                             SPN_BENCH_RESULTS_DIR="${SPN_BENCH_RESULTS_DIR}")
endif()
