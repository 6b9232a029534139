# SPDX-License-Identifier: Apache-2.0
# The producer SDK's hot path (src/smb/arbiter.c, src/smb/trace_writer.c):
# single-threaded behaviour, and the concurrency tests (1,000 threads on the
# default SMB, writers racing the drain and reclaim; also run under TSan).
# Both read everything back through an in-process service.
spn_add_test(NAME sdk_writer_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/sdk_writer_test.c
                     ${CMAKE_CURRENT_SOURCE_DIR}/unit/sdk_test_service.c
             LIBS spn_smb spn_proto
             TIMEOUT 300)
spn_add_test(NAME sdk_writer_mt_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/sdk_writer_mt_test.c
                     ${CMAKE_CURRENT_SOURCE_DIR}/unit/sdk_test_service.c
             LIBS spn_smb spn_proto
             LABELS concurrency
             TIMEOUT 300)
