// SPDX-License-Identifier: Apache-2.0
// ObserveEvents on the control plane (spec/consumer-port.md §8): one event
// stream per consumer connection, the events of its attached session
// (instance state changes, all data sources started, clone trigger hits)
// batched per control-loop task and sent as streamed replies.
//
// Control thread only. A stream is named by the consumer's (lane,
// connection id), like a session's consumer; its reply handle posts to the
// consumer's lane. Events queued while one task runs are merged into one
// ObservableEvents, sent by a zero-delay timer at the next loop turn.
// Once svc_stop detached the lanes (ctl_lanes_gone) nothing is sent.
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/ctl_int.h"
#include "ipc/log.h"
#include "observable_events.pb-c.h"

/* Event type bits (ObservableEvents.Type values are bit flags). */
#define OBS_INSTANCES PERFETTO__PROTOS__OBSERVABLE_EVENTS__TYPE__TYPE_DATA_SOURCES_INSTANCES
#define OBS_ALL_STARTED PERFETTO__PROTOS__OBSERVABLE_EVENTS__TYPE__TYPE_ALL_DATA_SOURCES_STARTED
#define OBS_CLONE_HIT PERFETTO__PROTOS__OBSERVABLE_EVENTS__TYPE__TYPE_CLONE_TRIGGER_HIT

/* One instance state change waiting to be sent. */
struct obs_change {
	char *producer;		/* producer name (owned) */
	char *data_source;	/* data source name (owned) */
	int state;		/* DataSourceInstanceState */
};

/* A clone trigger hit (ObservableEvents.CloneTriggerHit). */
struct obs_hit {
	uint64_t session_id;	/* TracingSessionID of the CLONE_SNAPSHOT session */
	char *trigger;		/* trigger name (owned) */
	char *producer;		/* activating producer's name (owned) */
	uint32_t producer_uid;	/* its uid */
	uint64_t boot_time_ns;	/* CLOCK_BOOTTIME when the trigger arrived */
	uint64_t delay_ms;	/* the trigger's stop_delay_ms */
};

/* One consumer's open ObserveEvents stream and its pending batch. */
struct obs_stream {
	unsigned lane;			/* consumer's lane */
	uint64_t conn_id;		/* consumer's connection */
	uint32_t mask;			/* OR of the observed types */
	struct ipc_reply reply;		/* the stream (final reply closes it) */
	struct obs_change *changes;	/* pending instance changes */
	size_t nchanges;		/* entries used */
	size_t cap;			/* entries allocated */
	bool all_started;		/* pending all_data_sources_started */
	bool has_hit;			/* hit is pending */
	struct obs_hit hit;		/* pending clone trigger hit */
	uint64_t timer;			/* batch send timer, 0: none armed */
	struct ctl *ctl;		/* for the timer callback */
	struct obs_stream *next;	/* list */
};

/* A clone trigger hit waiting for its stop_delay_ms. */
struct obs_delayed {
	struct obs_hit hit;		/* what to report */
	uint64_t timer;			/* its timer */
	struct ctl *ctl;		/* for the timer callback */
	struct obs_delayed *next;	/* list */
};

/* The control plane's ObserveEvents state (ctl->observe). */
struct ctl_observe {
	struct obs_stream *streams;	/* open streams */
	struct obs_delayed *delayed;	/* clone trigger hits not yet due */
};

static struct ctl_observe *obs_state(struct ctl *ctl)
{
	if (!ctl->observe)
		ctl->observe = calloc(1, sizeof(*ctl->observe));
	return ctl->observe;
}

static struct obs_stream *obs_find(struct ctl *ctl, unsigned lane,
				   uint64_t conn_id)
{
	if (!ctl->observe || !conn_id)
		return NULL;
	for (struct obs_stream *o = ctl->observe->streams; o; o = o->next)
		if (o->lane == lane && o->conn_id == conn_id)
			return o;
	return NULL;
}

static void obs_hit_clear(struct obs_hit *h)
{
	free(h->trigger);
	free(h->producer);
	memset(h, 0, sizeof(*h));
}

static void obs_batch_clear(struct obs_stream *o)
{
	for (size_t i = 0; i < o->nchanges; i++) {
		free(o->changes[i].producer);
		free(o->changes[i].data_source);
	}
	o->nchanges = 0;
	o->all_started = false;
	if (o->has_hit)
		obs_hit_clear(&o->hit);
	o->has_hit = false;
}

