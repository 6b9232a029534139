// SPDX-License-Identifier: Apache-2.0
// Tests of the track-event layer (include/spindle/track_event.h), part one: registry and descriptor, category matching, what a sequence starts with, interning and eviction, slices, counters, annotations, flows, tracks, enabling per instance, stop and restart. Events go through real trace writers into an in-process SMB, are drained by the test service, decoded with the generated protobuf-c code and read back by a trace_processor stand-in (sdk_te_import.c).
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

/* ---- Registry, descriptor, matching -------------------------------------------- */

static void test_descriptor(void **state)
{
	struct env *e = env_new(SPN_TE_CLOCK_BOOTTIME);
	Perfetto__Protos__TrackEventDescriptor *d;
	uint8_t *buf;
	size_t len;

	(void)state;
	assert_int_equal(spn_te_descriptor(e->te, &buf, &len), 0);
	d = perfetto__protos__track_event_descriptor__unpack(NULL, len, buf);
	assert_non_null(d);
	assert_int_equal(d->n_available_categories, NCATS);
	assert_string_equal(d->available_categories[0]->name, "app");
	assert_string_equal(d->available_categories[0]->description, "Application events");
	assert_int_equal(d->available_categories[0]->n_tags, 0);
	assert_string_equal(d->available_categories[1]->name, "gpu");
	assert_int_equal(d->available_categories[1]->n_tags, 1);
	assert_string_equal(d->available_categories[1]->tags[0], "slow");
	assert_int_equal(d->available_categories[3]->n_tags, 2);
	assert_string_equal(d->available_categories[3]->tags[1], "remote");
	perfetto__protos__track_event_descriptor__free_unpacked(d, NULL);
	free(buf);
	env_free(e);
}

static void test_create_errors(void **state)
{
	struct spn_te_opts o = { .categories = all_cats, .ncategories = NCATS };
	struct spn_te_category *dup[] = { &cat_app, &cat_app };
	struct spn_te_category unnamed = { 0 };
	struct spn_te_category *bad[] = { &unnamed };
	struct spn_te *te, *te2;

	(void)state;
	assert_int_equal(spn_te_create(&o, &te), -EINVAL); /* no writer */
	o.writer = host_writer;
	o.categories = dup;
	o.ncategories = 2;
	assert_int_equal(spn_te_create(&o, &te), -EINVAL);
	o.categories = bad;
	o.ncategories = 1;
	assert_int_equal(spn_te_create(&o, &te), -EINVAL);
	o.categories = all_cats;
	o.ncategories = NCATS;
	assert_int_equal(spn_te_create(&o, &te), 0);
	/* a category belongs to one te at a time */
	assert_int_equal(spn_te_create(&o, &te2), -EINVAL);
	assert_int_equal(spn_te_start(te, SPN_TE_MAX_INSTANCES, NULL, 0), -EINVAL);
	assert_int_equal(spn_te_start(te, 0, (const uint8_t *)"\xff", 1), -EINVAL);
	assert_int_equal(spn_te_start(te, 0, NULL, 0), 0);
	assert_int_equal(spn_te_start(te, 0, NULL, 0), -EBUSY);
	spn_te_destroy(te);
	assert_int_equal(atomic_load(&cat_app.enabled), 0);
	assert_null(cat_app.te);
}

/* One matching case: the config and the expected state of all_cats. */
struct match_case {
	struct cfg c;
	bool unmatched;
	bool want[NCATS]; /* app, gpu(slow), dbg.verbose(debug), net(io, remote) */
};

