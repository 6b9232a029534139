// SPDX-License-Identifier: Apache-2.0
// The asynchronous IPC client (bind, invoke, replies, disconnects) and the
// blocking wrapper the CLI uses.
//
// Every pending call gets exactly one ending: its final reply, a
// rejection, or one failure when the connection goes. Callbacks may
// re-enter the client (invoke, cancel, destroy): a pending entry is
// unlinked before its final callback, nothing is touched after a callback
// but the client itself, and a client destroyed inside a callback is freed
// when the outermost callback returns (busy count).
#include "ipc/client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ipc/ipc_int.h"
#include "ipc/log.h"

#define IPC_TAG "ipc-client"

/* A bound service. */
struct ipc_proxy {
	struct ipc_client *client;	/* owner */
	const ProtobufCServiceDescriptor *desc;	/* local view of it */
	uint32_t service_id;		/* host's id */
	uint32_t *method_ids;		/* host's id per desc method, 0 = absent */
	struct ipc_proxy *next;		/* client's list */
};

/* What a pending request waits for. */
enum ipc_pending_kind {
	IPC_PENDING_BIND,		/* a BindServiceReply */
	IPC_PENDING_INVOKE,		/* InvokeMethodReply frames */
};

/* A request sent and not yet finished. */
struct ipc_pending {
	uint64_t id;			/* request_id */
	enum ipc_pending_kind kind;	/* bind or invoke */
	ipc_bind_cb bind_cb;		/* bind: callback */
	ipc_reply_cb reply_cb;		/* invoke: callback */
	void *arg;			/* the callback's argument */
	const ProtobufCServiceDescriptor *desc;	/* bind: the service */
	const ProtobufCMessageDescriptor *out;	/* invoke: response type */
	struct ipc_pending *next;	/* next, in request order */
};

struct ipc_client {
	struct ipc_loop *loop;		/* owning loop */
	struct ipc_conn *conn;		/* NULL once closed */
	struct ipc_client_ops ops;	/* events */
	void *arg;			/* their argument */
	uint64_t last_request_id;	/* ids count every frame from 1 */
	struct ipc_pending *pending;	/* oldest first */
	struct ipc_pending **pending_tail;	/* where to append */
	struct ipc_proxy *proxies;	/* bound services */
	unsigned busy;			/* callbacks running */
	bool destroyed;			/* free when busy drops to 0 */
};

/* ---- replies ---- */

int ipc_client_reply_take_fd(struct ipc_client_reply *r)
{
	return r->conn ? ipc_conn_take_fd(r->conn) : -1;
}

ProtobufCMessage *ipc_client_reply_take_msg(struct ipc_client_reply *r)
{
	ProtobufCMessage *m = r->owned;

	r->owned = NULL;
	return m;
}

/* ---- pending list ---- */

static struct ipc_pending *ipc_pending_unlink(struct ipc_client *cl,
					      uint64_t id)
{
	struct ipc_pending **pp = &cl->pending, *p;

	while ((p = *pp) && p->id != id)
		pp = &p->next;
	if (!p)
		return NULL;
	*pp = p->next;
	if (cl->pending_tail == &p->next)
		cl->pending_tail = pp;
	return p;
}

static struct ipc_pending *ipc_pending_find(struct ipc_client *cl, uint64_t id)
{
	struct ipc_pending *p = cl->pending;

	while (p && p->id != id)
		p = p->next;
	return p;
}

/* Ends an unlinked pending request with a failure and frees it. */
static void ipc_pending_fail(struct ipc_client *cl, struct ipc_pending *p,
			     int status)
{
	struct ipc_client_reply r = {.status = status};

	cl->busy++;
	if (p->kind == IPC_PENDING_BIND) {
		if (p->bind_cb)
			p->bind_cb(p->arg, NULL, status);
	} else if (p->reply_cb) {
		p->reply_cb(p->arg, &r);
	}
	cl->busy--;
	free(p);
}

static void ipc_client_free(struct ipc_client *cl)
{
	while (cl->proxies) {
		struct ipc_proxy *p = cl->proxies;

		cl->proxies = p->next;
		free(p->method_ids);
		free(p);
	}
	while (cl->pending) {
		struct ipc_pending *p = cl->pending;

		cl->pending = p->next;
		free(p);
	}
	free(cl);
}

/* Frees a destroyed client once no callback of it runs. */
static void ipc_client_release(struct ipc_client *cl)
{
	if (cl->destroyed && cl->busy == 0)
		ipc_client_free(cl);
}

/* ---- frames ---- */

