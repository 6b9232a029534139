// SPDX-License-Identifier: Apache-2.0
// libspindle's control calls against an in-process spindled: spn_producer_activate_triggers (STOP_TRACING and START_TRACING sessions, calls queued until the producer connects, expiry), spn_data_source_update (QueryServiceState shows the new descriptor, new instances follow its flags) and spn_data_source_unregister (instances stop in the service and in the SDK, the trace keeps what was written, no callback afterwards; also from inside a callback).
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "spindle/producer.h"
#include "svc_consumer_util.h"

#define DS_NAME "sdk.ctl"
#define DS2_NAME "sdk.ctl.other"
#define PROD_NAME "sdk_ctl_test"
#define MODE_START 1 /* TriggerConfig.TriggerMode */
#define MODE_STOP 2

/* TrackEventDescriptor{available_categories{name: "cat_a" / "cat_b"}}. */
static const uint8_t TED_A[] = { 0x0a, 0x07, 0x0a, 0x05, 'c', 'a', 't', '_', 'a' };
static const uint8_t TED_B[] = { 0x0a, 0x07, 0x0a, 0x05, 'c', 'a', 't', '_', 'b' };

static void nap_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* ---- the data source ---------------------------------------------------------- */

struct dsrec {
	_Atomic unsigned setups, starts, stops, flushes, clears;
	bool defer_stop;		/* on_stop defers */
	bool unreg_on_start;		/* on_start unregisters its data source */
	_Atomic int unreg_rc;		/* what that call returned */
	struct spn_ds_stop saved;	/* the deferred stop */
	_Atomic bool have_saved;	/* saved is set */
};

static void on_setup(struct spn_ds *ds, const struct spn_ds_config *cfg, void *user)
{
	struct dsrec *r = user;

	(void)ds;
	(void)cfg;
	r->setups++;
}

static void on_start(struct spn_ds *ds, const struct spn_ds_config *cfg, void *user)
{
	struct dsrec *r = user;

	(void)cfg;
	r->starts++;
	if (r->unreg_on_start)
		atomic_store(&r->unreg_rc, spn_data_source_unregister(ds));
}

static bool on_stop(struct spn_ds *ds, const struct spn_ds_stop *stop, void *user)
{
	struct dsrec *r = user;

	(void)ds;
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
	(void)id;
	r->flushes++;
}

static void on_clear(struct spn_ds *ds, uint32_t inst, void *user)
{
	struct dsrec *r = user;

	(void)ds;
	(void)inst;
	r->clears++;
}

static struct spn_ds *register_ds(struct spn_producer *p, const char *name,
				  const struct spn_ds_desc *desc, struct dsrec *r)
{
	struct spn_ds_desc d = { .name = name };
	struct spn_ds_callbacks cb = {
		.on_setup = on_setup, .on_start = on_start, .on_stop = on_stop,
		.on_flush = on_flush, .on_clear_incremental_state = on_clear, .user = r,
	};
	struct spn_ds *ds = NULL;

	if (desc)
		d = *desc;
	assert_int_equal(spn_data_source_register(p, &d, &cb, &ds), 0);
	return ds;
}

static struct spn_producer *make_producer(const char *sock)
{
	struct spn_producer_opts o = {
		.socket = sock,
		.name = PROD_NAME,
		.smb_size_hint = 1u << 20,
		.smb_stall_max_us = 2000000, /* no drops: the tests count */
		.reconnect_step_ms = 20,
		.reconnect_step_limit_ms = 100,
		.reconnect_max_ms = 100,
	};
	struct spn_producer *p = NULL;

	assert_int_equal(spn_producer_create(&o, &p), 0);
	return p;
}

static struct spn_producer_stats stats(struct spn_producer *p)
{
	struct spn_producer_stats st;

	spn_producer_stats(p, &st);
	return st;
}

/* Waits up to ms for cond(arg), pumping c (if any) meanwhile. */
static bool wait_for(struct cons *c, bool (*cond)(void *), void *arg, int ms)
{
	int64_t end = now_ms() + ms;

	while (!cond(arg)) {
		if (now_ms() > end)
			return false;
		if (c)
			pump(c, 2);
		else
			nap_ms(2);
	}
	return true;
}

