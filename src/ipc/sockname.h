// SPDX-License-Identifier: Apache-2.0
// Where Perfetto's sockets live: the environment overrides, then
// /run/perfetto/, then /tmp (spec/ipc-wire.md §1). Service, SDK and CLI
// resolve names the same way so Perfetto clients find spindled unchanged.
#ifndef SPN_IPC_SOCKNAME_H
#define SPN_IPC_SOCKNAME_H

#include <stdbool.h>
#include <stddef.h>

/*
 * The producer (producer == true) or consumer socket name: the value of
 * PERFETTO_PRODUCER_SOCK_NAME / PERFETTO_CONSUMER_SOCK_NAME when set and
 * non-empty (for the producer, its first comma-separated entry), else
 * /run/perfetto/traced-{producer,consumer}.sock when /run/perfetto/ is an
 * accessible directory, else /tmp/perfetto-{producer,consumer}. Returns a
 * pointer to static or environment storage (not to be freed).
 */
const char *ipc_default_socket(bool producer, char *buf, size_t len);

#endif