static void ipc_client_bind_reply(struct ipc_client *cl, struct ipc_pending *p,
				  const IpcFrame *f)
{
	const Perfetto__Protos__IPCFrame__BindServiceReply *br =
		f->msg_bind_service_reply;
	struct ipc_proxy *px;

	if (!br->has_success || !br->success) {
		ipc_pending_fail(cl, p, -ENOENT);
		return;
	}
	px = calloc(1, sizeof(*px));
	if (px)
		px->method_ids = calloc(p->desc->n_methods ? p->desc->n_methods
							   : 1,
					sizeof(uint32_t));
	if (!px || !px->method_ids) {
		free(px);
		ipc_pending_fail(cl, p, -ENOMEM);
		return;
	}
	px->client = cl;
	px->desc = p->desc;
	px->service_id = br->service_id;
	for (size_t i = 0; i < br->n_methods; i++) {
		const Perfetto__Protos__IPCFrame__BindServiceReply__MethodInfo
			*mi = br->methods[i];
		const ProtobufCMethodDescriptor *md;

		/* spec §3.2: entries without a name or id are ignored. */
		if (!mi->name || !mi->name[0] || mi->id == 0)
			continue;
		md = protobuf_c_service_descriptor_get_method_by_name(p->desc,
								      mi->name);
		if (md)
			px->method_ids[md - p->desc->methods] = mi->id;
	}
	px->next = cl->proxies;
	cl->proxies = px;
	cl->busy++;
	if (p->bind_cb)
		p->bind_cb(p->arg, px, 0);
	cl->busy--;
	free(p);
}

static void ipc_client_invoke_reply(struct ipc_client *cl,
				    struct ipc_pending *p, const IpcFrame *f)
{
	const Perfetto__Protos__IPCFrame__InvokeMethodReply *ir =
		f->msg_invoke_method_reply;
	struct ipc_client_reply r = {.conn = cl->conn};
	ipc_reply_cb cb = p->reply_cb;
	void *arg = p->arg;

	if (ir->has_success && ir->success) {
		r.owned = protobuf_c_message_unpack(p->out, NULL,
						    ir->reply_proto.len,
						    ir->reply_proto.data);
		r.msg = r.owned;
		r.status = r.owned ? 0 : -EBADMSG;
	} else {
		r.status = -EREMOTEIO;
	}
	r.has_more = r.status == 0 && ir->has_has_more && ir->has_more;
	if (!r.has_more) {
		ipc_pending_unlink(cl, p->id);
		free(p);
	}
	cl->busy++;
	if (cb)
		cb(arg, &r);
	cl->busy--;
	if (r.owned)
		protobuf_c_message_free_unpacked(r.owned, NULL);
}

static void ipc_client_on_frame(struct ipc_conn *c, const uint8_t *payload,
				uint32_t len)
{
	struct ipc_client *cl = c->proto;
	struct ipc_pending *p;
	IpcFrame *f;

	if (cl->destroyed)
		return;
	if (ipc_frame_unpack(payload, len, &f) != 0) {
		spn_log_debug(IPC_TAG, "undecodable frame of %u bytes dropped",
			      len);
		return;
	}
	cl->busy++;
	p = ipc_pending_find(cl, f->request_id);
	if (!p)
		goto out;	/* unknown request_id: ignored (spec §6) */
	switch (f->msg_case) {
	case PERFETTO__PROTOS__IPCFRAME__MSG_MSG_BIND_SERVICE_REPLY:
		ipc_pending_unlink(cl, p->id);
		if (p->kind != IPC_PENDING_BIND)
			ipc_pending_fail(cl, p, -EPROTO);
		else
			ipc_client_bind_reply(cl, p, f);
		break;
	case PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD_REPLY:
		if (p->kind != IPC_PENDING_INVOKE) {
			ipc_pending_unlink(cl, p->id);
			ipc_pending_fail(cl, p, -EPROTO);
		} else {
			ipc_client_invoke_reply(cl, p, f);
		}
		break;
	case PERFETTO__PROTOS__IPCFRAME__MSG_MSG_REQUEST_ERROR:
		spn_log_debug(IPC_TAG, "request %llu: error \"%s\"",
			      (unsigned long long)p->id,
			      f->msg_request_error->error
				      ? f->msg_request_error->error
				      : "");
		ipc_pending_unlink(cl, p->id);
		ipc_pending_fail(cl, p, -EPROTO);
		break;
	default:
		break;
	}
out:
	ipc_frame_free(f);
	cl->busy--;
	ipc_client_release(cl);
}

