// SPDX-License-Identifier: Apache-2.0
// Internals shared by the files of src/ipc: the loop and connection
// structures, the io_uring operation tags and the conn <-> protocol hooks.
// Nothing outside src/ipc includes this.
#ifndef SPN_IPC_INT_H
#define SPN_IPC_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <ck_ring.h>
#include <liburing.h>

#include "ipc/conn.h"
#include "ipc/frame.h"
#include "ipc/loop.h"

#ifdef __SANITIZE_THREAD__
#include <sanitizer/tsan_interface.h>
/* ck_ring's ordering is inline assembly ThreadSanitizer cannot see; these
 * state the hand-off it performs (poster releases before enqueueing, the
 * loop acquires after dequeueing). */
#define IPC_TSAN_RELEASE(addr) __tsan_release(addr)
#define IPC_TSAN_ACQUIRE(addr) __tsan_acquire(addr)
#else
#define IPC_TSAN_RELEASE(addr) ((void)(addr))
#define IPC_TSAN_ACQUIRE(addr) ((void)(addr))
#endif

/* What an io_uring request is; user_data points at the ipc_op embedded in
 * its owner (user_data 0 marks requests whose completion is ignored). */
enum ipc_op_kind {
	IPC_OP_WAKE = 1,	/* eventfd read of the loop (posts) */
	IPC_OP_ACCEPT,		/* multishot accept of a listener */
	IPC_OP_RECV,		/* recvmsg of a connection */
	IPC_OP_SEND,		/* sendmsg of a connection */
	IPC_OP_SEND_TIMEOUT,	/* link timeout guarding that sendmsg */
	IPC_OP_CONNECT,		/* connect of a client connection */
	IPC_OP_TIMER,		/* a timer */
};

/* Tag of one in-flight request, embedded in the object that owns it. */
struct ipc_op {
	uint8_t kind;		/* enum ipc_op_kind */
};

/* One cross-thread post, copied into the loop's ck_ring by value. */
struct ipc_post {
	ipc_post_fn fn;		/* run on the loop thread */
	void *arg;		/* its argument */
	uint64_t u64;		/* a second argument (e.g. a connection id) */
};
CK_RING_PROTOTYPE(ipc_post, ipc_post)

struct ipc_timer;

/* The protocol a connection speaks (host.c or client.c). Called on the
 * loop thread; the connection stays valid during each call. */
struct ipc_conn_ops {
	/* A complete, non-empty frame payload (header stripped). */
	void (*on_frame)(struct ipc_conn *c, const uint8_t *payload,
			 uint32_t len);
	/* Client connections: the connect completed (0) or failed (-errno;
	 * on_close follows). May be NULL. */
	void (*on_open)(struct ipc_conn *c, int status);
	/* The connection is closing (once); no more frames follow and
	 * nothing more can be sent. reason: 0 for EOF, or -errno. */
	void (*on_close)(struct ipc_conn *c, int reason);
};

/* Connection life cycle (values only increase). */
enum ipc_conn_state {
	IPC_CONN_CONNECTING,	/* client: connect in flight, sends queue */
	IPC_CONN_OPEN,		/* receiving and sending */
	IPC_CONN_DRAINING,	/* not receiving; closes when sends drain */
	IPC_CONN_CLOSING,	/* shut down; freed when no request is in flight */
};

/* A received file descriptor waiting for the frame it came with. */
struct ipc_rx_fd {
	int fd;			/* owned, close-on-exec; -1 for an empty slot */
	uint64_t owner;		/* stream offset of the frame it belongs to */
};

/* Pending received fds per connection; past it the oldest is closed. */
#define IPC_RX_FDS 4
/* First receive buffer size; it grows to the frame limit on demand. */
#define IPC_RX_INITIAL 8192u
/* Most iovecs / bytes one sendmsg carries (the per-turn batch). */
#define IPC_TX_IOV_MAX 64
#define IPC_TX_BATCH_BYTES (256u << 10)

/* A connection. Loop thread only, apart from nothing: other threads hold
 * (loop, id) pairs, never pointers. */
struct ipc_conn {
	struct ipc_loop *loop;		/* owner */
	uint64_t id;			/* slot | generation << 32 */
	int fd;				/* the socket, -1 once closed */
	enum ipc_conn_state state;	/* life cycle */
	int close_reason;		/* first reason given to close */
	struct ipc_peer_cred cred;	/* SO_PEERCRED of the peer */
	const struct ipc_conn_ops *ops;	/* protocol hooks */
	void *proto;			/* protocol object (host or client) */
	void *user;			/* service's per-connection pointer */
	unsigned inflight;		/* io_uring requests not yet completed */
	unsigned busy;			/* nesting of callbacks running on it */
	bool recv_armed;		/* a recvmsg is in flight */
	bool send_armed;		/* a sendmsg is in flight */
	bool dirty;			/* on the loop's flush list */
	struct ipc_conn *dirty_next;	/* next on the flush list */

