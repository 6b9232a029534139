// SPDX-License-Identifier: Apache-2.0
// Tests of the central trace buffers (src/core/tbuf*.c) against
// spec/trace-buffer.md §2-§5, §7 and the §9 conformance contract.
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "core/mem_hooks.h"
#include "core/tbuf_int.h"
#include "spindle/smb_abi.h"
#include "core_tbuf_util.h"

#define MAXPK 16384

/* Test state: one buffer, one session id map, the last read. */
static struct svc_tbuf *B;
static struct svc_seqids *IDS;
static struct svc_tbuf_out O;
static struct tpk PK[MAXPK];
static struct tcb CB;
static uint8_t PBUF[70000];

/* The eviction tests' buffer: 4 segments of 64 KiB with one lane (the
 * smallest segments that hold a 32 KiB page's chunk), and the filler that
 * makes a one-packet chunk a 16192-byte record, 4 to a segment. */
#define SMALL_BUF (256u * 1024u)
#define FILL4 16124u

static void setup_buf(uint64_t size, enum svc_tbuf_policy pol, unsigned lanes)
{
	assert_int_equal(svc_tbuf_create(size, pol, lanes, 0, &B), 0);
	assert_int_equal(svc_seqids_create(&IDS), 0);
	memset(&O, 0, sizeof(O));
}

/*
 * Each segment's pending count and bytes are those of its records with
 * fragments that are not DEAD: what recycling counts as overwritten when
 * nothing in the segment was read (no lane or reader may be running).
 */
static void check_pending(void)
{
	for (uint32_t s = 0; B && s < B->nseg; s++) {
		uint32_t used = atomic_load(&B->segs[s].used), off = 0;
		uint32_t n = 0, bytes = 0;

		while (used - off >= 48) {
			struct tb_rec *r = (struct tb_rec *)(B->segs[s].data +
							     off);
			uint32_t m = atomic_load(&r->meta);

			if (!(m & TB_M_DEAD) && tb_m_nfrags(m)) {
				n++;
				bytes += tb_stat_len(r->payload_len);
			}
			off += r->rec_len;
		}
		assert_int_equal(atomic_load(&B->segs[s].pending), n);
		assert_int_equal(atomic_load(&B->segs[s].pending_bytes), bytes);
	}
}

static int teardown(void **state)
{
	(void)state;
	check_pending();
	svc_tbuf_destroy(B);
	svc_seqids_destroy(IDS);
	svc_tbuf_out_free(&O);
	B = NULL;
	IDS = NULL;
	return 0;
}

/* Reads until drained; returns the packets (parsed into PK). */
static int read_all(void)
{
	bool drained = false;
	int n = 0, calls = 0;

	svc_tbuf_out_free(&O);
	while (!drained) {
		int k = svc_tbuf_read(B, IDS, &O, SIZE_MAX, &drained);

		assert_true(k >= 0);
		assert_true(++calls <= 2);	/* a second pass at most */
		n += k;
	}
	assert_int_equal(tparse(&O, PK, MAXPK), n);
	for (int i = 0; i < n; i++)
		assert_true(PK[i].trailer_ok);
	return n;
}

static struct svc_tbuf_stats stats(void)
{
	struct svc_tbuf_stats st;

	svc_tbuf_get_stats(B, &st);
	return st;
}

/* A chunk with `n` whole packets (seq, counters from c0), `filler` each. */
static void build_packets(uint32_t seq, uint32_t c0, int n, uint32_t filler)
{
	tcb_init(&CB);
	for (int i = 0; i < n; i++) {
		uint32_t len = tpkt(PBUF, seq, c0 + (uint32_t)i, filler);

		tcb_frag(&CB, PBUF, len, false);
	}
}

/* Commits a chunk of one packet (counter = id) of `filler` bytes. */
static int put1(unsigned lane, uint16_t p, uint16_t w, uint32_t id,
		uint32_t filler)
{
	build_packets(w, id, 1, filler);
	return tcommit(B, lane, p, w, id, &CB, 0, true);
}

/* put1() on lane 0 with svc_tbuf_chunk.defer: the record may stay
 * unpublished. */
static int put1_deferred(uint16_t p, uint16_t w, uint32_t id, uint32_t filler)
{
	build_packets(w, id, 1, filler);
	return tcommit_as(B, 0, p, w, id, &CB, 0, true, true);
}

static void test_create_args(void **state)
{
	struct svc_tbuf *b;

	(void)state;
	assert_int_equal(svc_tbuf_create(100, SVC_TBUF_RING, 1, 0, &b), -EINVAL);
	assert_null(b);
	assert_int_equal(svc_tbuf_create(1 << 20, 7, 1, 0, &b), -EINVAL);
	assert_int_equal(svc_tbuf_create(1 << 20, SVC_TBUF_RING, 0, 0, &b),
			 -EINVAL);
	assert_int_equal(svc_tbuf_create(1 << 20, SVC_TBUF_RING,
					 SVC_TBUF_MAX_LANES + 1, 0, &b), -EINVAL);
	assert_int_equal(svc_tbuf_create(1 << 20, SVC_TBUF_RING, 1, 0x80, &b),
			 -EINVAL);
	assert_int_equal(svc_tbuf_create(SVC_TBUF_MAX_SIZE + 1, SVC_TBUF_RING,
					 1, 0, &b), -EINVAL);
	assert_int_equal(svc_tbuf_create(1 << 20, SVC_TBUF_DISCARD, 2,
					 SVC_TBUF_PREFAULT, &b), 0);
	svc_tbuf_destroy(b);
	svc_tbuf_destroy(NULL);
}

static void test_geometry(void **state)
{
	static const struct {
		uint64_t size;
		unsigned lanes;
		uint32_t seg, nseg;
	} cases[] = {
		/* Small buffers: segments that hold the largest chunk the
		 * buffer can take (a 4 KiB page's in a 4 KiB buffer, a
		 * 16 KiB page's in 16 KiB, a 32 KiB page's from 64 KiB). */
		{ 4096, 1, 8192, 3 },
		{ 16384, 2, 32768, 4 },
		{ 65536, 1, 65536, 3 },
		{ 131072, 2, 65536, 4 },
		{ 262144, 1, 65536, 4 },
		/* Up to 256 KiB segments (at most 1/8 lost to a 32 KiB page's
		 * chunks) while no more than nlanes + 2 are needed. */
		{ 512 * 1024, 1, 131072, 4 },
		{ 1 << 20, 2, 262144, 4 },
		{ 1 << 20, 4, 131072, 8 },
		{ 1 << 20, 16, 65536, 18 },
		{ 2 << 20, 16, 131072, 18 },
		{ 4 << 20, 2, 262144, 16 },
		{ 64ull << 20, 4, 1 << 20, 64 },
		{ 1000 * 1024, 2, 131072, 8 },	/* not a power of two */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct svc_tbuf *b;

		assert_int_equal(svc_tbuf_create(cases[i].size, SVC_TBUF_RING,
						 cases[i].lanes, 0, &b), 0);
		assert_int_equal(svc_tbuf_segment_size(b), cases[i].seg);
		assert_int_equal(svc_tbuf_segment_count(b), cases[i].nseg);
		svc_tbuf_destroy(b);
	}
}

/* §2.1, §4, §5: packets in order with the trailer; the stats. */
static void test_basic_read(void **state)
{
	struct svc_tbuf_stats st;

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 2);
	for (uint32_t id = 0; id < 3; id++) {
		build_packets(7, id * 2, 2, 10);
		assert_int_equal(tcommit(B, 1, 3, 7, id, &CB, 0, true),
				 SVC_TBUF_STORED);
	}
	assert_int_equal(read_all(), 6);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(PK[i].counter, i);
		assert_int_equal(PK[i].seq, 7);
		assert_true(PK[i].filler_ok);
		assert_int_equal(PK[i].uid, 1003);
		assert_int_equal(PK[i].pid, 4003);
		assert_int_equal(PK[i].seqid, 2);
		/* V1: the first packet of a sequence is flagged. */
		assert_int_equal(PK[i].loss, i == 0 ? SVC_LOSS_PRESENT : 0);
	}
	/* Reads are destructive. */
	assert_int_equal(read_all(), 0);
	st = stats();
	assert_int_equal(st.buffer_size, 1 << 20);
	assert_int_equal(st.chunks_written, 3);
	assert_int_equal(st.chunks_read, 3);
	assert_int_equal(st.bytes_written, st.bytes_read);
	/* Counted as the reference stores them: 16-byte record headers. */
	assert_int_equal(st.bytes_written, 3 * tb_align16(16 + CB.len));
	assert_int_equal(st.chunks_overwritten + st.chunks_discarded +
			 st.abi_violations + st.invalid_packets, 0);
}

/*
 * Payloads are streamed into the buffer in whole cache lines with ordinary
 * stores for the partial lines at either end: every payload length from 1
 * to a few lines, at every 16-byte record alignment, reads back intact.
 */
static void test_payload_copy_sizes(void **state)
{
	const uint32_t nmax = 300;

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	for (uint32_t f = 0; f < nmax; f++)
		assert_int_equal(put1(0, 1, 5, f, f), SVC_TBUF_STORED);
	assert_int_equal(read_all(), (int)nmax);
	for (uint32_t i = 0; i < nmax; i++) {
		assert_int_equal(PK[i].counter, i);
		assert_int_equal(PK[i].filler, i);
		assert_true(PK[i].filler_ok);
	}
}

