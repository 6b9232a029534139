// SPDX-License-Identifier: Apache-2.0
// spindle-loadgen's consumer: the session it records over the consumer socket (EnableTracing for its own producers, Flush and DisableTracing when the threads are done, ReadBuffers into the checker, FreeBuffers), on the IPC client's blocking wrapper.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/spindle_loadgen.h"
#include "consumer_port.pb-c.h"
#include "ipc/client.h"
#include "ipc/sockname.h"

/* Time allowed to connect and for each call but ReadBuffers. */
#define LG_CALL_TIMEOUT_MS 15000

/* One call whose reply lands here as the loop runs. */
struct lg_call {
	bool done;			/* final reply or failure came */
	int status;			/* 0 or an ipc_client_reply status */
	ProtobufCMessage *msg;		/* the reply (owned) */
	uint64_t id;			/* request id */
};

/* The consumer connection and its session. */
struct lg_cons {
	struct ipc_sync *sync;		/* blocking wrapper and loop */
	struct ipc_proxy *port;		/* ConsumerPort */
	struct lg_call enable;		/* EnableTracing: replies at the end */
	const char *name;		/* socket name */
	char namebuf[128];		/* the default name, when used */
};

static const char *lg_status_str(int st)
{
	switch (st) {
	case -EREMOTEIO:
		return "rejected by the service";
	case -ECONNRESET:
		return "the service closed the connection";
	case -ETIMEDOUT:
		return "no answer from the service";
	default:
		return strerror(st < 0 ? -st : st);
	}
}

static void lg_call_cb(void *arg, struct ipc_client_reply *r)
{
	struct lg_call *call = arg;

	if (r->status == 0 && r->has_more)
		return;
	call->done = true;
	call->status = r->status;
	if (r->status == 0)
		call->msg = ipc_client_reply_take_msg(r);
}

static void lg_call_free(struct lg_call *call)
{
	if (call->msg)
		protobuf_c_message_free_unpacked(call->msg, NULL);
	call->msg = NULL;
}

/* Runs the loop until *done or ms. Returns 0, -ETIMEDOUT or the loop's
 * -errno. */
static int lg_wait(struct lg_cons *c, const bool *done, int ms)
{
	uint64_t deadline = lg_now_ns() + (uint64_t)ms * 1000000u;

	while (!*done) {
		uint64_t now = lg_now_ns();
		int rc;

		if (now >= deadline)
			return -ETIMEDOUT;
		rc = ipc_loop_run_once(ipc_sync_loop(c->sync),
				       (int)((deadline - now) / 1000000u) + 1);
		if (rc < 0 && rc != -EINTR)
			return rc;
	}
	return 0;
}

/* A unary call, waited for. Returns 0 or -errno / reply status. */
static int lg_call(struct lg_cons *c, const char *method, const ProtobufCMessage *req)
{
	struct lg_call call = { 0 };
	int rc = ipc_client_invoke(c->port, method, req, -1, 0, lg_call_cb, &call, &call.id);

	if (!rc)
		rc = lg_wait(c, &call.done, LG_CALL_TIMEOUT_MS);
	if (rc && !call.done)
		ipc_client_cancel(ipc_sync_client(c->sync), call.id);
	if (!rc)
		rc = call.status;
	lg_call_free(&call);
	if (rc)
		fprintf(stderr, "spindle-loadgen: %s: %s\n", method, lg_status_str(rc));
	return rc;
}

/* Sends EnableTracing of one ring buffer and the data source, for our
 * P producers only (and their SMB sizes, when given). */
