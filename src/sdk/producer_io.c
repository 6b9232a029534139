// SPDX-License-Identifier: Apache-2.0
// The producer SDK's I/O thread, its commit side: the thread and its loop, waking and the commit period, draining the arbiter into CommitData, settling flushes and stops, and the helpers producer_conn.c shares (instance slots, SMB contexts).
//
// Everything here and in producer_conn.c runs on the I/O thread (the
// ipc_loop's thread); it is the only writer of connection and instance
// state. Callbacks from the IPC client can run inside our own calls (a
// send that fails closes the connection and runs _spn_io_lost() before
// ipc_client_invoke returns), so after every invoke the code re-checks
// p->st and p->ctx before touching anything the loss may have freed.
//
// Commits. _spn_io_commit() drains the arbiter into CommitDataRequests: it
// announces new writer ids (RegisterTraceWriter) before the request that
// may carry their first chunk, and retires ids (UnregisterTraceWriter)
// after the one carrying their last; all three drop the reply. The I/O
// thread commits when an app thread wakes it, then every commit period
// while there is more (see producer.c for the wake-up), at once when a
// writer finds the SMB short meanwhile (the arbiter's hurry hook: a thread
// writing more than an SMB per period would otherwise fill it and drop),
// and at once for flushes and stops.
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
/* How long destroy waits for the last requests to reach the socket. */
#define SPN_QUIT_DRAIN_MS 1000u

__thread struct spn_producer *_spn_io_self;

static void io_go_idle(struct spn_producer *p);

/* ---- Small helpers ------------------------------------------------------- */

void _spn_io_cancel(struct spn_producer *p, uint64_t *timer)
{
	if (*timer)
		ipc_loop_timer_cancel(p->loop, *timer);
	*timer = 0;
}

/* Invokes a drop-reply method. Returns true while the connection is still
 * up afterwards (a failed send may have closed it). */
bool _spn_io_send(struct spn_producer *p, const char *method, const ProtobufCMessage *m)
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
struct spn_ds *_spn_io_ds_at(struct spn_producer *p, uint32_t i)
{
	struct spn_ds *ds = NULL;

	pthread_mutex_lock(&p->lock);
	if (i < p->nds)
		ds = p->ds[i];
	pthread_mutex_unlock(&p->lock);
	return ds;
}

/* Finds the slot holding service instance `id`. */
struct spn_ds_inst *_spn_io_find_inst(struct spn_producer *p, uint64_t id)
{
	struct spn_ds *ds;

	for (uint32_t k = 0; id && (ds = _spn_io_ds_at(p, k)); k++)
		for (uint32_t i = 0; i < SPN_DS_MAX_INSTANCES; i++)
			if (ds->inst[i].state != SPN_INST_FREE && ds->inst[i].id == id)
				return &ds->inst[i];
	return NULL;
}

/* Sets instance state under the lock (app threads read it there). */
void _spn_io_inst_state(struct spn_producer *p, struct spn_ds_inst *in,
			  enum spn_inst_state st)
{
	pthread_mutex_lock(&p->lock);
	in->state = st;
	pthread_mutex_unlock(&p->lock);
}

/* Frees a slot: its serial goes to 0, so threads' writers for it become
 * stale and are retired at their next lookup. */
