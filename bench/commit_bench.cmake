# SPDX-License-Identifier: Apache-2.0
# commit_bench: producer processes committing real SMB chunks into spindled.
add_executable(commit_bench ${CMAKE_CURRENT_SOURCE_DIR}/commit_bench.c
               ${CMAKE_SOURCE_DIR}/tests/integration/svc_harness.c)
target_include_directories(commit_bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}
                           ${CMAKE_SOURCE_DIR}/tests/integration)
target_compile_definitions(commit_bench PRIVATE
                           SPN_BENCH_RESULTS_DIR="${SPN_BENCH_RESULTS_DIR}")
target_link_libraries(commit_bench PRIVATE spn_core spn_ipc spn_smb spn_proto)