/* trace-config.md §4.1 example: uid 1000, sequence 2, pid 4242. */
static void test_trailer_bytes(void **state)
{
	static const uint8_t trailer[] = { 0x18, 0xe8, 0x07, 0x50, 0x02,
					   0xf8, 0x04, 0x92, 0x21 };
	struct svc_tbuf_chunk c = {
		.producer_id = 1, .writer_id = 1, .chunk_id = 0, .uid = 1000,
		.pid = 4242, .complete = true,
	};
	uint32_t len;

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	build_packets(1, 0, 2, 0);
	len = tpkt(PBUF, 1, 1, 0);
	c.nfrags = CB.nfrags;
	c.payload = CB.buf;
	c.len = CB.len;
	assert_int_equal(svc_tbuf_lane_commit(B, 0, &c), SVC_TBUF_STORED);
	assert_int_equal(read_all(), 2);
	assert_int_equal(PK[1].size, len + sizeof(trailer));
	assert_memory_equal(PK[1].bytes, PBUF, len);
	assert_memory_equal(PK[1].bytes + len, trailer, sizeof(trailer));
	/* The first packet ends with previous_packet_dropped = 1. */
	assert_int_equal(PK[0].bytes[PK[0].size - 3], 0xd0);
	assert_int_equal(PK[0].bytes[PK[0].size - 2], 0x02);
	assert_int_equal(PK[0].bytes[PK[0].size - 1], 0x01);
}

/* trace-config.md §4.2: ids from 2, per (producer, writer), stable. */
static void test_seqids(void **state)
{
	struct svc_tbuf_chunk c = { .producer_id = 9, .writer_id = 1,
				    .complete = true, .pid = 0, .uid = 5 };

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	assert_int_equal(put1(0, 2, 1, 0, 0), 0);
	assert_int_equal(put1(0, 1, 1, 0, 0), 0);
	assert_int_equal(read_all(), 2);
	/* Read in (producer, writer) order; ids in order of first need. */
	assert_int_equal(PK[0].seqid, 2);
	assert_int_equal(PK[1].seqid, 3);
	assert_int_equal(svc_seqids_get(IDS, 1, 1), 2);
	assert_int_equal(svc_seqids_get(IDS, 2, 1), 3);
	/* Unknown pid: no trusted_pid field. */
	build_packets(1, 0, 1, 0);
	c.nfrags = CB.nfrags;
	c.payload = CB.buf;
	c.len = CB.len;
	assert_int_equal(svc_tbuf_lane_commit(B, 0, &c), 0);
	assert_int_equal(put1(0, 1, 1, 1, 0), 0);
	assert_int_equal(read_all(), 2);
	assert_int_equal(PK[0].seqid, 2);
	assert_int_equal(PK[1].seqid, 4);
	assert_int_equal(PK[1].pid, 0);
	assert_int_equal(PK[1].uid, 5);
}

/* smb-abi.md §6.1: empty fragments are skipped; 1-byte sizes parse. */
static void test_empty_and_compact(void **state)
{
	uint32_t len;

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	tcb_init(&CB);
	len = tpkt(PBUF, 1, 0, 5);
	tcb_frag(&CB, PBUF, len, true);
	tcb_frag(&CB, PBUF, 0, false);	/* 80 80 80 00 */
	tcb_frag(&CB, PBUF, 0, true);	/* 00 */
	len = tpkt(PBUF, 1, 1, 5);
	tcb_frag(&CB, PBUF, len, true);
	tcb_pad(&CB, 4000);		/* unused tail */
	assert_int_equal(tcommit(B, 0, 1, 1, 0, &CB, 0, true), 0);
	assert_int_equal(read_all(), 2);
	assert_int_equal(PK[0].counter, 0);
	assert_int_equal(PK[1].counter, 1);
	assert_int_equal(stats().abi_violations, 0);
	assert_int_equal(stats().chunks_read, 1);
}

/*
 * Builds packet `counter` of sequence w with `filler` bytes, split into
 * pieces of the given sizes over consecutive chunks from id0 (§6.3). The
 * first chunk starts with one whole packet (counter - 1); the last piece
 * is followed by one whole packet (counter + 1). Returns the chunk count.
 */
static int commit_split(unsigned lane, uint16_t p, uint16_t w, uint32_t id0,
			uint32_t counter, uint32_t filler, const uint32_t *pieces,
			int npieces, uint8_t head_extra_flags)
{
	uint8_t pk[4096];
	uint32_t len = tpkt(pk, w, counter, filler), off = 0, whole;

	for (int i = 0; i < npieces; i++) {
		uint32_t n = i == npieces - 1 ? len - off : pieces[i];
		uint8_t flags = 0;

		tcb_init(&CB);
		if (i == 0) {
			whole = tpkt(PBUF, w, counter - 1, 3);
			tcb_frag(&CB, PBUF, whole, false);
		} else {
			flags |= SVC_CHUNK_FIRST_CONT;
		}
		tcb_frag(&CB, pk + off, n, false);
		off += n;
		if (i < npieces - 1)
			flags |= SVC_CHUNK_LAST_CONT;
		else {
			whole = tpkt(PBUF, w, counter + 1, 3);
			tcb_frag(&CB, PBUF, whole, false);
		}
		if (i == 0)
			flags |= head_extra_flags;
		assert_int_equal(tcommit(B, lane, p, w, id0 + (uint32_t)i, &CB,
					 flags, true), 0);
	}
	return npieces;
}

/* §4.3 reassembly over head, middle and final chunks. */
static void test_reassembly(void **state)
{
	static const uint32_t pieces[] = { 40, 100, 0 };

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	commit_split(0, 1, 1, 0, 11, 300, pieces, 3, 0);
	assert_int_equal(read_all(), 3);
	assert_int_equal(PK[0].counter, 10);
	assert_int_equal(PK[1].counter, 11);
	assert_int_equal(PK[1].filler, 300);
	assert_true(PK[1].filler_ok);
	assert_int_equal(PK[1].loss, 0);
	assert_int_equal(PK[2].counter, 12);
	assert_int_equal(stats().readaheads_succeeded, 1);
	assert_int_equal(stats().chunks_read, 3);
}

/* §4.2/§9.4: a missing continuation holds back only its own sequence. */
static void test_reassembly_waits(void **state)
{
	uint8_t pk[4096];
	uint32_t len;

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	len = tpkt(pk, 1, 11, 300);
	tcb_init(&CB);
	tcb_frag(&CB, pk, 40, false);
	assert_int_equal(tcommit(B, 0, 1, 1, 0, &CB, SVC_CHUNK_LAST_CONT, true),
			 0);
	tcb_init(&CB);
	tcb_frag(&CB, pk + 40, 100, false);
	assert_int_equal(tcommit(B, 0, 1, 1, 1, &CB,
				 SVC_CHUNK_FIRST_CONT | SVC_CHUNK_LAST_CONT,
				 true), 0);
	assert_int_equal(put1(0, 2, 1, 0, 10), 0);
	assert_int_equal(read_all(), 1);	/* the other sequence only */
	assert_int_equal(PK[0].seq, 1);
	assert_int_equal(PK[0].seqid, 2);	/* ids go by first need */
	assert_int_equal(stats().readaheads_failed, 1);
	assert_int_equal(put1(0, 2, 1, 1, 10), 0);
	assert_int_equal(read_all(), 1);
	assert_int_equal(PK[0].counter, 1);
	tcb_init(&CB);
	tcb_frag(&CB, pk + 140, len - 140, false);
	assert_int_equal(tcommit(B, 0, 1, 1, 2, &CB, SVC_CHUNK_FIRST_CONT,
				 true), 0);
	assert_int_equal(read_all(), 1);
	assert_int_equal(PK[0].counter, 11);
	assert_int_equal(PK[0].seqid, 3);
	assert_true(PK[0].filler_ok);
	assert_int_equal(PK[0].loss, SVC_LOSS_PRESENT); /* first of its seq */
	assert_int_equal(stats().readaheads_succeeded, 1);
	assert_int_equal(stats().chunks_read, 5);
}

/* §4.3: next chunk present but not a continuation -> drop, mark loss. */
static void test_broken_chain(void **state)
{
	uint8_t pk[512];
	uint32_t len;

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	assert_int_equal(put1(0, 1, 1, 0, 1), 0);
	assert_int_equal(read_all(), 1);
	len = tpkt(pk, 1, 1, 200);
	tcb_init(&CB);
	tcb_frag(&CB, pk, 50, false);
	assert_int_equal(tcommit(B, 0, 1, 1, 1, &CB, SVC_CHUNK_LAST_CONT, true),
			 0);
	build_packets(1, 2, 1, 4);	/* lacks FIRST_CONT */
	assert_int_equal(tcommit(B, 0, 1, 1, 2, &CB, 0, true), 0);
	assert_int_equal(read_all(), 1);
	assert_int_equal(PK[0].counter, 2);
	assert_int_equal(PK[0].loss, SVC_LOSS_PRESENT |
			 SVC_LOSS_REASSEMBLY_BROKEN_CHAIN);
	(void)len;
}

/* §4.3: a continuation whose beginning was never returned. */
static void test_orphan(void **state)
{
	uint32_t len;

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	assert_int_equal(put1(0, 1, 1, 0, 1), 0);
	assert_int_equal(read_all(), 1);
	tcb_init(&CB);
	tcb_frag(&CB, (const uint8_t *)"\x40\x05", 2, false); /* tail bytes */
	len = tpkt(PBUF, 1, 2, 3);
	tcb_frag(&CB, PBUF, len, false);
	assert_int_equal(tcommit(B, 0, 1, 1, 1, &CB, SVC_CHUNK_FIRST_CONT,
				 true), 0);
	assert_int_equal(read_all(), 1);
	assert_int_equal(PK[0].counter, 2);
	assert_int_equal(PK[0].loss, SVC_LOSS_PRESENT |
			 SVC_LOSS_ORPHAN_CONTINUATION);
	assert_int_equal(stats().chunks_read, 2);
}

