// SPDX-License-Identifier: Apache-2.0
// The io_uring event loop: ring set-up, the turn (flush sends, wait,
// dispatch completions), cross-thread posts, timers and listeners.
//
// Threads: everything here runs on the loop's owner thread except
// ipc_loop_post/_wait and ipc_loop_stop. Posts travel through a ck_ring
// (any thread enqueues under a mutex, only the owner dequeues, lock-free)
// and an eventfd the loop keeps a read pending on; the wake_pending flag
// (see ipc_int.h) keeps posters from writing the eventfd more than once
// per drain.
#include "ipc/ipc_int.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ipc/log.h"

#define IPC_TAG "ipc"
#define IPC_DEFAULT_RING 256u
#define IPC_DEFAULT_POSTS 4096u
#define IPC_CQE_BATCH 64u
#define IPC_ACCEPT_RETRY_MS 100u	/* re-arm delay after an accept error */
#define IPC_DESTROY_WAIT_MS 2000	/* bound on waiting for the kernel */
/* What ipc_loop_stop adds to the eventfd; posts add 1. */
#define IPC_STOP_UNIT (1ull << 32)

#define ipc_container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* A one-shot timer. Loop thread only. */
struct ipc_timer {
	struct ipc_op op;		/* tag of the IORING_OP_TIMEOUT */
	uint64_t id;			/* handle for ipc_loop_timer_cancel */
	bool cancelled;			/* cancel asked: don't run fn */
	struct __kernel_timespec ts;	/* duration (read at submission) */
	ipc_timer_fn fn;		/* callback */
	void *arg;			/* its argument */
	struct ipc_timer *next;		/* loop's timer list */
};

/* The loop the current thread is running, if any. */
static _Thread_local struct ipc_loop *ipc_current_loop;

bool ipc_loop_on_thread(const struct ipc_loop *loop)
{
	return ipc_current_loop == loop;
}

struct ipc_loop *ipc_loop_enter(struct ipc_loop *loop)
{
	struct ipc_loop *prev = ipc_current_loop;

	ipc_current_loop = loop;
	return prev;
}

void ipc_loop_leave(struct ipc_loop *prev)
{
	ipc_current_loop = prev;
}

struct io_uring_sqe *ipc_loop_sqe(struct ipc_loop *loop)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&loop->ring);

	if (!sqe && loop->ring_enabled) {
		io_uring_submit(&loop->ring);
		sqe = io_uring_get_sqe(&loop->ring);
	}
	return sqe;
}

/* Keeps one read of the wake-up eventfd in flight. */
static void ipc_loop_arm_wake(struct ipc_loop *loop)
{
	struct io_uring_sqe *sqe;

	if (loop->wake_armed || loop->destroying)
		return;
	sqe = ipc_loop_sqe(loop);
	if (!sqe) {
		spn_log_error(IPC_TAG, "no submission slot for the wake-up read");
		return;
	}
	io_uring_prep_read(sqe, loop->efd, &loop->efd_val,
			   sizeof(loop->efd_val), 0);
	io_uring_sqe_set_data(sqe, &loop->wake_op);
	loop->wake_armed = true;
}

/* Sets the ring up: single issuer with deferred task work where the kernel
 * has it (6.1+), plain otherwise; disabled until the owner first runs. */
static int ipc_loop_ring_init(struct ipc_loop *loop, unsigned entries)
{
	struct io_uring_params p;
	int err;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL |
		  IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_R_DISABLED;
	p.cq_entries = entries * 4;
	err = io_uring_queue_init_params(entries, &loop->ring, &p);
	if (err == -EINVAL) {
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_R_DISABLED;
		p.cq_entries = entries * 4;
		err = io_uring_queue_init_params(entries, &loop->ring, &p);
	}
	return err;
}

