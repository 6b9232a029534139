// SPDX-License-Identifier: Apache-2.0
// ipc_bench: Spindle IPC over a Unix socket (host on its own thread, client
// on the main thread): small InvokeMethod round trips per second (one at a
// time, and 32 in flight), and streamed-reply MB/s (ReadBuffers-shaped
// replies of 32 KiB), beside a plain blocking write/read ping-pong and a
// plain blocking stream over a socketpair in the same run. Writes
// bench/results/ipc_bench.json.
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_util.h"
#include "consumer_port.pb-c.h"
#include "ipc/client.h"
#include "ipc/conn.h"
#include "ipc/host.h"
#include "ipc/log.h"
#include "ipc/loop.h"
#include "producer_port.pb-c.h"

#define ROUND_TRIPS 20000
#define PIPELINE_DEPTH 32
#define STREAM_BYTES (256u << 20)
#define SLICE_BYTES 4096u
#define SLICES_PER_REPLY 8u	/* 32 KiB replies, like ReadBuffers batches */
#define STREAM_QUEUE_HIGH (2u << 20)	/* pace: at most this much queued */

static void die(const char *what, int err)
{
	fprintf(stderr, "ipc_bench: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

/* ---- the host ---- */

/* One ReadBuffers stream being produced. */
struct stream {
	struct ipc_reply h;		/* its reply handle */
	uint64_t left;			/* bytes still to send */
};

static uint8_t slice_data[SLICE_BYTES];
static struct ipc_loop *host_loop;

static void stream_more(struct ipc_loop *loop, void *arg, uint64_t u64);

/* Sends replies while the connection's queue is short, then continues
 * when the peer has read most of it. */
static void stream_pump(struct stream *s)
{
	Perfetto__Protos__ReadBuffersResponse rep =
		PERFETTO__PROTOS__READ_BUFFERS_RESPONSE__INIT;
	Perfetto__Protos__ReadBuffersResponse__Slice slices[SLICES_PER_REPLY];
	Perfetto__Protos__ReadBuffersResponse__Slice *ptrs[SLICES_PER_REPLY];
	struct ipc_conn *c;

	for (unsigned i = 0; i < SLICES_PER_REPLY; i++) {
		perfetto__protos__read_buffers_response__slice__init(&slices[i]);
		slices[i].has_data = 1;
		slices[i].data.data = slice_data;
		slices[i].data.len = SLICE_BYTES;
		slices[i].has_last_slice_for_packet = 1;
		slices[i].last_slice_for_packet = 1;
		ptrs[i] = &slices[i];
	}
	rep.n_slices = SLICES_PER_REPLY;
	rep.slices = ptrs;
	while (s->left) {
		c = ipc_conn_lookup(s->h.loop, s->h.conn_id);
		if (!c)
			break;	/* the consumer went away */
		if (ipc_conn_queued(c) >= STREAM_QUEUE_HIGH &&
		    ipc_conn_notify_drained(c, STREAM_QUEUE_HIGH / 4, stream_more,
					    s, 0) == 0)
			return;
		s->left -= SLICE_BYTES * SLICES_PER_REPLY;
		if (ipc_reply_send(&s->h, &rep.base, -1, s->left != 0) != 0)
			break;
	}
	free(s);
}

static void stream_more(struct ipc_loop *loop, void *arg, uint64_t u64)
{
	(void)loop;
	(void)u64;
	stream_pump(arg);
}

static void h_read_buffers(struct ipc_request *req,
			   const ProtobufCMessage *args, void *ctx)
{
	struct stream *s = calloc(1, sizeof(*s));

	(void)args;
	(void)ctx;
	if (!s)
		die("calloc", ENOMEM);
	ipc_request_defer(req, &s->h);
	s->left = STREAM_BYTES;
	stream_pump(s);
}

static void h_sync(struct ipc_request *req, const ProtobufCMessage *args,
		   void *ctx)
{
	Perfetto__Protos__SyncResponse rep = PERFETTO__PROTOS__SYNC_RESPONSE__INIT;

	(void)args;
	(void)ctx;
	ipc_request_reply(req, &rep.base, -1, false);
}

struct host_args {
	struct ipc_host *producer;	/* ProducerPort host */
	struct ipc_host *consumer;	/* ConsumerPort host */
	const char *producer_path;	/* socket paths */
	const char *consumer_path;
	pthread_mutex_t mu;		/* guards ready */
	pthread_cond_t cv;		/* signals ready */
	bool ready;			/* listening */
};

static void *host_main(void *arg)
{
	struct host_args *a = arg;
	int err;

	err = ipc_loop_create(&host_loop, NULL);
	if (err)
		die("ipc_loop_create", err);
	if ((err = ipc_host_listen(a->producer, host_loop, a->producer_path,
				   NULL)) ||
	    (err = ipc_host_listen(a->consumer, host_loop, a->consumer_path,
				   NULL)))
		die("listen", err);
	pthread_mutex_lock(&a->mu);
	a->ready = true;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
	ipc_loop_run(host_loop);
	ipc_loop_destroy(host_loop);
	return NULL;
}

/* ---- the Spindle client ---- */

static double bench_ipc_round_trips(struct ipc_sync *s, struct ipc_proxy *p)
{
	Perfetto__Protos__SyncRequest req = PERFETTO__PROTOS__SYNC_REQUEST__INIT;
	uint64_t t0;
	int err;

	for (int i = 0; i < 1000; i++) {	/* warm up */
		err = ipc_sync_call(s, p, "Sync", &req.base, -1, NULL, NULL, 5000);
		if (err)
			die("Sync", err);
	}
	t0 = bench_now_ns();
	for (int i = 0; i < ROUND_TRIPS; i++) {
		err = ipc_sync_call(s, p, "Sync", &req.base, -1, NULL, NULL, 5000);
		if (err)
			die("Sync", err);
	}
	return ROUND_TRIPS / ((bench_now_ns() - t0) / 1e9);
}

/* Pipelined calls: each reply sends the next request. */
struct pipeline {
	struct ipc_proxy *proxy;	/* bound ProducerPort */
	int sent;			/* requests issued */
	int done;			/* replies received */
};

static void pipeline_cb(void *arg, struct ipc_client_reply *r)
{
	Perfetto__Protos__SyncRequest req = PERFETTO__PROTOS__SYNC_REQUEST__INIT;
	struct pipeline *pl = arg;

	if (r->status)
		die("pipelined Sync", r->status);
	pl->done++;
	if (pl->sent < ROUND_TRIPS) {
		pl->sent++;
		if (ipc_client_invoke(pl->proxy, "Sync", &req.base, -1, 0,
				      pipeline_cb, pl, NULL))
			die("invoke", EIO);
	}
}

static double bench_ipc_pipelined(struct ipc_sync *s, struct ipc_proxy *p)
{
	Perfetto__Protos__SyncRequest req = PERFETTO__PROTOS__SYNC_REQUEST__INIT;
	struct pipeline pl = {.proxy = p};
	uint64_t t0 = bench_now_ns();

	for (int i = 0; i < PIPELINE_DEPTH; i++) {
		pl.sent++;
		if (ipc_client_invoke(p, "Sync", &req.base, -1, 0, pipeline_cb,
				      &pl, NULL))
			die("invoke", EIO);
	}
	while (pl.done < ROUND_TRIPS)
		if (ipc_loop_run_once(ipc_sync_loop(s), 1000) < 0)
			die("run", EIO);
	return ROUND_TRIPS / ((bench_now_ns() - t0) / 1e9);
}

struct stream_count {
	uint64_t bytes;		/* slice bytes received */
};

static void stream_cb(void *arg, struct ipc_client_reply *r)
{
	const Perfetto__Protos__ReadBuffersResponse *rep;
	struct stream_count *sc = arg;

	if (r->status)
		return;
	rep = (const Perfetto__Protos__ReadBuffersResponse *)r->msg;
	for (size_t i = 0; i < rep->n_slices; i++)
		sc->bytes += rep->slices[i]->data.len;
}

static double bench_ipc_stream(const char *path)
{
	Perfetto__Protos__ReadBuffersRequest req =
		PERFETTO__PROTOS__READ_BUFFERS_REQUEST__INIT;
	struct stream_count sc = {0};
	struct ipc_proxy *p;
	struct ipc_sync *s;
	uint64_t t0;
	int err;

	err = ipc_sync_connect(path, 5000, &s);
	if (err)
		die("connect consumer", err);
	err = ipc_sync_bind(s, &perfetto__protos__consumer_port__descriptor, &p,
			    5000);
	if (err)
		die("bind ConsumerPort", err);
	t0 = bench_now_ns();
	err = ipc_sync_stream(s, p, "ReadBuffers", &req.base, -1, stream_cb, &sc,
			      60000);
	if (err)
		die("ReadBuffers", err);
	if (sc.bytes != STREAM_BYTES)
		die("stream length", EIO);
	ipc_sync_close(s);
	return STREAM_BYTES / ((bench_now_ns() - t0) / 1e9) / 1e6;
}

/* ---- the plain baselines ---- */

/* Frame sizes of a Sync call and its reply, for a like-for-like baseline. */
#define PING_BYTES 18
#define PONG_BYTES 17

static void full_write(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w <= 0)
			die("write", errno);
		p = (const char *)p + w;
		n -= (size_t)w;
	}
}

