// SPDX-License-Identifier: Apache-2.0
// Replays the client-to-service bytes captured from real Perfetto v14
// clients (tests/data/perfetto_v14/session1/proxy) into hosts exposing
// ProducerPort and ConsumerPort: the BindServiceReply must list the
// captured method names and ids, every captured request must decode with
// our .proto files and be answered once unless it asked for drop_reply,
// and the answers must not change wherever the stream is split.
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <linux/sockios.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "consumer_port.pb-c.h"
#include "ipc/client.h"
#include "ipc/frame.h"
#include "testdata.h"
#include "ipc/host.h"
#include "ipc/loop.h"
#include "producer_port.pb-c.h"

#define PRODUCER_PORT (&perfetto__protos__producer_port__descriptor)
#define CONSUMER_PORT (&perfetto__protos__consumer_port__descriptor)

static struct ipc_loop *loop;
static struct ipc_host *producer_host, *consumer_host, *fd_host;
static unsigned handled;	/* handler calls */

/* Every method answers at once with an empty response of its type. */
static void reply_empty(struct ipc_request *req, const ProtobufCMessage *args,
			void *ctx)
{
	const ProtobufCMessageDescriptor *out = ipc_request_method(req)->output;
	ProtobufCMessage *m = calloc(1, out->sizeof_message);

	(void)ctx;
	assert_non_null(m);
	assert_ptr_equal(args->descriptor, ipc_request_method(req)->input);
	protobuf_c_message_init(out, m);
	assert_int_equal(ipc_request_reply(req, m, -1, false), 0);
	free(m);
	handled++;
}

static struct ipc_host *make_host(const ProtobufCServiceDescriptor *d)
{
	ipc_method_fn fns[32];
	struct ipc_host *h;

	assert_true(d->n_methods <= 32);
	for (unsigned i = 0; i < d->n_methods; i++)
		fns[i] = reply_empty;
	assert_int_equal(ipc_host_create(&h, NULL, NULL), 0);
	assert_int_equal(ipc_host_add_service(h, d, fns, NULL), 1);
	return h;
}

/* The frames of a stream, decoded. */
struct frames {
	IpcFrame *f[64];	/* in order */
	size_t n;		/* count */
};

static void frames_parse(struct frames *fr, const uint8_t *buf, size_t len)
{
	size_t off = 0;

	fr->n = 0;
	while (off < len) {
		const uint8_t *payload;
		uint32_t plen;
		ssize_t r = ipc_frame_scan(buf + off, len - off, &payload, &plen);

		assert_true(r > 0);
		assert_true(fr->n < 64);
		assert_int_equal(ipc_frame_unpack(payload, plen, &fr->f[fr->n]),
				 0);
		fr->n++;
		off += (size_t)r;
	}
	assert_int_equal(off, len);
}

static void frames_free(struct frames *fr)
{
	for (size_t i = 0; i < fr->n; i++)
		ipc_frame_free(fr->f[i]);
	fr->n = 0;
}

/* Replies a host owes for a client stream: binds, and invokes without
 * drop_reply. */
