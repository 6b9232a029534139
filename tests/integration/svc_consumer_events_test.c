// SPDX-License-Identifier: Apache-2.0
// The ConsumerPort calls that report and observe the service, over a real
// spindled with real producers on its producer socket
// (spec/consumer-port.md §3, §8-§12): QueryServiceState (contents,
// visibility, sessions_only, chunking), QueryCapabilities, ObserveEvents
// (instance changes, all started, replacement and closing, clone trigger
// hits), ChangeTraceConfig (producer filters), CloneSession and
// SaveTraceForBugreport. Every test runs with --lanes 1 and 2.
#include <errno.h>
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

#include "svc_consumer_util.h"

#define VERSION "spindled 0.1.0"

/* --- QueryServiceState --- */

static const Perfetto__Protos__TracingServiceState__DataSource *
find_ds(const Perfetto__Protos__TracingServiceState *st, const char *name)
{
	for (size_t i = 0; i < st->n_data_sources; i++)
		if (st->data_sources[i]->ds_descriptor &&
		    !strcmp(st->data_sources[i]->ds_descriptor->name, name))
			return st->data_sources[i];
	return NULL;
}

static void test_qss_contents(void **state)
{
	struct env *e = *state;
	Perfetto__Protos__TracingServiceState *st;
	const Perfetto__Protos__TracingServiceState__TracingSession *ts;
	const Perfetto__Protos__TracingServiceState__DataSource *ds;
	struct enable_res r;
	struct timespec now;
	struct prod p;
	struct cons c;
	struct tc t;
	int32_t pid = -1;

	prod_open(e, &p, "prod_q");
	prod_register(&p, "ds_q", false, 0);
	prod_sync(&p);
	cons_open(e, &c);

	/* No session yet. */
	st = qss(&c, false, NULL);
	assert_int_equal(st->num_sessions, 0);
	assert_int_equal(st->num_sessions_started, 0);
	assert_int_equal(st->n_tracing_sessions, 0);
	assert_true(st->supports_tracing_sessions);
	assert_string_equal(st->tracing_service_version, VERSION);
	assert_int_equal(st->n_producers, 1);
	assert_string_equal(st->producers[0]->name, "prod_q");
	assert_int_equal(st->producers[0]->id, 1); /* first of this service */
	assert_int_equal(st->producers[0]->uid, (int32_t)getuid());
	assert_int_equal(st->producers[0]->pid, (int32_t)getpid());
	assert_string_equal(st->producers[0]->sdk_version, PROD_SDK_VERSION);
	pid = st->producers[0]->id;
	ds = find_ds(st, "ds_q");
	assert_non_null(ds);
	assert_int_equal(ds->producer_id, pid);
	qss_free(st);

	tc_init(&t, 64);
	tc_add_buffer(&t, 128, NULL);
	tc_ds(&t, "ds_q");
	t.cfg.unique_session_name = "qs";
	t.cfg.has_bugreport_score = true;
	t.cfg.bugreport_score = 3;
	t.cfg.bugreport_filename = "q.pftrace";
	enable(&c, &t, -1, &r);
	prod_wait_cmd(&p, CMD_START, 1);
	st = qss(&c, false, NULL);
	clock_gettime(CLOCK_REALTIME, &now);
	assert_int_equal(st->num_sessions, 1);
	assert_int_equal(st->num_sessions_started, 1);
	assert_int_equal(st->n_tracing_sessions, 1);
	ts = st->tracing_sessions[0];
	assert_true(ts->id >= 1);
	assert_int_equal(ts->consumer_uid, (int32_t)getuid());
	assert_string_equal(ts->state, "STARTED");
	assert_string_equal(ts->unique_session_name, "qs");
	assert_int_equal(ts->n_buffer_size_kb, 2);
	assert_int_equal(ts->buffer_size_kb[0], 64);
	assert_int_equal(ts->buffer_size_kb[1], 128);
	assert_int_equal(ts->num_data_sources, 1);
	assert_true(ts->has_is_started && ts->is_started);
	assert_int_equal(ts->bugreport_score, 3);
	assert_string_equal(ts->bugreport_filename, "q.pftrace");
	/* The initial snapshot's REALTIME reading: within the last minute. */
	assert_true(ts->has_start_realtime_ns);
	assert_true(ts->start_realtime_ns <=
		    (int64_t)now.tv_sec * 1000000000 + now.tv_nsec);
	assert_true(ts->start_realtime_ns >
		    ((int64_t)now.tv_sec - 60) * 1000000000);
	qss_free(st);

	/* sessions_only: no producers, no data sources. */
	st = qss(&c, true, NULL);
	assert_int_equal(st->n_producers, 0);
	assert_int_equal(st->n_data_sources, 0);
	assert_int_equal(st->n_tracing_sessions, 1);
	qss_free(st);

	assert_int_equal(disable(&c), 0);
	wait_flag(&c, &r.done, CALL_MS);
	st = qss(&c, true, NULL);
	assert_int_equal(st->num_sessions, 1);
	assert_int_equal(st->num_sessions_started, 0);
	assert_string_equal(st->tracing_sessions[0]->state, "DISABLED");
	assert_false(st->tracing_sessions[0]->is_started);
	qss_free(st);
	assert_int_equal(free_buffers(&c), 0);
	cons_close(&c);
	prod_close(&p);
}