int ipc_loop_create(struct ipc_loop **out, const struct ipc_loop_opts *opts)
{
	unsigned entries = opts && opts->ring_entries ? opts->ring_entries
						       : IPC_DEFAULT_RING;
	unsigned posts = opts && opts->post_slots ? opts->post_slots
						  : IPC_DEFAULT_POSTS;
	struct ipc_loop *loop;
	int err;

	spn_log_init();
	if (posts < 2 || (posts & (posts - 1)))
		return -EINVAL;
	loop = calloc(1, sizeof(*loop));
	if (!loop)
		return -ENOMEM;
	loop->efd = -1;
	loop->post_slots = calloc(posts, sizeof(*loop->post_slots));
	if (!loop->post_slots) {
		err = -ENOMEM;
		goto err;
	}
	ck_ring_init(&loop->posts, posts);
	pthread_mutex_init(&loop->post_mu, NULL);
	atomic_init(&loop->wake_pending, 0);
	atomic_init(&loop->stop_acks, 0);
	loop->wake_op.kind = IPC_OP_WAKE;
	loop->efd = eventfd(0, EFD_CLOEXEC);
	if (loop->efd < 0) {
		err = -errno;
		goto err;
	}
	err = ipc_loop_ring_init(loop, entries);
	if (err)
		goto err;
	ipc_loop_arm_wake(loop);
	*out = loop;
	return 0;
err:
	if (loop->efd >= 0)
		close(loop->efd);
	free(loop->post_slots);
	free(loop);
	return err;
}

/* Enables the ring on the calling thread, which becomes its issuer. */
static int ipc_loop_enable(struct ipc_loop *loop)
{
	int err;

	if (loop->ring_enabled)
		return 0;
	/* liburing 2.3 declares io_uring_enable_rings() but does not export
	 * it, so register IORING_REGISTER_ENABLE_RINGS directly. */
	err = (int)syscall(__NR_io_uring_register, loop->ring.ring_fd,
			   IORING_REGISTER_ENABLE_RINGS, NULL, 0);
	if (err < 0)
		return -errno;
	loop->ring_enabled = true;
	return 0;
}

/* Runs every queued post. Loop thread. */
static void ipc_loop_drain_posts(struct ipc_loop *loop)
{
	struct ipc_post p = {0};
	unsigned n;

	/* Pairs with the posters' exchange after their enqueue: a post not
	 * seen below finds the flag clear and writes the eventfd again. */
	atomic_exchange_explicit(&loop->wake_pending, 0, memory_order_acq_rel);
	/* Only what is queued now: a post made by one of these functions
	 * (e.g. "continue on the next turn") waits for the next wake-up, so
	 * completions get their turn in between. */
	n = ck_ring_size(&loop->posts);
	while (n-- && ck_ring_dequeue_spsc_ipc_post(&loop->posts,
						    loop->post_slots, &p)) {
		IPC_TSAN_ACQUIRE(&loop->posts);
		p.fn(loop, p.arg, p.u64);
	}
}

int ipc_loop_post(struct ipc_loop *loop, ipc_post_fn fn, void *arg,
		  uint64_t u64)
{
	struct ipc_post p = {.fn = fn, .arg = arg, .u64 = u64};
	uint64_t one = 1;
	bool ok;

	pthread_mutex_lock(&loop->post_mu);
	IPC_TSAN_RELEASE(&loop->posts);
	ok = ck_ring_enqueue_spsc_ipc_post(&loop->posts, loop->post_slots, &p);
	pthread_mutex_unlock(&loop->post_mu);
	if (!ok)
		return -EAGAIN;
	/* acq_rel: publishes the entry to the drain that clears the flag
	 * (pairs with the exchange in ipc_loop_drain_posts). */
	if (atomic_exchange_explicit(&loop->wake_pending, 1,
				     memory_order_acq_rel) == 0) {
		/* The eventfd is blocking only at a 2^64-2 count: never. */
		if (write(loop->efd, &one, sizeof(one)) < 0)
			spn_log_error(IPC_TAG, "eventfd write: %s",
				      strerror(errno));
	}
	return 0;
}

int ipc_loop_post_wait(struct ipc_loop *loop, ipc_post_fn fn, void *arg,
		       uint64_t u64, unsigned wait_ms)
{
	struct timespec start, now, nap = {0, 100000};
	int err;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (unsigned i = 0;; i++) {
		err = ipc_loop_post(loop, fn, arg, u64);
		if (err != -EAGAIN)
			return err;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - start.tv_sec) * 1000 +
			    (now.tv_nsec - start.tv_nsec) / 1000000 >=
		    (long)wait_ms)
			return -ETIMEDOUT;
		if (i < 64)
			sched_yield();
		else
			nanosleep(&nap, NULL);
	}
}