static size_t owed_replies(const struct frames *c2s)
{
	size_t n = 0;

	for (size_t i = 0; i < c2s->n; i++) {
		const IpcFrame *f = c2s->f[i];

		if (f->msg_case == PERFETTO__PROTOS__IPCFRAME__MSG_MSG_BIND_SERVICE)
			n++;
		else if (f->msg_case ==
				 PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD &&
			 !f->msg_invoke_method->drop_reply)
			n++;
	}
	return n;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs the loop until the host has read everything written to fd. */
static void drain_to_host(int fd)
{
	int64_t end = now_ms() + 5000;
	int outq = 1;

	for (;;) {
		assert_true(ipc_loop_run_once(loop, 0) >= 0);
		assert_int_equal(ioctl(fd, SIOCOUTQ, &outq), 0);
		if (outq == 0)
			break;
		assert_true(now_ms() < end);
	}
}

/* Reads from fd (non-blocking) until `want` frames arrived; returns the
 * bytes in *out (malloc'd). */
static size_t collect_replies(int fd, size_t want, uint8_t **out)
{
	size_t cap = 1 << 16, len = 0, frames = 0, off = 0;
	uint8_t *buf = malloc(cap);
	int64_t end = now_ms() + 5000;

	assert_non_null(buf);
	while (frames < want) {
		ssize_t n;

		assert_true(ipc_loop_run_once(loop, 0) >= 0);
		if (cap - len < 4096) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		n = recv(fd, buf + len, cap - len, MSG_DONTWAIT);
		if (n > 0)
			len += (size_t)n;
		for (;;) {
			const uint8_t *payload;
			uint32_t plen;
			ssize_t r = ipc_frame_scan(buf + off, len - off,
						   &payload, &plen);

			assert_true(r >= 0);
			if (r == 0)
				break;
			off += (size_t)r;
			frames++;
		}
		assert_true(now_ms() < end);
	}
	/* Nothing beyond what was owed. */
	for (int i = 0; i < 3; i++)
		assert_true(ipc_loop_run_once(loop, 0) >= 0);
	assert_int_equal(recv(fd, buf + len, cap - len, MSG_DONTWAIT), -1);
	assert_int_equal(off, len);
	*out = buf;
	return len;
}

/*
 * Writes stream[0..split) and, once the host read it, the rest, to a new
 * connection of host h; returns the host's answer bytes.
 */
static size_t replay(struct ipc_host *h, const uint8_t *stream, size_t len,
		     size_t split, size_t owed, uint8_t **out)
{
	struct ipc_peer_cred cred = {.pid = getpid(), .uid = getuid(),
				     .gid = getgid()};
	int sv[2];
	size_t n;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
			 0);
	assert_int_equal(ipc_host_adopt(h, loop, sv[1], &cred), 0);
	if (split) {
		assert_int_equal(write(sv[0], stream, split), (ssize_t)split);
		drain_to_host(sv[0]);
	}
	if (len > split)
		assert_int_equal(write(sv[0], stream + split, len - split),
				 (ssize_t)(len - split));
	drain_to_host(sv[0]);
	n = collect_replies(sv[0], owed, out);
	close(sv[0]);
	return n;
}

/* Checks our BindServiceReply against the captured one. */
static void check_bind_reply(const IpcFrame *ours, const IpcFrame *theirs,
			     const char *const *newer, size_t nnewer)
{
	const Perfetto__Protos__IPCFrame__BindServiceReply *a, *b;

	assert_int_equal(ours->msg_case,
			 PERFETTO__PROTOS__IPCFRAME__MSG_MSG_BIND_SERVICE_REPLY);
	assert_int_equal(theirs->msg_case,
			 PERFETTO__PROTOS__IPCFRAME__MSG_MSG_BIND_SERVICE_REPLY);
	assert_int_equal(ours->request_id, theirs->request_id);
	a = ours->msg_bind_service_reply;
	b = theirs->msg_bind_service_reply;
	assert_true(a->success);
	assert_true(b->success);
	assert_int_equal(a->service_id, b->service_id);
	/* v14's methods, same ids and names; then only methods v14 lacks. */
	assert_int_equal(a->n_methods, b->n_methods + nnewer);
	for (size_t i = 0; i < b->n_methods; i++) {
		assert_int_equal(a->methods[i]->id, b->methods[i]->id);
		assert_string_equal(a->methods[i]->name, b->methods[i]->name);
	}
	for (size_t i = 0; i < nnewer; i++) {
		assert_int_equal(a->methods[b->n_methods + i]->id,
				 b->n_methods + i + 1);
		assert_string_equal(a->methods[b->n_methods + i]->name, newer[i]);
	}
}

/* Checks that every request owed a reply got exactly one, in request
 * order, and that it is a success (the arguments decoded). */
static void check_answers(const struct frames *c2s, const struct frames *ours)
{
	size_t j = 0;

	for (size_t i = 0; i < c2s->n; i++) {
		const IpcFrame *f = c2s->f[i];
		const IpcFrame *r;

		if (f->msg_case == PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD &&
		    f->msg_invoke_method->drop_reply)
			continue;
		assert_true(j < ours->n);
		r = ours->f[j++];
		assert_int_equal(r->request_id, f->request_id);
		if (f->msg_case == PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD) {
			assert_int_equal(r->msg_case,
					 PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD_REPLY);
			assert_true(r->msg_invoke_method_reply->success);
			assert_false(r->msg_invoke_method_reply->has_more);
		}
	}
	assert_int_equal(j, ours->n);
}

struct capture {
	const char *c2s;		/* client stream file */
	const char *s2c;		/* service stream file */
	struct ipc_host **host;		/* which host serves it */
	const char *const *newer;	/* methods after v14's */
	size_t nnewer;			/* their count */
	unsigned invokes;		/* InvokeMethod frames in c2s */
};