static bool connected(void *arg)
{
	return stats(arg).connected;
}

static bool enabled(void *arg)
{
	return spn_ds_enabled(arg) != 0;
}

static bool saved(void *arg)
{
	return atomic_load(&((struct dsrec *)arg)->have_saved);
}

static bool stopped(void *arg)
{
	return atomic_load(&((struct dsrec *)arg)->stops) >= 1;
}

/* Our packets: timestamp 1000000 + i and a TrackEvent with a name. */
static void write_events(struct spn_ds *ds, uint32_t from, uint32_t n)
{
	for (uint32_t i = from; i < from + n; i++) {
		struct spn_tw *tw = spn_ds_writer(ds);

		assert_non_null(tw);
		spn_tw_begin_packet(tw);
		spn_tw_varint(tw, 8, 1000000u + i);
		spn_tw_begin_nested(tw, 11);
		spn_tw_string(tw, 23, "sdk_ctl_event");
		spn_tw_end_nested(tw);
		spn_tw_end_packet(tw);
	}
}

/* ---- reading the trace ----------------------------------------------------------- */

struct trace {
	uint8_t *pkt;			/* packet being reassembled */
	size_t len;			/* its bytes */
	uint64_t ts[4096];		/* timestamps of our packets, in order */
	size_t n;			/* entries in ts */
	char triggers[8][64];		/* trigger packets: trigger_name */
	char trig_prod[8][64];		/* and producer_name */
	size_t ntrig;			/* entries */
};

static void trace_packet(struct trace *tr)
{
	Perfetto__Protos__TracePacket *p =
		perfetto__protos__trace_packet__unpack(NULL, tr->len, tr->pkt);

	assert_non_null(p);
	if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_TRIGGER) {
		assert_true(tr->ntrig < 8);
		snprintf(tr->triggers[tr->ntrig], 64, "%s",
			 p->trigger->trigger_name ? p->trigger->trigger_name : "");
		snprintf(tr->trig_prod[tr->ntrig], 64, "%s",
			 p->trigger->producer_name ? p->trigger->producer_name : "");
		tr->ntrig++;
	} else if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACK_EVENT &&
		   p->has_timestamp) {
		assert_true(tr->n < 4096);
		tr->ts[tr->n++] = p->timestamp;
	}
	perfetto__protos__trace_packet__free_unpacked(p, NULL);
	tr->len = 0;
}

static void on_read(void *arg, struct ipc_client_reply *rep)
{
	struct trace *tr = arg;
	const Perfetto__Protos__ReadBuffersResponse *rb = (const void *)rep->msg;

	if (rep->status != 0)
		return;
	for (size_t i = 0; i < rb->n_slices; i++) {
		const Perfetto__Protos__ReadBuffersResponse__Slice *s = rb->slices[i];

		tr->pkt = realloc(tr->pkt, tr->len + s->data.len + 1);
		assert_non_null(tr->pkt);
		memcpy(tr->pkt + tr->len, s->data.data, s->data.len);
		tr->len += s->data.len;
		if (s->last_slice_for_packet)
			trace_packet(tr);
	}
}

static struct trace *read_trace(struct cons *c)
{
	Perfetto__Protos__ReadBuffersRequest req = PERFETTO__PROTOS__READ_BUFFERS_REQUEST__INIT;
	struct trace *tr = calloc(1, sizeof(*tr));

	assert_non_null(tr);
	assert_int_equal(ipc_sync_stream(c->sync, c->port, "ReadBuffers", &req.base, -1,
					 on_read, tr, CALL_MS),
			 0);
	free(tr->pkt);
	return tr;
}

/* Our events from..from+n-1, each once, in order. */
static void expect_events(const struct trace *tr, uint32_t from, uint32_t n)
{
	assert_int_equal(tr->n, n);
	for (uint32_t i = 0; i < n; i++)
		assert_int_equal(tr->ts[i], 1000000u + from + i);
}

