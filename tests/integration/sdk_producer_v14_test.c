// SPDX-License-Identifier: Apache-2.0
// libspindle's producer against Perfetto v14's own service bytes: the test plays traced, answering with the frames traced sent to the v14 example producer (tests/data/perfetto_v14, conn3 s2c: bind reply, InitializeConnection reply, RegisterDataSource reply, setup_tracing with an SMB fd, setup and start of instance 1, flush 1, stop 1), and checks what our producer sends back: the handshake order, drop_reply on every later call, writer registration before commits, the events (taken from the SMB and decoded), the flush ack and the stop notification.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ipc/frame.h"
#include "producer_port.pb-c.h"
#include "sdk_test_service.h"
#include "smb/shm.h"
#include "spindle/producer.h"
#include "trace_packet.pb-c.h"

#define S2C SPN_TESTDATA_DIR "/perfetto_v14/session1/proxy/conn3_producer_s2c.bin"
#define EVENTS 600u

/* The captured service frames, in order. */
enum { F_BIND, F_INIT, F_REGDS, F_SETUP_TRACING, F_SETUP_DS, F_START_DS, F_FLUSH, F_STOP, F_COUNT };

/* ProducerPort method ids of the capture's BindServiceReply. */
enum { M_INIT = 1, M_REGDS = 2, M_COMMIT = 4, M_ASYNC = 5, M_REGW = 6, M_UNREGW = 7,
       M_STARTED = 8, M_STOPPED = 9 };

