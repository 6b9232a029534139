// SPDX-License-Identifier: Apache-2.0
// Untrusted producers against spindled (DESIGN.md §4, producer-side issue
// §4): chunk headers with wrong writer ids, packet counts past the chunk,
// sizes past the end, a page layout changed under the service, CommitData
// naming pages past the SMB, a bad chunk among good ones in one CommitData,
// bad patches, commits into another session's buffer, and a thread
// scribbling over the SMB during a commit storm.
// Each time the service survives, a well-behaved producer's packets all
// come back in order, and nothing of the hostile one's leaks into them.
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "spindle/pb.h"
#include "svc_harness.h"

#define GOOD_TS 1000000u	/* the good producer's timestamps */
#define BAD_TS 2000000u		/* the hostile producers' */
#define GOOD_PER_ROUND 200u

struct world {
	struct th_svc t;	/* the service */
	struct th_cons cons;	/* consumer of session 1 */
	struct th_prod good;	/* the well-behaved producer */
	uint32_t good_chunk;	/* its next chunk id */
	unsigned good_sent;	/* packets it wrote */
};

static void wait_started(struct th_prod *p)
{
	assert_int_equal(th_prod_wait_cmd(p),
			 PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_TRACING);
	assert_int_equal(th_prod_wait_cmd(p),
			 PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_DATA_SOURCE);
	assert_int_equal(th_prod_wait_cmd(p),
			 PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE);
}

static void world_start(struct world *w, unsigned lanes)
{
	memset(w, 0, sizeof(*w));
	th_svc_start(&w->t, lanes);
	th_prod_connect(&w->good, &w->t, "good", "test.ds");
	th_cons_connect(&w->cons, &w->t);
	th_cons_enable(&w->cons, 4096, "test.ds");
	wait_started(&w->good);
}

/* The good producer writes a round of packets (pages 0..15). */
static void good_round(struct world *w)
{
	w->good_sent += th_prod_write(&w->good, 1, &w->good_chunk,
				      GOOD_TS + w->good_sent, GOOD_PER_ROUND,
				      16, 0, 16);
	assert_true(th_prod_fence(&w->good));
}

/* Whether the session read by world_read() holds a packet stamped ts. */
static bool world_has_ts(const struct world *w, uint64_t ts)
{
	for (size_t i = 0; i < w->cons.nts; i++)
		if (w->cons.ts[i] == ts)
			return true;
	return false;
}

/* Stops the session, reads it, checks the good producer's packets. */
static void world_read(struct world *w)
{
	uint32_t good_seq = 0;
	uint64_t next = GOOD_TS;

	assert_int_equal(th_cons_call(&w->cons, "DisableTracing",
				      &perfetto__protos__disable_tracing_request__descriptor),
			 0);
	th_cons_wait_enable(&w->cons, 5000);
	assert_true(w->cons.enable_done);
	th_cons_read(&w->cons);
	/* The good producer's sequence: the one carrying its first packet. */
	for (size_t i = 0; i < w->cons.nts && !good_seq; i++)
		if (w->cons.ts[i] == GOOD_TS)
			good_seq = w->cons.seq[i];
	assert_int_not_equal(good_seq, 0);
	/* Its packets come back exactly once, in order, and nothing else is
	 * on its sequence; hostile producers' packets (possibly mangled) are
	 * confined to sequences of their own. */
	for (size_t i = 0; i < w->cons.nts; i++) {
		if (w->cons.seq[i] != good_seq)
			continue;
		assert_int_equal(w->cons.ts[i], next);
		next++;
	}
	assert_int_equal(next, GOOD_TS + w->good_sent);
}

/* Frees the session and stops everything. */
static void world_end(struct world *w)
{
	th_cons_call(&w->cons, "FreeBuffers",
		     &perfetto__protos__free_buffers_request__descriptor);
	th_cons_close(&w->cons);
	th_prod_close(&w->good);
	th_svc_stop(&w->t);
}

static void world_finish(struct world *w)
{
	world_read(w);
	world_end(w);
}

/* A hostile producer joining the running session. */
static void bad_join(struct world *w, struct th_prod *b)
{
	th_prod_connect(b, &w->t, "bad", "test.ds");
	wait_started(b);
}

