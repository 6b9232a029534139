// SPDX-License-Identifier: Apache-2.0
// libspindle's producer against a real spindled: data sources registered, enabled by a consumer, written by app threads through spn_ds_writer and read back exactly; flush acks (partial chunks of idle threads included); deferred stop notifications; incremental-state clears reaching the threads; a startup SMB; back-off without a service; and a spindled process killed mid-trace and restarted on the same sockets.
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "spindle/producer.h"
#include "svc_harness.h"
#include "trace_packet.pb-c.h"

#define DS_NAME "sdk.test"
#define THREADS 4u
#define PER_THREAD 2500u
#define BIG_EVERY 50u		/* every 50th event has a 2.5 KB annotation */
#define BIG_LEN 2500u

/* ---- time and waiting ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void nap_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

/* Waits up to ms for cond(arg). */
static bool wait_for(bool (*cond)(void *), void *arg, unsigned ms)
{
	uint64_t end = now_ms() + ms;

	while (!cond(arg)) {
		if (now_ms() > end)
			return false;
		nap_us(1000);
	}
	return true;
}

/* ---- the data source under test ---- */

struct dsrec {
	_Atomic unsigned setups, starts, stops, flushes, clears;
	bool defer_stop;		/* on_stop defers its completion */
	struct spn_ds_stop saved;	/* the deferred stop */
	_Atomic bool have_saved;	/* saved is set */
	uint32_t last_target_buffer;	/* from on_start */
};

static void on_setup(struct spn_ds *ds, const struct spn_ds_config *cfg, void *user)
{
	struct dsrec *r = user;

	assert_string_equal(cfg->name, spn_ds_name(ds));
	assert_true(cfg->instance_id > 0);
	assert_true(cfg->raw_len > 0);
	r->setups++;
}

static void on_start(struct spn_ds *ds, const struct spn_ds_config *cfg, void *user)
{
	struct dsrec *r = user;

	/* The enabled bit is set before on_start. */
	assert_true(spn_ds_enabled(ds) & (1u << cfg->instance));
	r->last_target_buffer = cfg->target_buffer;
	r->starts++;
}

static bool on_stop(struct spn_ds *ds, const struct spn_ds_stop *stop, void *user)
{
	struct dsrec *r = user;

	assert_false(spn_ds_enabled(ds) & (1u << stop->instance));
	r->stops++;
	if (!r->defer_stop)
		return false;
	r->saved = *stop;
	atomic_store(&r->have_saved, true);
	return true;
}

static void on_flush(struct spn_ds *ds, uint32_t inst, uint64_t id, void *user)
{
	struct dsrec *r = user;

	(void)ds;
	(void)inst;
	assert_true(id > 0);
	r->flushes++;
}

static void on_clear(struct spn_ds *ds, uint32_t inst, void *user)
{
	struct dsrec *r = user;

	(void)ds;
	(void)inst;
	r->clears++;
}

static struct spn_ds *register_ds(struct spn_producer *p, struct dsrec *r)
{
	struct spn_ds_desc d = {
		.name = DS_NAME, .will_notify_on_start = true, .will_notify_on_stop = true,
		.handles_incremental_state_clear = true,
	};
	struct spn_ds_callbacks cb = {
		.on_setup = on_setup, .on_start = on_start, .on_stop = on_stop,
		.on_flush = on_flush, .on_clear_incremental_state = on_clear, .user = r,
	};
	struct spn_ds *ds = NULL;

	assert_int_equal(spn_data_source_register(p, &d, &cb, &ds), 0);
	assert_non_null(ds);
	return ds;
}

static bool connected(void *arg)
{
	struct spn_producer_stats st;

	spn_producer_stats(arg, &st);
	return st.connected;
}

static bool enabled(void *arg)
{
	return spn_ds_enabled(arg) != 0;
}

static bool disabled(void *arg)
{
	return spn_ds_enabled(arg) == 0;
}

