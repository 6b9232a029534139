// SPDX-License-Identifier: Apache-2.0
// CloneSession against an in-process spindled (consumer-port.md §12), each
// test with 1 lane and 1 control thread (no control worker: the copies run
// on control thread 0) and with 2 lanes and 2 control threads (copies on
// the worker): a second consumer clones a running session; the clone holds
// every packet committed before the clone (and in the clone flush), with
// clone_started, buffer_cloned and a trace_uuid sharing the source's LSB;
// the source keeps running and its own read still returns everything;
// write_into_file sources (the clone written after the source file's copy
// into the fd sent with the request, which is required); clear_before_clone
// and transfer_on_clone buffers (two flush groups; the source keeps
// writing into its new buffer); a clone while a producer commits flat out
// (its flush times out: final_flush_outcome FAILED); the spindle CLI's
// --clone of a write_into_file session; errors: unknown session, a caller
// that already has a session, the source freed while the clone waits for
// its flush.
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "svc_harness.h"
#include "trace_packet.pb-c.h"

#define CALL_MS 10000
#define CMD(x) PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_##x

/* Threads of the service under test. */
struct mode {
	unsigned lanes;		/* --lanes */
	unsigned control;	/* --control (1: no worker) */
};

static const struct mode MODE_1 = { 1, 1 };
static const struct mode MODE_2 = { 2, 2 };

static void svc_start_mode(struct th_svc *t, void **state)
{
	const struct mode *m = *state;

	th_svc_start_ex(t, m->lanes, m->control);
}

/* What one read of a session (or a trace file) held. */
struct rd {
	uint8_t *pkt;		/* packet being reassembled */
	size_t pkt_len;		/* its bytes */
	uint64_t *ts;		/* producer packets' timestamps, read order */
	bool *lost;		/* their previous_packet_dropped was set */
	size_t nts;		/* entries in ts and lost */
	size_t cap;		/* entries allocated */
	bool clone_started;	/* service_event.clone_started seen */
	int buffer_cloned;	/* service_event.buffer_cloned value, or -1 */
	bool uuid;		/* trace_uuid seen */
	int64_t msb, lsb;	/* its (last) value */
	bool stats;		/* trace_stats seen */
	int flush_outcome;	/* its final_flush_outcome (-1: none seen) */
	unsigned configs;	/* trace_config packets */
};

static void rd_take(struct rd *r, const Perfetto__Protos__TracePacket *p)
{
	bool ev = p->data_case ==
		  PERFETTO__PROTOS__TRACE_PACKET__DATA_SERVICE_EVENT;

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
	if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_CONFIG)
		r->configs++;
	if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_STATS) {
		r->stats = true;
		r->flush_outcome = p->trace_stats->has_final_flush_outcome
					   ? (int)p->trace_stats->final_flush_outcome
					   : 0;
	}
	if (p->optional_trusted_packet_sequence_id_case ==
		    PERFETTO__PROTOS__TRACE_PACKET__OPTIONAL_TRUSTED_PACKET_SEQUENCE_ID_TRUSTED_PACKET_SEQUENCE_ID &&
	    p->trusted_packet_sequence_id > 1 && p->has_timestamp) {
		if (r->nts == r->cap) {
			r->cap = r->cap ? 2 * r->cap : 1024;
			r->ts = realloc(r->ts, r->cap * sizeof(*r->ts));
			r->lost = realloc(r->lost, r->cap * sizeof(*r->lost));
			assert_non_null(r->ts);
			assert_non_null(r->lost);
		}
		r->lost[r->nts] = p->previous_packet_dropped != 0;
		r->ts[r->nts++] = p->timestamp;
	}
}

