// SPDX-License-Identifier: Apache-2.0
// The producer SDK's app-thread side: create and destroy, data source registration, stop completion, waking the I/O thread, and the thread-local writers behind spn_ds_tls() / spn_ds_writer().
//
// Waking the I/O thread. An app thread wakes it only when the I/O thread
// sleeps with nothing scheduled and something must be committed (the
// arbiter calls us when a push finds the commit queue empty, or when the
// SMB is full) or done (a registration, a deferred stop completion). The
// I/O thread publishes "asleep" as armed = 1; the first app thread that
// exchanges it to 0 posts one wake-up to the loop (a ring entry and one
// eventfd write); every other thread sees 0 and returns after one load.
// Once awake, the I/O thread drains every commit period (1 ms by default)
// with a timer and re-arms only after a period in which nothing was
// queued. So at most one app thread pays one eventfd write per idle-to-
// busy transition of the I/O thread, and under steady load none does:
// the cost stays bounded at any event rate, while the first chunk after
// a quiet spell is committed at once rather than on a slow periodic tick
// (which would also have to be short, and so wake an idle process
// hundreds of times a second, to keep a 256 KiB SMB from filling).
//
// Arming is a store-load pattern on both sides (app: push, then load
// armed; I/O: store armed, then look at the queue and work bits), so each
// side orders its store before its load in the seq_cst total order: the
// I/O thread with a fence, an app thread with its seq_cst push CAS (or a
// fence after a work bit) and a seq_cst load of armed. Either the I/O
// thread sees the new work, or the app thread sees armed == 1 and wakes it.
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ipc/log.h"
#include "ipc/loop.h"
#include "ipc/sockname.h"
#include "sdk/producer_int.h"

#define SPN_TAG "producer"

/* Defaults (constants.md §1: Perfetto's reconnect back-off). */
#define SPN_DEFAULT_COMMIT_PERIOD_MS 1u
#define SPN_DEFAULT_RECONNECT_STEP_MS 1000u
#define SPN_DEFAULT_RECONNECT_LIMIT_MS 10000u
#define SPN_DEFAULT_RECONNECT_MAX_MS 30000u

/* ---- References ---------------------------------------------------------- */

static void spn_prod_free(struct spn_producer *p)
{
	for (uint32_t i = 0; i < p->nds; i++) {
		free(p->ds[i]->ted);
		free(p->ds[i]->upd_ted);
		free(p->ds[i]);
	}
	free(p->ds);
	_spn_trig_free_all(p); /* the I/O thread freed its queue; late pushes */
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void _spn_prod_unref(struct spn_producer *p)
{
	/* acq_rel: the freeing thread sees every other holder's last use. */
	if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
		spn_prod_free(p);
}

void _spn_ctx_unref(struct spn_sdk_ctx *ctx)
{
	struct spn_producer *p = ctx->p;

	/* acq_rel: pairs with the other droppers, so the last one sees
	 * every writer's final pushes and stores before it frees. */
	if (atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) != 1)
		return;
	if (ctx->ready) {
		/* Relaxed: a counter. */
		atomic_fetch_add_explicit(&p->n.packets_dropped_gone,
					  atomic_load_explicit(&ctx->arb.stats.packets_dropped,
							       memory_order_relaxed),
					  memory_order_relaxed);
		smb_commit_fini(&ctx->commit);
		smb_arbiter_destroy(&ctx->arb);
	}
	smb_shm_close(&ctx->shm);
	free(ctx);
	_spn_prod_unref(p);
}

/* ---- Waking the I/O thread (see the top) --------------------------------- */

/*
 * Posts fn to the I/O thread if this thread is the one whose exchange takes
 * *gate from `open` to the other value (0 or 1), so one post is on its way
 * at a time; a post that fails (ring full: the loop is far behind) opens
 * the gate again for a later try. All inside the kicking count: the I/O
 * thread closes every gate for good, then waits for kicking == 0 before it
 * destroys the loop. Returns 1 (posted), 0 (the gate was closed) or -1
 * (the post failed).
 */