/* Sends the pending batch as one streamed reply (has_more:true). */
static void obs_send_batch(struct obs_stream *o)
{
	Perfetto__Protos__ObserveEventsResponse resp =
		PERFETTO__PROTOS__OBSERVE_EVENTS_RESPONSE__INIT;
	Perfetto__Protos__ObservableEvents ev =
		PERFETTO__PROTOS__OBSERVABLE_EVENTS__INIT;
	Perfetto__Protos__ObservableEvents__CloneTriggerHit hit =
		PERFETTO__PROTOS__OBSERVABLE_EVENTS__CLONE_TRIGGER_HIT__INIT;
	Perfetto__Protos__ObservableEvents__DataSourceInstanceStateChange *ch =
		NULL, **chp = NULL;
	int rc;

	if (!o->nchanges && !o->all_started && !o->has_hit)
		return;
	if (ctl_lanes_gone(o->ctl))
		goto out; /* svc_stop: nothing goes through a lane any more */
	if (o->nchanges) {
		ch = calloc(o->nchanges, sizeof(*ch));
		chp = calloc(o->nchanges, sizeof(*chp));
		if (!ch || !chp) {
			spn_log_error("ctl", "out of memory: %zu observed events "
				      "lost", o->nchanges);
			goto out;
		}
	}
	for (size_t i = 0; i < o->nchanges; i++) {
		perfetto__protos__observable_events__data_source_instance_state_change__init(
			&ch[i]);
		ch[i].producer_name = o->changes[i].producer;
		ch[i].data_source_name = o->changes[i].data_source;
		ch[i].has_state = true;
		ch[i].state = o->changes[i].state;
		chp[i] = &ch[i];
	}
	ev.n_instance_state_changes = o->nchanges;
	ev.instance_state_changes = chp;
	if (o->all_started) {
		ev.has_all_data_sources_started = true;
		ev.all_data_sources_started = true;
	}
	if (o->has_hit) {
		hit.has_tracing_session_id = true;
		hit.tracing_session_id = (int64_t)o->hit.session_id;
		hit.trigger_name = o->hit.trigger;
		hit.producer_name = o->hit.producer;
		hit.has_producer_uid = true;
		hit.producer_uid = o->hit.producer_uid;
		hit.has_boot_time_ns = true;
		hit.boot_time_ns = o->hit.boot_time_ns;
		hit.has_trigger_delay_ms = true;
		hit.trigger_delay_ms = o->hit.delay_ms;
		ev.clone_trigger_hit = &hit;
	}
	resp.events = &ev;
	rc = ipc_reply_send(&o->reply, &resp.base, -1, true);
	if (rc < 0)
		spn_log_warn("ctl", "ObserveEvents: events not sent: %s",
			     strerror(-rc));
out:
	free(ch);
	free(chp);
	obs_batch_clear(o);
}

static void obs_timer_fired(struct ipc_loop *loop, void *arg)
{
	struct obs_stream *o = arg;
	(void)loop;

	o->timer = 0;
	obs_send_batch(o);
}

/* Makes sure the batch goes out at the next loop turn. */
static void obs_arm(struct obs_stream *o)
{
	if (o->timer)
		return;
	if (ipc_loop_timer_add(o->ctl->loop, 0, obs_timer_fired, o,
			       &o->timer) < 0) {
		o->timer = 0;
		obs_send_batch(o); /* no timer: send what we have now */
	}
}

/* Closes a stream: final empty reply {success, has_more:false}. */
static void obs_close(struct ctl *ctl, struct obs_stream *o, bool send)
{
	struct obs_stream **pp = &ctl->observe->streams;
	Perfetto__Protos__ObserveEventsResponse resp =
		PERFETTO__PROTOS__OBSERVE_EVENTS_RESPONSE__INIT;

	while (*pp && *pp != o)
		pp = &(*pp)->next;
	if (*pp)
		*pp = o->next;
	if (o->timer)
		ipc_loop_timer_cancel(ctl->loop, o->timer);
	if (send && !ctl_lanes_gone(ctl)) {
		obs_send_batch(o); /* what this task already produced */
		ipc_reply_send(&o->reply, &resp.base, -1, false);
	}
	obs_batch_clear(o);
	free(o->changes);
	free(o);
}