static const char *const producer_newer[] = {"UpdateDataSource"};
static const char *const consumer_newer[] = {"CloneSession"};

static const struct capture captures[] = {
	{"conn3_producer_c2s.bin", "conn3_producer_s2c.bin", &producer_host,
	 producer_newer, 1, 20},
	{"conn2_consumer_c2s.bin", "conn2_consumer_s2c.bin", &consumer_host,
	 consumer_newer, 1, 3},
	{"conn1_producer_c2s.bin", "conn1_producer_s2c.bin", &producer_host,
	 producer_newer, 1, 2},
};

static void test_replay_bind_and_requests(void **state)
{
	(void)state;
	for (size_t c = 0; c < sizeof(captures) / sizeof(captures[0]); c++) {
		const struct capture *cap = &captures[c];
		struct frames c2s, s2c, ours;
		size_t len, slen, olen;
		uint8_t *in = read_proxy_file(cap->c2s, &len);
		uint8_t *theirs = read_proxy_file(cap->s2c, &slen);
		uint8_t *out;

		frames_parse(&c2s, in, len);
		frames_parse(&s2c, theirs, slen);
		handled = 0;
		olen = replay(*cap->host, in, len, 0, owed_replies(&c2s), &out);
		frames_parse(&ours, out, olen);
		/* Every InvokeMethod reached its handler (args decoded). */
		assert_int_equal(handled, cap->invokes);
		assert_int_equal(c2s.f[0]->msg_case,
				 PERFETTO__PROTOS__IPCFRAME__MSG_MSG_BIND_SERVICE);
		check_bind_reply(ours.f[0], s2c.f[0], cap->newer, cap->nnewer);
		check_answers(&c2s, &ours);
		frames_free(&c2s);
		frames_free(&s2c);
		frames_free(&ours);
		free(in);
		free(theirs);
		free(out);
	}
}

/* The same replays cut at every byte: the host's answers are identical. */
static void test_replay_every_split(void **state)
{
	(void)state;
	for (size_t c = 0; c < sizeof(captures) / sizeof(captures[0]); c++) {
		const struct capture *cap = &captures[c];
		struct frames c2s;
		size_t len, rlen, owed;
		uint8_t *in = read_proxy_file(cap->c2s, &len);
		uint8_t *ref;

		frames_parse(&c2s, in, len);
		owed = owed_replies(&c2s);
		rlen = replay(*cap->host, in, len, 0, owed, &ref);
		for (size_t k = 1; k < len; k++) {
			uint8_t *out;
			size_t olen = replay(*cap->host, in, len, k, owed, &out);

			assert_int_equal(olen, rlen);
			assert_memory_equal(out, ref, rlen);
			free(out);
		}
		frames_free(&c2s);
		free(ref);
		free(in);
	}
}

/* ---- our client against the captured service ---- */

/* What the client saw of one captured call. */
struct call {
	uint64_t id;		/* its request id */
	const char *method;	/* its method */
	int replies;		/* successful replies */
	int more;		/* of which has_more */
	int failures;		/* status < 0 */
	int fds;		/* fds taken */
	int cmds[8];		/* GetAsyncCommand: cmd_case per reply */
};

static struct ipc_proxy *bound;

static void client_bind_cb(void *arg, struct ipc_proxy *p, int status)
{
	(void)arg;
	assert_int_equal(status, 0);
	bound = p;
}

static void client_reply_cb(void *arg, struct ipc_client_reply *r)
{
	struct call *c = arg;
	int fd;

	if (r->status) {
		c->failures++;
		return;
	}
	if (!strcmp(c->method, "GetAsyncCommand") && c->replies < 8)
		c->cmds[c->replies] =
			((const Perfetto__Protos__GetAsyncCommandResponse *)r->msg)
				->cmd_case;
	if (!strcmp(c->method, "InitializeConnection"))
		assert_true(((const Perfetto__Protos__InitializeConnectionResponse *)
				     r->msg)->direct_smb_patching_supported);
	c->replies++;
	c->more += r->has_more;
	fd = ipc_client_reply_take_fd(r);
	if (fd >= 0) {
		struct stat st;

		assert_int_equal(fstat(fd, &st), 0);
		assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
		c->fds++;
		close(fd);
	}
}

/* Reads one frame from the raw service side, running the client's loop
 * meanwhile. */