static void test_match_rules(void **state)
{
	static const struct match_case cases[] = {
		/* empty: everything but slow/debug (C++ default) */
		{ .unmatched = true, .want = { 1, 0, 0, 1 } },
		/* empty, C SDK default */
		{ .unmatched = false, .want = { 0, 0, 0, 0 } },
		/* the UI's usual form */
		{ { .en = { "app" }, .dis = { "*" } }, true, { 1, 0, 0, 0 } },
		/* "*" does not reach slow and debug: the default disabled
		 * tags match exactly, a level before the lone star */
		{ { .en = { "*" } }, false, { 1, 0, 0, 1 } },
		/* unless the config gives its own tag list */
		{ { .en = { "*" }, .dis_tags = { "none" } }, false, { 1, 1, 1, 1 } },
		/* a prefix pattern does not reach a debug-tagged category
		 * (its tag is disabled at the exact level), its name does */
		{ { .en = { "dbg.*" }, .dis = { "*" } }, true, { 0, 0, 0, 0 } },
		{ { .en = { "dbg.verbose" }, .dis = { "*" } }, true, { 0, 0, 1, 0 } },
		{ { .en = { "n*" }, .dis = { "*" } }, true, { 0, 0, 0, 1 } },
		/* exact beats prefix: disabled "app" wins over enabled "a*" */
		{ { .en = { "a*" }, .dis = { "app" } }, false, { 0, 0, 0, 0 } },
		/* prefix beats lone star */
		{ { .en = { "*" }, .dis = { "g*" } }, false, { 1, 0, 0, 1 } },
		/* enabled tags; giving a tag list drops the slow/debug default;
		 * an exact tag beats the lone-star disabled category */
		{ { .en_tags = { "slow" }, .dis = { "*" } }, true, { 0, 1, 0, 0 } },
		{ { .en_tags = { "slow" } }, false, { 0, 1, 0, 0 } },
		{ { .en_tags = { "remote" } }, true, { 1, 1, 1, 1 } },
		/* disabled tags (explicit) */
		{ { .dis_tags = { "io" } }, true, { 1, 1, 1, 0 } },
		/* at one level disabled categories beat enabled tags */
		{ { .dis = { "net" }, .en_tags = { "io" } }, true, { 1, 1, 1, 0 } },
		/* disabled tags beat enabled tags */
		{ { .dis_tags = { "io" }, .en_tags = { "remote" } }, false, { 0, 0, 0, 0 } },
		/* an exact enabled tag beats a lone-star disabled category */
		{ { .dis = { "*" }, .en_tags = { "debug" } }, true, { 0, 0, 1, 0 } },
		/* tag patterns */
		{ { .dis = { "*" }, .en_tags = { "rem*" } }, true, { 0, 0, 0, 1 } },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool on[NCATS];
		uint8_t *b;
		size_t n = cfg_pack(&cases[i].c, &b);

		assert_int_equal(spn_te_match(b, n, (const struct spn_te_category *const *)all_cats,
					      NCATS, cases[i].unmatched, on),
				 0);
		for (size_t k = 0; k < NCATS; k++)
			if (on[k] != cases[i].want[k])
				fail_msg("case %zu: category %s is %s", i, all_cats[k]->name,
					 on[k] ? "on" : "off");
		free(b);
	}
	{
		bool on[NCATS];

		assert_int_equal(spn_te_match((const uint8_t *)"\x0a\x05\x61", 3,
					      (const struct spn_te_category *const *)all_cats,
					      NCATS, true, on),
				 -EINVAL);
	}
}

/* ---- What a sequence starts with --------------------------------------------- */

