# SPDX-License-Identifier: Apache-2.0
# ConsumerPort integration tests: a real spindled in the test process, its
# consumer socket driven by Spindle's IPC client (--lanes 1 and 2).
spn_add_test(NAME svc_consumer_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/svc_consumer_test.c
                     ${CMAKE_CURRENT_SOURCE_DIR}/integration/svc_consumer_util.c
             LIBS spn_core spn_ipc spn_smb spn_proto LABELS concurrency
             TIMEOUT 120)
spn_add_test(NAME svc_consumer_events_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/svc_consumer_events_test.c
                     ${CMAKE_CURRENT_SOURCE_DIR}/integration/svc_consumer_util.c
             LIBS spn_core spn_ipc spn_smb spn_proto LABELS concurrency
             TIMEOUT 120)