/* Many sessions and large descriptors: frame-sized chunks, the first one
 * with everything but data sources, then data sources only. */
static void test_qss_chunking(void **state)
{
	struct env *e = *state;
	Perfetto__Protos__TracingServiceState *st;
	struct qss_acc acc;
	struct enable_res r[5];
	struct cons c[5];
	struct tc t[5];
	struct prod p;
	char name[32];
	enum { NDS = 48, PAD = 8000 };

	prod_open(e, &p, "prod_big");
	for (int i = 0; i < NDS; i++) {
		snprintf(name, sizeof(name), "big_%02d", i);
		prod_register(&p, name, false, PAD);
	}
	prod_sync(&p);
	for (int i = 0; i < 5; i++) {
		cons_open(e, &c[i]);
		tc_init(&t[i], 64);
		enable(&c[i], &t[i], -1, &r[i]);
	}
	st = qss(&c[0], false, &acc);
	/* 48 x 8 KB: at least 3 chunks, each under the limit. */
	assert_true(acc.chunks >= 3);
	assert_true(acc.largest < QSS_CHUNK_LIMIT);
	assert_false(acc.later_not_ds);
	assert_int_equal(st->num_sessions, 5);
	assert_int_equal(st->n_tracing_sessions, 5);
	for (size_t i = 1; i < st->n_tracing_sessions; i++)
		assert_true(st->tracing_sessions[i]->id >
			    st->tracing_sessions[i - 1]->id);
	assert_int_equal(st->n_producers, 1);
	assert_int_equal(st->n_data_sources, NDS);
	for (int i = 0; i < NDS; i++) {
		const Perfetto__Protos__TracingServiceState__DataSource *ds;

		snprintf(name, sizeof(name), "big_%02d", i);
		ds = find_ds(st, name);
		assert_non_null(ds);
		assert_int_equal(ds->ds_descriptor->track_event_descriptor.len,
				 PAD);
		assert_int_equal(ds->ds_descriptor->track_event_descriptor.data[PAD - 1],
				 'x');
	}
	qss_free(st);
	/* sessions_only: one small chunk. */
	st = qss(&c[0], true, &acc);
	assert_int_equal(acc.chunks, 1);
	assert_int_equal(st->n_tracing_sessions, 5);
	assert_int_equal(st->n_data_sources, 0);
	qss_free(st);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(free_buffers(&c[i]), 0);
		cons_close(&c[i]);
	}
	prod_close(&p);
}

/* --- QueryCapabilities, SaveTraceForBugreport --- */

