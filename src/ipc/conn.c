// SPDX-License-Identifier: Apache-2.0
// A connection's I/O on its loop: recvmsg into the reassembly buffer with
// one SCM_RIGHTS fd, frame splitting, the bounded send queue drained with
// batched sendmsg, and the close protocol.
//
// Why recvmsg and not a provided-buffer ring: a file descriptor may arrive
// with any client frame on both sockets (InitializeConnection on the
// producer socket, EnableTracing/CloneSession on the consumer one) and
// with any reply a client gets (GetAsyncCommand), and only recvmsg carries
// the control message. Receiving straight into the connection's own
// buffer also saves the copy out of a shared buffer.
//
// Lifetime: a connection is freed only when it is closing, no io_uring
// request of it is in flight (inflight), no callback of it is running
// (busy) and it is not on the loop's flush list (dirty).
#include "ipc/ipc_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipc/log.h"

#define IPC_TAG "ipc"

static void ipc_conn_maybe_free(struct ipc_conn *c);

uint64_t ipc_conn_id(const struct ipc_conn *c)
{
	return c->id;
}

struct ipc_loop *ipc_conn_loop(const struct ipc_conn *c)
{
	return c->loop;
}

const struct ipc_peer_cred *ipc_conn_cred(const struct ipc_conn *c)
{
	return &c->cred;
}

void ipc_conn_set_user(struct ipc_conn *c, void *user)
{
	c->user = user;
}

void *ipc_conn_user(const struct ipc_conn *c)
{
	return c->user;
}

size_t ipc_conn_queued(const struct ipc_conn *c)
{
	return c->tx_bytes;
}

void ipc_conn_set_send_limit(struct ipc_conn *c, size_t bytes)
{
	c->tx_limit = bytes ? bytes : IPC_DEFAULT_SEND_LIMIT;
}

void ipc_conn_set_send_timeout(struct ipc_conn *c, unsigned ms)
{
	c->tx_timeout_ms = ms;
}

int ipc_sockaddr(const char *name, struct sockaddr_un *sa, socklen_t *len)
{
	size_t n;

	if (!name || !*name)
		return -EINVAL;
	n = strlen(name);
	if (n >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, name, n);
	if (name[0] == '@') {
		/* Abstract: the leading NUL, and the length ends the name. */
		sa->sun_path[0] = '\0';
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	} else {
		*len = (socklen_t)sizeof(*sa);
	}
	return 0;
}

int ipc_peer_cred_of(int fd, struct ipc_peer_cred *cred)
{
	struct ucred uc;
	socklen_t len = sizeof(uc);

	memset(cred, 0, sizeof(*cred));
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0)
		return -errno;
	cred->pid = uc.pid;
	cred->uid = uc.uid;
	cred->gid = uc.gid;
	return 0;
}

static struct ipc_conn *ipc_conn_new(struct ipc_loop *loop, int fd,
				     const struct ipc_conn_ops *ops,
				     void *proto)
{
	struct ipc_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->loop = loop;
	c->fd = fd;
	c->ops = ops;
	c->proto = proto;
	c->tx_limit = IPC_DEFAULT_SEND_LIMIT;
	for (int i = 0; i < IPC_RX_FDS; i++)
		c->rx_fds[i].fd = -1;
	c->op_recv.kind = IPC_OP_RECV;
	c->op_send.kind = IPC_OP_SEND;
	c->op_send_timeout.kind = IPC_OP_SEND_TIMEOUT;
	c->op_connect.kind = IPC_OP_CONNECT;
	if (ipc_loop_add_conn(loop, c) != 0) {
		free(c);
		return NULL;
	}
	return c;
}

/* ---- received file descriptors ----
 *
 * Which frame an fd belongs to. A sender attaches the fd to the sendmsg
 * that starts its frame and puts no other frame in that sendmsg (Perfetto
 * sends one frame per sendmsg; ipc_conn_flush sends an fd frame alone), so
 * the kernel's skb holding the fd begins with that frame's header and
 * holds no other frame start. A Unix stream recvmsg may glue earlier skbs
 * in front of it but stops right after an skb with fds. So the fd belongs
 * to the last frame that starts within the read it came with: found by
 * walking the headers from the first unhandled frame. */

