// SPDX-License-Identifier: Apache-2.0
// Tests of svc_tbuf_clone(): the copy holds what the source had unread,
// reading either one leaves the other whole, fragments and pending patches
// across the clone point, overwritten data, stats, read-only copies, a
// clone taken while two lanes keep writing (also run under TSan), and
// svc_tbuf_seal() on a buffer moved whole into a clone.
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include "core_tbuf_util.h"

static struct tcb CB;	/* chunk being built (64 KiB: not on the stack) */

/* Commits chunk `id` of (1, w) holding packets counter first..first+n-1. */
static void put(struct svc_tbuf *b, unsigned lane, uint16_t w, uint32_t id,
		uint32_t first, uint32_t n, uint32_t filler)
{
	uint8_t pk[2048];

	tcb_init(&CB);
	for (uint32_t i = 0; i < n; i++)
		tcb_frag(&CB, pk, tpkt(pk, w, first + i, filler), false);
	assert_int_equal(tcommit(b, lane, 1, w, id, &CB, 0, true),
			 SVC_TBUF_STORED);
}

/* Reads everything readable; returns the packets (into v). */
static int read_all(struct svc_tbuf *b, struct svc_seqids *ids,
		    struct svc_tbuf_out *o, struct tpk *v, int max)
{
	bool drained = false;

	svc_tbuf_out_free(o);
	for (int i = 0; i < 1000 && !drained; i++)
		assert_true(svc_tbuf_read(b, ids, o, SIZE_MAX, &drained) >= 0);
	assert_true(drained);
	return tparse(o, v, max);
}

static struct tpk PK[4096];

/* Clone then read both: each gets all the data; reading one does not
 * consume the other; data read before the clone is not in the copy. */
static void test_clone_both_read(void **state)
{
	struct svc_tbuf *b, *c;
	struct svc_seqids *ids;
	struct svc_tbuf_out o = { 0 };
	struct svc_tbuf_stats st;
	(void)state;

	assert_int_equal(svc_tbuf_create(1 << 20, SVC_TBUF_RING, 2, 0, &b), 0);
	assert_int_equal(svc_seqids_create(&ids), 0);
	put(b, 0, 1, 0, 0, 5, 0);
	put(b, 1, 2, 0, 100, 3, 0);
	/* The source reads the first chunk of writer 1 (and writer 2's). */
	assert_int_equal(read_all(b, ids, &o, PK, 4096), 8);
	put(b, 0, 1, 1, 5, 4, 10);
	put(b, 1, 2, 1, 103, 2, 0);

	assert_int_equal(svc_tbuf_clone(b, &c), 0);
	/* The copy: only what the source had not returned. */
	assert_int_equal(read_all(c, ids, &o, PK, 4096), 6);
	for (int i = 0; i < 6; i++) {
		assert_true(PK[i].trailer_ok);
		assert_int_equal(PK[i].uid, 1001);
		assert_int_equal(PK[i].pid, 4001);
		if (PK[i].seq == 1)
			assert_true(PK[i].counter >= 5 && PK[i].counter < 9);
		else
			assert_true(PK[i].counter >= 103 &&
				    PK[i].counter < 105);
		assert_true(PK[i].filler_ok);
	}
	assert_int_equal(read_all(c, ids, &o, PK, 4096), 0);
	/* The source still has the same six. */
	assert_int_equal(read_all(b, ids, &o, PK, 4096), 6);
	assert_int_equal(read_all(b, ids, &o, PK, 4096), 0);

	/* Stats: written counters copied, read counters zeroed (then the
	 * copy's own reads). */
	svc_tbuf_get_stats(c, &st);
	assert_int_equal(st.buffer_size, 1 << 20);
	assert_int_equal(st.chunks_written, 4);
	assert_int_equal(st.chunks_read, 2);
	svc_tbuf_get_stats(b, &st);
	assert_int_equal(st.chunks_read, 4);

	/* Writes into the copy are refused. */
	tcb_init(&CB);
	tcb_frag(&CB, (const uint8_t *)"\x08\x01", 2, true);
	assert_int_equal(tcommit(c, 0, 1, 1, 9, &CB, 0, true), -EPERM);
	assert_null(svc_tbuf_lane_stage(c, 0, 16));
	assert_int_equal(svc_tbuf_lane_patch(c, 0, 1, 1, 1, NULL, 0, false),
			 -EPERM);

	svc_tbuf_out_free(&o);
	svc_tbuf_destroy(c);
	svc_tbuf_destroy(b);
	svc_seqids_destroy(ids);
}