static void test_first_packets(void **state)
{
	struct env *e = env_new(SPN_TE_CLOCK_BOOTTIME);
	Perfetto__Protos__TracePacket *p;
	uint64_t b0, b1;

	(void)state;
	spn_te_set_thread_name("te-main");
	env_start(e, 0, NULL, 0);
	b0 = spn_te_boottime_ns();
	SPN_TRACE_BEGIN(cat_app, "DoWork");
	b1 = spn_te_boottime_ns();
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->npk, 4);

	/* 1: the clearing packet */
	p = unpack(&e->pk[0]);
	assert_true(p->has_first_packet_on_sequence && p->first_packet_on_sequence);
	assert_true(p->has_sequence_flags);
	assert_int_equal(p->sequence_flags, 1);
	assert_non_null(p->trace_packet_defaults);
	assert_false(p->trace_packet_defaults->has_timestamp_clock_id);
	assert_non_null(p->trace_packet_defaults->track_event_defaults);
	assert_int_equal(p->trace_packet_defaults->track_event_defaults->track_uuid,
			 spn_te_thread_uuid(e->te));
	assert_int_equal(p->data_case, 0);
	assert_false(p->has_timestamp);
	pfree(p);

	/* 2: the process track */
	p = unpack(&e->pk[1]);
	assert_int_equal(p->data_case, PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACK_DESCRIPTOR);
	assert_false(p->has_sequence_flags);
	assert_true(p->has_timestamp);
	assert_int_equal(p->track_descriptor->uuid, spn_te_process_uuid(e->te));
	assert_non_null(p->track_descriptor->process);
	assert_int_equal(p->track_descriptor->process->pid, getpid());
	assert_true(p->track_descriptor->process->n_cmdline >= 1);
	assert_non_null(strstr(p->track_descriptor->process->process_name, "sdk_track_event_test"));
	pfree(p);

	/* 3: the thread track, under the process */
	p = unpack(&e->pk[2]);
	assert_int_equal(p->data_case, PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACK_DESCRIPTOR);
	assert_int_equal(p->track_descriptor->uuid, spn_te_thread_uuid(e->te));
	assert_int_equal(p->track_descriptor->parent_uuid, spn_te_process_uuid(e->te));
	assert_non_null(p->track_descriptor->thread);
	assert_int_equal(p->track_descriptor->thread->pid, getpid());
	assert_int_equal(p->track_descriptor->thread->tid, gettid());
	assert_string_equal(p->track_descriptor->thread->thread_name, "te-main");
	pfree(p);

	/* 4: the event, on the default (thread) track, interning its names */
	p = unpack(&e->pk[3]);
	assert_int_equal(p->sequence_flags, 2);
	assert_false(p->has_first_packet_on_sequence);
	assert_non_null(p->interned_data);
	assert_int_equal(p->interned_data->n_event_categories, 1);
	assert_int_equal(p->interned_data->event_categories[0]->iid, 1);
	assert_string_equal(p->interned_data->event_categories[0]->name, "app");
	assert_int_equal(p->interned_data->n_event_names, 1);
	assert_string_equal(p->interned_data->event_names[0]->name, "DoWork");
	assert_false(p->track_event->has_track_uuid);
	assert_int_equal(p->track_event->type, SPN_TE_SLICE_BEGIN);
	assert_true(p->timestamp >= b0 && p->timestamp <= b1);
	assert_false(p->has_timestamp_clock_id);
	pfree(p);

	assert_int_equal(e->im.nev, 1);
	assert_string_equal(e->im.ev[0].name, "DoWork");
	assert_string_equal(e->im.ev[0].cat, "app");
	assert_int_equal(e->im.ev[0].track, spn_te_thread_uuid(e->te));
	assert_int_equal(atomic_load(&e->writer_calls), 1);
	env_free(e);
}

static void test_interning(void **state)
{
	struct env *e = env_new(SPN_TE_CLOCK_AUTO);
	size_t before;

	(void)state;
	env_start(e, 0, NULL, 0);
	for (int i = 0; i < 50; i++) {
		SPN_TRACE_BEGIN(cat_app, "Outer", SPN_ARG("i", i));
		SPN_TRACE_INSTANT(cat_app, "Tick", SPN_ARG("i", i), SPN_ARG("half", i / 2));
		SPN_TRACE_INSTANT(cat_net, "Tick");
		SPN_TRACE_END(cat_app);
	}
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->im.nev, 200);
	/* each string went out once: 2 categories, 2 names, 2 annotation names */
	assert_int_equal(e->im.interned[1], 2);
	assert_int_equal(e->im.interned[2], 2);
	assert_int_equal(e->im.interned[3], 2);
	assert_int_equal(e->im.redundant, 0);
	assert_int_equal(e->im.seq[e->pk[0].wid].clears, 1);

	/* a clear: everything is defined again, iids restart */
	before = e->npk;
	assert_int_equal(spn_te_clear_incremental_state(e->te, 0), 0);
	SPN_TRACE_BEGIN(cat_app, "Outer", SPN_ARG("i", 1));
	SPN_TRACE_END(cat_app);
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->im.seq[e->pk[0].wid].clears, 2);
	assert_int_equal(e->im.seq[e->pk[0].wid].firsts, 1);
	assert_int_equal(e->im.interned[1], 3);
	assert_int_equal(e->im.interned[2], 3);
	assert_int_equal(e->im.interned[3], 3);
	{
		Perfetto__Protos__TracePacket *p = unpack(&e->pk[before]);

		assert_int_equal(p->sequence_flags, 1);
		assert_false(p->has_first_packet_on_sequence);
		pfree(p);
		/* descriptors again after the clear */
		p = unpack(&e->pk[before + 2]);
		assert_non_null(p->track_descriptor);
		assert_non_null(p->track_descriptor->thread);
		pfree(p);
		p = unpack(&e->pk[before + 3]);
		assert_int_equal(p->interned_data->event_names[0]->iid, 1);
		pfree(p);
	}
	/* the same writer: no new host call for a clear */
	assert_int_equal(atomic_load(&e->writer_calls), 1);
	env_free(e);
}