	/* Receive side. */
	uint8_t *rx_buf;		/* reassembly buffer */
	uint32_t rx_cap;		/* its size (<= SPN_IPC_BUFFER_SIZE) */
	uint32_t rx_len;		/* bytes held */
	uint64_t rx_base;		/* stream offset of rx_buf[0] */
	uint64_t rx_frame_start;	/* stream offset of the frame being handled */
	struct ipc_rx_fd rx_fds[IPC_RX_FDS];	/* oldest first */
	struct iovec rx_iov;		/* recvmsg target */
	struct msghdr rx_msg;		/* recvmsg header */
	/* Control buffer with room for exactly one fd. */
	_Alignas(struct cmsghdr) char rx_cmsg[CMSG_SPACE(sizeof(int))];
	struct ipc_op op_recv;		/* tag of the recvmsg */

	/* Send side. */
	struct ipc_txbuf *tx_head;	/* oldest queued frame */
	struct ipc_txbuf *tx_tail;	/* newest queued frame */
	size_t tx_bytes;		/* unsent bytes queued */
	size_t tx_limit;		/* bound of tx_bytes */
	unsigned tx_timeout_ms;		/* per-send stall budget, 0 = none */
	struct iovec tx_iov[IPC_TX_IOV_MAX];	/* the sendmsg in flight */
	struct msghdr tx_msg;		/* its header */
	/* Control buffer of one SCM_RIGHTS fd. */
	_Alignas(struct cmsghdr) char tx_cmsg[CMSG_SPACE(sizeof(int))];
	struct __kernel_timespec tx_ts;	/* the link timeout's duration */
	ipc_post_fn drain_fn;		/* ipc_conn_notify_drained callback */
	void *drain_arg;		/* its arguments */
	uint64_t drain_u64;
	size_t drain_below;		/* run it at or under this many bytes */
	struct ipc_op op_send;		/* tag of the sendmsg */
	struct ipc_op op_send_timeout;	/* tag of its link timeout */
	struct ipc_op op_connect;	/* tag of the connect */
	struct sockaddr_un *connect_sa;	/* connect target while in flight */
};

/* A listening socket. Loop thread only. */
struct ipc_listener {
	struct ipc_loop *loop;		/* owner */
	int fd;				/* listening socket */
	bool armed;			/* multishot accept in flight */
	bool closing;			/* closed by the user */
	bool abstract;			/* name is in the abstract namespace */
	uint64_t rearm_timer;		/* timer re-arming after an error, or 0 */
	ipc_accept_fn fn;		/* accept callback */
	void *arg;			/* its argument */
	struct ipc_listener *next;	/* loop's listener list */
	struct ipc_op op;		/* tag of the accept */
	char path[108];			/* socket file to unlink at close */
};

/*
 * Decode arena of a loop: the IPCFrame and the method arguments of the frame
 * being handled are unpacked into it (protobuf-c would otherwise malloc and
 * free every field of every request), and it is reset when the frame is
 * done: handlers may use their arguments only during the call (host.h).
 * Loop thread only.
 */
struct ipc_arena {
	ProtobufCAllocator alloc;	/* protobuf-c's view of it */
	uint8_t *base;			/* IPC_ARENA_SIZE bytes */
	size_t used;			/* bytes handed out since the reset */
	uint64_t fallbacks;		/* allocations that went to malloc, ever */
};
#define IPC_ARENA_SIZE (256u << 10)

/* The allocator of loop's arena (created on first use), or NULL (malloc). */
ProtobufCAllocator *ipc_arena_get(struct ipc_loop *loop);
/* Marks where the arena stands, and forgets everything allocated since a
 * mark (stack order: a frame handled inside another's handler releases
 * only its own). */
size_t ipc_arena_mark(struct ipc_loop *loop);
void ipc_arena_release_to(struct ipc_loop *loop, size_t mark);
/* Allocations that did not fit and went to malloc so far: while it has not
 * moved since a message was unpacked, the message lies wholly in the arena
 * and releasing to the mark frees it (protobuf-c's free walk can be
 * skipped). */
uint64_t ipc_arena_fallbacks(struct ipc_loop *loop);
/* Frees the arena (loop destruction). */
void ipc_arena_free(struct ipc_loop *loop);

/* The loop. Fields are loop-thread only except where said. */
struct ipc_loop {
	struct io_uring ring;		/* the io_uring */
	bool ring_enabled;		/* enabled by the first run */
	bool destroying;		/* ipc_loop_destroy in progress */
	int efd;			/* wake-up eventfd: posters write, the loop reads */
	uint64_t efd_val;		/* eventfd read target */
	struct ipc_op wake_op;		/* tag of the eventfd read */
	bool wake_armed;		/* the eventfd read is in flight */
	/* 1 while a wake-up is pending: posters set it with acq_rel exchange
	 * after enqueueing (pairs with the loop's clearing exchange before it
	 * drains), so a post is either seen by the drain or writes eventfd. */
	_Atomic int wake_pending;
	/* Stop protocol: ipc_loop_stop adds IPC_STOP_UNIT to the eventfd and
	 * then increments stop_acks (release). The loop learns of a stop
	 * only from its eventfd read, and before ipc_loop_run returns it
	 * waits for stop_acks to reach the stops it saw (acquire, pairs with
	 * that increment): no stopper still touches a loop being torn down. */
	_Atomic unsigned stop_acks;
	unsigned stops_seen;		/* stop units read from the eventfd */
	bool stop_pending;		/* ipc_loop_run should return */
	/* Posts: any thread enqueues under post_mu (single-producer
	 * enqueue), only the loop dequeues (lock-free). ck_ring's own
	 * multi-producer enqueue spins on a preempted producer's commit;
	 * with more threads than cores that convoy lasted seconds in
	 * tests, while a mutex sleeps instead. */
	pthread_mutex_t post_mu;
	struct ck_ring posts;
	struct ipc_post *post_slots;	/* the ring's storage */