static bool full_read(int fd, void *p, size_t n)
{
	while (n) {
		ssize_t r = read(fd, p, n);

		if (r <= 0)
			return false;
		p = (char *)p + r;
		n -= (size_t)r;
	}
	return true;
}

static void *pong_main(void *arg)
{
	int fd = *(int *)arg;
	char buf[PING_BYTES], out[PONG_BYTES] = {0};

	while (full_read(fd, buf, sizeof(buf)))
		full_write(fd, out, sizeof(out));
	return NULL;
}

static double bench_plain_round_trips(void)
{
	char ping[PING_BYTES] = {0}, pong[PONG_BYTES];
	pthread_t th;
	uint64_t t0;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		die("socketpair", errno);
	pthread_create(&th, NULL, pong_main, &sv[1]);
	for (int i = 0; i < 1000; i++) {
		full_write(sv[0], ping, sizeof(ping));
		full_read(sv[0], pong, sizeof(pong));
	}
	t0 = bench_now_ns();
	for (int i = 0; i < ROUND_TRIPS; i++) {
		full_write(sv[0], ping, sizeof(ping));
		full_read(sv[0], pong, sizeof(pong));
	}
	t0 = bench_now_ns() - t0;
	close(sv[0]);
	pthread_join(th, NULL);
	close(sv[1]);
	return ROUND_TRIPS / (t0 / 1e9);
}

