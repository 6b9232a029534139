// SPDX-License-Identifier: Apache-2.0
// Default socket names of Perfetto's producer and consumer ports.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipc/sockname.h"

const char *ipc_default_socket(bool producer, char *buf, size_t len)
{
	const char *env = getenv(producer ? "PERFETTO_PRODUCER_SOCK_NAME"
					  : "PERFETTO_CONSUMER_SOCK_NAME");

	if (env && env[0]) {
		const char *comma = producer ? strchr(env, ',') : NULL;
		size_t n = comma ? (size_t)(comma - env) : strlen(env);

		if (n < len) {
			memcpy(buf, env, n);
			buf[n] = '\0';
			return buf;
		}
	}
	if (access("/run/perfetto/", X_OK) == 0)
		return producer ? "/run/perfetto/traced-producer.sock"
				: "/run/perfetto/traced-consumer.sock";
	return producer ? "/tmp/perfetto-producer" : "/tmp/perfetto-consumer";
}