/* §4.3, smb-abi.md §6.2: malformed fragments end the chunk. */
static void test_malformed(void **state)
{
	static const uint8_t bad_varint[] = { 0x80, 0x80, 0x80, 0x80, 0x01 };
	uint32_t len;

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	/* Chunk 0: packet, then a size running past the payload. */
	build_packets(1, 0, 1, 2);
	tcb_raw(&CB, "\x40\x01", 2);	/* size 64, 0 bytes follow */
	CB.nfrags++;
	assert_int_equal(tcommit(B, 0, 1, 1, 0, &CB, 0, true), 0);
	/* Chunk 1: packet, then a 5-byte varint. */
	build_packets(1, 1, 1, 2);
	tcb_raw(&CB, bad_varint, sizeof(bad_varint));
	CB.nfrags++;
	assert_int_equal(tcommit(B, 0, 1, 1, 1, &CB, 0, true), 0);
	/* Chunk 2: declares 3 fragments, holds 1. */
	build_packets(1, 2, 1, 2);
	CB.nfrags = 3;
	assert_int_equal(tcommit(B, 0, 1, 1, 2, &CB, 0, true), 0);
	/* Chunk 3: fine. */
	build_packets(1, 3, 1, 2);
	assert_int_equal(tcommit(B, 0, 1, 1, 3, &CB, 0, true), 0);
	assert_int_equal(read_all(), 4);
	for (int i = 0; i < 4; i++)
		assert_int_equal(PK[i].counter, i);
	assert_int_equal(PK[1].loss, SVC_LOSS_PRESENT | SVC_LOSS_CHUNK_CORRUPTED);
	assert_int_equal(PK[2].loss, SVC_LOSS_PRESENT | SVC_LOSS_CHUNK_CORRUPTED);
	assert_int_equal(PK[3].loss, SVC_LOSS_PRESENT | SVC_LOSS_CHUNK_CORRUPTED);
	assert_int_equal(stats().abi_violations, 3);
	assert_int_equal(stats().chunks_read, 4);
	(void)len;
}

/* smb-abi.md §6.1: the drop marker is writer packet loss. */
static void test_drop_marker(void **state)
{
	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	build_packets(1, 0, 1, 2);
	tcb_drop(&CB);
	assert_int_equal(tcommit(B, 0, 1, 1, 0, &CB, 0, true), 0);
	build_packets(1, 1, 1, 2);
	tcb_drop(&CB);
	CB.nfrags++;	/* a fragment after the marker is never read */
	assert_int_equal(tcommit(B, 0, 1, 1, 1, &CB, 0, true), 0);
	assert_int_equal(put1(0, 1, 1, 2, 2), 0);
	assert_int_equal(read_all(), 3);
	assert_int_equal(PK[1].counter, 1);
	assert_int_equal(PK[1].loss, SVC_LOSS_PRESENT | SVC_LOSS_WRITER_ABORT);
	assert_int_equal(PK[2].counter, 2);
	assert_int_equal(PK[2].loss, SVC_LOSS_PRESENT | SVC_LOSS_WRITER_ABORT);
	assert_int_equal(stats().trace_writer_packet_loss, 2);
	assert_int_equal(stats().abi_violations, 0);
}

/*
 * Chunk 0 of (1, 1): packet 0 whole, then the first `split` bytes of
 * packet 1 (filler 100) with packet bytes [40, 44) zeroed, NEEDS_PATCH.
 * Chunk 1: the rest of packet 1. Returns the payload offset of the zeroed
 * bytes and stores the right bytes in fix.
 */
static uint32_t CHUNK0_LEN;	/* payload bytes of chunk 0 */

static uint32_t commit_needs_patch(uint8_t fix[4], bool commit_tail)
{
	uint8_t pk[512];
	uint32_t len = tpkt(pk, 1, 1, 100), pos, whole;

	tcb_init(&CB);
	whole = tpkt(PBUF, 1, 0, 2);
	tcb_frag(&CB, PBUF, whole, false);
	pos = CB.len + 4 + 40;
	memcpy(fix, pk + 40, 4);
	memset(pk + 40, 0, 4);
	tcb_frag(&CB, pk, 60, false);
	memcpy(pk + 40, fix, 4);
	CHUNK0_LEN = CB.len;
	assert_int_equal(tcommit(B, 0, 1, 1, 0, &CB, SVC_CHUNK_LAST_CONT |
				 SVC_CHUNK_NEEDS_PATCH, true), 0);
	if (commit_tail) {
		tcb_init(&CB);
		tcb_frag(&CB, pk + 60, len - 60, false);
		assert_int_equal(tcommit(B, 0, 1, 1, 1, &CB,
					 SVC_CHUNK_FIRST_CONT, true), 0);
	}
	return pos;
}

/* §3: a chunk needing patches blocks only its own sequence. */
static void test_patches(void **state)
{
	struct svc_tbuf_patch p;
	uint8_t fix[4];

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	p.offset = commit_needs_patch(fix, true);
	memcpy(p.data, fix, 4);
	assert_int_equal(put1(0, 1, 2, 0, 1), 0);
	assert_int_equal(read_all(), 2);	/* packet 0 and (1, 2)'s */
	assert_int_equal(PK[0].counter, 0);
	assert_int_equal(PK[1].seq, 2);
	assert_int_equal(put1(0, 1, 2, 1, 1), 0);
	assert_int_equal(read_all(), 1);	/* other sequence unaffected */
	assert_int_equal(PK[0].seq, 2);
	assert_int_equal(svc_tbuf_lane_patch(B, 0, 1, 1, 0, &p, 1, true), 1);
	assert_int_equal(read_all(), 0);	/* more patches to come */
	assert_int_equal(svc_tbuf_lane_patch(B, 0, 1, 1, 0, NULL, 0, false), 0);
	assert_int_equal(read_all(), 1);
	assert_int_equal(PK[0].counter, 1);
	assert_true(PK[0].filler_ok);
	assert_int_equal(PK[0].loss, 0);
	assert_int_equal(stats().patches_succeeded, 1);
	assert_int_equal(stats().patches_failed, 0);
	assert_int_equal(stats().readaheads_succeeded, 1);
}

/*
 * Deferred commits (svc_tbuf_chunk.defer, as a CommitData stores its
 * chunks): readers see nothing of them until svc_tbuf_lane_publish(), or
 * until the lane publishes anything else: a plain commit, a patch, a stage,
 * or sealing the segment they are in. Then every one reads back whole.
 */
static void test_deferred_publish(void **state)
{
	uint32_t per_seg, id = 0, n;
	int got;

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	/* Publish. */
	assert_int_equal(put1_deferred(1, 1, id++, 100), SVC_TBUF_STORED);
	assert_int_equal(put1_deferred(1, 1, id++, 100), SVC_TBUF_STORED);
	assert_int_equal(stats().chunks_written, 2);
	assert_int_equal(read_all(), 0);
	svc_tbuf_lane_publish(B, 0);
	assert_int_equal(read_all(), 2);
	assert_int_equal(PK[0].counter, 0);
	assert_int_equal(PK[1].counter, 1);
	assert_true(PK[1].filler_ok);
	svc_tbuf_lane_publish(B, 0);	/* nothing waits: nothing happens */
	assert_int_equal(read_all(), 0);
	/* A plain commit publishes the deferred ones before it. */
	assert_int_equal(put1_deferred(1, 1, id++, 100), SVC_TBUF_STORED);
	assert_int_equal(put1(0, 1, 1, id++, 100), SVC_TBUF_STORED);
	assert_int_equal(read_all(), 2);
	assert_int_equal(PK[0].counter, 2);
	assert_int_equal(PK[1].counter, 3);
	/* So do a patch (even one that finds nothing) and a stage. */
	assert_int_equal(put1_deferred(1, 1, id++, 100), SVC_TBUF_STORED);
	assert_int_equal(svc_tbuf_lane_patch(B, 0, 1, 9, 0, NULL, 0, false),
			 -ENOENT);
	assert_int_equal(read_all(), 1);
	assert_int_equal(PK[0].counter, 4);
	assert_int_equal(put1_deferred(1, 1, id++, 100), SVC_TBUF_STORED);
	assert_non_null(svc_tbuf_lane_stage(B, 0, 100));
	assert_int_equal(read_all(), 1);
	assert_int_equal(PK[0].counter, 5);
	/* Sealing a segment publishes what it holds: of 2.5 segments' worth
	 * of deferred chunks, the first two segments read back before the
	 * publish, the rest after, all in order. */
	per_seg = svc_tbuf_segment_size(B) / 4096u;
	n = per_seg * 5 / 2;
	for (uint32_t i = 0; i < n; i++)
		assert_int_equal(put1_deferred(1, 1, id + i, 4000), SVC_TBUF_STORED);
	got = read_all();
	assert_true(got >= (int)(2 * per_seg - 2) && got < (int)n);
	for (int i = 0; i < got; i++)
		assert_int_equal(PK[i].counter, id + (uint32_t)i);
	svc_tbuf_lane_publish(B, 0);
	assert_int_equal(read_all(), (int)n - got);
	for (int i = 0; i < (int)n - got; i++) {
		assert_int_equal(PK[i].counter, id + (uint32_t)got + (uint32_t)i);
		assert_true(PK[i].filler_ok);
	}
	assert_int_equal(stats().chunks_overwritten + stats().abi_violations, 0);
}

