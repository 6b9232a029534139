// SPDX-License-Identifier: Apache-2.0
// Tests of the IPC frame codec (src/ipc/frame.c): the worked example of
// spec/ipc-wire.md §2, every split point of the captured Perfetto v14
// streams, zero-length, oversized and undecodable frames, reads that stop
// at a PROT_NONE guard page, and replies that match the reference host's
// bytes exactly.
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "ipc/frame.h"
#include "testdata.h"


static const char *const streams[] = {
	"conn1_producer_c2s.bin", "conn1_producer_s2c.bin",
	"conn2_consumer_c2s.bin", "conn2_consumer_s2c.bin",
	"conn3_producer_c2s.bin", "conn3_producer_s2c.bin",
};

/* Frames per captured stream, from ipc_frames.jsonl. */
static const size_t stream_frames[] = {3, 2, 4, 11, 21, 8};

/* A page-aligned area whose following page is PROT_NONE: bytes placed
 * right before the guard make any over-read fault. */
struct guard {
	uint8_t *base;	/* mapping start */
	size_t size;	/* usable bytes before the guard */
};

static void guard_init(struct guard *g, size_t size)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t usable = (size + (size_t)page - 1) & ~((size_t)page - 1);

	g->base = mmap(NULL, usable + (size_t)page, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(g->base != MAP_FAILED);
	assert_int_equal(mprotect(g->base + usable, (size_t)page, PROT_NONE), 0);
	g->size = usable;
}

/* Copies src[0..n) so that it ends exactly at the guard. */
static const uint8_t *guard_place(struct guard *g, const uint8_t *src, size_t n)
{
	uint8_t *dst = g->base + g->size - n;

	assert_true(n <= g->size);
	memcpy(dst, src, n);
	return dst;
}

static void guard_fini(struct guard *g)
{
	munmap(g->base, g->size + (size_t)sysconf(_SC_PAGESIZE));
}

static const uint8_t worked_example[] = {
	0x12, 0x00, 0x00, 0x00, 0x10, 0x01, 0x1a, 0x0e, 0x0a, 0x0c,
	'P', 'r', 'o', 'd', 'u', 'c', 'e', 'r', 'P', 'o', 'r', 't',
};

static void test_worked_example(void **state)
{
	Perfetto__Protos__IPCFrame__BindService bs =
		PERFETTO__PROTOS__IPCFRAME__BIND_SERVICE__INIT;
	IpcFrame out = PERFETTO__PROTOS__IPCFRAME__INIT;
	const uint8_t *payload = NULL;
	struct ipc_txbuf *b;
	uint32_t plen = 0;
	IpcFrame *f;

	(void)state;
	assert_int_equal(ipc_frame_scan(worked_example, sizeof(worked_example),
					&payload, &plen),
			 sizeof(worked_example));
	assert_int_equal(plen, 18);
	assert_ptr_equal(payload, worked_example + 4);
	assert_int_equal(ipc_frame_unpack(payload, plen, &f), 0);
	assert_int_equal(f->request_id, 1);
	assert_int_equal(f->msg_case,
			 PERFETTO__PROTOS__IPCFRAME__MSG_MSG_BIND_SERVICE);
	assert_string_equal(f->msg_bind_service->service_name, "ProducerPort");
	ipc_frame_free(f);

	/* The encoder produces the same bytes. */
	bs.service_name = (char *)"ProducerPort";
	out.has_request_id = 1;
	out.request_id = 1;
	out.msg_case = PERFETTO__PROTOS__IPCFRAME__MSG_MSG_BIND_SERVICE;
	out.msg_bind_service = &bs;
	assert_int_equal(ipc_txbuf_from_frame(&out, -1, &b), 0);
	assert_int_equal(b->len, sizeof(worked_example));
	assert_memory_equal(b->data, worked_example, sizeof(worked_example));
	assert_int_equal(b->fd, -1);
	ipc_txbuf_free(b);
}

static void test_every_prefix_needs_more(void **state)
{
	const uint8_t *payload;
	struct guard g;
	uint32_t plen;

	(void)state;
	guard_init(&g, 4096);
	for (size_t n = 0; n < sizeof(worked_example); n++) {
		const uint8_t *p = guard_place(&g, worked_example, n);

		assert_int_equal(ipc_frame_scan(p, n, &payload, &plen),
				 IPC_FRAME_NEED_MORE);
		assert_int_equal(ipc_frame_wanted(p, n),
				 n < 4 ? 4 : sizeof(worked_example));
	}
	assert_int_equal(ipc_frame_scan(guard_place(&g, worked_example,
						    sizeof(worked_example)),
					sizeof(worked_example), &payload, &plen),
			 sizeof(worked_example));
	guard_fini(&g);
}

