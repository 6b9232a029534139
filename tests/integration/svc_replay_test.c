// SPDX-License-Identifier: Apache-2.0
// Replays the captured Perfetto v14 producer connection (conn3) into a real
// spindled, writing the captured SMB snapshots into the SMB spindled hands
// out before the CommitData frames that follow them, and checks that the
// trace read back over the consumer socket holds the 4032 track events of
// session1/trace.pftrace (issue: producer side, "tests with real bytes").
//
// The producer side is raw bytes on a socket (the captured frames exactly,
// plus Sync frames with unused request ids as fences); the consumer side
// is Spindle's IPC client. Runs with --lanes 1 and --lanes 2.
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "consumer_port.pb-c.h"
#include "core/service.h"
#include "ipc/client.h"
#include "ipc/frame.h"
#include "producer_port.pb-c.h"
#include "testdata.h"
#include "trace_packet.pb-c.h"

#define SESSION1 SPN_PROXY_DIR
#define SMB_SIZE 262144u
#define GET_ASYNC_REQ 3		/* request id of GetAsyncCommand in conn3 */
#define SYNC_METHOD 11		/* ProducerPort.Sync */

/* c2s offsets where the captured SMB snapshots were taken. */
static const unsigned snap_off[] = { 221, 242, 852, 1310, 1481, 1502 };

struct replay {
	char dir[64];		/* temp dir holding the sockets */
	char psock[128];	/* producer socket */
	char csock[128];	/* consumer socket */
	struct svc *svc;	/* the service under test */
	int pfd;		/* raw producer connection */
	uint8_t *c2s;		/* captured producer bytes */
	size_t c2s_len;		/* their length */
	uint8_t *smb;		/* the SMB spindled sent */
	uint8_t rx[1 << 18];	/* producer receive buffer */
	size_t rx_len;		/* bytes in rx */
	uint64_t next_sync_id;	/* request ids of injected Sync frames */
	int cmds[8];		/* GetAsyncCommand kinds seen, by cmd_case */
};

static void send_all(int fd, const uint8_t *b, size_t n)
{
	while (n) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);

		assert_true(w > 0);
		b += w;
		n -= (size_t)w;
	}
}

/* Reads one s2c frame (taking an fd if one rides on it); returns it. */
static IpcFrame *recv_frame(struct replay *r, int *fd_out)
{
	for (;;) {
		const uint8_t *payload;
		uint32_t plen;
		ssize_t n = ipc_frame_scan(r->rx, r->rx_len, &payload, &plen);

		if (n > 0) {
			IpcFrame *f = NULL;

			assert_int_equal(ipc_frame_unpack(payload, plen, &f), 0);
			memmove(r->rx, r->rx + n, r->rx_len - (size_t)n);
			r->rx_len -= (size_t)n;
			return f;
		}
		assert_int_equal(n, IPC_FRAME_NEED_MORE);
		char cbuf[CMSG_SPACE(sizeof(int))];
		struct iovec iov = { r->rx + r->rx_len, sizeof(r->rx) - r->rx_len };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = cbuf,
				     .msg_controllen = sizeof(cbuf) };
		ssize_t got = recvmsg(r->pfd, &mh, MSG_CMSG_CLOEXEC);

		assert_true(got > 0);
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c;
		     c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_level == SOL_SOCKET &&
			    c->cmsg_type == SCM_RIGHTS && fd_out)
				memcpy(fd_out, CMSG_DATA(c), sizeof(int));
		r->rx_len += (size_t)got;
	}
}

/* Waits for the next GetAsyncCommand command; maps the SMB if it comes. */
static int wait_cmd(struct replay *r)
{
	for (;;) {
		int fd = -1;
		IpcFrame *f = recv_frame(r, &fd);
		Perfetto__Protos__GetAsyncCommandResponse *c;
		int kind;

		if (f->request_id != GET_ASYNC_REQ) {
			ipc_frame_free(f);
			continue;
		}
		assert_int_equal(f->msg_case,
				 PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD_REPLY);
		c = perfetto__protos__get_async_command_response__unpack(
			NULL, f->msg_invoke_method_reply->reply_proto.len,
			f->msg_invoke_method_reply->reply_proto.data);
		assert_non_null(c);
		kind = c->cmd_case;
		if (kind == PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_TRACING) {
			struct stat st;

			/* A v14 producer aborts without the fd (ipc-wire.md §7). */
			assert_true(fd >= 0);
			assert_int_equal(fstat(fd, &st), 0);
			assert_int_equal(st.st_size, SMB_SIZE);
			r->smb = mmap(NULL, SMB_SIZE, PROT_READ | PROT_WRITE,
				      MAP_SHARED, fd, 0);
			assert_true(r->smb != MAP_FAILED);
			close(fd);
		}
		r->cmds[kind & 7]++;
		perfetto__protos__get_async_command_response__free_unpacked(c,
									    NULL);
		ipc_frame_free(f);
		return kind;
	}
}