void _spn_io_inst_free(struct spn_producer *p, struct spn_ds_inst *in)
{
	_spn_io_cancel(p, &in->stop_timer);
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

struct spn_sdk_ctx *_spn_io_ctx_new(struct spn_producer *p)
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
int _spn_io_ctx_ready(struct spn_producer *p, struct spn_sdk_ctx *ctx)
{
	struct smb_arbiter_opts o = {
		.direct_patching = p->direct_patching,
		.stall_max_us = p->opts.smb_stall_max_us,
		.wake = _spn_prod_arb_wake,
		.hurry = _spn_prod_arb_hurry,
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
void _spn_io_ctx_publish(struct spn_producer *p, struct spn_sdk_ctx *ctx)
{
	pthread_mutex_lock(&p->lock);
	ctx->live = true;
	p->ctx = ctx;
	pthread_mutex_unlock(&p->lock);
}

/* Drops the connection's SMB: no new writers; the mapping goes away when
 * the last writer using it is retired. */
void _spn_io_drop_ctx(struct spn_producer *p)
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
int _spn_io_make_own_smb(struct spn_producer *p)
{
	struct spn_sdk_ctx *ctx = _spn_io_ctx_new(p);
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
		return _spn_io_send(p, "RegisterTraceWriter", &r.base);
	} else {
		Perfetto__Protos__UnregisterTraceWriterRequest r =
			PERFETTO__PROTOS__UNREGISTER_TRACE_WRITER_REQUEST__INIT;

		r.has_trace_writer_id = 1;
		r.trace_writer_id = ev->writer_id;
		return _spn_io_send(p, "UnregisterTraceWriter", &r.base);
	}
}

static bool io_send_commit(struct spn_producer *p,
			   const Perfetto__Protos__CommitDataRequest *req)
{
	atomic_fetch_add_explicit(&p->n.commits, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&p->n.chunks_committed, req->n_chunks_to_move,
				  memory_order_relaxed);
	return _spn_io_send(p, "CommitData", &req->base);
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
int _spn_io_commit(struct spn_producer *p, uint64_t flush_id)
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

/* Completes the stops app threads finished with spn_ds_stop_done(). */
void _spn_io_stop_done_scan(struct spn_producer *p)
{
	struct spn_ds *ds;

	for (uint32_t k = 0; (ds = _spn_io_ds_at(p, k)); k++) {
		for (uint32_t i = 0; i < SPN_DS_MAX_INSTANCES; i++) {
			struct spn_ds_inst *in = &ds->inst[i];
			bool done;

			pthread_mutex_lock(&p->lock);
			done = in->state == SPN_INST_STOPPING && in->stop_done;
			pthread_mutex_unlock(&p->lock);
			if (done)
				_spn_io_stop_complete(p, in);
		}
	}
}

/* Handles the work bits and commits. Returns true if anything was done. */
static bool io_pump(struct spn_producer *p)
{
	/* Acquire: pairs with the release fetch_or of the setter, so what
	 * it did before (list append, stop_done) is visible. */
	uint32_t w = atomic_exchange_explicit(&p->work, 0, memory_order_acquire);

	/* Updates first: a data source not yet registered on this
	 * connection then goes out with its new descriptor. */
	if (w & SPN_WORK_UPDATE)
		_spn_io_updates(p);
	if ((w & SPN_WORK_REGISTER) && p->st == SPN_CONN_UP)
		_spn_io_register_all(p);
	if (w & SPN_WORK_STOP_DONE)
		_spn_io_stop_done_scan(p);
	if (w & SPN_WORK_UNREG)
		_spn_io_unreg_scan(p);
	if (w & SPN_WORK_TRIGGERS)
		_spn_io_triggers(p);
	return _spn_io_commit(p, 0) > 0 || w != 0;
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

void _spn_io_on_hurry(struct ipc_loop *loop, void *arg, uint64_t u64)
{
	struct spn_producer *p = arg;

	(void)loop;
	(void)u64;
	if (p->quitting)
		return; /* hurry stays 1: no more posts */
	/* Relaxed: cleared before the commit, so that a shortage found
	 * while it runs posts again; the post itself orders what matters. */
	atomic_store_explicit(&p->hurry, 0, memory_order_relaxed);
	if (p->tick_armed)
		io_pump(p); /* awake: commit now, the period timer stays */
	else
		io_round(p);
}

/* Sleeps armed (see producer.c): the first app thread with work wakes us. */
static void io_go_idle(struct spn_producer *p)
{
	if (p->tick_armed || p->quitting)
		return;
	atomic_store_explicit(&p->armed, 1, memory_order_relaxed);
	/* seq_cst fence: the store above before the loads in io_has_work;
	 * pairs with an app thread's seq_cst push or fence and its seq_cst
	 * load of armed (producer.c, spn_prod_kick_ordered). */
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

void _spn_io_settle_drop(struct spn_producer *p)
{
	_spn_io_cancel(p, &p->settle_timer);
	p->settle_armed = false;
	while (p->settle) {
		struct spn_settle *j = p->settle;

		p->settle = j->next;
		free(j);
	}
}

/* A settled stop: tell the service, free the slot. */
void _spn_io_stop_finish(struct spn_producer *p, const struct spn_settle *j)
{
	struct spn_ds_inst *in = &j->ds->inst[j->inst];

	/* Relaxed: only this thread stores serial. */
	if (atomic_load_explicit(&in->serial, memory_order_relaxed) != j->serial ||
	    in->state != SPN_INST_SETTLING)
		return;
	if (in->notify_stop) {
		Perfetto__Protos__NotifyDataSourceStoppedRequest r =
			PERFETTO__PROTOS__NOTIFY_DATA_SOURCE_STOPPED_REQUEST__INIT;

		r.has_data_source_id = 1;
		r.data_source_id = in->id;
		_spn_io_send(p, "NotifyDataSourceStopped", &r.base);
		/* A loss during the send freed every slot already. */
		if (atomic_load_explicit(&in->serial, memory_order_relaxed) != j->serial)
			return;
	}
	_spn_io_inst_free(p, in);
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
		_spn_io_commit(p, 0);
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
			if (j->kind == SPN_SETTLE_FLUSH) {
				flush_id = j->flush_id > flush_id ? j->flush_id : flush_id;
				nflush++;
			}
		} else {
			pp = &j->next;
		}
	}
	if (flush_id && p->st == SPN_CONN_UP) {
		_spn_io_commit(p, flush_id);
		atomic_fetch_add_explicit(&p->n.flushes_acked, nflush, memory_order_relaxed);
	}
	while (done) {
		struct spn_settle *j = done;

		done = j->next;
		if (j->kind == SPN_SETTLE_STOP)
			_spn_io_stop_finish(p, j);
		else if (j->kind == SPN_SETTLE_UNREG)
			_spn_io_unreg_finish(p, j);
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
void _spn_io_settle_add(struct spn_producer *p, struct spn_settle *job)
{
	struct spn_settle **pp = &p->settle;

	while (*pp)
		pp = &(*pp)->next;
	*pp = job;
	if (!p->settle_armed)
		io_settle_round(p);
}

/* ---- Thread ------------------------------------------------------------------------ */

void _spn_io_start(struct ipc_loop *loop, void *arg, uint64_t u64)
{
	struct spn_producer *p = arg;

	(void)loop;
	(void)u64;
	if (p->quitting)
		return;
	_spn_io_connect(p);
	io_go_idle(p);
}

/* Ends the I/O thread's work: disconnect, drop what is left, stop the
 * loop. Idempotent. */
void _spn_io_quit_done(struct spn_producer *p)
{
	if (!p->quitting || p->quit_done)
		return;
	p->quit_done = true;
	_spn_io_cancel(p, &p->quit_timer);
	_spn_io_lost(p, -ECANCELED);
	_spn_trig_free_all(p);
	ipc_loop_stop(p->loop);
}

static void io_on_quit_timeout(struct ipc_loop *loop, void *arg)
{
	struct spn_producer *p = arg;

	(void)loop;
	p->quit_timer = 0;
	spn_log_warn(SPN_TAG, "destroy: the last requests did not leave in %u ms",
		     SPN_QUIT_DRAIN_MS);
	_spn_io_quit_done(p);
}

void _spn_io_quit(struct ipc_loop *loop, void *arg, uint64_t u64)
{
	struct spn_producer *p = arg;

	(void)u64;
	p->quitting = true;
	/* Disarmed for good: no app thread posts from now on (producer.c). */
	atomic_exchange_explicit(&p->armed, 0, memory_order_seq_cst);
	atomic_exchange_explicit(&p->hurry, 1, memory_order_seq_cst);
	_spn_io_cancel(p, &p->tick_timer);
	p->tick_armed = false;
	_spn_io_cancel(p, &p->retry_timer);
	/* Triggers still queued go out when connected, and so does every
	 * request already queued on the connection (sends leave at the end
	 * of the loop's turn): it closes once its queue is on the wire
	 * (_spn_io_lost then finishes), or after SPN_QUIT_DRAIN_MS. The
	 * timer goes first: the close may happen at once. */
	_spn_io_triggers(p);
	if (p->st == SPN_CONN_UP && p->cl && ipc_client_conn(p->cl) &&
	    ipc_loop_timer_add(loop, SPN_QUIT_DRAIN_MS, io_on_quit_timeout, p,
			       &p->quit_timer) == 0) {
		ipc_conn_close_after_flush(ipc_client_conn(p->cl));
		return;
	}
	_spn_io_quit_done(p);
}

void *_spn_io_main(void *arg)
{
	struct spn_producer *p = arg;
	struct timespec nap = { 0, 10 * 1000 * 1000 };

	pthread_setname_np(pthread_self(), "spn-producer");
	_spn_io_self = p;
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
