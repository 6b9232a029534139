// SPDX-License-Identifier: Apache-2.0
// The client side of the IPC protocol: connect to a socket, bind a service
// by name, invoke methods by name with a callback per reply (streaming
// aware), send an fd with a request, and learn when the peer goes away.
// Plus a small blocking wrapper (its own loop on the caller's thread) for
// the CLI.
//
// The asynchronous client lives on an ipc_loop and every call is for that
// loop's thread. It follows the handshake order of spec/ipc-wire.md §9:
// invoke only after the bind callback; requests may be pipelined without
// waiting for replies. Request ids start at 1 and count every frame sent.
#ifndef SPN_IPC_CLIENT_H
#define SPN_IPC_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "ipc/conn.h"
#include "ipc/loop.h"

struct ipc_client;
struct ipc_proxy;

/* One reply (or the failure) of an invoked method, seen by its callback. */
struct ipc_client_reply {
	/* 0: msg holds a reply. Otherwise the call is over and msg is NULL:
	 * -EREMOTEIO the host rejected it (success:false);
	 * -EPROTO the host answered RequestError or the wrong reply type;
	 * -EBADMSG reply_proto did not decode as the response type;
	 * -ECONNRESET the connection went away (or the client was destroyed)
	 * before the final reply. */
	int status;
	const ProtobufCMessage *msg;	/* decoded response, library-owned */
	bool has_more;			/* more replies follow (status 0 only) */
	struct ipc_conn *conn;		/* for the fd; NULL on failures */
	ProtobufCMessage *owned;	/* msg while the library still owns it */
};

/* Called once per reply; a call ends with has_more false or status < 0.
 * Runs on the loop thread; may invoke, cancel or destroy the client. */
typedef void (*ipc_reply_cb)(void *arg, struct ipc_client_reply *r);

/* Takes the fd that came with this reply frame (close-on-exec; caller
 * owns it), or -1. Untaken fds are closed. */
int ipc_client_reply_take_fd(struct ipc_client_reply *r);

/* Takes ownership of the decoded message (free it with
 * protobuf_c_message_free_unpacked(msg, NULL)), or NULL on failures. */
ProtobufCMessage *ipc_client_reply_take_msg(struct ipc_client_reply *r);

/* Connection events of a client, on the loop thread. */
struct ipc_client_ops {
	/* The connect finished: status 0, or -errno (then on_disconnect
	 * follows). May be NULL. */
	void (*on_connect)(void *arg, struct ipc_client *cl, int status);
	/* The connection is gone (once): EOF (reason 0) or -errno. Every
	 * pending call has already had its one failure. May be NULL. */
	void (*on_disconnect)(void *arg, struct ipc_client *cl, int reason);
};

/*
 * Starts connecting to socket `name` (a path or "@abstract"). Binds and
 * invokes may be issued at once; they are sent when connected. Returns 0
 * (and *out), -ENAMETOOLONG, -ENOMEM, -EBUSY or socket()'s -errno. Loop
 * thread.
 */
int ipc_client_connect(struct ipc_loop *loop, const char *name,
		       const struct ipc_client_ops *ops, void *arg,
		       struct ipc_client **out);

/* Closes the connection (pending calls fail with -ECONNRESET; the
 * on_disconnect callback does not run) and frees the client and its
 * proxies. Safe inside the client's own callbacks. Loop thread. */
void ipc_client_destroy(struct ipc_client *cl);

/* True while connecting or connected. */
bool ipc_client_connected(const struct ipc_client *cl);

/* The connection (peer credentials, send limits), NULL once gone. */
struct ipc_conn *ipc_client_conn(const struct ipc_client *cl);

/* Called with the bound service (owned by the client, valid until it is
 * destroyed) or NULL and status < 0: -ENOENT the host does not expose the
 * service, -ECONNRESET / -EPROTO as for replies. */
typedef void (*ipc_bind_cb)(void *arg, struct ipc_proxy *proxy, int status);

/*
 * Binds the service whose short name is desc->short_name. Returns 0,
 * -ENOTCONN (client closed), -ENOMEM. Loop thread.
 */
int ipc_client_bind(struct ipc_client *cl,
		    const ProtobufCServiceDescriptor *desc, ipc_bind_cb cb,
		    void *arg);

/* Flags of ipc_client_invoke. */
#define IPC_INVOKE_DROP_REPLY 1u	/* ask for no reply; cb must be NULL */

/*
 * Invokes `method` of a bound service with request req (of the method's
 * input type) and, when fd >= 0, a duplicate of fd attached. cb runs for
 * each reply. *request_id (if not NULL) receives the id for
 * ipc_client_cancel. Returns 0; -ENOENT no such method in the descriptor;
 * -EOPNOTSUPP the host did not list it (an older service); -EINVAL wrong
 * request type or flags; -ENOTCONN; -EMSGSIZE; -ENOMEM; or the fd dup's
 * -errno. On error cb never runs. Loop thread.
 */
int ipc_client_invoke(struct ipc_proxy *p, const char *method,
		      const ProtobufCMessage *req, int fd, unsigned flags,
		      ipc_reply_cb cb, void *arg, uint64_t *request_id);

/* Forgets a pending call: its callback will not run again. Returns 0 or
 * -ENOENT. Loop thread. */
int ipc_client_cancel(struct ipc_client *cl, uint64_t request_id);

/* The method id the host gave `method` (0 when not listed). */
uint32_t ipc_proxy_method_id(const struct ipc_proxy *p, const char *method);

/* The host's id for the bound service. */
uint32_t ipc_proxy_service_id(const struct ipc_proxy *p);

/* ---- blocking wrapper ---- */

struct ipc_sync;

/*
 * Connects with a private loop driven by the calling thread (which must
 * make every later ipc_sync_* call). timeout_ms < 0: no limit. Returns 0,
 * -ETIMEDOUT, or the connect's -errno (-ENOENT, -ECONNREFUSED...).
 */
int ipc_sync_connect(const char *name, int timeout_ms, struct ipc_sync **out);

/* Disconnects and frees. */
void ipc_sync_close(struct ipc_sync *s);

/* Binds a service. Returns 0 (and *out, valid until ipc_sync_close),
 * -ENOENT (not exposed), -ETIMEDOUT, -ECONNRESET. */
int ipc_sync_bind(struct ipc_sync *s, const ProtobufCServiceDescriptor *desc,
		  struct ipc_proxy **out, int timeout_ms);

/*
 * Calls a unary method and waits for its reply. *reply (if not NULL)
 * receives the decoded response (free with
 * protobuf_c_message_free_unpacked); *reply_fd (if not NULL) the fd that
 * came with it or -1. Returns 0, an ipc_client_reply status, an
 * ipc_client_invoke error, or -ETIMEDOUT (the call is then forgotten).
 */
int ipc_sync_call(struct ipc_sync *s, struct ipc_proxy *p, const char *method,
		  const ProtobufCMessage *req, int fd, ProtobufCMessage **reply,
		  int *reply_fd, int timeout_ms);

/* Calls a (streaming) method and runs cb for each reply until the final
 * one. Returns 0 when the stream ended with success, else as
 * ipc_sync_call. */
int ipc_sync_stream(struct ipc_sync *s, struct ipc_proxy *p,
		    const char *method, const ProtobufCMessage *req, int fd,
		    ipc_reply_cb cb, void *arg, int timeout_ms);

/* The wrapper's loop and client, for mixing in asynchronous calls. */
struct ipc_loop *ipc_sync_loop(struct ipc_sync *s);
struct ipc_client *ipc_sync_client(struct ipc_sync *s);

#endif
