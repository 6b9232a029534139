# SPDX-License-Identifier: Apache-2.0
# Tests of src/core/svc_packets: the service-written packets of a read batch
# and the TraceStats builder, decoded with the generated Perfetto protos and
# compared with Perfetto v14's own service packets.
spn_add_test(NAME core_svc_packets_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/core_svc_packets_test.c
             LIBS spn_core spn_proto)