/* Writes one valid chunk by hand and returns its header, not completed. */
static struct spn_smb_chunk_header *bad_chunk(struct th_prod *b, uint32_t page,
					      uint32_t chunk, uint16_t writer,
					      uint32_t chunk_id)
{
	struct spn_smb_chunk_header *h = NULL;
	uint8_t *q;

	spn_smb_try_partition(&b->smb, page, SPN_SMB_PAGE_DIV4);
	assert_int_equal(spn_smb_try_acquire_write(&b->smb, page,
						   SPN_SMB_PAGE_DIV4, chunk,
						   writer, chunk_id, 0, &h),
			 0);
	q = spn_smb_chunk_payload(h);
	spn_pb_put_varint4(q, 4);
	q = spn_pb_field_varint(q + 4, 8, BAD_TS + chunk_id);
	spn_smb_chunk_set_packets(h, spn_smb_packets(1, 0));
	return h;
}

static void bad_commit(struct th_prod *b, uint32_t page, uint32_t chunk,
		       uint32_t target)
{
	Perfetto__Protos__CommitDataRequest req =
		PERFETTO__PROTOS__COMMIT_DATA_REQUEST__INIT;
	Perfetto__Protos__CommitDataRequest__ChunksToMove mv =
		PERFETTO__PROTOS__COMMIT_DATA_REQUEST__CHUNKS_TO_MOVE__INIT;
	Perfetto__Protos__CommitDataRequest__ChunksToMove *mvp = &mv;

	mv.has_page = mv.has_chunk = mv.has_target_buffer = true;
	mv.page = page;
	mv.chunk = chunk;
	mv.target_buffer = target;
	req.n_chunks_to_move = 1;
	req.chunks_to_move = &mvp;
	th_prod_invoke(b, TH_COMMIT, &req.base, true);
}

/* One CommitData moving n chunks (chunk[i] of page[i]) into target. */
static void bad_commit_n(struct th_prod *b, const uint32_t *page,
			 const uint32_t *chunk, size_t n, uint32_t target)
{
	Perfetto__Protos__CommitDataRequest req =
		PERFETTO__PROTOS__COMMIT_DATA_REQUEST__INIT;
	Perfetto__Protos__CommitDataRequest__ChunksToMove mv[8];
	Perfetto__Protos__CommitDataRequest__ChunksToMove *mvp[8];

	assert_true(n <= 8);
	for (size_t i = 0; i < n; i++) {
		perfetto__protos__commit_data_request__chunks_to_move__init(&mv[i]);
		mv[i].has_page = mv[i].has_chunk = mv[i].has_target_buffer = true;
		mv[i].page = page[i];
		mv[i].chunk = chunk[i];
		mv[i].target_buffer = target;
		mvp[i] = &mv[i];
	}
	req.n_chunks_to_move = n;
	req.chunks_to_move = mvp;
	th_prod_invoke(b, TH_COMMIT, &req.base, true);
}

/*
 * Good and bad chunks in one CommitData: the chunks before the bad one are
 * stored, the producer is cut off at the bad one, nothing after it is
 * stored (the lane takes and checks chunks in pairs: the bad one is first
 * and second of a pair here), and the service, which closes the
 * connection, is done with the producer's state before it frees it (the
 * handler went on reading it).
 */
static void test_bad_chunk_among_good(void **state)
{
	struct world w;
	(void)state;

	world_start(&w, 1);
	for (uint32_t bad = 0; bad < 4; bad++) {
		uint32_t page[5], chunk[5], base = 10 * (bad + 1);
		struct th_prod b;

		bad_join(&w, &b);
		for (uint32_t i = 0; i < 5; i++) {
			struct spn_smb_chunk_header *h;

			page[i] = 24 + i / 4;
			chunk[i] = i % 4;
			h = bad_chunk(&b, page[i], chunk[i], 3, base + i);
			if (i == bad)
				spn_pb_put_varint4(spn_smb_chunk_payload(h), 60000);
			spn_smb_try_complete(&b.smb, page[i], SPN_SMB_PAGE_DIV4,
					     chunk[i]);
		}
		bad_commit_n(&b, page, chunk, 5, b.target_buffer);
		assert_false(th_prod_fence(&b)); /* disconnected */
		th_prod_close(&b);
		good_round(&w);
	}
	world_read(&w);
	for (uint32_t bad = 0; bad < 4; bad++)
		for (uint32_t i = 0; i < 5; i++)
			assert_int_equal(world_has_ts(&w, BAD_TS + 10 * (bad + 1) + i),
					 i < bad);
	world_end(&w);
}

