// SPDX-License-Identifier: Apache-2.0
// The host: service registry, BindService and InvokeMethod dispatch per
// spec/ipc-wire.md §4, request errors, and the reply paths (immediate,
// deferred from any thread through the owning loop, streamed, dropped).
#include "ipc/host.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipc/ipc_int.h"
#include "ipc/log.h"

#define IPC_TAG "ipc-host"
/* How long a foreign thread waits for room in a loop's post ring. */
#define IPC_REPLY_POST_WAIT_MS 1000u

typedef Perfetto__Protos__IPCFrame__BindServiceReply__MethodInfo IpcMethodInfo;

/* One exposed service. Immutable once the host serves. */
struct ipc_host_service {
	const ProtobufCServiceDescriptor *desc;	/* methods, types, names */
	ipc_method_fn *handlers;	/* per method, in declaration order */
	void *ctx;			/* handlers' context */
	IpcMethodInfo *infos;		/* BindServiceReply.methods, prebuilt */
	IpcMethodInfo **info_ptrs;	/* pointers to infos, for protobuf-c */
};

/* A listener bound to its host and loop; freed with the host, since
 * the listener may outlive ipc_listener_close until its last completion. */
struct ipc_host_listener {
	struct ipc_host *host;		/* serving host */
	struct ipc_loop *loop;		/* the acceptor's loop */
	struct ipc_host_listener *next;	/* host's list */
};

struct ipc_host {
	struct ipc_host_ops ops;	/* connection events */
	void *ctx;			/* their context */
	struct ipc_host_service *svcs;	/* service id i+1 is svcs[i] */
	unsigned nsvcs;			/* services exposed */
	struct ipc_host_listener *listeners;	/* accept contexts */
};

/* An InvokeMethod being handled; lives on the dispatcher's stack. */
struct ipc_request {
	struct ipc_conn *conn;		/* where it came from */
	const ProtobufCMethodDescriptor *method;	/* what is called */
	struct ipc_reply reply;		/* its reply handle */
	bool deferred;			/* the handler kept a handle */
	bool streamed;			/* a has_more reply went out */
};

int ipc_host_create(struct ipc_host **out, const struct ipc_host_ops *ops,
		    void *ctx)
{
	struct ipc_host *h = calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	if (ops)
		h->ops = *ops;
	h->ctx = ctx;
	spn_log_init();
	*out = h;
	return 0;
}

void ipc_host_destroy(struct ipc_host *h)
{
	if (!h)
		return;
	for (unsigned i = 0; i < h->nsvcs; i++) {
		free(h->svcs[i].handlers);
		free(h->svcs[i].infos);
		free(h->svcs[i].info_ptrs);
	}
	while (h->listeners) {
		struct ipc_host_listener *hl = h->listeners;

		h->listeners = hl->next;
		free(hl);
	}
	free(h->svcs);
	free(h);
}

int ipc_host_add_service(struct ipc_host *h,
			 const ProtobufCServiceDescriptor *desc,
			 const ipc_method_fn *handlers, void *ctx)
{
	struct ipc_host_service *s, *svcs;
	unsigned n = desc->n_methods;

	for (unsigned i = 0; i < h->nsvcs; i++) {
		if (strcmp(h->svcs[i].desc->short_name, desc->short_name) == 0)
			return -EEXIST;
	}
	svcs = realloc(h->svcs, (h->nsvcs + 1) * sizeof(*svcs));
	if (!svcs)
		return -ENOMEM;
	h->svcs = svcs;
	s = &svcs[h->nsvcs];
	memset(s, 0, sizeof(*s));
	s->desc = desc;
	s->ctx = ctx;
	s->handlers = calloc(n ? n : 1, sizeof(*s->handlers));
	s->infos = calloc(n ? n : 1, sizeof(*s->infos));
	s->info_ptrs = calloc(n ? n : 1, sizeof(*s->info_ptrs));
	if (!s->handlers || !s->infos || !s->info_ptrs) {
		free(s->handlers);
		free(s->infos);
		free(s->info_ptrs);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n; i++) {
		IpcMethodInfo *mi = &s->infos[i];

		perfetto__protos__ipcframe__bind_service_reply__method_info__init(mi);
		mi->has_id = 1;
		mi->id = i + 1;
		/* protobuf-c wants char *; the frame is only ever packed. */
		mi->name = (char *)desc->methods[i].name;
		s->info_ptrs[i] = mi;
		if (handlers)
			s->handlers[i] = handlers[i];
	}
	return (int)++h->nsvcs;
}