static void test_capabilities(void **state)
{
	struct env *e = *state;
	Perfetto__Protos__QueryCapabilitiesResponse *r = NULL;
	const Perfetto__Protos__TracingServiceCapabilities *caps;
	struct cons c;
	unsigned mask = 0;

	cons_open(e, &c);
	assert_int_equal(call0(&c, "QueryCapabilities",
			       &perfetto__protos__query_capabilities_request__descriptor,
			       (ProtobufCMessage **)&r),
			 0);
	caps = r->capabilities;
	assert_non_null(caps);
	assert_true(caps->has_query_capabilities);
	assert_true(caps->has_trace_config_output_path);
	assert_int_equal(caps->n_observable_events, 3);
	for (size_t i = 0; i < caps->n_observable_events; i++)
		mask |= (unsigned)caps->observable_events[i];
	assert_int_equal(mask, 1 | 2 | 4);
	assert_true(caps->has_has_clone_session);
	assert_true(caps->has_clone_session);
	perfetto__protos__query_capabilities_response__free_unpacked(r, NULL);
	cons_close(&c);
}

static void test_save_for_bugreport(void **state)
{
	struct env *e = *state;
	Perfetto__Protos__SaveTraceForBugreportResponse *r = NULL;
	struct cons c;

	cons_open(e, &c);
	assert_int_equal(call0(&c, "SaveTraceForBugreport",
			       &perfetto__protos__save_trace_for_bugreport_request__descriptor,
			       (ProtobufCMessage **)&r),
			 0);
	assert_true(r->has_success);
	assert_false(r->success);
	assert_string_equal(r->msg, "SaveTraceForBugreport is deprecated. Use "
				    "CloneSession(kBugreportSessionId) instead.");
	perfetto__protos__save_trace_for_bugreport_response__free_unpacked(r,
									    NULL);
	cons_close(&c);
}

/* --- ObserveEvents --- */

/* One instance change as received. */
struct obs_change {
	char producer[32];	/* producer_name */
	char ds[32];		/* data_source_name */
	int state;		/* 1 STOPPED, 2 STARTED */
};

/* What one ObserveEvents stream received. */
struct obs {
	int replies;		/* replies with events (has_more) */
	bool ended;		/* the final reply came */
	int end_status;		/* its status */
	size_t end_changes;	/* instance changes in the final reply */
	struct obs_change ch[32]; /* instance changes, in order */
	int nch;		/* entries in ch */
	int all_started;	/* all_data_sources_started seen */
	int batch_of_all;	/* reply index that carried all_started */
	int batch_of[32];	/* reply index of each change */
	bool hit;		/* clone_trigger_hit seen */
	int64_t hit_session;	/* its tracing_session_id */
	char hit_trigger[32];	/* its trigger_name */
	char hit_producer[32];	/* its producer_name */
	uint32_t hit_uid;	/* its producer_uid */
	uint64_t hit_boot_ns;	/* its boot_time_ns */
	uint64_t hit_delay;	/* its trigger_delay_ms */
	int64_t hit_at_ms;	/* when it arrived (monotonic) */
};

