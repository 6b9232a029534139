// SPDX-License-Identifier: Apache-2.0
// Helpers of the ConsumerPort integration tests (svc_consumer_util.h).
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/service.h"
#include "svc_consumer_util.h"

unsigned env_lanes = 1;

/* --- service, clients, configs --- */

int env_setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	struct svc_opts o = { 0 };

	assert_non_null(e);
	e->arg = *state;
	strcpy(e->dir, "/tmp/spn_cons_XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	snprintf(e->psock, sizeof(e->psock), "%s/p.sock", e->dir);
	snprintf(e->csock, sizeof(e->csock), "%s/c.sock", e->dir);
	o.producer_socket = e->psock;
	o.consumer_socket = e->csock;
	o.lanes = env_lanes;
	o.control = 1;
	assert_int_equal(svc_start(&o, &e->svc), 0);
	*state = e;
	return 0;
}

int env_teardown(void **state)
{
	struct env *e = *state;
	DIR *d;
	struct dirent *de;
	char path[512];

	svc_stop(e->svc);
	d = opendir(e->dir);
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", e->dir, de->d_name);
		unlink(path);
	}
	if (d)
		closedir(d);
	rmdir(e->dir);
	free(e);
	return 0;
}

void cons_open(struct env *e, struct cons *c)
{
	assert_int_equal(ipc_sync_connect(e->csock, CALL_MS, &c->sync), 0);
	assert_int_equal(ipc_sync_bind(c->sync,
				       &perfetto__protos__consumer_port__descriptor,
				       &c->port, CALL_MS),
			 0);
}

void cons_close(struct cons *c)
{
	ipc_sync_close(c->sync);
	c->sync = NULL;
}

/* Runs the consumer's loop for up to ms (replies to async calls land). */
void pump(struct cons *c, int ms)
{
	ipc_loop_run_once(ipc_sync_loop(c->sync), ms);
}

int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Pumps c until *flag or ms elapsed. */
void wait_flag(struct cons *c, const bool *flag, int ms)
{
	int64_t end = now_ms() + ms;

	while (!*flag && now_ms() < end)
		pump(c, 20);
}

int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

void tc_init(struct tc *t, uint32_t size_kb)
{
	memset(t, 0, sizeof(*t));
	perfetto__protos__trace_config__init(&t->cfg);
	perfetto__protos__trace_config__buffer_config__init(&t->buf[0]);
	t->buf[0].has_size_kb = true;
	t->buf[0].size_kb = size_kb;
	t->bufp[0] = &t->buf[0];
	t->cfg.n_buffers = 1;
	t->cfg.buffers = t->bufp;
}

void tc_add_buffer(struct tc *t, uint32_t size_kb, const char *name)
{
	size_t i = t->cfg.n_buffers++;

	perfetto__protos__trace_config__buffer_config__init(&t->buf[i]);
	t->buf[i].has_size_kb = true;
	t->buf[i].size_kb = size_kb;
	t->buf[i].name = (char *)name;
	t->bufp[i] = &t->buf[i];
}

/* Adds data source `name` (target buffer 0); returns its entry. */
Perfetto__Protos__TraceConfig__DataSource *tc_ds(struct tc *t,
							 const char *name)
{
	size_t i = t->cfg.n_data_sources++;

	perfetto__protos__trace_config__data_source__init(&t->ds[i]);
	perfetto__protos__data_source_config__init(&t->dsc[i]);
	t->dsc[i].name = (char *)name;
	t->ds[i].config = &t->dsc[i];
	t->dsp[i] = &t->ds[i];
	t->cfg.data_sources = t->dsp;
	return &t->ds[i];
}