	struct ipc_arena *arena;	/* decode scratch of the frame being handled */
	struct ipc_conn **slots;	/* open connections by slot */
	uint32_t *slot_gen;		/* generation per slot */
	uint32_t *free_slots;		/* stack of free slot indexes */
	uint32_t nslots;		/* slots allocated */
	uint32_t nfree;			/* entries in free_slots */
	unsigned nconns;		/* connections not yet freed */
	struct ipc_conn *dirty;		/* connections with sends to flush */

	struct ipc_timer *timers;	/* armed timers */
	uint64_t next_timer_id;		/* last timer id handed out */
	struct ipc_listener *listeners;	/* open listeners */
	unsigned nlisteners;		/* listeners not yet freed */
};

/* Marks the calling thread as running loop (for ipc_loop_on_thread);
 * returns the previous mark for ipc_loop_leave. Used by the turn, the
 * teardown and tests that drive a connection without a turn. */
struct ipc_loop *ipc_loop_enter(struct ipc_loop *loop);
void ipc_loop_leave(struct ipc_loop *prev);

/* A free SQE, submitting to make room when the SQ is
 * full. NULL only if the ring is broken or still disabled and full. */
struct io_uring_sqe *ipc_loop_sqe(struct ipc_loop *loop);

/* Registers a new connection (assigns its id). Returns 0 or -ENOMEM. */
int ipc_loop_add_conn(struct ipc_loop *loop, struct ipc_conn *c);
/* Unregisters it: its id no longer resolves. */
void ipc_loop_remove_conn(struct ipc_loop *loop, struct ipc_conn *c);
/* Queues c for the end-of-turn send flush. */
void ipc_loop_mark_dirty(struct ipc_loop *loop, struct ipc_conn *c);

/* conn.c: completion handlers and the per-turn flush. */
void ipc_conn_recv_done(struct ipc_conn *c, int res, unsigned flags);
void ipc_conn_send_done(struct ipc_conn *c, int res);
void ipc_conn_timeout_done(struct ipc_conn *c, int res);
void ipc_conn_connect_done(struct ipc_conn *c, int res);
void ipc_conn_flush(struct ipc_conn *c);
/* Closes every connection of a loop being destroyed. */
void ipc_conn_close_all(struct ipc_loop *loop);

/*
 * Creates an open connection on loop for a connected socket (takes fd).
 * ops/proto: the protocol. Receiving starts with ipc_conn_start. Returns 0
 * (and *out) or -ENOMEM (fd closed). Loop thread.
 */
int ipc_conn_adopt(struct ipc_loop *loop, int fd,
		   const struct ipc_peer_cred *cred,
		   const struct ipc_conn_ops *ops, void *proto,
		   struct ipc_conn **out);

/* Arms the first receive of an adopted connection. Returns 0, or the
 * reason it was closed with (it may already be freed then). */
int ipc_conn_start(struct ipc_conn *c);

/*
 * Creates a client connection to socket `name` (see ipc_listen) and starts
 * connecting; frames sent meanwhile queue. ops->on_open reports the end.
 * Returns 0 (and *out), -ENAMETOOLONG, -ENOMEM, -EBUSY, or socket()'s
 * -errno. Loop thread.
 */
int ipc_conn_connect(struct ipc_loop *loop, const char *name,
		     const struct ipc_conn_ops *ops, void *proto,
		     struct ipc_conn **out);

/*
 * Queues an encoded frame (ownership passes, also on error). Returns 0,
 * -ENOTCONN when the connection is closing, or -ENOBUFS when the send
 * queue bound was passed (the connection is then closed, with one log
 * line). Loop thread.
 */
int ipc_conn_send(struct ipc_conn *c, struct ipc_txbuf *b);

/*
 * Takes the fd that came with the frame being handled (see "received file
 * descriptors" in conn.c). Returns the fd (caller owns it) or -1. Loop
 * thread, in on_frame.
 */
int ipc_conn_take_fd(struct ipc_conn *c);

/* Fills *sa from a socket name ("@x" = abstract). Returns 0 or
 * -ENAMETOOLONG / -EINVAL. */
int ipc_sockaddr(const char *name, struct sockaddr_un *sa, socklen_t *len);

/* Reads SO_PEERCRED of fd into *cred (zeroed on failure). Returns 0 or
 * -errno. */
int ipc_peer_cred_of(int fd, struct ipc_peer_cred *cred);

#endif