static IpcFrame *service_read(int fd, uint8_t *buf, size_t *len)
{
	int64_t end = now_ms() + 5000;

	for (;;) {
		const uint8_t *payload;
		uint32_t plen;
		ssize_t r = ipc_frame_scan(buf, *len, &payload, &plen);
		IpcFrame *f;

		assert_true(r >= 0);
		if (r > 0) {
			assert_int_equal(ipc_frame_unpack(payload, plen, &f), 0);
			memmove(buf, buf + r, *len - (size_t)r);
			*len -= (size_t)r;
			return f;
		}
		assert_true(ipc_loop_run_once(loop, 1) >= 0);
		r = recv(fd, buf + *len, SPN_IPC_BUFFER_SIZE - *len, MSG_DONTWAIT);
		if (r > 0)
			*len += (size_t)r;
		assert_true(now_ms() < end);
	}
}

/* Sends one captured frame, with fd attached when fd >= 0. */
static void service_send(int sock, const uint8_t *frame, size_t len, int fd)
{
	_Alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {.iov_base = (void *)frame, .iov_len = len};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};

	if (fd >= 0) {
		struct cmsghdr *c;

		memset(cbuf, 0, sizeof(cbuf));
		m.msg_control = cbuf;
		m.msg_controllen = sizeof(cbuf);
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	assert_int_equal(sendmsg(sock, &m, MSG_NOSIGNAL), (ssize_t)len);
}

/* protobuf-c's canonical bytes of a request, for comparing two encoders
 * (the reference client pads nested lengths). */
static size_t canonical(const ProtobufCMessageDescriptor *d,
			const ProtobufCBinaryData *in, uint8_t *out)
{
	ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, in->len,
							in->data);
	size_t n;

	assert_non_null(m);
	n = protobuf_c_message_pack(m, out);
	protobuf_c_message_free_unpacked(m, NULL);
	return n;
}

/*
 * Our client replays the v14 example producer (conn3): bind, then every
 * captured call with its arguments and drop_reply flag. A raw service
 * checks each frame against the capture, answers with the captured
 * service bytes (the SMB fd riding on the first GetAsyncCommand reply, as
 * it did), then hangs up.
 */
