// SPDX-License-Identifier: Apache-2.0
// Tests of the track-event layer, part two: clocks (BOOTTIME; TSC on clock 64 with its ClockSnapshots, incremental and absolute, periodic snapshots, explicit timestamps), loss and the clear that follows, threads, thread renames, and the worked example of track-event.md §10 (tests/data/track_event) compared by import result and byte for byte where the encodings coincide.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "data_source_descriptor.pb-c.h"
#include "sdk_te_env.h"
#include "spindle/pb.h"
#include "trace_config.pb-c.h"

/* ---- Clocks ------------------------------------------------------------------- */

static void test_clock_boottime(void **state)
{
	struct env *e = env_new(SPN_TE_CLOCK_BOOTTIME);

	(void)state;
	assert_int_equal(spn_te_clock_used(e->te), SPN_TE_CLOCK_BOOTTIME);
	env_start(e, 0, NULL, 0);
	for (int i = 0; i < 3; i++) {
		uint64_t b0 = spn_te_boottime_ns(), b1;

		SPN_TRACE_INSTANT(cat_app, "T");
		b1 = spn_te_boottime_ns();
		env_pump(e);
		assert_true(e->im.ev[i].ts >= b0 && e->im.ev[i].ts <= b1);
		assert_int_equal(e->im.ev[i].clock, 0);
	}
	env_ok(e);
	assert_int_equal(e->im.snapshots, 0);
	env_free(e);
}

/* An event's converted time lies within the BOOTTIME readings around it. */
static void check_bracket(const struct imp_ev *v, uint64_t b0, uint64_t b1)
{
	const uint64_t tol = 20000; /* 20 us of calibration error */

	if (v->ts + tol < b0 || v->ts > b1 + tol)
		fail_msg("event at %llu, outside [%llu, %llu]", (unsigned long long)v->ts,
			 (unsigned long long)b0, (unsigned long long)b1);
}

static void tsc_case(bool abs_ts)
{
	struct spn_te_opts o = { .clock = SPN_TE_CLOCK_TSC, .snapshot_period_ms = 2 };
	struct env *e;
	Perfetto__Protos__TracePacket *p;
	uint64_t b0, b1, want;
	struct timespec ms5 = { 0, 5000000 };

	e = env_new_opts(256 * 1024, &o);
	assert_int_equal(spn_te_clock_used(e->te), SPN_TE_CLOCK_TSC);
	env_start_cfg(e, 0, &(struct cfg){ .abs_ts = abs_ts });
	b0 = spn_te_boottime_ns();
	SPN_TRACE_BEGIN(cat_app, "A");
	b1 = spn_te_boottime_ns();
	env_pump(e);
	env_ok(e);
	/* the clearing packet sets clock 64 as default and defines it */
	p = unpack(&e->pk[0]);
	assert_int_equal(p->sequence_flags, 1);
	assert_true(p->trace_packet_defaults->has_timestamp_clock_id);
	assert_int_equal(p->trace_packet_defaults->timestamp_clock_id, SPN_TE_CLOCK_ID_TSC);
	assert_int_equal(p->data_case, PERFETTO__PROTOS__TRACE_PACKET__DATA_CLOCK_SNAPSHOT);
	assert_int_equal(p->clock_snapshot->n_clocks, 2);
	assert_int_equal(p->clock_snapshot->clocks[0]->clock_id, SPN_TE_CLOCK_ID_BOOTTIME);
	assert_int_equal(p->clock_snapshot->clocks[1]->clock_id, SPN_TE_CLOCK_ID_TSC);
	assert_int_equal(p->clock_snapshot->clocks[1]->has_is_incremental, !abs_ts);
	pfree(p);
	/* descriptors depend on clock 64 too */
	p = unpack(&e->pk[1]);
	assert_int_equal(p->sequence_flags, 2);
	pfree(p);
	check_bracket(&e->im.ev[0], b0, b1);
	assert_int_equal(e->im.ev[0].clock, SPN_TE_CLOCK_ID_TSC);
	assert_false(e->im.ev[0].explicit_clock);
	if (!abs_ts) {
		/* deltas: the first event is a few us after the snapshot */
		p = unpack(&e->pk[3]);
		assert_true(p->timestamp < 1000000);
		pfree(p);
	}

	/* past the snapshot period: a new snapshot precedes the event */
	nanosleep(&ms5, NULL);
	b0 = spn_te_boottime_ns();
	SPN_TRACE_END(cat_app);
	b1 = spn_te_boottime_ns();
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->im.snapshots, 2);
	check_bracket(&e->im.ev[1], b0, b1);
	assert_true(e->im.ev[1].ts > e->im.ev[0].ts);
	p = unpack(&e->pk[e->npk - 2]);
	assert_int_equal(p->data_case, PERFETTO__PROTOS__TRACE_PACKET__DATA_CLOCK_SNAPSHOT);
	assert_false(p->has_sequence_flags);
	pfree(p);

	/* an explicit BOOTTIME timestamp names its clock, and does not move
	 * the delta base */
	want = spn_te_boottime_ns() - 1000;
	assert_int_equal(spn_te_emit(&cat_app, &(struct spn_te_event){
					.type = SPN_TE_INSTANT, .name = "Explicit", .ts = want }),
			 1);
	b0 = spn_te_boottime_ns();
	SPN_TRACE_INSTANT(cat_app, "After");
	b1 = spn_te_boottime_ns();
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->im.ev[2].ts, want);
	assert_true(e->im.ev[2].explicit_clock);
	assert_int_equal(e->im.ev[2].clock, SPN_TE_CLOCK_ID_BOOTTIME);
	check_bracket(&e->im.ev[3], b0, b1);
	env_free(e);
}

