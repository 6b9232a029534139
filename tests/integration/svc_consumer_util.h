// SPDX-License-Identifier: Apache-2.0
// Helpers of the ConsumerPort integration tests: a spindled started in the
// test process on sockets in a mkdtemp dir, consumers and producers over
// Spindle's IPC client, TraceConfig building, QueryServiceState collection
// and fd counting. Every helper asserts (cmocka) on unexpected failures.
#ifndef SPN_TESTS_SVC_CONSUMER_UTIL_H
#define SPN_TESTS_SVC_CONSUMER_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "consumer_port.pb-c.h"
#include "ipc/client.h"
#include "producer_port.pb-c.h"
#include "trace_packet.pb-c.h"

#define CALL_MS 5000			/* limit of one blocking call */
#define QSS_CHUNK_LIMIT (131072u - 128u) /* consumer-port.md §9 */

#define CMD_SETUP PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_DATA_SOURCE
#define CMD_START PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE
#define CMD_STOP PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_STOP_DATA_SOURCE

/* One running service and its sockets. */
struct env {
	char dir[64];		/* mkdtemp dir holding sockets and files */
	char psock[128];	/* producer socket */
	char csock[128];	/* consumer socket */
	struct svc *svc;	/* the service */
	const void *arg;	/* the test's CMUnitTest.initial_state */
};

/* A consumer connection. */
struct cons {
	struct ipc_sync *sync;	/* blocking client (own loop) */
	struct ipc_proxy *port;	/* ConsumerPort */
};

/* The outcome of an EnableTracing call. */
struct enable_res {
	bool done;		/* the call ended */
	int status;		/* 0, or the client's failure (-EREMOTEIO: rejected) */
	bool disabled;		/* EnableTracingResponse.disabled */
	char error[512];	/* EnableTracingResponse.error ("" if none) */
};

/* A TraceConfig under construction (storage inline, up to 4 of each). */
struct tc {
	Perfetto__Protos__TraceConfig cfg;		/* the config */
	Perfetto__Protos__TraceConfig__BufferConfig buf[4]; /* buffers */
	Perfetto__Protos__TraceConfig__BufferConfig *bufp[4];
	Perfetto__Protos__TraceConfig__DataSource ds[4];	/* data sources */
	Perfetto__Protos__TraceConfig__DataSource *dsp[4];
	Perfetto__Protos__DataSourceConfig dsc[4];	/* their configs */
	Perfetto__Protos__TraceConfig__TriggerConfig trig; /* trigger_config */
	Perfetto__Protos__TraceConfig__TriggerConfig__Trigger tr[4]; /* triggers */
	Perfetto__Protos__TraceConfig__TriggerConfig__Trigger *trp[4];
};

/* Chunks of one QueryServiceState stream. */
struct qss_acc {
	uint8_t *buf;		/* concatenated TracingServiceState chunks */
	size_t len;		/* bytes in buf */
	int chunks;		/* replies */
	int more;		/* replies with has_more */
	size_t largest;		/* largest chunk (serialized state) */
	bool first_has_ds;	/* the first chunk carried data sources */
	size_t first_ds;	/* data sources in the first chunk */
	bool later_not_ds;	/* a later chunk carried something else */
};

/* A producer over ProducerPort that never writes. */
struct prod {
	struct ipc_sync *sync;		/* blocking client */
	struct ipc_proxy *port;		/* ProducerPort */
	int cmds[8];			/* async commands seen, by cmd_case */
	uint64_t started[16];		/* instance ids of start_data_source */
	int nstarted;			/* entries in started */
	bool stream_ended;		/* GetAsyncCommand ended */
};

/* cmocka per-test setup/teardown: *state becomes a struct env with a
 * running service (lanes from env_lanes); its arg keeps the initial state. */
extern unsigned env_lanes;
int env_setup(void **state);
int env_teardown(void **state);

void cons_open(struct env *e, struct cons *c);
void cons_close(struct cons *c);
/* Runs the consumer's loop for up to ms (async replies land). */
void pump(struct cons *c, int ms);
/* Pumps c until *flag or ms elapsed. */
void wait_flag(struct cons *c, const bool *flag, int ms);
int64_t now_ms(void);
/* Open fds of this process (service included). */
int count_fds(void);

/* A config of one buffer of size_kb. */
void tc_init(struct tc *t, uint32_t size_kb);
void tc_add_buffer(struct tc *t, uint32_t size_kb, const char *name);
/* Adds data source `name` (target buffer 0); returns its entry. */
Perfetto__Protos__TraceConfig__DataSource *tc_ds(struct tc *t,
						 const char *name);
/* Sets trigger_config (mode, timeout) and adds trigger `name` if given. */
void tc_trigger(struct tc *t, int mode, uint32_t timeout_ms, const char *name);

/* A round trip: every earlier call of c was handled by the service. */
void cons_sync(struct cons *c);
/* Sends EnableTracing and waits until the service handled it (its reply
 * comes when the session ends, or at once for a refusal). */
void enable(struct cons *c, struct tc *t, int fd, struct enable_res *res);
/* Sends EnableTracing{attach_notification_only}, as enable(). */
void enable_notify(struct cons *c, struct enable_res *res);
/* Calls a method with an empty request; *reply (if wanted) to free. */
int call0(struct cons *c, const char *method,
	  const ProtobufCMessageDescriptor *d, ProtobufCMessage **reply);
int disable(struct cons *c);
int free_buffers(struct cons *c);
int start_tracing(struct cons *c);
int flush(struct cons *c, uint32_t timeout_ms);
/* Flush with FlushFlags (constants.md §7). */
int flush_flags(struct cons *c, uint32_t timeout_ms, uint64_t flags);

/* QueryServiceState, chunks merged into one state (free with qss_free);
 * acc (if not NULL) receives the chunk statistics. */
Perfetto__Protos__TracingServiceState *qss(struct cons *c, bool sessions_only,
					   struct qss_acc *acc);
void qss_free(Perfetto__Protos__TracingServiceState *st);
int num_sessions(struct cons *c);
/* Exactly one session exists, visible, in `state`. */
void assert_one_session(struct cons *c, const char *state);

/* The sdk_version prod_open() gives (QueryServiceState echoes it). */
#define PROD_SDK_VERSION "svc-test-producer 1.0"
/* Connects a producer named `name`, initialized, async stream open. */
void prod_open(struct env *e, struct prod *p, const char *name);
void prod_close(struct prod *p);
/* Sync: every earlier message of this producer reached the control plane. */
void prod_sync(struct prod *p);
/* Registers data source `name`; pad > 0 adds that many descriptor bytes. */
void prod_register(struct prod *p, const char *name, bool notify_start,
		   size_t pad);
void prod_notify_started(struct prod *p, uint64_t inst);
/* Pumps the producer until it saw n commands of kind `kind`. */
void prod_wait_cmd(struct prod *p, int kind, int n);
void prod_pump(struct prod *p, int ms);

#endif