void ipc_loop_stop(struct ipc_loop *loop)
{
	uint64_t unit = IPC_STOP_UNIT;

	if (write(loop->efd, &unit, sizeof(unit)) < 0)
		spn_log_error(IPC_TAG, "eventfd write: %s", strerror(errno));
	/* Release: pairs with the acquire in ipc_loop_run, which waits for
	 * this before returning. Last access to the loop. */
	atomic_fetch_add_explicit(&loop->stop_acks, 1, memory_order_release);
}

/* ---- connection table ---- */

int ipc_loop_add_conn(struct ipc_loop *loop, struct ipc_conn *c)
{
	uint32_t slot;

	if (loop->nfree == 0) {
		uint32_t n = loop->nslots ? loop->nslots * 2 : 64;
		struct ipc_conn **s = realloc(loop->slots, n * sizeof(*s));
		uint32_t *g, *f;

		if (!s)
			return -ENOMEM;
		loop->slots = s;
		g = realloc(loop->slot_gen, n * sizeof(*g));
		if (!g)
			return -ENOMEM;
		loop->slot_gen = g;
		f = realloc(loop->free_slots, n * sizeof(*f));
		if (!f)
			return -ENOMEM;
		loop->free_slots = f;
		for (uint32_t i = n; i > loop->nslots; i--) {
			loop->slots[i - 1] = NULL;
			loop->slot_gen[i - 1] = 0;
			loop->free_slots[loop->nfree++] = i - 1;
		}
		loop->nslots = n;
	}
	slot = loop->free_slots[--loop->nfree];
	loop->slot_gen[slot]++;
	loop->slots[slot] = c;
	/* Slot + 1 keeps ids non-zero; the generation makes them unique. */
	c->id = (uint64_t)loop->slot_gen[slot] << 32 | (uint64_t)(slot + 1);
	loop->nconns++;
	return 0;
}

void ipc_loop_remove_conn(struct ipc_loop *loop, struct ipc_conn *c)
{
	uint32_t slot = (uint32_t)c->id - 1;

	if (c->id == 0 || slot >= loop->nslots || loop->slots[slot] != c)
		return;
	loop->slots[slot] = NULL;
	loop->free_slots[loop->nfree++] = slot;
}

struct ipc_conn *ipc_conn_lookup(struct ipc_loop *loop, uint64_t id)
{
	uint32_t slot = (uint32_t)id - 1;
	struct ipc_conn *c;

	if ((uint32_t)id == 0 || slot >= loop->nslots)
		return NULL;
	c = loop->slots[slot];
	if (!c || c->id != id || c->state >= IPC_CONN_CLOSING)
		return NULL;
	return c;
}

void ipc_loop_mark_dirty(struct ipc_loop *loop, struct ipc_conn *c)
{
	if (c->dirty)
		return;
	c->dirty = true;
	c->dirty_next = loop->dirty;
	loop->dirty = c;
}

/* Starts the sends queued during the turn (one sendmsg per connection). */
static void ipc_loop_flush(struct ipc_loop *loop)
{
	while (loop->dirty) {
		struct ipc_conn *c = loop->dirty;

		loop->dirty = c->dirty_next;
		c->dirty = false;
		c->dirty_next = NULL;
		ipc_conn_flush(c);
	}
}

/* ---- timers ---- */

int ipc_loop_timer_add(struct ipc_loop *loop, uint64_t ms, ipc_timer_fn fn,
		       void *arg, uint64_t *id)
{
	struct io_uring_sqe *sqe;
	struct ipc_timer *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	sqe = ipc_loop_sqe(loop);
	if (!sqe) {
		free(t);
		return -EBUSY;
	}
	t->op.kind = IPC_OP_TIMER;
	t->id = ++loop->next_timer_id;
	t->ts.tv_sec = (long long)(ms / 1000);
	t->ts.tv_nsec = (long long)(ms % 1000) * 1000000;
	t->fn = fn;
	t->arg = arg;
	t->next = loop->timers;
	loop->timers = t;
	io_uring_prep_timeout(sqe, &t->ts, 0, 0);
	io_uring_sqe_set_data(sqe, &t->op);
	if (id)
		*id = t->id;
	return 0;
}