static void rd_packet(struct rd *r)
{
	Perfetto__Protos__TracePacket *p =
		perfetto__protos__trace_packet__unpack(NULL, r->pkt_len, r->pkt);

	assert_non_null(p);
	rd_take(r, p);
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

static void rd_reset(struct rd *r)
{
	free(r->pkt);
	free(r->ts);
	free(r->lost);
	memset(r, 0, sizeof(*r));
	r->buffer_cloned = -1;
	r->flush_outcome = -1;
}

/* ReadBuffers of c's session into *r (reset first). */
static void rd_read(struct th_cons *c, struct rd *r)
{
	Perfetto__Protos__ReadBuffersRequest req =
		PERFETTO__PROTOS__READ_BUFFERS_REQUEST__INIT;

	rd_reset(r);
	assert_int_equal(ipc_sync_stream(c->sync, c->port, "ReadBuffers",
					 &req.base, -1, rd_reply, r, CALL_MS),
			 0);
}

/* Decodes the trace file at path into *r (reset first). */
static void rd_file(const char *path, struct rd *r)
{
	Perfetto__Protos__Trace *t;
	struct stat st;
	uint8_t *buf;
	FILE *f;

	rd_reset(r);
	assert_int_equal(stat(path, &st), 0);
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	assert_non_null(buf);
	f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fread(buf, 1, (size_t)st.st_size, f), st.st_size);
	fclose(f);
	t = perfetto__protos__trace__unpack(NULL, (size_t)st.st_size, buf);
	free(buf);
	assert_non_null(t);
	for (size_t i = 0; i < t->n_packet; i++)
		rd_take(r, t->packet[i]);
	perfetto__protos__trace__free_unpacked(t, NULL);
}

static void rd_free(struct rd *r)
{
	free(r->pkt);
	free(r->ts);
	free(r->lost);
	memset(r, 0, sizeof(*r));
}

/* A CloneSession call in flight. */
struct clone_call {
	bool done;		/* reply came */
	int status;		/* its status */
	bool success;		/* CloneSessionResponse.success */
	char error[256];	/* .error */
	int64_t msb, lsb;	/* .uuid_* */
	bool in_file;		/* .was_write_into_file */
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
	cc->in_file = r->was_write_into_file;
}

/* Sends CloneSession (by id, or by name when name is set) with fd (-1:
 * none) attached. */
static void clone_start(struct th_cons *c, uint64_t id, const char *name,
			int fd, struct clone_call *cc)
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
					   fd, 0, on_clone, cc, NULL),
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

/* Writes n packets ts0.. of writer w; all must fit. */
static void put(struct th_prod *p, uint16_t w, uint32_t *chunk, uint64_t ts0,
		unsigned n)
{
	assert_int_equal(th_prod_write(p, w, chunk, ts0, n, 40, 0,
				       p->smb.num_pages), n);
	assert_true(th_prod_fence(p));
}

/* The source session "src" a test enables. */
struct src_opts {
	unsigned nbufs;		/* buffers (1 or 2; 0 = 1) */
	uint32_t size_kb;	/* each buffer's size (0: 1024) */
	bool clear[2];		/* clear_before_clone per buffer */
	bool transfer[2];	/* transfer_on_clone per buffer */
	bool discard;		/* fill_policy DISCARD (else ring) */
	const char *ds2;	/* a second data source, into buffer 1 */
	bool file;		/* write_into_file (into fx.src_path) */
	uint32_t flush_timeout_ms; /* 0: 2000 */
	bool deflate;		/* compression_type DEFLATE */
};

/* Enables "src": data source clone.ds into buffer 0 (and o->ds2 into 1),
 * writing into file `path` if o->file. */
