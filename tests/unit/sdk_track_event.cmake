# SPDX-License-Identifier: Apache-2.0
# The track-event layer (src/sdk/track_event*.c) over real trace writers and
# an in-process SMB drained by the test service; packets are decoded with the
# generated protobuf-c code and read back by a trace_processor stand-in
# (sdk_te_import.c). The wire test has a multi-threaded case, so both also
# run under TSan.
foreach(t sdk_track_event_test sdk_track_event_wire_test)
  spn_add_test(NAME ${t}
               SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/${t}.c
                       ${CMAKE_CURRENT_SOURCE_DIR}/unit/sdk_te_env.c
                       ${CMAKE_CURRENT_SOURCE_DIR}/unit/sdk_te_import.c
                       ${CMAKE_CURRENT_SOURCE_DIR}/unit/sdk_test_service.c
                       ${CMAKE_SOURCE_DIR}/src/sdk/track_event.c
                       ${CMAKE_SOURCE_DIR}/src/sdk/track_event_emit.c
                       ${CMAKE_SOURCE_DIR}/src/sdk/track_event_clock.c
               LIBS spn_smb spn_proto
               LABELS concurrency
               TIMEOUT 120)
endforeach()