static bool stop_saved(void *arg)
{
	struct dsrec *r = arg;

	return atomic_load(&r->have_saved);
}

static bool stopped_once(void *arg)
{
	struct dsrec *r = arg;

	return atomic_load(&r->stops) >= 1;
}

static struct spn_producer *make_producer(const char *sock, bool own_smb)
{
	struct spn_producer_opts o = {
		.socket = sock,
		.name = "sdk_producer_test",
		.smb_size_hint = 1u << 20,
		.smb_page_size_hint = 4096,
		.producer_smb = own_smb,
		.smb_stall_max_us = 2000000, /* no drops: the test counts */
		.reconnect_step_ms = 20,
		.reconnect_step_limit_ms = 100,
		.reconnect_max_ms = 200,
	};
	struct spn_producer *p = NULL;

	assert_int_equal(spn_producer_create(&o, &p), 0);
	return p;
}

/* ---- events: deterministic content per (thread, index) ---- */

static size_t name_len(uint32_t i)
{
	return 8u + (i * 37u) % 200u;
}

static void fill(char *buf, size_t len, uint32_t t, uint32_t i)
{
	for (size_t k = 0; k < len; k++)
		buf[k] = (char)('a' + (t * 7u + i + k) % 26u);
}

/* One packet: timestamp, TrackEvent { name, [debug annotation] }. */
static void write_event(struct spn_tw *tw, uint32_t t, uint32_t i)
{
	char name[256], big[BIG_LEN];
	size_t n = name_len(i);

	fill(name, n, t, i);
	spn_tw_begin_packet(tw);
	spn_tw_varint(tw, 8, (uint64_t)(t + 1) << 32 | i);
	spn_tw_begin_nested(tw, 11);
	spn_tw_bytes(tw, 23, name, n);
	if (i % BIG_EVERY == 0) {
		fill(big, sizeof(big), t + 1, i);
		spn_tw_begin_nested(tw, 4);
		spn_tw_string(tw, 10, "k");
		spn_tw_bytes(tw, 6, big, sizeof(big));
		spn_tw_end_nested(tw);
	}
	spn_tw_end_nested(tw);
	spn_tw_end_packet(tw);
}

/* ---- consumer side ---- */

struct trace {
	uint8_t *pkt;		/* packet being reassembled */
	size_t len;		/* its bytes */
	/* producer packets: timestamp and sequence, read order */
	uint64_t *ts;
	uint32_t *seq;
	size_t n, cap;
	size_t bad;		/* packets whose content did not match */
	bool done;		/* final reply */
	int status;		/* its status */
};

static void check_packet(struct trace *tr)
{
	Perfetto__Protos__TracePacket *p =
		perfetto__protos__trace_packet__unpack(NULL, tr->len, tr->pkt);

	assert_non_null(p);
	if (p->optional_trusted_packet_sequence_id_case ==
		    PERFETTO__PROTOS__TRACE_PACKET__OPTIONAL_TRUSTED_PACKET_SEQUENCE_ID_TRUSTED_PACKET_SEQUENCE_ID &&
	    p->trusted_packet_sequence_id > 1 && p->has_timestamp) {
		uint32_t t = (uint32_t)(p->timestamp >> 32) - 1, i = (uint32_t)p->timestamp;
		char name[256], big[BIG_LEN];
		const Perfetto__Protos__TrackEvent *te = p->track_event;
		size_t n = name_len(i);

		fill(name, n, t, i);
		if (p->data_case != PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACK_EVENT ||
		    !te->name || strlen(te->name) != n || memcmp(te->name, name, n) != 0)
			tr->bad++;
		else if (i % BIG_EVERY == 0) {
			fill(big, sizeof(big), t + 1, i);
			if (te->n_debug_annotations != 1 ||
			    !te->debug_annotations[0]->string_value ||
			    strlen(te->debug_annotations[0]->string_value) != BIG_LEN ||
			    memcmp(te->debug_annotations[0]->string_value, big, BIG_LEN) != 0)
				tr->bad++;
		} else if (te->n_debug_annotations != 0) {
			tr->bad++;
		}
		if (tr->n == tr->cap) {
			tr->cap = tr->cap ? tr->cap * 2 : 1024;
			tr->ts = realloc(tr->ts, tr->cap * sizeof(*tr->ts));
			tr->seq = realloc(tr->seq, tr->cap * sizeof(*tr->seq));
			assert_non_null(tr->ts);
			assert_non_null(tr->seq);
		}
		tr->ts[tr->n] = p->timestamp;
		tr->seq[tr->n++] = p->trusted_packet_sequence_id;
	}
	perfetto__protos__trace_packet__free_unpacked(p, NULL);
	tr->len = 0;
}