static void enable_src(struct th_cons *c, const struct src_opts *o,
		       const char *path)
{
	Perfetto__Protos__TraceConfig cfg = PERFETTO__PROTOS__TRACE_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__BufferConfig buf[2];
	Perfetto__Protos__TraceConfig__DataSource ds[2];
	Perfetto__Protos__DataSourceConfig dsc[2];
	Perfetto__Protos__TraceConfig__BufferConfig *bufs[2];
	Perfetto__Protos__TraceConfig__DataSource *dss[2];
	unsigned nb = o->nbufs ? o->nbufs : 1;

	for (unsigned i = 0; i < 2; i++) {
		perfetto__protos__trace_config__buffer_config__init(&buf[i]);
		perfetto__protos__trace_config__data_source__init(&ds[i]);
		perfetto__protos__data_source_config__init(&dsc[i]);
		buf[i].has_size_kb = true;
		buf[i].size_kb = o->size_kb ? o->size_kb : 1024;
		buf[i].has_clear_before_clone = o->clear[i];
		buf[i].clear_before_clone = o->clear[i];
		buf[i].has_transfer_on_clone = o->transfer[i];
		buf[i].transfer_on_clone = o->transfer[i];
		buf[i].has_fill_policy = o->discard;
		buf[i].fill_policy =
			PERFETTO__PROTOS__TRACE_CONFIG__BUFFER_CONFIG__FILL_POLICY__DISCARD;
		bufs[i] = &buf[i];
		ds[i].config = &dsc[i];
		dss[i] = &ds[i];
	}
	dsc[0].name = "clone.ds";
	dsc[1].name = (char *)o->ds2;
	dsc[1].has_target_buffer = true;
	dsc[1].target_buffer = 1;
	cfg.n_buffers = nb;
	cfg.buffers = bufs;
	cfg.n_data_sources = o->ds2 ? 2 : 1;
	cfg.data_sources = dss;
	cfg.unique_session_name = "src";
	cfg.has_flush_timeout_ms = true;
	cfg.flush_timeout_ms = o->flush_timeout_ms ? o->flush_timeout_ms : 2000;
	if (o->file) {
		cfg.has_write_into_file = true;
		cfg.write_into_file = true;
		cfg.output_path = (char *)path;
		/* Only the clone and the end drain the session here. */
		cfg.has_file_write_period_ms = true;
		cfg.file_write_period_ms = 3600 * 1000;
	}
	if (o->deflate) {
		cfg.has_compression_type = true;
		cfg.compression_type =
			PERFETTO__PROTOS__TRACE_CONFIG__COMPRESSION_TYPE__COMPRESSION_TYPE_DEFLATE;
	}
	th_cons_enable_cfg(c, &cfg);
}

/* Checks that r holds timestamps first..first+n-1 in order. */
static void expect_ts(const struct rd *r, uint64_t first, size_t n)
{
	assert_int_equal(r->nts, n);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(r->ts[i], first + i);
}

/* How many of r's timestamps are in [lo, hi). */
static size_t count_ts(const struct rd *r, uint64_t lo, uint64_t hi)
{
	size_t n = 0;

	for (size_t i = 0; i < r->nts; i++)
		n += r->ts[i] >= lo && r->ts[i] < hi;
	return n;
}

static void free_buffers(struct th_cons *c)
{
	assert_int_equal(th_cons_call(c, "FreeBuffers",
				      &perfetto__protos__free_buffers_request__descriptor),
			 0);
}

/* What a test starts from: the service (in the test's mode), producer
 * clone.prod with data source clone.ds (and o->ds2), consumer c1 owning the
 * started session "src", consumer c2 to clone it. */
struct fx {
	struct th_svc t;	/* the service */
	struct th_prod p;	/* the producer */
	struct th_cons c1;	/* the source's consumer */
	struct th_cons c2;	/* the cloning consumer */
	uint32_t buf[2];	/* BufferIDs clone.ds and ds2 write into */
	char src_path[160];	/* the source's file (write_into_file) */
	char out_path[160];	/* a file for the clone */
	struct rd r;		/* reads */
	uint32_t chunk;		/* next chunk id of writer 1 */
};

static void fx_start(struct fx *f, void **state, const struct src_opts *o)
{
	unsigned nds = o->ds2 ? 2 : 1;

	memset(f, 0, sizeof(*f));
	svc_start_mode(&f->t, state);
	snprintf(f->src_path, sizeof(f->src_path), "%s/src.pftrace", f->t.dir);
	snprintf(f->out_path, sizeof(f->out_path), "%s/clone.pftrace",
		 f->t.dir);
	th_prod_connect(&f->p, &f->t, "clone.prod", "clone.ds");
	if (o->ds2)
		th_prod_register(&f->p, o->ds2, NULL);
	th_cons_connect(&f->c1, &f->t);
	th_cons_connect(&f->c2, &f->t);
	enable_src(&f->c1, o, f->src_path);
	for (unsigned i = 0; i < nds; i++) {
		wait_cmd(&f->p, CMD(SETUP_DATA_SOURCE));
		f->buf[i] = f->p.target_buffer;
	}
	for (unsigned i = 0; i < nds; i++)
		wait_cmd(&f->p, CMD(START_DATA_SOURCE));
	f->p.target_buffer = f->buf[0];
}