/* §3: an out-of-range patch fails the batch; earlier ones stay. */
static void test_patch_out_of_range(void **state)
{
	struct svc_tbuf_patch p[3];
	uint8_t fix[4];
	uint32_t len0;

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	p[0].offset = commit_needs_patch(fix, true);
	memcpy(p[0].data, fix, 4);
	len0 = CHUNK0_LEN;
	p[1].offset = 0xFFFFFFFF;	/* offset + 4 overflows */
	p[2].offset = 0;		/* would break packet 0's size */
	memset(p[1].data, 0xEE, 4);
	memset(p[2].data, 0xEE, 4);
	assert_int_equal(svc_tbuf_lane_patch(B, 0, 1, 1, 0, p, 3, false),
			 -ERANGE);
	assert_int_equal(stats().patches_failed, 1);
	assert_int_equal(stats().patches_succeeded, 0);
	/* offset + 4 == payload size + 1: out of range as well. */
	p[1].offset = len0 - 3;
	assert_int_equal(svc_tbuf_lane_patch(B, 0, 1, 1, 0, &p[1], 1, false),
			 -ERANGE);
	assert_int_equal(stats().patches_failed, 2);
	assert_int_equal(read_all(), 1);	/* still needs patching */
	assert_int_equal(PK[0].counter, 0);	/* p[2] was not applied */
	assert_int_equal(svc_tbuf_lane_patch(B, 0, 1, 1, 0, p, 0, false), 0);
	assert_int_equal(read_all(), 1);
	assert_int_equal(PK[0].counter, 1);
	assert_true(PK[0].filler_ok);	/* p[0] stayed applied */
}

/* §1: a chunk no larger than the buffer is stored: a 16 KiB buffer keeps
 * the ~4 KiB chunks of 4 KiB pages (4 KiB segments held none of them:
 * every one was refused as an ABI violation). */
static void test_small_buffer_page_chunks(void **state)
{
	int n;

	(void)state;
	setup_buf(16384, SVC_TBUF_RING, 1);
	for (uint32_t id = 0; id < 10; id++)
		assert_int_equal(put1(0, 1, 1, id, 4040), SVC_TBUF_STORED);
	assert_true(CB.len > 4050 && CB.len <= 4088);
	n = read_all();
	assert_true(n >= 2);
	assert_int_equal(PK[n - 1].counter, 9);
	assert_int_equal(PK[n - 1].filler, 4040);
	assert_true(PK[n - 1].filler_ok);
	assert_int_equal(stats().abi_violations, 0);
	assert_int_equal(stats().chunks_written, 10);
}

/* §3: chunk gone (never stored, overwritten) -> patches_failed. */
static void test_patch_not_found(void **state)
{
	struct svc_tbuf_patch p = { .offset = 0 };
	struct svc_tbuf_patch many[SVC_TBUF_MAX_PATCHES + 1];

	(void)state;
	setup_buf(SMALL_BUF, SVC_TBUF_RING, 1);
	assert_int_equal(svc_tbuf_lane_patch(B, 0, 1, 1, 0, &p, 1, false),
			 -ENOENT);
	assert_int_equal(put1(0, 1, 1, 0, FILL4), 0);
	assert_int_equal(svc_tbuf_lane_patch(B, 0, 1, 2, 0, &p, 1, false),
			 -ENOENT);	/* other writer */
	assert_int_equal(svc_tbuf_lane_patch(B, 0, 2, 1, 0, &p, 1, false),
			 -ENOENT);	/* other producer */
	/* Overwrite chunk 0, then patch it late. */
	for (uint32_t id = 1; id < 20; id++)
		assert_int_equal(put1(0, 1, 1, id, FILL4), 0);
	assert_int_equal(svc_tbuf_lane_patch(B, 0, 1, 1, 0, &p, 1, false),
			 -ENOENT);
	assert_int_equal(stats().patches_failed, 4);
	memset(many, 0, sizeof(many));
	assert_int_equal(svc_tbuf_lane_patch(B, 0, 1, 1, 19, many,
					     SVC_TBUF_MAX_PATCHES + 1, false),
			 -E2BIG);
	assert_int_equal(svc_tbuf_lane_patch(B, 0, 1, 1, 19, many,
					     SVC_TBUF_MAX_PATCHES, false),
			 (int)SVC_TBUF_MAX_PATCHES);
	assert_int_equal(stats().patches_failed, 4);
	assert_int_equal(svc_tbuf_lane_patch(B, 1, 1, 1, 19, &p, 1, false),
			 -EINVAL);
}

/* §2.2/§2.3: scraped chunk stored short, re-commit replaces it. */
static void test_recommit_scraped(void **state)
{
	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	build_packets(1, 0, 3, 20);
	/* Scraped: count 3 with the last still being written. */
	assert_int_equal(tcommit(B, 0, 1, 1, 0, &CB, SVC_CHUNK_LAST_CONT |
				 SVC_CHUNK_NEEDS_PATCH, false), 0);
	assert_int_equal(put1(0, 1, 1, 1, 20), 0);	/* counter 1 == id */
	assert_int_equal(read_all(), 2);	/* fragments 0, 1 only */
	assert_int_equal(PK[0].counter, 0);
	assert_int_equal(PK[1].counter, 1);
	/* Never past an incomplete chunk; other sequences go on (§9.4). */
	assert_int_equal(put1(0, 1, 2, 0, 20), 0);
	assert_int_equal(read_all(), 1);
	assert_int_equal(PK[0].seq, 2);
	/* The real commit: 3 fragments (counters 0..2 -> 2 is new). */
	build_packets(1, 0, 3, 20);
	assert_int_equal(tcommit(B, 0, 1, 1, 0, &CB, 0, true),
			 SVC_TBUF_REWRITTEN);
	assert_int_equal(read_all(), 2);
	assert_int_equal(PK[0].counter, 2);
	assert_int_equal(PK[1].counter, 1);	/* chunk 1's packet */
	assert_int_equal(PK[0].loss, 0);
	assert_int_equal(stats().chunks_rewritten, 1);
	assert_int_equal(stats().chunks_written, 3);
	assert_int_equal(stats().chunks_read, 3);
	/* Committed again, identical: ignored silently. */
	assert_int_equal(tcommit(B, 0, 1, 1, 0, &CB, 0, true),
			 SVC_TBUF_IGNORED);
	assert_int_equal(stats().chunks_rewritten, 1);
	assert_int_equal(stats().abi_violations, 0);
	assert_int_equal(read_all(), 0);
}

/* §2.2: re-commits that would break the rules are ABI violations. */
static void test_recommit_rules(void **state)
{
	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	build_packets(1, 0, 3, 20);
	assert_int_equal(tcommit(B, 0, 1, 1, 0, &CB, 0, false), 0);
	/* Different size. */
	build_packets(1, 0, 3, 21);
	assert_int_equal(tcommit(B, 0, 1, 1, 0, &CB, 0, true), -EPROTO);
	/* Fewer fragments (stored 2). */
	build_packets(1, 0, 3, 20);
	CB.nfrags = 1;
	assert_int_equal(tcommit(B, 0, 1, 1, 0, &CB, 0, true), -EPROTO);
	/* Same count as stored: ignored. */
	CB.nfrags = 2;
	assert_int_equal(tcommit(B, 0, 1, 1, 0, &CB, 0, true),
			 SVC_TBUF_IGNORED);
	/* A flag removed. */
	build_packets(1, 5, 2, 20);
	assert_int_equal(tcommit(B, 0, 1, 1, 5, &CB, SVC_CHUNK_FIRST_CONT,
				 false), 0);
	assert_int_equal(tcommit(B, 0, 1, 1, 5, &CB, 0, true), -EPROTO);
	/* Chunk id + 1 already read. */
	build_packets(2, 0, 1, 20);
	assert_int_equal(tcommit(B, 0, 2, 1, 0, &CB, 0, true), 0);
	build_packets(2, 1, 1, 20);
	assert_int_equal(tcommit(B, 0, 2, 1, 1, &CB, 0, true), 0);
	assert_true(read_all() >= 2);
	build_packets(2, 0, 1, 20);
	CB.nfrags = 2;
	assert_int_equal(tcommit(B, 0, 2, 1, 0, &CB, 0, true), -EPROTO);
	assert_int_equal(stats().abi_violations, 4);
	assert_int_equal(stats().chunks_rewritten, 0);
}

/* Finds the live record of (p, w, id) by walking the segments. */
static struct tb_rec *find_rec(uint16_t p, uint16_t w, uint32_t id)
{
	for (uint32_t s = 0; s < B->nseg; s++) {
		uint32_t used = atomic_load(&B->segs[s].used), off = 0;

		while (used - off >= 48) {
			struct tb_rec *r = (struct tb_rec *)(B->segs[s].data +
							     off);

			if (r->producer_id == p && r->writer_id == w &&
			    r->chunk_id == id &&
			    !(atomic_load(&r->meta) & TB_M_DEAD))
				return r;
			off += r->rec_len;
		}
	}
	return NULL;
}