/* A session of one 1 MiB buffer with data source DS_NAME. */
static void session_cfg(struct tc *t, uint32_t stop_timeout_ms)
{
	tc_init(t, 1024);
	tc_ds(t, DS_NAME);
	t->cfg.has_data_source_stop_timeout_ms = true;
	t->cfg.data_source_stop_timeout_ms = stop_timeout_ms;
}

/* ---- QueryServiceState ------------------------------------------------------------- */

/* Copies of what the service shows for data source `name`. */
struct ds_view {
	int count;			/* registrations of that name */
	bool notify_stop;		/* will_notify_on_stop of the first */
	uint8_t ted[64];		/* its track_event_descriptor */
	size_t ted_len;
};

static struct ds_view view_ds(struct cons *c, const char *name)
{
	Perfetto__Protos__TracingServiceState *st = qss(c, false, NULL);
	struct ds_view v = { 0 };

	for (size_t i = 0; i < st->n_data_sources; i++) {
		const Perfetto__Protos__DataSourceDescriptor *d =
			st->data_sources[i]->ds_descriptor;

		if (!d || !d->name || strcmp(d->name, name))
			continue;
		if (!v.count++) {
			v.notify_stop = d->will_notify_on_stop;
			v.ted_len = d->track_event_descriptor.len;
			assert_true(v.ted_len <= sizeof(v.ted));
			if (v.ted_len)
				memcpy(v.ted, d->track_event_descriptor.data, v.ted_len);
		}
	}
	qss_free(st);
	return v;
}

/* Polls QueryServiceState until DS_NAME shows ted (and notify_stop). */
static bool wait_ds_view(struct cons *c, const uint8_t *ted, size_t len, bool notify_stop)
{
	for (int i = 0; i < 500; i++) {
		struct ds_view v = view_ds(c, DS_NAME);

		if (v.count == 1 && v.ted_len == len && !memcmp(v.ted, ted, len) &&
		    v.notify_stop == notify_stop)
			return true;
		nap_ms(10);
	}
	return false;
}

static bool wait_ds_count(struct cons *c, const char *name, int count)
{
	for (int i = 0; i < 500; i++) {
		if (view_ds(c, name).count == count)
			return true;
		nap_ms(10);
	}
	return false;
}

/* ---- ObserveEvents ------------------------------------------------------------------ */

struct obs {
	int stopped;			/* DS_NAME instances reported STOPPED */
	int started;			/* and STARTED */
};

static void on_obs(void *arg, struct ipc_client_reply *r)
{
	struct obs *o = arg;
	const Perfetto__Protos__ObservableEvents *ev;

	if (r->status != 0)
		return;
	ev = ((const Perfetto__Protos__ObserveEventsResponse *)r->msg)->events;
	for (size_t i = 0; ev && i < ev->n_instance_state_changes; i++) {
		const Perfetto__Protos__ObservableEvents__DataSourceInstanceStateChange *ch =
			ev->instance_state_changes[i];

		if (!ch->data_source_name || strcmp(ch->data_source_name, DS_NAME))
			continue;
		if (ch->state == PERFETTO__PROTOS__OBSERVABLE_EVENTS__DATA_SOURCE_INSTANCE_STATE__DATA_SOURCE_INSTANCE_STATE_STOPPED)
			o->stopped++;
		else
			o->started++;
	}
}

static void observe(struct cons *c, struct obs *o)
{
	Perfetto__Protos__ObserveEventsRequest req = PERFETTO__PROTOS__OBSERVE_EVENTS_REQUEST__INIT;
	Perfetto__Protos__ObservableEvents__Type types[] = {
		PERFETTO__PROTOS__OBSERVABLE_EVENTS__TYPE__TYPE_DATA_SOURCES_INSTANCES,
	};

	req.n_events_to_observe = 1;
	req.events_to_observe = types;
	assert_int_equal(ipc_client_invoke(c->port, "ObserveEvents", &req.base, -1, 0, on_obs,
					   o, NULL),
			 0);
	cons_sync(c);
}