static void test_clock_tsc(void **state)
{
	struct spn_te_opts o = { .clock = SPN_TE_CLOCK_TSC, .writer = host_writer };
	struct spn_te *te;
	int rc;

	(void)state;
	rc = spn_te_create(&o, &te);
	if (rc == -ENOTSUP) {
		/* AUTO then falls back to BOOTTIME */
		struct env *e = env_new(SPN_TE_CLOCK_AUTO);

		assert_int_equal(spn_te_clock_used(e->te), SPN_TE_CLOCK_BOOTTIME);
		env_free(e);
		skip();
	}
	assert_int_equal(rc, 0);
	spn_te_destroy(te);
	tsc_case(false);
	tsc_case(true);
}

/* ---- Losses ------------------------------------------------------------------ */

static void test_loss_clears(void **state)
{
	struct env *e = env_new_opts(16 * 4096, &(struct spn_te_opts){ .clock = SPN_TE_CLOCK_AUTO });
	uint64_t written = 0;
	const struct spn_tw_stats *st;

	(void)state;
	env_start(e, 0, NULL, 0);
	/* fill the SMB without draining it until the writer drops packets */
	do {
		SPN_TRACE_BEGIN(cat_app, "Busy", SPN_ARG("n", written));
		SPN_TRACE_END(cat_app);
		written += 2;
		st = spn_tw_stats(host_tw(0));
	} while (st->packets_dropped < 10 && written < 200000);
	assert_true(st->packets_dropped >= 10);
	env_pump(e);
	SPN_TRACE_INSTANT(cat_app, "Recovered");
	env_pump(e);
	env_ok(e);
	/* the writer said so, and the sequence cleared its state afterwards:
	 * nothing after the loss was skipped, and the last event resolved */
	assert_true(e->im.losses >= 1);
	assert_int_equal(e->im.seq[e->pk[0].wid].clears, 2);
	assert_string_equal(e->im.ev[e->im.nev - 1].name, "Recovered");
	env_free(e);
}

/* ---- Threads ------------------------------------------------------------------ */

struct mt {
	struct env *e;
	_Atomic int stop;	/* writers done */
	int id;			/* writer thread index */
};

static void *mt_pump(void *arg)
{
	struct mt *m = arg;

	while (!atomic_load(&m->stop)) {
		ts_pump(&m->e->ts, 0);
		usleep(200);
	}
	ts_pump(&m->e->ts, 0);
	return NULL;
}

static void *mt_writer(void *arg)
{
	struct mt *m = arg;
	char name[16];

	snprintf(name, sizeof(name), "worker-%d", m->id);
	spn_te_set_thread_name(name);
	for (int i = 0; i < 3000; i++) {
		SPN_TRACE_BEGIN(cat_app, "Work", SPN_ARG("i", i), SPN_ARG("w", m->id));
		SPN_TRACE_COUNTER(cat_app, "progress", i);
		SPN_TRACE_END(cat_app);
	}
	host_release(m->e);
	return NULL;
}