static void on_obs(void *arg, struct ipc_client_reply *r)
{
	struct obs *o = arg;
	const Perfetto__Protos__ObservableEvents *ev;

	if (r->status != 0 || !r->has_more) {
		o->ended = true;
		o->end_status = r->status;
		if (r->status == 0) {
			ev = ((const Perfetto__Protos__ObserveEventsResponse *)
				      r->msg)->events;
			o->end_changes = ev ? ev->n_instance_state_changes : 0;
		}
		return;
	}
	ev = ((const Perfetto__Protos__ObserveEventsResponse *)r->msg)->events;
	assert_non_null(ev);
	for (size_t i = 0; i < ev->n_instance_state_changes && o->nch < 32;
	     i++) {
		const Perfetto__Protos__ObservableEvents__DataSourceInstanceStateChange
			*c = ev->instance_state_changes[i];

		snprintf(o->ch[o->nch].producer, 32, "%s", c->producer_name);
		snprintf(o->ch[o->nch].ds, 32, "%s", c->data_source_name);
		o->ch[o->nch].state = c->state;
		o->batch_of[o->nch++] = o->replies;
	}
	if (ev->all_data_sources_started) {
		o->all_started++;
		o->batch_of_all = o->replies;
	}
	if (ev->clone_trigger_hit) {
		const Perfetto__Protos__ObservableEvents__CloneTriggerHit *h =
			ev->clone_trigger_hit;

		o->hit = true;
		o->hit_session = h->tracing_session_id;
		snprintf(o->hit_trigger, 32, "%s", h->trigger_name);
		snprintf(o->hit_producer, 32, "%s", h->producer_name);
		o->hit_uid = h->producer_uid;
		o->hit_boot_ns = h->boot_time_ns;
		o->hit_delay = h->trigger_delay_ms;
		o->hit_at_ms = now_ms();
	}
	o->replies++;
}

/* Subscribes with the given types (n == 0: stop observing); returns once
 * the service handled it. */
static void observe(struct cons *c, const int *types, size_t n, struct obs *o)
{
	Perfetto__Protos__ObserveEventsRequest req =
		PERFETTO__PROTOS__OBSERVE_EVENTS_REQUEST__INIT;
	Perfetto__Protos__ObservableEvents__Type v[4];

	memset(o, 0, sizeof(*o));
	for (size_t i = 0; i < n; i++)
		v[i] = types[i];
	req.n_events_to_observe = n;
	req.events_to_observe = v;
	assert_int_equal(ipc_client_invoke(c->port, "ObserveEvents", &req.base,
					   -1, 0, on_obs, o, NULL),
			 0);
	cons_sync(c); /* the service has the subscription now */
}

static void wait_changes(struct cons *c, struct obs *o, int n)
{
	int64_t end = now_ms() + CALL_MS;

	while (o->nch < n && now_ms() < end)
		pump(c, 20);
	assert_int_equal(o->nch, n);
}

static void assert_change(const struct obs *o, int i, const char *producer,
			  const char *ds, int state)
{
	assert_string_equal(o->ch[i].producer, producer);
	assert_string_equal(o->ch[i].ds, ds);
	assert_int_equal(o->ch[i].state, state);
}

#define ST_STOPPED 1
#define ST_STARTED 2

static void test_observe_events(void **state)
{
	struct env *e = *state;
	static const int both[] = { 1, 2 }, inst[] = { 1 };
	struct obs o1, o2, o3;
	struct enable_res r;
	struct prod p;
	struct cons c;
	struct tc t;

	prod_open(e, &p, "prod_o");
	prod_register(&p, "ds_o", true /* will_notify_on_start */, 0);
	prod_sync(&p);
	cons_open(e, &c);
	tc_init(&t, 64);
	tc_ds(&t, "ds_o");
	enable(&c, &t, -1, &r);
	prod_wait_cmd(&p, CMD_START, 1);
	/* Subscribing while the instance is STARTING reports nothing. */
	observe(&c, both, 2, &o1);
	pump(&c, 100);
	assert_int_equal(o1.replies, 0);
	assert_false(o1.ended);

	/* STARTED and all-started, produced by one task: one reply. */
	prod_notify_started(&p, p.started[0]);
	wait_changes(&c, &o1, 1);
	pump(&c, 50); /* anything sent separately would land now */
	assert_change(&o1, 0, "prod_o", "ds_o", ST_STARTED);
	assert_int_equal(o1.all_started, 1);
	assert_int_equal(o1.replies, 1);
	assert_int_equal(o1.batch_of_all, o1.batch_of[0]);

	/* A new subscription closes the old stream with an empty final
	 * reply and reports the current state at once. */
	observe(&c, inst, 1, &o2);
	wait_changes(&c, &o2, 1);
	assert_true(o1.ended);
	assert_int_equal(o1.end_status, 0);
	assert_int_equal(o1.end_changes, 0);
	assert_change(&o2, 0, "prod_o", "ds_o", ST_STARTED);
	assert_int_equal(o2.all_started, 0); /* not asked, and said once */

	/* Stop: the instance is reported STOPPED. */
	assert_int_equal(disable(&c), 0);
	wait_changes(&c, &o2, 2);
	assert_change(&o2, 1, "prod_o", "ds_o", ST_STOPPED);
	wait_flag(&c, &r.done, CALL_MS);
	assert_true(r.done);

	/* An empty mask ends both the old and the new stream. */
	observe(&c, NULL, 0, &o3);
	wait_flag(&c, &o3.ended, CALL_MS);
	assert_true(o3.ended);
	assert_int_equal(o3.end_status, 0);
	assert_true(o2.ended);
	assert_int_equal(o2.end_status, 0);
	assert_int_equal(free_buffers(&c), 0);
	cons_close(&c);
	prod_close(&p);
}

