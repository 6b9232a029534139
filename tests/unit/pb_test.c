// SPDX-License-Identifier: Apache-2.0
// Tests of include/spindle/pb.h: the hot-path protobuf encoder against the
// hand-checked packets of track-event.md §10, and the bounded readers.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "spindle/pb.h"

/* Reads tests/data/track_event/<name> into buf; returns its length. */
static size_t read_testdata(const char *name, uint8_t *buf, size_t cap)
{
	char path[1024];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/track_event/%s", SPN_TESTDATA_DIR, name);
	f = fopen(path, "rb");
	assert_non_null(f);
	n = fread(buf, 1, cap, f);
	fclose(f);
	return n;
}

static void assert_packet(const char *file, const uint8_t *start,
			  const uint8_t *end)
{
	uint8_t want[256];
	size_t n = read_testdata(file, want, sizeof(want));

	assert_int_equal((size_t)(end - start), n);
	assert_memory_equal(start, want, n);
}

/* P1: thread track descriptor (track-event.md §10.1). */
static void test_p1_thread_descriptor(void **state)
{
	uint8_t thread[32], td[64], pkt[128], *p;
	(void)state;

	p = spn_pb_field_varint(thread, 1, 1234);
	p = spn_pb_field_varint(p, 2, 1235);
	p = spn_pb_field_string(p, 5, "main");
	size_t thread_len = (size_t)(p - thread);

	p = spn_pb_field_varint(td, 1, 100);
	p = spn_pb_field_bytes(p, 4, thread, thread_len);
	size_t td_len = (size_t)(p - td);

	p = spn_pb_field_varint(pkt, 8, 1000);
	p = spn_pb_field_bool(p, 87, true);
	p = spn_pb_field_bytes(p, 60, td, td_len);
	p = spn_pb_field_varint(p, 10, 42);
	assert_packet("p1.bin", pkt, p);
}

/* P2: counter track descriptor with an empty CounterDescriptor. */
static void test_p2_counter_descriptor(void **state)
{
	uint8_t td[64], pkt[128], *p;
	(void)state;

	p = spn_pb_field_varint(td, 1, 200);
	p = spn_pb_field_varint(p, 5, 100);
	p = spn_pb_field_string(p, 2, "queue_depth");
	p = spn_pb_field_bytes(p, 8, "", 0);
	size_t td_len = (size_t)(p - td);

	p = spn_pb_field_varint(pkt, 8, 1000);
	p = spn_pb_field_bytes(p, 60, td, td_len);
	p = spn_pb_field_varint(p, 10, 42);
	assert_packet("p2.bin", pkt, p);
}

/* P3: slice begin with interned data and a debug annotation. */
static void test_p3_slice_begin(void **state)
{
	uint8_t cat[16], name[16], interned[64], ann[32], te[64], pkt[128], *p;
	(void)state;

	p = spn_pb_field_varint(cat, 1, 1);
	p = spn_pb_field_string(p, 2, "app");
	size_t cat_len = (size_t)(p - cat);
	p = spn_pb_field_varint(name, 1, 1);
	p = spn_pb_field_string(p, 2, "DoWork");
	size_t name_len = (size_t)(p - name);
	p = spn_pb_field_bytes(interned, 1, cat, cat_len);
	p = spn_pb_field_bytes(p, 2, name, name_len);
	size_t interned_len = (size_t)(p - interned);

	p = spn_pb_field_string(ann, 10, "items");
	p = spn_pb_field_int(p, 4, 3);
	size_t ann_len = (size_t)(p - ann);
	p = spn_pb_field_varint(te, 9, 1);
	p = spn_pb_field_varint(p, 11, 100);
	p = spn_pb_field_varint(p, 3, 1);
	p = spn_pb_field_varint(p, 10, 1);
	p = spn_pb_field_bytes(p, 4, ann, ann_len);
	size_t te_len = (size_t)(p - te);

	p = spn_pb_field_varint(pkt, 8, 2000);
	p = spn_pb_field_varint(p, 13, 3);
	p = spn_pb_field_bytes(p, 12, interned, interned_len);
	p = spn_pb_field_bytes(p, 11, te, te_len);
	p = spn_pb_field_varint(p, 10, 42);
	assert_packet("p3.bin", pkt, p);
}