/* Clone of a buffer with nothing: an empty copy. */
static void test_clone_empty(void **state)
{
	struct svc_tbuf *b, *c;
	struct svc_seqids *ids;
	struct svc_tbuf_out o = { 0 };
	(void)state;

	assert_int_equal(svc_tbuf_create(4096, SVC_TBUF_DISCARD, 1, 0, &b), 0);
	assert_int_equal(svc_seqids_create(&ids), 0);
	assert_int_equal(svc_tbuf_clone(b, &c), 0);
	assert_int_equal(read_all(c, ids, &o, PK, 4096), 0);
	svc_tbuf_out_free(&o);
	svc_tbuf_destroy(c);
	svc_tbuf_destroy(b);
	svc_seqids_destroy(ids);
}

/*
 * A packet fragmented over chunks 0..1 with chunk 2 not yet there at the
 * clone point: neither returns it then; once chunk 2 arrives the source
 * returns it, the copy never does. A chunk waiting for patches: the same.
 * A partly read chunk (its first packets returned) leaves only the rest in
 * the copy.
 */
static void test_clone_fragments_patches(void **state)
{
	struct svc_tbuf *b, *c;
	struct svc_seqids *ids;
	struct svc_tbuf_out o = { 0 };
	uint8_t pk[4096];
	uint32_t n;
	struct svc_tbuf_patch pt = { .offset = 0, .data = { 0x84, 0x80, 0x80,
							      0x00 } };
	(void)state;

	assert_int_equal(svc_tbuf_create(1 << 20, SVC_TBUF_RING, 1, 0, &b), 0);
	assert_int_equal(svc_seqids_create(&ids), 0);

	/* Writer 1: two whole packets, then the start of a third packet
	 * continued in chunk 1 and 2. */
	n = tpkt(pk, 1, 7, 300);
	tcb_init(&CB);
	tcb_frag(&CB, pk, tpkt(pk + 1000, 1, 1, 0), false);
	memcpy(pk + 2000, pk + 1000, 16);
	tcb_frag(&CB, pk + 2000, tpkt(pk + 2000, 1, 2, 0), false);
	tcb_frag(&CB, pk, 100, false);
	assert_int_equal(tcommit(b, 0, 1, 1, 0, &CB, SVC_CHUNK_LAST_CONT,
				 true), SVC_TBUF_STORED);
	tcb_init(&CB);
	tcb_frag(&CB, pk + 100, 100, false);
	assert_int_equal(tcommit(b, 0, 1, 1, 1, &CB, SVC_CHUNK_FIRST_CONT |
				 SVC_CHUNK_LAST_CONT, true), SVC_TBUF_STORED);

	/* Writer 2: a chunk whose only packet waits for a patch of its first
	 * 4 bytes (the size prefix is 0 until then). */
	tcb_init(&CB);
	{
		uint8_t q[64];
		uint32_t qn = tpkt(q, 2, 50, 0);

		pt.data[0] = (uint8_t)(0x80 | qn);
		CB.buf[0] = CB.buf[1] = CB.buf[2] = 0x80;
		CB.buf[3] = 0;
		memcpy(CB.buf + 4, q, qn);
		CB.len = 4 + qn;
		CB.nfrags = 1;
	}
	assert_int_equal(tcommit(b, 0, 1, 2, 0, &CB, SVC_CHUNK_NEEDS_PATCH,
				 true), SVC_TBUF_STORED);

	/* The source returns writer 1's two whole packets: chunk 0 is now
	 * partly read. */
	assert_int_equal(read_all(b, ids, &o, PK, 4096), 2);
	assert_int_equal(svc_tbuf_clone(b, &c), 0);

	/* The last piece and the patch arrive, in the source only. */
	tcb_init(&CB);
	tcb_frag(&CB, pk + 200, n - 200, false);
	assert_int_equal(tcommit(b, 0, 1, 1, 2, &CB, SVC_CHUNK_FIRST_CONT,
				 true), SVC_TBUF_STORED);
	assert_int_equal(svc_tbuf_lane_patch(b, 0, 1, 2, 0, &pt, 1, false), 1);

	assert_int_equal(read_all(c, ids, &o, PK, 4096), 0);
	assert_int_equal(read_all(b, ids, &o, PK, 4096), 2);
	for (int i = 0; i < 2; i++) {
		if (PK[i].seq == 1) {
			assert_int_equal(PK[i].counter, 7);
			assert_int_equal(PK[i].filler, 300);
			assert_true(PK[i].filler_ok);
		} else {
			assert_int_equal(PK[i].seq, 2);
			assert_int_equal(PK[i].counter, 50);
		}
	}
	svc_tbuf_destroy(c);

	/* A clone taken after the pieces all arrived returns the packet. */
	svc_tbuf_destroy(b);
	assert_int_equal(svc_tbuf_create(1 << 20, SVC_TBUF_RING, 1, 0, &b), 0);
	tcb_init(&CB);
	tcb_frag(&CB, pk, 100, false);
	assert_int_equal(tcommit(b, 0, 1, 3, 0, &CB, SVC_CHUNK_LAST_CONT,
				 true), SVC_TBUF_STORED);
	tcb_init(&CB);
	tcb_frag(&CB, pk + 100, n - 100, false);
	assert_int_equal(tcommit(b, 0, 1, 3, 1, &CB, SVC_CHUNK_FIRST_CONT,
				 true), SVC_TBUF_STORED);
	assert_int_equal(svc_tbuf_clone(b, &c), 0);
	assert_int_equal(read_all(c, ids, &o, PK, 4096), 1);
	assert_int_equal(PK[0].counter, 7);
	assert_int_equal(PK[0].filler, 300);
	assert_true(PK[0].filler_ok);
	assert_int_equal(read_all(b, ids, &o, PK, 4096), 1);

	svc_tbuf_out_free(&o);
	svc_tbuf_destroy(c);
	svc_tbuf_destroy(b);
	svc_seqids_destroy(ids);
}

