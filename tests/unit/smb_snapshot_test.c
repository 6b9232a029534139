// SPDX-License-Identifier: Apache-2.0
// The SMB ABI against real Perfetto v14 bytes: captured SMB snapshots parse to the chunk states, writer and chunk ids, counts and flags their CommitData frames name.
//
// Where the expected values come from (all under tests/data/perfetto_v14/
// session1/):
//  - proxy/conn3_producer_fd0_snapNN_c2s_offO.bin is the producer's SMB
//    (256 KiB, 4 KiB pages) just before the service received the recvmsg()
//    that starts at offset O of conn3's client-to-service stream;
//    proxy/proxy_log.jsonl gives the recvmsg() boundaries (242+610,
//    852+458, 1310+171, 1481+21, 221+21).
//  - ipc_frames.jsonl (and ipc_summary.txt) decode the frames those
//    recvmsg() calls carried ([index] at stream_offset):
//      off 221:  [21] NotifyDataSourceStarted (no chunks committed yet);
//      off 242:  [23] RegisterTraceWriter {trace_writer_id 1, target_buffer 1},
//                [24] CommitData pages 0..13, patches for chunk ids
//                     0 1 2 6 8 9 10 13; [25] pages 14 15, patch 15;
//                [26] pages 16 17, patches 16 17;
//      off 852:  [27] page 18; [28] pages 19..23, patches 20 22 23;
//                [29] page 24, patch 24; [30] page 25; [31] page 26;
//                [32] page 27, patch 27; [33] pages 28 29, patch 29;
//      off 1310: [34] pages 30..33, patches 30 31; [35] UnregisterTraceWriter;
//                [36] RegisterTraceWriter 2;
//      off 1481: [38] CommitData {flush_request_id 1}, no chunks.
//    Every chunks_to_move entry there has chunk 0 and target_buffer 1; every
//    chunks_to_patch entry has writer_id 1.
//  - The chunk headers (/work/shared/tools/smb_dump.py on the snap02 file):
//    page N holds chunk id N of writer 1, layout Div1, with the count and
//    flags in kChunks below; the same values appear in every later snapshot
//    that still holds the chunk.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smb/chunk_validate.h"
#include "spindle/smb_abi.h"

#define SNAP_DIR SPN_TESTDATA_DIR "/perfetto_v14/session1/proxy/"
#define SNAP_SIZE 262144u
#define SNAP_PAGE 4096u

/* Count and flags of chunk id N (= page N), from smb_dump.py on snap02. */
static const struct {
	uint16_t count; /* packets.count */
	uint8_t flags;	/* packets.flags */
} kChunks[34] = {
	{ 117, 0x6 }, { 121, 0x7 }, { 121, 0x7 }, { 119, 0x1 }, { 119, 0x0 },
	{ 119, 0x2 }, { 120, 0x7 }, { 119, 0x1 }, { 119, 0x6 }, { 120, 0x7 },
	{ 119, 0x7 }, { 120, 0x1 }, { 119, 0x2 }, { 120, 0x7 }, { 119, 0x1 },
	{ 119, 0x6 }, { 120, 0x7 }, { 119, 0x7 }, { 120, 0x1 }, { 119, 0x2 },
	{ 120, 0x7 }, { 119, 0x1 }, { 119, 0x6 }, { 120, 0x7 }, { 119, 0x7 },
	{ 120, 0x1 }, { 119, 0x2 }, { 120, 0x7 }, { 119, 0x1 }, { 119, 0x6 },
	{ 120, 0x7 }, { 119, 0x7 }, { 120, 0x1 }, { 117, 0x0 },
};

/* A snapshot loaded into private, page-aligned memory. */
struct snap {
	uint8_t *mem;	    /* SNAP_SIZE bytes */
	struct spn_smb smb; /* over mem */
};

static void snap_load(struct snap *s, const char *name)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s%s", SNAP_DIR, name);
	f = fopen(path, "rb");
	assert_non_null(f);
	s->mem = aligned_alloc(4096, SNAP_SIZE + 4096);
	assert_non_null(s->mem);
	/* Exactly 256 KiB: one byte more must not be there. */
	assert_int_equal(fread(s->mem, 1, SNAP_SIZE + 1, f), SNAP_SIZE);
	fclose(f);
	assert_int_equal(spn_smb_init(&s->smb, s->mem, SNAP_SIZE, SNAP_PAGE), 0);
	assert_int_equal(s->smb.num_pages, 64);
}

