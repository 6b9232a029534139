// SPDX-License-Identifier: Apache-2.0
// The producer SDK's control calls beyond registration: activating triggers (ActivateTriggers), replacing a data source's descriptor (UpdateDataSource) and unregistering a data source (UnregisterDataSource), each in two halves: the app-thread call that hands the work over, and the I/O thread that does it.
//
// Triggers. A call copies its names into one block and pushes it on
// p->trig_head, a multi-producer stack the I/O thread takes whole with one
// exchange (so no node is ever popped singly: no ABA), then sets a work bit
// and wakes the I/O thread the usual way (producer.c). The I/O thread
// appends the taken calls, reversed into call order, to its queue and sends
// the queue while connected; calls whose ttl ran out, or that overflow the
// queue, are dropped and counted.
//
// Updates. The copy waits in the data source (p->lock) until the I/O
// thread swaps it in; the I/O thread is the only reader of the descriptor
// after registration, so the swap needs no other care. The service keeps
// the flags of the descriptor an instance was created from, and an
// instance may have been created from the old one while the update was on
// its way; so until the Sync sent after the update is answered (every
// setup the service issued before it has then reached us), instances
// notify if either descriptor asks (see struct spn_ds.sticky_*).
//
// Unregistration. The caller marks the data source gone and waits on
// p->cond; the I/O thread stops its instances (on_stop runs), settles the
// writers' data like a flush, then frees the slots and sends
// UnregisterDataSource. The service answers by sending stop_data_source
// for those instances, which finds no slot and is ignored.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ipc/client.h"
#include "ipc/log.h"
#include "producer_port.pb-c.h"
#include "sdk/producer_int.h"

#define SPN_TAG "producer"
/* How long spn_data_source_unregister() waits for the I/O thread. */
#define SPN_UNREG_WAIT_MS 10000u

static uint64_t spn_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Sets work bit w and wakes the I/O thread. Release: what the caller did
 * before (a push, a pending copy) is seen by the I/O thread's acquire
 * exchange of the bits. */
static void spn_post_work(struct spn_producer *p, uint32_t w)
{
	atomic_fetch_or_explicit(&p->work, w, memory_order_release);
	_spn_prod_kick(p);
}

/* ---- Triggers: app threads -------------------------------------------------------- */

int spn_producer_activate_triggers(struct spn_producer *p, const char *const *names,
				   size_t n, uint32_t ttl_ms)
{
	size_t bytes = 0, len[SPN_TRIGGERS_MAX];
	struct spn_trig *t, *head;
	char *dst;

	if (!p || !names || !n || n > SPN_TRIGGERS_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (!names[i] || !names[i][0])
			return -EINVAL;
		len[i] = strnlen(names[i], SPN_TRIGGER_NAME_MAX + 1);
		if (len[i] > SPN_TRIGGER_NAME_MAX)
			return -EINVAL;
		bytes += len[i] + 1;
	}
	t = malloc(sizeof(*t) + n * sizeof(t->names[0]) + bytes);
	if (!t)
		return -ENOMEM;
	t->n = n;
	t->deadline_ms = ttl_ms ? spn_mono_ms() + ttl_ms : 0;
	dst = (char *)&t->names[n];
	for (size_t i = 0; i < n; i++) {
		memcpy(dst, names[i], len[i] + 1);
		t->names[i] = dst;
		dst += len[i] + 1;
	}
	/* Relaxed load: the CAS below decides. */
	head = atomic_load_explicit(&p->trig_head, memory_order_relaxed);
	do {
		t->next = head;
		/* Release: the block's contents before it is reachable;
		 * pairs with the acquire exchange in io_trig_take. */
	} while (!atomic_compare_exchange_weak_explicit(&p->trig_head, &head, t,
							memory_order_release,
							memory_order_relaxed));
	spn_post_work(p, SPN_WORK_TRIGGERS);
	return 0;
}

/* ---- Triggers: I/O thread ------------------------------------------------------------ */

static void trig_drop(struct spn_producer *p, struct spn_trig *t)
{
	atomic_fetch_add_explicit(&p->n.triggers_dropped, t->n, memory_order_relaxed);
	free(t);
}

