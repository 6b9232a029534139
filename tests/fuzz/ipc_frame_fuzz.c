// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the IPC frame decoder and both dispatchers: each
// input is a byte stream, delivered in input-dependent pieces over a real
// socket (1) to a host serving ProducerPort, or ConsumerPort when the bytes
// name it, and (2) as the service's side of the stream to a client that
// bound ProducerPort and then invoked three methods. Seeds: the captured
// v14 streams (*_c2s.bin drive the host, *_s2c.bin the client).
//
// Built by tests/fuzz/ipc.cmake when SPN_FUZZ=ON and the compiler is
// clang; .ci/run runs it for 60 s:
//   build-fuzz/tests/ipc_frame_fuzz -max_total_time=60 CORPUS_DIR
// with tests/data/perfetto_v14/session1/proxy/*_c2s.bin and *_s2c.bin
// copied into CORPUS_DIR.
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "consumer_port.pb-c.h"
#include "ipc/client.h"
#include "ipc/host.h"
#include "ipc/log.h"
#include "ipc/loop.h"
#include "producer_port.pb-c.h"

#define PRODUCER_PORT (&perfetto__protos__producer_port__descriptor)
#define CONSUMER_PORT (&perfetto__protos__consumer_port__descriptor)

static struct ipc_loop *loop;
static struct ipc_host *producer_host, *consumer_host;
static int reply_fd = -1;		/* attached to some replies */
static char listen_name[64];		/* abstract socket of client mode */
static int accepted_fd = -1;		/* server side of the client mode */

/* Answers with an empty response: streaming methods twice (has_more,
 * then final with an fd), fd-taking methods after taking it. */
static void handle(struct ipc_request *req, const ProtobufCMessage *args,
		   void *ctx)
{
	const ProtobufCMethodDescriptor *md = ipc_request_method(req);
	ProtobufCMessage *m = calloc(1, md->output->sizeof_message);
	int fd;

	(void)args;
	(void)ctx;
	if (!m)
		abort();
	protobuf_c_message_init(md->output, m);
	fd = ipc_request_take_fd(req);
	if (fd >= 0)
		close(fd);
	if (!strcmp(md->name, "GetAsyncCommand") ||
	    !strcmp(md->name, "ReadBuffers")) {
		ipc_request_reply(req, m, -1, true);
		ipc_request_reply(req, m, reply_fd, false);
	} else if (!strcmp(md->name, "Sync")) {
		ipc_request_reject(req);
	} else if (!strcmp(md->name, "Flush")) {
		struct ipc_reply h;

		/* Deferred, answered after the handler returned. */
		ipc_request_defer(req, &h);
		ipc_reply_send(&h, m, -1, false);
	} else if (strcmp(md->name, "EnableTracing") != 0) {
		ipc_request_reply(req, m, -1, false);
	}
	/* EnableTracing: no answer; the host rejects it on return. */
	free(m);
}

static struct ipc_host *make_host(const ProtobufCServiceDescriptor *d)
{
	ipc_method_fn fns[32];
	struct ipc_host *h;

	if (d->n_methods > 32)
		abort();
	for (unsigned i = 0; i < d->n_methods; i++)
		fns[i] = handle;
	if (ipc_host_create(&h, NULL, NULL) || ipc_host_add_service(h, d, fns,
								    NULL) != 1)
		abort();
	return h;
}

static void on_accept(void *arg, int fd, const struct ipc_peer_cred *cred)
{
	(void)arg;
	(void)cred;
	if (accepted_fd >= 0)
		close(accepted_fd);
	accepted_fd = fd;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	spn_log_set_level(SPN_LOG_ERROR);
	if (ipc_loop_create(&loop, NULL) != 0) {
		fprintf(stderr, "ipc_frame_fuzz: io_uring unavailable\n");
		exit(77);
	}
	producer_host = make_host(PRODUCER_PORT);
	consumer_host = make_host(CONSUMER_PORT);
	reply_fd = memfd_create("ipc_fuzz", MFD_CLOEXEC);
	snprintf(listen_name, sizeof(listen_name), "@spn-ipc-fuzz-%d",
		 (int)getpid());
	if (reply_fd < 0 || ipc_listen(loop, listen_name, on_accept, NULL, NULL))
		abort();
	return 0;
}