static int lg_enable(struct lg_cons *c, const struct lg_opts *o)
{
	Perfetto__Protos__TraceConfig cfg = PERFETTO__PROTOS__TRACE_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__BufferConfig buf =
		PERFETTO__PROTOS__TRACE_CONFIG__BUFFER_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__BufferConfig *bufs[1] = { &buf };
	Perfetto__Protos__TraceConfig__DataSource ds =
		PERFETTO__PROTOS__TRACE_CONFIG__DATA_SOURCE__INIT;
	Perfetto__Protos__TraceConfig__DataSource *dss[1] = { &ds };
	Perfetto__Protos__DataSourceConfig dsc = PERFETTO__PROTOS__DATA_SOURCE_CONFIG__INIT;
	Perfetto__Protos__EnableTracingRequest req =
		PERFETTO__PROTOS__ENABLE_TRACING_REQUEST__INIT;
	Perfetto__Protos__TraceConfig__ProducerConfig *pc = NULL, **pcs = NULL;
	char (*names)[48] = calloc(o->producers, sizeof(*names));
	char **filter = calloc(o->producers, sizeof(*filter));
	int rc = -ENOMEM;

	if (!names || !filter)
		goto out;
	if (o->smb_kb || o->page_kb) {
		pc = calloc(o->producers, sizeof(*pc));
		pcs = calloc(o->producers, sizeof(*pcs));
		if (!pc || !pcs)
			goto out;
	}
	for (unsigned i = 0; i < o->producers; i++) {
		snprintf(names[i], sizeof(names[i]), "spindle-loadgen.%d.%u", (int)getpid(), i);
		filter[i] = names[i];
		if (!pc)
			continue;
		perfetto__protos__trace_config__producer_config__init(&pc[i]);
		pc[i].producer_name = names[i];
		pc[i].has_shm_size_kb = o->smb_kb != 0;
		pc[i].shm_size_kb = o->smb_kb;
		pc[i].has_page_size_kb = o->page_kb != 0;
		pc[i].page_size_kb = o->page_kb;
		pcs[i] = &pc[i];
	}
	buf.has_size_kb = true;
	buf.size_kb = o->buffer_kb;
	buf.has_fill_policy = true;
	buf.fill_policy = PERFETTO__PROTOS__TRACE_CONFIG__BUFFER_CONFIG__FILL_POLICY__RING_BUFFER;
	dsc.name = o->kind == LG_RAW ? LG_RAW_DS_NAME : "track_event";
	ds.config = &dsc;
	ds.n_producer_name_filter = o->producers;
	ds.producer_name_filter = filter;
	cfg.n_buffers = 1;
	cfg.buffers = bufs;
	cfg.n_data_sources = 1;
	cfg.data_sources = dss;
	cfg.n_producers = pcs ? o->producers : 0;
	cfg.producers = pcs;
	req.trace_config = &cfg;
	rc = ipc_client_invoke(c->port, "EnableTracing", &req.base, -1, 0, lg_call_cb,
			       &c->enable, &c->enable.id);
	if (rc)
		fprintf(stderr, "spindle-loadgen: EnableTracing: %s\n", lg_status_str(rc));
out:
	if (rc == -ENOMEM)
		fprintf(stderr, "spindle-loadgen: out of memory\n");
	free(names);
	free(filter);
	free(pc);
	free(pcs);
	return rc;
}

int lg_cons_start(const struct lg_opts *o, struct lg_cons **out)
{
	struct lg_cons *c = calloc(1, sizeof(*c));
	int rc;

	if (!c)
		return -ENOMEM;
	c->name = o->csock ? o->csock : ipc_default_socket(false, c->namebuf, sizeof(c->namebuf));
	rc = ipc_sync_connect(c->name, LG_CALL_TIMEOUT_MS, &c->sync);
	if (rc) {
		fprintf(stderr, "spindle-loadgen: cannot connect to the tracing service at %s: %s\n",
			c->name, lg_status_str(rc));
		free(c);
		return rc;
	}
	rc = ipc_sync_bind(c->sync, &perfetto__protos__consumer_port__descriptor, &c->port,
			   LG_CALL_TIMEOUT_MS);
	if (rc)
		fprintf(stderr, "spindle-loadgen: %s does not offer ConsumerPort: %s\n",
			c->name, lg_status_str(rc));
	else
		rc = lg_enable(c, o);
	if (rc) {
		lg_cons_close(c);
		return rc;
	}
	*out = c;
	return 0;
}