/* Chunk headers with writer ids 0 and 40000: the producer is cut off. */
static void test_bad_writer_ids(void **state)
{
	static const uint16_t ids[] = { 0, 40000 };
	struct world w;
	(void)state;

	world_start(&w, 2);
	for (int i = 0; i < 2; i++) {
		struct th_prod b;

		bad_join(&w, &b);
		bad_chunk(&b, 20, 0, ids[i], 7);
		spn_smb_try_complete(&b.smb, 20, SPN_SMB_PAGE_DIV4, 0);
		bad_commit(&b, 20, 0, b.target_buffer);
		assert_false(th_prod_fence(&b)); /* disconnected */
		th_prod_close(&b);
		good_round(&w);
	}
	world_finish(&w);
}

/* A packet count past the chunk and a size past its end. */
static void test_bad_counts_and_sizes(void **state)
{
	struct world w;
	(void)state;

	world_start(&w, 1);
	for (int i = 0; i < 2; i++) {
		struct th_prod b;
		struct spn_smb_chunk_header *h;

		bad_join(&w, &b);
		h = bad_chunk(&b, 21, 1, 3, 1);
		if (i == 0)
			spn_smb_chunk_set_packets(h, spn_smb_packets(1023, 0));
		else
			spn_pb_put_varint4(spn_smb_chunk_payload(h), 60000);
		spn_smb_try_complete(&b.smb, 21, SPN_SMB_PAGE_DIV4, 1);
		bad_commit(&b, 21, 1, b.target_buffer);
		assert_false(th_prod_fence(&b));
		th_prod_close(&b);
		good_round(&w);
	}
	world_finish(&w);
}

/* The page word rewritten to another layout between complete and commit,
 * and CommitData naming pages and chunks past the SMB: ignored. */
static void test_layout_change_and_bad_pages(void **state)
{
	struct world w;
	struct th_prod b;
	_Atomic uint32_t *word;
	(void)state;

	world_start(&w, 2);
	bad_join(&w, &b);
	bad_chunk(&b, 22, 3, 2, 1);
	spn_smb_try_complete(&b.smb, 22, SPN_SMB_PAGE_DIV4, 3);
	word = &spn_smb_page(&b.smb, 22)->header_bitmap;
	/* Div14, every chunk Complete: chunk 3 now sits elsewhere. */
	atomic_store(word, (SPN_SMB_PAGE_DIV14 << SPN_SMB_LAYOUT_SHIFT) |
				   SPN_SMB_STATES_MASK);
	bad_commit(&b, 22, 3, b.target_buffer);
	bad_commit(&b, 1u << 30, 0, b.target_buffer);
	bad_commit(&b, 23, 99, b.target_buffer);
	th_prod_fence(&b);
	th_prod_close(&b);
	good_round(&w);
	world_finish(&w);
}

/* Patches past a chunk, of the wrong size, for writer 0, too many. */
static void test_bad_patches(void **state)
{
	struct world w;
	struct th_prod b;
	Perfetto__Protos__CommitDataRequest req =
		PERFETTO__PROTOS__COMMIT_DATA_REQUEST__INIT;
	Perfetto__Protos__CommitDataRequest__ChunkToPatch cp[3];
	Perfetto__Protos__CommitDataRequest__ChunkToPatch *cpp[3];
	Perfetto__Protos__CommitDataRequest__ChunkToPatch__Patch pt[1100];
	Perfetto__Protos__CommitDataRequest__ChunkToPatch__Patch *ptp[1100];
	uint8_t four[4] = { 0x81, 0x80, 0x80, 0x00 };
	uint32_t chunk_id = 0;
	(void)state;

	world_start(&w, 1);
	bad_join(&w, &b);
	th_prod_write(&b, 5, &chunk_id, BAD_TS, 10, 0, 30, 2);
	for (int i = 0; i < 1100; i++) {
		perfetto__protos__commit_data_request__chunk_to_patch__patch__init(
			&pt[i]);
		pt[i].has_offset = pt[i].has_data = true;
		pt[i].offset = i == 0 ? 70000u : 4u * (unsigned)i;
		pt[i].data.data = four;
		pt[i].data.len = i == 1 ? 3 : 4;
		ptp[i] = &pt[i];
	}
	for (int i = 0; i < 3; i++) {
		perfetto__protos__commit_data_request__chunk_to_patch__init(&cp[i]);
		cp[i].has_target_buffer = cp[i].has_writer_id = true;
		cp[i].has_chunk_id = true;
		cp[i].target_buffer = b.target_buffer;
		cp[i].writer_id = i == 1 ? 0 : 5;
		cp[i].chunk_id = 0;
		cp[i].n_patches = i == 2 ? 1100 : 2;
		cp[i].patches = ptp;
		cpp[i] = &cp[i];
	}
	req.n_chunks_to_patch = 3;
	req.chunks_to_patch = cpp;
	th_prod_invoke(&b, TH_COMMIT, &req.base, true);
	assert_true(th_prod_fence(&b));
	th_prod_close(&b);
	good_round(&w);
	world_finish(&w);
}