static bool obs_stopped(void *arg)
{
	return ((struct obs *)arg)->stopped >= 1;
}

/* ---- triggers ---------------------------------------------------------------------- */

/* A STOP_TRACING trigger from the SDK ends the session long before its
 * trigger timeout; a name no session knows does nothing. */
static void trigger_stop_tracing(void **state)
{
	struct env *e = *state;
	const char *other[] = { "sdk_no_such_trigger" }, *stop[] = { "sdk_stop" };
	struct dsrec r = { 0 };
	struct enable_res res;
	struct spn_producer *p = make_producer(e->psock);
	struct spn_ds *ds = register_ds(p, DS_NAME, NULL, &r);
	struct spn_producer_stats st;
	struct trace *tr;
	struct cons c;
	struct tc t;

	assert_true(wait_for(NULL, connected, p, 5000));
	cons_open(e, &c);
	session_cfg(&t, 3000);
	tc_trigger(&t, MODE_STOP, 30000, "sdk_stop");
	enable(&c, &t, -1, &res);
	assert_true(wait_for(&c, enabled, ds, 5000));
	write_events(ds, 0, 100);
	assert_int_equal(spn_producer_activate_triggers(p, other, 1, 0), 0);
	pump(&c, 200);
	assert_false(res.done);
	assert_int_equal(spn_producer_activate_triggers(p, stop, 1, 0), 0);
	wait_flag(&c, &res.done, 10000);
	assert_true(res.done);
	assert_int_equal(res.status, 0);
	assert_true(wait_for(&c, stopped, &r, 5000));
	tr = read_trace(&c);
	expect_events(tr, 0, 100);
	assert_int_equal(tr->ntrig, 1);
	assert_string_equal(tr->triggers[0], "sdk_stop");
	assert_string_equal(tr->trig_prod[0], PROD_NAME);
	free(tr);
	st = stats(p);
	assert_int_equal(st.triggers_sent, 2);
	assert_int_equal(st.triggers_dropped, 0);
	cons_close(&c);
	spn_producer_destroy(p);
}

static void trigger_bad_args(void **state)
{
	struct env *e = *state;
	struct spn_producer *p = make_producer(e->psock);
	const char *empty[] = { "" }, *null[] = { NULL }, *ok[] = { "x" };
	const char *many[SPN_TRIGGERS_MAX + 1];
	char longname[SPN_TRIGGER_NAME_MAX + 2];
	const char *lng[] = { longname };

	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	for (size_t i = 0; i <= SPN_TRIGGERS_MAX; i++)
		many[i] = "x";
	assert_int_equal(spn_producer_activate_triggers(NULL, ok, 1, 0), -EINVAL);
	assert_int_equal(spn_producer_activate_triggers(p, NULL, 1, 0), -EINVAL);
	assert_int_equal(spn_producer_activate_triggers(p, ok, 0, 0), -EINVAL);
	assert_int_equal(spn_producer_activate_triggers(p, empty, 1, 0), -EINVAL);
	assert_int_equal(spn_producer_activate_triggers(p, null, 1, 0), -EINVAL);
	assert_int_equal(spn_producer_activate_triggers(p, lng, 1, 0), -EINVAL);
	assert_int_equal(spn_producer_activate_triggers(p, many, SPN_TRIGGERS_MAX + 1, 0),
			 -EINVAL);
	longname[SPN_TRIGGER_NAME_MAX] = '\0'; /* exactly the limit */
	assert_int_equal(spn_producer_activate_triggers(p, lng, 1, 0), 0);
	assert_int_equal(spn_producer_activate_triggers(p, many, SPN_TRIGGERS_MAX, 0), 0);
	spn_producer_destroy(p);
}

static bool sent_one(void *arg)
{
	return stats(arg).triggers_sent >= 1;
}

/*
 * Triggers activated before the producer reaches the service wait for the
 * connection: the producer's socket is a dangling symlink until the
 * START_TRACING session exists. A call whose ttl ran out by then is
 * dropped, not sent.
 */
