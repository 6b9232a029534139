// SPDX-License-Identifier: Apache-2.0
// CloneSession against an in-process spindled (consumer-port.md §12): a
// second consumer clones a running session; the clone holds every packet
// committed before the clone (and in the clone flush), with clone_started,
// buffer_cloned and a trace_uuid sharing the source's LSB; the source keeps
// running and its own read still returns everything; errors: unknown
// session, a caller that already has a session, the source freed while the
// clone waits for its flush.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "svc_harness.h"
#include "trace_packet.pb-c.h"

#define CALL_MS 10000
#define CMD(x) PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_##x

/* What one read of a session returned. */
struct rd {
	uint8_t *pkt;		/* packet being reassembled */
	size_t pkt_len;		/* its bytes */
	uint64_t *ts;		/* producer packets' timestamps, read order */
	size_t nts;		/* entries in ts */
	bool clone_started;	/* service_event.clone_started seen */
	int buffer_cloned;	/* service_event.buffer_cloned value, or -1 */
	bool uuid;		/* trace_uuid seen */
	int64_t msb, lsb;	/* its value */
	bool stats;		/* trace_stats seen */
};

static void rd_packet(struct rd *r)
{
	Perfetto__Protos__TracePacket *p =
		perfetto__protos__trace_packet__unpack(NULL, r->pkt_len, r->pkt);

	bool ev;

	assert_non_null(p);
	ev = p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_SERVICE_EVENT;
	if (ev && p->service_event->event_type_case ==
		    PERFETTO__PROTOS__TRACING_SERVICE_EVENT__EVENT_TYPE_CLONE_STARTED)
		r->clone_started = true;
	if (ev && p->service_event->event_type_case ==
		    PERFETTO__PROTOS__TRACING_SERVICE_EVENT__EVENT_TYPE_BUFFER_CLONED)
		r->buffer_cloned = (int)p->service_event->buffer_cloned;
	if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_UUID) {
		r->uuid = true;
		r->msb = p->trace_uuid->msb;
		r->lsb = p->trace_uuid->lsb;
	}
	if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_STATS)
		r->stats = true;
	if (p->optional_trusted_packet_sequence_id_case ==
		    PERFETTO__PROTOS__TRACE_PACKET__OPTIONAL_TRUSTED_PACKET_SEQUENCE_ID_TRUSTED_PACKET_SEQUENCE_ID &&
	    p->trusted_packet_sequence_id > 1 && p->has_timestamp) {
		r->ts = realloc(r->ts, (r->nts + 1) * sizeof(*r->ts));
		assert_non_null(r->ts);
		r->ts[r->nts++] = p->timestamp;
	}
	perfetto__protos__trace_packet__free_unpacked(p, NULL);
	r->pkt_len = 0;
}

static void rd_reply(void *arg, struct ipc_client_reply *rep)
{
	struct rd *r = arg;
	const Perfetto__Protos__ReadBuffersResponse *rb = (const void *)rep->msg;

	if (rep->status != 0)
		return;
	for (size_t i = 0; i < rb->n_slices; i++) {
		r->pkt = realloc(r->pkt, r->pkt_len + rb->slices[i]->data.len + 1);
		assert_non_null(r->pkt);
		memcpy(r->pkt + r->pkt_len, rb->slices[i]->data.data,
		       rb->slices[i]->data.len);
		r->pkt_len += rb->slices[i]->data.len;
		if (rb->slices[i]->last_slice_for_packet)
			rd_packet(r);
	}
}

/* ReadBuffers of c's session into *r (zeroed first). */
static void rd_read(struct th_cons *c, struct rd *r)
{
	Perfetto__Protos__ReadBuffersRequest req =
		PERFETTO__PROTOS__READ_BUFFERS_REQUEST__INIT;

	free(r->pkt);
	free(r->ts);
	memset(r, 0, sizeof(*r));
	r->buffer_cloned = -1;
	assert_int_equal(ipc_sync_stream(c->sync, c->port, "ReadBuffers",
					 &req.base, -1, rd_reply, r, CALL_MS),
			 0);
}

static void rd_free(struct rd *r)
{
	free(r->pkt);
	free(r->ts);
	memset(r, 0, sizeof(*r));
}

/* A CloneSession call in flight. */
struct clone_call {
	bool done;		/* reply came */
	int status;		/* its status */
	bool success;		/* CloneSessionResponse.success */
	char error[128];	/* .error */
	int64_t msb, lsb;	/* .uuid_* */
};

static void on_clone(void *arg, struct ipc_client_reply *rep)
{
	struct clone_call *cc = arg;
	const Perfetto__Protos__CloneSessionResponse *r = (const void *)rep->msg;

	cc->done = true;
	cc->status = rep->status;
	if (rep->status != 0 || !r)
		return;
	cc->success = r->success;
	if (r->error)
		snprintf(cc->error, sizeof(cc->error), "%s", r->error);
	cc->msb = r->uuid_msb;
	cc->lsb = r->uuid_lsb;
}

