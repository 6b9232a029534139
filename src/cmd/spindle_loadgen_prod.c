// SPDX-License-Identifier: Apache-2.0
// spindle-loadgen's producer process: one libspindle producer hosting the "track_event" data source (slice, counter and annotated kinds, through the track-event layer) or the raw one, and T threads that each write events numbered 0, 1, 2... at a paced rate or flat out, timing a sample of them.
//
// Every event carries its thread's sequence number so the parent can find
// each one in the trace: the debug annotation "seq" (slice, annotated),
// the counter value (counter), or TestEvent.counter of TracePacket field
// 900 (raw, with the writer's tid in TestEvent.seq_value).
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "cmd/spindle_loadgen.h"
#include "spindle/producer.h"
#include "spindle/track_event.h"

/* Events written between two looks at the clock when flat out. */
#define LG_BATCH 64u
/* Stack of an emitting thread (1000 of them in one process). */
#define LG_STACK_BYTES (256u << 10)

static struct spn_te_category lg_cat =
	SPN_TE_CATEGORY("loadgen", "spindle-loadgen events");
static struct spn_te_category *const lg_cats[] = { &lg_cat };
/* One counter track per thread: the values are that thread's sequence. */
static struct spn_te_track lg_ctr =
	SPN_TE_THREAD_COUNTER_TRACK("loadgen seq", SPN_TE_UNIT_COUNT);

/* The producer process. */
struct lg_child {
	const struct lg_opts *o;	/* options */
	struct lg_shared *sh;		/* shared with the parent */
	unsigned proc;			/* our index */
	struct spn_producer *p;		/* the producer */
	struct spn_te *te;		/* track-event layer (not for raw) */
	/* the data source, published by its registration (release) for
	 * the layer's writer callback and the raw threads (acquire) */
	_Atomic(struct spn_ds *) ds;
	_Atomic bool started;		/* counted in sh->started already */
	uint32_t pad_len;		/* raw: TestEvent.str bytes */
};

static struct lg_child lg_c;

/* ---- hosting the data source ---- */

static struct spn_tw *lg_writer(void *ctx, uint32_t inst)
{
	struct lg_child *c = ctx;
	/* Acquire: pairs with the release store after registration. */
	struct spn_ds *ds = atomic_load_explicit(&c->ds, memory_order_acquire);
	struct spn_ds_tls *t = ds ? spn_ds_tls(ds, inst) : NULL;

	return t ? t->tw : NULL;
}

static void lg_on_start(struct spn_ds *ds, const struct spn_ds_config *cfg, void *user)
{
	struct lg_child *c = user;
	int err = 0;

	(void)ds;
	if (c->te)
		err = spn_te_start(c->te, cfg->instance, cfg->track_event_config,
				   cfg->track_event_config_len);
	if (err)
		fprintf(stderr, "spindle-loadgen: track_event config refused: %s\n",
			strerror(-err));
	else if (!atomic_exchange(&c->started, true))
		atomic_fetch_add(&c->sh->started, 1);
}

static bool lg_on_stop(struct spn_ds *ds, const struct spn_ds_stop *stop, void *user)
{
	struct lg_child *c = user;

	(void)ds;
	if (c->te)
		spn_te_stop(c->te, stop->instance);
	return false;
}

static void lg_on_clear(struct spn_ds *ds, uint32_t inst, void *user)
{
	struct lg_child *c = user;

	(void)ds;
	if (c->te)
		spn_te_clear_incremental_state(c->te, inst);
}