static void test_zero_length_frame(void **state)
{
	static const uint8_t two[] = {0, 0, 0, 0, 0x02, 0, 0, 0, 0x10, 0x07};
	const uint8_t *payload;
	uint32_t plen = 99;

	(void)state;
	assert_int_equal(ipc_frame_scan(two, sizeof(two), &payload, &plen), 4);
	assert_int_equal(plen, 0);
	/* The next frame follows it unharmed. */
	assert_int_equal(ipc_frame_scan(two + 4, sizeof(two) - 4, &payload,
					&plen), 6);
	assert_int_equal(plen, 2);
}

static void test_size_limits(void **state)
{
	uint8_t hdr[4];
	const uint8_t *payload;
	uint32_t plen;
	struct guard g;

	(void)state;
	guard_init(&g, 4096);
	/* 131068 is the largest payload: need more, never invalid. */
	hdr[0] = 0xfc; hdr[1] = 0xff; hdr[2] = 0x01; hdr[3] = 0x00;
	assert_int_equal(ipc_frame_scan(guard_place(&g, hdr, 4), 4, &payload,
					&plen), IPC_FRAME_NEED_MORE);
	/* 131069: invalid as soon as the header is complete. */
	hdr[0] = 0xfd;
	assert_int_equal(ipc_frame_scan(guard_place(&g, hdr, 4), 4, &payload,
					&plen), -EMSGSIZE);
	assert_int_equal(ipc_frame_scan(guard_place(&g, hdr, 3), 3, &payload,
					&plen), IPC_FRAME_NEED_MORE);
	memset(hdr, 0xff, 4);
	assert_int_equal(ipc_frame_scan(guard_place(&g, hdr, 4), 4, &payload,
					&plen), -EMSGSIZE);
	guard_fini(&g);
}

/* Scans a whole stream; returns the frame count and fills offs/lens. */
static size_t scan_stream(const uint8_t *buf, size_t len, size_t *offs,
			  size_t max)
{
	size_t off = 0, n = 0;

	while (off < len) {
		const uint8_t *payload;
		uint32_t plen;
		ssize_t r = ipc_frame_scan(buf + off, len - off, &payload, &plen);

		assert_true(r > 0);
		assert_true(n < max);
		offs[n++] = off;
		off += (size_t)r;
	}
	assert_int_equal(off, len);
	return n;
}

/*
 * Every split point k of every captured stream, as a receiver sees it: the
 * frames wholly before k come out of the first read; the frame that
 * straddles k (starting at p) says "need more" for each length up to k - p
 * and is complete once the rest arrives; the frames after follow. The
 * header of the straddling prefix is placed against the guard page.
 */
static void test_captured_streams_every_split(void **state)
{
	struct guard g;

	(void)state;
	guard_init(&g, SPN_IPC_BUFFER_SIZE);
	for (size_t s = 0; s < sizeof(streams) / sizeof(streams[0]); s++) {
		size_t len, offs[64], nf, fi = 0;
		uint8_t *buf = read_proxy_file(streams[s], &len);

		nf = scan_stream(buf, len, offs, 64);
		assert_int_equal(nf, stream_frames[s]);
		for (size_t i = 0; i < nf; i++) {
			size_t flen = (i + 1 < nf ? offs[i + 1] : len) - offs[i];
			const uint8_t *payload;
			uint32_t plen;
			IpcFrame *f;

			assert_int_equal(ipc_frame_scan(buf + offs[i], flen,
							&payload, &plen),
					 (ssize_t)flen);
			assert_int_equal(ipc_frame_unpack(payload, plen, &f), 0);
			assert_true(f->request_id > 0);
			assert_int_not_equal(f->msg_case,
					     PERFETTO__PROTOS__IPCFRAME__MSG__NOT_SET);
			ipc_frame_free(f);
			/* A frame cut short by one byte never decodes as
			 * complete. */
			assert_int_equal(ipc_frame_scan(buf + offs[i], flen - 1,
							&payload, &plen),
					 IPC_FRAME_NEED_MORE);
		}
		for (size_t k = 0; k <= len; k++) {
			const uint8_t *payload;
			uint32_t plen;
			size_t p;

			while (fi + 1 < nf && offs[fi + 1] <= k)
				fi++;
			p = offs[fi];
			if (k == p)
				continue;	/* the split is a frame boundary */
			/* The straddling part; header reads stay inside. */
			if (k - p <= 64) {
				const uint8_t *q = guard_place(&g, buf + p, k - p);

				assert_int_equal(ipc_frame_scan(q, k - p, &payload,
								&plen),
						 k < (fi + 1 < nf ? offs[fi + 1]
								  : len)
							 ? IPC_FRAME_NEED_MORE
							 : (ssize_t)(k - p));
			} else {
				size_t end = fi + 1 < nf ? offs[fi + 1] : len;

				assert_int_equal(ipc_frame_scan(buf + p, k - p,
								&payload, &plen),
						 k < end ? IPC_FRAME_NEED_MORE
							 : (ssize_t)(k - p));
			}
		}
		free(buf);
	}
	guard_fini(&g);
}