static uint32_t snap_word(struct snap *s, uint32_t page)
{
	return spn_smb_page_load(&s->smb, page, memory_order_acquire);
}

/* Page `page` holds writer 1's chunk id `page`, Div1, in `state`. */
static void expect_chunk(struct snap *s, uint32_t page, uint32_t state)
{
	uint32_t w = snap_word(s, page);
	struct spn_smb_chunk_header *h;
	uint16_t p;

	assert_true(spn_smb_word_valid(w));
	assert_int_equal(spn_smb_word_layout(w), SPN_SMB_PAGE_DIV1);
	assert_int_equal(spn_smb_word_state(w, 0), state);
	h = spn_smb_chunk(&s->smb, page, SPN_SMB_PAGE_DIV1, 0);
	assert_int_equal(atomic_load(&h->chunk_id), page);
	assert_int_equal(atomic_load(&h->writer_id), 1);
	p = atomic_load(&h->packets);
	assert_int_equal(spn_smb_packets_count(p), kChunks[page].count);
	assert_int_equal(spn_smb_packets_flags(p), kChunks[page].flags);
}

/* Page `page` was freed by the service: word 0, chunk header zeroed. */
static void expect_freed(struct snap *s, uint32_t page)
{
	static const uint8_t zero[8];

	assert_int_equal(snap_word(s, page), 0);
	assert_memory_equal(s->mem + (size_t)page * SNAP_PAGE + 8, zero, 8);
}

/* One recvmsg() worth of CommitData: pages [first, last] moved, and the
 * chunk ids that got patches. */
struct commit_case {
	const char *file;     /* snapshot taken just before it arrived */
	uint32_t first, last; /* chunks_to_move pages (chunk 0 each) */
	uint32_t patched[12]; /* chunks_to_patch chunk ids */
	size_t npatched;      /* entries in patched */
};

static const struct commit_case kCommits[] = {
	{ "conn3_producer_fd0_snap02_c2s_off242.bin", 0, 17,
	  { 0, 1, 2, 6, 8, 9, 10, 13, 15, 16, 17 }, 11 },
	{ "conn3_producer_fd0_snap03_c2s_off852.bin", 18, 29,
	  { 20, 22, 23, 24, 27, 29 }, 6 },
	{ "conn3_producer_fd0_snap04_c2s_off1310.bin", 30, 33, { 30, 31 }, 2 },
};

static bool is_patched(const struct commit_case *c, uint32_t id)
{
	size_t i;

	for (i = 0; i < c->npatched; i++)
		if (c->patched[i] == id)
			return true;
	return false;
}

/* Each chunk a CommitData names is Complete with the right header; the ones
 * with patches are exactly those flagged ChunkNeedsPatching; the service's
 * commit copy takes, validates and frees each one. */
static void test_commit_snapshots(void **state)
{
	static uint8_t dst[SNAP_PAGE];
	size_t k;
	uint32_t page;

	(void)state;
	for (k = 0; k < sizeof(kCommits) / sizeof(kCommits[0]); k++) {
		const struct commit_case *c = &kCommits[k];
		struct snap s;

		snap_load(&s, c->file);
		for (page = c->first; page <= c->last; page++) {
			struct smb_chunk_info info;

			expect_chunk(&s, page, SPN_SMB_COMPLETE);
			assert_int_equal(snap_word(&s, page), 0x10000003);
			assert_int_equal(!!(kChunks[page].flags & SPN_SMB_NEEDS_PATCHING),
					 is_patched(c, page));
			assert_int_equal(smb_chunk_commit_copy(&s.smb, page, 0, dst,
							       sizeof(dst), &info), 0);
			assert_int_equal(info.size, 4088);
			assert_int_equal(info.writer_id, 1);
			assert_int_equal(info.chunk_id, page);
			assert_int_equal(info.count, kChunks[page].count);
			assert_int_equal(info.flags, kChunks[page].flags);
			assert_int_equal(info.nfrags, kChunks[page].count);
			assert_true(info.freed);
			/* One chunk per page: freeing it un-partitions the page. */
			expect_freed(&s, page);
		}
		free(s.mem);
	}
}

/* The rest of each snapshot: what the service had freed before (word 0,
 * header zeroed, stale payload left), what it was reading, what the
 * producer had completed but not yet committed, and untouched pages. */
