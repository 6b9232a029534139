# SPDX-License-Identifier: Apache-2.0
# libFuzzer target for the commit path's untrusted side: SMB chunk take,
# copy and validation, scraping, and the trace buffer's store, patch, read
# and clone (tests/fuzz/chunk_fuzz.c). Built only with -DSPN_FUZZ=ON and
# clang (.ci/run runs it for 60 s); the src/smb and src/core sources it
# drives are compiled into the target so that they carry the fuzzer's
# coverage instrumentation.
if(SPN_FUZZ AND CMAKE_C_COMPILER_ID STREQUAL "Clang")
  set(SPN_CHUNK_FUZZ_SRCS
      ${CMAKE_SOURCE_DIR}/src/smb/smb_abi.c
      ${CMAKE_SOURCE_DIR}/src/smb/chunk_validate.c
      ${CMAKE_SOURCE_DIR}/src/core/tbuf.c
      ${CMAKE_SOURCE_DIR}/src/core/tbuf_lane.c
      ${CMAKE_SOURCE_DIR}/src/core/tbuf_read.c
      ${CMAKE_SOURCE_DIR}/src/core/tbuf_packet.c
      ${CMAKE_SOURCE_DIR}/src/core/tbuf_clone.c
      ${CMAKE_SOURCE_DIR}/src/core/mem_hooks.c)
  add_executable(chunk_fuzz ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/chunk_fuzz.c
                 ${SPN_CHUNK_FUZZ_SRCS})
  target_include_directories(chunk_fuzz PRIVATE ${CMAKE_SOURCE_DIR}/include
                             ${CMAKE_SOURCE_DIR}/src)
  target_compile_definitions(chunk_fuzz PRIVATE
                             SPN_TESTDATA_DIR="${SPN_TESTDATA_DIR}")
  target_compile_options(chunk_fuzz PRIVATE
                         -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer)
  target_link_options(chunk_fuzz PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(chunk_fuzz PRIVATE spn_proto PkgConfig::CK
                        Threads::Threads)
  set_target_properties(chunk_fuzz PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                        ${CMAKE_BINARY_DIR}/tests)
endif()