static int lg_setup(struct lg_child *c)
{
	char name[64];
	struct spn_producer_opts po = {
		.socket = c->o->psock, .name = name,
		.smb_size_hint = c->o->smb_kb * 1024u,
		.smb_page_size_hint = c->o->page_kb * 1024u,
		.smb_stall_max_us = c->o->stall_us,
	};
	struct spn_te_opts to = {
		.categories = lg_cats, .ncategories = 1, .writer = lg_writer,
		.ctx = c, .process_name = "spindle-loadgen",
	};
	struct spn_ds_callbacks cb = {
		.on_start = lg_on_start, .on_stop = lg_on_stop,
		.on_clear_incremental_state = lg_on_clear, .user = c,
	};
	struct spn_ds_desc d = {
		.name = c->o->kind == LG_RAW ? LG_RAW_DS_NAME : "track_event",
		.will_notify_on_start = true, .will_notify_on_stop = true,
		.handles_incremental_state_clear = c->o->kind != LG_RAW,
	};
	struct spn_ds *ds;
	uint8_t *desc = NULL;
	size_t len = 0;
	int err = 0;

	/* Joining, the producers go by one name (a user's config filters
	 * on it); recording, each has its own, which our session names. */
	if (c->o->join)
		snprintf(name, sizeof(name), "spindle-loadgen");
	else
		snprintf(name, sizeof(name), "spindle-loadgen.%d.%u", (int)getppid(),
			 c->proc);
	if (c->o->kind != LG_RAW) {
		err = spn_te_create(&to, &c->te);
		if (!err)
			err = spn_te_descriptor(c->te, &desc, &len);
		if (err) {
			fprintf(stderr, "spindle-loadgen: track events: %s\n", strerror(-err));
			return err;
		}
		d.track_event_descriptor = desc;
		d.track_event_descriptor_len = len;
	}
	err = spn_producer_create(&po, &c->p);
	if (err) {
		fprintf(stderr, "spindle-loadgen: producer: %s\n", strerror(-err));
		free(desc);
		return err;
	}
	err = spn_data_source_register(c->p, &d, &cb, &ds);
	free(desc);
	if (err) {
		fprintf(stderr, "spindle-loadgen: data source: %s\n", strerror(-err));
		return err;
	}
	/* Release: see lg_writer. */
	atomic_store_explicit(&c->ds, ds, memory_order_release);
	return 0;
}

/* ---- events ---- */

/* Writes v as a varint of exactly n bytes (a redundant encoding when v is
 * small, which decoders accept), so a raw packet's size does not depend
 * on its values. */
static uint8_t *lg_put_varint_n(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i + 1 < n; i++) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

/*
 * A raw packet of exactly --size bytes: timestamp (field 8, 9-byte
 * varint), then for_testing (field 900) holding seq_value = tid (field 2,
 * 5 bytes), counter = seq (field 3, 8 bytes) and str = padding (field 1).
 * Header: 1+9 + 2+4 + 1+5 + 1+8 + 1+4 = 36 bytes (LG_RAW_MIN_SIZE).
 */
static bool lg_emit_raw(struct lg_child *c, int32_t tid, uint64_t seq)
{
	static const uint8_t pad[4096] = { 0 };
	/* Relaxed: lg_child_main published ds before any thread started. */
	struct spn_ds *ds = atomic_load_explicit(&c->ds, memory_order_relaxed);
	struct spn_tw *tw = spn_ds_writer(ds);
	uint8_t hdr[LG_RAW_MIN_SIZE], *q = hdr;
	struct timespec ts;
	uint32_t left = c->pad_len;

	if (!tw)
		return false;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	*q++ = 8u << 3;
	q = lg_put_varint_n(q, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec, 9);
	q = lg_put_varint_n(q, (900u << 3) | 2u, 2);
	q = lg_put_varint_n(q, 20u + left, 4);
	*q++ = 2u << 3;
	q = lg_put_varint_n(q, (uint32_t)tid, 5);
	*q++ = 3u << 3;
	q = lg_put_varint_n(q, seq, 8);
	*q++ = (1u << 3) | 2u;
	q = lg_put_varint_n(q, left, 4);
	spn_tw_begin_packet(tw);
	spn_tw_append(tw, hdr, (size_t)(q - hdr));
	while (left) {
		uint32_t n = left < sizeof(pad) ? left : (uint32_t)sizeof(pad);

		spn_tw_append(tw, pad, n);
		left -= n;
	}
	spn_tw_end_packet(tw);
	return true;
}

