// SPDX-License-Identifier: Apache-2.0
// One IPC connection on one loop: its identity, its bounded send queue and
// how it ends. The frame-level protocol on top is host.h or client.h.
//
// A connection is owned by exactly one loop and every function here taking
// a struct ipc_conn * is for that loop's thread. Other threads name a
// connection by (loop, id) and use the "any thread" calls, which post to
// the owning loop; an id whose connection is gone is simply not found.
#ifndef SPN_IPC_CONN_H
#define SPN_IPC_CONN_H

#include <stddef.h>
#include <stdint.h>

#include "ipc/loop.h"

struct ipc_conn;

/* Default bound of a connection's send queue (bytes queued, not yet
 * accepted by the kernel). A peer that stops reading past it is
 * disconnected. */
#define IPC_DEFAULT_SEND_LIMIT (8u << 20)

/* Unique, never-reused id of the connection within its loop (non-zero). */
uint64_t ipc_conn_id(const struct ipc_conn *c);

/* The loop that owns the connection. */
struct ipc_loop *ipc_conn_loop(const struct ipc_conn *c);

/* The peer's SO_PEERCRED, captured when the connection was accepted (for
 * a client: when it connected). */
const struct ipc_peer_cred *ipc_conn_cred(const struct ipc_conn *c);

/* Per-connection pointer for the service (e.g. its producer record). */
void ipc_conn_set_user(struct ipc_conn *c, void *user);
void *ipc_conn_user(const struct ipc_conn *c);

/* Bytes queued for sending and not yet taken by the kernel. */
size_t ipc_conn_queued(const struct ipc_conn *c);

/* Sets the send-queue bound in bytes (0: IPC_DEFAULT_SEND_LIMIT). */
void ipc_conn_set_send_limit(struct ipc_conn *c, size_t bytes);

/*
 * Sets how long one send may wait for the peer's socket to have room
 * (spec/ipc-wire.md §8: 10 ms for producers, 10 000 ms for consumers);
 * past it the connection is closed. 0 (the default) waits forever.
 */
void ipc_conn_set_send_timeout(struct ipc_conn *c, unsigned ms);

/*
 * Asks for fn(loop, arg, u64) to run once on the loop thread when at most
 * `below` bytes remain queued (at once, through a post, if that is already
 * so), or when the connection closes (then ipc_conn_lookup fails for it).
 * For producers of long replies (ReadBuffers) that pace themselves on the
 * peer's reading. One request per connection: a new one replaces the old,
 * which then never runs. Returns 0 or -EAGAIN (post ring full). Loop
 * thread.
 */
int ipc_conn_notify_drained(struct ipc_conn *c, size_t below, ipc_post_fn fn,
			    void *arg, uint64_t u64);

/*
 * Closes the connection now: queued sends are dropped, the close
 * callback runs once (before this returns), and the memory is released
 * once the kernel has finished with it. reason is 0 or a -errno for the
 * log. Safe to call again or from a callback of this connection.
 */
void ipc_conn_close(struct ipc_conn *c, int reason);

/* Stops reading and closes once the send queue has drained (or the send
 * timeout hits). Use it to reject a peer after sending it a reply. */
void ipc_conn_close_after_flush(struct ipc_conn *c);

/* ipc_conn_close for connection `id` of `loop`, posted to the loop.
 * Returns 0 or -EAGAIN (post ring full). Any thread. */
int ipc_conn_close_id(struct ipc_loop *loop, uint64_t id);

/* The open connection `id` of `loop`, or NULL. Loop thread. */
struct ipc_conn *ipc_conn_lookup(struct ipc_loop *loop, uint64_t id);

#endif