/* Re-commit and patch of a chunk the reader holds: copy on write. */
static void test_copy_on_write(void **state)
{
	struct svc_tbuf_patch p;
	struct tb_rec *r;
	uint8_t fix[4];

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	p.offset = commit_needs_patch(fix, true);
	memcpy(p.data, fix, 4);
	r = find_rec(1, 1, 0);
	assert_non_null(r);
	atomic_fetch_or(&r->meta, TB_M_READING);	/* as a reader would */
	assert_int_equal(svc_tbuf_lane_patch(B, 0, 1, 1, 0, &p, 1, false), 1);
	assert_true(atomic_load(&r->meta) & TB_M_DEAD);
	atomic_fetch_and(&r->meta, ~TB_M_READING);
	assert_ptr_not_equal(find_rec(1, 1, 0), r);
	assert_int_equal(stats().chunks_copied_on_write, 1);
	/* Scraped chunk 2 held by the reader while it is re-committed. */
	build_packets(1, 2, 2, 20);
	assert_int_equal(tcommit(B, 0, 1, 1, 2, &CB, 0, false), 0);
	r = find_rec(1, 1, 2);
	atomic_fetch_or(&r->meta, TB_M_READING);
	assert_int_equal(tcommit(B, 0, 1, 1, 2, &CB, 0, true),
			 SVC_TBUF_REWRITTEN);
	atomic_fetch_and(&r->meta, ~TB_M_READING);
	assert_int_equal(stats().chunks_copied_on_write, 2);
	assert_int_equal(read_all(), 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(PK[i].counter, i);
		assert_true(PK[i].filler_ok);
	}
	assert_int_equal(stats().chunks_read, 3);
	assert_int_equal(stats().chunks_written, 3);
	assert_int_equal(stats().chunks_dropped_late, 0);
}

/* Commits CB as chunk id of (1, w) through a stage: copied in place. */
static int scommit(uint16_t w, uint32_t id, uint8_t flags, bool complete)
{
	uint8_t *st = svc_tbuf_lane_stage(B, 0, CB.len);
	struct svc_tbuf_chunk ch = {
		.producer_id = 1, .writer_id = w, .chunk_id = id,
		.uid = 1001, .pid = 4001, .nfrags = CB.nfrags,
		.flags = flags, .complete = complete, .payload = st,
		.len = CB.len,
	};

	assert_non_null(st);
	memcpy(st, CB.buf, CB.len);
	return svc_tbuf_lane_commit(B, 0, &ch);
}

/* Chunks copied straight into their place (svc_tbuf_lane_stage). */
static void test_staged_commit(void **state)
{
	struct svc_tbuf_chunk ch = { .producer_id = 1, .writer_id = 3,
				     .nfrags = 1, .complete = true };
	uint8_t *a, *b;
	struct tb_rec *r;
	int n;

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	/* Many chunks of varying size: stages cross segment ends. */
	for (uint32_t id = 0; id < 400; id++) {
		build_packets(1, id * 4, 4, 50 + (id * 37) % 400);
		assert_int_equal(scommit(1, id, 0, true), SVC_TBUF_STORED);
	}
	n = read_all();
	assert_int_equal(n, 1600);
	assert_int_equal(stats().chunks_overwritten, 0);
	for (int i = 0; i < n; i++) {
		assert_int_equal(PK[i].counter, i);
		assert_true(PK[i].filler_ok);
	}
	/* A stage never committed is simply taken again. */
	a = svc_tbuf_lane_stage(B, 0, 100);
	b = svc_tbuf_lane_stage(B, 0, 100);
	assert_non_null(a);
	assert_ptr_equal(a, b);
	/* A payload longer than its stage is refused. */
	ch.payload = b;
	ch.len = 101;
	assert_int_equal(svc_tbuf_lane_commit(B, 0, &ch), -EINVAL);
	assert_null(svc_tbuf_lane_stage(B, 1, 100));
	assert_null(svc_tbuf_lane_stage(B, 0, SVC_TBUF_MAX_PAYLOAD + 1));
	/* Staged re-commit of a scraped chunk, in place. */
	build_packets(2, 0, 3, 20);
	assert_int_equal(tcommit(B, 0, 1, 2, 0, &CB, 0, false), 0);
	assert_int_equal(scommit(2, 0, 0, true), SVC_TBUF_REWRITTEN);
	/* ... and while the reader holds it: relocated into the stage. */
	build_packets(2, 3, 3, 20);
	assert_int_equal(tcommit(B, 0, 1, 2, 1, &CB, 0, false), 0);
	r = find_rec(1, 2, 1);
	assert_non_null(r);
	atomic_fetch_or(&r->meta, TB_M_READING);
	assert_int_equal(scommit(2, 1, 0, true), SVC_TBUF_REWRITTEN);
	atomic_fetch_and(&r->meta, ~TB_M_READING);
	assert_int_equal(stats().chunks_copied_on_write, 1);
	n = read_all();
	assert_int_equal(n, 6);
	for (int i = 0; i < n; i++) {
		assert_int_equal(PK[i].seq, 2);
		assert_int_equal(PK[i].counter, i);
		assert_true(PK[i].filler_ok);
	}
	assert_int_equal(stats().chunks_rewritten, 2);
	assert_int_equal(stats().abi_violations, 0);
}

/* DISCARD: no room to stage once full. */
static void test_staged_discard(void **state)
{
	(void)state;
	setup_buf(SMALL_BUF, SVC_TBUF_DISCARD, 1);
	for (uint32_t id = 0; id < 16; id++) {
		build_packets(1, id, 1, FILL4);
		assert_int_equal(scommit(1, id, 0, true), 0);
	}
	/* Claiming a segment for this one finds only unread data. */
	assert_null(svc_tbuf_lane_stage(B, 0, CB.len));
	assert_null(svc_tbuf_lane_stage(B, 0, 10));
	assert_int_equal(put1(0, 1, 1, 16, 10), -ENOSPC);
	assert_int_equal(read_all(), 16);
	assert_int_equal(stats().chunks_discarded, 1);
}

/* Recycling a segment nothing was read from counts its records with
 * fragments (kept per segment, no walk), including one that got its first
 * fragment from a re-commit and none that never had one. */
static void test_pending_counts(void **state)
{
	struct svc_tbuf_stats st;
	uint32_t rec2;

	(void)state;
	setup_buf(65536, SVC_TBUF_RING, 1);
	build_packets(1, 0, 1, 20);
	/* Scraped with its only fragment in progress: stored with 0. */
	assert_int_equal(tcommit(B, 0, 1, 1, 0, &CB, 0, false), 0);
	assert_int_equal(tcommit(B, 0, 1, 1, 0, &CB, 0, true),
			 SVC_TBUF_REWRITTEN);
	build_packets(2, 0, 1, 20);
	assert_int_equal(tcommit(B, 0, 1, 2, 0, &CB, 0, false), 0);
	rec2 = tb_stat_len(find_rec(1, 2, 0)->payload_len);
	check_pending();
	for (uint32_t id = 1; id < 200; id++)
		assert_int_equal(put1(0, 1, 3, id, 1000), 0);
	check_pending();
	assert_null(find_rec(1, 1, 0));
	assert_null(find_rec(1, 2, 0));
	assert_true(read_all() > 0);
	st = stats();
	assert_int_equal(st.chunks_written, 201);
	assert_true(st.chunks_overwritten > 0);
	/* Everything with a fragment was read or overwritten, once. */
	assert_int_equal(st.chunks_written - 1,
			 st.chunks_read + st.chunks_overwritten);
	assert_int_equal(st.bytes_written - rec2,
			 st.bytes_read + st.bytes_overwritten);
}

/* §2.1, §4.4: out-of-order ids are stored and read in id order. */
static void test_out_of_order(void **state)
{
	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	assert_int_equal(put1(0, 1, 1, 5, 1), 0);
	assert_int_equal(put1(0, 1, 1, 7, 1), 0);
	assert_int_equal(read_all(), 1);	/* waits at the gap */
	assert_int_equal(PK[0].counter, 5);
	assert_int_equal(read_all(), 0);
	assert_int_equal(put1(0, 1, 1, 6, 1), 0);
	assert_int_equal(stats().chunks_committed_out_of_order, 1);
	assert_int_equal(read_all(), 2);
	assert_int_equal(PK[0].counter, 6);
	assert_int_equal(PK[1].counter, 7);
	assert_int_equal(PK[0].loss, 0);
	assert_int_equal(PK[1].loss, 0);
}

/* §2.1: modular chunk ids across the 2^32 wrap. */
static void test_chunk_id_wrap(void **state)
{
	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	assert_int_equal(put1(0, 1, 1, 0xFFFFFFFE, 1), 0);
	assert_int_equal(put1(0, 1, 1, 0xFFFFFFFF, 1), 0);
	assert_int_equal(put1(0, 1, 1, 0, 1), 0);
	assert_int_equal(put1(0, 1, 1, 2, 1), 0);
	assert_int_equal(put1(0, 1, 1, 1, 1), 0);
	assert_int_equal(stats().chunks_committed_out_of_order, 1);
	assert_int_equal(read_all(), 5);
	assert_int_equal(PK[0].counter, 0xFFFFFFFE);
	assert_int_equal(PK[1].counter, 0xFFFFFFFF);
	assert_int_equal(PK[2].counter, 0);
	assert_int_equal(PK[3].counter, 1);
	assert_int_equal(PK[4].counter, 2);
	for (int i = 1; i < 5; i++)
		assert_int_equal(PK[i].loss, 0);
}

