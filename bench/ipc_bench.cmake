# SPDX-License-Identifier: Apache-2.0
# ipc_bench: IPC round trips per second and streamed-reply MB/s over a Unix
# socket beside plain blocking socket baselines; writes
# bench/results/ipc_bench.json.
if(TARGET spn_ipc)
  add_executable(ipc_bench ${CMAKE_CURRENT_SOURCE_DIR}/ipc_bench.c)
  target_link_libraries(ipc_bench PRIVATE spn_ipc Threads::Threads)
  target_include_directories(ipc_bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_compile_definitions(ipc_bench PRIVATE
                             SPN_BENCH_RESULTS_DIR="${SPN_BENCH_RESULTS_DIR}")
endif()