static void on_read(void *arg, struct ipc_client_reply *rep)
{
	struct trace *tr = arg;
	const Perfetto__Protos__ReadBuffersResponse *rb = (const void *)rep->msg;

	if (rep->status != 0) {
		tr->done = true;
		tr->status = rep->status;
		return;
	}
	for (size_t i = 0; i < rb->n_slices; i++) {
		const Perfetto__Protos__ReadBuffersResponse__Slice *s = rb->slices[i];

		tr->pkt = realloc(tr->pkt, tr->len + s->data.len + 1);
		assert_non_null(tr->pkt);
		memcpy(tr->pkt + tr->len, s->data.data, s->data.len);
		tr->len += s->data.len;
		if (s->last_slice_for_packet)
			check_packet(tr);
	}
	if (!rep->has_more)
		tr->done = true;
}

static void read_trace(struct th_cons *c, struct trace *tr)
{
	Perfetto__Protos__ReadBuffersRequest req = PERFETTO__PROTOS__READ_BUFFERS_REQUEST__INIT;

	memset(tr, 0, sizeof(*tr));
	assert_int_equal(ipc_sync_stream(c->sync, c->port, "ReadBuffers", &req.base, -1,
					 on_read, tr, 10000),
			 0);
}

static void free_trace(struct trace *tr)
{
	free(tr->pkt);
	free(tr->ts);
	free(tr->seq);
}

/* EnableTracing: one buffer, our data source, a stop timeout, and a
 * periodic incremental state clear (0: none). */
static void enable_ex(struct th_cons *c, uint32_t size_kb, uint32_t stop_timeout_ms,
		      uint32_t clear_period_ms)
{
	struct th_cfg t;
	Perfetto__Protos__TraceConfig__IncrementalStateConfig isc =
		PERFETTO__PROTOS__TRACE_CONFIG__INCREMENTAL_STATE_CONFIG__INIT;

	th_cfg_init(&t, size_kb, DS_NAME);
	t.cfg.has_data_source_stop_timeout_ms = true;
	t.cfg.data_source_stop_timeout_ms = stop_timeout_ms;
	if (clear_period_ms) {
		isc.has_clear_period_ms = true;
		isc.clear_period_ms = clear_period_ms;
		t.cfg.incremental_state_config = &isc;
	}
	th_cons_enable_cfg(c, &t.cfg);
}

static void enable(struct th_cons *c, uint32_t size_kb, uint32_t stop_timeout_ms)
{
	enable_ex(c, size_kb, stop_timeout_ms, 0);
}

/* Flush with a timeout; returns the call's status (0: every producer
 * acked). */
static int flush(struct th_cons *c, uint32_t timeout_ms)
{
	Perfetto__Protos__FlushRequest req = PERFETTO__PROTOS__FLUSH_REQUEST__INIT;

	req.has_timeout_ms = true;
	req.timeout_ms = timeout_ms;
	return ipc_sync_call(c->sync, c->port, "Flush", &req.base, -1, NULL, NULL,
			     (int)timeout_ms + 5000);
}