/* Sends a Sync and waits for its reply: every earlier frame is done. */
static void fence(struct replay *r)
{
	IpcFrame f = PERFETTO__PROTOS__IPCFRAME__INIT;
	Perfetto__Protos__IPCFrame__InvokeMethod im =
		PERFETTO__PROTOS__IPCFRAME__INVOKE_METHOD__INIT;
	struct ipc_txbuf *tx;
	uint64_t id = r->next_sync_id++;

	im.has_service_id = im.has_method_id = im.has_drop_reply = true;
	im.service_id = 1;
	im.method_id = SYNC_METHOD;
	f.has_request_id = true;
	f.request_id = id;
	f.msg_case = PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD;
	f.msg_invoke_method = &im;
	assert_int_equal(ipc_txbuf_from_frame(&f, -1, &tx), 0);
	send_all(r->pfd, tx->data, tx->len);
	free(tx);
	for (;;) {
		IpcFrame *g = recv_frame(r, NULL);
		bool done = g->request_id == id;

		ipc_frame_free(g);
		if (done)
			return;
	}
}

/* Copies snapshot k into the SMB, then sends c2s bytes [from, to). */
static void replay_segment(struct replay *r, int k, size_t from, size_t to)
{
	char path[512];
	struct blob snap;

	if (k >= 0) {
		snprintf(path, sizeof(path),
			 SESSION1 "conn3_producer_fd0_snap%02d_c2s_off%u.bin",
			 k + 1, snap_off[k]);
		snap = read_blob(path);
		assert_int_equal(snap.len, SMB_SIZE);
		memcpy(r->smb, snap.data, SMB_SIZE);
		free(snap.data);
	}
	send_all(r->pfd, r->c2s + from, to - from);
	fence(r);
}

/* --- the consumer --- */

struct consumer {
	struct ipc_sync *sync;		/* blocking client */
	struct ipc_proxy *port;		/* ConsumerPort */
	bool enable_done;		/* EnableTracing answered */
	bool enable_disabled;		/* ... with disabled:true */
	size_t track_events;		/* counted in ReadBuffers */
	size_t packets;			/* whole packets read */
	uint8_t *pkt;			/* packet being reassembled */
	size_t pkt_len;			/* its bytes */
	bool flush_done;		/* Flush answered */
	int flush_status;		/* its status */
};

static void on_flush(void *arg, struct ipc_client_reply *rep)
{
	struct consumer *c = arg;

	c->flush_done = true;
	c->flush_status = rep->status;
}

static void on_enable(void *arg, struct ipc_client_reply *rep)
{
	struct consumer *c = arg;

	c->enable_done = true;
	if (rep->status == 0) {
		const Perfetto__Protos__EnableTracingResponse *e =
			(const void *)rep->msg;
		c->enable_disabled = e->disabled;
	}
}

static void on_read(void *arg, struct ipc_client_reply *rep)
{
	struct consumer *c = arg;
	const Perfetto__Protos__ReadBuffersResponse *rb = (const void *)rep->msg;

	if (rep->status != 0)
		return;
	for (size_t i = 0; i < rb->n_slices; i++) {
		const Perfetto__Protos__ReadBuffersResponse__Slice *s =
			rb->slices[i];
		Perfetto__Protos__TracePacket *p;

		c->pkt = realloc(c->pkt, c->pkt_len + s->data.len + 1);
		memcpy(c->pkt + c->pkt_len, s->data.data, s->data.len);
		c->pkt_len += s->data.len;
		if (!s->last_slice_for_packet)
			continue;
		p = perfetto__protos__trace_packet__unpack(NULL, c->pkt_len,
							   c->pkt);
		assert_non_null(p);
		c->packets++;
		if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACK_EVENT)
			c->track_events++;
		perfetto__protos__trace_packet__free_unpacked(p, NULL);
		c->pkt_len = 0;
	}
}

static void consumer_enable(struct consumer *c)
{
	Perfetto__Protos__EnableTracingRequest req =
		PERFETTO__PROTOS__ENABLE_TRACING_REQUEST__INIT;
	Perfetto__Protos__TraceConfig cfg = PERFETTO__PROTOS__TRACE_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__BufferConfig buf =
		PERFETTO__PROTOS__TRACE_CONFIG__BUFFER_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__BufferConfig *bufs[] = { &buf };
	Perfetto__Protos__TraceConfig__DataSource ds =
		PERFETTO__PROTOS__TRACE_CONFIG__DATA_SOURCE__INIT;
	Perfetto__Protos__TraceConfig__DataSource *dss[] = { &ds };
	Perfetto__Protos__DataSourceConfig dsc =
		PERFETTO__PROTOS__DATA_SOURCE_CONFIG__INIT;

	buf.has_size_kb = true;
	buf.size_kb = 1024;
	dsc.name = "track_event";
	ds.config = &dsc;
	cfg.n_buffers = 1;
	cfg.buffers = bufs;
	cfg.n_data_sources = 1;
	cfg.data_sources = dss;
	req.trace_config = &cfg;
	assert_int_equal(ipc_client_invoke(c->port, "EnableTracing", &req.base,
					   -1, 0, on_enable, c, NULL),
			 0);
}