/* The stream of s's consumer if it observes any of the `bits`. */
static struct obs_stream *obs_for(struct ctl *ctl, const struct ctl_session *s,
				  uint32_t bits)
{
	struct obs_stream *o;

	if (!s || s->dead || !s->conn_id)
		return NULL;
	o = obs_find(ctl, s->lane, s->conn_id);
	return o && (o->mask & bits) ? o : NULL;
}

static void obs_add_change(struct ctl *ctl, struct obs_stream *o,
			   const struct ctl_session *s,
			   const struct ctl_inst *in)
{
	struct ctl_producer *p = ctl_producer_find(ctl, in->producer_id);
	const Perfetto__Protos__DataSourceConfig *c =
		s->cfg->data_sources[in->cfg_index]->config;
	struct obs_change *e;
	int state;

	switch (in->state) {
	case INST_STARTED:
		state = PERFETTO__PROTOS__OBSERVABLE_EVENTS__DATA_SOURCE_INSTANCE_STATE__DATA_SOURCE_INSTANCE_STATE_STARTED;
		break;
	case INST_CONFIGURED:
	case INST_STOPPED:
		state = PERFETTO__PROTOS__OBSERVABLE_EVENTS__DATA_SOURCE_INSTANCE_STATE__DATA_SOURCE_INSTANCE_STATE_STOPPED;
		break;
	default:
		return; /* STARTING / STOPPING are not reported */
	}
	if (o->nchanges == o->cap) {
		size_t cap = o->cap ? 2 * o->cap : 8;
		struct obs_change *v = realloc(o->changes, cap * sizeof(*v));

		if (!v)
			goto oom;
		o->changes = v;
		o->cap = cap;
	}
	e = &o->changes[o->nchanges];
	e->producer = strdup(p ? p->name : "");
	e->data_source = strdup(c && c->name ? c->name : "");
	e->state = state;
	if (!e->producer || !e->data_source) {
		free(e->producer);
		free(e->data_source);
		goto oom;
	}
	o->nchanges++;
	obs_arm(o);
	return;
oom:
	spn_log_error("ctl", "out of memory: instance state change not observed");
}

void ctl_observe_inst(struct ctl *ctl, const struct ctl_session *s,
		      const struct ctl_inst *in)
{
	struct obs_stream *o = obs_for(ctl, s, OBS_INSTANCES);

	if (o)
		obs_add_change(ctl, o, s, in);
}

void ctl_observe_all_started(struct ctl *ctl, const struct ctl_session *s)
{
	struct obs_stream *o = obs_for(ctl, s, OBS_ALL_STARTED);

	if (!o)
		return;
	o->all_started = true;
	obs_arm(o);
}

/* A due clone trigger hit: to the session's consumer, if still there. */
static void obs_deliver_hit(struct ctl *ctl, struct obs_hit *h)
{
	struct ctl_session *s = NULL;
	struct obs_stream *o;

	for (struct ctl_session *i = ctl->sessions; i; i = i->next)
		if (i->id == h->session_id)
			s = i;
	o = obs_for(ctl, s, OBS_CLONE_HIT);
	if (!o) {
		obs_hit_clear(h);
		return;
	}
	/* One hit per ObservableEvents: an earlier one goes out first. */
	if (o->has_hit) {
		if (o->timer)
			ipc_loop_timer_cancel(ctl->loop, o->timer);
		o->timer = 0;
		obs_send_batch(o);
	}
	o->hit = *h;
	o->has_hit = true;
	memset(h, 0, sizeof(*h));
	obs_arm(o);
}

static void obs_delay_fired(struct ipc_loop *loop, void *arg)
{
	struct obs_delayed *d = arg;
	struct ctl *ctl = d->ctl;
	struct obs_delayed **pp = &ctl->observe->delayed;
	(void)loop;

	while (*pp && *pp != d)
		pp = &(*pp)->next;
	if (*pp)
		*pp = d->next;
	obs_deliver_hit(ctl, &d->hit);
	free(d);
}

