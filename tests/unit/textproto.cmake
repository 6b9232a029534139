# SPDX-License-Identifier: Apache-2.0
# Text-format parser and printer (src/sdk/textproto*.c): test-only protos
# covering every field type, compiled here with protoc-c, and real
# TraceConfigs through the generated perfetto.protos code in libspindle.
set(SPN_TP_GEN ${CMAKE_CURRENT_BINARY_DIR}/textproto_gen)
file(MAKE_DIRECTORY ${SPN_TP_GEN})
set(SPN_TP_SRCS "")
foreach(b textproto_test textproto_test3)
  add_custom_command(
    OUTPUT ${SPN_TP_GEN}/${b}.pb-c.c ${SPN_TP_GEN}/${b}.pb-c.h
    COMMAND ${PROTOC_C} --proto_path=${CMAKE_CURRENT_SOURCE_DIR}/unit
            --c_out=${SPN_TP_GEN} ${CMAKE_CURRENT_SOURCE_DIR}/unit/${b}.proto
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/unit/${b}.proto
    COMMENT "protoc-c ${b}.proto (test only)"
    VERBATIM)
  list(APPEND SPN_TP_SRCS ${SPN_TP_GEN}/${b}.pb-c.c)
endforeach()
# Generated code is not ours to fix (same as proto/CMakeLists.txt).
set_source_files_properties(${SPN_TP_SRCS} PROPERTIES
                            COMPILE_OPTIONS -Wno-unused-parameter)
# The module's own sources rather than all of libspindle, so this test only
# depends on the generated protos (spn_proto).
spn_add_test(NAME textproto_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/textproto_test.c
                     ${SPN_TP_SRCS}
                     ${CMAKE_SOURCE_DIR}/src/sdk/textproto.c
                     ${CMAKE_SOURCE_DIR}/src/sdk/textproto_lex.c
                     ${CMAKE_SOURCE_DIR}/src/sdk/textproto_print.c
                     ${CMAKE_SOURCE_DIR}/src/sdk/trace_config_text.c
             LIBS spn_proto)
target_include_directories(textproto_test PRIVATE ${SPN_TP_GEN}
                           ${CMAKE_BINARY_DIR}/gen)