/* ---- sending from the loop thread ---- */

/* Queues b on connection id of loop, or drops it if the connection is
 * gone. Loop thread. */
static int ipc_host_deliver(struct ipc_loop *loop, uint64_t conn_id,
			    struct ipc_txbuf *b)
{
	struct ipc_conn *c = ipc_conn_lookup(loop, conn_id);

	if (!c) {
		ipc_txbuf_free(b);
		return 0;	/* the connection is gone: a no-op */
	}
	return ipc_conn_send(c, b);
}

static void ipc_host_deliver_post(struct ipc_loop *loop, void *arg,
				  uint64_t conn_id)
{
	ipc_host_deliver(loop, conn_id, arg);
}

/* Sends b for h from any thread. */
static int ipc_reply_submit(struct ipc_reply *h, struct ipc_txbuf *b)
{
	int err;

	if (ipc_loop_on_thread(h->loop))
		return ipc_host_deliver(h->loop, h->conn_id, b);
	err = ipc_loop_post_wait(h->loop, ipc_host_deliver_post, b, h->conn_id,
				 IPC_REPLY_POST_WAIT_MS);
	if (err) {
		spn_log_error(IPC_TAG, "reply to request %llu dropped: the "
			      "loop's post ring stayed full",
			      (unsigned long long)h->request_id);
		ipc_txbuf_free(b);
	}
	return err;
}

/* Common path of every reply from a method implementation. */
static int ipc_reply_common(struct ipc_reply *h, bool success,
			    const ProtobufCMessage *resp, const uint8_t *raw,
			    size_t raw_len, int fd, bool has_more)
{
	struct ipc_reply_desc d = {
		.request_id = h->request_id,
		.success = success,
		.has_more = success && has_more,
	};
	struct ipc_txbuf *b;
	int err;

	if (h->done)
		return -EALREADY;
	if (resp && h->out && resp->descriptor != h->out)
		return -EINVAL;
	if (!d.has_more)
		h->done = true;
	if (h->drop_reply)
		return 0;
	err = ipc_txbuf_reply(&d, resp, raw, raw_len, fd, &b);
	if (err) {
		struct ipc_reply_desc rej = {.request_id = h->request_id};

		spn_log_error(IPC_TAG, "reply to request %llu: %s; rejecting "
			      "the call", (unsigned long long)h->request_id,
			      strerror(-err));
		/* The caller must not wait for a reply that cannot come. */
		h->done = true;
		if (ipc_txbuf_reply(&rej, NULL, NULL, 0, -1, &b) == 0)
			ipc_reply_submit(h, b);
		return err;
	}
	return ipc_reply_submit(h, b);
}

int ipc_reply_send(struct ipc_reply *h, const ProtobufCMessage *resp, int fd,
		   bool has_more)
{
	if (!resp)
		return -EINVAL;
	return ipc_reply_common(h, true, resp, NULL, 0, fd, has_more);
}

int ipc_reply_send_raw(struct ipc_reply *h, const uint8_t *bytes, size_t len,
		       int fd, bool has_more)
{
	if (!bytes && len)
		return -EINVAL;
	return ipc_reply_common(h, true, NULL, bytes, len, fd, has_more);
}

int ipc_reply_reject(struct ipc_reply *h)
{
	return ipc_reply_common(h, false, NULL, NULL, 0, -1, false);
}

/* ---- the request API ---- */