/* all_data_sources_started is reported once, even to a late subscriber. */
static void test_observe_all_started_once(void **state)
{
	struct env *e = *state;
	static const int all[] = { 2 };
	struct enable_res r;
	struct obs o;
	struct prod p;
	struct cons c;
	struct tc t;

	prod_open(e, &p, "prod_a");
	prod_register(&p, "ds_a", false, 0);
	prod_sync(&p);
	cons_open(e, &c);
	tc_init(&t, 64);
	tc_ds(&t, "ds_a");
	enable(&c, &t, -1, &r);
	prod_wait_cmd(&p, CMD_START, 1);
	assert_one_session(&c, "STARTED");
	/* The instance started at once (no notify): already recorded. */
	observe(&c, all, 1, &o);
	pump(&c, 150);
	assert_int_equal(o.all_started, 0);
	assert_int_equal(o.replies, 0);
	assert_int_equal(free_buffers(&c), 0);
	cons_close(&c);
	prod_close(&p);
}

static void activate_trigger(struct prod *p, const char *name)
{
	Perfetto__Protos__ActivateTriggersRequest req =
		PERFETTO__PROTOS__ACTIVATE_TRIGGERS_REQUEST__INIT;
	char *names[] = { (char *)name };

	req.n_trigger_names = 1;
	req.trigger_names = names;
	assert_int_equal(ipc_sync_call(p->sync, p->port, "ActivateTriggers",
				       &req.base, -1, NULL, NULL, CALL_MS),
			 0);
}

static void test_observe_clone_trigger(void **state)
{
	struct env *e = *state;
	static const int hit[] = { 4 };
	Perfetto__Protos__TracingServiceState *st;
	struct enable_res r;
	struct timespec bt;
	struct obs o;
	struct prod p;
	struct cons c;
	struct tc t;
	int64_t t0;
	uint64_t id;

	prod_open(e, &p, "prod_t");
	cons_open(e, &c);
	tc_init(&t, 64);
	tc_trigger(&t, 4 /* CLONE_SNAPSHOT */, 10000, "snap");
	t.tr[0].has_stop_delay_ms = true;
	t.tr[0].stop_delay_ms = 150;
	enable(&c, &t, -1, &r);
	st = qss(&c, true, NULL);
	assert_int_equal(st->n_tracing_sessions, 1);
	assert_string_equal(st->tracing_sessions[0]->state, "STARTED");
	id = st->tracing_sessions[0]->id;
	qss_free(st);
	observe(&c, hit, 1, &o);
	pump(&c, 50);
	t0 = now_ms();
	activate_trigger(&p, "snap");
	activate_trigger(&p, "not_mine");
	wait_flag(&c, &o.hit, CALL_MS);
	assert_true(o.hit);
	assert_true(o.hit_at_ms - t0 >= 120); /* after stop_delay_ms */
	assert_int_equal(o.hit_session, (int64_t)id);
	assert_string_equal(o.hit_trigger, "snap");
	assert_string_equal(o.hit_producer, "prod_t");
	assert_int_equal(o.hit_uid, (uint32_t)getuid());
	assert_int_equal(o.hit_delay, 150);
	clock_gettime(CLOCK_BOOTTIME, &bt);
	assert_true(o.hit_boot_ns > 0);
	assert_true(o.hit_boot_ns <= (uint64_t)bt.tv_sec * 1000000000u +
					     (uint64_t)bt.tv_nsec);
	assert_int_equal(o.replies, 1);
	/* The session itself goes on (the consumer is to clone it). */
	assert_one_session(&c, "STARTED");
	assert_false(r.done);
	assert_int_equal(free_buffers(&c), 0);
	cons_close(&c);
	prod_close(&p);
}

