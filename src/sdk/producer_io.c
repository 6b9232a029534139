// SPDX-License-Identifier: Apache-2.0
// The producer SDK's I/O thread: connect and handshake (ipc-wire.md §9), register data sources, run the service's commands, commit what writers queued, settle flushes and stops, and reconnect with back-off.
//
// Everything here runs on the I/O thread (the ipc_loop's thread); it is the
// only writer of connection and instance state. Callbacks from the IPC
// client can run inside our own calls (a send that fails closes the
// connection and runs io_lost() before ipc_client_invoke returns), so
// after every invoke the code re-checks p->st and p->ctx before touching
// anything the loss may have freed.
//
// Commits. io_commit() drains the arbiter into CommitDataRequests: it
// announces new writer ids (RegisterTraceWriter) before the request that
// may carry their first chunk, and retires ids (UnregisterTraceWriter)
// after the one carrying their last; all three drop the reply. The I/O
// thread commits when an app thread wakes it, then every commit period
// while there is more (see producer.c for the wake-up), and at once for
// flushes and stops.
//
// Settling (flush and stop). A flush must commit what every writer wrote
// before it, including partial chunks. smb_arbiter_reclaim() takes the
// partial chunk of every writer that is between packets, and asks writers
// inside a packet to hand theirs back at its end; a round is a reclaim and
// a drain. A flush (or a completed stop) is answered after the round that
// found no writer inside a packet, or after SPN_SETTLE_ROUNDS rounds one
// commit period apart (a writer that is always inside a packet has handed
// back what it had by then); then CommitData carries the flush id, or
// NotifyDataSourceStopped goes out.
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ipc/client.h"
#include "ipc/log.h"
#include "producer_port.pb-c.h"
#include "sdk/producer_int.h"

#define SPN_TAG "producer"
#define SPN_SDK_VERSION "spindle 0.1.0"

typedef Perfetto__Protos__GetAsyncCommandResponse SpnCmd;
typedef Perfetto__Protos__DataSourceConfig SpnDsConfig;

static void io_lost(struct spn_producer *p, int reason);
static void io_go_idle(struct spn_producer *p);
static void io_settle_add(struct spn_producer *p, struct spn_settle *job);

/* ---- Small helpers ------------------------------------------------------- */

static void io_cancel(struct spn_producer *p, uint64_t *timer)
{
	if (*timer)
		ipc_loop_timer_cancel(p->loop, *timer);
	*timer = 0;
}

/* Invokes a drop-reply method. Returns true while the connection is still
 * up afterwards (a failed send may have closed it). */
static bool io_send(struct spn_producer *p, const char *method, const ProtobufCMessage *m)
{
	int err;

	if (p->st != SPN_CONN_UP || !p->port)
		return false;
	err = ipc_client_invoke(p->port, method, m, -1, IPC_INVOKE_DROP_REPLY, NULL,
				NULL, NULL);
	if (err)
		spn_log_warn(SPN_TAG, "%s not sent: %s", method, strerror(-err));
	return p->st == SPN_CONN_UP;
}

/* The data source at index i of the list, or NULL past its end. */
static struct spn_ds *io_ds_at(struct spn_producer *p, uint32_t i)
{
	struct spn_ds *ds = NULL;

	pthread_mutex_lock(&p->lock);
	if (i < p->nds)
		ds = p->ds[i];
	pthread_mutex_unlock(&p->lock);
	return ds;
}

/* Finds the slot holding service instance `id`. */
static struct spn_ds_inst *io_find_inst(struct spn_producer *p, uint64_t id)
{
	struct spn_ds *ds;

	for (uint32_t k = 0; id && (ds = io_ds_at(p, k)); k++)
		for (uint32_t i = 0; i < SPN_DS_MAX_INSTANCES; i++)
			if (ds->inst[i].state != SPN_INST_FREE && ds->inst[i].id == id)
				return &ds->inst[i];
	return NULL;
}

/* Sets instance state under the lock (app threads read it there). */
static void io_inst_state(struct spn_producer *p, struct spn_ds_inst *in,
			  enum spn_inst_state st)
{
	pthread_mutex_lock(&p->lock);
	in->state = st;
	pthread_mutex_unlock(&p->lock);
}

/* Frees a slot: its serial goes to 0, so threads' writers for it become
 * stale and are retired at their next lookup. */
static void io_inst_free(struct spn_producer *p, struct spn_ds_inst *in)
{
	io_cancel(p, &in->stop_timer);
	pthread_mutex_lock(&p->lock);
	in->state = SPN_INST_FREE;
	in->stop_done = false;
	in->target_buffer = 0;
	/* Release: pairs with app threads' acquire loads (spn_ds_tls). */
	atomic_store_explicit(&in->serial, 0, memory_order_release);
	pthread_mutex_unlock(&p->lock);
	in->id = 0;
	atomic_fetch_add_explicit(&p->n.instances_stopped, 1, memory_order_relaxed);
}

/* ---- SMB contexts ---------------------------------------------------------- */

static struct spn_sdk_ctx *io_ctx_new(struct spn_producer *p)
{
	struct spn_sdk_ctx *ctx = calloc(1, sizeof(*ctx));

	if (!ctx)
		return NULL;
	atomic_init(&ctx->refs, 1);
	ctx->p = p;
	/* Relaxed: the app's handle keeps the count above zero. */
	atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
	smb_shm_init(&ctx->shm);
	return ctx;
}