struct ipc_conn *ipc_request_conn(const struct ipc_request *req)
{
	return req->conn;
}

const ProtobufCMethodDescriptor *ipc_request_method(
	const struct ipc_request *req)
{
	return req->method;
}

uint64_t ipc_request_id(const struct ipc_request *req)
{
	return req->reply.request_id;
}

bool ipc_request_drop_reply(const struct ipc_request *req)
{
	return req->reply.drop_reply;
}

int ipc_request_take_fd(struct ipc_request *req)
{
	return ipc_conn_take_fd(req->conn);
}

int ipc_request_reply(struct ipc_request *req, const ProtobufCMessage *resp,
		      int fd, bool has_more)
{
	int err = ipc_reply_send(&req->reply, resp, fd, has_more);

	if (!err && has_more)
		req->streamed = true;
	return err;
}

int ipc_request_reject(struct ipc_request *req)
{
	return ipc_reply_reject(&req->reply);
}

void ipc_request_defer(struct ipc_request *req, struct ipc_reply *out)
{
	req->deferred = true;
	*out = req->reply;
}

/* ---- dispatch ---- */

/* Sends a frame built by protobuf-c (bind replies, request errors). */
static void ipc_host_send_frame(struct ipc_conn *c, const IpcFrame *f)
{
	struct ipc_txbuf *b;
	int err = ipc_txbuf_from_frame(f, -1, &b);

	if (err) {
		spn_log_error(IPC_TAG, "encoding a reply: %s", strerror(-err));
		return;
	}
	ipc_conn_send(c, b);
}

static void ipc_host_bind(struct ipc_host *h, struct ipc_conn *c,
			  const IpcFrame *in)
{
	Perfetto__Protos__IPCFrame__BindServiceReply rep =
		PERFETTO__PROTOS__IPCFRAME__BIND_SERVICE_REPLY__INIT;
	IpcFrame out = PERFETTO__PROTOS__IPCFRAME__INIT;
	const char *name = in->msg_bind_service->service_name;

	for (unsigned i = 0; name && i < h->nsvcs; i++) {
		struct ipc_host_service *s = &h->svcs[i];

		if (strcmp(s->desc->short_name, name) != 0)
			continue;
		rep.has_success = 1;
		rep.success = 1;
		rep.has_service_id = 1;
		rep.service_id = i + 1;
		rep.n_methods = s->desc->n_methods;
		rep.methods = s->info_ptrs;
		break;
	}
	if (!rep.has_success)
		spn_log_debug(IPC_TAG, "bind to unknown service \"%s\"",
			      name ? name : "");
	out.has_request_id = 1;
	out.request_id = in->request_id;
	out.msg_case = PERFETTO__PROTOS__IPCFRAME__MSG_MSG_BIND_SERVICE_REPLY;
	out.msg_bind_service_reply = &rep;
	ipc_host_send_frame(c, &out);
}

/* The early success:false of spec §4 (sent even with drop_reply). */
static void ipc_host_dispatch_error(struct ipc_conn *c, uint64_t request_id)
{
	struct ipc_reply_desc d = {.request_id = request_id,
				   .dispatch_error = true};
	struct ipc_txbuf *b;

	if (ipc_txbuf_reply(&d, NULL, NULL, 0, -1, &b) == 0)
		ipc_conn_send(c, b);
}