/* --- ChangeTraceConfig --- */

static int change_config(struct cons *c, struct tc *t)
{
	Perfetto__Protos__ChangeTraceConfigRequest req =
		PERFETTO__PROTOS__CHANGE_TRACE_CONFIG_REQUEST__INIT;

	req.trace_config = &t->cfg;
	return ipc_sync_call(c->sync, c->port, "ChangeTraceConfig", &req.base,
			     -1, NULL, NULL, CALL_MS);
}

static uint32_t session_instances(struct cons *c)
{
	Perfetto__Protos__TracingServiceState *st = qss(c, true, NULL);
	uint32_t n;

	assert_int_equal(st->n_tracing_sessions, 1);
	n = st->tracing_sessions[0]->num_data_sources;
	qss_free(st);
	return n;
}

static void test_change_trace_config(void **state)
{
	struct env *e = *state;
	char *nobody[] = { "nobody" }, *prod_a[] = { "prod_a" };
	char *rx[] = { "prod_b_[0-9]+" };
	Perfetto__Protos__TraceConfig__DataSource *d;
	struct enable_res r;
	struct prod pa, pb;
	struct cons c;
	struct tc t;

	prod_open(e, &pa, "prod_a");
	prod_register(&pa, "ds_c", false, 0);
	prod_sync(&pa);
	prod_open(e, &pb, "prod_b_7");
	prod_register(&pb, "ds_c", false, 0);
	prod_sync(&pb);
	cons_open(e, &c);
	/* No session: accepted, nothing happens. */
	tc_init(&t, 64);
	assert_int_equal(change_config(&c, &t), 0);

	d = tc_ds(&t, "ds_c");
	d->n_producer_name_filter = 1;
	d->producer_name_filter = nobody;
	enable(&c, &t, -1, &r);
	assert_one_session(&c, "STARTED");
	assert_int_equal(session_instances(&c), 0);

	/* The exact-name filter now names prod_a: set up and started. */
	d->producer_name_filter = prod_a;
	t.cfg.has_duration_ms = true; /* other changes are ignored */
	t.cfg.duration_ms = 1;
	assert_int_equal(change_config(&c, &t), 0);
	prod_wait_cmd(&pa, CMD_SETUP, 1);
	prod_wait_cmd(&pa, CMD_START, 1);
	assert_int_equal(session_instances(&c), 1);
	prod_pump(&pb, 50);
	assert_int_equal(pb.cmds[CMD_SETUP & 7], 0);

	/* A regex adds prod_b_7; prod_a keeps its one instance. */
	d->n_producer_name_regex_filter = 1;
	d->producer_name_regex_filter = rx;
	assert_int_equal(change_config(&c, &t), 0);
	prod_wait_cmd(&pb, CMD_START, 1);
	assert_int_equal(session_instances(&c), 2);
	prod_pump(&pa, 50);
	assert_int_equal(pa.cmds[CMD_SETUP & 7], 1);
	/* The duration change was ignored: still running. */
	pump(&c, 100);
	assert_one_session(&c, "STARTED");
	assert_false(r.done);

	/* Once disabled, changes are ignored. */
	assert_int_equal(disable(&c), 0);
	wait_flag(&c, &r.done, CALL_MS);
	d->n_producer_name_filter = 0;
	d->n_producer_name_regex_filter = 0;
	assert_int_equal(change_config(&c, &t), 0);
	assert_int_equal(session_instances(&c), 2);
	assert_int_equal(free_buffers(&c), 0);
	cons_close(&c);
	prod_close(&pa);
	prod_close(&pb);
}