/* A ring buffer that wrapped: the copy has the newest data only, flagged
 * as following a loss, and the overwrite counters of the source. */
static void test_clone_overwritten(void **state)
{
	struct svc_tbuf *b, *c;
	struct svc_seqids *ids;
	struct svc_tbuf_out o = { 0 };
	struct svc_tbuf_stats sb, sc;
	uint32_t id = 0;
	int n;
	(void)state;

	assert_int_equal(svc_tbuf_create(64 * 1024, SVC_TBUF_RING, 1, 0, &b),
			 0);
	assert_int_equal(svc_seqids_create(&ids), 0);
	/* ~1 KiB chunks: 200 of them wrap a 64 KiB buffer three times. */
	for (; id < 200; id++)
		put(b, 0, 1, id, id, 1, 1000);
	assert_int_equal(svc_tbuf_clone(b, &c), 0);
	svc_tbuf_get_stats(b, &sb);
	svc_tbuf_get_stats(c, &sc);
	assert_true(sb.chunks_overwritten > 0);
	assert_int_equal(sc.chunks_overwritten, sb.chunks_overwritten);
	assert_int_equal(sc.chunks_written, 200);
	n = read_all(c, ids, &o, PK, 4096);
	assert_true(n > 10 && n < 200);
	for (int i = 0; i < n; i++) {
		assert_int_equal(PK[i].counter, 200 - n + i);
		assert_true(PK[i].filler_ok);
	}
	assert_true(PK[0].loss != 0);
	assert_int_equal(read_all(b, ids, &o, PK, 4096), n);

	svc_tbuf_out_free(&o);
	svc_tbuf_destroy(c);
	svc_tbuf_destroy(b);
	svc_seqids_destroy(ids);
}

/*
 * A sealed buffer (moved whole into a clone) keeps its data and its read
 * progress, refuses lanes, and gives a chunk-id gap up at once instead of
 * waiting for the missing chunk.
 */
static void test_seal(void **state)
{
	struct svc_tbuf *b;
	struct svc_seqids *ids;
	struct svc_tbuf_out o = { 0 };
	(void)state;

	assert_int_equal(svc_tbuf_create(1 << 20, SVC_TBUF_RING, 2, 0, &b), 0);
	assert_int_equal(svc_seqids_create(&ids), 0);
	put(b, 0, 1, 0, 0, 3, 0);
	assert_int_equal(read_all(b, ids, &o, PK, 4096), 3);
	put(b, 0, 1, 1, 3, 2, 0);
	put(b, 0, 1, 3, 10, 2, 0);	/* chunk 2 never comes */
	/* Live: chunk 1 is returned, chunk 3 waits behind the gap. */
	assert_int_equal(read_all(b, ids, &o, PK, 4096), 2);
	assert_int_equal(PK[0].counter, 3);
	svc_tbuf_seal(b);
	assert_int_equal(read_all(b, ids, &o, PK, 4096), 2);
	assert_int_equal(PK[0].counter, 10);
	assert_true(PK[0].loss & SVC_LOSS_READ_GAP);
	assert_int_equal(PK[1].counter, 11);
	/* Lanes are refused. */
	tcb_init(&CB);
	tcb_frag(&CB, (const uint8_t *)"\x08\x01", 2, true);
	assert_int_equal(tcommit(b, 1, 1, 2, 0, &CB, 0, true), -EPERM);
	assert_null(svc_tbuf_lane_stage(b, 0, 16));

	svc_tbuf_out_free(&o);
	svc_tbuf_destroy(b);
	svc_seqids_destroy(ids);
}