/* Sets up the arbiter over ctx's mapping. Returns 0 or -errno. */
static int io_ctx_ready(struct spn_producer *p, struct spn_sdk_ctx *ctx)
{
	struct smb_arbiter_opts o = {
		.direct_patching = p->direct_patching,
		.stall_max_us = p->opts.smb_stall_max_us,
		.wake = _spn_prod_arb_wake,
		.ctx = p,
	};
	int err = smb_arbiter_init(&ctx->arb, &ctx->shm.smb, &o);

	if (err)
		return err;
	err = smb_commit_init(&ctx->commit);
	if (err) {
		smb_arbiter_destroy(&ctx->arb);
		return err;
	}
	ctx->ready = true;
	return 0;
}

/* Makes ctx the connection's SMB (writers may use it from now on). */
static void io_ctx_publish(struct spn_producer *p, struct spn_sdk_ctx *ctx)
{
	pthread_mutex_lock(&p->lock);
	ctx->live = true;
	p->ctx = ctx;
	pthread_mutex_unlock(&p->lock);
}

/* Drops the connection's SMB: no new writers; the mapping goes away when
 * the last writer using it is retired. */
static void io_drop_ctx(struct spn_producer *p)
{
	struct spn_sdk_ctx *ctx = p->ctx;

	if (!ctx)
		return;
	pthread_mutex_lock(&p->lock);
	ctx->live = false;
	p->ctx = NULL;
	pthread_mutex_unlock(&p->lock);
	_spn_ctx_unref(ctx);
}