static int disable(struct th_cons *c)
{
	return th_cons_call(c, "DisableTracing",
			    &perfetto__protos__disable_tracing_request__descriptor);
}

/* Every thread's events 0..count-1, once each, in order on one sequence. */
static void expect_all(const struct trace *tr, uint32_t threads, uint32_t count)
{
	uint32_t *next = calloc(threads, sizeof(*next)), *seq = calloc(threads, sizeof(*seq));

	assert_int_equal(tr->bad, 0);
	for (size_t k = 0; k < tr->n; k++) {
		uint32_t t = (uint32_t)(tr->ts[k] >> 32) - 1, i = (uint32_t)tr->ts[k];

		assert_true(t < threads);
		if (!seq[t])
			seq[t] = tr->seq[k];
		assert_int_equal(tr->seq[k], seq[t]);
		assert_int_equal(i, next[t]);
		next[t]++;
	}
	for (uint32_t t = 0; t < threads; t++) {
		assert_int_equal(next[t], count);
		for (uint32_t u = 0; u < t; u++)
			assert_int_not_equal(seq[t], seq[u]);
	}
	free(next);
	free(seq);
}

/* ---- 1. four threads, flush, deferred stop ---- */

struct writer_arg {
	struct spn_ds *ds;	/* data source */
	uint32_t t;		/* thread index */
	uint32_t count;		/* events to write */
	_Atomic bool *hold;	/* stay alive while *hold (NULL: exit) */
	_Atomic uint32_t *written; /* events written, or NULL */
	unsigned nulls;		/* times spn_ds_writer gave NULL */
};

static void *writer_main(void *arg)
{
	struct writer_arg *w = arg;

	for (uint32_t i = 0; i < w->count; i++) {
		struct spn_tw *tw = spn_ds_writer(w->ds);

		if (!tw) {
			w->nulls++;
			continue;
		}
		write_event(tw, w->t, i);
		if (w->written)
			atomic_store(w->written, i + 1);
	}
	while (w->hold && atomic_load(w->hold))
		nap_us(1000);
	return NULL;
}

static void run_session(bool own_smb)
{
	struct th_svc t;
	struct th_cons c;
	struct dsrec r = { .defer_stop = true };
	struct spn_producer *p;
	struct spn_producer_stats st;
	struct spn_ds *ds;
	pthread_t th[THREADS];
	struct writer_arg wa[THREADS];
	struct trace tr;
	uint64_t t0, dt;

	th_svc_start(&t, 2);
	p = make_producer(t.psock, own_smb);
	ds = register_ds(p, &r);
	assert_true(wait_for(connected, p, 5000));
	assert_null(spn_ds_writer(ds));
	th_cons_connect(&c, &t);
	enable(&c, 16384, 4000);
	assert_true(wait_for(enabled, ds, 5000));
	assert_int_equal(r.setups, 1);
	assert_int_equal(r.starts, 1);
	assert_true(r.last_target_buffer > 0);

	for (uint32_t i = 0; i < THREADS; i++) {
		wa[i] = (struct writer_arg){ .ds = ds, .t = i, .count = PER_THREAD };
		assert_int_equal(pthread_create(&th[i], NULL, writer_main, &wa[i]), 0);
	}
	for (uint32_t i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(wa[i].nulls, 0);
	}
	/* Flush: acked by the producer (a timeout is a rejection). */
	assert_int_equal(flush(&c, 3000), 0);
	assert_true(r.flushes >= 1);
	spn_producer_stats(p, &st);
	assert_true(st.flushes_acked >= 1);

	/* Deferred stop: the session ends when we say so, well before the
	 * 4 s stop timeout, so NotifyDataSourceStopped went out. */
	t0 = now_ms();
	assert_int_equal(disable(&c), 0);
	assert_true(wait_for(stop_saved, &r, 3000));
	assert_true(disabled(ds));
	assert_null(spn_ds_writer(ds));
	nap_us(300000);
	assert_false(c.enable_done);
	spn_ds_stop_done(r.saved);
	spn_ds_stop_done(r.saved); /* idempotent */
	th_cons_wait_enable(&c, 5000);
	dt = now_ms() - t0;
	assert_true(c.enable_done);
	assert_true(dt >= 300);
	assert_true(dt < 3000);
	assert_int_equal(r.stops, 1);

	read_trace(&c, &tr);
	assert_int_equal(tr.status, 0);
	expect_all(&tr, THREADS, PER_THREAD);
	free_trace(&tr);

	spn_producer_stats(p, &st);
	assert_int_equal(st.packets_dropped, 0);
	assert_int_equal(st.writers_created, THREADS);
	assert_int_equal(st.instances_started, 1);
	assert_int_equal(st.instances_stopped, 1);
	assert_true(st.commits > 0);
	assert_true(st.chunks_committed > 0);
	assert_true(st.wakeups >= 1);
	assert_int_equal(st.disconnects, 0);
	th_cons_close(&c);
	spn_producer_destroy(p);
	th_svc_stop(&t);
}