/* Writes event `seq` of the calling thread. Returns false when no
 * instance is running (nothing written). */
static bool lg_emit(struct lg_child *c, const struct lg_thread *t, uint64_t seq)
{
	switch (c->o->kind) {
	case LG_SLICE:
		if (!SPN_TE_ENABLED(lg_cat))
			return false;
		if (seq & 1)
			SPN_TRACE_END(lg_cat, SPN_ARG("seq", seq));
		else
			SPN_TRACE_BEGIN(lg_cat, "load", SPN_ARG("seq", seq));
		return true;
	case LG_COUNTER:
		if (!SPN_TE_ENABLED(lg_cat))
			return false;
		SPN_TRACE_COUNTER_ON(lg_cat, &lg_ctr, (int64_t)seq);
		return true;
	case LG_ANNOTATED:
		if (!SPN_TE_ENABLED(lg_cat))
			return false;
		SPN_TRACE_INSTANT(lg_cat, "annotated", SPN_ARG("seq", seq),
				  SPN_ARG("thread", (uint64_t)t->idx),
				  SPN_ARG("label", "spindle-loadgen"),
				  SPN_ARG("ratio", 0.25));
		return true;
	case LG_RAW:
		return lg_emit_raw(c, t->tid, seq);
	}
	return false;
}

/* Keeps a timing sample; a full buffer drops every other sample and the
 * thread samples half as often from then on. */
static void lg_sample(struct lg_thread *t, uint32_t *s, uint32_t cap, uint64_t ticks)
{
	double ns = (double)ticks / lg_c.sh->ticks_per_ns;

	if (t->nsamples == cap) {
		for (uint32_t i = 0; i < cap / 2; i++)
			s[i] = s[2 * i];
		t->nsamples = cap / 2;
		t->sample_every *= 2;
	}
	s[t->nsamples++] = ns >= (double)UINT32_MAX ? UINT32_MAX : (uint32_t)(ns + 0.5);
}

/* Writes one event, timed when its number is a multiple of the period. */
static void lg_one(struct lg_thread *t, uint32_t *s, uint32_t cap)
{
	uint64_t seq = t->emitted;
	bool ok;

	if ((seq & (t->sample_every - 1)) == 0) {
		uint64_t t0 = lg_ticks();

		ok = lg_emit(&lg_c, t, seq);
		if (ok)
			lg_sample(t, s, cap, lg_ticks() - t0);
	} else {
		ok = lg_emit(&lg_c, t, seq);
	}
	if (ok)
		t->emitted++;
	else
		t->skipped++;
}