static int spn_prod_post_once(struct spn_producer *p, _Atomic uint32_t *gate, uint32_t open,
			      void (*fn)(struct ipc_loop *, void *, uint64_t),
			      _Atomic uint64_t *count)
{
	int r = 0;

	/* seq_cst: ordered before the exchange, so a destroy that saw
	 * kicking == 0 after closing the gates for good is never followed by
	 * our post. Pairs with the I/O thread's acquire load of kicking. */
	atomic_fetch_add_explicit(&p->kicking, 1, memory_order_seq_cst);
	if (atomic_exchange_explicit(gate, !open, memory_order_seq_cst) == open) {
		atomic_fetch_add_explicit(count, 1, memory_order_relaxed);
		r = ipc_loop_post(p->loop, fn, p, 0) == 0 ? 1 : -1;
		if (r < 0)
			atomic_store_explicit(gate, open, memory_order_seq_cst);
	}
	/* Release: our use of p->loop is over; pairs with the acquire load
	 * of kicking before the loop is destroyed. */
	atomic_fetch_sub_explicit(&p->kicking, 1, memory_order_release);
	return r;
}

/* The kick after a seq_cst operation or fence that made the work
 * visible: the seq_cst load of armed is then ordered after it in the
 * single total order, and the fence the I/O thread puts between its store
 * of armed and its look at the work pairs with that (C11 7.17.3): either
 * it sees the work or we see armed == 1. Returns true when it posted. */
static bool spn_prod_kick_ordered(struct spn_producer *p)
{
	int r;

	/* seq_cst: see above; a plain load on x86. */
	if (!atomic_load_explicit(&p->armed, memory_order_seq_cst))
		return false;
	r = spn_prod_post_once(p, &p->armed, 1, _spn_io_on_kick, &p->n.wakeups);
	if (r < 0)
		spn_log_warn(SPN_TAG, "wake-up post failed (ring full)");
	return r > 0;
}

/* Not inlined: gcc rejects atomic_thread_fence under -fsanitize=thread
 * (-Wtsan) once it is inlined into a caller. */
__attribute__((noinline)) void _spn_prod_kick(struct spn_producer *p)
{
	/* seq_cst fence: orders our earlier store (a work bit) before the
	 * load of armed (see spn_prod_kick_ordered). */
	atomic_thread_fence(memory_order_seq_cst);
	spn_prod_kick_ordered(p);
}

void _spn_prod_arb_wake(void *p)
{
	/* The arbiter calls its wake hook right after a seq_cst CAS or
	 * fence (arbiter.h): writers pushing onto an empty queue pay no
	 * second barrier here. */
	spn_prod_kick_ordered(p);
}

void _spn_prod_arb_hurry(void *vp)
{
	struct spn_producer *p = vp;

	/* Asleep: the ordinary wake-up (after the arbiter's fence, as
	 * above) starts a round. */
	if (spn_prod_kick_ordered(p))
		return;
	/* Awake, waiting out its commit period: one hurry post at a time
	 * (the I/O thread opens the gate again when it takes the post, and
	 * closes it for good when it quits). Relaxed peek: writers that keep
	 * finding the SMB short while one is on its way pay no locked
	 * instruction. */
	if (atomic_load_explicit(&p->hurry, memory_order_relaxed))
		return;
	spn_prod_post_once(p, &p->hurry, 0, _spn_io_on_hurry, &p->n.hurries);
}

/* ---- Create / destroy ---------------------------------------------------- */