static void ipc_client_on_open(struct ipc_conn *c, int status)
{
	struct ipc_client *cl = c->proto;

	if (cl->destroyed || !cl->ops.on_connect)
		return;
	cl->busy++;
	cl->ops.on_connect(cl->arg, cl, status);
	cl->busy--;
	ipc_client_release(cl);
}

static void ipc_client_on_close(struct ipc_conn *c, int reason)
{
	struct ipc_client *cl = c->proto;
	struct ipc_pending *p;

	cl->conn = NULL;
	cl->busy++;
	/* One failure per pending call, oldest first; callbacks may add
	 * requests, which fail at once with -ENOTCONN. */
	while ((p = cl->pending)) {
		cl->pending = p->next;
		if (!cl->pending)
			cl->pending_tail = &cl->pending;
		ipc_pending_fail(cl, p, -ECONNRESET);
	}
	if (!cl->destroyed && cl->ops.on_disconnect)
		cl->ops.on_disconnect(cl->arg, cl, reason);
	cl->busy--;
	ipc_client_release(cl);
}

static const struct ipc_conn_ops ipc_client_conn_ops = {
	.on_frame = ipc_client_on_frame,
	.on_open = ipc_client_on_open,
	.on_close = ipc_client_on_close,
};

/* ---- API ---- */

int ipc_client_connect(struct ipc_loop *loop, const char *name,
		       const struct ipc_client_ops *ops, void *arg,
		       struct ipc_client **out)
{
	struct ipc_client *cl = calloc(1, sizeof(*cl));
	int err;

	if (!cl)
		return -ENOMEM;
	cl->loop = loop;
	if (ops)
		cl->ops = *ops;
	cl->arg = arg;
	cl->pending_tail = &cl->pending;
	err = ipc_conn_connect(loop, name, &ipc_client_conn_ops, cl, &cl->conn);
	if (err) {
		free(cl);
		return err;
	}
	*out = cl;
	return 0;
}

void ipc_client_destroy(struct ipc_client *cl)
{
	if (!cl || cl->destroyed)
		return;
	cl->destroyed = true;
	cl->busy++;
	if (cl->conn)
		ipc_conn_close(cl->conn, -ECANCELED);
	cl->busy--;
	ipc_client_release(cl);
}

bool ipc_client_connected(const struct ipc_client *cl)
{
	return cl->conn != NULL;
}

struct ipc_conn *ipc_client_conn(const struct ipc_client *cl)
{
	return cl->conn;
}

/* Queues frame f (its request_id is set here) with optional fd. */
static int ipc_client_send(struct ipc_client *cl, IpcFrame *f, int fd,
			   uint64_t *id)
{
	struct ipc_txbuf *b;
	int err;

	if (!cl->conn || cl->destroyed)
		return -ENOTCONN;
	f->has_request_id = 1;
	f->request_id = cl->last_request_id + 1;
	err = ipc_txbuf_from_frame(f, fd, &b);
	if (err)
		return err;
	err = ipc_conn_send(cl->conn, b);
	if (err)
		return err;
	*id = ++cl->last_request_id;
	return 0;
}

static void ipc_client_link_pending(struct ipc_client *cl,
				    struct ipc_pending *p)
{
	*cl->pending_tail = p;
	cl->pending_tail = &p->next;
}

int ipc_client_bind(struct ipc_client *cl,
		    const ProtobufCServiceDescriptor *desc, ipc_bind_cb cb,
		    void *arg)
{
	Perfetto__Protos__IPCFrame__BindService bs =
		PERFETTO__PROTOS__IPCFRAME__BIND_SERVICE__INIT;
	IpcFrame f = PERFETTO__PROTOS__IPCFRAME__INIT;
	struct ipc_pending *p;
	int err;

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	bs.service_name = (char *)desc->short_name;
	f.msg_case = PERFETTO__PROTOS__IPCFRAME__MSG_MSG_BIND_SERVICE;
	f.msg_bind_service = &bs;
	err = ipc_client_send(cl, &f, -1, &p->id);
	if (err) {
		free(p);
		return err;
	}
	p->kind = IPC_PENDING_BIND;
	p->bind_cb = cb;
	p->arg = arg;
	p->desc = desc;
	ipc_client_link_pending(cl, p);
	return 0;
}

uint32_t ipc_proxy_method_id(const struct ipc_proxy *p, const char *method)
{
	const ProtobufCMethodDescriptor *md =
		protobuf_c_service_descriptor_get_method_by_name(p->desc,
								 method);

	return md ? p->method_ids[md - p->desc->methods] : 0;
}