int ipc_loop_timer_cancel(struct ipc_loop *loop, uint64_t id)
{
	struct io_uring_sqe *sqe;

	for (struct ipc_timer *t = loop->timers; t; t = t->next) {
		if (t->id != id || t->cancelled)
			continue;
		t->cancelled = true;
		/* If no slot is free the timer still fires, harmlessly. */
		sqe = ipc_loop_sqe(loop);
		if (sqe) {
			io_uring_prep_timeout_remove(sqe, (__u64)(uintptr_t)&t->op,
						     0);
			io_uring_sqe_set_data(sqe, NULL);
		}
		return 0;
	}
	return -ENOENT;
}

static void ipc_timer_done(struct ipc_loop *loop, struct ipc_timer *t, int res)
{
	struct ipc_timer **pp = &loop->timers;

	while (*pp != t)
		pp = &(*pp)->next;
	*pp = t->next;
	if (res == -ETIME && !t->cancelled)
		t->fn(loop, t->arg);
	free(t);
}

/* ---- listeners ---- */

static void ipc_listener_arm(struct ipc_listener *l)
{
	struct io_uring_sqe *sqe = ipc_loop_sqe(l->loop);

	if (!sqe) {
		spn_log_error(IPC_TAG, "no submission slot to accept on %s",
			      l->path);
		return;
	}
	io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data(sqe, &l->op);
	l->armed = true;
}

static void ipc_listener_free(struct ipc_listener *l)
{
	struct ipc_loop *loop = l->loop;

	close(l->fd);
	loop->nlisteners--;
	free(l);
}

static void ipc_listener_rearm_timer(struct ipc_loop *loop, void *arg)
{
	struct ipc_listener *l = arg;

	(void)loop;
	l->rearm_timer = 0;
	if (!l->closing)
		ipc_listener_arm(l);
}

static void ipc_accept_done(struct ipc_listener *l, int res, unsigned flags)
{
	struct ipc_peer_cred cred;

	if (res >= 0) {
		if (l->closing) {
			close(res);
		} else {
			ipc_peer_cred_of(res, &cred);
			l->fn(l->arg, res, &cred);
		}
	} else if (res != -ECANCELED && !l->closing) {
		spn_log_warn(IPC_TAG, "accept on %s: %s", l->path,
			     strerror(-res));
	}
	if (flags & IORING_CQE_F_MORE)
		return;
	l->armed = false;
	if (l->closing) {
		ipc_listener_free(l);
	} else if (res == -EINVAL) {
		spn_log_error(IPC_TAG, "multishot accept unsupported on %s",
			      l->path);
	} else if (res < 0) {
		/* e.g. EMFILE: retry later rather than spin. */
		if (ipc_loop_timer_add(l->loop, IPC_ACCEPT_RETRY_MS,
				       ipc_listener_rearm_timer, l,
				       &l->rearm_timer) != 0)
			spn_log_error(IPC_TAG, "cannot re-arm accept on %s",
				      l->path);
	} else {
		ipc_listener_arm(l);
	}
}

int ipc_listen(struct ipc_loop *loop, const char *name, ipc_accept_fn fn,
	       void *arg, struct ipc_listener **out)
{
	struct sockaddr_un sa;
	socklen_t salen;
	struct ipc_listener *l;
	int err, fd;

	err = ipc_sockaddr(name, &sa, &salen);
	if (err)
		return err;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err = -errno;
		free(l);
		return err;
	}
	l->abstract = name[0] == '@';
	snprintf(l->path, sizeof(l->path), "%s", name);
	if (!l->abstract && unlink(name) != 0 && errno != ENOENT)
		spn_log_warn(IPC_TAG, "removing stale %s: %s", name,
			     strerror(errno));
	if (bind(fd, (struct sockaddr *)&sa, salen) != 0 ||
	    listen(fd, SOMAXCONN) != 0) {
		err = -errno;
		close(fd);
		free(l);
		return err;
	}
	l->loop = loop;
	l->fd = fd;
	l->fn = fn;
	l->arg = arg;
	l->op.kind = IPC_OP_ACCEPT;
	ipc_listener_arm(l);
	if (!l->armed) {
		close(fd);
		free(l);
		return -EBUSY;
	}
	l->next = loop->listeners;
	loop->listeners = l;
	loop->nlisteners++;
	spn_log_info(IPC_TAG, "listening on %s", name);
	if (out)
		*out = l;
	return 0;
}

