// SPDX-License-Identifier: Apache-2.0
// spindled as a library: start the service's threads on two sockets, stop
// it cleanly. src/cmd/spindled.c and the integration tests use this.
#ifndef SPN_CORE_SERVICE_H
#define SPN_CORE_SERVICE_H

#include <stdbool.h>

/* Options of svc_start; NULL/0 fields take the defaults. */
struct svc_opts {
	const char *producer_socket;	/* path or @abstract; required */
	const char *consumer_socket;	/* path or @abstract; required */
	unsigned lanes;			/* data-plane lanes (default: cores, <= 16) */
	unsigned control;		/* control-plane threads (default 2) */
};

struct svc;

/*
 * Creates the service, listens on both sockets (producer socket mode 0666,
 * consumer 0660, as Perfetto's) and starts the acceptor, lane and control
 * threads. Returns 0 and sets *out, or -errno (nothing left running).
 */
int svc_start(const struct svc_opts *opts, struct svc **out);

/*
 * Stops the service: disables every session (consumers get their
 * EnableTracing reply, write_into_file files are flushed and closed),
 * closes all connections, joins the threads and frees everything.
 */
void svc_stop(struct svc *svc);

/* Lanes and control threads actually started. */
unsigned svc_lane_count(const struct svc *svc);
unsigned svc_control_count(const struct svc *svc);

#endif
