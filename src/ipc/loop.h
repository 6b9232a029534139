// SPDX-License-Identifier: Apache-2.0
// The per-thread io_uring event loop: cross-thread posts, timers and
// listening sockets. Connections (conn.h) belong to exactly one loop.
//
// Thread rules. A loop is driven by one thread at a time: the first thread
// that runs it (ipc_loop_run / ipc_loop_run_once) becomes its owner, the
// ring being set up single-issuer, and only the owner may call the
// "loop thread" functions below or destroy a loop that has run. Functions
// marked "any thread" may be called from anywhere, concurrently.
#ifndef SPN_IPC_LOOP_H
#define SPN_IPC_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct ipc_loop;
struct ipc_listener;

/* Identity of a socket peer, from SO_PEERCRED at accept or connect. */
struct ipc_peer_cred {
	pid_t pid;	/* peer process id (0 when unknown) */
	uid_t uid;	/* peer effective uid */
	gid_t gid;	/* peer effective gid */
};

/* Options of ipc_loop_create; zeroed fields take the defaults. */
struct ipc_loop_opts {
	unsigned ring_entries;	/* submission queue size, default 256 */
	unsigned post_slots;	/* cross-thread post ring, power of 2, default 4096 */
};

/*
 * Creates a loop with its io_uring and wake-up eventfd. The ring starts
 * disabled and is enabled by the first run, on the running thread.
 * Returns 0, -ENOSYS/-EPERM when io_uring is unavailable, -ENOMEM, or
 * another -errno from io_uring_setup/eventfd.
 */
int ipc_loop_create(struct ipc_loop **out, const struct ipc_loop_opts *opts);

/*
 * Closes every connection (their close callbacks run), listener and timer,
 * waits for the kernel to finish with their buffers, and frees the loop.
 * Loop thread (or any thread if the loop never ran). Posts still queued
 * are run first so that what they own is released.
 */
void ipc_loop_destroy(struct ipc_loop *loop);

/* Runs turns until ipc_loop_stop. Returns 0, or -errno if the ring
 * failed. Loop thread. */
int ipc_loop_run(struct ipc_loop *loop);

/*
 * Runs one turn: sends what is queued, waits up to timeout_ms (< 0: until
 * something happens, 0: not at all) and handles what completed.
 * Returns the completions handled (>= 0) or -errno. Loop thread.
 */
int ipc_loop_run_once(struct ipc_loop *loop, int timeout_ms);

/* Makes ipc_loop_run return after its current turn (a stop before the
 * run makes the next run return at once). Once it returns, this call no
 * longer touches the loop, so the loop's thread may destroy it right
 * after ipc_loop_run returns. Any thread. */
void ipc_loop_stop(struct ipc_loop *loop);

/* True when called on the thread currently running this loop. */
bool ipc_loop_on_thread(const struct ipc_loop *loop);

/* A function run on the loop's thread: arg and u64 as posted. */
typedef void (*ipc_post_fn)(struct ipc_loop *loop, void *arg, uint64_t u64);

/*
 * Queues fn(loop, arg, u64) to run on the loop thread, in post order per
 * posting thread, and wakes the loop. Any thread (multi-producer), as
 * long as the loop is not being destroyed: quiesce posters first.
 * Returns 0, or -EAGAIN when the post ring is full (back-pressure: the
 * caller keeps ownership of what arg refers to).
 */
int ipc_loop_post(struct ipc_loop *loop, ipc_post_fn fn, void *arg,
		  uint64_t u64);

/*
 * ipc_loop_post, waiting (yield, then short sleeps) while the ring is full,
 * for at most wait_ms. Returns 0 or -ETIMEDOUT. Never call it on a loop
 * thread for a loop that may itself be waiting on this thread. Any thread.
 */
int ipc_loop_post_wait(struct ipc_loop *loop, ipc_post_fn fn, void *arg,
		       uint64_t u64, unsigned wait_ms);

/* A timer callback, run on the loop thread. */
typedef void (*ipc_timer_fn)(struct ipc_loop *loop, void *arg);

/*
 * Arms a one-shot timer (IORING_OP_TIMEOUT) firing after ms milliseconds.
 * *id (if not NULL) receives a non-zero id for ipc_loop_timer_cancel.
 * Returns 0, -ENOMEM or -EBUSY (submission queue full). Loop thread.
 */
int ipc_loop_timer_add(struct ipc_loop *loop, uint64_t ms, ipc_timer_fn fn,
		       void *arg, uint64_t *id);

/* Cancels a timer that has not fired: its callback will not run.
 * Returns 0, or -ENOENT when it already fired or was cancelled. Loop
 * thread. */
int ipc_loop_timer_cancel(struct ipc_loop *loop, uint64_t id);

/*
 * Called on the loop thread for each accepted connection: fd is a
 * connected, close-on-exec socket now owned by the callee (which may hand
 * it to another loop, see host.h); cred is the peer's SO_PEERCRED.
 */
typedef void (*ipc_accept_fn)(void *arg, int fd,
			      const struct ipc_peer_cred *cred);

/*
 * Listens on an AF_UNIX stream socket named `name` (a path, whose stale
 * file is removed first, or "@name" for the abstract namespace) and
 * accepts with a multishot accept. Returns 0, -ENAMETOOLONG, -ENOMEM,
 * -EBUSY or the -errno of socket/bind/listen. Loop thread.
 */
int ipc_listen(struct ipc_loop *loop, const char *name, ipc_accept_fn fn,
	       void *arg, struct ipc_listener **out);

/* Stops accepting, removes the socket file and frees the listener once
 * the kernel has let go of it. Loop thread. */
void ipc_listener_close(struct ipc_listener *l);

#endif
