# SPDX-License-Identifier: Apache-2.0
# spindled integration tests: a real service on sockets in a temp dir.
spn_add_test(NAME svc_replay_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/svc_replay_test.c
             LIBS spn_core spn_ipc spn_smb spn_proto LABELS concurrency
             TIMEOUT 120)