/* Prints why the session ended (EnableTracing answered). */
static int lg_enable_result(struct lg_cons *c)
{
	const Perfetto__Protos__EnableTracingResponse *r =
		(const Perfetto__Protos__EnableTracingResponse *)c->enable.msg;

	if (c->enable.status) {
		fprintf(stderr, "spindle-loadgen: EnableTracing: %s\n",
			lg_status_str(c->enable.status));
		return c->enable.status;
	}
	if (r && r->error && *r->error) {
		fprintf(stderr, "spindle-loadgen: tracing failed: %s\n", r->error);
		return -EREMOTEIO;
	}
	return 0;
}

int lg_cons_pump(struct lg_cons *c, int ms)
{
	int rc = ipc_loop_run_once(ipc_sync_loop(c->sync), ms);

	if (rc < 0 && rc != -EINTR) {
		fprintf(stderr, "spindle-loadgen: event loop failed: %s\n", strerror(-rc));
		return rc;
	}
	if (c->enable.done) {
		if (!lg_enable_result(c))
			fprintf(stderr, "spindle-loadgen: the session ended early\n");
		return -ECANCELED;
	}
	return 0;
}

int lg_cons_stop(struct lg_cons *c)
{
	Perfetto__Protos__FlushRequest fr = PERFETTO__PROTOS__FLUSH_REQUEST__INIT;
	Perfetto__Protos__DisableTracingRequest dr =
		PERFETTO__PROTOS__DISABLE_TRACING_REQUEST__INIT;
	int rc;

	fr.has_timeout_ms = true;
	fr.timeout_ms = LG_CALL_TIMEOUT_MS - 1000;
	/* A failed flush is reported; what it missed shows as lost. */
	lg_call(c, "Flush", &fr.base);
	rc = lg_call(c, "DisableTracing", &dr.base);
	if (!rc)
		rc = lg_wait(c, &c->enable.done, LG_CALL_TIMEOUT_MS);
	if (rc == -ETIMEDOUT)
		fprintf(stderr, "spindle-loadgen: the session did not end\n");
	if (!rc)
		rc = lg_enable_result(c);
	return rc;
}

/* Each slice of a ReadBuffers reply goes to the checker. */
static void lg_read_cb(void *arg, struct ipc_client_reply *r)
{
	const Perfetto__Protos__ReadBuffersResponse *m;

	if (r->status)
		return;
	m = (const Perfetto__Protos__ReadBuffersResponse *)r->msg;
	for (size_t i = 0; i < m->n_slices; i++) {
		const Perfetto__Protos__ReadBuffersResponse__Slice *s = m->slices[i];

		lg_check_slice(arg, s->has_data ? s->data.data : NULL,
			       s->has_data ? s->data.len : 0, s->last_slice_for_packet);
	}
}

int lg_cons_read(struct lg_cons *c, struct lg_check *chk)
{
	Perfetto__Protos__ReadBuffersRequest rr = PERFETTO__PROTOS__READ_BUFFERS_REQUEST__INIT;
	Perfetto__Protos__FreeBuffersRequest fr = PERFETTO__PROTOS__FREE_BUFFERS_REQUEST__INIT;
	int rc;

	/* No time limit: a big trace takes a while; a dead service ends the
	 * stream with -ECONNRESET. */
	rc = ipc_sync_stream(c->sync, c->port, "ReadBuffers", &rr.base, -1, lg_read_cb, chk, -1);
	if (rc) {
		fprintf(stderr, "spindle-loadgen: ReadBuffers: %s\n", lg_status_str(rc));
		return rc;
	}
	lg_call(c, "FreeBuffers", &fr.base);
	return 0;
}

void lg_cons_close(struct lg_cons *c)
{
	if (!c)
		return;
	if (c->enable.id && !c->enable.done)
		ipc_client_cancel(ipc_sync_client(c->sync), c->enable.id);
	lg_call_free(&c->enable);
	ipc_sync_close(c->sync);
	free(c);
}