static void fx_stop(struct fx *f)
{
	rd_free(&f->r);
	th_cons_close(&f->c1);
	th_cons_close(&f->c2);
	th_prod_close(&f->p);
	unlink(f->src_path);
	unlink(f->out_path);
	th_svc_stop(&f->t);
}

static void test_clone(void **state)
{
	struct fx f;
	struct clone_call cc;
	struct rd src = { 0 };

	fx_start(&f, state, &(struct src_opts){ 0 });
	assert_int_equal(th_prod_write(&f.p, 1, &f.chunk, 0, 300, 40, 0,
				       f.p.smb.num_pages), 300);
	assert_true(th_prod_fence(&f.p));

	/* Unknown session. */
	clone_start(&f.c2, 99, NULL, -1, &cc);
	clone_wait(&f.c2, &cc);
	assert_false(cc.success);
	assert_string_equal(cc.error, "Tracing session not found");

	/* Clone by id (the first session of the service): the source is
	 * flushed first; what the producer commits before acking is in. */
	clone_start(&f.c2, 1, NULL, -1, &cc);
	wait_cmd(&f.p, CMD(FLUSH));
	ack_flush(&f.p, &f.chunk, 300, 20);
	clone_wait(&f.c2, &cc);
	assert_true(cc.success);
	assert_false(cc.in_file);
	assert_string_equal(cc.error, "");

	/* After the clone, the source gets more the clone must not have. */
	assert_int_equal(th_prod_write(&f.p, 1, &f.chunk, 320, 30, 40, 0,
				       f.p.smb.num_pages), 30);
	assert_true(th_prod_fence(&f.p));

	rd_read(&f.c2, &f.r);
	expect_ts(&f.r, 0, 320);
	assert_true(f.r.clone_started);
	assert_int_equal(f.r.buffer_cloned, 0);
	assert_true(f.r.uuid);
	assert_int_equal(f.r.msb, cc.msb);
	assert_int_equal(f.r.lsb, cc.lsb);
	assert_true(f.r.stats);
	assert_int_equal(f.r.flush_outcome, 0);
	/* Reads are destructive in the clone too. */
	rd_read(&f.c2, &f.r);
	assert_int_equal(f.r.nts, 0);

	/* The source was not consumed by the clone. */
	rd_read(&f.c1, &src);
	expect_ts(&src, 0, 350);
	assert_true(src.uuid);
	assert_int_equal(src.lsb, cc.lsb);
	assert_true(src.msb != cc.msb);
	assert_false(src.clone_started);

	/* c2 holds the clone: a second clone is refused. */
	clone_start(&f.c2, 1, NULL, -1, &cc);
	clone_wait(&f.c2, &cc);
	assert_false(cc.success);
	assert_string_equal(cc.error,
			    "The consumer is already attached to another "
			    "tracing session");
	free_buffers(&f.c2);

	/* By name, after the source read what it had: the clone keeps the
	 * source's read progress (nothing old comes back). */
	assert_int_equal(th_prod_write(&f.p, 1, &f.chunk, 350, 10, 40, 0,
				       f.p.smb.num_pages), 10);
	assert_true(th_prod_fence(&f.p));
	clone_start(&f.c2, 0, "src", -1, &cc);
	wait_cmd(&f.p, CMD(FLUSH));
	ack_flush(&f.p, &f.chunk, 0, 0);
	clone_wait(&f.c2, &cc);
	assert_true(cc.success);
	rd_read(&f.c2, &f.r);
	expect_ts(&f.r, 350, 10);
	rd_read(&f.c1, &src);
	expect_ts(&src, 350, 10);
	free_buffers(&f.c2);

	/* The source goes while the clone waits for its flush. */
	clone_start(&f.c2, 1, NULL, -1, &cc);
	wait_cmd(&f.p, CMD(FLUSH));
	free_buffers(&f.c1);
	clone_wait(&f.c2, &cc);
	assert_false(cc.success);
	assert_string_equal(cc.error, "Original session ended");
	/* And c2 has no session: ReadBuffers returns nothing. */
	rd_read(&f.c2, &f.r);
	assert_int_equal(f.r.nts, 0);
	assert_false(f.r.uuid);

	rd_free(&src);
	fx_stop(&f);
}