/* Moves the pushed calls to the queue's tail in call order, then drops
 * what expired and what is over the cap (oldest first). */
static void io_trig_take(struct spn_producer *p)
{
	/* Acquire: pairs with the pushers' release CAS. */
	struct spn_trig *s = atomic_exchange_explicit(&p->trig_head, NULL,
						      memory_order_acquire);
	struct spn_trig *fifo = NULL, **pp;
	uint64_t now = spn_mono_ms();

	while (s) { /* the stack is newest first */
		struct spn_trig *next = s->next;

		s->next = fifo;
		fifo = s;
		s = next;
	}
	for (; fifo; fifo = fifo->next, p->ntrig_q++) {
		*p->trig_tail = fifo;
		p->trig_tail = &fifo->next;
	}
	for (pp = &p->trig_q; *pp;) {
		struct spn_trig *t = *pp;

		if ((t->deadline_ms && now > t->deadline_ms) ||
		    p->ntrig_q > SPN_TRIGGERS_QUEUE_MAX) {
			*pp = t->next;
			p->ntrig_q--;
			trig_drop(p, t);
		} else {
			pp = &t->next;
		}
	}
	p->trig_tail = pp;
}

void _spn_io_triggers(struct spn_producer *p)
{
	io_trig_take(p);
	while (p->trig_q && p->st == SPN_CONN_UP) {
		Perfetto__Protos__ActivateTriggersRequest r =
			PERFETTO__PROTOS__ACTIVATE_TRIGGERS_REQUEST__INIT;
		struct spn_trig *t = p->trig_q;

		p->trig_q = t->next;
		if (!p->trig_q)
			p->trig_tail = &p->trig_q;
		p->ntrig_q--;
		r.n_trigger_names = t->n;
		r.trigger_names = t->names;
		/* Counted as sent even if the connection breaks during the
		 * send: the service may have taken it. */
		atomic_fetch_add_explicit(&p->n.triggers_sent, t->n, memory_order_relaxed);
		_spn_io_send(p, "ActivateTriggers", &r.base);
		free(t);
	}
}

void _spn_trig_free_all(struct spn_producer *p)
{
	io_trig_take(p);
	while (p->trig_q) {
		struct spn_trig *t = p->trig_q;

		p->trig_q = t->next;
		trig_drop(p, t);
	}
	p->trig_tail = &p->trig_q;
	p->ntrig_q = 0;
}

/* ---- Descriptors -------------------------------------------------------------------- */

/* Fills d from ds's current descriptor. Every data source carries its id,
 * which UpdateDataSource needs (older services ignore the field). */
void _spn_io_fill_desc(const struct spn_ds *ds, Perfetto__Protos__DataSourceDescriptor *d)
{
	d->name = (char *)ds->name;
	d->has_id = 1;
	d->id = ds->desc_id;
	d->has_will_notify_on_start = d->has_will_notify_on_stop = 1;
	d->will_notify_on_start = ds->desc.will_notify_on_start;
	d->will_notify_on_stop = ds->desc.will_notify_on_stop;
	d->has_handles_incremental_state_clear = 1;
	d->handles_incremental_state_clear = ds->desc.handles_incremental_state_clear;
	if (ds->desc.no_flush)
		d->has_no_flush = d->no_flush = 1; /* newer field: only when set */
	if (ds->desc.track_event_descriptor_len) {
		d->has_track_event_descriptor = 1;
		d->track_event_descriptor.data = ds->ted;
		d->track_event_descriptor.len = ds->desc.track_event_descriptor_len;
	}
}

int spn_data_source_update(struct spn_ds *ds, const struct spn_ds_desc *desc)
{
	struct spn_producer *p;
	uint8_t *ted = NULL, *old;

	if (!ds || !desc || !desc->name || strcmp(desc->name, ds->name) != 0)
		return -EINVAL;
	p = ds->p;
	if (desc->track_event_descriptor_len) {
		if (!desc->track_event_descriptor)
			return -EINVAL;
		ted = malloc(desc->track_event_descriptor_len);
		if (!ted)
			return -ENOMEM;
		memcpy(ted, desc->track_event_descriptor, desc->track_event_descriptor_len);
	}
	pthread_mutex_lock(&p->lock);
	if (ds->gone) {
		pthread_mutex_unlock(&p->lock);
		free(ted);
		return -ENOENT;
	}
	old = ds->upd_ted; /* an earlier update not yet applied */
	ds->upd = *desc;
	ds->upd.name = ds->name;
	ds->upd.track_event_descriptor = ted;
	ds->upd_ted = ted;
	ds->upd_pending = true;
	pthread_mutex_unlock(&p->lock);
	free(old);
	spn_post_work(p, SPN_WORK_UPDATE);
	return 0;
}