static void trigger_queued_until_connected(void **state)
{
	struct env *e = *state;
	const char *start[] = { "sdk_start" };
	struct dsrec r = { 0 };
	struct enable_res res;
	struct spn_producer_stats st;
	struct spn_producer *p;
	struct spn_ds *ds;
	struct trace *tr;
	char link[160];
	struct cons c;
	struct tc t;

	snprintf(link, sizeof(link), "%s/link.sock", e->dir);
	cons_open(e, &c);
	session_cfg(&t, 3000);
	tc_trigger(&t, MODE_START, 30000, "sdk_start");
	enable(&c, &t, -1, &res);
	p = make_producer(link);
	ds = register_ds(p, DS_NAME, NULL, &r);
	assert_int_equal(spn_producer_activate_triggers(p, start, 1, 50), 0);
	nap_ms(300); /* the ttl runs out while nobody listens */
	assert_int_equal(spn_producer_activate_triggers(p, start, 1, 0), 0);
	nap_ms(100);
	st = stats(p);
	assert_false(st.connected);
	assert_true(st.connect_failures >= 1);
	assert_int_equal(st.triggers_sent, 0);
	assert_null(spn_ds_writer(ds));

	assert_int_equal(symlink(e->psock, link), 0);
	assert_true(wait_for(&c, enabled, ds, 5000)); /* the trigger started it */
	assert_true(wait_for(&c, sent_one, p, 1000));
	st = stats(p);
	assert_int_equal(st.triggers_sent, 1);
	assert_int_equal(st.triggers_dropped, 1);
	write_events(ds, 0, 10);
	assert_int_equal(flush(&c, 3000), 0);
	assert_int_equal(disable(&c), 0);
	wait_flag(&c, &res.done, 5000);
	assert_true(res.done);
	tr = read_trace(&c);
	expect_events(tr, 0, 10);
	assert_int_equal(tr->ntrig, 1); /* the expired call never went out */
	assert_string_equal(tr->triggers[0], "sdk_start");
	free(tr);
	cons_close(&c);
	spn_producer_destroy(p);
	unlink(link);
}

/* Triggers still queued when the producer is destroyed are sent. */
static void trigger_sent_by_destroy(void **state)
{
	struct env *e = *state;
	const char *stop[] = { "sdk_stop" };
	struct enable_res res;
	struct spn_producer *p;
	struct cons c;
	struct tc t;

	cons_open(e, &c);
	tc_init(&t, 256);
	tc_trigger(&t, MODE_STOP, 30000, "sdk_stop");
	enable(&c, &t, -1, &res);
	p = make_producer(e->psock);
	assert_true(wait_for(NULL, connected, p, 5000));
	assert_int_equal(spn_producer_activate_triggers(p, stop, 1, 0), 0);
	spn_producer_destroy(p);
	wait_flag(&c, &res.done, 10000);
	assert_true(res.done);
	cons_close(&c);
}

/* ---- UpdateDataSource ------------------------------------------------------------------ */

/* The service shows the new descriptor, and an instance created after
 * the update follows its flags (will_notify_on_stop: the stop waits for
 * the deferred completion). */