/* Drops slot i, keeping the others in stream order. */
static void ipc_conn_fd_remove(struct ipc_conn *c, int i)
{
	for (; i + 1 < IPC_RX_FDS; i++)
		c->rx_fds[i] = c->rx_fds[i + 1];
	c->rx_fds[IPC_RX_FDS - 1].fd = -1;
}

/* Records fd, which came with the read of stream bytes [start, end);
 * rx_buf already holds them. */
static void ipc_conn_fd_add(struct ipc_conn *c, int fd, uint64_t start,
			    uint64_t end)
{
	size_t pos = 0, last = 0, held = (size_t)(end - c->rx_base);

	/* rx_buf[0] is always a frame start. */
	while (pos < held) {
		size_t n;

		last = pos;
		if (held - pos < SPN_IPC_FRAME_HEADER_SIZE)
			break;
		n = ipc_frame_wanted(c->rx_buf + pos, held - pos);
		if (n > SPN_IPC_BUFFER_SIZE)
			break;	/* oversized: the connection is about to close */
		pos += n;
	}
	if (c->rx_base + last < start) {
		/* No frame starts in this read: the sender broke the rule. */
		spn_log_warn(IPC_TAG, "peer pid %d: fd without a frame start, "
			     "closed", (int)c->cred.pid);
		close(fd);
		return;
	}
	if (c->rx_fds[IPC_RX_FDS - 1].fd >= 0) {
		spn_log_warn(IPC_TAG, "peer pid %d: more than %d unclaimed "
			     "fds, closing the oldest", (int)c->cred.pid,
			     IPC_RX_FDS);
		close(c->rx_fds[0].fd);
		ipc_conn_fd_remove(c, 0);
	}
	for (int i = 0; i < IPC_RX_FDS; i++) {
		if (c->rx_fds[i].fd < 0) {
			c->rx_fds[i].fd = fd;
			c->rx_fds[i].owner = c->rx_base + last;
			return;
		}
	}
}

/* Closes the fds whose frame was handled without taking them: those
 * owned by frames starting before pos. */
static void ipc_conn_fd_expire(struct ipc_conn *c, uint64_t pos)
{
	while (c->rx_fds[0].fd >= 0 && c->rx_fds[0].owner < pos) {
		spn_log_debug(IPC_TAG, "peer pid %d: fd taken by no handler, "
			      "closed", (int)c->cred.pid);
		close(c->rx_fds[0].fd);
		ipc_conn_fd_remove(c, 0);
	}
}

int ipc_conn_take_fd(struct ipc_conn *c)
{
	for (int i = 0; i < IPC_RX_FDS && c->rx_fds[i].fd >= 0; i++) {
		if (c->rx_fds[i].owner == c->rx_frame_start) {
			int fd = c->rx_fds[i].fd;

			ipc_conn_fd_remove(c, i);
			return fd;
		}
	}
	return -1;
}

/* ---- receiving ---- */

/* Makes room for the next read: at least the rest of the current frame,
 * growing geometrically up to the frame limit. Returns 0 or -ENOMEM. */
static int ipc_conn_rx_reserve(struct ipc_conn *c)
{
	size_t wanted = ipc_frame_wanted(c->rx_buf, c->rx_len);
	size_t cap = c->rx_cap;
	uint8_t *nb;

	if (cap == 0)
		cap = IPC_RX_INITIAL;
	if (wanted > cap || cap - c->rx_len < 1024)
		cap = cap * 2 > wanted ? cap * 2 : wanted;
	if (cap > SPN_IPC_BUFFER_SIZE)
		cap = SPN_IPC_BUFFER_SIZE;
	if (cap == c->rx_cap)
		return 0;
	nb = realloc(c->rx_buf, cap);
	if (!nb)
		return -ENOMEM;
	c->rx_buf = nb;
	c->rx_cap = (uint32_t)cap;
	return 0;
}