static void test_threads(void **state)
{
	struct env *e = env_new_opts(2 * 1024 * 1024,
				     &(struct spn_te_opts){ .clock = SPN_TE_CLOCK_AUTO });
	struct mt pm = { .e = e }, w[2] = { { .e = e, .id = 1 }, { .e = e, .id = 2 } };
	pthread_t tp, tw[2];
	int per[3] = { 0 };

	(void)state;
	env_start(e, 0, NULL, 0);
	assert_int_equal(pthread_create(&tp, NULL, mt_pump, &pm), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&tw[i], NULL, mt_writer, &w[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(tw[i], NULL);
	atomic_store(&pm.stop, 1);
	pthread_join(tp, NULL);
	env_ok(e);
	assert_int_equal(e->im.losses, 0);
	assert_int_equal(e->im.nev, 2 * 9000);
	for (size_t i = 0; i < e->im.nev; i++) {
		const struct imp_ev *v = &e->im.ev[i];
		const struct imp_track *t;

		if (v->type != SPN_TE_SLICE_BEGIN)
			continue;
		t = imp_track(&e->im, v->track);
		assert_non_null(t);
		assert_true(t->thread);
		per[imp_arg(v, "w")->i]++;
		assert_int_equal(t->tname[7] - '0', imp_arg(v, "w")->i);
	}
	assert_int_equal(per[1], 3000);
	assert_int_equal(per[2], 3000);
	/* one counter track for the process, shared by both sequences */
	{
		uint64_t u = 0;

		for (size_t i = 0; i < e->im.nev; i++) {
			if (e->im.ev[i].type != SPN_TE_COUNTER)
				continue;
			if (!u)
				u = e->im.ev[i].track;
			assert_int_equal(e->im.ev[i].track, u);
		}
	}
	env_free(e);
}

static void test_thread_rename(void **state)
{
	struct env *e = env_new(SPN_TE_CLOCK_AUTO);
	const struct imp_track *t;

	(void)state;
	spn_te_set_thread_name("before");
	env_start(e, 0, NULL, 0);
	SPN_TRACE_INSTANT(cat_app, "A");
	spn_te_set_thread_name("after");
	SPN_TRACE_INSTANT(cat_app, "B");
	env_pump(e);
	env_ok(e);
	t = imp_track(&e->im, spn_te_thread_uuid(e->te));
	assert_non_null(t);
	assert_string_equal(t->tname, "after");
	assert_int_equal(t->ndesc, 2);
	assert_int_equal(e->im.seq[e->pk[0].wid].clears, 1);
	assert_int_equal(e->im.nev, 2);
	env_free(e);
}

/* ---- The worked example of track-event.md §10 ------------------------------------ */

static size_t read_file(const char *name, uint8_t *buf, size_t cap)
{
	char path[512];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/track_event/%s", SPN_TESTDATA_DIR, name);
	f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open %s", path);
	n = fread(buf, 1, cap, f);
	fclose(f);
	return n;
}

/* The payload of top-level field `field` of a message, or NULL. */
static const uint8_t *field_bytes(const uint8_t *p, size_t len, uint32_t field, size_t *n)
{
	const uint8_t *end = p + len;
	struct spn_pb_field f;
	int r;

	while (p < end && (r = spn_pb_next_field(p, end, &f)) > 0) {
		if (f.id == field && f.wt == SPN_PB_LEN) {
			*n = (size_t)f.value;
			return f.data;
		}
		p += r;
	}
	return NULL;
}

/* Copies message [p, p+len) without its top-level field `drop`; returns
 * the length. Also lists the field numbers in order into ids. */
static size_t strip_field(const uint8_t *p, size_t len, uint32_t drop, uint8_t *out,
			  uint32_t *ids, size_t *nids)
{
	const uint8_t *end = p + len;
	struct spn_pb_field f;
	size_t o = 0;
	int r;

	*nids = 0;
	while (p < end && (r = spn_pb_next_field(p, end, &f)) > 0) {
		if (f.id != drop) {
			memcpy(out + o, p, (size_t)r);
			o += (size_t)r;
			ids[(*nids)++] = f.id;
		}
		p += r;
	}
	assert_true(p == end);
	return o;
}

/* TrackEvent body of packet [p, p+len) without track_uuid. */
static size_t event_body(const uint8_t *p, size_t len, uint8_t *out)
{
	uint32_t ids[64];
	size_t nids, n = 0;
	const uint8_t *b = field_bytes(p, len, 11, &n);

	assert_non_null(b);
	return strip_field(b, n, 11, out, ids, &nids);
}

static void test_reference_example(void **state)
{
	static struct spn_te_track queue =
		SPN_TE_THREAD_COUNTER_TRACK("queue_depth", SPN_TE_UNIT_UNSPECIFIED);
	static const char *files[] = { "p1.bin", "p2.bin", "p3.bin", "p4.bin", "p5.bin" };
	uint8_t ref[5][256], a[256], b[256];
	size_t rlen[5], na, nb;
	struct spn_te_arg items = spn_te_arg_dyn(SPN_ARG_INT("items", 3));
	struct env *e = env_new(SPN_TE_CLOCK_BOOTTIME);
	struct imp rim;
	const struct raw *begin = NULL, *counter = NULL, *end = NULL, *cdesc = NULL, *tdesc = NULL;
	uint32_t ids[64], rids[64];
	size_t nids, nrids;

	(void)state;
	/* The reference stream through the same reader (file mode: it
	 * carries trusted_packet_sequence_id 42, which the reader flags as a
	 * service-reserved field and nothing else). */
	imp_init(&rim);
	for (int i = 0; i < 5; i++) {
		rlen[i] = read_file(files[i], ref[i], sizeof(ref[i]));
		imp_packet(&rim, 42, ref[i], rlen[i]);
	}
	assert_int_equal(rim.errors, 5);
	assert_int_equal(rim.skipped, 0);
	assert_int_equal(rim.nev, 3);

	/* The same scenario through the layer. */
	spn_te_set_thread_name("main");
	env_start(e, 0, NULL, 0);
	assert_int_equal(spn_te_emit(&cat_app, &(struct spn_te_event){
					.type = SPN_TE_SLICE_BEGIN, .name = "DoWork", .ts = 2000,
					.args = &items, .nargs = 1 }), 1);
	assert_int_equal(spn_te_emit(&cat_app, &(struct spn_te_event){
					.type = SPN_TE_COUNTER, .track = &queue, .ts = 2500,
					.value_i = 7 }), 1);
	assert_int_equal(spn_te_emit(&cat_app, &(struct spn_te_event){
					.type = SPN_TE_SLICE_END, .ts = 3000 }), 1);
	env_pump(e);
	env_ok(e);

	/* Same import result (track-event.md §10.1): a thread "main" of our
	 * process with slice DoWork (app, debug.items = 3) from 2000 to 3000,
	 * and a counter track queue_depth under that thread reading 7 at
	 * 2500. */
	assert_int_equal(e->im.nev, rim.nev);
	for (size_t i = 0; i < rim.nev; i++) {
		const struct imp_ev *r = &rim.ev[i], *v = &e->im.ev[i];
		const struct imp_track *rt = imp_track(&rim, r->track), *vt = imp_track(&e->im, v->track);

		assert_int_equal(v->type, r->type);
		assert_int_equal(v->ts, r->ts);
		assert_string_equal(v->name, r->name);
		assert_string_equal(v->cat, r->cat);
		assert_int_equal(v->nargs, r->nargs);
		for (int k = 0; k < r->nargs; k++) {
			assert_string_equal(v->args[k].name, r->args[k].name);
			assert_int_equal(v->args[k].i, r->args[k].i);
		}
		assert_int_equal(v->vi, r->vi);
		assert_non_null(rt);
		assert_non_null(vt);
		assert_int_equal(vt->counter, rt->counter);
		assert_int_equal(vt->thread, rt->thread);
		assert_string_equal(vt->name, rt->name);
		assert_string_equal(vt->tname, rt->tname);
		if (rt->has_parent) {
			const struct imp_track *rp = imp_track(&rim, rt->parent);
			const struct imp_track *vp = imp_track(&e->im, vt->parent);

			assert_non_null(vp);
			assert_int_equal(vp->thread, rp->thread);
			assert_string_equal(vp->tname, rp->tname);
		}
	}
	imp_fini(&rim);

	/* Byte level, where the encodings coincide. Find our packets. */
	for (size_t i = 0; i < e->npk; i++) {
		Perfetto__Protos__TracePacket *p = unpack(&e->pk[i]);

		if (p->track_event && (int)p->track_event->type == SPN_TE_SLICE_BEGIN)
			begin = &e->pk[i];
		else if (p->track_event && (int)p->track_event->type == SPN_TE_COUNTER)
			counter = &e->pk[i];
		else if (p->track_event && (int)p->track_event->type == SPN_TE_SLICE_END)
			end = &e->pk[i];
		else if (p->track_descriptor && p->track_descriptor->counter)
			cdesc = &e->pk[i];
		else if (p->track_descriptor && p->track_descriptor->thread)
			tdesc = &e->pk[i];
		pfree(p);
	}
	assert_non_null(begin);
	assert_non_null(counter);
	assert_non_null(end);
	assert_non_null(cdesc);
	assert_non_null(tdesc);
	/* P3: the same top-level fields in the same order (minus the
	 * file-mode sequence id), the same interned_data bytes, the same
	 * TrackEvent bytes apart from track_uuid (ours rides on the default) */
	na = strip_field(begin->d, begin->len, 10, a, ids, &nids);
	nb = strip_field(ref[2], rlen[2], 10, b, rids, &nrids);
	assert_int_equal(nids, nrids);
	assert_memory_equal(ids, rids, nids * sizeof(ids[0]));
	{
		const uint8_t *x = field_bytes(begin->d, begin->len, 12, &na);
		const uint8_t *y = field_bytes(ref[2], rlen[2], 12, &nb);

		assert_int_equal(na, nb);
		assert_memory_equal(x, y, na);
	}
	na = event_body(begin->d, begin->len, a);
	nb = event_body(ref[2], rlen[2], b);
	assert_int_equal(na, nb);
	assert_memory_equal(a, b, na);
	/* P4 and P5: the counter and the end, apart from track_uuid */
	na = event_body(counter->d, counter->len, a);
	nb = event_body(ref[3], rlen[3], b);
	assert_int_equal(na, nb);
	assert_memory_equal(a, b, na);
	na = event_body(end->d, end->len, a);
	nb = event_body(ref[4], rlen[4], b);
	assert_int_equal(na, nb);
	assert_memory_equal(a, b, na);
	/* P2: the counter descriptor apart from its uuid and parent */
	{
		const uint8_t *x = field_bytes(cdesc->d, cdesc->len, 60, &na);
		const uint8_t *y = field_bytes(ref[1], rlen[1], 60, &nb);
		uint8_t a2[256], b2[256];

		na = strip_field(x, na, 1, a, ids, &nids);
		na = strip_field(a, na, 5, a2, ids, &nids);
		nb = strip_field(y, nb, 1, b, rids, &nrids);
		nb = strip_field(b, nb, 5, b2, rids, &nrids);
		assert_int_equal(na, nb);
		assert_memory_equal(a2, b2, na);
	}
	/* P1: the ThreadDescriptor has the same layout (pid, tid, name) */
	{
		const uint8_t *x = field_bytes(tdesc->d, tdesc->len, 60, &na);
		const uint8_t *y = field_bytes(ref[0], rlen[0], 60, &nb);
		uint8_t want[64], *q = want;

		x = field_bytes(x, na, 4, &na);
		y = field_bytes(y, nb, 4, &nb);
		q = spn_pb_field_int(q, 1, getpid());
		q = spn_pb_field_int(q, 2, gettid());
		q = spn_pb_field_string(q, 5, "main");
		assert_int_equal(na, (size_t)(q - want));
		assert_memory_equal(x, want, na);
		q = spn_pb_field_int(want, 1, 1234);
		q = spn_pb_field_int(q, 2, 1235);
		q = spn_pb_field_string(q, 5, "main");
		assert_int_equal(nb, (size_t)(q - want));
		assert_memory_equal(y, want, nb);
	}
	env_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clock_boottime),
		cmocka_unit_test(test_clock_tsc),
		cmocka_unit_test(test_loss_clears),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_thread_rename),
		cmocka_unit_test(test_reference_example),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