/* Startup SMB: created by us and offered with InitializeConnection. */
static int io_make_own_smb(struct spn_producer *p)
{
	struct spn_sdk_ctx *ctx = io_ctx_new(p);
	uint32_t size, page;
	int err;

	if (!ctx)
		return -ENOMEM;
	spn_smb_service_sizes(p->opts.smb_size_hint, p->opts.smb_page_size_hint, &size,
			      &page);
	err = smb_shm_create(&ctx->shm, size, page);
	if (err) {
		spn_log_warn(SPN_TAG, "startup SMB: %s", ctx->shm.err);
		_spn_ctx_unref(ctx);
		return err;
	}
	ctx->producer_owned = true;
	/* Not live yet: the arbiter waits for InitializeConnection's reply
	 * (direct patching), and no instance exists before it. */
	pthread_mutex_lock(&p->lock);
	p->ctx = ctx;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

/* ---- Commits --------------------------------------------------------------- */

static bool io_writer_event(struct spn_producer *p, bool add,
			    const struct smb_writer_event *ev)
{
	if (add) {
		Perfetto__Protos__RegisterTraceWriterRequest r =
			PERFETTO__PROTOS__REGISTER_TRACE_WRITER_REQUEST__INIT;

		r.has_trace_writer_id = r.has_target_buffer = 1;
		r.trace_writer_id = ev->writer_id;
		r.target_buffer = ev->target_buffer;
		return io_send(p, "RegisterTraceWriter", &r.base);
	} else {
		Perfetto__Protos__UnregisterTraceWriterRequest r =
			PERFETTO__PROTOS__UNREGISTER_TRACE_WRITER_REQUEST__INIT;

		r.has_trace_writer_id = 1;
		r.trace_writer_id = ev->writer_id;
		return io_send(p, "UnregisterTraceWriter", &r.base);
	}
}

static bool io_send_commit(struct spn_producer *p,
			   const Perfetto__Protos__CommitDataRequest *req)
{
	atomic_fetch_add_explicit(&p->n.commits, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&p->n.chunks_committed, req->n_chunks_to_move,
				  memory_order_relaxed);
	return io_send(p, "CommitData", &req->base);
}

/* One drained request on the wire, writer ids around it. Returns false
 * when the connection (and with it ctx) went away meanwhile. */
static bool io_send_drained(struct spn_producer *p, struct spn_sdk_ctx *ctx)
{
	struct smb_commit *c = &ctx->commit;
	uint32_t nrem = c->n_removed;

	for (uint32_t k = 0; k < c->n_added; k++)
		if (!io_writer_event(p, true, &c->added[k]) || p->ctx != ctx)
			return false;
	if (c->req.n_chunks_to_move || c->req.n_chunks_to_patch ||
	    c->req.has_flush_request_id)
		if (!io_send_commit(p, &c->req) || p->ctx != ctx)
			return false;
	for (uint32_t k = 0; k < nrem; k++)
		if (!io_writer_event(p, false, &c->removed[k]) || p->ctx != ctx)
			return false;
	return true;
}

/*
 * Drains the arbiter and sends everything; with flush_id != 0 the last
 * request carries it (an empty one if there is nothing to commit). When a
 * drain reports the SMB short of free chunks, reclaims idle writers'
 * partial chunks once and drains again. Returns the entries sent.
 */
static int io_commit(struct spn_producer *p, uint64_t flush_id)
{
	struct spn_sdk_ctx *ctx = p->ctx;
	bool reclaimed = false;
	int total = 0;

	if (p->st != SPN_CONN_UP)
		return 0;
	if (!ctx || !ctx->ready) {
		Perfetto__Protos__CommitDataRequest r =
			PERFETTO__PROTOS__COMMIT_DATA_REQUEST__INIT;

		if (flush_id) {
			r.has_flush_request_id = 1;
			r.flush_request_id = flush_id;
			io_send_commit(p, &r);
		}
		return 0;
	}
	for (;;) {
		struct smb_commit *c = &ctx->commit;
		int n = smb_arbiter_drain(&ctx->arb, c, flush_id);

		if (n > 0)
			total += n;
		if (c->req.has_flush_request_id)
			flush_id = 0; /* sent once */
		if (!io_send_drained(p, ctx))
			return total;
		if (c->more)
			continue;
		if (c->pressure && !reclaimed) {
			smb_arbiter_reclaim(&ctx->arb);
			reclaimed = true;
			continue;
		}
		return total;
	}
}

/* ---- Waking and the commit period -------------------------------------------- */

/* True when there is something to do (I/O thread). */
static bool io_has_work(struct spn_producer *p)
{
	/* Relaxed: after the caller's fence; the exchange in io_pump takes
	 * the bits with acquire. */
	if (atomic_load_explicit(&p->work, memory_order_relaxed))
		return true;
	return p->st == SPN_CONN_UP && p->ctx && p->ctx->ready &&
	       smb_arbiter_pending(&p->ctx->arb);
}

static void io_stop_complete(struct spn_producer *p, struct spn_ds_inst *in);

/* Completes the stops app threads finished with spn_ds_stop_done(). */
static void io_stop_done_scan(struct spn_producer *p)
{
	struct spn_ds *ds;

	for (uint32_t k = 0; (ds = io_ds_at(p, k)); k++) {
		for (uint32_t i = 0; i < SPN_DS_MAX_INSTANCES; i++) {
			struct spn_ds_inst *in = &ds->inst[i];
			bool done;

			pthread_mutex_lock(&p->lock);
			done = in->state == SPN_INST_STOPPING && in->stop_done;
			pthread_mutex_unlock(&p->lock);
			if (done)
				io_stop_complete(p, in);
		}
	}
}

static void io_register_all(struct spn_producer *p);

/* Handles the work bits and commits. Returns true if anything was done. */
static bool io_pump(struct spn_producer *p)
{
	/* Acquire: pairs with the release fetch_or of the setter, so what
	 * it did before (list append, stop_done) is visible. */
	uint32_t w = atomic_exchange_explicit(&p->work, 0, memory_order_acquire);

	if ((w & SPN_WORK_REGISTER) && p->st == SPN_CONN_UP)
		io_register_all(p);
	if (w & SPN_WORK_STOP_DONE)
		io_stop_done_scan(p);
	return io_commit(p, 0) > 0 || w != 0;
}

static void io_on_tick(struct ipc_loop *loop, void *arg);

/* Stays awake: commit again after one period. */
static void io_tick_arm(struct spn_producer *p)
{
	int err;

	if (p->tick_armed || p->quitting)
		return;
	err = ipc_loop_timer_add(p->loop, p->opts.commit_period_ms, io_on_tick, p,
				 &p->tick_timer);
	if (err) {
		/* Cannot stay awake on a timer: sleep armed, so the next
		 * push wakes us. */
		spn_log_warn(SPN_TAG, "commit timer: %s", strerror(-err));
		atomic_store_explicit(&p->armed, 1, memory_order_seq_cst);
		return;
	}
	p->tick_armed = true;
}

/* A wake-up or a period: work, then either stay awake or sleep armed. */
static void io_round(struct spn_producer *p)
{
	if (io_pump(p))
		io_tick_arm(p);
	else
		io_go_idle(p);
}

static void io_on_tick(struct ipc_loop *loop, void *arg)
{
	struct spn_producer *p = arg;

	(void)loop;
	p->tick_armed = false;
	p->tick_timer = 0;
	if (!p->quitting)
		io_round(p);
}

void _spn_io_on_kick(struct ipc_loop *loop, void *arg, uint64_t u64)
{
	struct spn_producer *p = arg;

	(void)loop;
	(void)u64;
	if (!p->quitting && !p->tick_armed)
		io_round(p);
}

/* Sleeps armed (see producer.c): the first app thread with work wakes us. */
static void io_go_idle(struct spn_producer *p)
{
	if (p->tick_armed || p->quitting)
		return;
	atomic_store_explicit(&p->armed, 1, memory_order_relaxed);
	/* seq_cst fence: the store above before the loads in io_has_work;
	 * pairs with the fence in _spn_prod_kick. */
	atomic_thread_fence(memory_order_seq_cst);
	if (!io_has_work(p))
		return;
	/* Work slipped in: take the arm back, unless an app thread already
	 * did (its wake-up post is then on the way). */
	if (atomic_exchange_explicit(&p->armed, 0, memory_order_seq_cst))
		io_tick_arm(p);
}

/* ---- Settling flushes and stops -------------------------------------------------- */

static void io_on_settle(struct ipc_loop *loop, void *arg);

static void io_settle_drop(struct spn_producer *p)
{
	io_cancel(p, &p->settle_timer);
	p->settle_armed = false;
	while (p->settle) {
		struct spn_settle *j = p->settle;

		p->settle = j->next;
		free(j);
	}
}

/* A settled stop: tell the service, free the slot. */
static void io_stop_finish(struct spn_producer *p, const struct spn_settle *j)
{
	struct spn_ds_inst *in = &j->ds->inst[j->inst];

	/* Relaxed: only this thread stores serial. */
	if (atomic_load_explicit(&in->serial, memory_order_relaxed) != j->serial ||
	    in->state != SPN_INST_SETTLING)
		return;
	if (j->ds->desc.will_notify_on_stop) {
		Perfetto__Protos__NotifyDataSourceStoppedRequest r =
			PERFETTO__PROTOS__NOTIFY_DATA_SOURCE_STOPPED_REQUEST__INIT;

		r.has_data_source_id = 1;
		r.data_source_id = in->id;
		io_send(p, "NotifyDataSourceStopped", &r.base);
		/* A loss during the send freed every slot already. */
		if (atomic_load_explicit(&in->serial, memory_order_relaxed) != j->serial)
			return;
	}
	io_inst_free(p, in);
}

/* One round (see the top). */
static void io_settle_round(struct spn_producer *p)
{
	struct spn_settle *done = NULL, **tail = &done, **pp = &p->settle;
	struct spn_sdk_ctx *ctx = p->ctx;
	uint64_t flush_id = 0, nflush = 0;
	int busy = 0;

	if (p->st == SPN_CONN_UP && ctx && ctx->ready) {
		busy = smb_arbiter_reclaim(&ctx->arb);
		io_commit(p, 0);
		if (!p->settle)
			return; /* the connection went away meanwhile */
	}
	while (*pp) {
		struct spn_settle *j = *pp;

		if (busy == 0 || ++j->rounds >= SPN_SETTLE_ROUNDS) {
			*pp = j->next;
			j->next = NULL;
			*tail = j;
			tail = &j->next;
			if (!j->is_stop) {
				flush_id = j->flush_id > flush_id ? j->flush_id : flush_id;
				nflush++;
			}
		} else {
			pp = &j->next;
		}
	}
	if (flush_id && p->st == SPN_CONN_UP) {
		io_commit(p, flush_id);
		atomic_fetch_add_explicit(&p->n.flushes_acked, nflush, memory_order_relaxed);
	}
	while (done) {
		struct spn_settle *j = done;

		done = j->next;
		if (j->is_stop)
			io_stop_finish(p, j);
		free(j);
	}
	if (p->settle && !p->settle_armed && !p->quitting &&
	    ipc_loop_timer_add(p->loop, p->opts.commit_period_ms, io_on_settle, p,
			       &p->settle_timer) == 0)
		p->settle_armed = true;
}

static void io_on_settle(struct ipc_loop *loop, void *arg)
{
	struct spn_producer *p = arg;

	(void)loop;
	p->settle_armed = false;
	p->settle_timer = 0;
	if (!p->quitting)
		io_settle_round(p);
}

/* Queues a job; the first round runs now unless one is already due. */
static void io_settle_add(struct spn_producer *p, struct spn_settle *job)
{
	struct spn_settle **pp = &p->settle;

	while (*pp)
		pp = &(*pp)->next;
	*pp = job;
	if (!p->settle_armed)
		io_settle_round(p);
}

/* ---- Instances ------------------------------------------------------------------ */

/* Runs a setup/start callback with the instance's config. */
static void io_call_cfg(struct spn_ds *ds, struct spn_ds_inst *in, const SpnDsConfig *cfg,
			void (*fn)(struct spn_ds *, const struct spn_ds_config *, void *))
{
	struct spn_ds_config c;
	uint8_t small[512], *raw = small;
	size_t n = 0;

	if (!fn)
		return;
	memset(&c, 0, sizeof(c));
	c.instance = in->idx;
	c.instance_id = in->id;
	c.target_buffer = in->target_buffer;
	c.stop_timeout_ms = in->stop_timeout_ms;
	c.name = ds->name;
	c.legacy_config = "";
	if (cfg) {
		n = protobuf_c_message_get_packed_size(&cfg->base);
		if (n > sizeof(small))
			raw = malloc(n);
		if (raw)
			protobuf_c_message_pack(&cfg->base, raw);
		else
			n = 0;
		c.tracing_session_id = cfg->has_tracing_session_id ? cfg->tracing_session_id : 0;
		c.trace_duration_ms = cfg->has_trace_duration_ms ? cfg->trace_duration_ms : 0;
		if (cfg->legacy_config)
			c.legacy_config = cfg->legacy_config;
		if (cfg->has_track_event_config) {
			c.track_event_config = cfg->track_event_config.data;
			c.track_event_config_len = cfg->track_event_config.len;
		}
	}
	c.raw = raw;
	c.raw_len = n;
	fn(ds, &c, ds->cb.user);
	if (raw != small)
		free(raw);
}

/* The data source a setup for `name` goes to: the first registration of
 * that name with a free slot. */
static struct spn_ds_inst *io_free_slot(struct spn_producer *p, const char *name,
					bool *known)
{
	struct spn_ds *ds;

	*known = false;
	for (uint32_t k = 0; (ds = io_ds_at(p, k)); k++) {
		if (strcmp(ds->name, name) != 0)
			continue;
		*known = true;
		for (uint32_t i = 0; i < SPN_DS_MAX_INSTANCES; i++)
			if (ds->inst[i].state == SPN_INST_FREE)
				return &ds->inst[i];
	}
	return NULL;
}

static struct spn_ds_inst *io_cmd_setup(struct spn_producer *p, uint64_t id,
					const SpnDsConfig *cfg)
{
	struct spn_ds_inst *in;
	bool known;

	if (!id || !cfg || !cfg->name) {
		spn_log_warn(SPN_TAG, "setup_data_source without id or config name");
		return NULL;
	}
	if (io_find_inst(p, id))
		return NULL; /* duplicate */
	in = io_free_slot(p, cfg->name, &known);
	if (!in) {
		spn_log_warn(SPN_TAG, "setup_data_source for %s data source \"%s\" ignored",
			     known ? "a full" : "an unknown", cfg->name);
		return NULL;
	}
	in->id = id;
	in->stop_timeout_ms = cfg->has_stop_timeout_ms && cfg->stop_timeout_ms ?
				      cfg->stop_timeout_ms : SPN_DEFAULT_STOP_TIMEOUT_MS;
	pthread_mutex_lock(&p->lock);
	in->state = SPN_INST_SETUP;
	in->stop_done = false;
	in->target_buffer = cfg->has_target_buffer ? cfg->target_buffer : 0;
	/* Release: the slot's fields before its serial (pairs with the
	 * acquire load in spn_ds_tls). */
	atomic_store_explicit(&in->serial, ++p->next_serial, memory_order_release);
	pthread_mutex_unlock(&p->lock);
	if (!p->ctx || !p->ctx->ready)
		spn_log_warn(SPN_TAG, "data source \"%s\" set up without an SMB: it "
				      "cannot write", cfg->name);
	io_call_cfg(in->ds, in, cfg, in->ds->cb.on_setup);
	return in;
}

static void io_cmd_start(struct spn_producer *p, uint64_t id, const SpnDsConfig *cfg)
{
	struct spn_ds_inst *in = io_find_inst(p, id);
	struct spn_ds *ds;

	if (!in)
		in = io_cmd_setup(p, id, cfg); /* a service that skips setup */
	if (!in || in->state != SPN_INST_SETUP)
		return;
	ds = in->ds;
	io_inst_state(p, in, SPN_INST_STARTED);
	/* Release: with the serial's release, the slot is set up before a
	 * thread sees the bit (it re-checks with an acquire load). */
	atomic_fetch_or_explicit(&ds->hot.enabled, 1u << in->idx, memory_order_release);
	atomic_fetch_add_explicit(&p->n.instances_started, 1, memory_order_relaxed);
	io_call_cfg(ds, in, cfg, ds->cb.on_start);
	if (ds->desc.will_notify_on_start && in->state == SPN_INST_STARTED) {
		Perfetto__Protos__NotifyDataSourceStartedRequest r =
			PERFETTO__PROTOS__NOTIFY_DATA_SOURCE_STARTED_REQUEST__INIT;

		r.has_data_source_id = 1;
		r.data_source_id = id;
		io_send(p, "NotifyDataSourceStarted", &r.base);
	}
}

static void io_on_stop_timeout(struct ipc_loop *loop, void *arg)
{
	struct spn_ds_inst *in = arg;
	struct spn_producer *p = in->ds->p;

	(void)loop;
	in->stop_timer = 0;
	if (in->state != SPN_INST_STOPPING || p->quitting)
		return;
	spn_log_warn(SPN_TAG, "data source \"%s\" did not finish stopping in %u ms",
		     in->ds->name, in->stop_timeout_ms);
	io_stop_complete(p, in);
}

/* The stop callback finished: commit the writers' data, then notify. */
static void io_stop_complete(struct spn_producer *p, struct spn_ds_inst *in)
{
	struct spn_settle *j;

	if (in->state != SPN_INST_STOPPING)
		return;
	io_cancel(p, &in->stop_timer);
	io_inst_state(p, in, SPN_INST_SETTLING);
	j = calloc(1, sizeof(*j));
	if (!j) {
		/* Cannot wait for the data: notify now. */
		struct spn_settle now = {
			.is_stop = true, .ds = in->ds, .inst = in->idx,
			.serial = atomic_load_explicit(&in->serial, memory_order_relaxed),
		};

		io_stop_finish(p, &now);
		return;
	}
	j->is_stop = true;
	j->ds = in->ds;
	j->inst = in->idx;
	/* Relaxed: only this thread stores serial. */
	j->serial = atomic_load_explicit(&in->serial, memory_order_relaxed);
	io_settle_add(p, j);
}

/*
 * Stops an instance: clears its enabled bit and runs on_stop. With
 * `service` (a stop_data_source command) the stop then completes now or
 * when the data source says so; otherwise (connection lost, destroy) the
 * caller frees the slot and the completion is ignored.
 */
static void io_stop_inst(struct spn_producer *p, struct spn_ds_inst *in, bool service)
{
	struct spn_ds *ds = in->ds;
	struct spn_ds_stop stop;
	bool deferred = false;

	if (in->state != SPN_INST_SETUP && in->state != SPN_INST_STARTED)
		return;
	/* Release: the stop is ordered after what the I/O thread did for
	 * the instance; threads read the bit relaxed (a hint). */
	atomic_fetch_and_explicit(&ds->hot.enabled, ~(1u << in->idx), memory_order_release);
	io_inst_state(p, in, SPN_INST_STOPPING);
	stop.ds = ds;
	stop.instance = in->idx;
	stop.serial = atomic_load_explicit(&in->serial, memory_order_relaxed);
	if (ds->cb.on_stop)
		deferred = ds->cb.on_stop(ds, &stop, ds->cb.user);
	if (!service || p->st != SPN_CONN_UP ||
	    atomic_load_explicit(&in->serial, memory_order_relaxed) != stop.serial)
		return;
	if (!deferred) {
		io_stop_complete(p, in);
		return;
	}
	if (ipc_loop_timer_add(p->loop, in->stop_timeout_ms, io_on_stop_timeout, in,
			       &in->stop_timer) != 0)
		in->stop_timer = 0;
	/* It may have called spn_ds_stop_done() before returning true. */
	io_stop_done_scan(p);
}

/* Connection gone or destroy: every instance stops, every slot is freed. */
static void io_stop_all(struct spn_producer *p)
{
	struct spn_ds *ds;

	for (uint32_t k = 0; (ds = io_ds_at(p, k)); k++) {
		for (uint32_t i = 0; i < SPN_DS_MAX_INSTANCES; i++) {
			struct spn_ds_inst *in = &ds->inst[i];

			if (in->state == SPN_INST_FREE)
				continue;
			io_stop_inst(p, in, false);
			io_inst_free(p, in);
		}
		ds->reg_gen = 0;
	}
}

static void io_cmd_flush(struct spn_producer *p,
			 const Perfetto__Protos__GetAsyncCommandResponse__Flush *f)
{
	struct spn_settle *j;

	for (size_t k = 0; k < f->n_data_source_ids; k++) {
		struct spn_ds_inst *in = io_find_inst(p, f->data_source_ids[k]);

		if (in && in->ds->cb.on_flush)
			in->ds->cb.on_flush(in->ds, in->idx, f->request_id, in->ds->cb.user);
		if (p->st != SPN_CONN_UP)
			return;
	}
	if (!f->has_request_id || !f->request_id)
		return;
	j = calloc(1, sizeof(*j));
	if (!j) {
		io_commit(p, f->request_id); /* ack what we have */
		return;
	}
	j->flush_id = f->request_id;
	io_settle_add(p, j);
}

static void io_cmd_clear(struct spn_producer *p,
			 const Perfetto__Protos__GetAsyncCommandResponse__ClearIncrementalState *c)
{
	for (size_t k = 0; k < c->n_data_source_ids; k++) {
		struct spn_ds_inst *in = io_find_inst(p, c->data_source_ids[k]);

		if (!in)
			continue;
		/* Relaxed: see struct spn_ds_inst. */
		atomic_fetch_add_explicit(&in->clear_gen, 1, memory_order_relaxed);
		if (in->ds->cb.on_clear_incremental_state)
			in->ds->cb.on_clear_incremental_state(in->ds, in->idx, in->ds->cb.user);
	}
}

static void io_cmd_setup_tracing(struct spn_producer *p,
				 const Perfetto__Protos__GetAsyncCommandResponse__SetupTracing *st,
				 int fd)
{
	uint32_t page = st->has_shared_buffer_page_size_kb ?
				st->shared_buffer_page_size_kb * 1024u : SPN_SMB_DEFAULT_PAGE_SIZE;
	struct spn_sdk_ctx *ctx;
	int err;

	if (p->ctx) {
		/* Ours was adopted (no fd), or a second offer. */
		if (fd >= 0) {
			spn_log_warn(SPN_TAG, "setup_tracing: already have an SMB; fd ignored");
			close(fd);
		}
		return;
	}
	if (fd < 0) {
		spn_log_error(SPN_TAG, "setup_tracing without an SMB fd: cannot trace");
		return;
	}
	ctx = io_ctx_new(p);
	if (!ctx) {
		close(fd);
		return;
	}
	err = smb_shm_attach(&ctx->shm, fd, page, SMB_SHM_FROM_SERVICE);
	if (err) {
		spn_log_error(SPN_TAG, "cannot map the service's SMB: %s", ctx->shm.err);
		close(fd);
		_spn_ctx_unref(ctx);
		return;
	}
	err = io_ctx_ready(p, ctx);
	if (err) {
		spn_log_error(SPN_TAG, "SMB set-up failed: %s", strerror(-err));
		_spn_ctx_unref(ctx);
		return;
	}
	io_ctx_publish(p, ctx);
}

/* One reply of the GetAsyncCommand stream: one command. */
static void io_on_cmd(void *arg, struct ipc_client_reply *r)
{
	struct spn_producer *p = arg;
	const SpnCmd *cmd = (const SpnCmd *)r->msg;

	if (p->st == SPN_CONN_DOWN)
		return;
	if (r->status < 0) {
		io_lost(p, r->status);
		return;
	}
	switch (cmd->cmd_case) {
	case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_TRACING:
		io_cmd_setup_tracing(p, cmd->setup_tracing, ipc_client_reply_take_fd(r));
		break;
	case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_DATA_SOURCE:
		io_cmd_setup(p, cmd->setup_data_source->new_instance_id,
			     cmd->setup_data_source->config);
		break;
	case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE:
		io_cmd_start(p, cmd->start_data_source->new_instance_id,
			     cmd->start_data_source->config);
		break;
	case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_STOP_DATA_SOURCE: {
		struct spn_ds_inst *in = io_find_inst(p, cmd->stop_data_source->instance_id);

		if (in)
			io_stop_inst(p, in, true);
		break;
	}
	case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_FLUSH:
		io_cmd_flush(p, cmd->flush);
		break;
	case PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_CLEAR_INCREMENTAL_STATE:
		io_cmd_clear(p, cmd->clear_incremental_state);
		break;
	default:
		spn_log_debug(SPN_TAG, "unknown async command %d ignored", (int)cmd->cmd_case);
		break;
	}
	if (!r->has_more && p->st != SPN_CONN_DOWN) {
		spn_log_warn(SPN_TAG, "the service ended the command stream");
		io_lost(p, -EPROTO);
	}
}

/* ---- Connection -------------------------------------------------------------------- */

static void io_on_registered(void *arg, struct ipc_client_reply *r)
{
	struct spn_ds *ds = arg;

	if (r->status < 0 && r->status != -ECONNRESET)
		spn_log_warn(SPN_TAG, "RegisterDataSource \"%s\": %s", ds->name,
			     strerror(-r->status));
}

static void io_register(struct spn_producer *p, struct spn_ds *ds)
{
	Perfetto__Protos__RegisterDataSourceRequest req =
		PERFETTO__PROTOS__REGISTER_DATA_SOURCE_REQUEST__INIT;
	Perfetto__Protos__DataSourceDescriptor d =
		PERFETTO__PROTOS__DATA_SOURCE_DESCRIPTOR__INIT;
	int err;

	d.name = ds->name;
	d.has_will_notify_on_start = d.has_will_notify_on_stop = 1;
	d.will_notify_on_start = ds->desc.will_notify_on_start;
	d.will_notify_on_stop = ds->desc.will_notify_on_stop;
	d.has_handles_incremental_state_clear = 1;
	d.handles_incremental_state_clear = ds->desc.handles_incremental_state_clear;
	if (ds->desc.no_flush)
		d.has_no_flush = d.no_flush = 1; /* newer field: only when set */
	if (ds->desc.track_event_descriptor_len) {
		d.has_track_event_descriptor = 1;
		d.track_event_descriptor.data = ds->ted;
		d.track_event_descriptor.len = ds->desc.track_event_descriptor_len;
	}
	req.data_source_descriptor = &d;
	ds->reg_gen = p->conn_gen;
	err = ipc_client_invoke(p->port, "RegisterDataSource", &req.base, -1, 0,
				io_on_registered, ds, NULL);
	if (err)
		spn_log_warn(SPN_TAG, "RegisterDataSource \"%s\" not sent: %s", ds->name,
			     strerror(-err));
}

/* Registers every data source not yet registered on this connection. */
static void io_register_all(struct spn_producer *p)
{
	struct spn_ds *ds;

	for (uint32_t k = 0; p->st == SPN_CONN_UP && (ds = io_ds_at(p, k)); k++)
		if (ds->reg_gen != p->conn_gen)
			io_register(p, ds);
}

static void io_on_init(void *arg, struct ipc_client_reply *r)
{
	struct spn_producer *p = arg;
	const Perfetto__Protos__InitializeConnectionResponse *resp = (const void *)r->msg;

	if (p->st != SPN_CONN_CONNECTING)
		return;
	if (r->status < 0) {
		if (r->status != -ECONNRESET)
			spn_log_warn(SPN_TAG, "InitializeConnection refused by %s", p->socket);
		io_lost(p, r->status);
		return;
	}
	if (resp->has_use_shmem_emulation && resp->use_shmem_emulation) {
		spn_log_error(SPN_TAG, "the service asks for SMB emulation, which a Unix "
				       "socket producer does not do");
		io_lost(p, -EPROTO);
		return;
	}
	p->direct_patching = resp->has_direct_smb_patching_supported &&
			     resp->direct_smb_patching_supported;
	if (p->ctx) { /* our startup SMB */
		struct spn_sdk_ctx *ctx = p->ctx;

		if (resp->has_using_shmem_provided_by_producer &&
		    resp->using_shmem_provided_by_producer && io_ctx_ready(p, ctx) == 0) {
			io_ctx_publish(p, ctx);
		} else {
			spn_log_info(SPN_TAG, "the service did not adopt our SMB; using its own");
			io_drop_ctx(p);
		}
	}
	p->st = SPN_CONN_UP;
	p->backoff_ms = 0;
	atomic_fetch_add_explicit(&p->n.connects, 1, memory_order_relaxed);
	spn_log_info(SPN_TAG, "connected to %s as \"%s\"", p->socket, p->name);
	io_register_all(p);
}

static void io_on_bind(void *arg, struct ipc_proxy *proxy, int status)
{
	struct spn_producer *p = arg;
	Perfetto__Protos__InitializeConnectionRequest init =
		PERFETTO__PROTOS__INITIALIZE_CONNECTION_REQUEST__INIT;
	Perfetto__Protos__GetAsyncCommandRequest cmd =
		PERFETTO__PROTOS__GET_ASYNC_COMMAND_REQUEST__INIT;
	int err, fd = p->ctx ? p->ctx->shm.fd : -1;

	if (p->st != SPN_CONN_CONNECTING)
		return;
	if (status < 0) {
		io_lost(p, status);
		return;
	}
	p->port = proxy;
	init.producer_name = p->name;
	if (p->ctx) {
		init.has_shared_memory_size_hint_bytes = 1;
		init.shared_memory_size_hint_bytes = (uint32_t)p->ctx->shm.smb.size;
		init.has_shared_memory_page_size_hint_bytes = 1;
		init.shared_memory_page_size_hint_bytes = p->ctx->shm.smb.page_size;
		init.has_producer_provided_shmem = init.producer_provided_shmem = 1;
	} else {
		init.has_shared_memory_size_hint_bytes = p->opts.smb_size_hint != 0;
		init.shared_memory_size_hint_bytes = p->opts.smb_size_hint;
		init.has_shared_memory_page_size_hint_bytes = p->opts.smb_page_size_hint != 0;
		init.shared_memory_page_size_hint_bytes = p->opts.smb_page_size_hint;
	}
	init.has_smb_scraping_mode = 1;
	init.smb_scraping_mode =
		PERFETTO__PROTOS__INITIALIZE_CONNECTION_REQUEST__PRODUCER_SMBSCRAPING_MODE__SMB_SCRAPING_ENABLED;
	init.sdk_version = SPN_SDK_VERSION;
	/* Spec order: InitializeConnection, then GetAsyncCommand at once,
	 * without waiting for the reply. */
	err = ipc_client_invoke(proxy, "InitializeConnection", &init.base, fd, 0, io_on_init,
				p, NULL);
	if (!err && p->st == SPN_CONN_CONNECTING)
		err = ipc_client_invoke(proxy, "GetAsyncCommand", &cmd.base, -1, 0, io_on_cmd,
					p, NULL);
	if (err && p->st == SPN_CONN_CONNECTING) {
		spn_log_warn(SPN_TAG, "handshake: %s", strerror(-err));
		io_lost(p, err);
	}
}

static void io_on_disconnect(void *arg, struct ipc_client *cl, int reason)
{
	struct spn_producer *p = arg;

	(void)cl;
	io_lost(p, reason);
}

static void io_on_retry(struct ipc_loop *loop, void *arg);

static void io_connect(struct spn_producer *p)
{
	static const struct ipc_client_ops ops = { .on_disconnect = io_on_disconnect };
	int err;

	p->conn_gen++;
	p->st = SPN_CONN_CONNECTING;
	p->direct_patching = false;
	if (p->opts.producer_smb)
		io_make_own_smb(p);
	err = ipc_client_connect(p->loop, p->socket, &ops, p, &p->cl);
	if (err) {
		p->cl = NULL;
		io_lost(p, err);
		return;
	}
	err = ipc_client_bind(p->cl, &perfetto__protos__producer_port__descriptor, io_on_bind, p);
	if (err && p->st == SPN_CONN_CONNECTING)
		io_lost(p, err);
}

static void io_on_retry(struct ipc_loop *loop, void *arg)
{
	struct spn_producer *p = arg;

	(void)loop;
	p->retry_timer = 0;
	if (!p->quitting && p->st == SPN_CONN_DOWN)
		io_connect(p);
}

/* Perfetto's back-off: + step per failed attempt while below the limit,
 * then the maximum. */
static void io_schedule_retry(struct spn_producer *p)
{
	if (p->backoff_ms < p->opts.reconnect_step_limit_ms)
		p->backoff_ms += p->opts.reconnect_step_ms;
	else
		p->backoff_ms = p->opts.reconnect_max_ms;
	if (ipc_loop_timer_add(p->loop, p->backoff_ms, io_on_retry, p, &p->retry_timer) != 0) {
		spn_log_error(SPN_TAG, "cannot schedule a reconnect");
		p->retry_timer = 0;
	}
}

/*
 * The connection failed or went away (or destroy): stop every instance,
 * drop the SMB (writers still holding it keep it mapped), close the
 * client, and schedule a retry. Idempotent per connection.
 */
static void io_lost(struct spn_producer *p, int reason)
{
	struct ipc_client *cl = p->cl;
	bool was_up = p->st == SPN_CONN_UP;

	if (p->st == SPN_CONN_DOWN)
		return;
	p->st = SPN_CONN_DOWN;
	p->cl = NULL;
	p->port = NULL;
	io_settle_drop(p);
	io_stop_all(p);
	io_drop_ctx(p);
	if (cl)
		ipc_client_destroy(cl);
	if (was_up) {
		atomic_fetch_add_explicit(&p->n.disconnects, 1, memory_order_relaxed);
		if (!p->quitting)
			spn_log_info(SPN_TAG, "lost %s (%s); reconnecting", p->socket,
				     reason ? strerror(-reason) : "closed by the service");
	} else {
		atomic_fetch_add_explicit(&p->n.connect_failures, 1, memory_order_relaxed);
		spn_log_debug(SPN_TAG, "cannot connect to %s: %s", p->socket,
			      reason ? strerror(-reason) : "closed");
	}
	if (!p->quitting)
		io_schedule_retry(p);
}

/* ---- Thread ------------------------------------------------------------------------ */

void _spn_io_start(struct ipc_loop *loop, void *arg, uint64_t u64)
{
	struct spn_producer *p = arg;

	(void)loop;
	(void)u64;
	if (p->quitting)
		return;
	io_connect(p);
	io_go_idle(p);
}

void _spn_io_quit(struct ipc_loop *loop, void *arg, uint64_t u64)
{
	struct spn_producer *p = arg;

	(void)u64;
	p->quitting = true;
	/* Disarmed for good: no app thread posts from now on (producer.c). */
	atomic_exchange_explicit(&p->armed, 0, memory_order_seq_cst);
	io_cancel(p, &p->tick_timer);
	p->tick_armed = false;
	io_cancel(p, &p->retry_timer);
	io_lost(p, -ECANCELED);
	ipc_loop_stop(loop);
}

void *_spn_io_main(void *arg)
{
	struct spn_producer *p = arg;
	struct timespec nap = { 0, 10 * 1000 * 1000 };

	pthread_setname_np(pthread_self(), "spn-producer");
	while (!p->quitting) {
		int err = ipc_loop_run(p->loop);

		if (err && !p->quitting) {
			spn_log_error(SPN_TAG, "I/O loop: %s", strerror(-err));
			nanosleep(&nap, NULL);
		}
	}
	/* Acquire: pairs with each waker's release decrement; a waker that
	 * comes later finds armed == 0 and never posts. */
	while (atomic_load_explicit(&p->kicking, memory_order_acquire))
		sched_yield();
	ipc_loop_destroy(p->loop);
	return NULL;
}
