# Hot-path protobuf encoder and bounded readers (include/spindle/pb.h).
spn_add_test(NAME pb_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/pb_test.c)