void tc_trigger(struct tc *t, int mode, uint32_t timeout_ms,
		       const char *name)
{
	perfetto__protos__trace_config__trigger_config__init(&t->trig);
	t->trig.has_trigger_mode = true;
	t->trig.trigger_mode = mode;
	t->trig.has_trigger_timeout_ms = true;
	t->trig.trigger_timeout_ms = timeout_ms;
	if (name) {
		size_t i = t->trig.n_triggers++;

		perfetto__protos__trace_config__trigger_config__trigger__init(
			&t->tr[i]);
		t->tr[i].name = (char *)name;
		t->trp[i] = &t->tr[i];
		t->trig.triggers = t->trp;
	}
	t->cfg.trigger_config = &t->trig;
}

static void on_enable(void *arg, struct ipc_client_reply *r)
{
	struct enable_res *res = arg;

	res->done = true;
	res->status = r->status;
	if (r->status == 0) {
		const Perfetto__Protos__EnableTracingResponse *e =
			(const void *)r->msg;

		res->disabled = e->disabled;
		snprintf(res->error, sizeof(res->error), "%s",
			 e->error ? e->error : "");
	}
}

/* Starts EnableTracing (the reply comes when the session ends). */
void enable(struct cons *c, struct tc *t, int fd, struct enable_res *res)
{
	Perfetto__Protos__EnableTracingRequest req =
		PERFETTO__PROTOS__ENABLE_TRACING_REQUEST__INIT;

	memset(res, 0, sizeof(*res));
	req.trace_config = &t->cfg;
	assert_int_equal(ipc_client_invoke(c->port, "EnableTracing", &req.base,
					   fd, 0, on_enable, res, NULL),
			 0);
	cons_sync(c);
}

void enable_notify(struct cons *c, struct enable_res *res)
{
	Perfetto__Protos__EnableTracingRequest req =
		PERFETTO__PROTOS__ENABLE_TRACING_REQUEST__INIT;

	memset(res, 0, sizeof(*res));
	req.has_attach_notification_only = true;
	req.attach_notification_only = true;
	assert_int_equal(ipc_client_invoke(c->port, "EnableTracing", &req.base,
					   -1, 0, on_enable, res, NULL),
			 0);
	cons_sync(c);
}

/* A round trip: every earlier call of c was handled by the service (the
 * control plane takes one connection's calls in order). */
void cons_sync(struct cons *c)
{
	assert_int_equal(call0(c, "QueryCapabilities",
			       &perfetto__protos__query_capabilities_request__descriptor,
			       NULL),
			 0);
}

/* Calls a method whose request has no field set; *reply if wanted. */
int call0(struct cons *c, const char *method,
		 const ProtobufCMessageDescriptor *d, ProtobufCMessage **reply)
{
	_Alignas(max_align_t) unsigned char req[256];

	assert_true(d->sizeof_message <= sizeof(req));
	protobuf_c_message_init(d, req);
	return ipc_sync_call(c->sync, c->port, method, (ProtobufCMessage *)req,
			     -1, reply, NULL, CALL_MS);
}

int disable(struct cons *c)
{
	return call0(c, "DisableTracing",
		     &perfetto__protos__disable_tracing_request__descriptor,
		     NULL);
}

int free_buffers(struct cons *c)
{
	return call0(c, "FreeBuffers",
		     &perfetto__protos__free_buffers_request__descriptor, NULL);
}

int start_tracing(struct cons *c)
{
	return call0(c, "StartTracing",
		     &perfetto__protos__start_tracing_request__descriptor,
		     NULL);
}

int flush(struct cons *c, uint32_t timeout_ms)
{
	return flush_flags(c, timeout_ms, 0);
}

int flush_flags(struct cons *c, uint32_t timeout_ms, uint64_t flags)
{
	Perfetto__Protos__FlushRequest req = PERFETTO__PROTOS__FLUSH_REQUEST__INIT;

	req.has_timeout_ms = true;
	req.timeout_ms = timeout_ms;
	req.has_flags = flags != 0;
	req.flags = flags;
	return ipc_sync_call(c->sync, c->port, "Flush", &req.base, -1, NULL,
			     NULL, CALL_MS);
}