static void ipc_conn_arm_recv(struct ipc_conn *c)
{
	struct io_uring_sqe *sqe;
	int err;

	if (c->recv_armed || c->state != IPC_CONN_OPEN)
		return;
	err = ipc_conn_rx_reserve(c);
	if (err) {
		ipc_conn_close(c, err);
		return;
	}
	sqe = ipc_loop_sqe(c->loop);
	if (!sqe) {
		ipc_conn_close(c, -EBUSY);
		return;
	}
	c->rx_iov.iov_base = c->rx_buf + c->rx_len;
	c->rx_iov.iov_len = c->rx_cap - c->rx_len;
	memset(&c->rx_msg, 0, sizeof(c->rx_msg));
	c->rx_msg.msg_iov = &c->rx_iov;
	c->rx_msg.msg_iovlen = 1;
	c->rx_msg.msg_control = c->rx_cmsg;
	c->rx_msg.msg_controllen = sizeof(c->rx_cmsg);
	io_uring_prep_recvmsg(sqe, c->fd, &c->rx_msg, MSG_CMSG_CLOEXEC);
	io_uring_sqe_set_data(sqe, &c->op_recv);
	c->recv_armed = true;
	c->inflight++;
}

/* Returns the fd of the SCM_RIGHTS message of the last recvmsg (closing
 * any extra ones), or -1. */
static int ipc_conn_rx_cmsg_fd(struct ipc_conn *c)
{
	int fd = -1;

	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&c->rx_msg); cm;
	     cm = CMSG_NXTHDR(&c->rx_msg, cm)) {
		size_t n;
		int fds[1];

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			memcpy(fds, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (fd < 0)
				fd = fds[0];
			else
				close(fds[0]);
		}
	}
	return fd;
}

/* Splits and dispatches every complete frame held. */
static void ipc_conn_process_rx(struct ipc_conn *c)
{
	size_t off = 0;

	c->busy++;
	while (c->state == IPC_CONN_OPEN) {
		const uint8_t *payload;
		uint32_t n;
		ssize_t r = ipc_frame_scan(c->rx_buf + off, c->rx_len - off,
					   &payload, &n);

		if (r == IPC_FRAME_NEED_MORE)
			break;
		if (r < 0) {
			spn_log_warn(IPC_TAG, "peer pid %d uid %u: frame of %zu "
				     "bytes exceeds the %u byte limit; closing",
				     (int)c->cred.pid, (unsigned)c->cred.uid,
				     ipc_frame_wanted(c->rx_buf + off,
						      c->rx_len - off),
				     SPN_IPC_BUFFER_SIZE);
			ipc_conn_close(c, -EMSGSIZE);
			break;
		}
		c->rx_frame_start = c->rx_base + off;
		ipc_conn_fd_expire(c, c->rx_frame_start);
		off += (size_t)r;
		if (n)	/* zero-length frames are ignored (spec §2) */
			c->ops->on_frame(c, payload, n);
	}
	if (c->state == IPC_CONN_OPEN) {
		memmove(c->rx_buf, c->rx_buf + off, c->rx_len - off);
		c->rx_len -= (uint32_t)off;
		c->rx_base += off;
		ipc_conn_fd_expire(c, c->rx_base);
	}
	c->busy--;
}

void ipc_conn_recv_done(struct ipc_conn *c, int res, unsigned flags)
{
	int fd;

	(void)flags;
	c->inflight--;
	c->recv_armed = false;
	fd = res >= 0 ? ipc_conn_rx_cmsg_fd(c) : -1;
	if (c->state != IPC_CONN_OPEN) {
		if (fd >= 0)
			close(fd);
		ipc_conn_maybe_free(c);
		return;
	}
	if (res < 0) {
		if (res == -EINTR || res == -EAGAIN) {
			ipc_conn_arm_recv(c);
			return;
		}
		ipc_conn_close(c, res);
		return;
	}
	if (c->rx_msg.msg_flags & MSG_CTRUNC) {
		spn_log_warn(IPC_TAG, "peer pid %d: control data truncated "
			     "(more than one fd); closing", (int)c->cred.pid);
		if (fd >= 0)
			close(fd);
		ipc_conn_close(c, -EPROTO);
		return;
	}
	if (res == 0) {
		if (fd >= 0)
			close(fd);
		ipc_conn_close(c, 0);
		return;
	}
	c->rx_len += (uint32_t)res;
	if (fd >= 0)
		ipc_conn_fd_add(c, fd, c->rx_base + c->rx_len - (uint64_t)res,
				c->rx_base + c->rx_len);
	ipc_conn_process_rx(c);
	ipc_conn_arm_recv(c);
	ipc_conn_maybe_free(c);
}

/* ---- sending ---- */