/* --- CloneSession --- */

/* CloneSession; error NULL = expect success. */
static void clone_expect(struct cons *c,
			 const Perfetto__Protos__CloneSessionRequest *req,
			 const char *error)
{
	Perfetto__Protos__CloneSessionResponse *r = NULL;

	assert_int_equal(ipc_sync_call(c->sync, c->port, "CloneSession",
				       &req->base, -1, (ProtobufCMessage **)&r,
				       NULL, CALL_MS),
			 0);
	assert_true(r->has_success);
	if (error) {
		assert_false(r->success);
		assert_string_equal(r->error, error);
	} else {
		assert_true(r->success);
		assert_false(r->was_write_into_file);
	}
	perfetto__protos__clone_session_response__free_unpacked(r, NULL);
}

static void test_clone_session(void **state)
{
	struct env *e = *state;
	Perfetto__Protos__CloneSessionRequest req =
		PERFETTO__PROTOS__CLONE_SESSION_REQUEST__INIT;
	Perfetto__Protos__TracingServiceState *st;
	struct enable_res r;
	struct cons c1, c2;
	struct tc t;

	cons_open(e, &c1);
	cons_open(e, &c2);
	req.selector_case =
		PERFETTO__PROTOS__CLONE_SESSION_REQUEST__SELECTOR_SESSION_ID;
	req.session_id = 42;
	clone_expect(&c2, &req, "Tracing session not found");
	req.session_id = UINT64_MAX; /* bugreport: none eligible */
	clone_expect(&c2, &req, "Tracing session not found");

	tc_init(&t, 64);
	t.cfg.unique_session_name = "src";
	t.cfg.has_bugreport_score = true;
	t.cfg.bugreport_score = 10;
	enable(&c1, &t, -1, &r);
	st = qss(&c1, true, NULL);
	req.session_id = st->tracing_sessions[0]->id;
	qss_free(st);
	clone_expect(&c2, &req, NULL);
	/* c2 now holds the clone. */
	clone_expect(&c2, &req,
		     "The consumer is already attached to another tracing "
		     "session");
	assert_int_equal(free_buffers(&c2), 0);
	req.session_id = UINT64_MAX;
	clone_expect(&c2, &req, NULL);
	assert_int_equal(free_buffers(&c2), 0);
	req.selector_case =
		PERFETTO__PROTOS__CLONE_SESSION_REQUEST__SELECTOR_UNIQUE_SESSION_NAME;
	req.unique_session_name = "nope";
	clone_expect(&c2, &req, "Tracing session not found");
	req.unique_session_name = "src";
	clone_expect(&c2, &req, NULL);
	assert_int_equal(free_buffers(&c2), 0);
	/* The source is untouched. */
	assert_one_session(&c1, "STARTED");
	assert_false(r.done);
	assert_int_equal(free_buffers(&c1), 0);
	cons_close(&c1);
	cons_close(&c2);
}

#define T(f) { #f, f, env_setup, env_teardown, NULL }

static const struct CMUnitTest tests[] = {
	T(test_qss_contents),
	T(test_qss_chunking),
	T(test_capabilities),
	T(test_save_for_bugreport),
	T(test_observe_events),
	T(test_observe_all_started_once),
	T(test_observe_clone_trigger),
	T(test_change_trace_config),
	T(test_clone_session),
};

int main(void)
{
	int failed;

	env_lanes = 1;
	failed = cmocka_run_group_tests_name("consumer_events_lanes_1", tests,
					     NULL, NULL);
	env_lanes = 2;
	failed += cmocka_run_group_tests_name("consumer_events_lanes_2", tests,
					      NULL, NULL);
	return failed ? 1 : 0;
}