/* Reply of the Sync that follows an UpdateDataSource. */
static void io_on_upd_sync(void *arg, struct ipc_client_reply *r)
{
	struct spn_ds *ds = arg;

	if (r->status == 0 && r->has_more)
		return;
	/* Any end counts as the fence (an old service rejects Sync; a lost
	 * connection resets the flags anyway). */
	if (ds->upd_syncs && --ds->upd_syncs == 0)
		ds->sticky_start = ds->sticky_stop = false;
}

static void io_on_updated(void *arg, struct ipc_client_reply *r)
{
	struct spn_ds *ds = arg;

	if (r->status < 0 && r->status != -ECONNRESET)
		spn_log_warn(SPN_TAG, "UpdateDataSource \"%s\": %s", ds->name,
			     strerror(-r->status));
}

/* Sends ds's (new) descriptor, then a Sync that ends the sticky flags. */
static void io_send_update(struct spn_producer *p, struct spn_ds *ds)
{
	Perfetto__Protos__UpdateDataSourceRequest req =
		PERFETTO__PROTOS__UPDATE_DATA_SOURCE_REQUEST__INIT;
	Perfetto__Protos__DataSourceDescriptor d = PERFETTO__PROTOS__DATA_SOURCE_DESCRIPTOR__INIT;
	Perfetto__Protos__SyncRequest sync = PERFETTO__PROTOS__SYNC_REQUEST__INIT;
	int err;

	_spn_io_fill_desc(ds, &d);
	req.data_source_descriptor = &d;
	err = ipc_client_invoke(p->port, "UpdateDataSource", &req.base, -1, 0, io_on_updated,
				ds, NULL);
	if (err == -EOPNOTSUPP) {
		/* The sticky flags stay until the next connection. */
		if (!p->upd_unsupported_logged)
			spn_log_warn(SPN_TAG, "the service has no UpdateDataSource: \"%s\" "
					      "keeps its old descriptor there until the "
					      "producer reconnects", ds->name);
		p->upd_unsupported_logged = true;
		return;
	}
	if (err) {
		spn_log_warn(SPN_TAG, "UpdateDataSource \"%s\" not sent: %s", ds->name,
			     strerror(-err));
		return;
	}
	if (p->st != SPN_CONN_UP)
		return;
	err = ipc_client_invoke(p->port, "Sync", &sync.base, -1, 0, io_on_upd_sync, ds, NULL);
	if (!err)
		ds->upd_syncs++;
}

void _spn_io_updates(struct spn_producer *p)
{
	struct spn_ds *ds;

	for (uint32_t k = 0; (ds = _spn_io_ds_at(p, k)); k++) {
		struct spn_ds_desc old;
		uint8_t *old_ted;

		pthread_mutex_lock(&p->lock);
		if (!ds->upd_pending) {
			pthread_mutex_unlock(&p->lock);
			continue;
		}
		old = ds->desc;
		old_ted = ds->ted;
		ds->desc = ds->upd;
		ds->ted = ds->upd_ted;
		ds->upd_ted = NULL;
		ds->upd_pending = false;
		pthread_mutex_unlock(&p->lock);
		free(old_ted);
		if (ds->unreg || p->st != SPN_CONN_UP || ds->reg_gen != p->conn_gen)
			continue; /* the next registration carries it */
		ds->sticky_start |= old.will_notify_on_start;
		ds->sticky_stop |= old.will_notify_on_stop;
		io_send_update(p, ds);
	}
}

void _spn_io_ctl_connected(struct spn_producer *p)
{
	struct spn_ds *ds;

	/* This connection registered the current descriptors. */
	for (uint32_t k = 0; (ds = _spn_io_ds_at(p, k)); k++)
		ds->sticky_start = ds->sticky_stop = false;
	_spn_io_triggers(p);
}