/* Re-encodes every captured InvokeMethodReply with ipc_txbuf_reply and
 * expects the reference host's bytes exactly. */
static void test_replies_match_reference_bytes(void **state)
{
	size_t checked = 0;

	(void)state;
	for (size_t s = 1; s < sizeof(streams) / sizeof(streams[0]); s += 2) {
		size_t len, offs[64], nf;
		uint8_t *buf = read_proxy_file(streams[s], &len);

		nf = scan_stream(buf, len, offs, 64);
		for (size_t i = 0; i < nf; i++) {
			size_t flen = (i + 1 < nf ? offs[i + 1] : len) - offs[i];
			const Perfetto__Protos__IPCFrame__InvokeMethodReply *ir;
			struct ipc_reply_desc d = {0};
			struct ipc_txbuf *b;
			IpcFrame *f;

			assert_int_equal(ipc_frame_unpack(buf + offs[i] + 4,
							  flen - 4, &f), 0);
			if (f->msg_case !=
			    PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD_REPLY) {
				ipc_frame_free(f);
				continue;
			}
			ir = f->msg_invoke_method_reply;
			d.request_id = f->request_id;
			d.success = ir->has_success && ir->success;
			d.has_more = ir->has_more;
			assert_true(ir->has_has_more);
			assert_int_equal(ipc_txbuf_reply(&d, NULL,
							 ir->reply_proto.data,
							 ir->reply_proto.len, -1,
							 &b), 0);
			assert_int_equal(b->len, flen);
			assert_memory_equal(b->data, buf + offs[i], flen);
			ipc_txbuf_free(b);
			ipc_frame_free(f);
			checked++;
		}
		free(buf);
	}
	assert_int_equal(checked, 18);
}

static void test_dispatch_error_layout(void **state)
{
	static const uint8_t want[] = {0x09, 0, 0, 0, 0x10, 0x07, 0x32, 0x82,
				       0x80, 0x80, 0x00, 0x08, 0x00};
	struct ipc_reply_desc d = {.request_id = 7, .dispatch_error = true};
	struct ipc_txbuf *b;
	IpcFrame *f;

	(void)state;
	assert_int_equal(ipc_txbuf_reply(&d, NULL, NULL, 0, -1, &b), 0);
	assert_int_equal(b->len, sizeof(want));
	assert_memory_equal(b->data, want, sizeof(want));
	assert_int_equal(ipc_frame_unpack(b->data + 4, b->len - 4, &f), 0);
	assert_true(f->msg_invoke_method_reply->has_success);
	assert_false(f->msg_invoke_method_reply->success);
	assert_false(f->msg_invoke_method_reply->has_has_more);
	ipc_frame_free(f);
	ipc_txbuf_free(b);
}

static void test_reply_from_message(void **state)
{
	Perfetto__Protos__IPCFrame__BindService bs =
		PERFETTO__PROTOS__IPCFRAME__BIND_SERVICE__INIT;
	struct ipc_reply_desc d = {.request_id = 300, .success = true,
				   .has_more = true};
	uint8_t packed[64];
	struct ipc_txbuf *b;
	IpcFrame *f;
	size_t n;

	(void)state;
	bs.service_name = (char *)"any message will do";
	n = protobuf_c_message_pack(&bs.base, packed);
	assert_int_equal(ipc_txbuf_reply(&d, &bs.base, NULL, 0, -1, &b), 0);
	assert_int_equal(ipc_frame_unpack(b->data + 4, b->len - 4, &f), 0);
	assert_int_equal(f->request_id, 300);
	assert_true(f->msg_invoke_method_reply->success);
	assert_true(f->msg_invoke_method_reply->has_more);
	assert_int_equal(f->msg_invoke_method_reply->reply_proto.len, n);
	assert_memory_equal(f->msg_invoke_method_reply->reply_proto.data,
			    packed, n);
	ipc_frame_free(f);
	ipc_txbuf_free(b);

	/* A rejection carries no reply_proto even if bytes were given. */
	d.success = false;
	assert_int_equal(ipc_txbuf_reply(&d, NULL, packed, n, -1, &b), 0);
	assert_int_equal(ipc_frame_unpack(b->data + 4, b->len - 4, &f), 0);
	assert_false(f->msg_invoke_method_reply->has_success);
	assert_false(f->msg_invoke_method_reply->has_more);
	assert_false(f->msg_invoke_method_reply->has_reply_proto);
	ipc_frame_free(f);
	ipc_txbuf_free(b);
}