/* Commits into a buffer of a session the producer is not part of. */
static void test_other_session_buffer(void **state)
{
	struct world w;
	struct th_cons c2;
	struct th_prod b;
	(void)state;

	world_start(&w, 2);
	/* Session 2 traces "other.ds", which only the good producer has. */
	th_cons_connect(&c2, &w.t);
	th_cons_enable(&c2, 1024, "other.ds");
	bad_join(&w, &b);
	bad_chunk(&b, 24, 0, 1, 0);
	spn_smb_try_complete(&b.smb, 24, SPN_SMB_PAGE_DIV4, 0);
	/* Session 2's buffer id is the next one after session 1's. */
	bad_commit(&b, 24, 0, b.target_buffer + 1);
	assert_true(th_prod_fence(&b));
	th_prod_close(&b);
	assert_int_equal(th_cons_call(&c2, "DisableTracing",
				      &perfetto__protos__disable_tracing_request__descriptor),
			 0);
	th_cons_wait_enable(&c2, 5000);
	th_cons_read(&c2);
	assert_int_equal(c2.nts, 0); /* nothing of the hostile producer */
	th_cons_close(&c2);
	good_round(&w);
	world_finish(&w);
}

struct scribbler {
	struct th_prod *b;	/* whose SMB */
	volatile int stop;	/* set by the test */
	unsigned seed;		/* rand_r state */
};

static void *scribble(void *arg)
{
	struct scribbler *s = arg;
	uint32_t *words = (uint32_t *)s->b->smb_base;
	size_t n = s->b->smb_size / 4;

	while (!s->stop) {
		size_t i = (size_t)rand_r(&s->seed) % n;

		/* Plain stores on purpose: a hostile process does not use
		 * our atomics. The service only ever reads its own copy. */
		__atomic_store_n(&words[i], (uint32_t)rand_r(&s->seed),
				 __ATOMIC_RELAXED);
	}
	return NULL;
}

/* A thread rewrites the SMB randomly while the producer commits. */
static void test_scribbler_storm(void **state)
{
	struct world w;
	(void)state;

	world_start(&w, 2);
	for (int round = 0; round < 5; round++) {
		struct scribbler s = { .seed = 1234u + (unsigned)round };
		struct th_prod b;
		uint32_t chunk_id = 0;
		pthread_t th;

		bad_join(&w, &b);
		s.b = &b;
		pthread_create(&th, NULL, scribble, &s);
		for (int i = 0; i < 50 && !b.gone; i++)
			th_prod_write(&b, 9, &chunk_id, BAD_TS + 1000u * (unsigned)i,
				      40, 8, 0, b.smb.num_pages);
		s.stop = 1;
		pthread_join(th, NULL);
		th_prod_fence(&b);
		th_prod_close(&b);
		good_round(&w);
	}
	world_finish(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_writer_ids),
		cmocka_unit_test(test_bad_counts_and_sizes),
		cmocka_unit_test(test_bad_chunk_among_good),
		cmocka_unit_test(test_layout_change_and_bad_pages),
		cmocka_unit_test(test_bad_patches),
		cmocka_unit_test(test_other_session_buffer),
		cmocka_unit_test(test_scribbler_storm),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