static void inproc_four_threads(void **state)
{
	(void)state;
	run_session(false);
}

/* The same with an SMB we create and offer (startup tracing's hand-over). */
static void inproc_producer_smb(void **state)
{
	(void)state;
	run_session(true);
}

/* ---- 2. a flush takes the partial chunk of a thread that went idle ---- */

static void inproc_flush_idle_writer(void **state)
{
	struct th_svc t;
	struct th_cons c;
	struct dsrec r = { 0 };
	struct spn_producer *p;
	struct spn_ds *ds;
	_Atomic bool hold = true;
	_Atomic uint32_t written = 0;
	struct writer_arg wa;
	struct trace tr;
	pthread_t th;

	(void)state;
	th_svc_start(&t, 1);
	p = make_producer(t.psock, false);
	ds = register_ds(p, &r);
	assert_true(wait_for(connected, p, 5000));
	th_cons_connect(&c, &t);
	enable(&c, 4096, 2000);
	assert_true(wait_for(enabled, ds, 5000));
	/* 37 small events fill part of one chunk; the thread then idles
	 * with the chunk, and only a reclaim can commit its last event
	 * (scraping skips the last fragment of an incomplete chunk). */
	wa = (struct writer_arg){ .ds = ds, .t = 0, .count = 37, .hold = &hold,
				  .written = &written };
	assert_int_equal(pthread_create(&th, NULL, writer_main, &wa), 0);
	while (atomic_load(&written) < 37)
		nap_us(1000);
	assert_int_equal(flush(&c, 3000), 0);
	read_trace(&c, &tr);
	assert_int_equal(tr.status, 0);
	expect_all(&tr, 1, 37);
	free_trace(&tr);
	atomic_store(&hold, false);
	pthread_join(th, NULL);
	assert_int_equal(disable(&c), 0);
	th_cons_wait_enable(&c, 5000);
	assert_true(c.enable_done);
	assert_int_equal(r.stops, 1);
	th_cons_close(&c);
	spn_producer_destroy(p);
	th_svc_stop(&t);
}

/* A writer that fills the SMB many times over while the I/O thread waits
 * out a one-minute commit period: the writer's shortage makes it commit at
 * once (hurries), so nothing is dropped and nothing waits for the period.
 * Without the hurry the first commit would be the only one for a minute,
 * and the writer would drop once its 2 s stall ran out. */