static int spn_prod_opts(struct spn_producer *p, const struct spn_producer_opts *o)
{
	char buf[108];
	const char *sock, *name;

	if (o)
		p->opts = *o;
	sock = p->opts.socket ? p->opts.socket : ipc_default_socket(true, buf, sizeof(buf));
	name = p->opts.name ? p->opts.name : program_invocation_short_name;
	if (!sock[0] || strlen(sock) >= sizeof(p->socket) || strlen(name) >= sizeof(p->name))
		return -EINVAL;
	strcpy(p->socket, sock);
	strcpy(p->name, name);
	p->opts.socket = p->socket;
	p->opts.name = p->name;
	if (!p->opts.commit_period_ms)
		p->opts.commit_period_ms = SPN_DEFAULT_COMMIT_PERIOD_MS;
	if (!p->opts.reconnect_step_ms)
		p->opts.reconnect_step_ms = SPN_DEFAULT_RECONNECT_STEP_MS;
	if (!p->opts.reconnect_step_limit_ms)
		p->opts.reconnect_step_limit_ms = SPN_DEFAULT_RECONNECT_LIMIT_MS;
	if (!p->opts.reconnect_max_ms)
		p->opts.reconnect_max_ms = SPN_DEFAULT_RECONNECT_MAX_MS;
	if (p->opts.smb_size_hint > SPN_SMB_MAX_SIZE ||
	    p->opts.smb_page_size_hint > SPN_SMB_SVC_MAX_PAGE_SIZE ||
	    p->opts.smb_page_size_hint % 4096u)
		return -EINVAL;
	return 0;
}

/* p->cond times its waits on CLOCK_MONOTONIC. Returns 0 or -errno. */
static int spn_prod_cond_init(pthread_cond_t *cond)
{
	pthread_condattr_t a;
	int err = pthread_condattr_init(&a);

	if (err)
		return -err;
	err = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	if (!err)
		err = pthread_cond_init(cond, &a);
	pthread_condattr_destroy(&a);
	return -err;
}

int spn_producer_create(const struct spn_producer_opts *opts,
			struct spn_producer **out)
{
	struct spn_producer *p = aligned_alloc(64, (sizeof(*p) + 63u) & ~(size_t)63u);
	int err;

	if (!p)
		return -ENOMEM;
	memset(p, 0, sizeof(*p));
	spn_log_init();
	err = spn_prod_opts(p, opts);
	if (err) {
		free(p);
		return err;
	}
	atomic_init(&p->refs, 1);
	p->trig_tail = &p->trig_q;
	err = spn_prod_cond_init(&p->cond);
	if (err) {
		free(p);
		return err;
	}
	pthread_mutex_init(&p->lock, NULL);
	err = ipc_loop_create(&p->loop, NULL);
	if (err)
		goto err;
	/* Queued before the thread runs the loop: its first turn connects. */
	err = ipc_loop_post(p->loop, _spn_io_start, p, 0);
	if (err)
		goto err_loop;
	err = -pthread_create(&p->thread, NULL, _spn_io_main, p);
	if (err)
		goto err_loop;
	p->thread_started = true;
	*out = p;
	return 0;
err_loop:
	p->quitting = true; /* the queued start post runs here and must not connect */
	ipc_loop_destroy(p->loop);
err:
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p);
	return err;
}

void spn_producer_destroy(struct spn_producer *p)
{
	if (!p)
		return;
	/* The I/O thread disconnects, disarms for good, waits for wake-ups
	 * in flight and destroys its loop. We count as a waker until our
	 * post has returned: ipc_loop_post writes the loop's eventfd after
	 * queueing, and the quit may already be running by then. seq_cst /
	 * release: as in _spn_prod_kick. */
	atomic_fetch_add_explicit(&p->kicking, 1, memory_order_seq_cst);
	if (ipc_loop_post_wait(p->loop, _spn_io_quit, p, 0, 10000) != 0)
		spn_log_error(SPN_TAG, "destroy: cannot reach the I/O thread");
	atomic_fetch_sub_explicit(&p->kicking, 1, memory_order_release);
	pthread_join(p->thread, NULL);
	_spn_prod_unref(p);
}