uint32_t ipc_proxy_service_id(const struct ipc_proxy *p)
{
	return p->service_id;
}

int ipc_client_invoke(struct ipc_proxy *px, const char *method,
		      const ProtobufCMessage *req, int fd, unsigned flags,
		      ipc_reply_cb cb, void *arg, uint64_t *request_id)
{
	Perfetto__Protos__IPCFrame__InvokeMethod im =
		PERFETTO__PROTOS__IPCFRAME__INVOKE_METHOD__INIT;
	IpcFrame f = PERFETTO__PROTOS__IPCFRAME__INIT;
	struct ipc_client *cl = px->client;
	const ProtobufCMethodDescriptor *md;
	struct ipc_pending *p = NULL;
	bool drop = flags & IPC_INVOKE_DROP_REPLY;
	uint8_t small[256], *args = small;
	uint64_t id;
	size_t n;
	int err;

	if ((flags & ~IPC_INVOKE_DROP_REPLY) || (drop && cb) || !req)
		return -EINVAL;
	md = protobuf_c_service_descriptor_get_method_by_name(px->desc, method);
	if (!md)
		return -ENOENT;
	if (req->descriptor != md->input)
		return -EINVAL;
	if (px->method_ids[md - px->desc->methods] == 0)
		return -EOPNOTSUPP;
	n = protobuf_c_message_get_packed_size(req);
	if (n > SPN_IPC_MAX_FRAME_PAYLOAD)
		return -EMSGSIZE;
	if (n > sizeof(small)) {
		args = malloc(n);
		if (!args)
			return -ENOMEM;
	}
	protobuf_c_message_pack(req, args);
	if (!drop) {
		p = calloc(1, sizeof(*p));
		if (!p) {
			err = -ENOMEM;
			goto out;
		}
	}
	im.has_service_id = 1;
	im.service_id = px->service_id;
	im.has_method_id = 1;
	im.method_id = px->method_ids[md - px->desc->methods];
	im.has_args_proto = 1;
	im.args_proto.data = args;
	im.args_proto.len = n;
	/* Perfetto clients always encode drop_reply (spec §3.3). */
	im.has_drop_reply = 1;
	im.drop_reply = drop;
	f.msg_case = PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD;
	f.msg_invoke_method = &im;
	err = ipc_client_send(cl, &f, fd, &id);
	if (err) {
		free(p);
		goto out;
	}
	if (p) {
		p->id = id;
		p->kind = IPC_PENDING_INVOKE;
		p->reply_cb = cb;
		p->arg = arg;
		p->out = md->output;
		ipc_client_link_pending(cl, p);
	}
	if (request_id)
		*request_id = id;
out:
	if (args != small)
		free(args);
	return err;
}

int ipc_client_cancel(struct ipc_client *cl, uint64_t request_id)
{
	struct ipc_pending *p = ipc_pending_unlink(cl, request_id);

	if (!p)
		return -ENOENT;
	free(p);
	return 0;
}

/* ---- blocking wrapper ---- */

struct ipc_sync {
	struct ipc_loop *loop;		/* private loop, caller's thread */
	struct ipc_client *cl;		/* the client */
	bool connect_done;		/* on_connect ran */
	int connect_status;		/* its status */
};

/* State of one blocking call. */
struct ipc_sync_wait {
	bool done;			/* the call ended */
	int status;			/* 0 or -errno */
	struct ipc_proxy *proxy;	/* bind result */
	ProtobufCMessage *msg;		/* unary reply */
	int fd;				/* fd that came with it */
	ipc_reply_cb user_cb;		/* stream: caller's callback */
	void *user_arg;			/* its argument */
};

static int64_t ipc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs the private loop until *done or the timeout. */
static int ipc_sync_run(struct ipc_sync *s, const bool *done, int timeout_ms)
{
	int64_t deadline = ipc_now_ms() + timeout_ms;

	while (!*done) {
		int wait = -1, err;

		if (timeout_ms >= 0) {
			int64_t left = deadline - ipc_now_ms();

			if (left <= 0)
				return -ETIMEDOUT;
			wait = (int)(left > 1000 ? 1000 : left);
		}
		err = ipc_loop_run_once(s->loop, wait);
		if (err < 0)
			return err;
	}
	return 0;
}

static void ipc_sync_on_connect(void *arg, struct ipc_client *cl, int status)
{
	struct ipc_sync *s = arg;

	(void)cl;
	s->connect_done = true;
	s->connect_status = status;
}