static void inproc_short_smb_hurries(void **state)
{
	struct spn_producer_opts o = {
		.name = "sdk_producer_test",
		.smb_size_hint = 256u << 10,
		.smb_page_size_hint = 4096,
		.smb_stall_max_us = 2000000,
		.commit_period_ms = 60000,
	};
	struct th_svc t;
	struct th_cons c;
	struct dsrec r = { 0 };
	struct spn_producer_stats st;
	struct spn_producer *p = NULL;
	struct spn_ds *ds;
	struct writer_arg wa;
	struct trace tr;
	pthread_t th;
	const uint32_t count = 12000; /* ~1.5 MB: six SMBs */

	(void)state;
	th_svc_start(&t, 1);
	o.socket = t.psock;
	assert_int_equal(spn_producer_create(&o, &p), 0);
	ds = register_ds(p, &r);
	assert_true(wait_for(connected, p, 5000));
	th_cons_connect(&c, &t);
	enable(&c, 16384, 2000);
	assert_true(wait_for(enabled, ds, 5000));
	wa = (struct writer_arg){ .ds = ds, .t = 0, .count = count };
	assert_int_equal(pthread_create(&th, NULL, writer_main, &wa), 0);
	pthread_join(th, NULL);
	assert_int_equal(wa.nulls, 0);
	spn_producer_stats(p, &st);
	assert_int_equal(st.packets_dropped, 0);
	assert_true(st.hurries > 0);
	assert_true(st.commits > 2);
	assert_int_equal(flush(&c, 3000), 0);
	read_trace(&c, &tr);
	assert_int_equal(tr.status, 0);
	expect_all(&tr, 1, count);
	free_trace(&tr);
	assert_int_equal(disable(&c), 0);
	th_cons_wait_enable(&c, 5000);
	th_cons_close(&c);
	spn_producer_destroy(p);
	th_svc_stop(&t);
}

/* ---- 3. incremental state clears reach the threads ---- */

static bool two_clears(void *arg)
{
	struct dsrec *r = arg;

	return atomic_load(&r->clears) >= 2;
}

static void inproc_clear_incremental_state(void **state)
{
	struct th_svc t;
	struct th_cons c;
	struct dsrec r = { 0 };
	struct spn_producer *p;
	struct spn_ds *ds;
	struct spn_ds_tls *tls;
	struct spn_tw *tw;
	uint32_t inst;

	(void)state;
	th_svc_start(&t, 1);
	p = make_producer(t.psock, false);
	ds = register_ds(p, &r);
	assert_true(wait_for(connected, p, 5000));
	th_cons_connect(&c, &t);
	/* The service clears only instances it saw started, so clears also
	 * show that NotifyDataSourceStarted went out. */
	enable_ex(&c, 1024, 2000, 20);
	assert_true(wait_for(enabled, ds, 5000));
	inst = (uint32_t)__builtin_ctz(spn_ds_enabled(ds));
	tls = spn_ds_tls(ds, inst);
	assert_non_null(tls);
	assert_true(tls->incremental_reset); /* a new writer starts clean */
	assert_int_equal(tls->instance, inst);
	tls->incremental_reset = false;
	tw = tls->tw;
	write_event(tw, 0, 0);
	assert_true(wait_for(two_clears, &r, 5000));
	tls = spn_ds_tls(ds, inst);
	assert_non_null(tls);
	assert_ptr_equal(tls->tw, tw); /* same writer, state to re-emit */
	assert_true(tls->incremental_reset);
	assert_int_equal(disable(&c), 0);
	th_cons_wait_enable(&c, 5000);
	assert_true(c.enable_done);
	assert_null(spn_ds_tls(ds, inst));
	th_cons_close(&c);
	spn_producer_destroy(p);
	th_svc_stop(&t);
}

/* ---- 4. spindled killed mid-trace and restarted ---- */

struct daemon {
	char dir[64];		/* socket dir */
	char psock[128];	/* producer socket */
	char csock[128];	/* consumer socket */
	pid_t pid;		/* the spindled process, or 0 */
};

static bool consumer_ready(void *arg)
{
	struct ipc_sync *s;

	if (ipc_sync_connect(arg, 200, &s) != 0)
		return false;
	ipc_sync_close(s);
	return true;
}