static void clone_start(struct th_cons *c, uint64_t id, const char *name,
			struct clone_call *cc)
{
	Perfetto__Protos__CloneSessionRequest req =
		PERFETTO__PROTOS__CLONE_SESSION_REQUEST__INIT;

	memset(cc, 0, sizeof(*cc));
	if (name) {
		req.selector_case =
			PERFETTO__PROTOS__CLONE_SESSION_REQUEST__SELECTOR_UNIQUE_SESSION_NAME;
		req.unique_session_name = (char *)name;
	} else {
		req.selector_case =
			PERFETTO__PROTOS__CLONE_SESSION_REQUEST__SELECTOR_SESSION_ID;
		req.session_id = id;
	}
	assert_int_equal(ipc_client_invoke(c->port, "CloneSession", &req.base,
					   -1, 0, on_clone, cc, NULL),
			 0);
	ipc_loop_run_once(ipc_sync_loop(c->sync), 0);
}

static void clone_wait(struct th_cons *c, struct clone_call *cc)
{
	for (int i = 0; i < CALL_MS / 10 && !cc->done; i++)
		ipc_loop_run_once(ipc_sync_loop(c->sync), 10);
	assert_true(cc->done);
	assert_int_equal(cc->status, 0);
}

/* Waits for producer command `cmd`, skipping others. */
static void wait_cmd(struct th_prod *p, int cmd)
{
	int k;

	while ((k = th_prod_wait_cmd(p)) != cmd)
		assert_int_not_equal(k, -1);
}

/* Acks the producer's last flush, committing `n` more packets first. */
static void ack_flush(struct th_prod *p, uint32_t *chunk, uint64_t ts0,
		      unsigned n)
{
	Perfetto__Protos__CommitDataRequest ack =
		PERFETTO__PROTOS__COMMIT_DATA_REQUEST__INIT;
	uint64_t id = th_prod_last_id(p);

	if (n)
		assert_int_equal(th_prod_write(p, 1, chunk, ts0, n, 16, 0,
					       p->smb.num_pages), n);
	ack.has_flush_request_id = true;
	ack.flush_request_id = id;
	th_prod_invoke(p, TH_COMMIT, &ack.base, true);
	assert_true(th_prod_fence(p));
}

/* Enables a session "src" of one 1 MiB buffer with data source ds. */
static void enable_src(struct th_cons *c)
{
	Perfetto__Protos__TraceConfig cfg = PERFETTO__PROTOS__TRACE_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__BufferConfig buf =
		PERFETTO__PROTOS__TRACE_CONFIG__BUFFER_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__DataSource ds =
		PERFETTO__PROTOS__TRACE_CONFIG__DATA_SOURCE__INIT;
	Perfetto__Protos__DataSourceConfig dsc =
		PERFETTO__PROTOS__DATA_SOURCE_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__BufferConfig *bufs[] = { &buf };
	Perfetto__Protos__TraceConfig__DataSource *dss[] = { &ds };

	buf.has_size_kb = true;
	buf.size_kb = 1024;
	dsc.name = "clone.ds";
	ds.config = &dsc;
	cfg.n_buffers = 1;
	cfg.buffers = bufs;
	cfg.n_data_sources = 1;
	cfg.data_sources = dss;
	cfg.unique_session_name = "src";
	cfg.has_flush_timeout_ms = true;
	cfg.flush_timeout_ms = 2000;
	th_cons_enable_cfg(c, &cfg);
}