/* --- QueryServiceState --- */


static void on_qss(void *arg, struct ipc_client_reply *r)
{
	struct qss_acc *a = arg;
	const Perfetto__Protos__QueryServiceStateResponse *q;
	const Perfetto__Protos__TracingServiceState *st;
	size_t n;

	if (r->status != 0)
		return;
	q = (const void *)r->msg;
	st = q->service_state;
	assert_non_null(st);
	n = protobuf_c_message_get_packed_size(&st->base);
	a->buf = realloc(a->buf, a->len + n + 1);
	assert_non_null(a->buf);
	protobuf_c_message_pack(&st->base, a->buf + a->len);
	a->len += n;
	if (n > a->largest)
		a->largest = n;
	if (a->chunks == 0) {
		a->first_has_ds = st->n_data_sources > 0;
		a->first_ds = st->n_data_sources;
	}
	else if (st->n_producers || st->n_tracing_sessions ||
		 st->has_num_sessions)
		a->later_not_ds = true;
	a->chunks++;
	a->more += r->has_more;
}

/* QueryServiceState; the chunks are merged into one state (caller frees). */
Perfetto__Protos__TracingServiceState *qss(struct cons *c,
						  bool sessions_only,
						  struct qss_acc *acc)
{
	Perfetto__Protos__QueryServiceStateRequest req =
		PERFETTO__PROTOS__QUERY_SERVICE_STATE_REQUEST__INIT;
	struct qss_acc local = { 0 }, *a = acc ? acc : &local;
	Perfetto__Protos__TracingServiceState *st;

	memset(a, 0, sizeof(*a));
	if (sessions_only) {
		req.has_sessions_only = true;
		req.sessions_only = true;
	}
	assert_int_equal(ipc_sync_stream(c->sync, c->port, "QueryServiceState",
					 &req.base, -1, on_qss, a, CALL_MS),
			 0);
	assert_true(a->chunks >= 1);
	assert_int_equal(a->more, a->chunks - 1);
	st = perfetto__protos__tracing_service_state__unpack(NULL, a->len,
							     a->buf);
	assert_non_null(st);
	free(a->buf);
	a->buf = NULL;
	return st;
}

void qss_free(Perfetto__Protos__TracingServiceState *st)
{
	perfetto__protos__tracing_service_state__free_unpacked(st, NULL);
}

int num_sessions(struct cons *c)
{
	Perfetto__Protos__TracingServiceState *st = qss(c, true, NULL);
	int n = st->num_sessions;

	qss_free(st);
	return n;
}

/* The state string of the only session visible. */
void assert_one_session(struct cons *c, const char *state)
{
	Perfetto__Protos__TracingServiceState *st = qss(c, true, NULL);

	assert_int_equal(st->num_sessions, 1);
	assert_int_equal(st->n_tracing_sessions, 1);
	assert_string_equal(st->tracing_sessions[0]->state, state);
	qss_free(st);
}


static void on_cmd(void *arg, struct ipc_client_reply *r)
{
	struct prod *p = arg;
	const Perfetto__Protos__GetAsyncCommandResponse *c;
	int fd;

	if (r->status != 0 || !r->has_more) {
		p->stream_ended = true;
		if (r->status != 0)
			return;
	}
	fd = ipc_client_reply_take_fd(r);
	if (fd >= 0)
		close(fd); /* the SMB: this producer never writes */
	c = (const void *)r->msg;
	p->cmds[c->cmd_case & 7]++;
	if (c->cmd_case ==
		    PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE &&
	    p->nstarted < 16)
		p->started[p->nstarted++] = c->start_data_source->new_instance_id;
}