void spn_producer_stats(const struct spn_producer *cp, struct spn_producer_stats *st)
{
	struct spn_producer *p = (struct spn_producer *)cp;

	memset(st, 0, sizeof(*st));
	/* Relaxed loads: counters. */
#define SPN_LD(f) atomic_load_explicit(&p->n.f, memory_order_relaxed)
	st->connects = SPN_LD(connects);
	st->connect_failures = SPN_LD(connect_failures);
	st->disconnects = SPN_LD(disconnects);
	st->commits = SPN_LD(commits);
	st->chunks_committed = SPN_LD(chunks_committed);
	st->flushes_acked = SPN_LD(flushes_acked);
	st->instances_started = SPN_LD(instances_started);
	st->instances_stopped = SPN_LD(instances_stopped);
	st->writers_created = SPN_LD(writers_created);
	st->wakeups = SPN_LD(wakeups);
	st->hurries = SPN_LD(hurries);
	st->packets_dropped = SPN_LD(packets_dropped_gone);
	st->triggers_sent = SPN_LD(triggers_sent);
	st->triggers_dropped = SPN_LD(triggers_dropped);
#undef SPN_LD
	st->connected = st->connects > st->disconnects;
	pthread_mutex_lock(&p->lock);
	if (p->ctx && p->ctx->live) /* live implies ready */
		st->packets_dropped += atomic_load_explicit(&p->ctx->arb.stats.packets_dropped,
							    memory_order_relaxed);
	pthread_mutex_unlock(&p->lock);
}

/* ---- Data sources -------------------------------------------------------- */

int spn_data_source_register(struct spn_producer *p, const struct spn_ds_desc *desc,
			     const struct spn_ds_callbacks *cb, struct spn_ds **out)
{
	struct spn_ds *ds;
	size_t n;

	if (!p || !desc || !desc->name || !desc->name[0] || !out)
		return -EINVAL;
	n = strlen(desc->name);
	if (n > SPN_DS_NAME_MAX)
		return -EINVAL;
	ds = calloc(1, sizeof(*ds));
	if (!ds)
		return -ENOMEM;
	ds->p = p;
	memcpy(ds->name, desc->name, n + 1);
	ds->desc = *desc;
	ds->desc.name = ds->name;
	if (desc->track_event_descriptor_len) {
		ds->ted = malloc(desc->track_event_descriptor_len);
		if (!ds->ted) {
			free(ds);
			return -ENOMEM;
		}
		memcpy(ds->ted, desc->track_event_descriptor,
		       desc->track_event_descriptor_len);
	}
	ds->desc.track_event_descriptor = ds->ted;
	for (uint32_t i = 0; i < SPN_DS_MAX_INSTANCES; i++) {
		ds->inst[i].ds = ds;
		ds->inst[i].idx = i;
	}
	if (cb)
		ds->cb = *cb;
	pthread_mutex_lock(&p->lock);
	if (p->nds == p->ds_cap) {
		uint32_t cap = p->ds_cap ? p->ds_cap * 2 : 8;
		struct spn_ds **a = realloc(p->ds, cap * sizeof(*a));

		if (!a) {
			pthread_mutex_unlock(&p->lock);
			free(ds->ted);
			free(ds);
			return -ENOMEM;
		}
		p->ds = a;
		p->ds_cap = cap;
	}
	ds->desc_id = ++p->next_desc_id;
	p->ds[p->nds++] = ds;
	pthread_mutex_unlock(&p->lock);
	/* Release: the bit is seen after the list holds ds (the I/O thread
	 * takes the bits with an acquire exchange). */
	atomic_fetch_or_explicit(&p->work, SPN_WORK_REGISTER, memory_order_release);
	_spn_prod_kick(p);
	*out = ds;
	return 0;
}

const char *spn_ds_name(const struct spn_ds *ds)
{
	return ds->name;
}