/* Many names at stable addresses through a fixed table: evicted names are
 * interned again under new iids; no iid is ever rebound. */
static void test_intern_eviction(void **state)
{
	enum { N = 3000 };
	static char names[N][12];
	struct env *e = env_new_opts(1024 * 1024, &(struct spn_te_opts){ .clock = SPN_TE_CLOCK_AUTO });
	size_t k = 0;

	(void)state;
	for (int i = 0; i < N; i++)
		snprintf(names[i], sizeof(names[i]), "n%d", i);
	env_start(e, 0, NULL, 0);
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < N; i++) {
			struct spn_te_event ev = { .type = SPN_TE_INSTANT, .name = names[i] };

			assert_int_equal(spn_te_emit(&cat_app, &ev), 1);
			if (i % 200 == 199)
				env_pump(e);
		}
	}
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->im.nev, 2 * N);
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < N; i++, k++)
			assert_string_equal(e->im.ev[k].name, names[i]);
	/* the second round found most names evicted and re-interned them */
	assert_true(e->im.interned[2] > N + N / 2);
	assert_int_equal(e->im.redundant, 0);
	/* a small working set stays interned */
	{
		uint64_t before = e->im.interned[2];

		for (int r = 0; r < 100; r++)
			for (int i = 0; i < 8; i++) {
				struct spn_te_event ev = { .type = SPN_TE_INSTANT, .name = names[i] };

				spn_te_emit(&cat_app, &ev);
			}
		env_pump(e);
		env_ok(e);
		assert_true(e->im.interned[2] <= before + 8);
	}
	env_free(e);
}

/* ---- Slices, instants, counters, annotations, flows ---------------------------- */

static void test_slices_nesting(void **state)
{
	struct env *e = env_new(SPN_TE_CLOCK_AUTO);
	struct { int depth; const char *name; } want[] = {
		{ 0, "Outer" }, { 1, "Inner" }, { 2, "Mark" }, { 1, "Sibling" },
	};
	int depth = 0, n = 0;
	uint64_t last = 0;

	(void)state;
	env_start(e, 0, NULL, 0);
	SPN_TRACE_BEGIN(cat_app, "Outer");
	SPN_TRACE_BEGIN(cat_app, "Inner");
	SPN_TRACE_INSTANT(cat_app, "Mark");
	SPN_TRACE_END(cat_app);
	SPN_TRACE_BEGIN(cat_app, "Sibling");
	SPN_TRACE_END(cat_app, SPN_ARG("result", 7));
	SPN_TRACE_END(cat_app);
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->im.nev, 7);
	for (size_t i = 0; i < e->im.nev; i++) {
		const struct imp_ev *v = &e->im.ev[i];

		assert_true(v->ts >= last);
		last = v->ts;
		assert_int_equal(v->track, spn_te_thread_uuid(e->te));
		if (v->type == SPN_TE_SLICE_END) {
			assert_false(v->has_name || v->has_cat);
			assert_true(depth > 0);
			depth--;
			continue;
		}
		assert_string_equal(v->cat, "app");
		assert_int_equal(depth, want[n].depth);
		assert_string_equal(v->name, want[n].name);
		n++;
		if (v->type == SPN_TE_SLICE_BEGIN)
			depth++;
	}
	assert_int_equal(depth, 0);
	assert_int_equal(n, 4);
	/* args on END are kept (TP merges them into the closed slice) */
	assert_non_null(imp_arg(&e->im.ev[5], "result"));
	env_free(e);
}