static void test_client_speaks_like_v14_producer(void **state)
{
	static struct call calls[32];
	static uint8_t rbuf[SPN_IPC_BUFFER_SIZE];
	const Perfetto__Protos__IPCFrame__BindServiceReply *table;
	char dir[] = "/tmp/spn_replay_XXXXXX", path[64];
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct frames c2s, s2c;
	size_t len, slen, rlen = 0, ncalls = 0, off;
	uint8_t *in = read_proxy_file("conn3_producer_c2s.bin", &len);
	uint8_t *out = read_proxy_file("conn3_producer_s2c.bin", &slen);
	struct ipc_client *cl;
	int lfd, sfd, memfd;
	bool fd_sent = false;
	IpcFrame *f;

	(void)state;
	frames_parse(&c2s, in, len);
	frames_parse(&s2c, out, slen);
	table = s2c.f[0]->msg_bind_service_reply;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/producer.sock", dir);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 1), 0);

	bound = NULL;
	assert_int_equal(ipc_client_connect(loop, path, NULL, NULL, &cl), 0);
	assert_int_equal(ipc_client_bind(cl, PRODUCER_PORT, client_bind_cb,
					 NULL), 0);
	assert_true(ipc_loop_run_once(loop, 0) >= 0);	/* connect */
	sfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(sfd >= 0);

	/* The bind, as captured; the captured answer. */
	f = service_read(sfd, rbuf, &rlen);
	assert_int_equal(f->request_id, 1);
	assert_string_equal(f->msg_bind_service->service_name,
			    c2s.f[0]->msg_bind_service->service_name);
	ipc_frame_free(f);
	off = ipc_frame_wanted(out, slen);
	service_send(sfd, out, off, -1);
	while (!bound)
		assert_true(ipc_loop_run_once(loop, 1) >= 0);

	/* Every captured call, by name from the captured method table. */
	for (size_t i = 1; i < c2s.n; i++) {
		const Perfetto__Protos__IPCFrame__InvokeMethod *im =
			c2s.f[i]->msg_invoke_method;
		const ProtobufCMethodDescriptor *md = NULL;
		ProtobufCMessage *args;
		struct call *c = &calls[ncalls++];

		for (size_t k = 0; k < table->n_methods; k++)
			if (table->methods[k]->id == im->method_id)
				md = protobuf_c_service_descriptor_get_method_by_name(
					PRODUCER_PORT, table->methods[k]->name);
		assert_non_null(md);
		args = protobuf_c_message_unpack(md->input, NULL,
						 im->args_proto.len,
						 im->args_proto.data);
		assert_non_null(args);
		c->method = md->name;
		assert_int_equal(ipc_client_invoke(bound, md->name, args, -1,
						   im->drop_reply
							   ? IPC_INVOKE_DROP_REPLY
							   : 0,
						   im->drop_reply ? NULL
								  : client_reply_cb,
						   c, &c->id), 0);
		assert_int_equal(c->id, c2s.f[i]->request_id);
		protobuf_c_message_free_unpacked(args, NULL);
	}
	/* The service sees the captured calls. */
	for (size_t i = 1; i < c2s.n; i++) {
		const Perfetto__Protos__IPCFrame__InvokeMethod *want =
			c2s.f[i]->msg_invoke_method, *got;
		const ProtobufCMethodDescriptor *md =
			protobuf_c_service_descriptor_get_method_by_name(
				PRODUCER_PORT, calls[i - 1].method);
		static uint8_t a[SPN_IPC_BUFFER_SIZE], b[SPN_IPC_BUFFER_SIZE];

		f = service_read(sfd, rbuf, &rlen);
		got = f->msg_invoke_method;
		assert_int_equal(f->request_id, c2s.f[i]->request_id);
		assert_non_null(got);
		assert_int_equal(got->service_id, want->service_id);
		assert_int_equal(got->method_id, want->method_id);
		assert_true(got->has_drop_reply);
		assert_int_equal(got->drop_reply, want->drop_reply);
		assert_int_equal(canonical(md->input, &got->args_proto, a),
				 canonical(md->input, &want->args_proto, b));
		assert_memory_equal(a, b, canonical(md->input, &want->args_proto,
						    b));
		ipc_frame_free(f);
	}
	/* The captured answers; the SMB fd with the first GetAsyncCommand. */
	memfd = memfd_create("perfetto_shmem", MFD_CLOEXEC);
	assert_true(memfd >= 0);
	for (size_t i = 1; i < s2c.n; i++) {
		size_t n = ipc_frame_wanted(out + off, slen - off);
		bool gac = s2c.f[i]->request_id == 3;

		service_send(sfd, out + off, n, gac && !fd_sent ? memfd : -1);
		fd_sent |= gac;
		off += n;
	}
	close(memfd);
	for (int k = 0; k < 20; k++)
		assert_true(ipc_loop_run_once(loop, 1) >= 0);
	for (size_t i = 0; i < ncalls; i++) {
		struct call *c = &calls[i];

		assert_int_equal(c->failures, 0);
		if (!strcmp(c->method, "InitializeConnection") ||
		    !strcmp(c->method, "RegisterDataSource")) {
			assert_int_equal(c->replies, 1);
			assert_int_equal(c->more, 0);
		} else if (!strcmp(c->method, "GetAsyncCommand")) {
			assert_int_equal(c->replies, 5);
			assert_int_equal(c->more, 5);
			assert_int_equal(c->fds, 1);
			assert_int_equal(c->cmds[0],
					 PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_TRACING);
			assert_int_equal(c->cmds[1],
					 PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_DATA_SOURCE);
			assert_int_equal(c->cmds[2],
					 PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE);
		} else {
			assert_int_equal(c->replies, 0);	/* drop_reply */
		}
	}
	/* The service hangs up: the open GetAsyncCommand stream fails once. */
	close(sfd);
	for (int k = 0; k < 20; k++)
		assert_true(ipc_loop_run_once(loop, 1) >= 0);
	for (size_t i = 0; i < ncalls; i++)
		assert_int_equal(calls[i].failures,
				 !strcmp(calls[i].method, "GetAsyncCommand"));
	assert_false(ipc_client_connected(cl));
	ipc_client_destroy(cl);
	close(lfd);
	unlink(path);
	rmdir(dir);
	frames_free(&c2s);
	frames_free(&s2c);
	free(in);
	free(out);
}

/* Every ProducerPort method: success when its frame brought an fd, a
 * rejection otherwise. */