/* Writes data to fd in pieces whose sizes come from the data itself,
 * letting the loop read each piece before the next is written. */
static void feed(int fd, const uint8_t *data, size_t size)
{
	uint32_t seed = (uint32_t)size * 2654435761u;
	size_t off = 0;
	int stalls = 0;

	while (off < size && stalls < 256) {
		size_t piece;
		ssize_t n;
		int outq = 0;

		seed = seed * 1103515245u + 12345u + data[off];
		piece = 1 + (seed >> 16) % 97;
		if (seed & 0x10000000u)
			piece = size - off;	/* sometimes all the rest */
		if (piece > size - off)
			piece = size - off;
		n = send(fd, data + off, piece, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0 && errno != EAGAIN)
			return;	/* the other side closed */
		if (n > 0)
			off += (size_t)n;
		else
			stalls++;	/* the reader stopped: give up in time */
		/* Until the loop has read what was written (or gave up). */
		for (int i = 0; i < 64; i++) {
			ipc_loop_run_once(loop, 0);
			if (ioctl(fd, SIOCOUTQ, &outq) != 0 || outq == 0)
				break;
		}
	}
}

static void host_side(const uint8_t *data, size_t size)
{
	struct ipc_peer_cred cred = {.pid = getpid(), .uid = getuid(),
				     .gid = getgid()};
	struct ipc_host *h = memmem(data, size, "ConsumerPort", 12)
				     ? consumer_host : producer_host;
	char sink[4096];
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		abort();
	ipc_host_adopt(h, loop, sv[1], &cred);
	feed(sv[0], data, size);
	for (int i = 0; i < 4; i++) {
		ipc_loop_run_once(loop, 0);
		while (recv(sv[0], sink, sizeof(sink), MSG_DONTWAIT) > 0)
			;
	}
	close(sv[0]);
	for (int i = 0; i < 4; i++)
		ipc_loop_run_once(loop, 0);
}

static void reply_cb(void *arg, struct ipc_client_reply *r)
{
	int fd = ipc_client_reply_take_fd(r);

	(void)arg;
	if (fd >= 0)
		close(fd);
}

static void bind_cb(void *arg, struct ipc_proxy *p, int status)
{
	Perfetto__Protos__InitializeConnectionRequest init =
		PERFETTO__PROTOS__INITIALIZE_CONNECTION_REQUEST__INIT;
	Perfetto__Protos__GetAsyncCommandRequest gac =
		PERFETTO__PROTOS__GET_ASYNC_COMMAND_REQUEST__INIT;
	Perfetto__Protos__SyncRequest sync = PERFETTO__PROTOS__SYNC_REQUEST__INIT;

	(void)arg;
	if (status)
		return;
	/* The v14 producer's order (spec §9): ids 2, 3, 4. */
	ipc_client_invoke(p, "InitializeConnection", &init.base, -1, 0,
			  reply_cb, NULL, NULL);
	ipc_client_invoke(p, "GetAsyncCommand", &gac.base, -1, 0, reply_cb,
			  NULL, NULL);
	ipc_client_invoke(p, "Sync", &sync.base, -1, 0, reply_cb, NULL, NULL);
}

static void client_side(const uint8_t *data, size_t size)
{
	struct ipc_client *cl;
	char sink[4096];
	int fd;

	if (ipc_client_connect(loop, listen_name, NULL, NULL, &cl))
		abort();
	ipc_client_bind(cl, PRODUCER_PORT, bind_cb, NULL);
	for (int i = 0; i < 64 && accepted_fd < 0; i++)
		ipc_loop_run_once(loop, 1);
	fd = accepted_fd;
	accepted_fd = -1;
	if (fd < 0)
		abort();
	feed(fd, data, size);
	for (int i = 0; i < 4; i++) {
		ipc_loop_run_once(loop, 0);
		while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
			;
	}
	ipc_client_destroy(cl);
	close(fd);
	for (int i = 0; i < 4; i++)
		ipc_loop_run_once(loop, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	host_side(data, size);
	client_side(data, size);
	return 0;
}
