# SPDX-License-Identifier: Apache-2.0
# Tests of src/smb: the ABI state machine, chunk validation and snapshots,
# shared memory, and the two-thread stress test (also run under TSan).
spn_add_test(NAME smb_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/smb_test.c
             LIBS spn_smb)
spn_add_test(NAME smb_chunk_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/smb_chunk_test.c
             LIBS spn_smb)
spn_add_test(NAME smb_snapshot_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/smb_snapshot_test.c
             LIBS spn_smb)
spn_add_test(NAME smb_shm_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/smb_shm_test.c
             LIBS spn_smb)
spn_add_test(NAME smb_stress_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/smb_stress_test.c
             LIBS spn_smb
             LABELS concurrency
             TIMEOUT 120)
