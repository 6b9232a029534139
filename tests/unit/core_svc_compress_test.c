// SPDX-License-Identifier: Apache-2.0
// src/core/svc_compress: which configs select deflate, and a batch deflated
// into one compressed_packets record that inflates back to the same bytes,
// appended after what the output held; failures leave the output as it
// was (every allocation of the deflate failed in turn).
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <cmocka.h>

#include "core/mem_hooks.h"
#include "core/svc_compress.h"
#include "spindle/pb.h"

static void test_pick(void **state)
{
	Perfetto__Protos__TraceConfig cfg = PERFETTO__PROTOS__TRACE_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__CompressionConfig cc =
		PERFETTO__PROTOS__TRACE_CONFIG__COMPRESSION_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__CompressionConfig__Deflate de =
		PERFETTO__PROTOS__TRACE_CONFIG__COMPRESSION_CONFIG__DEFLATE__INIT;
	Perfetto__Protos__TraceConfig__CompressionConfig__Zstd zs =
		PERFETTO__PROTOS__TRACE_CONFIG__COMPRESSION_CONFIG__ZSTD__INIT;
	bool zstd_only = true;
	(void)state;

	assert_int_equal(svc_compress_pick(&cfg, &zstd_only), SVC_COMPRESS_NONE);
	assert_false(zstd_only);
	cfg.has_compression_type = true;
	cfg.compression_type =
		PERFETTO__PROTOS__TRACE_CONFIG__COMPRESSION_TYPE__COMPRESSION_TYPE_UNSPECIFIED;
	assert_int_equal(svc_compress_pick(&cfg, NULL), SVC_COMPRESS_NONE);
	cfg.compression_type =
		PERFETTO__PROTOS__TRACE_CONFIG__COMPRESSION_TYPE__COMPRESSION_TYPE_DEFLATE;
	assert_int_equal(svc_compress_pick(&cfg, NULL), SVC_COMPRESS_DEFLATE);
	cfg.has_compression_type = false;
	/* compression {} with nothing in it: none. */
	cfg.compression = &cc;
	assert_int_equal(svc_compress_pick(&cfg, &zstd_only), SVC_COMPRESS_NONE);
	assert_false(zstd_only);
	/* zstd alone: nothing this service has. */
	cc.zstd = &zs;
	assert_int_equal(svc_compress_pick(&cfg, &zstd_only), SVC_COMPRESS_NONE);
	assert_true(zstd_only);
	/* zstd and deflate: deflate, the highest one supported. */
	cc.deflate = &de;
	assert_int_equal(svc_compress_pick(&cfg, &zstd_only), SVC_COMPRESS_DEFLATE);
	assert_false(zstd_only);
	cc.zstd = NULL;
	assert_int_equal(svc_compress_pick(&cfg, NULL), SVC_COMPRESS_DEFLATE);
}

/* A Trace-framed run of n packets of about 100 bytes each. */
static size_t make_batch(uint8_t *buf, unsigned n)
{
	uint8_t *p = buf;

	for (unsigned i = 0; i < n; i++) {
		uint8_t pkt[128], *q = spn_pb_field_varint(pkt, 8, 1000 + i);

		q = spn_pb_put_key(q, 900, SPN_PB_LEN);
		q = spn_pb_put_varint(q, 90);
		for (unsigned k = 0; k < 90; k++)
			*q++ = (uint8_t)(i * 7 + k % 13);
		p = spn_pb_field_bytes(p, 1, pkt, (size_t)(q - pkt));
	}
	return (size_t)(p - buf);
}

static void test_round_trip(void **state)
{
	static uint8_t in[64 * 1024], back[64 * 1024];
	struct svc_pkts_out out = { 0 };
	size_t n = make_batch(in, 500);
	struct spn_pb_field rec, pkt;
	const uint8_t *end;
	uLongf blen = sizeof(back);
	int k;
	(void)state;

	/* Something already in the output stays in front. */
	assert_int_equal(svc_pkts_out_reserve(&out, 3), 0);
	memcpy(out.data, "abc", 3);
	out.len = 3;
	assert_int_equal(svc_compress_deflate(in, n, &out), 0);
	assert_memory_equal(out.data, "abc", 3);
	/* One Trace record: a packet whose only field is 50. */
	end = out.data + out.len;
	k = spn_pb_next_field(out.data + 3, end, &rec);
	assert_int_equal(k, (int)(out.len - 3));
	assert_int_equal(rec.id, 1);
	assert_int_equal(rec.wt, SPN_PB_LEN);
	k = spn_pb_next_field(rec.data, rec.data + rec.value, &pkt);
	assert_int_equal((uint64_t)k, rec.value);
	assert_int_equal(pkt.id, SVC_COMPRESSED_PACKETS_FIELD);
	assert_int_equal(pkt.wt, SPN_PB_LEN);
	assert_true(pkt.value < n);
	/* The zlib wrapper, level 6 (FLEVEL 2: default): header 0x78 0x9C. */
	assert_int_equal(pkt.data[0], 0x78);
	assert_int_equal(pkt.data[1], 0x9C);
	assert_int_equal(uncompress(back, &blen, pkt.data, (uLong)pkt.value), Z_OK);
	assert_int_equal(blen, n);
	assert_memory_equal(back, in, n);
	svc_pkts_out_free(&out);

	assert_int_equal(svc_compress_deflate(in, 0, &out), -EINVAL);
	assert_int_equal(svc_compress_deflate(in, (size_t)SVC_DEFLATE_MAX_IN + 1, &out),
			 -EFBIG);
	assert_int_equal(out.len, 0);
}

/* Allocation hooks failing the fail_at-th allocation (1-based). */
static unsigned allocs, fail_at;

static void *fail_malloc(size_t n)
{
	return ++allocs == fail_at ? NULL : malloc(n);
}

static void *fail_calloc(size_t n, size_t size)
{
	return ++allocs == fail_at ? NULL : calloc(n, size);
}

static void *fail_realloc(void *p, size_t n)
{
	return ++allocs == fail_at ? NULL : realloc(p, n);
}

static void test_every_allocation_fails(void **state)
{
	static uint8_t in[16 * 1024];
	const struct svc_mem_hooks h = { .malloc = fail_malloc, .calloc = fail_calloc,
					 .realloc = fail_realloc };
	size_t n = make_batch(in, 100);
	unsigned total;
	(void)state;

	/* Count them first. */
	svc_mem_set_hooks(&h);
	{
		struct svc_pkts_out out = { 0 };

		allocs = 0;
		fail_at = 0;
		assert_int_equal(svc_compress_deflate(in, n, &out), 0);
		total = allocs;
		svc_pkts_out_free(&out);
	}
	assert_true(total >= 2);	/* zlib's state, the output */
	for (fail_at = 1; fail_at <= total; fail_at++) {
		struct svc_pkts_out out = { 0 };

		allocs = 0;
		assert_int_equal(svc_compress_deflate(in, n, &out), -ENOMEM);
		assert_int_equal(out.len, 0);
		svc_pkts_out_free(&out);
	}
	svc_mem_set_hooks(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pick),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_every_allocation_fails),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