/* ---- Unregistration ----------------------------------------------------------------- */

int spn_data_source_unregister(struct spn_ds *ds)
{
	struct spn_producer *p;
	struct timespec until;
	int err = 0;

	if (!ds)
		return -EINVAL;
	p = ds->p;
	pthread_mutex_lock(&p->lock);
	if (ds->gone) {
		pthread_mutex_unlock(&p->lock);
		return -ENOENT;
	}
	ds->gone = true;
	pthread_mutex_unlock(&p->lock);
	if (_spn_io_self == p) {
		/* A callback: no more callbacks but the stop's on_stop. */
		ds->unreg = true;
		spn_post_work(p, SPN_WORK_UNREG);
		return 0;
	}
	spn_post_work(p, SPN_WORK_UNREG);
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += SPN_UNREG_WAIT_MS / 1000u;
	pthread_mutex_lock(&p->lock);
	while (!ds->unreg_done && err == 0)
		err = -pthread_cond_timedwait(&p->cond, &p->lock, &until);
	pthread_mutex_unlock(&p->lock);
	if (err == -ETIMEDOUT)
		spn_log_warn(SPN_TAG, "unregistering \"%s\": the I/O thread did not answer "
				      "in %u ms", ds->name, SPN_UNREG_WAIT_MS);
	return err;
}

/* Stops every instance of ds and queues the settle that ends in
 * UnregisterDataSource. */
static void io_unreg(struct spn_producer *p, struct spn_ds *ds)
{
	struct spn_settle *j;

	ds->unreg = true;
	for (uint32_t i = 0; i < SPN_DS_MAX_INSTANCES; i++) {
		struct spn_ds_inst *in = &ds->inst[i];

		if (in->state == SPN_INST_SETUP || in->state == SPN_INST_STARTED) {
			_spn_io_stop_inst(p, in, false);
			if (in->state == SPN_INST_STOPPING) {
				_spn_io_cancel(p, &in->stop_timer);
				_spn_io_inst_state(p, in, SPN_INST_SETTLING);
			}
		} else if (in->state == SPN_INST_STOPPING) {
			/* The service asked for this stop and waits for it:
			 * complete it (settle, then notify). */
			_spn_io_stop_complete(p, in);
		}
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		struct spn_settle now = { .kind = SPN_SETTLE_UNREG, .ds = ds };

		_spn_io_unreg_finish(p, &now); /* without waiting for the data */
		return;
	}
	j->kind = SPN_SETTLE_UNREG;
	j->ds = ds;
	_spn_io_settle_add(p, j);
}

void _spn_io_unreg_scan(struct spn_producer *p)
{
	struct spn_ds *ds;

	for (uint32_t k = 0; (ds = _spn_io_ds_at(p, k)); k++) {
		bool todo;

		pthread_mutex_lock(&p->lock);
		todo = ds->gone && !ds->unreg_done;
		pthread_mutex_unlock(&p->lock);
		if (!todo)
			continue;
		io_unreg(p, ds);
		pthread_mutex_lock(&p->lock);
		ds->unreg_done = true;
		pthread_cond_broadcast(&p->cond);
		pthread_mutex_unlock(&p->lock);
	}
}

void _spn_io_unreg_finish(struct spn_producer *p, const struct spn_settle *j)
{
	struct spn_ds *ds = j->ds;
	Perfetto__Protos__UnregisterDataSourceRequest r =
		PERFETTO__PROTOS__UNREGISTER_DATA_SOURCE_REQUEST__INIT;
	bool registered = p->st == SPN_CONN_UP && ds->reg_gen == p->conn_gen;

	/* Stops settled in this round went first (queued before us); what
	 * is left is ours. */
	for (uint32_t i = 0; i < SPN_DS_MAX_INSTANCES; i++)
		if (ds->inst[i].state != SPN_INST_FREE)
			_spn_io_inst_free(p, &ds->inst[i]);
	ds->reg_gen = 0;
	if (!registered)
		return;
	r.data_source_name = ds->name;
	_spn_io_send(p, "UnregisterDataSource", &r.base);
}