struct fake {
	uint8_t *s2c;			/* the capture */
	size_t off[F_COUNT + 1];	/* frame offsets in it */
	int lfd, fd;			/* listening and accepted sockets */
	uint8_t rx[1 << 18];		/* receive buffer */
	size_t rx_len;			/* bytes in it */
	uint64_t last_id;		/* last request id seen */
	struct smb_shm shm;		/* the SMB "traced" created */
	struct smb_arbiter view;	/* only .smb: what ts_process reads */
	struct test_service ts;		/* takes and decodes committed chunks */
	uint32_t events;		/* events decoded */
	uint32_t bad;			/* events that did not match */
	uint64_t flush_acked;		/* last flush_request_id seen */
	uint64_t started, stopped;	/* instance ids notified */
	unsigned regw, unregw;		/* writer (un)registrations */
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void load_capture(struct fake *f)
{
	FILE *fp = fopen(S2C, "rb");
	long n;
	size_t k = 0, i = 0;

	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	f->s2c = malloc((size_t)n);
	assert_non_null(f->s2c);
	assert_int_equal(fread(f->s2c, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	while (i < (size_t)n && k < F_COUNT) {
		uint32_t len;

		memcpy(&len, f->s2c + i, 4);
		f->off[k++] = i;
		i += 4 + len;
	}
	assert_int_equal(k, F_COUNT);
	assert_int_equal(i, (size_t)n);
	f->off[F_COUNT] = i;
}

/* Sends captured frame k, with fd attached if >= 0. */
static void send_frame(struct fake *f, int k, int fd)
{
	size_t len = f->off[k + 1] - f->off[k];
	struct iovec iov = { f->s2c + f->off[k], len };
	_Alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))];
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (fd >= 0) {
		struct cmsghdr *c;

		memset(cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	assert_int_equal(sendmsg(f->fd, &mh, MSG_NOSIGNAL), (ssize_t)len);
}

/* The next frame from the producer (NULL on timeout or EOF). */
static IpcFrame *next_frame(struct fake *f, unsigned ms)
{
	uint64_t end = now_ms() + ms;

	for (;;) {
		const uint8_t *pl;
		uint32_t pl_len;
		ssize_t r = ipc_frame_scan(f->rx, f->rx_len, &pl, &pl_len);
		struct pollfd pfd = { .fd = f->fd, .events = POLLIN };
		uint64_t now = now_ms();
		IpcFrame *fr;
		ssize_t n;

		assert_true(r >= 0);
		if (r > 0) {
			assert_int_equal(ipc_frame_unpack(pl, pl_len, &fr), 0);
			memmove(f->rx, f->rx + r, f->rx_len - (size_t)r);
			f->rx_len -= (size_t)r;
			/* Request ids count every frame, from 1. */
			assert_int_equal(fr->request_id, f->last_id + 1);
			f->last_id = fr->request_id;
			return fr;
		}
		if (now >= end)
			return NULL;
		if (poll(&pfd, 1, (int)(end - now < 50 ? end - now : 50)) <= 0)
			continue;
		n = recv(f->fd, f->rx + f->rx_len, sizeof(f->rx) - f->rx_len, 0);
		if (n <= 0)
			return NULL;
		f->rx_len += (size_t)n;
	}
}

/* An InvokeMethod of method m, its args decoded with d. */
static ProtobufCMessage *expect_invoke(IpcFrame *fr, uint32_t m,
				       const ProtobufCMessageDescriptor *d, bool drop)
{
	ProtobufCMessage *msg;

	assert_int_equal(fr->msg_case, PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD);
	assert_int_equal(fr->msg_invoke_method->method_id, m);
	assert_int_equal(fr->msg_invoke_method->service_id, 1);
	assert_int_equal(fr->msg_invoke_method->drop_reply, drop);
	msg = protobuf_c_message_unpack(d, NULL, fr->msg_invoke_method->args_proto.len,
					fr->msg_invoke_method->args_proto.data);
	assert_non_null(msg);
	return msg;
}

/* Decodes each packet the test service hands over. */
static void on_packet(void *ctx, uint16_t writer_id, const uint8_t *data, size_t len,
		      bool loss_before)
{
	struct fake *f = ctx;
	Perfetto__Protos__TracePacket *p = perfetto__protos__trace_packet__unpack(NULL, len, data);
	char want[32];

	(void)writer_id;
	(void)loss_before;
	if (!p) {
		f->bad++;
		return;
	}
	snprintf(want, sizeof(want), "event-%u", f->events);
	if (!p->has_timestamp || p->timestamp != 1000u + f->events || !p->track_event ||
	    !p->track_event->name || strcmp(p->track_event->name, want) != 0)
		f->bad++;
	f->events++;
	perfetto__protos__trace_packet__free_unpacked(p, NULL);
}

/* Handles one frame of the data phase. */
static void on_frame(struct fake *f, IpcFrame *fr)
{
	ProtobufCMessage *m;
	uint32_t method;

	assert_int_equal(fr->msg_case, PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD);
	method = fr->msg_invoke_method->method_id;
	switch (method) {
	case M_REGW: {
		Perfetto__Protos__RegisterTraceWriterRequest *r;

		m = expect_invoke(fr, M_REGW, &perfetto__protos__register_trace_writer_request__descriptor, true);
		r = (void *)m;
		assert_true(r->trace_writer_id >= 1 && r->trace_writer_id <= 32767);
		assert_int_equal(r->target_buffer, 1);
		f->ts.registered[r->trace_writer_id] = r->target_buffer;
		f->regw++;
		break;
	}
	case M_UNREGW: {
		Perfetto__Protos__UnregisterTraceWriterRequest *r;

		m = expect_invoke(fr, M_UNREGW, &perfetto__protos__unregister_trace_writer_request__descriptor, true);
		r = (void *)m;
		assert_int_not_equal(f->ts.registered[r->trace_writer_id], 0);
		f->ts.registered[r->trace_writer_id] = 0;
		f->unregw++;
		break;
	}
	case M_COMMIT: {
		Perfetto__Protos__CommitDataRequest *r;

		m = expect_invoke(fr, M_COMMIT, &perfetto__protos__commit_data_request__descriptor, true);
		r = (void *)m;
		for (size_t i = 0; i < r->n_chunks_to_move; i++)
			assert_int_equal(r->chunks_to_move[i]->target_buffer, 1);
		ts_process(&f->ts, r);
		if (r->has_flush_request_id)
			f->flush_acked = r->flush_request_id;
		break;
	}
	case M_STARTED:
		m = expect_invoke(fr, M_STARTED, &perfetto__protos__notify_data_source_started_request__descriptor, true);
		f->started = ((Perfetto__Protos__NotifyDataSourceStartedRequest *)m)->data_source_id;
		break;
	case M_STOPPED:
		m = expect_invoke(fr, M_STOPPED, &perfetto__protos__notify_data_source_stopped_request__descriptor, true);
		f->stopped = ((Perfetto__Protos__NotifyDataSourceStoppedRequest *)m)->data_source_id;
		break;
	default:
		fail_msg("unexpected method %u", method);
		return;
	}
	protobuf_c_message_free_unpacked(m, NULL);
}

/* Runs the data phase until done(f) or ms pass. */
static bool pump_until(struct fake *f, bool (*done)(struct fake *), unsigned ms)
{
	uint64_t end = now_ms() + ms;

	while (!done(f)) {
		IpcFrame *fr = next_frame(f, 50);

		if (fr) {
			on_frame(f, fr);
			ipc_frame_free(fr);
		}
		if (now_ms() > end)
			return false;
	}
	return true;
}

static bool got_started(struct fake *f) { return f->started == 1; }
static bool got_all(struct fake *f) { return f->events == EVENTS && f->unregw >= 1; }
static bool got_flush(struct fake *f) { return f->flush_acked == 1; }
static bool got_stopped(struct fake *f) { return f->stopped == 1; }

/* ---- the app side ---- */

struct app {
	struct spn_ds *ds;
	_Atomic unsigned starts, stops, flushes;
	uint64_t instance_id;		/* from on_start */
	uint32_t target_buffer;		/* from on_start */
};

static void app_start(struct spn_ds *ds, const struct spn_ds_config *cfg, void *user)
{
	struct app *a = user;

	(void)ds;
	a->instance_id = cfg->instance_id;
	a->target_buffer = cfg->target_buffer;
	assert_int_equal(cfg->trace_duration_ms, 1500);
	assert_int_equal(cfg->stop_timeout_ms, 5000);
	assert_int_equal(cfg->tracing_session_id, 1);
	a->starts++;
}

static bool app_stop(struct spn_ds *ds, const struct spn_ds_stop *stop, void *user)
{
	struct app *a = user;

	(void)ds;
	(void)stop;
	a->stops++;
	return false;
}

static void app_flush(struct spn_ds *ds, uint32_t inst, uint64_t id, void *user)
{
	struct app *a = user;

	(void)ds;
	(void)inst;
	assert_int_equal(id, 1);
	a->flushes++;
}

static void *app_thread(void *arg)
{
	struct app *a = arg;
	char name[32];

	while (!spn_ds_enabled(a->ds))
		usleep(1000);
	for (uint32_t i = 0; i < EVENTS; i++) {
		struct spn_tw *tw = spn_ds_writer(a->ds);

		assert_non_null(tw);
		snprintf(name, sizeof(name), "event-%u", i);
		spn_tw_begin_packet(tw);
		spn_tw_varint(tw, 8, 1000u + i);
		spn_tw_begin_nested(tw, 11);
		spn_tw_string(tw, 23, name);
		spn_tw_end_nested(tw);
		spn_tw_end_packet(tw);
	}
	return NULL; /* thread exit retires the writer: commit + unregister */
}

static void replay_v14_service(void **state)
{
	struct fake *f = calloc(1, sizeof(*f));
	struct app a = { 0 };
	char dir[] = "/tmp/spn_v14_XXXXXX", path[128];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct spn_producer_opts o = { .name = "v14_replay", .reconnect_step_ms = 10000 };
	struct spn_ds_desc d = { .name = "track_event", .will_notify_on_start = true,
				 .will_notify_on_stop = true };
	struct spn_ds_callbacks cb = { .on_start = app_start, .on_stop = app_stop,
				       .on_flush = app_flush, .user = &a };
	struct spn_producer *p;
	struct spn_producer_stats st;
	ProtobufCMessage *m;
	IpcFrame *fr;
	pthread_t th;

	(void)state;
	assert_non_null(f);
	load_capture(f);
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/p.sock", dir);
	strcpy(sa.sun_path, path);
	f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(f->lfd, 4), 0);
	assert_int_equal(ts_init(&f->ts, &f->view, on_packet, f), 0);

	o.socket = path;
	assert_int_equal(spn_producer_create(&o, &p), 0);
	assert_int_equal(spn_data_source_register(p, &d, &cb, &a.ds), 0);
	f->fd = accept(f->lfd, NULL, NULL);
	assert_true(f->fd >= 0);

	/* Handshake (ipc-wire.md §9): bind, then InitializeConnection and
	 * GetAsyncCommand back to back, before any InitializeConnection
	 * reply exists. */
	fr = next_frame(f, 5000);
	assert_non_null(fr);
	assert_int_equal(fr->msg_case, PERFETTO__PROTOS__IPCFRAME__MSG_MSG_BIND_SERVICE);
	assert_string_equal(fr->msg_bind_service->service_name, "ProducerPort");
	ipc_frame_free(fr);
	send_frame(f, F_BIND, -1);
	fr = next_frame(f, 5000);
	assert_non_null(fr);
	m = expect_invoke(fr, M_INIT, &perfetto__protos__initialize_connection_request__descriptor, false);
	{
		Perfetto__Protos__InitializeConnectionRequest *r = (void *)m;

		assert_string_equal(r->producer_name, "v14_replay");
		assert_true(r->has_smb_scraping_mode);
		assert_int_equal(r->smb_scraping_mode,
				 PERFETTO__PROTOS__INITIALIZE_CONNECTION_REQUEST__PRODUCER_SMBSCRAPING_MODE__SMB_SCRAPING_ENABLED);
		assert_false(r->producer_provided_shmem);
	}
	protobuf_c_message_free_unpacked(m, NULL);
	ipc_frame_free(fr);
	fr = next_frame(f, 5000);
	assert_non_null(fr);
	m = expect_invoke(fr, M_ASYNC, &perfetto__protos__get_async_command_request__descriptor, false);
	protobuf_c_message_free_unpacked(m, NULL);
	ipc_frame_free(fr);
	send_frame(f, F_INIT, -1);
	fr = next_frame(f, 5000);
	assert_non_null(fr);
	m = expect_invoke(fr, M_REGDS, &perfetto__protos__register_data_source_request__descriptor, false);
	{
		Perfetto__Protos__RegisterDataSourceRequest *r = (void *)m;

		assert_string_equal(r->data_source_descriptor->name, "track_event");
		assert_true(r->data_source_descriptor->will_notify_on_start);
		assert_true(r->data_source_descriptor->will_notify_on_stop);
	}
	protobuf_c_message_free_unpacked(m, NULL);
	ipc_frame_free(fr);
	send_frame(f, F_REGDS, -1);
	smb_shm_init(&f->shm);
	assert_int_equal(smb_shm_create(&f->shm, 262144, 4096), 0);
	f->view.smb = f->shm.smb;
	send_frame(f, F_SETUP_TRACING, f->shm.fd);
	send_frame(f, F_SETUP_DS, -1);
	send_frame(f, F_START_DS, -1);

	/* Data: the app writes, the producer commits; traced's frames
	 * never answer a drop_reply call. */
	assert_int_equal(pthread_create(&th, NULL, app_thread, &a), 0);
	assert_true(pump_until(f, got_started, 5000));
	assert_int_equal(a.starts, 1);
	assert_int_equal(a.instance_id, 1);
	assert_int_equal(a.target_buffer, 1);
	pthread_join(th, NULL);
	assert_true(pump_until(f, got_all, 5000));
	assert_int_equal(f->bad, 0);
	assert_int_equal(f->ts.errors, 0);
	assert_int_equal(f->regw, 1);
	assert_int_equal(f->unregw, 1);

	/* Flush 1, then stop 1, as traced sent them. */
	send_frame(f, F_FLUSH, -1);
	assert_true(pump_until(f, got_flush, 5000));
	assert_int_equal(a.flushes, 1);
	send_frame(f, F_STOP, -1);
	assert_true(pump_until(f, got_stopped, 5000));
	assert_int_equal(a.stops, 1);
	assert_int_equal(spn_ds_enabled(a.ds), 0);
	assert_int_equal(f->ts.errors, 0);

	/* traced goes away: the producer notices and would retry. */
	close(f->fd);
	for (int i = 0; i < 500; i++) {
		spn_producer_stats(p, &st);
		if (st.disconnects)
			break;
		usleep(2000);
	}
	assert_int_equal(st.disconnects, 1);
	assert_int_equal(st.connects, 1);
	assert_int_equal(st.flushes_acked, 1);
	spn_producer_destroy(p);
	ts_fini(&f->ts);
	smb_shm_close(&f->shm);
	close(f->lfd);
	unlink(path);
	rmdir(dir);
	free(f->s2c);
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(replay_v14_service),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