void spn_ds_stop_done(struct spn_ds_stop stop)
{
	struct spn_ds *ds = stop.ds;
	struct spn_producer *p;
	struct spn_ds_inst *in;
	bool hit = false;

	if (!ds || stop.instance >= SPN_DS_MAX_INSTANCES || !stop.serial)
		return;
	p = ds->p;
	in = &ds->inst[stop.instance];
	pthread_mutex_lock(&p->lock);
	/* Relaxed: stores of serial happen under this lock. */
	if (atomic_load_explicit(&in->serial, memory_order_relaxed) == stop.serial &&
	    in->state == SPN_INST_STOPPING && !in->stop_done) {
		in->stop_done = true;
		hit = true;
	}
	pthread_mutex_unlock(&p->lock);
	if (!hit)
		return;
	/* Release: as in spn_data_source_register. */
	atomic_fetch_or_explicit(&p->work, SPN_WORK_STOP_DONE, memory_order_release);
	_spn_prod_kick(p);
}

/* ---- Thread-local writers ------------------------------------------------- */

/* One writer of this thread (allocated alone, so &pub stays put). */
struct spn_tls_entry {
	struct spn_ds *ds;		/* its data source */
	uint64_t serial;		/* the instance it was made for */
	struct spn_sdk_ctx *ctx;	/* its SMB (a reference) */
	uint32_t clear_gen;		/* inst.clear_gen last seen */
	struct spn_ds_tls pub;		/* what the caller gets */
};

/* This thread's writers, across producers: at most one per (data source,
 * slot). An entry whose instance is gone (stale) is retired only by the
 * next lookup of the same slot, or at thread exit, so a writer a caller
 * holds (the track-event layer caches them) is never freed under it by a
 * lookup of something else. */
struct spn_tls_cache {
	struct spn_tls_entry **e;	/* entries */
	uint32_t n;			/* used */
	uint32_t cap;			/* allocated */
};

/* initial-exec: one %fs-relative load on the hot path, no __tls_get_addr
 * call (libspindle is linked at start-up, or dlopened early enough for the
 * loader's static TLS surplus to hold one pointer). */
static __thread struct spn_tls_cache *spn_tls __attribute__((tls_model("initial-exec")));
static pthread_key_t spn_tls_key;
static pthread_once_t spn_tls_once = PTHREAD_ONCE_INIT;

/* Owner thread: retires one writer (its data source's per-thread state,
 * the writer, the SMB reference) and frees the entry. */
static void spn_tls_retire(struct spn_tls_entry *e)
{
	struct spn_ds *ds = e->ds;

	if (e->pub.user && ds->cb.free_tls)
		ds->cb.free_tls(e->pub.user, ds->cb.user);
	spn_tw_destroy(e->pub.tw);
	_spn_ctx_unref(e->ctx);
	free(e);
}

/* Thread exit: retire everything. */
static void spn_tls_dtor(void *arg)
{
	struct spn_tls_cache *c = arg;

	for (uint32_t i = 0; i < c->n; i++)
		spn_tls_retire(c->e[i]);
	free(c->e);
	free(c);
	spn_tls = NULL;
}

static void spn_tls_key_init(void)
{
	if (pthread_key_create(&spn_tls_key, spn_tls_dtor) != 0)
		spn_log_error(SPN_TAG, "pthread_key_create failed: writers of exiting "
				       "threads will not be released");
}

static struct spn_tls_cache *spn_tls_get(void)
{
	struct spn_tls_cache *c = spn_tls;

	if (c)
		return c;
	pthread_once(&spn_tls_once, spn_tls_key_init);
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	if (pthread_setspecific(spn_tls_key, c) != 0) {
		free(c);
		return NULL;
	}
	spn_tls = c;
	return c;
}

/*
 * The slow path of spn_ds_tls(): retires this thread's stale entry of the
 * slot (at index `stale`, or -1), then makes a writer for instance
 * `serial` in slot i.
 */
