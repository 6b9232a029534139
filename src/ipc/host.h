// SPDX-License-Identifier: Apache-2.0
// The host side of the IPC protocol: services registered by name with a
// method table, BindService/InvokeMethod dispatch (spec/ipc-wire.md §4-6),
// and replies that are immediate, deferred (from any thread), streamed or
// dropped, each optionally carrying one file descriptor.
//
// A host is one socket's set of services (service ids from 1 in
// registration order, method ids from 1 in .proto declaration order). It
// is immutable once it serves: lanes on several threads read it at once.
// Handlers run on the loop thread that owns the connection.
#ifndef SPN_IPC_HOST_H
#define SPN_IPC_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "ipc/conn.h"
#include "ipc/loop.h"

struct ipc_host;
struct ipc_request;

/*
 * Handles one InvokeMethod. args is the request decoded with the method's
 * input descriptor; it (and req) are valid only during the call. The
 * handler answers through req now, or keeps a handle (ipc_request_defer)
 * to answer later. A handler that does neither has its call rejected
 * (success:false) when it returns, unless the caller set drop_reply.
 */
typedef void (*ipc_method_fn)(struct ipc_request *req,
			      const ProtobufCMessage *args, void *ctx);

/* Connection events of a host, all on the owning loop's thread. */
struct ipc_host_ops {
	/* A connection was accepted and adopted by its loop; set its user
	 * pointer, send limit or timeout here. May be NULL. */
	void (*on_connect)(void *ctx, struct ipc_conn *c);
	/* The connection is going away (once per on_connect); its reply
	 * handles become no-ops. May be NULL. */
	void (*on_disconnect)(void *ctx, struct ipc_conn *c);
	/* Picks the loop that serves a new connection (the acceptor hands
	 * connections to lanes). NULL: the listener's loop. Runs on the
	 * listener's loop thread. */
	struct ipc_loop *(*pick_loop)(void *ctx,
				      const struct ipc_peer_cred *cred);
};

/* Creates an empty host. ops may be NULL. Returns 0 or -ENOMEM. */
int ipc_host_create(struct ipc_host **out, const struct ipc_host_ops *ops,
		    void *ctx);

/* Frees the host. Only once no loop serves its connections any more
 * (destroy those loops first). */
void ipc_host_destroy(struct ipc_host *h);

/*
 * Exposes a protobuf-c service: its short name is the bind name and its
 * methods, in declaration order, get ids 1..n. handlers[i] serves
 * desc->methods[i] (NULL: listed, but calls are rejected). ctx is passed
 * to every handler. Before the host serves. Returns the service id (>= 1),
 * -EEXIST for a second service of that name, -ENOMEM.
 */
int ipc_host_add_service(struct ipc_host *h,
			 const ProtobufCServiceDescriptor *desc,
			 const ipc_method_fn *handlers, void *ctx);

/* Listens on `name` (see ipc_listen) with this host's services on loop
 * (the acceptor). Returns 0 or as ipc_listen. Loop thread. */
int ipc_host_listen(struct ipc_host *h, struct ipc_loop *loop,
		    const char *name, struct ipc_listener **out);

/*
 * Serves connected socket fd (ownership passes) on loop: on that loop's
 * thread directly, from any other thread by a post. Returns 0; -ENOMEM;
 * -ETIMEDOUT when the loop's post ring stayed full (fd closed). Any thread.
 */
int ipc_host_adopt(struct ipc_host *h, struct ipc_loop *loop, int fd,
		   const struct ipc_peer_cred *cred);

/*
 * A handle to answer one request later, from any thread. Plain data: copy
 * it, keep it in the service's own structures. Once the connection is gone
 * every call on it is a successful no-op; once the final reply went, calls
 * return -EALREADY. Using one handle from two threads at once needs the
 * caller's own lock.
 */
struct ipc_reply {
	struct ipc_loop *loop;		/* loop owning the connection */
	uint64_t conn_id;		/* ipc_conn_id of the connection */
	uint64_t request_id;		/* the request's id */
	const ProtobufCMessageDescriptor *out;	/* the method's response type */
	bool drop_reply;		/* the caller wants no reply */
	bool done;			/* the final reply was sent */
};

/* The connection the request came on (loop thread, during the handler). */
struct ipc_conn *ipc_request_conn(const struct ipc_request *req);

/* The method being called (name, input and output types). */
const ProtobufCMethodDescriptor *ipc_request_method(
	const struct ipc_request *req);

/* The request's id and drop_reply flag. */
uint64_t ipc_request_id(const struct ipc_request *req);
bool ipc_request_drop_reply(const struct ipc_request *req);

/*
 * Takes the file descriptor that came with this request (the receiver's
 * one-fd slot of spec §7). Returns the fd (caller owns it; close-on-exec)
 * or -1. An fd no handler takes is closed by the library.
 */
int ipc_request_take_fd(struct ipc_request *req);

/*
 * Answers now: the final reply (has_more false) or, with has_more true,
 * one streamed reply. resp must be of the method's response type; fd >= 0
 * attaches a duplicate of it (the caller keeps its own). Returns 0 (also
 * when drop_reply made it a no-op or the connection is gone), -EALREADY,
 * -EINVAL (wrong message type; nothing sent), -EMSGSIZE / -ENOMEM / the
 * fd dup's -errno (the call was rejected instead and is over), or
 * -ENOBUFS (the peer was disconnected for not reading).
 */
int ipc_request_reply(struct ipc_request *req, const ProtobufCMessage *resp,
		      int fd, bool has_more);

/* Rejects the call: success:false, has_more:false. Returns as above. */
int ipc_request_reject(struct ipc_request *req);

/* Keeps the call open past the handler: fills *out with its handle. */
void ipc_request_defer(struct ipc_request *req, struct ipc_reply *out);

/*
 * Answers a deferred call from any thread (on the owning loop's thread
 * it is queued directly, elsewhere it is encoded here and posted). Same
 * arguments and results as ipc_request_reply, plus -ETIMEDOUT when the
 * owning loop's post ring stayed full for a second.
 */
int ipc_reply_send(struct ipc_reply *h, const ProtobufCMessage *resp, int fd,
		   bool has_more);

/* ipc_reply_send with an already serialized response (e.g. assembled
 * ReadBuffers slices): bytes[0..len) become reply_proto as they are. */
int ipc_reply_send_raw(struct ipc_reply *h, const uint8_t *bytes, size_t len,
		       int fd, bool has_more);

/* Rejects a deferred call (success:false, has_more:false). Any thread. */
int ipc_reply_reject(struct ipc_reply *h);

#endif
