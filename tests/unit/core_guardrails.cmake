# SPDX-License-Identifier: Apache-2.0
# Tests of src/core/guardrails.c: the EnableTracing checks with their exact
# error texts and order, the output file, buffer sizes and BufferIDs.
spn_add_test(NAME core_guardrails_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/core_guardrails_test.c
             LIBS spn_core spn_proto)