static void test_counters(void **state)
{
	static struct spn_te_track mem =
		SPN_TE_THREAD_COUNTER_TRACK("heap", SPN_TE_UNIT_SIZE_BYTES);
	struct env *e = env_new(SPN_TE_CLOCK_AUTO);
	const struct imp_track *t;
	uint64_t proc = 0;

	(void)state;
	mem.unit_multiplier = 1024;
	env_start(e, 0, NULL, 0);
	for (int i = 0; i < 3; i++) {
		SPN_TRACE_COUNTER(cat_app, "queue_depth", 7 + i);
		SPN_TRACE_COUNTER(cat_app, "load", 0.5 * i);
		SPN_TRACE_COUNTER_ON(cat_app, &mem, (int64_t)-3 * i);
	}
	SPN_TRACE_COUNTER(cat_gpu, "gpu_busy", 1); /* gpu is slow: off */
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->im.nev, 9);
	/* process + thread + three counter tracks, each described once */
	assert_int_equal(e->im.descriptors, 5);
	for (size_t i = 0; i < e->im.nev; i++) {
		const struct imp_ev *v = &e->im.ev[i];
		int r = (int)i / 3;

		assert_int_equal(v->type, SPN_TE_COUNTER);
		assert_false(v->has_cat || v->has_name);
		t = imp_track(&e->im, v->track);
		assert_non_null(t);
		assert_true(t->counter);
		switch (i % 3) {
		case 0:
			assert_string_equal(t->name, "queue_depth");
			assert_false(v->is_double);
			assert_int_equal(v->vi, 7 + r);
			assert_int_equal(t->parent, spn_te_process_uuid(e->te));
			proc = v->track;
			break;
		case 1:
			assert_string_equal(t->name, "load");
			assert_true(v->is_double);
			assert_true(v->vd == 0.5 * r);
			break;
		default:
			assert_string_equal(t->name, "heap");
			assert_int_equal(v->vi, -3 * r);
			assert_int_equal(t->parent, spn_te_thread_uuid(e->te));
			assert_int_equal(t->unit, SPN_TE_UNIT_SIZE_BYTES);
			assert_int_equal(t->mult, 1024);
			assert_int_equal(v->track, spn_te_track_uuid(e->te, &mem));
		}
	}
	/* the same name from another call site is the same track */
	SPN_TRACE_COUNTER(cat_app, "queue_depth", 1);
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->im.ev[e->im.nev - 1].track, proc);
	env_free(e);
}

static int side_effects;

static int bump(void)
{
	return ++side_effects;
}

static void test_annotations(void **state)
{
	struct env *e = env_new(SPN_TE_CLOCK_AUTO);
	const struct imp_ev *v;
	const struct imp_arg *a;
	char dyn[16] = "dyn_key";
	int x = 5;

	(void)state;
	env_start(e, 0, NULL, 0);
	SPN_TRACE_INSTANT(cat_app, "Args", SPN_ARG_INT("int", -42), SPN_ARG_UINT("uint", 1ull << 63),
			  SPN_ARG_DOUBLE("double", 2.25), SPN_ARG_BOOL("bool", true),
			  SPN_ARG_STR("str", "hello"), SPN_ARG_PTR("ptr", &x),
			  SPN_ARG("g_bool", (bool)false), SPN_ARG("g_uint", 3u), SPN_ARG("g_dbl", 1.5f),
			  SPN_ARG("g_str", "s"), SPN_ARG("g_int", (short)-2),
			  SPN_ARG_DYN(dyn, 99), SPN_ARG_STR("null", NULL));
	SPN_TRACE_INSTANT(cat_app, "Args2", SPN_ARG_INT("int", 1));
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->im.nev, 2);
	v = &e->im.ev[0];
	assert_int_equal(v->nargs, 13);
	a = imp_arg(v, "int");
	assert_int_equal(a->kind, PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_INT_VALUE);
	assert_int_equal(a->i, -42);
	a = imp_arg(v, "uint");
	assert_int_equal(a->kind, PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_UINT_VALUE);
	assert_true(a->u == 1ull << 63);
	a = imp_arg(v, "double");
	assert_int_equal(a->kind, PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_DOUBLE_VALUE);
	assert_true(a->d == 2.25);
	a = imp_arg(v, "bool");
	assert_int_equal(a->kind, PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_BOOL_VALUE);
	assert_true(a->b);
	a = imp_arg(v, "str");
	assert_int_equal(a->kind, PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_STRING_VALUE);
	assert_string_equal(a->s, "hello");
	a = imp_arg(v, "ptr");
	assert_int_equal(a->kind, PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_POINTER_VALUE);
	assert_true(a->u == (uint64_t)(uintptr_t)&x);
	assert_int_equal(imp_arg(v, "g_bool")->kind, PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_BOOL_VALUE);
	assert_int_equal(imp_arg(v, "g_uint")->kind, PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_UINT_VALUE);
	assert_true(imp_arg(v, "g_dbl")->d == 1.5);
	assert_string_equal(imp_arg(v, "g_str")->s, "s");
	assert_int_equal(imp_arg(v, "g_int")->i, -2);
	assert_int_equal(imp_arg(v, "dyn_key")->i, 99);
	assert_string_equal(imp_arg(v, "null")->s, "");
	/* static names interned once (12), the runtime one inline */
	assert_int_equal(e->im.interned[3], 12);
	{
		Perfetto__Protos__TracePacket *p = unpack(&e->pk[e->npk - 2]);
		int inline_names = 0;

		for (size_t i = 0; i < p->track_event->n_debug_annotations; i++)
			inline_names += p->track_event->debug_annotations[i]->name_field_case ==
					PERFETTO__PROTOS__DEBUG_ANNOTATION__NAME_FIELD_NAME;
		assert_int_equal(inline_names, 1);
		pfree(p);
		/* the second event reuses "int" without defining it again */
		p = unpack(&e->pk[e->npk - 1]);
		assert_int_equal(p->interned_data->n_debug_annotation_names, 0);
		pfree(p);
	}
	env_free(e);

	/* filter_debug_annotations: args dropped, flows kept; disabled: args
	 * not even evaluated */
	e = env_new(SPN_TE_CLOCK_AUTO);
	env_start_cfg(e, 0, &(struct cfg){ .no_args = true });
	side_effects = 0;
	SPN_TRACE_INSTANT(cat_app, "F", SPN_ARG("n", bump()), SPN_FLOW(77));
	SPN_TRACE_INSTANT(cat_gpu, "G", SPN_ARG("n", bump()));
	assert_int_equal(side_effects, 1);
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->im.nev, 1);
	assert_int_equal(e->im.ev[0].nargs, 0);
	assert_int_equal(e->im.ev[0].nflows, 1);
	env_free(e);
}