static void test_snapshot_surroundings(void **state)
{
	struct snap s;
	uint32_t page;

	(void)state;
	snap_load(&s, "conn3_producer_fd0_snap02_c2s_off242.bin");
	for (page = 0; page <= 33; page++)
		expect_chunk(&s, page, SPN_SMB_COMPLETE);
	for (page = 34; page < 64; page++) {
		size_t i;

		for (i = 0; i < SNAP_PAGE; i++)
			assert_int_equal(s.mem[(size_t)page * SNAP_PAGE + i], 0);
	}
	free(s.mem);

	snap_load(&s, "conn3_producer_fd0_snap03_c2s_off852.bin");
	for (page = 0; page <= 13; page++) {
		expect_freed(&s, page);
		/* The payload is left as it was (first fragment prefix). */
		assert_int_not_equal(s.mem[(size_t)page * SNAP_PAGE + 16], 0);
	}
	/* [25]'s first chunk: the service was copying it out. */
	expect_chunk(&s, 14, SPN_SMB_BEING_READ);
	assert_int_equal(snap_word(&s, 14), 0x10000002);
	for (page = 15; page <= 33; page++)
		expect_chunk(&s, page, SPN_SMB_COMPLETE);
	free(s.mem);

	snap_load(&s, "conn3_producer_fd0_snap04_c2s_off1310.bin");
	for (page = 0; page <= 29; page++)
		expect_freed(&s, page);
	free(s.mem);

	/* [38] carries only a flush: every chunk had been committed and freed. */
	snap_load(&s, "conn3_producer_fd0_snap05_c2s_off1481.bin");
	for (page = 0; page < 64; page++)
		assert_int_equal(snap_word(&s, page), 0);
	for (page = 0; page <= 33; page++)
		expect_freed(&s, page);
	free(s.mem);
}

/* Before any commit ([21]): the writer had completed chunk 0 and was still
 * writing chunks 1 and 2. Scraping copies chunk 1 without its last fragment,
 * skips chunk 2 (one fragment, maybe in progress), and what it copies of
 * chunk 1 is byte for byte what the producer later committed (snap02). */
static void test_scrape_snapshot(void **state)
{
	static uint8_t dst[SNAP_PAGE];
	struct smb_chunk_info info;
	struct snap s, later;

	(void)state;
	snap_load(&s, "conn3_producer_fd0_snap01_c2s_off221.bin");
	assert_int_equal(snap_word(&s, 0), 0x10000003);
	assert_int_equal(snap_word(&s, 1), 0x10000001);
	assert_int_equal(snap_word(&s, 2), 0x10000001);
	assert_int_equal(snap_word(&s, 3), 0);

	assert_int_equal(smb_chunk_scrape_copy(&s.smb, 0, 0, dst, sizeof(dst), &info), 0);
	assert_true(info.complete);
	assert_int_equal(info.chunk_id, 0);
	assert_int_equal(info.count, 117);
	assert_int_equal(info.flags, 0x6);
	assert_int_equal(info.nfrags, 117);

	assert_int_equal(smb_chunk_scrape_copy(&s.smb, 1, 0, dst, sizeof(dst), &info), 0);
	assert_false(info.complete);
	assert_int_equal(info.chunk_id, 1);
	assert_int_equal(info.writer_id, 1);
	assert_int_equal(info.count, 120); /* 121 counted, the last left out */
	assert_int_equal(info.flags, SPN_SMB_FIRST_CONTINUES);
	assert_int_equal(info.nfrags, 120);
	/* Scraping changed nothing in the SMB. */
	assert_int_equal(snap_word(&s, 1), 0x10000001);
	assert_int_equal(atomic_load(&spn_smb_chunk(&s.smb, 1, 1, 0)->packets),
			 spn_smb_packets(121, 1));

	snap_load(&later, "conn3_producer_fd0_snap02_c2s_off242.bin");
	assert_memory_equal(dst + 8, later.mem + SNAP_PAGE + 16, info.used);
	free(later.mem);

	assert_int_equal(smb_chunk_scrape_copy(&s.smb, 2, 0, dst, sizeof(dst), &info),
			 -ENODATA);
	assert_int_equal(smb_chunk_scrape_copy(&s.smb, 3, 0, dst, sizeof(dst), &info),
			 -ENOENT);
	free(s.mem);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_commit_snapshots),
		cmocka_unit_test(test_snapshot_surroundings),
		cmocka_unit_test(test_scrape_snapshot),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
