# SPDX-License-Identifier: Apache-2.0
# libFuzzer target for the IPC frame decoder and dispatchers. Built only
# with -DSPN_FUZZ=ON and clang (.ci/run: cmake -DCMAKE_C_COMPILER=clang
# -DSPN_FUZZ=ON, then build-fuzz/tests/ipc_frame_fuzz -max_total_time=60
# on a corpus of the captured *_c2s.bin and *_s2c.bin streams). The
# src/ipc sources are compiled into the target so that they carry the
# fuzzer's coverage instrumentation.
if(SPN_FUZZ AND CMAKE_C_COMPILER_ID STREQUAL "Clang")
  file(GLOB SPN_IPC_FUZZ_SRCS CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/ipc/*.c)
  add_executable(ipc_frame_fuzz ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/ipc_frame_fuzz.c
                 ${SPN_IPC_FUZZ_SRCS})
  target_compile_options(ipc_frame_fuzz PRIVATE
                         -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer)
  target_link_options(ipc_frame_fuzz PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(ipc_frame_fuzz PRIVATE spn_proto PkgConfig::URING
                        PkgConfig::CK PkgConfig::PROTOBUFC Threads::Threads)
  set_target_properties(ipc_frame_fuzz PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                        ${CMAKE_BINARY_DIR}/tests)
endif()