int ipc_sync_connect(const char *name, int timeout_ms, struct ipc_sync **out)
{
	static const struct ipc_client_ops ops = {
		.on_connect = ipc_sync_on_connect,
	};
	struct ipc_sync *s = calloc(1, sizeof(*s));
	int err;

	if (!s)
		return -ENOMEM;
	err = ipc_loop_create(&s->loop, NULL);
	if (err)
		goto err;
	err = ipc_client_connect(s->loop, name, &ops, s, &s->cl);
	if (err)
		goto err;
	err = ipc_sync_run(s, &s->connect_done, timeout_ms);
	if (!err)
		err = s->connect_status;
	if (err)
		goto err;
	*out = s;
	return 0;
err:
	ipc_sync_close(s);
	return err;
}

void ipc_sync_close(struct ipc_sync *s)
{
	if (!s)
		return;
	if (s->cl)
		ipc_client_destroy(s->cl);
	if (s->loop)
		ipc_loop_destroy(s->loop);
	free(s);
}

struct ipc_loop *ipc_sync_loop(struct ipc_sync *s)
{
	return s->loop;
}

struct ipc_client *ipc_sync_client(struct ipc_sync *s)
{
	return s->cl;
}

static void ipc_sync_bind_cb(void *arg, struct ipc_proxy *proxy, int status)
{
	struct ipc_sync_wait *w = arg;

	w->done = true;
	w->status = status;
	w->proxy = proxy;
}

int ipc_sync_bind(struct ipc_sync *s, const ProtobufCServiceDescriptor *desc,
		  struct ipc_proxy **out, int timeout_ms)
{
	struct ipc_sync_wait w = {.fd = -1};
	int err;

	err = ipc_client_bind(s->cl, desc, ipc_sync_bind_cb, &w);
	if (err)
		return err;
	err = ipc_sync_run(s, &w.done, timeout_ms);
	if (err) {
		/* The bind is the newest request; forget it. */
		ipc_client_cancel(s->cl, s->cl->last_request_id);
		return err;
	}
	if (w.status)
		return w.status;
	*out = w.proxy;
	return 0;
}

static void ipc_sync_call_cb(void *arg, struct ipc_client_reply *r)
{
	struct ipc_sync_wait *w = arg;

	if (r->status == 0 && r->has_more)
		return;	/* a unary call: only the final reply counts */
	w->done = true;
	w->status = r->status;
	if (r->status == 0) {
		w->msg = ipc_client_reply_take_msg(r);
		w->fd = ipc_client_reply_take_fd(r);
	}
}

int ipc_sync_call(struct ipc_sync *s, struct ipc_proxy *p, const char *method,
		  const ProtobufCMessage *req, int fd, ProtobufCMessage **reply,
		  int *reply_fd, int timeout_ms)
{
	struct ipc_sync_wait w = {.fd = -1};
	uint64_t id;
	int err;

	if (reply)
		*reply = NULL;
	if (reply_fd)
		*reply_fd = -1;
	err = ipc_client_invoke(p, method, req, fd, 0, ipc_sync_call_cb, &w,
				&id);
	if (err)
		return err;
	err = ipc_sync_run(s, &w.done, timeout_ms);
	if (err) {
		ipc_client_cancel(s->cl, id);
		return err;
	}
	if (reply)
		*reply = w.msg;
	else if (w.msg)
		protobuf_c_message_free_unpacked(w.msg, NULL);
	if (reply_fd)
		*reply_fd = w.fd;
	else if (w.fd >= 0)
		close(w.fd);
	return w.status;
}

static void ipc_sync_stream_cb(void *arg, struct ipc_client_reply *r)
{
	struct ipc_sync_wait *w = arg;

	if (w->user_cb)
		w->user_cb(w->user_arg, r);
	if (r->status != 0 || !r->has_more) {
		w->done = true;
		w->status = r->status;
	}
}

int ipc_sync_stream(struct ipc_sync *s, struct ipc_proxy *p,
		    const char *method, const ProtobufCMessage *req, int fd,
		    ipc_reply_cb cb, void *arg, int timeout_ms)
{
	struct ipc_sync_wait w = {.fd = -1, .user_cb = cb, .user_arg = arg};
	uint64_t id;
	int err;

	err = ipc_client_invoke(p, method, req, fd, 0, ipc_sync_stream_cb, &w,
				&id);
	if (err)
		return err;
	err = ipc_sync_run(s, &w.done, timeout_ms);
	if (err) {
		ipc_client_cancel(s->cl, id);
		return err;
	}
	return w.status;
}