static void test_oversized_encodes_fail(void **state)
{
	IpcFrame out = PERFETTO__PROTOS__IPCFRAME__INIT;
	struct ipc_reply_desc d = {.request_id = 1, .success = true};
	ProtobufCBinaryData pad;
	uint8_t *big = calloc(1, SPN_IPC_BUFFER_SIZE);
	struct ipc_txbuf *b;
	size_t fit;

	(void)state;
	assert_non_null(big);
	/* Envelope: 10 01, 32 + 4-byte size, 08 01 10 00, 1a + 3-byte len. */
	fit = SPN_IPC_MAX_FRAME_PAYLOAD - (2 + 5 + 4 + 1 + 3);
	assert_int_equal(ipc_txbuf_reply(&d, NULL, big, fit, -1, &b), 0);
	assert_int_equal(b->len, SPN_IPC_BUFFER_SIZE);
	ipc_txbuf_free(b);
	assert_int_equal(ipc_txbuf_reply(&d, NULL, big, fit + 1, -1, &b),
			 -EMSGSIZE);

	pad.data = big;
	pad.len = SPN_IPC_MAX_FRAME_PAYLOAD;
	out.n_data_for_testing = 1;
	out.data_for_testing = &pad;
	assert_int_equal(ipc_txbuf_from_frame(&out, -1, &b), -EMSGSIZE);
	free(big);
}

static void test_undecodable_payloads(void **state)
{
	static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff};
	static const uint8_t bad_len[] = {0x1a, 0x7f, 0x0a};
	IpcFrame *f = (IpcFrame *)1;

	(void)state;
	assert_int_equal(ipc_frame_unpack(garbage, sizeof(garbage), &f),
			 -EBADMSG);
	assert_null(f);
	/* A nested message claiming more bytes than the frame holds. */
	assert_int_equal(ipc_frame_unpack(bad_len, sizeof(bad_len), &f),
			 -EBADMSG);
	/* The worked example minus its last byte. */
	assert_int_equal(ipc_frame_unpack(worked_example + 4,
					  sizeof(worked_example) - 5, &f),
			 -EBADMSG);
	assert_int_equal(ipc_frame_unpack(worked_example + 4, 18, NULL),
			 -EINVAL);
	/* An empty payload decodes (no msg set: the host's RequestError). */
	assert_int_equal(ipc_frame_unpack(worked_example, 0, &f), 0);
	assert_int_equal(f->msg_case, PERFETTO__PROTOS__IPCFRAME__MSG__NOT_SET);
	ipc_frame_free(f);
}

static void test_txbuf_fd_is_a_cloexec_dup(void **state)
{
	struct ipc_reply_desc d = {.request_id = 1, .success = true};
	struct ipc_txbuf *b;
	int fds[2], flags;

	(void)state;
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(ipc_txbuf_reply(&d, NULL, NULL, 0, fds[0], &b), 0);
	assert_true(b->fd >= 0);
	assert_int_not_equal(b->fd, fds[0]);
	flags = fcntl(b->fd, F_GETFD);
	assert_true(flags & FD_CLOEXEC);
	ipc_txbuf_free(b);
	/* Ours is untouched; the duplicate is gone. */
	assert_true(fcntl(fds[0], F_GETFD) >= 0);
	close(fds[0]);
	close(fds[1]);
	assert_int_equal(ipc_txbuf_reply(&d, NULL, NULL, 0, fds[0], &b),
			 -EBADF);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_worked_example),
		cmocka_unit_test(test_every_prefix_needs_more),
		cmocka_unit_test(test_zero_length_frame),
		cmocka_unit_test(test_size_limits),
		cmocka_unit_test(test_captured_streams_every_split),
		cmocka_unit_test(test_replies_match_reference_bytes),
		cmocka_unit_test(test_dispatch_error_layout),
		cmocka_unit_test(test_reply_from_message),
		cmocka_unit_test(test_oversized_encodes_fail),
		cmocka_unit_test(test_undecodable_payloads),
		cmocka_unit_test(test_txbuf_fd_is_a_cloexec_dup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