void ipc_listener_close(struct ipc_listener *l)
{
	struct ipc_loop *loop = l->loop;
	struct ipc_listener **pp = &loop->listeners;
	struct io_uring_sqe *sqe;

	if (l->closing)
		return;
	l->closing = true;
	while (*pp && *pp != l)
		pp = &(*pp)->next;
	if (*pp)
		*pp = l->next;
	if (!l->abstract)
		unlink(l->path);
	if (l->rearm_timer)
		ipc_loop_timer_cancel(loop, l->rearm_timer);
	if (!l->armed) {
		ipc_listener_free(l);
		return;
	}
	/* Shutting the socket down ends the multishot accept too. */
	shutdown(l->fd, SHUT_RDWR);
	sqe = ipc_loop_sqe(loop);
	if (sqe) {
		io_uring_prep_cancel(sqe, &l->op, 0);
		io_uring_sqe_set_data(sqe, NULL);
	}
}

/* ---- the turn ---- */

static void ipc_loop_complete(struct ipc_loop *loop, struct ipc_op *op,
			      int res, unsigned flags)
{
	switch (op->kind) {
	case IPC_OP_WAKE:
		loop->wake_armed = false;
		if (res < 0 && res != -ECANCELED)
			spn_log_error(IPC_TAG, "eventfd read: %s",
				      strerror(-res));
		if (res == (int)sizeof(loop->efd_val) &&
		    loop->efd_val >= IPC_STOP_UNIT) {
			loop->stops_seen += (unsigned)(loop->efd_val /
						       IPC_STOP_UNIT);
			loop->stop_pending = true;
		}
		ipc_loop_drain_posts(loop);
		ipc_loop_arm_wake(loop);
		break;
	case IPC_OP_ACCEPT:
		ipc_accept_done(ipc_container_of(op, struct ipc_listener, op),
				res, flags);
		break;
	case IPC_OP_RECV:
		ipc_conn_recv_done(ipc_container_of(op, struct ipc_conn,
						    op_recv), res, flags);
		break;
	case IPC_OP_SEND:
		ipc_conn_send_done(ipc_container_of(op, struct ipc_conn,
						    op_send), res);
		break;
	case IPC_OP_SEND_TIMEOUT:
		ipc_conn_timeout_done(ipc_container_of(op, struct ipc_conn,
						       op_send_timeout), res);
		break;
	case IPC_OP_CONNECT:
		ipc_conn_connect_done(ipc_container_of(op, struct ipc_conn,
						       op_connect), res);
		break;
	case IPC_OP_TIMER:
		ipc_timer_done(loop, ipc_container_of(op, struct ipc_timer, op),
			       res);
		break;
	default:
		spn_log_error(IPC_TAG, "completion of unknown kind %u",
			      op->kind);
		break;
	}
}

/* Handles every completion available now. Returns how many. */
static int ipc_loop_reap(struct ipc_loop *loop)
{
	struct io_uring_cqe *cqes[IPC_CQE_BATCH];
	struct {
		uint64_t data;
		int res;
		unsigned flags;
	} done[IPC_CQE_BATCH];
	int total = 0;
	unsigned n;

	for (;;) {
		n = io_uring_peek_batch_cqe(&loop->ring, cqes, IPC_CQE_BATCH);
		if (n == 0)
			break;
		/* Copy out first: handlers may submit and reap reentrantly. */
		for (unsigned i = 0; i < n; i++) {
			done[i].data = cqes[i]->user_data;
			done[i].res = cqes[i]->res;
			done[i].flags = cqes[i]->flags;
		}
		io_uring_cq_advance(&loop->ring, n);
		for (unsigned i = 0; i < n; i++) {
			if (done[i].data)
				ipc_loop_complete(loop,
						  (struct ipc_op *)(uintptr_t)
							  done[i].data,
						  done[i].res, done[i].flags);
		}
		total += (int)n;
	}
	return total;
}