static void test_flows(void **state)
{
	struct env *e = env_new(SPN_TE_CLOCK_AUTO);
	const struct imp_ev *v;

	(void)state;
	env_start(e, 0, NULL, 0);
	SPN_TRACE_BEGIN(cat_app, "Send", SPN_FLOW(0x1234), SPN_FLOW_LOCAL(5));
	SPN_TRACE_END(cat_app);
	SPN_TRACE_INSTANT(cat_app, "Hop", SPN_FLOW(0x1234));
	SPN_TRACE_BEGIN(cat_app, "Recv", SPN_FLOW_END(0x1234), SPN_FLOW_LOCAL_END(5));
	SPN_TRACE_END(cat_app, SPN_FLOW(9));
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->im.nev, 5);
	v = &e->im.ev[0];
	assert_int_equal(v->nflows, 2);
	assert_int_equal(v->flows[0], 0x1234);
	assert_true(v->flows[1] != 5 && v->flows[1] != 0);
	assert_int_equal(e->im.ev[2].nflows, 1);
	assert_int_equal(e->im.ev[2].flows[0], 0x1234);
	v = &e->im.ev[3];
	assert_int_equal(v->nflows, 0);
	assert_int_equal(v->ntflows, 2);
	assert_int_equal(v->tflows[0], 0x1234);
	assert_int_equal(v->tflows[1], e->im.ev[0].flows[1]);
	assert_int_equal(e->im.ev[4].nflows, 1);
	/* wire form: fixed64, one key per id (F9 02 + 8 LE bytes) */
	{
		static const uint8_t want[] = { 0xF9, 0x02, 0x34, 0x12, 0, 0, 0, 0, 0, 0 };
		const struct raw *r = &e->pk[e->npk - 3];
		bool found = false;

		for (size_t i = 0; i + sizeof(want) <= r->len; i++)
			found |= memcmp(r->d + i, want, sizeof(want)) == 0;
		assert_true(found);
	}
	env_free(e);
}

/* A name built at run time. */
static const char *dyn_name(void)
{
	static char b[32];

	snprintf(b, sizeof(b), "runtime-name-%d", 3);
	return b;
}