static void *plain_writer_main(void *arg)
{
	int fd = *(int *)arg;
	static uint8_t chunk[SLICE_BYTES * SLICES_PER_REPLY];

	for (uint64_t left = STREAM_BYTES; left; left -= sizeof(chunk))
		full_write(fd, chunk, sizeof(chunk));
	return NULL;
}

static double bench_plain_stream(void)
{
	static uint8_t buf[SLICE_BYTES * SLICES_PER_REPLY];
	uint64_t got = 0, t0;
	pthread_t th;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		die("socketpair", errno);
	t0 = bench_now_ns();
	pthread_create(&th, NULL, plain_writer_main, &sv[1]);
	while (got < STREAM_BYTES) {
		ssize_t r = read(sv[0], buf, sizeof(buf));

		if (r <= 0)
			die("read", errno);
		got += (uint64_t)r;
	}
	t0 = bench_now_ns() - t0;
	pthread_join(th, NULL);
	close(sv[0]);
	close(sv[1]);
	return STREAM_BYTES / (t0 / 1e9) / 1e6;
}

int main(void)
{
	ipc_method_fn pfns[32] = {0}, cfns[32] = {0};
	const ProtobufCServiceDescriptor *pd =
		&perfetto__protos__producer_port__descriptor;
	const ProtobufCServiceDescriptor *cd =
		&perfetto__protos__consumer_port__descriptor;
	struct host_args ha = {.mu = PTHREAD_MUTEX_INITIALIZER,
			       .cv = PTHREAD_COND_INITIALIZER};
	char dir[] = "/tmp/spn_ipc_bench_XXXXXX", ppath[64], cpath[64];
	double ipc_rt, ipc_pl, ipc_mb, plain_rt, plain_mb;
	struct ipc_proxy *p;
	struct bench_json j;
	struct ipc_sync *s;
	pthread_t th;
	int err;

	spn_log_init();
	if (!mkdtemp(dir))
		die("mkdtemp", errno);
	snprintf(ppath, sizeof(ppath), "%s/producer", dir);
	snprintf(cpath, sizeof(cpath), "%s/consumer", dir);
	pfns[protobuf_c_service_descriptor_get_method_by_name(pd, "Sync") -
	     pd->methods] = h_sync;
	cfns[protobuf_c_service_descriptor_get_method_by_name(cd, "ReadBuffers") -
	     cd->methods] = h_read_buffers;
	if ((err = ipc_host_create(&ha.producer, NULL, NULL)) ||
	    (err = ipc_host_create(&ha.consumer, NULL, NULL)))
		die("ipc_host_create", err);
	if (ipc_host_add_service(ha.producer, pd, pfns, NULL) != 1 ||
	    ipc_host_add_service(ha.consumer, cd, cfns, NULL) != 1)
		die("ipc_host_add_service", EINVAL);
	ha.producer_path = ppath;
	ha.consumer_path = cpath;
	pthread_create(&th, NULL, host_main, &ha);
	pthread_mutex_lock(&ha.mu);
	while (!ha.ready)
		pthread_cond_wait(&ha.cv, &ha.mu);
	pthread_mutex_unlock(&ha.mu);

	err = ipc_sync_connect(ppath, 5000, &s);
	if (err == -ENOSYS || err == -EPERM)
		die("io_uring unavailable", err);
	if (err)
		die("connect producer", err);
	err = ipc_sync_bind(s, pd, &p, 5000);
	if (err)
		die("bind ProducerPort", err);
	ipc_rt = bench_ipc_round_trips(s, p);
	ipc_pl = bench_ipc_pipelined(s, p);
	ipc_sync_close(s);
	ipc_mb = bench_ipc_stream(cpath);
	plain_rt = bench_plain_round_trips();
	plain_mb = bench_plain_stream();

	ipc_loop_stop(host_loop);
	pthread_join(th, NULL);
	ipc_host_destroy(ha.producer);
	ipc_host_destroy(ha.consumer);
	rmdir(dir);

	printf("ipc_bench (%ld cores)\n", bench_cores());
	printf("%-44s %14s\n", "case", "result");
	printf("%-44s %11.0f /s\n", "spindle InvokeMethod round trip (Sync)", ipc_rt);
	printf("%-44s %11.0f /s\n", "spindle InvokeMethod, 32 in flight", ipc_pl);
	printf("%-44s %11.0f /s\n", "baseline blocking write/read ping-pong",
	       plain_rt);
	printf("%-44s %9.0f MB/s\n", "spindle streamed replies (32 KiB ReadBuffers)",
	       ipc_mb);
	printf("%-44s %9.0f MB/s\n", "baseline blocking stream (32 KiB writes)",
	       plain_mb);
	bench_json_open(&j, SPN_BENCH_RESULTS_DIR, "ipc_bench");
	bench_json_result(&j, "\"case\": \"ipc_round_trip\", \"ops_per_s\": %.0f, "
			  "\"baseline_ops_per_s\": %.0f", ipc_rt, plain_rt);
	bench_json_result(&j, "\"case\": \"ipc_round_trip_32_in_flight\", "
			  "\"ops_per_s\": %.0f", ipc_pl);
	bench_json_result(&j, "\"case\": \"ipc_streamed_replies\", "
			  "\"reply_bytes\": %u, \"total_bytes\": %u, "
			  "\"mb_per_s\": %.0f, \"baseline_mb_per_s\": %.0f",
			  SLICE_BYTES * SLICES_PER_REPLY, STREAM_BYTES, ipc_mb,
			  plain_mb);
	return bench_json_close(&j) ? 1 : 0;
}