/* Sync: every earlier message of this producer reached the control plane. */
void prod_sync(struct prod *p)
{
	Perfetto__Protos__SyncRequest req = PERFETTO__PROTOS__SYNC_REQUEST__INIT;

	assert_int_equal(ipc_sync_call(p->sync, p->port, "Sync", &req.base, -1,
				       NULL, NULL, CALL_MS),
			 0);
}

void prod_open(struct env *e, struct prod *p, const char *name)
{
	Perfetto__Protos__InitializeConnectionRequest init =
		PERFETTO__PROTOS__INITIALIZE_CONNECTION_REQUEST__INIT;
	Perfetto__Protos__GetAsyncCommandRequest ga =
		PERFETTO__PROTOS__GET_ASYNC_COMMAND_REQUEST__INIT;

	memset(p, 0, sizeof(*p));
	assert_int_equal(ipc_sync_connect(e->psock, CALL_MS, &p->sync), 0);
	assert_int_equal(ipc_sync_bind(p->sync,
				       &perfetto__protos__producer_port__descriptor,
				       &p->port, CALL_MS),
			 0);
	init.producer_name = (char *)name;
	init.sdk_version = (char *)PROD_SDK_VERSION;
	init.has_shared_memory_size_hint_bytes = true;
	init.shared_memory_size_hint_bytes = 65536;
	assert_int_equal(ipc_sync_call(p->sync, p->port, "InitializeConnection",
				       &init.base, -1, NULL, NULL, CALL_MS),
			 0);
	assert_int_equal(ipc_client_invoke(p->port, "GetAsyncCommand", &ga.base,
					   -1, 0, on_cmd, p, NULL),
			 0);
	prod_sync(p);
}

/* Registers data source `name`; pad > 0 adds a descriptor payload of that
 * many bytes (track_event_descriptor). */
void prod_register(struct prod *p, const char *name, bool notify_start,
			  size_t pad)
{
	Perfetto__Protos__RegisterDataSourceRequest req =
		PERFETTO__PROTOS__REGISTER_DATA_SOURCE_REQUEST__INIT;
	Perfetto__Protos__DataSourceDescriptor d =
		PERFETTO__PROTOS__DATA_SOURCE_DESCRIPTOR__INIT;
	uint8_t *b = NULL;

	d.name = (char *)name;
	d.has_will_notify_on_start = notify_start;
	d.will_notify_on_start = notify_start;
	if (pad) {
		b = malloc(pad);
		assert_non_null(b);
		memset(b, 'x', pad);
		d.has_track_event_descriptor = true;
		d.track_event_descriptor.data = b;
		d.track_event_descriptor.len = pad;
	}
	req.data_source_descriptor = &d;
	assert_int_equal(ipc_sync_call(p->sync, p->port, "RegisterDataSource",
				       &req.base, -1, NULL, NULL, CALL_MS),
			 0);
	free(b);
}

void prod_notify_started(struct prod *p, uint64_t inst)
{
	Perfetto__Protos__NotifyDataSourceStartedRequest req =
		PERFETTO__PROTOS__NOTIFY_DATA_SOURCE_STARTED_REQUEST__INIT;

	req.has_data_source_id = true;
	req.data_source_id = inst;
	assert_int_equal(ipc_sync_call(p->sync, p->port,
				       "NotifyDataSourceStarted", &req.base, -1,
				       NULL, NULL, CALL_MS),
			 0);
}

/* Pumps the producer until it saw `n` commands of kind `kind`. */
void prod_wait_cmd(struct prod *p, int kind, int n)
{
	int64_t end = now_ms() + CALL_MS;

	while (p->cmds[kind & 7] < n && now_ms() < end)
		ipc_loop_run_once(ipc_sync_loop(p->sync), 20);
	assert_true(p->cmds[kind & 7] >= n);
}

void prod_close(struct prod *p)
{
	ipc_sync_close(p->sync);
	p->sync = NULL;
}



void prod_pump(struct prod *p, int ms)
{
	ipc_loop_run_once(ipc_sync_loop(p->sync), ms);
}