static void daemon_start(struct daemon *d)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		execl(SPINDLED_BIN, "spindled", "--producer-socket", d->psock,
		      "--consumer-socket", d->csock, "--lanes", "1", "--log-level", "warn",
		      (char *)NULL);
		_exit(127);
	}
	d->pid = pid;
	assert_true(wait_for(consumer_ready, d->csock, 10000));
}

static void daemon_kill(struct daemon *d, int sig)
{
	int status;

	assert_int_equal(kill(d->pid, sig), 0);
	assert_int_equal(waitpid(d->pid, &status, 0), d->pid);
	d->pid = 0;
}

struct loop_writer {
	struct spn_ds *ds;		/* data source */
	_Atomic bool run;		/* keep going */
	_Atomic uint64_t iterations;	/* loop turns (the app keeps running) */
	_Atomic uint32_t written;	/* events written (index of the next) */
};

static void *loop_writer_main(void *arg)
{
	struct loop_writer *w = arg;

	while (atomic_load(&w->run)) {
		struct spn_tw *tw = spn_ds_writer(w->ds);

		if (tw) {
			uint32_t i = atomic_load(&w->written);

			write_event(tw, 0, i);
			atomic_store(&w->written, i + 1);
		}
		atomic_fetch_add(&w->iterations, 1);
		nap_us(200);
	}
	return NULL;
}

static bool reconnected(void *arg)
{
	struct spn_producer_stats st;

	spn_producer_stats(arg, &st);
	return st.connects >= 2 && st.connected;
}

static void restart_kill_and_reconnect(void **state)
{
	struct daemon d;
	struct th_svc ts; /* only its socket names, for the harness consumer */
	struct th_cons c;
	struct dsrec r = { 0 };
	struct spn_producer *p;
	struct spn_producer_stats st;
	struct spn_ds *ds;
	struct loop_writer w = { 0 };
	struct trace tr;
	pthread_t th;
	uint32_t mark;
	uint64_t it;

	(void)state;
	memset(&d, 0, sizeof(d));
	strcpy(d.dir, "/tmp/spn_sdkp_XXXXXX");
	assert_non_null(mkdtemp(d.dir));
	snprintf(d.psock, sizeof(d.psock), "%s/p.sock", d.dir);
	snprintf(d.csock, sizeof(d.csock), "%s/c.sock", d.dir);
	memset(&ts, 0, sizeof(ts));
	strcpy(ts.csock, d.csock);

	daemon_start(&d);
	p = make_producer(d.psock, false);
	ds = register_ds(p, &r);
	assert_true(wait_for(connected, p, 5000));
	w.ds = ds;
	atomic_store(&w.run, true);
	assert_int_equal(pthread_create(&th, NULL, loop_writer_main, &w), 0);

	/* Session 1, then the service dies mid-trace. */
	th_cons_connect(&c, &ts);
	enable(&c, 4096, 2000);
	assert_true(wait_for(enabled, ds, 5000));
	while (atomic_load(&w.written) < 200)
		nap_us(1000);
	daemon_kill(&d, SIGKILL);
	th_cons_close(&c);
	assert_true(wait_for(stopped_once, &r, 5000));
	assert_true(disabled(ds));
	assert_int_equal(r.stops, 1);
	spn_producer_stats(p, &st);
	assert_int_equal(st.disconnects, 1);

	/* The app keeps running while nobody listens (retries fail). */
	it = atomic_load(&w.iterations);
	nap_us(300000);
	assert_true(atomic_load(&w.iterations) > it + 100);
	spn_producer_stats(p, &st);
	assert_true(st.connect_failures >= 1);

	/* Restart on the same sockets: the producer comes back by itself. */
	daemon_start(&d);
	assert_true(wait_for(reconnected, p, 5000));
	mark = atomic_load(&w.written);
	th_cons_connect(&c, &ts);
	enable(&c, 4096, 2000);
	assert_true(wait_for(enabled, ds, 5000));
	assert_int_equal(r.starts, 2);
	while (atomic_load(&w.written) < mark + 300)
		nap_us(1000);
	assert_int_equal(flush(&c, 3000), 0);
	assert_int_equal(disable(&c), 0);
	th_cons_wait_enable(&c, 5000);
	assert_true(c.enable_done);
	read_trace(&c, &tr);
	assert_int_equal(tr.status, 0);
	assert_int_equal(tr.bad, 0);
	/* Session 2 holds only events written after the restart, at least
	 * 300, in order without a gap on one sequence. */
	assert_true(tr.n >= 300);
	for (size_t k = 0; k < tr.n; k++) {
		assert_true((uint32_t)tr.ts[k] >= mark);
		assert_int_equal(tr.seq[k], tr.seq[0]);
		if (k)
			assert_int_equal((uint32_t)tr.ts[k], (uint32_t)tr.ts[k - 1] + 1);
	}
	free_trace(&tr);
	th_cons_close(&c);

	atomic_store(&w.run, false);
	pthread_join(th, NULL);
	spn_producer_destroy(p);
	daemon_kill(&d, SIGTERM);
	unlink(d.psock);
	unlink(d.csock);
	rmdir(d.dir);
}