int ipc_conn_send(struct ipc_conn *c, struct ipc_txbuf *b)
{
	if (c->state >= IPC_CONN_CLOSING) {
		ipc_txbuf_free(b);
		return -ENOTCONN;
	}
	if (c->tx_bytes + b->len > c->tx_limit) {
		spn_log_warn(IPC_TAG, "peer pid %d uid %u is not reading: %zu "
			     "bytes queued, limit %zu; disconnecting",
			     (int)c->cred.pid, (unsigned)c->cred.uid,
			     c->tx_bytes, c->tx_limit);
		ipc_txbuf_free(b);
		ipc_conn_close(c, -ENOBUFS);
		return -ENOBUFS;
	}
	b->next = NULL;
	if (c->tx_tail)
		c->tx_tail->next = b;
	else
		c->tx_head = b;
	c->tx_tail = b;
	c->tx_bytes += b->len - b->sent;
	ipc_loop_mark_dirty(c->loop, c);
	return 0;
}

void ipc_conn_flush(struct ipc_conn *c)
{
	struct ipc_txbuf *head = c->tx_head;
	struct io_uring_sqe *sqe, *tsqe = NULL;
	size_t total = 0;
	int n = 0;

	if (c->state >= IPC_CONN_CLOSING) {
		ipc_conn_maybe_free(c);
		return;
	}
	if (c->send_armed || !head || c->state == IPC_CONN_CONNECTING)
		return;
	/* A frame with an fd goes alone in its sendmsg: the fd rides on its
	 * first byte (spec §7) and the receiver can tell which frame it
	 * belongs to (see "received file descriptors" above). */
	for (struct ipc_txbuf *b = head;
	     b && n < IPC_TX_IOV_MAX && total < IPC_TX_BATCH_BYTES;
	     b = b->next) {
		if (b != head && (b->fd >= 0 || head->fd >= 0))
			break;
		c->tx_iov[n].iov_base = b->data + b->sent;
		c->tx_iov[n].iov_len = b->len - b->sent;
		total += b->len - b->sent;
		n++;
	}
	memset(&c->tx_msg, 0, sizeof(c->tx_msg));
	c->tx_msg.msg_iov = c->tx_iov;
	c->tx_msg.msg_iovlen = (size_t)n;
	if (head->fd >= 0) {
		struct cmsghdr *cm;

		memset(c->tx_cmsg, 0, sizeof(c->tx_cmsg));
		c->tx_msg.msg_control = c->tx_cmsg;
		c->tx_msg.msg_controllen = sizeof(c->tx_cmsg);
		cm = CMSG_FIRSTHDR(&c->tx_msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &head->fd, sizeof(int));
	}
	/* The send and its link timeout must be submitted together. */
	if (io_uring_sq_space_left(&c->loop->ring) < 2 && c->loop->ring_enabled)
		io_uring_submit(&c->loop->ring);
	if (io_uring_sq_space_left(&c->loop->ring) < 2) {
		ipc_loop_mark_dirty(c->loop, c);
		return;
	}
	sqe = io_uring_get_sqe(&c->loop->ring);
	io_uring_prep_sendmsg(sqe, c->fd, &c->tx_msg, MSG_NOSIGNAL);
	io_uring_sqe_set_data(sqe, &c->op_send);
	if (c->tx_timeout_ms) {
		sqe->flags |= IOSQE_IO_LINK;
		c->tx_ts.tv_sec = c->tx_timeout_ms / 1000;
		c->tx_ts.tv_nsec = (long long)(c->tx_timeout_ms % 1000) * 1000000;
		tsqe = io_uring_get_sqe(&c->loop->ring);
		io_uring_prep_link_timeout(tsqe, &c->tx_ts, 0);
		io_uring_sqe_set_data(tsqe, &c->op_send_timeout);
		c->inflight++;
	}
	c->send_armed = true;
	c->inflight++;
}

/* Runs the drain callback once, if one is set and due (or forced). */
static void ipc_conn_run_drain(struct ipc_conn *c, bool force)
{
	ipc_post_fn fn = c->drain_fn;

	if (!fn || (!force && c->tx_bytes > c->drain_below))
		return;
	c->drain_fn = NULL;
	c->busy++;
	fn(c->loop, c->drain_arg, c->drain_u64);
	c->busy--;
}

int ipc_conn_notify_drained(struct ipc_conn *c, size_t below, ipc_post_fn fn,
			    void *arg, uint64_t u64)
{
	if (c->state >= IPC_CONN_CLOSING || c->tx_bytes <= below) {
		c->drain_fn = NULL;
		return ipc_loop_post(c->loop, fn, arg, u64);
	}
	c->drain_fn = fn;
	c->drain_arg = arg;
	c->drain_u64 = u64;
	c->drain_below = below;
	return 0;
}