static void update_descriptor(void **state)
{
	struct env *e = *state;
	struct dsrec r = { .defer_stop = true };
	struct spn_ds_desc d = {
		.name = DS_NAME,
		.track_event_descriptor = TED_A,
		.track_event_descriptor_len = sizeof(TED_A),
	};
	struct enable_res res;
	struct spn_producer *p = make_producer(e->psock);
	struct spn_ds *ds = register_ds(p, DS_NAME, &d, &r);
	struct cons c;
	struct tc t;
	int64_t t0;

	cons_open(e, &c);
	assert_true(wait_ds_view(&c, TED_A, sizeof(TED_A), false));

	d.name = "sdk.ctl.renamed";
	assert_int_equal(spn_data_source_update(ds, &d), -EINVAL);
	assert_int_equal(spn_data_source_update(NULL, &d), -EINVAL);
	d.name = DS_NAME;
	d.track_event_descriptor = TED_B;
	d.track_event_descriptor_len = sizeof(TED_B);
	d.will_notify_on_stop = true;
	assert_int_equal(spn_data_source_update(ds, &d), 0);
	assert_true(wait_ds_view(&c, TED_B, sizeof(TED_B), true));
	assert_int_equal(view_ds(&c, DS_NAME).count, 1); /* replaced, not added */

	session_cfg(&t, 4000);
	enable(&c, &t, -1, &res);
	assert_true(wait_for(&c, enabled, ds, 5000));
	t0 = now_ms();
	assert_int_equal(disable(&c), 0);
	assert_true(wait_for(&c, saved, &r, 3000));
	pump(&c, 300);
	assert_false(res.done); /* the service waits for NotifyDataSourceStopped */
	spn_ds_stop_done(r.saved);
	wait_flag(&c, &res.done, 3000);
	assert_true(res.done);
	assert_true(now_ms() - t0 < 3000);
	cons_close(&c);
	spn_producer_destroy(p);
}

/* An update made while not connected goes out with the registration. */
static void update_before_connect(void **state)
{
	struct env *e = *state;
	struct dsrec r = { 0 };
	struct spn_ds_desc d = { .name = DS_NAME };
	char link[160];
	struct spn_producer *p;
	struct spn_ds *ds;
	struct cons c;

	snprintf(link, sizeof(link), "%s/link2.sock", e->dir);
	p = make_producer(link);
	ds = register_ds(p, DS_NAME, &d, &r);
	d.track_event_descriptor = TED_B;
	d.track_event_descriptor_len = sizeof(TED_B);
	assert_int_equal(spn_data_source_update(ds, &d), 0);
	assert_int_equal(symlink(e->psock, link), 0);
	cons_open(e, &c);
	assert_true(wait_ds_view(&c, TED_B, sizeof(TED_B), false));
	cons_close(&c);
	spn_producer_destroy(p);
	unlink(link);
}

/* ---- UnregisterDataSource --------------------------------------------------------------- */

static void unregister_running(void **state)
{
	struct env *e = *state;
	struct dsrec r = { .defer_stop = true }, r2 = { 0 };
	struct spn_ds_desc d = { .name = DS_NAME, .will_notify_on_stop = true };
	struct enable_res res;
	struct spn_producer *p = make_producer(e->psock);
	struct spn_ds *ds = register_ds(p, DS_NAME, &d, &r);
	struct spn_ds *ds2 = register_ds(p, DS2_NAME, NULL, &r2);
	unsigned setups, starts, stops, flushes;
	struct spn_producer_stats st;
	struct obs o = { 0 };
	struct trace *tr;
	struct cons c;
	struct tc t;
	int64_t t0;

	cons_open(e, &c);
	assert_true(wait_ds_count(&c, DS_NAME, 1));
	assert_true(wait_ds_count(&c, DS2_NAME, 1));
	session_cfg(&t, 4000);
	enable(&c, &t, -1, &res);
	observe(&c, &o);
	assert_true(wait_for(&c, enabled, ds, 5000));
	/* 300 events: full chunks and a partial one the writer still holds
	 * (only the unregistration's settle commits that one). */
	write_events(ds, 0, 300);

	assert_int_equal(spn_data_source_unregister(ds), 0);
	/* Stopped in the SDK before the call returned; the deferral of
	 * on_stop does not hold the unregistration up. */
	assert_int_equal(r.stops, 1);
	assert_int_equal(spn_ds_enabled(ds), 0);
	assert_null(spn_ds_writer(ds));
	assert_null(spn_ds_tls(ds, 0));
	setups = r.setups;
	starts = r.starts;
	stops = r.stops;
	flushes = r.flushes;
	assert_int_equal(spn_data_source_unregister(ds), -ENOENT);
	assert_int_equal(spn_data_source_update(ds, &d), -ENOENT);
	assert_int_equal(spn_data_source_unregister(NULL), -EINVAL);

	/* The service: the instance stopped, the registration gone, the
	 * other data source still there. */
	assert_true(wait_for(&c, obs_stopped, &o, 5000));
	assert_true(wait_ds_count(&c, DS_NAME, 0));
	assert_int_equal(view_ds(&c, DS2_NAME).count, 1);
	/* A flush and the stop no longer wait for the gone instance (it
	 * would hold the stop for the 4 s timeout). */
	assert_int_equal(flush(&c, 2000), 0);
	t0 = now_ms();
	assert_int_equal(disable(&c), 0);
	wait_flag(&c, &res.done, 5000);
	assert_true(res.done);
	assert_true(now_ms() - t0 < 2000);
	tr = read_trace(&c);
	expect_events(tr, 0, 300);
	free(tr);
	spn_ds_stop_done(r.saved); /* the deferred handle is dead: ignored */
	assert_int_equal(free_buffers(&c), 0);

	/* A new session sets up nothing for it. */
	enable(&c, &t, -1, &res);
	assert_false(res.done); /* accepted, running */
	pump(&c, 200);
	{
		Perfetto__Protos__TracingServiceState *s = qss(&c, false, NULL);

		assert_int_equal(s->n_tracing_sessions, 1);
		assert_int_equal(s->tracing_sessions[0]->num_data_sources, 0);
		qss_free(s);
	}
	assert_int_equal(disable(&c), 0);
	wait_flag(&c, &res.done, 5000);
	assert_true(res.done);
	assert_int_equal(r.setups, setups);
	assert_int_equal(r.starts, starts);
	assert_int_equal(r.stops, stops);
	assert_int_equal(r.flushes, flushes);
	assert_int_equal(r.clears, 0);
	st = stats(p);
	assert_int_equal(st.instances_started, 1);
	assert_int_equal(st.instances_stopped, 1);
	assert_int_equal(st.packets_dropped, 0);
	(void)ds2;
	cons_close(&c);
	spn_producer_destroy(p);
}

