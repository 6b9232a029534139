# SPDX-License-Identifier: Apache-2.0
# Tests of src/core/svc_compress: the compression a TraceConfig selects and
# a read batch deflated into one compressed_packets packet.
spn_add_test(NAME core_svc_compress_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/core_svc_compress_test.c
             LIBS spn_core spn_proto)