void ipc_conn_send_done(struct ipc_conn *c, int res)
{
	c->inflight--;
	c->send_armed = false;
	if (c->state >= IPC_CONN_CLOSING) {
		ipc_conn_maybe_free(c);
		return;
	}
	if (res < 0) {
		if (res == -EINTR || res == -EAGAIN) {
			ipc_loop_mark_dirty(c->loop, c);
		} else if (res == -ECANCELED) {
			spn_log_warn(IPC_TAG, "peer pid %d uid %u did not read "
				     "for %u ms; disconnecting",
				     (int)c->cred.pid, (unsigned)c->cred.uid,
				     c->tx_timeout_ms);
			ipc_conn_close(c, -ETIMEDOUT);
		} else {
			spn_log_debug(IPC_TAG, "send to pid %d: %s",
				      (int)c->cred.pid, strerror(-res));
			ipc_conn_close(c, res);
		}
		return;
	}
	if (res > 0 && c->tx_head->fd >= 0) {
		/* The kernel holds its own reference now. */
		close(c->tx_head->fd);
		c->tx_head->fd = -1;
	}
	c->tx_bytes -= (size_t)res;
	while (res > 0) {
		struct ipc_txbuf *b = c->tx_head;
		uint32_t take = b->len - b->sent;

		if ((uint32_t)res < take)
			take = (uint32_t)res;
		b->sent += take;
		res -= (int)take;
		if (b->sent == b->len) {
			c->tx_head = b->next;
			if (!c->tx_head)
				c->tx_tail = NULL;
			ipc_txbuf_free(b);
		}
	}
	if (c->tx_head)
		ipc_loop_mark_dirty(c->loop, c);
	ipc_conn_run_drain(c, false);
	if (!c->tx_head && c->state == IPC_CONN_DRAINING)
		ipc_conn_close(c, 0);
}

void ipc_conn_timeout_done(struct ipc_conn *c, int res)
{
	(void)res;	/* -ETIME: the send completes with -ECANCELED */
	c->inflight--;
	ipc_conn_maybe_free(c);
}

/* ---- life cycle ---- */

int ipc_conn_adopt(struct ipc_loop *loop, int fd,
		   const struct ipc_peer_cred *cred,
		   const struct ipc_conn_ops *ops, void *proto,
		   struct ipc_conn **out)
{
	struct ipc_conn *c = ipc_conn_new(loop, fd, ops, proto);

	if (!c) {
		close(fd);
		return -ENOMEM;
	}
	if (cred)
		c->cred = *cred;
	c->state = IPC_CONN_OPEN;
	*out = c;
	return 0;
}

int ipc_conn_start(struct ipc_conn *c)
{
	int err;

	c->busy++;
	ipc_conn_arm_recv(c);
	err = c->state == IPC_CONN_OPEN ? 0 : c->close_reason;
	c->busy--;
	ipc_conn_maybe_free(c);
	return err;
}

int ipc_conn_connect(struct ipc_loop *loop, const char *name,
		     const struct ipc_conn_ops *ops, void *proto,
		     struct ipc_conn **out)
{
	struct sockaddr_un *sa = malloc(sizeof(*sa));
	struct io_uring_sqe *sqe;
	struct ipc_conn *c;
	socklen_t len;
	int err, fd;

	if (!sa)
		return -ENOMEM;
	err = ipc_sockaddr(name, sa, &len);
	if (err) {
		free(sa);
		return err;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err = -errno;
		free(sa);
		return err;
	}
	c = ipc_conn_new(loop, fd, ops, proto);
	if (!c) {
		close(fd);
		free(sa);
		return -ENOMEM;
	}
	c->state = IPC_CONN_CONNECTING;
	c->connect_sa = sa;
	sqe = ipc_loop_sqe(loop);
	if (!sqe) {
		c->ops = NULL;	/* nothing to report: the caller gets -EBUSY */
		ipc_conn_close(c, -EBUSY);
		return -EBUSY;
	}
	io_uring_prep_connect(sqe, fd, (struct sockaddr *)sa, len);
	io_uring_sqe_set_data(sqe, &c->op_connect);
	c->inflight++;
	*out = c;
	return 0;
}