static struct spn_ds_tls *spn_tls_create(struct spn_ds *ds, uint32_t i, uint64_t serial,
					 int32_t stale)
{
	struct spn_producer *p = ds->p;
	struct spn_ds_inst *in = &ds->inst[i];
	struct spn_tls_cache *c = spn_tls_get();
	struct spn_sdk_ctx *ctx = NULL;
	struct spn_tls_entry *e;
	uint32_t target_buffer = 0;
	struct spn_tw *tw;

	if (!c)
		return NULL;
	if (stale >= 0) {
		spn_tls_retire(c->e[stale]);
		c->e[stale] = c->e[--c->n];
	}
	if (c->n == c->cap) {
		uint32_t cap = c->cap ? c->cap * 2 : 4;
		struct spn_tls_entry **a = realloc(c->e, cap * sizeof(*a));

		if (!a)
			return NULL;
		c->e = a;
		c->cap = cap;
	}
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	pthread_mutex_lock(&p->lock);
	/* Relaxed: serial changes only under this lock. */
	if (atomic_load_explicit(&in->serial, memory_order_relaxed) == serial &&
	    in->state == SPN_INST_STARTED && p->ctx && p->ctx->live) {
		ctx = p->ctx;
		/* Relaxed: the I/O thread's reference keeps the count above
		 * zero while we hold the lock (it drops it after clearing
		 * live under the lock). */
		atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
		target_buffer = in->target_buffer;
	}
	pthread_mutex_unlock(&p->lock);
	if (!ctx || smb_arbiter_create_writer(&ctx->arb, target_buffer, &tw) != 0) {
		if (ctx)
			_spn_ctx_unref(ctx);
		free(e);
		return NULL;
	}
	atomic_fetch_add_explicit(&p->n.writers_created, 1, memory_order_relaxed);
	e->ds = ds;
	e->serial = serial;
	e->ctx = ctx;
	e->clear_gen = atomic_load_explicit(&in->clear_gen, memory_order_relaxed);
	e->pub.tw = tw;
	e->pub.instance = i;
	e->pub.incremental_reset = true;
	c->e[c->n++] = e;
	return &e->pub;
}

struct spn_ds_tls *spn_ds_tls(struct spn_ds *ds, uint32_t i)
{
	struct spn_tls_cache *c = spn_tls;
	struct spn_ds_inst *in;
	uint64_t serial;

	if (i >= SPN_DS_MAX_INSTANCES || !(spn_ds_enabled(ds) & (1u << i)))
		return NULL;
	in = &ds->inst[i];
	/* Acquire: pairs with the I/O thread's release store when it set
	 * the slot up. */
	serial = atomic_load_explicit(&in->serial, memory_order_acquire);
	if (!serial)
		return NULL;
	for (uint32_t k = 0; c && k < c->n; k++) {
		struct spn_tls_entry *e = c->e[k];
		uint32_t gen;

		if (e->ds != ds || e->pub.instance != i)
			continue;
		if (e->serial != serial)
			return spn_tls_create(ds, i, serial, (int32_t)k);
		/* Relaxed: a hint (see struct spn_ds_inst). */
		gen = atomic_load_explicit(&in->clear_gen, memory_order_relaxed);
		if (gen != e->clear_gen) {
			e->clear_gen = gen;
			e->pub.incremental_reset = true;
		}
		return &e->pub;
	}
	return spn_tls_create(ds, i, serial, -1);
}

struct spn_tw *spn_ds_writer(struct spn_ds *ds)
{
	uint32_t mask = spn_ds_enabled(ds);

	while (mask) {
		uint32_t i = (uint32_t)__builtin_ctz(mask);
		struct spn_ds_tls *t = spn_ds_tls(ds, i);

		if (t)
			return t->tw;
		mask &= mask - 1;
	}
	return NULL;
}