/* Unregistering from inside its own on_start: returns at once, on_stop
 * runs after, the service sees the instance stop. */
static void unregister_from_callback(void **state)
{
	struct env *e = *state;
	struct dsrec r = { .unreg_on_start = true, .unreg_rc = 1 };
	struct enable_res res;
	struct spn_producer *p = make_producer(e->psock);
	struct spn_ds *ds = register_ds(p, DS_NAME, NULL, &r);
	struct obs o = { 0 };
	struct cons c;
	struct tc t;

	cons_open(e, &c);
	assert_true(wait_ds_count(&c, DS_NAME, 1));
	session_cfg(&t, 4000);
	enable(&c, &t, -1, &res);
	observe(&c, &o);
	assert_true(wait_for(&c, stopped, &r, 5000));
	assert_int_equal(atomic_load(&r.unreg_rc), 0);
	assert_int_equal(r.starts, 1);
	assert_int_equal(spn_ds_enabled(ds), 0);
	assert_true(wait_for(&c, obs_stopped, &o, 5000));
	assert_true(wait_ds_count(&c, DS_NAME, 0));
	assert_int_equal(disable(&c), 0);
	wait_flag(&c, &res.done, 5000);
	assert_true(res.done);
	assert_int_equal(r.stops, 1);
	assert_int_equal(spn_data_source_unregister(ds), -ENOENT);
	cons_close(&c);
	spn_producer_destroy(p);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, env_setup, env_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(trigger_bad_args),
		T(trigger_stop_tracing),
		T(trigger_queued_until_connected),
		T(trigger_sent_by_destroy),
		T(update_descriptor),
		T(update_before_connect),
		T(unregister_running),
		T(unregister_from_callback),
	};
	struct ipc_loop *probe;
	int rc = ipc_loop_create(&probe, NULL);

	if (rc == -ENOSYS || rc == -EPERM) {
		fprintf(stderr, "io_uring unavailable: skipped\n");
		return 77;
	}
	if (rc == 0)
		ipc_loop_destroy(probe);
	signal(SIGPIPE, SIG_IGN);
	if (getenv("SPN_TEST_FILTER"))
		cmocka_set_test_filter(getenv("SPN_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