static int consumer_call(struct consumer *c, const char *method,
			 const ProtobufCMessageDescriptor *d)
{
	_Alignas(max_align_t) unsigned char req[256];

	assert_true(d->sizeof_message <= sizeof(req));
	protobuf_c_message_init(d, req);
	return ipc_sync_call(c->sync, c->port, method, (ProtobufCMessage *)req,
			     -1, NULL, NULL, 5000);
}

static void run_replay(unsigned lanes)
{
	struct replay *r = calloc(1, sizeof(*r));
	struct consumer c = { 0 };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct svc_opts o = { 0 };
	Perfetto__Protos__FlushRequest fr = PERFETTO__PROTOS__FLUSH_REQUEST__INIT;

	assert_non_null(r);
	r->next_sync_id = 100000;
	r->c2s = read_proxy_file("conn3_producer_c2s.bin", &r->c2s_len);
	assert_int_equal(r->c2s_len, 1523);
	strcpy(r->dir, "/tmp/spn_replay_XXXXXX");
	assert_non_null(mkdtemp(r->dir));
	snprintf(r->psock, sizeof(r->psock), "%s/p.sock", r->dir);
	snprintf(r->csock, sizeof(r->csock), "%s/c.sock", r->dir);
	o.producer_socket = r->psock;
	o.consumer_socket = r->csock;
	o.lanes = lanes;
	o.control = 1;
	assert_int_equal(svc_start(&o, &r->svc), 0);

	/* Producer: bind, initialize, async stream, register (to 221). */
	r->pfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	strcpy(sa.sun_path, r->psock);
	assert_int_equal(connect(r->pfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	replay_segment(r, -1, 0, snap_off[0]);

	/* Consumer: a session with track_event. */
	assert_int_equal(ipc_sync_connect(r->csock, 5000, &c.sync), 0);
	assert_int_equal(ipc_sync_bind(c.sync,
				       &perfetto__protos__consumer_port__descriptor,
				       &c.port, 5000),
			 0);
	consumer_enable(&c);
	ipc_loop_run_once(ipc_sync_loop(c.sync), 100);
	assert_int_equal(wait_cmd(r),
			 PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_TRACING);
	assert_int_equal(wait_cmd(r),
			 PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_DATA_SOURCE);
	assert_int_equal(wait_cmd(r),
			 PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE);

	/* The commits, each after its snapshot. */
	for (int k = 0; k < 4; k++)
		replay_segment(r, k, snap_off[k], snap_off[k + 1]);

	/* Flush: the captured CommitData with flush_request_id 1 acks it. */
	fr.has_timeout_ms = true;
	fr.timeout_ms = 5000;
	assert_int_equal(ipc_client_invoke(c.port, "Flush", &fr.base, -1, 0,
					   on_flush, &c, NULL),
			 0);
	ipc_loop_run_once(ipc_sync_loop(c.sync), 100);
	assert_int_equal(wait_cmd(r),
			 PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_FLUSH);
	replay_segment(r, 4, snap_off[4], snap_off[5]);

	/* Stop: the captured NotifyDataSourceStopped acks it. */
	for (int i = 0; i < 100 && !c.flush_done; i++)
		ipc_loop_run_once(ipc_sync_loop(c.sync), 50);
	assert_int_equal(c.flush_status, 0);
	assert_int_equal(consumer_call(&c, "DisableTracing",
				       &perfetto__protos__disable_tracing_request__descriptor),
			 0);
	assert_int_equal(wait_cmd(r),
			 PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_STOP_DATA_SOURCE);
	replay_segment(r, 5, snap_off[5], r->c2s_len);
	for (int i = 0; i < 100 && !c.enable_done; i++)
		ipc_loop_run_once(ipc_sync_loop(c.sync), 50);
	assert_true(c.enable_done);
	assert_true(c.enable_disabled);

	/* Read: every track event of the original trace is there. */
	{
		Perfetto__Protos__ReadBuffersRequest req =
			PERFETTO__PROTOS__READ_BUFFERS_REQUEST__INIT;

		assert_int_equal(ipc_sync_stream(c.sync, c.port, "ReadBuffers",
						 &req.base, -1, on_read, &c, 5000),
				 0);
	}
	assert_int_equal(c.track_events, 4032);
	assert_true(c.packets > c.track_events);
	assert_int_equal(consumer_call(&c, "FreeBuffers",
				       &perfetto__protos__free_buffers_request__descriptor),
			 0);

	ipc_sync_close(c.sync);
	free(c.pkt);
	close(r->pfd);
	if (r->smb)
		munmap(r->smb, SMB_SIZE);
	svc_stop(r->svc);
	rmdir(r->dir);
	free(r->c2s);
	free(r);
}

static void test_replay_one_lane(void **state)
{
	(void)state;
	run_replay(1);
}

static void test_replay_two_lanes(void **state)
{
	(void)state;
	run_replay(2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_replay_one_lane),
		cmocka_unit_test(test_replay_two_lanes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