static void lg_sleep_until(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void *lg_thread_main(void *arg)
{
	struct lg_thread *t = arg;
	struct lg_shared *sh = lg_c.sh;
	const struct lg_opts *o = lg_c.o;
	size_t gidx = (size_t)(t - sh->threads);
	uint32_t *s = sh->samples + gidx * sh->sample_cap;
	uint64_t rate = o->rate, start, end, busy0;
	char name[16];

	t->tid = (int32_t)gettid();
	snprintf(name, sizeof(name), "lg-%u.%u", t->proc, t->idx);
	pthread_setname_np(pthread_self(), name);
	if (o->kind != LG_RAW)
		spn_te_set_thread_name(name);
	t->sample_every = rate && rate <= LG_SAMPLE_ALL_RATE ? 1u : LG_SAMPLE_EVERY;
	while (atomic_load_explicit(&sh->go, memory_order_acquire) == LG_GO_WAIT)
		lg_futex_wait(&sh->go, LG_GO_WAIT);
	/* Acquire above: pairs with the parent's release of go after go_ns. */
	if (atomic_load(&sh->go) != LG_GO_RUN)
		goto out;
	/* Paced threads start spread over one period so that they do not
	 * all wake at the same instants. */
	start = sh->go_ns + (rate ? 1000000000u / rate * gidx /
					    (o->producers * o->threads) : 0);
	end = sh->go_ns + (uint64_t)o->duration_ms * 1000000u;
	lg_sleep_until(start);
	busy0 = lg_now_ns();
	for (;;) {
		uint64_t now = lg_now_ns(), due;

		if (now >= end || atomic_load_explicit(&sh->go, memory_order_relaxed) != LG_GO_RUN)
			break;
		if (!rate) {
			for (unsigned i = 0; i < LG_BATCH; i++)
				lg_one(t, s, sh->sample_cap);
			continue;
		}
		/* Events due by now: those numbered below (now - start) *
		 * rate / 1e9 + 1; behind schedule, they go out back to back. */
		due = (uint64_t)((double)(now - start) * (double)rate / 1e9) + 1;
		while (t->emitted + t->skipped < due)
			lg_one(t, s, sh->sample_cap);
		t->busy_ns += lg_now_ns() - now;
		lg_sleep_until(start + (uint64_t)((double)(t->emitted + t->skipped) * 1e9 /
						  (double)rate));
	}
	/* Close an open slice so the UI shows it whole. */
	if (o->kind == LG_SLICE && (t->emitted & 1))
		lg_one(t, s, sh->sample_cap);
	if (!rate)
		t->busy_ns = lg_now_ns() - busy0;
out:
	/* Release: our record is complete before the parent counts us. */
	atomic_fetch_add_explicit(&sh->done, 1, memory_order_release);
	/* Stay alive (with our writer and its partial chunk) until the
	 * parent has flushed and read the trace: the flush takes the chunk
	 * back, a thread exit in the middle of it would race it. */
	while (atomic_load(&sh->quit) == 0 && atomic_load(&sh->go) != LG_GO_ABORT)
		lg_futex_wait(&sh->quit, 0);
	return NULL;
}

int lg_child_main(const struct lg_opts *o, struct lg_shared *sh, unsigned proc)
{
	struct lg_child *c = &lg_c;
	struct lg_thread *th = sh->threads + (size_t)proc * o->threads;
	struct spn_producer_stats st;
	pthread_t *tids;
	pthread_attr_t attr;
	unsigned n = 0;
	int err;

	/* Die with the parent rather than keep a producer around. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		return LG_EXIT_FAIL;
	c->o = o;
	c->sh = sh;
	c->proc = proc;
	c->pad_len = o->kind == LG_RAW ? o->size - LG_RAW_MIN_SIZE : 0;
	tids = calloc(o->threads, sizeof(*tids));
	err = tids ? lg_setup(c) : -ENOMEM;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, LG_STACK_BYTES);
	for (; !err && n < o->threads; n++) {
		th[n].proc = proc;
		th[n].idx = n;
		err = -pthread_create(&tids[n], &attr, lg_thread_main, &th[n]);
		if (err)
			fprintf(stderr, "spindle-loadgen: thread %u: %s\n", n, strerror(-err));
	}
	pthread_attr_destroy(&attr);
	sh->procs[proc].err = err;
	/* Release: the error is visible to the parent once ready counts us. */
	atomic_fetch_add_explicit(&sh->ready, 1, memory_order_release);
	while (atomic_load(&sh->quit) == 0 && atomic_load(&sh->go) != LG_GO_ABORT) {
		if (err)
			break;
		lg_futex_wait(&sh->quit, 0);
	}
	if (err)
		lg_abort(sh);	/* our threads (and the run) cannot go on */
	for (unsigned i = 0; i < n; i++)
		pthread_join(tids[i], NULL);
	free(tids);
	if (c->p) {
		spn_producer_stats(c->p, &st);
		sh->procs[proc].sdk_dropped = st.packets_dropped;
		sh->procs[proc].commits = st.commits;
		sh->procs[proc].chunks = st.chunks_committed;
		sh->procs[proc].writers = st.writers_created;
		spn_producer_destroy(c->p);
	}
	if (c->te)
		spn_te_destroy(c->te);
	return err ? LG_EXIT_FAIL : LG_EXIT_OK;
}
