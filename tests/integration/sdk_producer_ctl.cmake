# SPDX-License-Identifier: Apache-2.0
# libspindle's control calls against an in-process spindled: triggers (sent
# at once, queued until connected, expired, sent by destroy),
# UpdateDataSource and UnregisterDataSource (also under TSan).
spn_add_test(NAME sdk_producer_ctl_test
             SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/integration/sdk_producer_ctl_test.c
                     ${CMAKE_CURRENT_SOURCE_DIR}/integration/svc_consumer_util.c
             LIBS spindle_static spn_core LABELS concurrency TIMEOUT 120)
target_include_directories(sdk_producer_ctl_test PRIVATE ${CMAKE_BINARY_DIR}/gen)
