# SPDX-License-Identifier: Apache-2.0
# src/ipc tests: the frame codec (every split of the captured Perfetto
# streams), the loop + host + client over real sockets, and the replay of
# captured client traffic into ProducerPort/ConsumerPort hosts.
set(SPN_IPC_TEST_GEN ${CMAKE_BINARY_DIR}/gen/tests)
file(MAKE_DIRECTORY ${SPN_IPC_TEST_GEN})
add_custom_command(
  OUTPUT ${SPN_IPC_TEST_GEN}/ipc_test.pb-c.c ${SPN_IPC_TEST_GEN}/ipc_test.pb-c.h
  COMMAND ${PROTOC_C} --proto_path=${CMAKE_CURRENT_SOURCE_DIR}/unit/ipc
          --c_out=${SPN_IPC_TEST_GEN} ${CMAKE_CURRENT_SOURCE_DIR}/unit/ipc/ipc_test.proto
  DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/unit/ipc/ipc_test.proto
  COMMENT "protoc-c ipc_test.proto"
  VERBATIM)
add_library(spn_ipc_testproto STATIC ${SPN_IPC_TEST_GEN}/ipc_test.pb-c.c)
target_include_directories(spn_ipc_testproto PUBLIC ${SPN_IPC_TEST_GEN})
target_link_libraries(spn_ipc_testproto PUBLIC PkgConfig::PROTOBUFC)
target_compile_options(spn_ipc_testproto PRIVATE -Wno-unused-parameter)

spn_add_test(NAME ipc_frame_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/ipc_frame_test.c
             LIBS spn_ipc TIMEOUT 120)
spn_add_test(NAME ipc_host_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/ipc_host_test.c
             LIBS spn_ipc spn_ipc_testproto LABELS concurrency TIMEOUT 300)
spn_add_test(NAME ipc_replay_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/ipc_replay_test.c
             LIBS spn_ipc TIMEOUT 300)