/* A consumer that leaves while its clone waits: no reply, no session
 * left behind; the service goes on. */
static void test_clone_caller_leaves(void **state)
{
	struct fx f;
	struct th_cons c3;
	struct clone_call cc;

	fx_start(&f, state, &(struct src_opts){ 0 });
	assert_int_equal(th_prod_write(&f.p, 1, &f.chunk, 0, 5, 0, 0,
				       f.p.smb.num_pages), 5);
	clone_start(&f.c2, 1, NULL, -1, &cc);
	wait_cmd(&f.p, CMD(FLUSH));
	th_cons_close(&f.c2);
	ack_flush(&f.p, &f.chunk, 0, 0);
	/* A new consumer clones fine afterwards. */
	th_cons_connect(&c3, &f.t);
	clone_start(&c3, 1, NULL, -1, &cc);
	wait_cmd(&f.p, CMD(FLUSH));
	ack_flush(&f.p, &f.chunk, 0, 0);
	clone_wait(&c3, &cc);
	assert_true(cc.success);
	rd_read(&c3, &f.r);
	expect_ts(&f.r, 0, 5);
	f.c2 = c3;	/* closed by fx_stop */
	fx_stop(&f);
}

/*
 * A write_into_file source: without an fd the clone is refused; with one,
 * the source file is drained and copied into it, then the clone is
 * written after it (was_write_into_file). The file decodes as one trace
 * with every producer packet once; the source file and its session go on.
 */