void ctl_observe_clone_trigger(struct ctl *ctl, const struct ctl_session *s,
			       const char *trigger, const char *producer,
			       uid_t producer_uid, uint32_t stop_delay_ms)
{
	struct ctl_observe *st = obs_state(ctl);
	struct obs_delayed *d = calloc(1, sizeof(*d));

	if (!st || !d)
		goto oom;
	d->ctl = ctl;
	d->hit.session_id = s->id;
	d->hit.trigger = strdup(trigger ? trigger : "");
	d->hit.producer = strdup(producer ? producer : "");
	d->hit.producer_uid = (uint32_t)producer_uid;
	d->hit.boot_time_ns = svc_pkts_now(&s->pkts);
	d->hit.delay_ms = stop_delay_ms;
	if (!d->hit.trigger || !d->hit.producer)
		goto oom;
	if (ipc_loop_timer_add(ctl->loop, stop_delay_ms, obs_delay_fired, d,
			       &d->timer) < 0) {
		spn_log_error("ctl", "session %llu: clone trigger timer failed",
			      (unsigned long long)s->id);
		obs_hit_clear(&d->hit);
		free(d);
		return;
	}
	d->next = st->delayed;
	st->delayed = d;
	return;
oom:
	if (d)
		obs_hit_clear(&d->hit);
	free(d);
	spn_log_error("ctl", "out of memory: clone trigger hit not observed");
}

/* The initial report of a new stream (§8 "On subscription"). */
static void obs_initial(struct ctl *ctl, struct obs_stream *o,
			struct ctl_session *s)
{
	bool all = true;

	if (!s || s->dead)
		return;
	if (o->mask & OBS_INSTANCES)
		for (unsigned i = 0; i < s->ninst; i++)
			if (ctl_producer_find(ctl, s->inst[i].producer_id))
				obs_add_change(ctl, o, s, &s->inst[i]);
	if (!(o->mask & OBS_ALL_STARTED) || s->all_started_sent ||
	    s->state != SVC_SESSION_STARTED)
		return;
	for (unsigned i = 0; i < s->ninst; i++)
		all &= s->inst[i].state == INST_STARTED;
	if (!all)
		return;
	/* Became true without being recorded yet: record it now, once. */
	s->all_started_sent = true;
	svc_pkts_record_event(&s->pkts, SVC_EV_ALL_DATA_SOURCES_STARTED, 0);
	o->all_started = true;
	obs_arm(o);
}

void ctl_observe_events(struct ctl *ctl, struct ctl_session *s,
			struct ctl_msg *m)
{
	Perfetto__Protos__ObserveEventsRequest *r =
		perfetto__protos__observe_events_request__unpack(NULL, m->len,
								 m->bytes);
	Perfetto__Protos__ObserveEventsResponse empty =
		PERFETTO__PROTOS__OBSERVE_EVENTS_RESPONSE__INIT;
	struct ctl_observe *st = obs_state(ctl);
	struct obs_stream *old = obs_find(ctl, m->lane, m->conn_id);
	struct obs_stream *o;
	uint32_t mask = 0;

	if (!r || !st) {
		ipc_reply_reject(&m->reply);
		goto out;
	}
	if (old)
		obs_close(ctl, old, true);
	for (size_t i = 0; i < r->n_events_to_observe; i++)
		mask |= (uint32_t)r->events_to_observe[i];
	mask &= OBS_INSTANCES | OBS_ALL_STARTED | OBS_CLONE_HIT;
	if (!mask) {
		/* Empty mask: stop observing; the new stream ends at once. */
		ipc_reply_send(&m->reply, &empty.base, -1, false);
		goto out;
	}
	o = calloc(1, sizeof(*o));
	if (!o) {
		ipc_reply_reject(&m->reply);
		goto out;
	}
	o->lane = m->lane;
	o->conn_id = m->conn_id;
	o->mask = mask;
	o->reply = m->reply;
	o->ctl = ctl;
	o->next = st->streams;
	st->streams = o;
	obs_initial(ctl, o, s);
out:
	if (r)
		perfetto__protos__observe_events_request__free_unpacked(r, NULL);
}

void ctl_observe_conn_gone(struct ctl *ctl, unsigned lane, uint64_t conn_id)
{
	struct obs_stream *o = obs_find(ctl, lane, conn_id);

	if (o)
		obs_close(ctl, o, false);
}

void ctl_observe_destroy(struct ctl *ctl)
{
	struct ctl_observe *st = ctl->observe;

	if (!st)
		return;
	while (st->streams) {
		struct obs_stream *o = st->streams;

		st->streams = o->next;
		obs_batch_clear(o);
		free(o->changes);
		free(o);
	}
	while (st->delayed) {
		struct obs_delayed *d = st->delayed;

		st->delayed = d->next;
		obs_hit_clear(&d->hit);
		free(d);
	}
	free(st);
	ctl->observe = NULL;
}