int ipc_loop_run_once(struct ipc_loop *loop, int timeout_ms)
{
	struct ipc_loop *prev = ipc_current_loop;
	struct io_uring_cqe *cqe;
	int err;

	err = ipc_loop_enable(loop);
	if (err)
		return err;
	ipc_current_loop = loop;
	ipc_loop_flush(loop);
	if (timeout_ms < 0) {
		err = io_uring_submit_and_wait(&loop->ring, 1);
	} else {
		struct __kernel_timespec ts = {
			.tv_sec = timeout_ms / 1000,
			.tv_nsec = (long long)(timeout_ms % 1000) * 1000000,
		};
		err = io_uring_submit_and_wait_timeout(&loop->ring, &cqe, 1,
						       &ts, NULL);
	}
	if (err < 0 && err != -ETIME && err != -EINTR && err != -EAGAIN &&
	    err != -EBUSY) {
		ipc_current_loop = prev;
		return err;
	}
	err = ipc_loop_reap(loop);
	/* What the handlers queued is flushed and submitted by the next
	 * turn's submit-and-wait: one system call per turn. */
	ipc_current_loop = prev;
	return err;
}

int ipc_loop_run(struct ipc_loop *loop)
{
	int err = 0;

	while (!loop->stop_pending) {
		err = ipc_loop_run_once(loop, -1);
		if (err < 0)
			break;
		err = 0;
	}
	loop->stop_pending = false;
	/* Acquire: pairs with the increment ending ipc_loop_stop; the
	 * stopper may sit between its eventfd write and that increment. */
	while (atomic_load_explicit(&loop->stop_acks, memory_order_acquire) <
	       loop->stops_seen)
		sched_yield();
	return err;
}

void ipc_loop_destroy(struct ipc_loop *loop)
{
	struct ipc_loop *prev = ipc_current_loop;
	struct timespec start, now;
	struct io_uring_sqe *sqe;

	if (!loop)
		return;
	/* A loop that never ran is enabled here: this thread issues. */
	if (ipc_loop_enable(loop) != 0)
		spn_log_error(IPC_TAG, "cannot enable the ring to tear it down");
	ipc_current_loop = loop;
	ipc_loop_drain_posts(loop);
	loop->destroying = true;
	while (loop->listeners)
		ipc_listener_close(loop->listeners);
	for (struct ipc_timer *t = loop->timers; t; t = t->next)
		ipc_loop_timer_cancel(loop, t->id);
	ipc_conn_close_all(loop);
	if (loop->wake_armed) {
		sqe = ipc_loop_sqe(loop);
		if (sqe) {
			io_uring_prep_cancel(sqe, &loop->wake_op, 0);
			io_uring_sqe_set_data(sqe, NULL);
		}
	}
	/* Wait until the kernel holds no pointer into our memory. */
	clock_gettime(CLOCK_MONOTONIC, &start);
	while (loop->nconns || loop->nlisteners || loop->timers ||
	       loop->wake_armed) {
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts = {.tv_sec = 0,
					       .tv_nsec = 50000000};

		ipc_loop_flush(loop);
		io_uring_submit_and_wait_timeout(&loop->ring, &cqe, 1, &ts,
						 NULL);
		ipc_loop_reap(loop);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - start.tv_sec) * 1000 +
			    (now.tv_nsec - start.tv_nsec) / 1000000 >
		    IPC_DESTROY_WAIT_MS) {
			spn_log_error(IPC_TAG, "loop teardown: %u connections "
				      "still busy in the kernel", loop->nconns);
			break;
		}
	}
	ipc_loop_drain_posts(loop);
	io_uring_queue_exit(&loop->ring);
	ipc_current_loop = prev == loop ? NULL : prev;
	close(loop->efd);
	pthread_mutex_destroy(&loop->post_mu);
	free(loop->post_slots);
	free(loop->slots);
	free(loop->slot_gen);
	free(loop->free_slots);
	ipc_arena_free(loop);
	free(loop);
}