static void ipc_host_invoke(struct ipc_host *h, struct ipc_conn *c,
			    const IpcFrame *in)
{
	const Perfetto__Protos__IPCFrame__InvokeMethod *im =
		in->msg_invoke_method;
	const ProtobufCMethodDescriptor *md;
	struct ipc_host_service *s;
	struct ipc_request req;
	ProtobufCMessage *args;
	uint64_t fallbacks;
	ipc_method_fn fn;

	if (im->service_id == 0 || im->service_id > h->nsvcs) {
		spn_log_debug(IPC_TAG, "invoke of unknown service %u",
			      im->service_id);
		ipc_host_dispatch_error(c, in->request_id);
		return;
	}
	s = &h->svcs[im->service_id - 1];
	if (im->method_id == 0 || im->method_id > s->desc->n_methods) {
		spn_log_debug(IPC_TAG, "invoke of unknown method %u of %s",
			      im->method_id, s->desc->short_name);
		ipc_host_dispatch_error(c, in->request_id);
		return;
	}
	md = &s->desc->methods[im->method_id - 1];
	fallbacks = ipc_arena_fallbacks(c->loop);
	args = protobuf_c_message_unpack(md->input, ipc_arena_get(c->loop),
					 im->args_proto.len,
					 im->args_proto.data);
	if (!args) {
		spn_log_debug(IPC_TAG, "%s: undecodable arguments", md->name);
		ipc_host_dispatch_error(c, in->request_id);
		return;
	}
	memset(&req, 0, sizeof(req));
	req.conn = c;
	req.method = md;
	req.reply.loop = c->loop;
	req.reply.conn_id = c->id;
	req.reply.request_id = in->request_id;
	req.reply.out = md->output;
	req.reply.drop_reply = im->has_drop_reply && im->drop_reply;
	fn = s->handlers[im->method_id - 1];
	if (fn)
		fn(&req, args, s->ctx);
	else
		spn_log_debug(IPC_TAG, "%s has no handler", md->name);
	/* Wholly in the arena: the caller's release to its mark frees it. */
	if (ipc_arena_fallbacks(c->loop) != fallbacks)
		protobuf_c_message_free_unpacked(args, ipc_arena_get(c->loop));
	if (!req.deferred && !req.reply.done) {
		if (fn && !req.reply.drop_reply)
			spn_log_warn(IPC_TAG, "%s returned without a final "
				     "reply; rejecting the call", md->name);
		ipc_reply_reject(&req.reply);
	}
}

static void ipc_host_request_error(struct ipc_conn *c, uint64_t request_id)
{
	Perfetto__Protos__IPCFrame__RequestError err =
		PERFETTO__PROTOS__IPCFRAME__REQUEST_ERROR__INIT;
	IpcFrame out = PERFETTO__PROTOS__IPCFRAME__INIT;

	err.error = (char *)"unknown request";
	out.has_request_id = 1;
	out.request_id = request_id;
	out.msg_case = PERFETTO__PROTOS__IPCFRAME__MSG_MSG_REQUEST_ERROR;
	out.msg_request_error = &err;
	ipc_host_send_frame(c, &out);
}

static void ipc_host_on_frame(struct ipc_conn *c, const uint8_t *payload,
			      uint32_t len)
{
	struct ipc_host *h = c->proto;
	IpcFrame *f;

	struct ipc_loop *loop = c->loop;
	ProtobufCAllocator *arena = ipc_arena_get(loop);
	size_t mark = ipc_arena_mark(loop);
	uint64_t fallbacks = ipc_arena_fallbacks(loop);

	f = perfetto__protos__ipcframe__unpack(arena, len, payload);
	if (!f) {
		/* spec §2: undecodable frames are dropped silently. */
		spn_log_debug(IPC_TAG, "pid %d: undecodable frame of %u bytes "
			      "dropped", (int)c->cred.pid, len);
		ipc_arena_release_to(loop, mark);
		return;
	}
	switch (f->msg_case) {
	case PERFETTO__PROTOS__IPCFRAME__MSG_MSG_BIND_SERVICE:
		ipc_host_bind(h, c, f);
		break;
	case PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD:
		ipc_host_invoke(h, c, f);
		break;
	case PERFETTO__PROTOS__IPCFRAME__MSG_SET_PEER_IDENTITY:
		/* AF_UNIX: SO_PEERCRED wins (spec §3.6). */
		break;
	default:
		ipc_host_request_error(c, f->request_id);
		break;
	}
	/* Wholly in the arena: the release to the mark below frees it. */
	if (ipc_arena_fallbacks(loop) != fallbacks)
		perfetto__protos__ipcframe__free_unpacked(f, arena);
	/* The frame and its arguments are done with (the connection may
	 * be too: c is not used past this point). */
	ipc_arena_release_to(loop, mark);
}