static void test_clone_file(void **state)
{
	struct fx f;
	struct clone_call cc;
	int fd;

	fx_start(&f, state, &(struct src_opts){ .file = true });
	put(&f.p, 1, &f.chunk, 0, 100);

	clone_start(&f.c2, 1, NULL, -1, &cc);
	clone_wait(&f.c2, &cc);
	assert_false(cc.success);
	assert_string_equal(cc.error,
			    "The session writes into a file: CloneSession "
			    "needs a file descriptor to write the clone into");

	fd = open(f.out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	clone_start(&f.c2, 1, NULL, fd, &cc);
	close(fd);
	/* Packets 0..99 went into the source file before the flush, those
	 * of the flush stay in the buffer: the clone takes them. */
	wait_cmd(&f.p, CMD(FLUSH));
	ack_flush(&f.p, &f.chunk, 100, 20);
	clone_wait(&f.c2, &cc);
	assert_true(cc.success);
	assert_true(cc.in_file);

	/* Everything is in the file: the clone's ReadBuffers returns
	 * nothing. */
	rd_read(&f.c2, &f.r);
	assert_int_equal(f.r.nts, 0);
	assert_false(f.r.uuid);
	free_buffers(&f.c2);

	/* The source file's copy (its trace: config, 0..99), then the
	 * clone (its trace: config, clone_started, 100..119, its UUID). */
	rd_file(f.out_path, &f.r);
	expect_ts(&f.r, 0, 120);
	assert_int_equal(f.r.configs, 2);
	assert_true(f.r.clone_started);
	assert_int_equal(f.r.buffer_cloned, 0);
	assert_true(f.r.uuid);
	assert_int_equal(f.r.msb, cc.msb);
	assert_true(f.r.stats);
	rd_file(f.src_path, &f.r);
	expect_ts(&f.r, 0, 100);
	assert_int_equal(f.r.configs, 1);
	assert_false(f.r.clone_started);

	/* The source goes on; its end drains the rest into its file (the
	 * clone did not consume its buffer). */
	put(&f.p, 1, &f.chunk, 120, 10);
	assert_int_equal(th_cons_call(&f.c1, "DisableTracing",
				      &perfetto__protos__disable_tracing_request__descriptor),
			 0);
	th_cons_wait_enable(&f.c1, CALL_MS);
	assert_true(f.c1.enable_done);
	rd_file(f.src_path, &f.r);
	expect_ts(&f.r, 0, 130);
	fx_stop(&f);
}

/* clear_before_clone: the buffer is recreated empty before the flush, so
 * the clone (and the source) hold only what came after; the producer's
 * BufferID keeps working. */
static void test_clone_clear(void **state)
{
	struct fx f;
	struct clone_call cc;

	fx_start(&f, state, &(struct src_opts){ .clear = { true } });
	put(&f.p, 1, &f.chunk, 0, 50);

	clone_start(&f.c2, 1, NULL, -1, &cc);
	wait_cmd(&f.p, CMD(FLUSH));
	ack_flush(&f.p, &f.chunk, 50, 10);
	clone_wait(&f.c2, &cc);
	assert_true(cc.success);
	rd_read(&f.c2, &f.r);
	expect_ts(&f.r, 50, 10);
	assert_true(f.r.clone_started);

	/* The source's buffer went too; what comes next lands in the new
	 * one under the same BufferID. */
	put(&f.p, 1, &f.chunk, 60, 5);
	rd_read(&f.c1, &f.r);
	expect_ts(&f.r, 50, 15);
	fx_stop(&f);
}

/*
 * transfer_on_clone on buffer 1, a plain buffer 0: two flush groups (one
 * flush command each); the clone holds both buffers' data; the source's
 * buffer 1 is empty afterwards and still receives the producer's commits,
 * which its consumer reads; its buffer 0 was only copied.
 */
static void test_clone_transfer(void **state)
{
	struct fx f;
	struct clone_call cc;
	uint32_t chunk2 = 0;

	fx_start(&f, state, &(struct src_opts){ .nbufs = 2,
						.transfer = { false, true },
						.ds2 = "clone.ds2" });
	assert_int_not_equal(f.buf[0], f.buf[1]);
	put(&f.p, 1, &f.chunk, 0, 40);
	f.p.target_buffer = f.buf[1];
	put(&f.p, 2, &chunk2, 1000, 60);

	clone_start(&f.c2, 1, NULL, -1, &cc);
	/* One flush per group; the ack of the later covers both. */
	wait_cmd(&f.p, CMD(FLUSH));
	wait_cmd(&f.p, CMD(FLUSH));
	put(&f.p, 2, &chunk2, 1060, 5);
	ack_flush(&f.p, &f.chunk, 0, 0);
	clone_wait(&f.c2, &cc);
	assert_true(cc.success);

	/* The producer keeps writing into buffer 1 under its old id. */
	put(&f.p, 2, &chunk2, 1065, 7);
	f.p.target_buffer = f.buf[0];
	put(&f.p, 1, &f.chunk, 40, 3);

	rd_read(&f.c2, &f.r);
	assert_int_equal(f.r.nts, 40 + 65);
	assert_int_equal(count_ts(&f.r, 0, 40), 40);
	assert_int_equal(count_ts(&f.r, 1000, 1065), 65);
	assert_true(f.r.clone_started);
	assert_int_equal(f.r.buffer_cloned, 1);
	/* The moved buffer is the clone's alone: nothing new reaches it. */
	rd_read(&f.c2, &f.r);
	assert_int_equal(f.r.nts, 0);

	/* The source: buffer 0 whole (copied), buffer 1 only what came after
	 * the clone. */
	rd_read(&f.c1, &f.r);
	assert_int_equal(f.r.nts, 43 + 7);
	assert_int_equal(count_ts(&f.r, 0, 43), 43);
	assert_int_equal(count_ts(&f.r, 1065, 1072), 7);
	f.p.target_buffer = f.buf[1];
	put(&f.p, 2, &chunk2, 1072, 4);
	rd_read(&f.c1, &f.r);
	expect_ts(&f.r, 1072, 4);
	fx_stop(&f);
}

/* The source freed while the clone waits for its flush, with the empty
 * buffers already swapped in: the clone fails, nothing leaks. */
static void test_clone_source_freed(void **state)
{
	struct fx f;
	struct clone_call cc;

	fx_start(&f, state, &(struct src_opts){ .clear = { true },
						.transfer = { true } });
	put(&f.p, 1, &f.chunk, 0, 20);
	clone_start(&f.c2, 1, NULL, -1, &cc);
	wait_cmd(&f.p, CMD(FLUSH));
	put(&f.p, 1, &f.chunk, 20, 20);	/* into the cleared buffer */
	free_buffers(&f.c1);
	clone_wait(&f.c2, &cc);
	assert_false(cc.success);
	assert_string_equal(cc.error, "Original session ended");
	rd_read(&f.c2, &f.r);
	assert_int_equal(f.r.nts, 0);
	/* A later commit of the producer finds no buffer: nothing breaks. */
	assert_int_equal(th_prod_write(&f.p, 1, &f.chunk, 40, 5, 0, 0,
				       f.p.smb.num_pages), 5);
	assert_true(th_prod_fence(&f.p));
	fx_stop(&f);
}

/* --- a clone while a producer commits flat out --- */

#define FLAT_FIRST 20000u	/* packets written before the clone */

/* The producer thread of flat_out(). */
struct flat {
	struct th_prod *p;	/* owned by the thread while it runs */
	atomic_bool stop;	/* main thread: finish */
	atomic_uint written;	/* packets committed so far */
};

static void *flat_writer(void *arg)
{
	struct flat *f = arg;
	uint32_t chunk = 0;
	unsigned n = 0;

	while (!atomic_load_explicit(&f->stop, memory_order_relaxed)) {
		unsigned k = th_prod_write(f->p, 1, &chunk, n, 4096, 40, 0,
					   f->p->smb.num_pages);

		n += k;
		atomic_store_explicit(&f->written, n, memory_order_relaxed);
		if (!k)
			sched_yield();
	}
	return NULL;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/*
 * Checks r's packets are the writer's in order, each once, consecutive
 * but where a packet says something before it was lost (the ring buffer
 * overwrote it).
 */
static void expect_run(const struct rd *r)
{
	for (size_t i = 1; i < r->nts; i++) {
		assert_true(r->ts[i] > r->ts[i - 1]);
		if (r->ts[i] != r->ts[i - 1] + 1)
			assert_true(r->lost[i]);
	}
}

/*
 * The producer commits as fast as it can and never acks the clone's flush
 * (its thread does not read commands): the flush times out and the clone
 * is made anyway, with final_flush_outcome FAILED, while the lanes keep
 * committing through the flush and the copy. Nothing written after the
 * reply is in the clone; the source, which the clone does not consume,
 * still has everything up to the last packet.
 *  - DISCARD (ring false): the buffer fills and then refuses; clone and
 *    source both hold exactly the packets that fit, from the first.
 *  - RING: the writer wraps the buffer every few ms, also during the
 *    copy, faster than a copy that does not stop the lanes can go (on the
 *    worker it runs at SCHED_IDLE, starved by the writer and the lane on
 *    2 cores): the clone holds what the copy reached before the lanes came
 *    round (often nothing), in order, every gap marked as a loss.
 */
static void flat_out(void **state, bool ring)
{
	struct fx f;
	struct clone_call cc;
	struct rd src = { 0 };
	struct flat w = { .p = &f.p };
	pthread_t th;
	unsigned at_clone, total;

	fx_start(&f, state, &(struct src_opts){ .size_kb = 8 * 1024,
						.discard = !ring,
						.flush_timeout_ms = 300 });
	atomic_init(&w.stop, false);
	atomic_init(&w.written, 0);
	assert_int_equal(pthread_create(&th, NULL, flat_writer, &w), 0);
	for (int i = 0; i < 5000 &&
			atomic_load_explicit(&w.written, memory_order_relaxed) <
				FLAT_FIRST;
	     i++)
		sleep_ms(1);
	assert_true(atomic_load_explicit(&w.written, memory_order_relaxed) >=
		    FLAT_FIRST);
	clone_start(&f.c2, 1, NULL, -1, &cc);
	clone_wait(&f.c2, &cc);
	at_clone = atomic_load_explicit(&w.written, memory_order_relaxed);
	sleep_ms(20);
	atomic_store_explicit(&w.stop, true, memory_order_relaxed);
	assert_int_equal(pthread_join(th, NULL), 0);
	total = atomic_load_explicit(&w.written, memory_order_relaxed);
	assert_true(th_prod_fence(&f.p));
	assert_true(cc.success);
	/* The writer was still going after the reply. */
	assert_true(total > at_clone);

	rd_read(&f.c2, &f.r);
	assert_int_equal(f.r.flush_outcome, 2);	/* FINAL_FLUSH_FAILED */
	expect_run(&f.r);
	assert_true(f.r.nts == 0 || f.r.ts[f.r.nts - 1] < at_clone);
	rd_read(&f.c1, &src);
	expect_run(&src);
	if (ring) {
		assert_true(src.nts > 0);
		assert_int_equal(src.ts[src.nts - 1], total - 1);
	} else {
		/* Full long before the clone: the same prefix in both. */
		assert_true(f.r.nts >= FLAT_FIRST);
		expect_ts(&f.r, 0, f.r.nts);
		expect_ts(&src, 0, f.r.nts);
	}
	rd_free(&src);
	fx_stop(&f);
}

static void test_clone_flat_out_discard(void **state)
{
	flat_out(state, false);
}

static void test_clone_flat_out_ring(void **state)
{
	flat_out(state, true);
}

extern char **environ;

/* Reads a small text file whole (NUL-terminated, truncated to len). */
static void read_text(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");
	size_t n = 0;

	buf[0] = '\0';
	if (!f)
		return;
	n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
}

/*
 * `spindle --clone=1 -o FILE` of a write_into_file session: the CLI sends
 * its output fd with the request, the service writes the source file's
 * copy and the clone into it (was_write_into_file) and the CLI reads the
 * file back for its summary, then frees the clone.
 */
static void test_clone_cli(void **state)
{
	struct fx f;
	char err_path[160], err[4096];
	char *argv[] = { (char *)"spindle", (char *)"--consumer-socket", NULL,
			 (char *)"--clone=1", (char *)"-o", NULL, NULL };
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int st;

	fx_start(&f, state, &(struct src_opts){ .file = true });
	snprintf(err_path, sizeof(err_path), "%s/cli.err", f.t.dir);
	put(&f.p, 1, &f.chunk, 0, 100);

	argv[2] = f.t.csock;
	argv[5] = f.out_path;
	assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, err_path,
					 O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_int_equal(posix_spawn(&pid, SPINDLE_BIN, &fa, NULL, argv,
				     environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	wait_cmd(&f.p, CMD(FLUSH));
	ack_flush(&f.p, &f.chunk, 100, 20);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	read_text(err_path, err, sizeof(err));
	unlink(err_path);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail_msg("spindle --clone: status %d: %s", st, err);
	/* Its summary names the file it read back. */
	assert_non_null(strstr(err, f.out_path));

	rd_file(f.out_path, &f.r);
	expect_ts(&f.r, 0, 120);
	assert_int_equal(f.r.configs, 2);
	assert_true(f.r.clone_started);
	fx_stop(&f);
}

/* A clone of a session asking for deflate reads compressed too: its
 * config is the source's (svc_compress_test has the rest). */
static void test_clone_compressed(void **state)
{
	struct fx f;
	struct clone_call cc;

	fx_start(&f, state, &(struct src_opts){ .deflate = true });
	assert_int_equal(th_prod_write(&f.p, 1, &f.chunk, 0, 300, 40, 0,
				       f.p.smb.num_pages), 300);
	assert_true(th_prod_fence(&f.p));
	clone_start(&f.c2, 1, NULL, -1, &cc);
	wait_cmd(&f.p, CMD(FLUSH));
	ack_flush(&f.p, &f.chunk, 300, 20);
	clone_wait(&f.c2, &cc);
	assert_true(cc.success);
	th_cons_read(&f.c2);
	assert_true(f.c2.compressed >= 1);
	assert_int_equal(f.c2.top_packets, f.c2.compressed);
	assert_int_equal(f.c2.nts, 320);
	for (size_t i = 0; i < f.c2.nts; i++)
		assert_int_equal(f.c2.ts[i], i);
	fx_stop(&f);
}

#define MODES(fn)                                              \
	cmocka_unit_test_prestate(fn, (void *)&MODE_1),        \
	cmocka_unit_test_prestate(fn, (void *)&MODE_2)

int main(void)
{
	const struct CMUnitTest tests[] = {
		MODES(test_clone),
		MODES(test_clone_caller_leaves),
		MODES(test_clone_file),
		MODES(test_clone_cli),
		MODES(test_clone_clear),
		MODES(test_clone_transfer),
		MODES(test_clone_source_freed),
		MODES(test_clone_flat_out_discard),
		MODES(test_clone_flat_out_ring),
		MODES(test_clone_compressed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