static void reply_if_fd(struct ipc_request *req, const ProtobufCMessage *args,
			void *ctx)
{
	const ProtobufCMessageDescriptor *out = ipc_request_method(req)->output;
	ProtobufCMessage *m = calloc(1, out->sizeof_message);
	int fd = ipc_request_take_fd(req);

	(void)args;
	(void)ctx;
	assert_non_null(m);
	protobuf_c_message_init(out, m);
	if (fd >= 0) {
		assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
		close(fd);
		ipc_request_reply(req, m, -1, false);
	} else {
		ipc_request_reject(req);
	}
	free(m);
}

/*
 * Frames sent one sendmsg each, the way Perfetto clients send them, all
 * written before the host reads: the kernel hands several to one read,
 * the fd with it. Each fd goes to its own frame and no other.
 */
static void test_fd_goes_to_its_own_frame(void **state)
{
	struct ipc_peer_cred cred = {.pid = getpid()};
	ipc_method_fn fns[32];
	struct frames c2s, ours;
	size_t len, off = 0, olen;
	uint8_t *in = read_proxy_file("conn3_producer_c2s.bin", &len);
	uint8_t *out;
	int sv[2], memfd = memfd_create("smb", MFD_CLOEXEC), n = 0;
	static const bool with_fd[] = {false, true, false, false, true, false};

	(void)state;
	for (unsigned i = 0; i < PRODUCER_PORT->n_methods; i++)
		fns[i] = reply_if_fd;
	/* Freed in teardown, after the loop: its connection may outlive
	 * this test by a few turns. */
	assert_int_equal(ipc_host_create(&fd_host, NULL, NULL), 0);
	assert_int_equal(ipc_host_add_service(fd_host, PRODUCER_PORT, fns,
					      NULL), 1);
	frames_parse(&c2s, in, len);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
			 0);
	assert_int_equal(ipc_host_adopt(fd_host, loop, sv[1], &cred), 0);
	/* The captured bind, then InitializeConnection (id 2) and
	 * GetAsyncCommand (id 3) three times each, fds on some. */
	off = ipc_frame_wanted(in, len);
	assert_int_equal(write(sv[0], in, off), (ssize_t)off);
	for (int round = 0; round < 3; round++) {
		size_t p = off;

		for (int k = 0; k < 2; k++) {
			size_t fl = ipc_frame_wanted(in + p, len - p);
			_Alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))];
			struct iovec iov = {.iov_base = in + p, .iov_len = fl};
			struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};

			if (with_fd[n]) {
				struct cmsghdr *c;

				memset(cbuf, 0, sizeof(cbuf));
				m.msg_control = cbuf;
				m.msg_controllen = sizeof(cbuf);
				c = CMSG_FIRSTHDR(&m);
				c->cmsg_level = SOL_SOCKET;
				c->cmsg_type = SCM_RIGHTS;
				c->cmsg_len = CMSG_LEN(sizeof(int));
				memcpy(CMSG_DATA(c), &memfd, sizeof(int));
			}
			assert_int_equal(sendmsg(sv[0], &m, 0), (ssize_t)fl);
			p += fl;
			n++;
		}
	}
	close(memfd);
	drain_to_host(sv[0]);
	olen = collect_replies(sv[0], 7, &out);
	frames_parse(&ours, out, olen);
	assert_int_equal(ours.n, 7);
	for (int i = 0; i < 6; i++) {
		const IpcFrame *r = ours.f[1 + i];

		assert_int_equal(r->request_id, 2 + (i % 2));
		assert_int_equal(r->msg_invoke_method_reply->success, with_fd[i]);
	}
	close(sv[0]);
	frames_free(&c2s);
	frames_free(&ours);
	free(in);
	free(out);
}

static int setup(void **state)
{
	(void)state;
	producer_host = make_host(PRODUCER_PORT);
	consumer_host = make_host(CONSUMER_PORT);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	ipc_loop_destroy(loop);
	ipc_host_destroy(producer_host);
	ipc_host_destroy(consumer_host);
	ipc_host_destroy(fd_host);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_replay_bind_and_requests),
		cmocka_unit_test(test_replay_every_split),
		cmocka_unit_test(test_client_speaks_like_v14_producer),
		cmocka_unit_test(test_fd_goes_to_its_own_frame),
	};
	int err = ipc_loop_create(&loop, NULL);

	/* 77: no io_uring here (kernel too old, or disabled by policy). */
	if (err == -ENOSYS || err == -EPERM || err == -EACCES) {
		fprintf(stderr, "io_uring unavailable: %s\n", strerror(-err));
		return 77;
	}
	assert_int_equal(err, 0);
	return cmocka_run_group_tests(tests, setup, teardown);
}