/* P4 and P5: counter value and slice end. */
static void test_p4_p5(void **state)
{
	uint8_t te[16], pkt[64], *p;
	(void)state;

	p = spn_pb_field_varint(te, 9, 4);
	p = spn_pb_field_varint(p, 11, 200);
	p = spn_pb_field_int(p, 30, 7);
	size_t te_len = (size_t)(p - te);
	p = spn_pb_field_varint(pkt, 8, 2500);
	p = spn_pb_field_varint(p, 13, 2);
	p = spn_pb_field_bytes(p, 11, te, te_len);
	p = spn_pb_field_varint(p, 10, 42);
	assert_packet("p4.bin", pkt, p);

	p = spn_pb_field_varint(te, 9, 2);
	p = spn_pb_field_varint(p, 11, 100);
	te_len = (size_t)(p - te);
	p = spn_pb_field_varint(pkt, 8, 3000);
	p = spn_pb_field_varint(p, 13, 2);
	p = spn_pb_field_bytes(p, 11, te, te_len);
	p = spn_pb_field_varint(p, 10, 42);
	assert_packet("p5.bin", pkt, p);
}

/* Encodings track-event.md §1 states. */
static void test_scalar_encodings(void **state)
{
	uint8_t b[32], *p;
	static const uint8_t minus_one[] = { 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
					     0xFF, 0xFF, 0xFF, 0xFF, 0x01 };
	static const uint8_t dbl[] = { 0x11, 0, 0, 0, 0, 0, 0, 0xF8, 0x3F };
	(void)state;

	p = spn_pb_put_varint(b, 1000);
	assert_int_equal(p - b, 2);
	assert_int_equal(b[0], 0xE8);
	assert_int_equal(b[1], 0x07);
	p = spn_pb_field_int(b, 1, -1);
	assert_int_equal(p - b, sizeof(minus_one));
	assert_memory_equal(b, minus_one, sizeof(minus_one));
	p = spn_pb_field_double(b, 2, 1.5);
	assert_memory_equal(b, dbl, sizeof(dbl));
	assert_int_equal(p - b, sizeof(dbl));
	p = spn_pb_field_sint(b, 1, -3);
	assert_int_equal(b[1], 5);
	p = spn_pb_field_fixed32(b, 3, 0x01020304);
	assert_int_equal(b[0], 0x1D);
	assert_int_equal(b[1], 0x04);
	assert_int_equal(b[4], 0x01);
	assert_int_equal(spn_pb_varint_len(0), 1);
	assert_int_equal(spn_pb_varint_len(127), 1);
	assert_int_equal(spn_pb_varint_len(128), 2);
	assert_int_equal(spn_pb_varint_len(UINT64_MAX), 10);
	assert_int_equal(spn_pb_bytes_field_len(60, 16), 2 + 1 + 16);
}

/* The 4-byte redundant size decodes to the same value as a plain varint. */
static void test_nested_backfill(void **state)
{
	uint8_t b[512], *slot, *p;
	struct spn_pb_field f;
	uint64_t v;
	(void)state;

	spn_pb_put_varint4(b, 5);
	assert_int_equal(b[0], 0x85);
	assert_int_equal(b[1], 0x80);
	assert_int_equal(b[2], 0x80);
	assert_int_equal(b[3], 0x00);
	spn_pb_put_varint4(b, SPN_PB_MAX_NESTED_SIZE);
	assert_int_equal(spn_pb_get_varint(b, b + 4, &v), 4);
	assert_int_equal(v, SPN_PB_MAX_NESTED_SIZE);

	p = spn_pb_begin_nested(b, 11, &slot);
	for (int i = 0; i < 300; i++)
		*p++ = 0x08 ^ (uint8_t)i;
	spn_pb_end_nested(slot, p);
	assert_int_equal(spn_pb_next_field(b, p, &f), p - b);
	assert_int_equal(f.id, 11);
	assert_int_equal(f.wt, SPN_PB_LEN);
	assert_int_equal(f.value, 300);
	assert_ptr_equal(f.data, slot + 4);
}