static void ipc_host_on_close(struct ipc_conn *c, int reason)
{
	struct ipc_host *h = c->proto;

	(void)reason;
	if (h->ops.on_disconnect)
		h->ops.on_disconnect(h->ctx, c);
}

static const struct ipc_conn_ops ipc_host_conn_ops = {
	.on_frame = ipc_host_on_frame,
	.on_close = ipc_host_on_close,
};

/* ---- accepting and adopting ---- */

static void ipc_host_adopt_here(struct ipc_host *h, struct ipc_loop *loop,
				int fd, const struct ipc_peer_cred *cred)
{
	struct ipc_conn *c;

	if (loop->destroying) {
		close(fd);
		return;
	}
	if (ipc_conn_adopt(loop, fd, cred, &ipc_host_conn_ops, h, &c) != 0) {
		spn_log_error(IPC_TAG, "out of memory adopting pid %d",
			      (int)cred->pid);
		return;
	}
	c->busy++;
	if (h->ops.on_connect)
		h->ops.on_connect(h->ctx, c);
	c->busy--;
	ipc_conn_start(c);
}

/* A connection in transit to another loop. */
struct ipc_host_handoff {
	struct ipc_host *host;		/* serving host */
	int fd;				/* the socket */
	struct ipc_peer_cred cred;	/* its peer */
};

static void ipc_host_adopt_post(struct ipc_loop *loop, void *arg,
				uint64_t u64)
{
	struct ipc_host_handoff *ho = arg;

	(void)u64;
	ipc_host_adopt_here(ho->host, loop, ho->fd, &ho->cred);
	free(ho);
}

int ipc_host_adopt(struct ipc_host *h, struct ipc_loop *loop, int fd,
		   const struct ipc_peer_cred *cred)
{
	struct ipc_host_handoff *ho;
	int err;

	if (ipc_loop_on_thread(loop)) {
		ipc_host_adopt_here(h, loop, fd, cred);
		return 0;
	}
	ho = malloc(sizeof(*ho));
	if (!ho) {
		close(fd);
		return -ENOMEM;
	}
	ho->host = h;
	ho->fd = fd;
	ho->cred = *cred;
	err = ipc_loop_post_wait(loop, ipc_host_adopt_post, ho, 0,
				 IPC_REPLY_POST_WAIT_MS);
	if (err) {
		spn_log_error(IPC_TAG, "connection of pid %d dropped: the "
			      "serving loop is not draining its posts",
			      (int)cred->pid);
		close(fd);
		free(ho);
	}
	return err;
}

static void ipc_host_accept(void *arg, int fd, const struct ipc_peer_cred *cred)
{
	struct ipc_host_listener *hl = arg;
	struct ipc_host *h = hl->host;
	struct ipc_loop *target = NULL;

	if (h->ops.pick_loop)
		target = h->ops.pick_loop(h->ctx, cred);
	if (!target)
		target = hl->loop;
	spn_log_debug(IPC_TAG, "accepted pid %d uid %u", (int)cred->pid,
		      (unsigned)cred->uid);
	ipc_host_adopt(h, target, fd, cred);
}

int ipc_host_listen(struct ipc_host *h, struct ipc_loop *loop,
		    const char *name, struct ipc_listener **out)
{
	struct ipc_host_listener *hl;
	struct ipc_listener *l;
	int err;

	hl = malloc(sizeof(*hl));
	if (!hl)
		return -ENOMEM;
	hl->host = h;
	hl->loop = loop;
	err = ipc_listen(loop, name, ipc_host_accept, hl, &l);
	if (err) {
		free(hl);
		return err;
	}
	hl->next = h->listeners;
	h->listeners = hl;
	if (out)
		*out = l;
	return 0;
}