/* §2.1 ring: oldest evicted, counted; reading resumes with the flag. */
static void test_ring_overwrite(void **state)
{
	struct svc_tbuf_stats st;
	uint32_t rec = 0;
	int n;

	(void)state;
	setup_buf(SMALL_BUF, SVC_TBUF_RING, 1);	/* 4 x 64 KiB */
	for (uint32_t id = 0; id < 40; id++)
		assert_int_equal(put1(0, 1, 1, id, FILL4), 0);
	rec = tb_align16(48 + CB.len);
	assert_int_equal(rec, 16192);	/* 4 records per segment */
	st = stats();
	assert_int_equal(st.chunks_written, 40);
	assert_int_equal(st.chunks_overwritten, 24);
	assert_int_equal(st.bytes_overwritten, 24 * tb_stat_len(CB.len));
	assert_int_equal(st.write_wrap_count, 2);
	assert_int_equal(st.padding_bytes_written, 9 * (65536 - 4 * rec));
	assert_int_equal(st.padding_bytes_cleared, 6 * (65536 - 4 * rec));
	n = read_all();
	assert_int_equal(n, 16);
	for (int i = 0; i < n; i++) {
		assert_int_equal(PK[i].counter, 24 + i);
		assert_int_equal(PK[i].loss, i ? 0 : SVC_LOSS_PRESENT);
	}
	/* Evicting chunks already read is no loss. */
	for (uint32_t id = 40; id < 48; id++)
		assert_int_equal(put1(0, 1, 1, id, FILL4), 0);
	assert_int_equal(stats().chunks_overwritten, 24);
	assert_int_equal(read_all(), 8);
	assert_int_equal(PK[0].counter, 40);
	assert_int_equal(PK[0].loss, 0);
	/* Overwrite while partly read: the reader knew those chunks. */
	for (uint32_t id = 48; id < 52; id++)
		assert_int_equal(put1(0, 1, 1, id, FILL4), 0);
	{
		bool drained;

		svc_tbuf_out_free(&O);
		assert_int_equal(svc_tbuf_read(B, IDS, &O, 1, &drained), 1);
		assert_false(drained);
	}
	/* 52..67 fill segments 1, 2, 3, then 0: 49..51 are evicted. */
	for (uint32_t id = 52; id < 68; id++)
		assert_int_equal(put1(0, 1, 1, id, FILL4), 0);
	assert_int_equal(stats().chunks_overwritten, 27);
	n = read_all();
	assert_int_equal(n, 16);
	assert_int_equal(PK[0].counter, 52);
	assert_int_equal(PK[0].loss, SVC_LOSS_PRESENT | SVC_LOSS_OVERWRITE);
	for (int i = 1; i < n; i++) {
		assert_int_equal(PK[i].counter, PK[i - 1].counter + 1);
		assert_int_equal(PK[i].loss, 0);
	}
	st = stats();
	assert_int_equal(st.chunks_written,
			 st.chunks_read + st.chunks_overwritten);
	assert_int_equal(st.bytes_written, st.bytes_read + st.bytes_overwritten);
}

/* §4.4 V1: a gap waits while the chunk before it is stored. */
static void test_gap_given_up(void **state)
{
	uint32_t b = 0;
	int n;

	(void)state;
	setup_buf(SMALL_BUF, SVC_TBUF_RING, 1);	/* 4 x 4 records */
	assert_int_equal(put1(0, 1, 1, 1, FILL4), 0);	/* seg 0 */
	assert_int_equal(read_all(), 1);
	for (; b < 3; b++)
		assert_int_equal(put1(0, 1, 2, b, FILL4), 0);
	assert_int_equal(put1(0, 1, 1, 3, FILL4), 0);	/* seg 1; 2 missing */
	for (; b < 6; b++)
		assert_int_equal(put1(0, 1, 2, b, FILL4), 0);
	n = read_all();
	assert_int_equal(n, 6);		/* writer 2 only */
	for (int i = 0; i < n; i++)
		assert_int_equal(PK[i].seq, 2);
	for (; b < 14; b++)		/* segs 2, 3 */
		assert_int_equal(put1(0, 1, 2, b, FILL4), 0);
	assert_int_equal(read_all(), 8);
	assert_int_equal(put1(0, 1, 2, b++, FILL4), 0);	/* recycles seg 0 */
	n = read_all();
	assert_int_equal(n, 2);
	assert_int_equal(PK[0].seq, 1);
	assert_int_equal(PK[0].counter, 3);
	assert_int_equal(PK[0].loss, SVC_LOSS_PRESENT | SVC_LOSS_READ_GAP);
	assert_int_equal(PK[1].seq, 2);
	assert_int_equal(PK[1].loss, 0);
	assert_int_equal(stats().chunks_overwritten, 0);
	/* Chunk 2 arriving now is too late: dropped, counted. */
	assert_int_equal(put1(0, 1, 1, 2, 10), 0);
	assert_int_equal(read_all(), 0);
	assert_int_equal(stats().chunks_dropped_late, 1);
}

/* §2.1 DISCARD (V1): fills up, then refuses new chunks for good. */
static void test_discard(void **state)
{
	struct svc_tbuf_stats st;

	(void)state;
	setup_buf(SMALL_BUF, SVC_TBUF_DISCARD, 1);
	/* Read as it goes: it behaves like a ring buffer. */
	for (uint32_t id = 0; id < 40; id++) {
		assert_int_equal(put1(0, 1, 1, id, FILL4), 0);
		assert_int_equal(read_all(), 1);
	}
	assert_int_equal(stats().chunks_discarded, 0);
	/* Not read: 16 records fit, then the next write would evict. */
	for (uint32_t id = 40; id < 56; id++)
		assert_int_equal(put1(0, 1, 1, id, FILL4), 0);
	assert_int_equal(put1(0, 1, 1, 56, FILL4), -ENOSPC);
	assert_int_equal(put1(0, 1, 2, 0, 10), -ENOSPC);
	st = stats();
	assert_int_equal(st.chunks_discarded, 2);
	assert_int_equal(st.chunks_overwritten, 0);
	assert_int_equal(read_all(), 16);
	assert_int_equal(PK[0].counter, 40);
	assert_int_equal(PK[15].counter, 55);
	assert_int_equal(PK[0].loss, 0);
	/* V1: even after the reader caught up. */
	assert_int_equal(put1(0, 1, 1, 57, 10), -ENOSPC);
	assert_int_equal(stats().chunks_discarded, 3);
	/* Re-commits of stored chunks are not new chunks. */
	build_packets(1, 55, 1, FILL4);
	assert_int_equal(tcommit(B, 0, 1, 1, 55, &CB, 0, true),
			 SVC_TBUF_IGNORED);
}

/* §5.1: invalid packets are dropped and counted. */
static void test_validation(void **state)
{
	static const struct {
		const char *bytes;
		uint32_t len;
	} bad[] = {
		{ "\x18\x01", 2 },		/* trusted_uid (3) */
		{ "\x50\x01", 2 },		/* trusted_packet_sequence_id */
		{ "\xa2\x02\x01\x00", 4 },	/* sync marker (36) */
		{ "\xf8\x04\x01", 3 },		/* trusted_pid (79) */
		{ "\xaa\x08\x00", 3 },		/* 133 */
		{ "\x0b\x01", 2 },		/* wire type 3 */
		{ "\x0c", 1 },			/* wire type 4 */
		{ "\x0e\x01", 2 },		/* wire type 6 */
		{ "\x12\x05\x01", 3 },		/* length past the end */
		{ "\x08", 1 },			/* ends inside a field */
		{ "\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 12 },
		{ "\x09\x01\x02", 3 },		/* short fixed64 */
		{ "\x00\x01", 2 },		/* field 0 */
		{ "\x12\x80\x80\x80\x80\x01", 6 }, /* length > 268435455 */
	};
	/* field 1 varint, 42 varint (the producer's own), 5 fixed64,
	 * 4 fixed32. */
	static const char good[] = "\x08\x01\xd0\x02\x01\x29\x01\x02\x03\x04"
				   "\x05\x06\x07\x08\x25\x01\x02\x03\x04";
	size_t nbad = sizeof(bad) / sizeof(bad[0]);

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	tcb_init(&CB);
	for (size_t i = 0; i < nbad; i++) {
		tcb_frag(&CB, (const uint8_t *)bad[i].bytes, bad[i].len, false);
		tcb_frag(&CB, (const uint8_t *)good, sizeof(good) - 1, false);
	}
	assert_int_equal(tcommit(B, 0, 1, 1, 0, &CB, 0, true), 0);
	assert_int_equal(read_all(), (int)nbad);
	assert_int_equal(stats().invalid_packets, nbad);
	for (size_t i = 0; i < nbad; i++) {
		/* The producer's own field 42 (1) comes first; the service's
		 * value (a drop before it) is appended and wins. */
		assert_int_equal(PK[i].loss, SVC_LOSS_PRESENT);
		/* uid 1001: 3 bytes, seq 2: 2, pid 4001: 4, loss: 3. */
		assert_int_equal(PK[i].size, sizeof(good) - 1 + 3 + 2 + 4 + 3);
	}
}

/* §5.3: batches stop at the limit, finishing the current packet. */
static void test_read_limit(void **state)
{
	struct svc_tbuf_out all = { 0 };
	uint32_t next = 0;
	int batches = 0;

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 2);
	for (uint32_t id = 0; id < 20; id++) {
		build_packets(1, id * 5, 5, 90);
		assert_int_equal(tcommit(B, 0, 1, 1, id, &CB, 0, true), 0);
		build_packets(2, id * 5, 5, 90);
		assert_int_equal(tcommit(B, 1, 2, 2, id, &CB, 0, true), 0);
	}
	for (;;) {
		bool drained;
		int n;

		svc_tbuf_out_free(&O);
		n = svc_tbuf_read(B, IDS, &O, 1000, &drained);
		assert_true(n >= 0);
		assert_true(O.len < 1000 + 200);
		if (!drained)
			assert_true(O.len >= 1000);
		all.data = realloc(all.data, all.len + O.len + 1);
		assert_non_null(all.data);
		if (O.len)
			memcpy(all.data + all.len, O.data, O.len);
		all.len += O.len;
		batches++;
		if (drained)
			break;
	}
	assert_true(batches > 20);
	svc_tbuf_out_free(&O);
	O = all;
	assert_int_equal(tparse(&O, PK, MAXPK), 200);
	for (int i = 0; i < 200; i++) {
		uint32_t seq = PK[i].seq;
		int prev = -1;

		for (int j = i - 1; j >= 0; j--)
			if (PK[j].seq == seq) {
				prev = j;
				break;
			}
		if (prev >= 0)
			assert_int_equal(PK[i].counter, PK[prev].counter + 1);
		else
			assert_int_equal(PK[i].counter, 0);
		next++;
	}
	assert_int_equal(next, 200);
}