/* Every truncation of a valid field is "need more", never a misparse. */
static void test_reader_truncation(void **state)
{
	uint8_t b[64], *p;
	struct spn_pb_field f;
	(void)state;

	p = spn_pb_field_varint(b, 300, UINT64_MAX);
	p = spn_pb_field_string(p, 2, "hello");
	p = spn_pb_field_fixed64(p, 3, 7);
	p = spn_pb_field_fixed32(p, 4, 9);
	const uint8_t *q = b;
	int fields = 0;

	while (q < p) {
		int n = spn_pb_next_field(q, p, &f);

		assert_true(n > 0);
		for (int cut = 0; cut < n; cut++)
			assert_int_equal(spn_pb_next_field(q, q + cut, &f),
					 SPN_PB_NEED_MORE);
		q += n;
		fields++;
	}
	assert_int_equal(fields, 4);
}

static void test_reader_invalid(void **state)
{
	static const uint8_t long_varint[11] = { 0x80, 0x80, 0x80, 0x80, 0x80,
						 0x80, 0x80, 0x80, 0x80, 0x80,
						 0x01 };
	static const uint8_t field0[] = { 0x00, 0x01 };
	static const uint8_t group[] = { 0x0B, 0x0C };
	static const uint8_t wt7[] = { 0x0F, 0x00 };
	struct spn_pb_field f;
	uint64_t v;
	(void)state;

	assert_int_equal(spn_pb_get_varint(long_varint, long_varint + 11, &v),
			 SPN_PB_INVALID);
	assert_int_equal(spn_pb_next_field(field0, field0 + 2, &f),
			 SPN_PB_INVALID);
	assert_int_equal(spn_pb_next_field(group, group + 2, &f),
			 SPN_PB_INVALID);
	assert_int_equal(spn_pb_next_field(wt7, wt7 + 2, &f), SPN_PB_INVALID);
}

/*
 * Inputs placed right before a PROT_NONE page: a reader that looks one
 * byte past the end faults.
 */
static void test_reader_guard_page(void **state)
{
	long pg = sysconf(_SC_PAGESIZE);
	uint8_t *m = mmap(NULL, 2 * (size_t)pg, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct spn_pb_field f;
	uint64_t v;
	(void)state;

	assert_true(m != MAP_FAILED);
	assert_int_equal(mprotect(m + pg, (size_t)pg, PROT_NONE), 0);
	uint8_t *end = m + pg;

	/* A varint whose continuation bit runs to the very last byte. */
	memset(end - 9, 0x80, 9);
	assert_int_equal(spn_pb_get_varint(end - 9, end, &v), SPN_PB_NEED_MORE);
	/* A LEN field announcing more than is there. */
	end[-3] = 0x12;
	end[-2] = 0x7F;
	end[-1] = 'x';
	assert_int_equal(spn_pb_next_field(end - 3, end, &f), SPN_PB_NEED_MORE);
	/* A fixed64 cut short. */
	end[-4] = 0x09;
	assert_int_equal(spn_pb_next_field(end - 4, end, &f), SPN_PB_NEED_MORE);
	munmap(m, 2 * (size_t)pg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_p1_thread_descriptor),
		cmocka_unit_test(test_p2_counter_descriptor),
		cmocka_unit_test(test_p3_slice_begin),
		cmocka_unit_test(test_p4_p5),
		cmocka_unit_test(test_scalar_encodings),
		cmocka_unit_test(test_nested_backfill),
		cmocka_unit_test(test_reader_truncation),
		cmocka_unit_test(test_reader_invalid),
		cmocka_unit_test(test_reader_guard_page),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