/* ---- Clone while lanes write ---------------------------------------- */

#define CW_CHUNKS 3000u		/* chunks per writer lane */

struct cw_arg {
	struct svc_tbuf *b;	/* buffer */
	unsigned lane;		/* lane index = writer id - 1 */
};

static void *cw_writer(void *p)
{
	struct cw_arg *a = p;
	static struct tcb cbs[2];
	struct tcb *cb = &cbs[a->lane];
	uint8_t pk[512];

	for (uint32_t id = 0; id < CW_CHUNKS; id++) {
		tcb_init(cb);
		for (uint32_t k = 0; k < 4; k++)
			tcb_frag(cb, pk, tpkt(pk, a->lane + 1, id * 4 + k, 64),
				 false);
		if (tcommit(a->b, a->lane, 1, (uint16_t)(a->lane + 1), id, cb,
			    0, true) != SVC_TBUF_STORED)
			return (void *)1;
	}
	return NULL;
}

/* Checks a clone's packets: per writer, consecutive counters. */
static void cw_check(struct svc_tbuf *c, struct svc_seqids *ids)
{
	struct svc_tbuf_out o = { 0 };
	uint32_t next[2] = { 0, 0 };
	bool seen[2] = { false, false };
	bool drained = false;
	int total = 0;

	while (!drained) {
		int n;

		svc_tbuf_out_free(&o);
		assert_true(svc_tbuf_read(c, ids, &o, 64 * 1024, &drained) >= 0);
		n = tparse(&o, PK, 4096);
		assert_true(n >= 0);
		for (int i = 0; i < n; i++) {
			unsigned w = PK[i].seq - 1;

			assert_true(w < 2);
			assert_true(PK[i].filler_ok);
			if (seen[w])
				assert_int_equal(PK[i].counter, next[w]);
			seen[w] = true;
			next[w] = PK[i].counter + 1;
		}
		total += n;
	}
	/* Each writer's packets end on a chunk boundary. */
	assert_int_equal(next[0] % 4, 0);
	assert_int_equal(next[1] % 4, 0);
	svc_tbuf_out_free(&o);
	(void)total;
}

static void test_clone_concurrent(void **state)
{
	struct svc_tbuf *b;
	struct svc_seqids *ids;
	struct cw_arg a[2];
	pthread_t t[2];
	void *res;
	int clones = 0;
	(void)state;

	/* Large enough to keep everything: each clone must be a prefix. */
	assert_int_equal(svc_tbuf_create(8u << 20, SVC_TBUF_RING, 2, 0, &b),
			 0);
	assert_int_equal(svc_seqids_create(&ids), 0);
	for (unsigned i = 0; i < 2; i++) {
		a[i] = (struct cw_arg){ .b = b, .lane = i };
		assert_int_equal(pthread_create(&t[i], NULL, cw_writer, &a[i]),
				 0);
	}
	for (; clones < 20; clones++) {
		struct svc_tbuf *c;
		struct svc_tbuf_out o = { 0 };
		bool drained;

		assert_int_equal(svc_tbuf_clone(b, &c), 0);
		cw_check(c, ids);
		svc_tbuf_destroy(c);
		/* The source reader runs too, between clones. */
		assert_true(svc_tbuf_read(b, ids, &o, 64 * 1024, &drained) >=
			    0);
		svc_tbuf_out_free(&o);
	}
	for (unsigned i = 0; i < 2; i++) {
		assert_int_equal(pthread_join(t[i], &res), 0);
		assert_null(res);
	}
	svc_tbuf_destroy(b);
	svc_seqids_destroy(ids);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clone_both_read),
		cmocka_unit_test(test_clone_empty),
		cmocka_unit_test(test_clone_fragments_patches),
		cmocka_unit_test(test_clone_overwritten),
		cmocka_unit_test(test_clone_concurrent),
		cmocka_unit_test(test_seal),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