/* §7 / §2.1: bad ids and oversized chunks are ABI violations. */
static void test_abi_rejects(void **state)
{
	struct svc_tbuf_chunk c = { .producer_id = 1, .writer_id = 1,
				    .complete = true };
	static uint8_t big[65536];

	(void)state;
	setup_buf(65536, SVC_TBUF_RING, 1);
	c.writer_id = 0;
	assert_int_equal(svc_tbuf_lane_commit(B, 0, &c), -EINVAL);
	c.writer_id = 32768;
	assert_int_equal(svc_tbuf_lane_commit(B, 0, &c), -EINVAL);
	c.writer_id = 1;
	c.producer_id = 0;
	assert_int_equal(svc_tbuf_lane_commit(B, 0, &c), -EINVAL);
	c.producer_id = 1;
	c.nfrags = 1024;
	assert_int_equal(svc_tbuf_lane_commit(B, 0, &c), -EINVAL);
	c.nfrags = 0;
	c.payload = big;
	c.len = 65536 - 47;	/* bigger than a 64 KiB segment with its header */
	assert_int_equal(svc_tbuf_lane_commit(B, 0, &c), -E2BIG);
	c.len = SVC_TBUF_MAX_PAYLOAD + 1;
	assert_int_equal(svc_tbuf_lane_commit(B, 0, &c), -E2BIG);
	assert_int_equal(stats().abi_violations, 6);
	assert_int_equal(svc_tbuf_lane_commit(B, 1, &c), -EINVAL);
	assert_int_equal(stats().abi_violations, 6);
	c.len = 65536 - 48;	/* exactly one segment */
	assert_int_equal(svc_tbuf_lane_commit(B, 0, &c), 0);
}

/* Payload bytes of the Div1 chunk (the whole page) of `page`-byte pages. */
static uint32_t div1_payload(uint32_t page)
{
	return spn_smb_chunk_size_for(page, SPN_SMB_PAGE_DIV1) -
	       SPN_SMB_CHUNK_HEADER_SIZE;
}

/* §1: a buffer takes every chunk no bigger than itself, up to the Div1
 * chunk of a 32 KiB page (traced_probes' pages), with 1 lane and with 2;
 * a chunk of the next page size up is bigger than a small buffer and is
 * refused. */
static void test_small_buffers_take_big_chunks(void **state)
{
	static const struct {
		uint64_t size;
		uint32_t page;	/* largest page whose Div1 chunk fits */
	} cases[] = {
		{ 4096, 4096 },	  { 8192, 8192 },   { 16384, 16384 },
		{ 32768, 32768 }, { 65536, 32768 }, { 131072, 32768 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (unsigned lanes = 1; lanes <= 2; lanes++) {
			struct svc_tbuf_chunk c = {
				.producer_id = 1, .writer_id = 1, .complete = true,
				.payload = PBUF, .len = div1_payload(cases[i].page),
			};
			struct svc_tbuf *b;

			assert_int_equal(svc_tbuf_create(cases[i].size, SVC_TBUF_RING,
							 lanes, 0, &b), 0);
			assert_int_equal(svc_tbuf_lane_commit(b, lanes - 1, &c), 0);
			if (cases[i].page < 32768) {
				c.chunk_id = 1;
				c.len = div1_payload(cases[i].page * 2);
				assert_int_equal(svc_tbuf_lane_commit(b, 0, &c), -E2BIG);
			}
			svc_tbuf_destroy(b);
		}
	}
}

/* A DISCARD buffer of 1 MiB with 2 lanes holds 28 chunks of 32 KiB pages
 * (Perfetto's traced: 32) before it discards: 64 KiB segments held one
 * 32800-byte record each, 16 in all. */
static void test_big_chunks_capacity(void **state)
{
	struct svc_tbuf_chunk c = {
		.producer_id = 1, .writer_id = 1, .complete = true, .payload = PBUF,
		.len = div1_payload(32768),
		.nfrags = 1,	/* unread: DISCARD keeps it */
	};
	struct svc_tbuf_stats st;
	uint32_t id = 0;

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_DISCARD, 2);
	for (; id < 64; id++) {
		c.chunk_id = id;
		if (svc_tbuf_lane_commit(B, id & 1, &c) != 0)
			break;
	}
	assert_int_equal(id, 28);
	svc_tbuf_get_stats(B, &st);
	assert_int_equal(st.chunks_written, 28);
	assert_int_equal(st.chunks_discarded, 1);
	/* A page's chunk counts for the page in the byte stats, as traced
	 * counts it (its 16-byte record header, not our 48). */
	assert_int_equal(st.bytes_written, 28 * 32768);
}

/* The byte stats count a 4 KiB page's chunk as 4096 bytes, as in the v14
 * reference trace (session1: 34 chunks, bytes_written 139264). */
static void test_stat_bytes_per_page(void **state)
{
	struct svc_tbuf_chunk c = {
		.producer_id = 1, .writer_id = 1, .complete = true, .payload = PBUF,
		.len = div1_payload(4096), .nfrags = 1,
	};
	struct svc_tbuf_stats st;

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	for (uint32_t id = 0; id < 34; id++) {
		c.chunk_id = id;
		assert_int_equal(svc_tbuf_lane_commit(B, 0, &c), 0);
	}
	svc_tbuf_get_stats(B, &st);
	assert_int_equal(st.bytes_written, 139264);
}

/* Histogram of used payload bytes per writer (§4.5). */
static int collect_writer(void *ctx, const struct svc_tbuf_writer_stats *w)
{
	struct svc_tbuf_writer_stats *out = ctx;

	out[w->writer_id] = *w;
	return 0;
}

static void test_writer_stats(void **state)
{
	struct svc_tbuf_writer_stats w[4];
	uint32_t small, mid;

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);
	build_packets(1, 0, 1, 0);
	small = CB.len;
	assert_true(small <= 8);
	assert_int_equal(tcommit(B, 0, 1, 1, 0, &CB, 0, true), 0);
	build_packets(1, 1, 1, 80);
	mid = CB.len;
	tcb_pad(&CB, 1000);	/* unused tail is not "used" */
	assert_int_equal(tcommit(B, 0, 1, 1, 1, &CB, 0, true), 0);
	build_packets(2, 0, 2, 10000);
	assert_int_equal(tcommit(B, 0, 1, 2, 0, &CB, 0, true), 0);
	assert_int_equal(read_all(), 4);
	memset(w, 0, sizeof(w));
	assert_int_equal(svc_tbuf_for_each_writer(B, IDS, collect_writer, w), 0);
	assert_int_equal(w[1].sequence_id, 2);
	assert_int_equal(w[1].counts[0], 1);
	assert_int_equal(w[1].sums[0], small);
	assert_int_equal(w[1].counts[2], 1);	/* 32 < mid <= 128 */
	assert_int_equal(w[1].sums[2], mid);
	assert_int_equal(w[2].sequence_id, 3);
	assert_int_equal(w[2].counts[10], 1);	/* > 16384 */
	assert_int_equal(w[2].sums[10], CB.len);
}

/* Shards: sequences on different lanes are merged by the reader. */
static void test_two_lanes(void **state)
{
	int n, c[3] = { 0 };

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 2);
	for (uint32_t id = 0; id < 50; id++) {
		assert_int_equal(put1(0, 1, 1, id, 100), 0);
		assert_int_equal(put1(1, 2, 2, id, 100), 0);
	}
	n = read_all();
	assert_int_equal(n, 100);
	for (int i = 0; i < n; i++) {
		assert_int_equal(PK[i].counter, c[PK[i].seq]++);
		assert_int_equal(PK[i].uid, 1000 + PK[i].seq);
	}
	assert_int_equal(c[1], 50);
	assert_int_equal(c[2], 50);
}

/* ---- Allocation failures ----------------------------------------------- */

static long fail_at = -1;	/* allocation number that fails, -1 none */
static bool fail_all;		/* every allocation fails */
static long nallocs;		/* allocations attempted */
static long outstanding;	/* allocations not yet freed */

static bool fail_now(void)
{
	return fail_all || (fail_at >= 0 && nallocs++ == fail_at);
}

static void *h_malloc(size_t n)
{
	void *p;

	if (fail_now())
		return NULL;
	p = malloc(n);
	if (p)
		outstanding++;
	return p;
}