/* Checks that r holds timestamps first..first+n-1 in order. */
static void expect_ts(const struct rd *r, uint64_t first, size_t n)
{
	assert_int_equal(r->nts, n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(r->ts[i], first + i);
}

static void test_clone(void **state)
{
	struct th_svc t;
	struct th_prod p;
	struct th_cons c1, c2;
	struct clone_call cc;
	struct rd r = { 0 }, src = { 0 };
	uint32_t chunk = 0;
	(void)state;

	th_svc_start(&t, 2);
	th_prod_connect(&p, &t, "clone.prod", "clone.ds");
	th_cons_connect(&c1, &t);
	th_cons_connect(&c2, &t);
	enable_src(&c1);
	wait_cmd(&p, CMD(START_DATA_SOURCE));
	assert_int_equal(th_prod_write(&p, 1, &chunk, 0, 300, 40, 0,
				       p.smb.num_pages), 300);
	assert_true(th_prod_fence(&p));

	/* Unknown session. */
	clone_start(&c2, 99, NULL, &cc);
	clone_wait(&c2, &cc);
	assert_false(cc.success);
	assert_string_equal(cc.error, "Tracing session not found");

	/* Clone by id (the first session of the service): the source is
	 * flushed first; what the producer commits before acking is in. */
	clone_start(&c2, 1, NULL, &cc);
	wait_cmd(&p, CMD(FLUSH));
	ack_flush(&p, &chunk, 300, 20);
	clone_wait(&c2, &cc);
	assert_true(cc.success);
	assert_string_equal(cc.error, "");

	/* After the clone, the source gets more the clone must not have. */
	assert_int_equal(th_prod_write(&p, 1, &chunk, 320, 30, 40, 0,
				       p.smb.num_pages), 30);
	assert_true(th_prod_fence(&p));

	rd_read(&c2, &r);
	expect_ts(&r, 0, 320);
	assert_true(r.clone_started);
	assert_int_equal(r.buffer_cloned, 0);
	assert_true(r.uuid);
	assert_int_equal(r.msb, cc.msb);
	assert_int_equal(r.lsb, cc.lsb);
	assert_true(r.stats);
	/* Reads are destructive in the clone too. */
	rd_read(&c2, &r);
	assert_int_equal(r.nts, 0);

	/* The source was not consumed by the clone. */
	rd_read(&c1, &src);
	expect_ts(&src, 0, 350);
	assert_true(src.uuid);
	assert_int_equal(src.lsb, cc.lsb);
	assert_true(src.msb != cc.msb);
	assert_false(src.clone_started);

	/* c2 holds the clone: a second clone is refused. */
	clone_start(&c2, 1, NULL, &cc);
	clone_wait(&c2, &cc);
	assert_false(cc.success);
	assert_string_equal(cc.error,
			    "The consumer is already attached to another "
			    "tracing session");
	assert_int_equal(th_cons_call(&c2, "FreeBuffers",
				      &perfetto__protos__free_buffers_request__descriptor),
			 0);

	/* By name, after the source read what it had: the clone keeps the
	 * source's read progress (nothing old comes back). */
	assert_int_equal(th_prod_write(&p, 1, &chunk, 350, 10, 40, 0,
				       p.smb.num_pages), 10);
	assert_true(th_prod_fence(&p));
	clone_start(&c2, 0, "src", &cc);
	wait_cmd(&p, CMD(FLUSH));
	ack_flush(&p, &chunk, 0, 0);
	clone_wait(&c2, &cc);
	assert_true(cc.success);
	rd_read(&c2, &r);
	expect_ts(&r, 350, 10);
	rd_read(&c1, &src);
	expect_ts(&src, 350, 10);
	assert_int_equal(th_cons_call(&c2, "FreeBuffers",
				      &perfetto__protos__free_buffers_request__descriptor),
			 0);

	/* The source goes while the clone waits for its flush. */
	clone_start(&c2, 1, NULL, &cc);
	wait_cmd(&p, CMD(FLUSH));
	assert_int_equal(th_cons_call(&c1, "FreeBuffers",
				      &perfetto__protos__free_buffers_request__descriptor),
			 0);
	clone_wait(&c2, &cc);
	assert_false(cc.success);
	assert_string_equal(cc.error, "Original session ended");
	/* And c2 has no session: ReadBuffers returns nothing. */
	rd_read(&c2, &r);
	assert_int_equal(r.nts, 0);
	assert_false(r.uuid);

	rd_free(&r);
	rd_free(&src);
	th_cons_close(&c1);
	th_cons_close(&c2);
	th_prod_close(&p);
	th_svc_stop(&t);
}

/* A consumer that leaves while its clone waits: no reply, no session
 * left behind; the service goes on. */
static void test_clone_caller_leaves(void **state)
{
	struct th_svc t;
	struct th_prod p;
	struct th_cons c1, c2, c3;
	struct clone_call cc;
	struct rd r = { 0 };
	uint32_t chunk = 0;
	(void)state;

	th_svc_start(&t, 1);
	th_prod_connect(&p, &t, "clone.prod", "clone.ds");
	th_cons_connect(&c1, &t);
	th_cons_connect(&c2, &t);
	enable_src(&c1);
	wait_cmd(&p, CMD(START_DATA_SOURCE));
	assert_int_equal(th_prod_write(&p, 1, &chunk, 0, 5, 0, 0,
				       p.smb.num_pages), 5);
	clone_start(&c2, 1, NULL, &cc);
	wait_cmd(&p, CMD(FLUSH));
	th_cons_close(&c2);
	ack_flush(&p, &chunk, 0, 0);
	/* A new consumer clones fine afterwards. */
	th_cons_connect(&c3, &t);
	clone_start(&c3, 1, NULL, &cc);
	wait_cmd(&p, CMD(FLUSH));
	ack_flush(&p, &chunk, 0, 0);
	clone_wait(&c3, &cc);
	assert_true(cc.success);
	rd_read(&c3, &r);
	expect_ts(&r, 0, 5);
	rd_free(&r);
	th_cons_close(&c3);
	th_cons_close(&c1);
	th_prod_close(&p);
	th_svc_stop(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clone),
		cmocka_unit_test(test_clone_caller_leaves),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
