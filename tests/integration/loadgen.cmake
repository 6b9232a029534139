# SPDX-License-Identifier: Apache-2.0
# spindle-loadgen against a spindled process (fork + exec of both, so kept
# out of the TSan run): 3 x 3 threads lossless, 1000 threads with the
# default and a 512 KiB SMB, bad flags.
spn_add_test(NAME loadgen_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/loadgen_test.c
             LIBS spn_proto TIMEOUT 120)
target_compile_definitions(loadgen_test PRIVATE
                           SPINDLED_BIN="$<TARGET_FILE:spindled>"
                           LOADGEN_BIN="$<TARGET_FILE:spindle_loadgen>")
target_include_directories(loadgen_test PRIVATE ${CMAKE_BINARY_DIR}/gen)
add_dependencies(loadgen_test spindled spindle_loadgen)
# 1000 threads on 2 cores: never beside another test, whose CPU use would
# starve the SDK's I/O thread and measure the machine, not Spindle.
set_tests_properties(loadgen_test PROPERTIES RUN_SERIAL TRUE)