static void *h_calloc(size_t n, size_t s)
{
	void *p;

	if (fail_now())
		return NULL;
	p = calloc(n, s);
	if (p)
		outstanding++;
	return p;
}

static void *h_realloc(void *old, size_t n)
{
	void *p;

	if (fail_now())
		return NULL;
	p = realloc(old, n);
	if (p && !old)
		outstanding++;
	return p;
}

static void h_free(void *p)
{
	if (p)
		outstanding--;
	free(p);
}

static void *h_mmap(void *a, size_t l, int pr, int f, int fd, off_t o)
{
	void *p;

	if (fail_now())
		return MAP_FAILED;
	p = mmap(a, l, pr, f, fd, o);
	if (p != MAP_FAILED)
		outstanding++;
	return p;
}

static int h_munmap(void *a, size_t l)
{
	outstanding--;
	return munmap(a, l);
}

static const struct svc_mem_hooks counting_hooks = {
	.malloc = h_malloc, .calloc = h_calloc, .realloc = h_realloc,
	.free = h_free, .mmap = h_mmap, .munmap = h_munmap,
};

static void hooks_on(long at)
{
	fail_at = at;
	nallocs = 0;
	svc_mem_set_hooks(&counting_hooks);
}

static void test_alloc_fail_create(void **state)
{
	long at;

	(void)state;
	for (at = 0;; at++) {
		struct svc_tbuf *b;
		int rc;

		outstanding = 0;
		hooks_on(at);
		rc = svc_tbuf_create(4 << 20, SVC_TBUF_RING, 4, 0, &b);
		if (rc == 0) {
			svc_tbuf_destroy(b);
			assert_int_equal(outstanding, 0);
			break;
		}
		assert_int_equal(rc, -ENOMEM);
		assert_null(b);
		assert_int_equal(outstanding, 0);
	}
	svc_mem_set_hooks(NULL);
	assert_true(at >= 6);
}

/* Failures inside commit and read lose nothing and duplicate nothing. */
static void test_alloc_fail_read(void **state)
{
	static const uint32_t pieces[] = { 30, 30, 0 };
	bool hit = true;
	long at;

	(void)state;
	for (at = 0; hit; at++) {
		uint32_t got[4] = { 0 };
		int n, tries = 0;

		outstanding = 0;
		hooks_on(-1);
		setup_buf(1 << 20, SVC_TBUF_RING, 1);
		fail_at = at;	/* the at-th allocation from here fails */
		nallocs = 0;
		for (uint16_t w = 1; w <= 3; w++) {
			build_packets(w, 0, 4, 50);
			assert_int_equal(tcommit(B, 0, 1, w, 0, &CB, 0, true),
					 0);
			commit_split(0, 1, w, 1, 5, 200, pieces, 3, 0);
		}
		for (;;) {
			bool drained = false;

			n = svc_tbuf_read(B, IDS, &O, SIZE_MAX, &drained);
			assert_true(n >= 0 || n == -ENOMEM);
			if (n < 0)
				assert_false(drained);
			if (drained)
				break;
			assert_true(++tries < 10);
		}
		hit = nallocs > at;	/* the failure happened: go on */
		n = tparse(&O, PK, MAXPK);
		assert_int_equal(n, 3 * 7);	/* counters 0..6 per writer */
		for (int i = 0; i < n; i++) {
			uint32_t w = PK[i].seq;

			assert_true(w >= 1 && w <= 3);
			assert_int_equal(PK[i].counter, got[w]);
			assert_true(PK[i].filler_ok);
			assert_int_equal(PK[i].loss,
					 got[w] == 0 ? SVC_LOSS_PRESENT : 0);
			got[w]++;
		}
		teardown(NULL);
		svc_mem_set_hooks(NULL);
		assert_int_equal(outstanding, 0);
	}
	assert_true(at > 8);
}

/* The lane index is swept as the buffer laps; lookups keep working. */
static void test_index_sweep(void **state)
{
	struct svc_tbuf_patch p = { .offset = 0 };
	uint32_t id, rewritten = 0;

	(void)state;
	setup_buf(1 << 20, SVC_TBUF_RING, 1);	/* ~4000 records of 256 B */
	for (id = 0; id < 30000; id++) {
		build_packets(1, id, 1, 180);
		if (id % 1000 == 999) {
			CB.nfrags++;	/* scraped while writing one more */
			assert_int_equal(tcommit(B, 0, 1, 1, id, &CB, 0, false),
					 0);
			assert_int_equal(tcommit(B, 0, 1, 1, id, &CB, 0, true),
					 SVC_TBUF_REWRITTEN);
			rewritten++;
		} else {
			assert_int_equal(tcommit(B, 0, 1, 1, id, &CB, 0, true),
					 SVC_TBUF_STORED);
		}
		/* Bounded by the records the buffer can hold, not by the
		 * chunks ever written. */
		assert_true(ck_ht_count(&B->lanes[0].chunks) < 4 * 4096);
		assert_true(B->lanes[0].log_n <= 4 * 4096);
	}
	assert_int_equal(stats().chunks_rewritten, rewritten);
	assert_int_equal(stats().index_failures, 0);
	assert_int_equal(svc_tbuf_lane_patch(B, 0, 1, 1, id - 1, &p, 1, false),
			 1);
	/* Not the sequence's last chunk: found through the ck_ht. */
	assert_int_equal(svc_tbuf_lane_patch(B, 0, 1, 1, id - 3, &p, 1, false),
			 1);
	assert_int_equal(svc_tbuf_lane_patch(B, 0, 1, 1, id - 5000, &p, 1,
					     false), -ENOENT);
	build_packets(1, id - 2, 1, 180);
	assert_int_equal(tcommit(B, 0, 1, 1, id - 2, &CB, 0, true),
			 SVC_TBUF_IGNORED);
}

/* With every allocation failing, lanes still store chunks. */
static void test_commit_without_memory(void **state)
{
	int n;

	(void)state;
	setup_buf(4 << 20, SVC_TBUF_RING, 1);	/* room for all of it */
	outstanding = 0;
	hooks_on(-1);
	fail_all = true;
	for (uint32_t id = 0; id < 3000; id++)
		for (uint16_t w = 1; w <= 4; w++)
			assert_int_equal(put1(0, 1, w, id, 100), 0);
	fail_all = false;
	svc_mem_set_hooks(NULL);
	assert_int_equal(outstanding, 0);
	n = read_all();
	assert_int_equal(n, 12000);
	assert_int_equal(stats().chunks_overwritten, 0);
	for (int i = 0; i < n; i++)
		assert_int_equal(PK[i].loss,
				 PK[i].counter ? 0 : SVC_LOSS_PRESENT);
	/* The index could not grow past its initial size. */
	assert_true(stats().index_failures > 0);
	/* Chunks outside the index: patches fail, reading is unaffected. */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_args),
		cmocka_unit_test(test_geometry),
		cmocka_unit_test_teardown(test_small_buffer_page_chunks, teardown),
		cmocka_unit_test_teardown(test_basic_read, teardown),
		cmocka_unit_test_teardown(test_payload_copy_sizes, teardown),
		cmocka_unit_test_teardown(test_trailer_bytes, teardown),
		cmocka_unit_test_teardown(test_seqids, teardown),
		cmocka_unit_test_teardown(test_empty_and_compact, teardown),
		cmocka_unit_test_teardown(test_reassembly, teardown),
		cmocka_unit_test_teardown(test_reassembly_waits, teardown),
		cmocka_unit_test_teardown(test_broken_chain, teardown),
		cmocka_unit_test_teardown(test_orphan, teardown),
		cmocka_unit_test_teardown(test_malformed, teardown),
		cmocka_unit_test_teardown(test_drop_marker, teardown),
		cmocka_unit_test_teardown(test_patches, teardown),
		cmocka_unit_test_teardown(test_deferred_publish, teardown),
		cmocka_unit_test_teardown(test_patch_out_of_range, teardown),
		cmocka_unit_test_teardown(test_patch_not_found, teardown),
		cmocka_unit_test_teardown(test_recommit_scraped, teardown),
		cmocka_unit_test_teardown(test_recommit_rules, teardown),
		cmocka_unit_test_teardown(test_copy_on_write, teardown),
		cmocka_unit_test_teardown(test_staged_commit, teardown),
		cmocka_unit_test_teardown(test_staged_discard, teardown),
		cmocka_unit_test_teardown(test_pending_counts, teardown),
		cmocka_unit_test_teardown(test_out_of_order, teardown),
		cmocka_unit_test_teardown(test_chunk_id_wrap, teardown),
		cmocka_unit_test_teardown(test_ring_overwrite, teardown),
		cmocka_unit_test_teardown(test_gap_given_up, teardown),
		cmocka_unit_test_teardown(test_discard, teardown),
		cmocka_unit_test_teardown(test_validation, teardown),
		cmocka_unit_test_teardown(test_read_limit, teardown),
		cmocka_unit_test_teardown(test_abi_rejects, teardown),
		cmocka_unit_test(test_small_buffers_take_big_chunks),
		cmocka_unit_test_teardown(test_big_chunks_capacity, teardown),
		cmocka_unit_test_teardown(test_stat_bytes_per_page, teardown),
		cmocka_unit_test_teardown(test_writer_stats, teardown),
		cmocka_unit_test_teardown(test_two_lanes, teardown),
		cmocka_unit_test_teardown(test_index_sweep, teardown),
		cmocka_unit_test_teardown(test_commit_without_memory, teardown),
		cmocka_unit_test(test_alloc_fail_create),
		cmocka_unit_test(test_alloc_fail_read),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