void ipc_conn_connect_done(struct ipc_conn *c, int res)
{
	c->inflight--;
	free(c->connect_sa);
	c->connect_sa = NULL;
	if (c->state >= IPC_CONN_CLOSING) {
		ipc_conn_maybe_free(c);
		return;
	}
	c->busy++;
	if (res < 0) {
		if (c->ops && c->ops->on_open)
			c->ops->on_open(c, res);
		ipc_conn_close(c, res);
	} else {
		ipc_peer_cred_of(c->fd, &c->cred);
		c->state = IPC_CONN_OPEN;
		if (c->ops && c->ops->on_open)
			c->ops->on_open(c, 0);
		ipc_conn_arm_recv(c);
		if (c->tx_head)
			ipc_loop_mark_dirty(c->loop, c);
	}
	c->busy--;
	ipc_conn_maybe_free(c);
}

/* Asks the kernel to end request `op` of c early. */
static void ipc_conn_cancel(struct ipc_conn *c, struct ipc_op *op)
{
	struct io_uring_sqe *sqe = ipc_loop_sqe(c->loop);

	if (!sqe)
		return;	/* the shutdown() ends it anyway */
	io_uring_prep_cancel(sqe, op, 0);
	io_uring_sqe_set_data(sqe, NULL);
}

void ipc_conn_close(struct ipc_conn *c, int reason)
{
	bool connecting = c->state == IPC_CONN_CONNECTING;

	if (c->state >= IPC_CONN_CLOSING)
		return;
	c->state = IPC_CONN_CLOSING;
	c->close_reason = reason;
	ipc_loop_remove_conn(c->loop, c);
	if (c->fd >= 0)
		shutdown(c->fd, SHUT_RDWR);
	if (c->recv_armed)
		ipc_conn_cancel(c, &c->op_recv);
	if (c->send_armed)
		ipc_conn_cancel(c, &c->op_send);
	if (connecting && c->inflight)
		ipc_conn_cancel(c, &c->op_connect);
	spn_log_debug(IPC_TAG, "connection %llx (pid %d) closed: %s",
		      (unsigned long long)c->id, (int)c->cred.pid,
		      reason ? strerror(-reason) : "end of stream");
	c->busy++;
	if (c->ops && c->ops->on_close)
		c->ops->on_close(c, reason);
	ipc_conn_run_drain(c, true);
	c->busy--;
	ipc_conn_maybe_free(c);
}

void ipc_conn_close_after_flush(struct ipc_conn *c)
{
	if (c->state != IPC_CONN_OPEN && c->state != IPC_CONN_CONNECTING)
		return;
	if (!c->tx_head) {
		ipc_conn_close(c, 0);
		return;
	}
	c->state = IPC_CONN_DRAINING;
	if (c->recv_armed)
		ipc_conn_cancel(c, &c->op_recv);
}

static void ipc_conn_close_post(struct ipc_loop *loop, void *arg, uint64_t id)
{
	struct ipc_conn *c = ipc_conn_lookup(loop, id);

	(void)arg;
	if (c)
		ipc_conn_close(c, 0);
}

int ipc_conn_close_id(struct ipc_loop *loop, uint64_t id)
{
	if (ipc_loop_on_thread(loop)) {
		ipc_conn_close_post(loop, NULL, id);
		return 0;
	}
	return ipc_loop_post(loop, ipc_conn_close_post, NULL, id);
}

void ipc_conn_close_all(struct ipc_loop *loop)
{
	for (uint32_t i = 0; i < loop->nslots; i++) {
		if (loop->slots[i])
			ipc_conn_close(loop->slots[i], -ESHUTDOWN);
	}
}

static void ipc_conn_maybe_free(struct ipc_conn *c)
{
	struct ipc_txbuf *b;

	if (c->state != IPC_CONN_CLOSING || c->inflight || c->busy || c->dirty)
		return;
	if (c->fd >= 0)
		close(c->fd);
	while ((b = c->tx_head)) {
		c->tx_head = b->next;
		ipc_txbuf_free(b);
	}
	for (int i = 0; i < IPC_RX_FDS; i++) {
		if (c->rx_fds[i].fd >= 0)
			close(c->rx_fds[i].fd);
	}
	free(c->connect_sa);
	free(c->rx_buf);
	c->loop->nconns--;
	free(c);
}