static void test_tracks(void **state)
{
	static struct spn_te_track req1 = SPN_TE_TRACK("request", 1);
	static struct spn_te_track req2 = SPN_TE_TRACK("request", 2);
	struct env *e = env_new(SPN_TE_CLOCK_AUTO);
	const struct imp_track *t;

	(void)state;
	env_start(e, 0, NULL, 0);
	SPN_TRACE_BEGIN_ON(cat_app, &req1, "Fetch");
	SPN_TRACE_BEGIN_ON(cat_app, &req2, "Fetch");
	SPN_TRACE_END_ON(cat_app, &req1);
	SPN_TRACE_INSTANT_ON(cat_app, &req2, "Progress");
	SPN_TRACE_END_ON(cat_app, &req2, SPN_ARG("bytes", 10));
	SPN_TRACE_BEGIN_STR(cat_app, dyn_name(), SPN_ARG("k", 1));
	SPN_TRACE_END(cat_app);
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->im.nev, 7);
	assert_true(e->im.ev[0].track != e->im.ev[1].track);
	assert_int_equal(e->im.ev[2].track, e->im.ev[0].track);
	t = imp_track(&e->im, e->im.ev[0].track);
	assert_non_null(t);
	assert_string_equal(t->name, "request");
	assert_false(t->counter);
	assert_int_equal(t->parent, spn_te_process_uuid(e->te));
	assert_int_equal(t->ndesc, 1);
	assert_int_equal(e->im.ev[3].track, e->im.ev[1].track);
	assert_string_equal(e->im.ev[5].name, "runtime-name-3");
	assert_int_equal(e->im.ev[5].track, spn_te_thread_uuid(e->te));
	env_free(e);

	/* filter_dynamic_event_names */
	e = env_new(SPN_TE_CLOCK_AUTO);
	env_start_cfg(e, 0, &(struct cfg){ .no_dyn = true });
	SPN_TRACE_INSTANT_STR(cat_app, dyn_name());
	SPN_TRACE_INSTANT(cat_app, "Static");
	env_pump(e);
	env_ok(e);
	assert_string_equal(e->im.ev[0].name, "FILTERED");
	assert_string_equal(e->im.ev[1].name, "Static");
	env_free(e);
}

/* ---- Enabling and disabling ------------------------------------------------------ */

static void test_category_filter(void **state)
{
	struct env *e = env_new(SPN_TE_CLOCK_AUTO);

	(void)state;
	/* nothing started: every category is off, nothing is written */
	assert_false(SPN_TE_ENABLED(cat_app));
	SPN_TRACE_BEGIN(cat_app, "Off");
	SPN_TRACE_COUNTER(cat_app, "off", 1);
	env_pump(e);
	assert_int_equal(e->npk, 0);
	assert_int_equal(atomic_load(&e->writer_calls), 0);

	env_start_cfg(e, 0, &(struct cfg){ .en = { "ap*", "dbg.verbose" }, .dis = { "*" } });
	assert_true(SPN_TE_ENABLED(cat_app));
	assert_true(SPN_TE_ENABLED(cat_dbg));
	assert_false(SPN_TE_ENABLED(cat_gpu));
	assert_false(SPN_TE_ENABLED(cat_net));
	SPN_TRACE_INSTANT(cat_app, "A");
	SPN_TRACE_INSTANT(cat_gpu, "G");
	SPN_TRACE_INSTANT(cat_net, "N");
	SPN_TRACE_INSTANT(cat_dbg, "D");
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->im.nev, 2);
	assert_string_equal(e->im.ev[0].cat, "app");
	assert_string_equal(e->im.ev[1].cat, "dbg.verbose");
	env_stop(e, 0);
	assert_false(SPN_TE_ENABLED(cat_app));
	env_free(e);
}

static void test_instances(void **state)
{
	struct env *e = env_new(SPN_TE_CLOCK_AUTO);
	uint16_t w0 = 0, w1 = 0;
	int n0 = 0, n1 = 0;

	(void)state;
	env_start_cfg(e, 0, &(struct cfg){ .en = { "app" }, .dis = { "*" } });
	env_start_cfg(e, 3, &(struct cfg){ .en = { "app", "net" }, .dis = { "*" } });
	assert_int_equal(atomic_load(&cat_app.enabled), 1u | 8u);
	assert_int_equal(atomic_load(&cat_net.enabled), 8u);
	SPN_TRACE_BEGIN(cat_app, "Both");
	SPN_TRACE_INSTANT(cat_net, "Three");
	SPN_TRACE_END(cat_app);
	env_pump(e);
	env_ok(e);
	for (size_t i = 0; i < e->im.nev; i++) {
		const struct imp_ev *v = &e->im.ev[i];

		if (strcmp(v->name, "Three") == 0 || (v->type == SPN_TE_SLICE_END && w1 == v->wid)) {
			w1 = v->wid;
			n1++;
		} else if (w0 == 0 || v->wid == w0) {
			if (v->type == SPN_TE_SLICE_BEGIN && w0 == 0 && n1 == 0 && i == 0)
				w0 = v->wid;
			if (v->wid == w0)
				n0++;
			else
				n1++;
		} else {
			n1++;
		}
	}
	/* two sequences (one writer per instance), each a valid stream */
	assert_int_equal(e->im.nev, 5);
	assert_true(w0 != 0 && w1 != 0 && w0 != w1);
	assert_int_equal(n0, 2);
	assert_int_equal(n1, 3);
	assert_int_equal(e->im.seq[w0].clears, 1);
	assert_int_equal(e->im.seq[w1].clears, 1);
	assert_int_equal(atomic_load(&e->writer_calls), 2);
	env_free(e);
}