/* ---- 5. bad arguments, back-off without a service ---- */

static void inproc_bad_args(void **state)
{
	struct spn_producer_opts o = { .socket = "/nonexistent/x.sock",
				       .smb_page_size_hint = 1000 };
	struct spn_producer *p = NULL;
	struct spn_ds_desc d = { .name = "" };
	struct spn_ds *ds;
	char longname[300];

	(void)state;
	assert_int_equal(spn_producer_create(&o, &p), -EINVAL);
	o.smb_page_size_hint = 0;
	o.reconnect_step_ms = 5;
	assert_int_equal(spn_producer_create(&o, &p), 0);
	assert_int_equal(spn_data_source_register(p, &d, NULL, &ds), -EINVAL);
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	d.name = longname;
	assert_int_equal(spn_data_source_register(p, &d, NULL, &ds), -EINVAL);
	d.name = "fine";
	assert_int_equal(spn_data_source_register(p, &d, NULL, &ds), 0);
	assert_null(spn_ds_writer(ds));
	assert_null(spn_ds_tls(ds, SPN_DS_MAX_INSTANCES));
	spn_producer_destroy(p);

	/* Nobody listens: attempts fail and back off (20, 40, 60, 80, 100,
	 * then 200 ms apart), the app never waits. Attempts start at 0, 20,
	 * 60, 120, 200, 300, 500, 700 ms: at most 7 before 600 ms. */
	o.reconnect_step_ms = 20;
	o.reconnect_step_limit_ms = 100;
	o.reconnect_max_ms = 200;
	assert_int_equal(spn_producer_create(&o, &p), 0);
	nap_us(600000);
	{
		struct spn_producer_stats st;

		spn_producer_stats(p, &st);
		assert_false(st.connected);
		assert_true(st.connect_failures >= 3);
		assert_true(st.connect_failures <= 7);
		assert_int_equal(st.connects, 0);
	}
	spn_producer_destroy(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(inproc_bad_args),
		cmocka_unit_test(inproc_four_threads),
		cmocka_unit_test(inproc_producer_smb),
		cmocka_unit_test(inproc_flush_idle_writer),
		cmocka_unit_test(inproc_short_smb_hurries),
		cmocka_unit_test(inproc_clear_incremental_state),
		cmocka_unit_test(restart_kill_and_reconnect),
	};
	const char *f = getenv("SPN_TEST_FILTER"), *s = getenv("SPN_TEST_SKIP");

	signal(SIGPIPE, SIG_IGN);
	if (f && f[0])
		cmocka_set_test_filter(f);
	if (s && s[0])
		cmocka_set_skip_filter(s);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
