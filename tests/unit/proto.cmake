# Generated protobuf-c code of proto/ against real Perfetto v14 bytes:
# traces, track-event examples and config pass-through (proto_test), and
# the captured IPC session frame by frame (proto_ipc_test).
spn_add_test(NAME proto_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/proto_test.c
             LIBS spn_proto)
spn_add_test(NAME proto_ipc_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/proto_ipc_test.c
             LIBS spn_proto)