static void test_stop_restart(void **state)
{
	struct env *e = env_new(SPN_TE_CLOCK_AUTO);
	size_t n;

	(void)state;
	env_start(e, 0, NULL, 0);
	SPN_TRACE_INSTANT(cat_app, "One");
	env_stop(e, 0);
	SPN_TRACE_INSTANT(cat_app, "Stopped");
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->im.nev, 1);
	n = e->npk;
	env_start(e, 0, NULL, 0);
	SPN_TRACE_INSTANT(cat_app, "Two");
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->im.nev, 2);
	assert_string_equal(e->im.ev[1].name, "Two");
	/* a new session: a new writer, starting its own sequence */
	assert_int_equal(atomic_load(&e->writer_calls), 2);
	assert_true(e->pk[n].wid != e->pk[0].wid || e->im.seq[e->pk[n].wid].clears == 2);
	{
		Perfetto__Protos__TracePacket *p = unpack(&e->pk[n]);

		assert_int_equal(p->sequence_flags, 1);
		assert_true(p->first_packet_on_sequence);
		pfree(p);
	}
	env_free(e);
}

static void test_emit_validation(void **state)
{
	static struct spn_te_track plain = SPN_TE_TRACK("plain", 0);
	static struct spn_te_track ctr = SPN_TE_COUNTER_TRACK("ctr", 0);
	struct env *e = env_new(SPN_TE_CLOCK_AUTO);
	struct spn_te_arg many[SPN_TE_MAX_ARGS + 1] = { { 0 } };

	(void)state;
	env_start(e, 0, NULL, 0);
	assert_int_equal(spn_te_emit(&cat_app, &(struct spn_te_event){ .type = 0 }), -EINVAL);
	assert_int_equal(spn_te_emit(&cat_app, &(struct spn_te_event){ .type = 5 }), -EINVAL);
	assert_int_equal(spn_te_emit(&cat_app, &(struct spn_te_event){
					.type = SPN_TE_COUNTER, .track = &plain }), -EINVAL);
	assert_int_equal(spn_te_emit(&cat_app, &(struct spn_te_event){ .type = SPN_TE_COUNTER }),
			 -EINVAL);
	assert_int_equal(spn_te_emit(&cat_app, &(struct spn_te_event){
					.type = SPN_TE_INSTANT, .name = "x", .track = &ctr }), -EINVAL);
	assert_int_equal(spn_te_emit(&cat_app, &(struct spn_te_event){
					.type = SPN_TE_INSTANT, .name = "x", .args = many,
					.nargs = SPN_TE_MAX_ARGS + 1 }), -EINVAL);
	assert_int_equal(spn_te_emit(&cat_app, &(struct spn_te_event){
					.type = SPN_TE_INSTANT, .dyn_name = true }), -EINVAL);
	assert_int_equal(spn_te_emit(&cat_gpu, &(struct spn_te_event){
					.type = SPN_TE_INSTANT, .name = "off" }), 0);
	/* the macros ignore a counter on a plain track */
	SPN_TRACE_COUNTER_ON(cat_app, &plain, 3);
	assert_int_equal(spn_te_emit(&cat_app, &(struct spn_te_event){
					.type = SPN_TE_COUNTER, .track = &ctr, .is_double = true,
					.value_d = 2.5 }), 1);
	env_pump(e);
	env_ok(e);
	assert_int_equal(e->im.nev, 1);
	assert_true(e->im.ev[0].vd == 2.5);
	env_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_descriptor),
		cmocka_unit_test(test_create_errors),
		cmocka_unit_test(test_match_rules),
		cmocka_unit_test(test_first_packets),
		cmocka_unit_test(test_interning),
		cmocka_unit_test(test_intern_eviction),
		cmocka_unit_test(test_slices_nesting),
		cmocka_unit_test(test_counters),
		cmocka_unit_test(test_annotations),
		cmocka_unit_test(test_flows),
		cmocka_unit_test(test_tracks),
		cmocka_unit_test(test_category_filter),
		cmocka_unit_test(test_instances),
		cmocka_unit_test(test_stop_restart),
		cmocka_unit_test(test_emit_validation),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
