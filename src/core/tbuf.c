// SPDX-License-Identifier: Apache-2.0
// Trace buffer memory: creation and teardown, the segment protocol (claim,
// seal, pin, condemn, recycle, retire) and the stats sum.
//
// Layout. A buffer is nseg fixed-size segments (a power of two, 64 KiB to
// 1 MiB, smaller only for buffers under 256 KiB) in one private mapping. A lane
// appends records (48-byte header + chunk payload, 16-aligned) to its own
// current segment with plain stores and publishes each one with a release
// store of seg->used: a commit takes no lock and touches no line another
// lane writes. A CommitData's chunks are published together at its end
// (svc_tbuf_chunk.defer, svc_tbuf_lane_publish): their payloads go in with
// streaming stores, which need a store fence before the publication, and
// one fence per request instead of one per 4 KiB chunk moves a lane's
// commits ~60% faster (tbuf_bench). Each lane keeps its own index
// (tbuf_lane.c) of where its chunks are, for re-commits and patches.
//
// Which segment comes next, and eviction order. DESIGN.md §2 puts full
// segments in a ck_ring FIFO. We use a shared claim cursor instead: a lane
// needing a segment does fetch_add on b->cursor and tries segment
// pos % nseg; FREE is taken, FULL is recycled (ring) or, under DISCARD,
// reused only if every record in it was read; CURRENT (another lane's) and
// RECYCLING are skipped. The segments are thus recycled in the order they
// were claimed, which is FIFO by age the way the ck_ring would have been,
// with one atomic per segment switch and no second structure to keep in
// step. The reason for the change: ck_ring hands slots over with ck_pr
// accesses TSan cannot see, so the segment contents a ring hands over would
// have no visible happens-before; every hand-off here is a C11 CAS on the
// segment's own state word, which TSan checks. A lane's segments are claimed
// in commit order and each is recycled at the cursor's first visit after it
// was sealed, so a lane's records, hence a sequence's, are evicted in commit
// order: if a sequence's last consumed chunk is still stored, so is
// everything committed after it. The reader's V1 gap rule relies on that.
//
// Readers never block lanes. A reader (or a lane looking at its own old
// record) pins the segment: CAS pins+1 on the state word, valid only while
// the generation it expects is there. The recycler needs pins == 0. A lane
// that meets a pinned FULL segment at the cursor does not wait: it marks it
// CONDEMNED (logically evicted from that instant: no new pins) and moves on;
// whoever drops the last pin retires it (walks it for the stats, frees it).
// So a reader copying a segment that gets recycled is impossible rather than
// detected after the fact (a seqlock's racy memcpy is a data race in C11
// and would make the TSan run meaningless); the cost is that a segment a
// reader holds lives a few microseconds longer.
//
// Payload rewrites (re-commit, patch) versus the reader are exclusive per
// record through two bits of the record's meta word: the reader sets READING
// while it parses a payload, the owner lane sets WRITING while it rewrites
// one. A lane that finds READING set never waits: it writes a relocated copy
// into its current segment and marks the old record DEAD (copy on write).
// A reader that finds WRITING set yields until the lane is done (a memcpy of
// at most 64 KiB). Record headers are otherwise immutable once published.
//
// How the reader sees a consistent index. It never reads a lane's index:
// it builds its own by scanning the records published since its last pass
// (tbuf_read.c), up to a per-lane publication watermark loaded (acquire)
// before the scan, so a pass sees a prefix, in commit order, of every lane's
// records. The state the reader shares with lanes is per record (meta,
// read_state, fwd: atomics) and per segment (state, used: atomics).
//
// The one wait a lane can meet: under DISCARD, a lane probing whether a
// full segment was read holds it exclusively (RECYCLING, same generation)
// for one walk over its record headers; a reader, or the owner lane looking
// up a chunk in it for a patch, yields until the probe ends. Failing the
// lookup instead would lose the patch and block that sequence for good.
//
// Every counter lives in a block owned by one thread (each lane, the
// reader): plain relaxed load+store, summed by svc_tbuf_get_stats().
// A segment retired by a reader's last unpin is counted in the reader's.
#include "core/tbuf_int.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>

#include "core/mem_hooks.h"
#include "spindle/smb_abi.h"

/* Record bytes of the largest chunk a buffer of `size` bytes must take:
 * one no bigger than the buffer, from a page the service accepts (the
 * Div1 chunk of a 32 KiB page at most). */
static uint64_t tb_largest_record(uint64_t size)
{
	uint64_t chunk = spn_smb_chunk_size_for(SPN_SMB_SVC_MAX_PAGE_SIZE,
						SPN_SMB_PAGE_DIV1);

	if (chunk > size)
		chunk = size;
	return tb_align16(TB_REC_HDR + (uint32_t)chunk - SPN_SMB_CHUNK_HEADER_SIZE);
}

/* Segments this big waste at most 1/8 of themselves on the largest record
 * (7 records of a 32 KiB page's chunk, 32800 bytes each, in 256 KiB); a 64
 * KiB segment holds one and wastes half. */
#define TB_DENSE_SEG (256u * 1024u)

/* Largest power of two <= v (v >= 1). */
static uint64_t tb_pow2_floor(uint64_t v)
{
	return 1ull << (63 - __builtin_clzll(v));
}

/*
 * Chooses the segment size and count for a buffer: size / 16 rounded down
 * to a power of two, within 64 KiB..1 MiB; buffers under 256 KiB get 4
 * segments of size / 4, but never segments too small for the record of
 * the largest chunk the buffer must take. trace-buffer.md §1 refuses only
 * a chunk bigger than the buffer itself (or than a record can be), and a
 * record never spans segments, so a buffer takes any chunk of the pages
 * the service accepts (up to 32 KiB: Perfetto's traced_probes uses those)
 * that is no bigger than the buffer. Every lane needs a current segment
 * and the cursor needs full ones to recycle, so the count is at least
 * nlanes + 2. Small buffers thus use more memory than asked for, at most
 * (nlanes + 2) x 64 KiB (a 64 KiB buffer with 2 lanes: 256 KiB), and
 * hold up to that much before they evict (ring) or discard; buffer_size
 * still reports the configured size. A record never spans segments either,
 * so a segment loses up to one record's size at its end: segments grow to
 * TB_DENSE_SEG where the buffer has room for nlanes + 2 of them anyway (a
 * 1 MiB buffer with 2 lanes: 4 x 256 KiB, which keeps 28 chunks of 32 KiB
 * pages where 16 x 64 KiB kept 16 and Perfetto's traced keeps 32; the ring
 * then evicts a quarter at a time instead of a sixteenth).
 */
static void tb_geometry(uint64_t size, unsigned nlanes, uint32_t *seg_size,
			uint32_t *nseg)
{
	uint64_t seg, n, rec;

	if (size >= 4ull * 65536) {
		seg = tb_pow2_floor(size / 16);
		if (seg < 65536)
			seg = 65536;
		if (seg > (1u << 20))
			seg = 1u << 20;
	} else {
		seg = tb_pow2_floor(size / 4);
	}
	rec = tb_largest_record(size);
	if (seg < rec)
		seg = tb_pow2_floor(rec - 1) * 2; /* the power of two >= rec */
	/* Up to TB_DENSE_SEG while the size still makes nlanes + 2 segments
	 * of it (no memory beyond the size rounded up to a segment). */
	if (seg < TB_DENSE_SEG && size / (nlanes + 2u) >= 2 * seg) {
		uint64_t dense = tb_pow2_floor(size / (nlanes + 2u));

		seg = dense < TB_DENSE_SEG ? dense : TB_DENSE_SEG;
	}
	n = (size + seg - 1) / seg;
	if (n < nlanes + 2u)
		n = nlanes + 2u;
	*seg_size = (uint32_t)seg;
	*nseg = (uint32_t)n;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23	/* Linux 5.14 */
#endif
#define TB_POPULATE_STEP (2u << 20)

/*
 * Faults in [p, p + len) in 2 MiB steps. MAP_POPULATE would hold the
 * process's mmap lock for writing for the whole mapping (hundreds of ms
 * for 1 GiB), stalling every page fault of every other thread, lanes
 * included; a step of MADV_POPULATE_WRITE holds it for reading only, and
 * only that long. Kernels without it get one write per page.
 */
static void tb_populate(uint8_t *p, size_t len)
{
	for (size_t off = 0; off < len; off += TB_POPULATE_STEP) {
		size_t n = len - off < TB_POPULATE_STEP ? len - off
							: TB_POPULATE_STEP;

		if (madvise(p + off, n, MADV_POPULATE_WRITE) == 0)
			continue;
		for (size_t i = 0; i < n; i += 4096)
			((volatile uint8_t *)p)[off + i] = 0;
	}
}

static void *tb_map(size_t len, bool populate)
{
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	void *p;

	p = svc_mem_mmap(NULL, len, PROT_READ | PROT_WRITE, flags, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (populate)
		tb_populate(p, len);
	return p;
}

static size_t tb_page_round(size_t len)
{
	return (len + 4095) & ~(size_t)4095;
}

int svc_tbuf_create(uint64_t size, enum svc_tbuf_policy policy,
		    unsigned nlanes, unsigned flags, struct svc_tbuf **out)
{
	struct svc_tbuf *b;
	uint32_t seg_size, nseg;
	unsigned i;
	int rc = -ENOMEM;

	*out = NULL;
	if (size < SVC_TBUF_MIN_SIZE || size > SVC_TBUF_MAX_SIZE ||
	    (policy != SVC_TBUF_RING && policy != SVC_TBUF_DISCARD) ||
	    nlanes == 0 || nlanes > SVC_TBUF_MAX_LANES ||
	    (flags & ~SVC_TBUF_PREFAULT))
		return -EINVAL;
	tb_geometry(size, nlanes, &seg_size, &nseg);

	/* The struct holds a cache-line aligned member: map it too. */
	b = tb_map(tb_page_round(sizeof(*b)), false);
	if (!b)
		return -ENOMEM;
	b->size = size;
	b->policy = policy;
	b->nlanes = nlanes;
	b->seg_size = seg_size;
	b->seg_shift = (uint32_t)__builtin_ctz(seg_size);
	b->nseg = nseg;
	atomic_init(&b->cursor, 0);
	atomic_init(&b->discarding, false);

	b->data_len = (size_t)nseg * seg_size;
	b->data = tb_map(b->data_len, flags & SVC_TBUF_PREFAULT);
	if (!b->data)
		goto err;
	b->segs_len = tb_page_round((size_t)nseg * sizeof(struct tb_seg));
	b->segs = tb_map(b->segs_len, false);
	if (!b->segs)
		goto err;
	for (i = 0; i < nseg; i++) {
		atomic_init(&b->segs[i].state, tb_st_make(0, TB_FREE));
		atomic_init(&b->segs[i].used, 0);
		atomic_init(&b->segs[i].pending, 0);
		atomic_init(&b->segs[i].pending_bytes, 0);
		atomic_init(&b->segs[i].touched, 0);
		b->segs[i].data = b->data + (size_t)i * seg_size;
	}
	b->lanes_len = tb_page_round((size_t)nlanes * sizeof(struct tb_lane));
	b->lanes = tb_map(b->lanes_len, false);
	if (!b->lanes)
		goto err;
	for (i = 0; i < nlanes; i++) {
		b->lanes[i].idx = i;
		rc = tb_lane_init(b, &b->lanes[i]);
		if (rc < 0)
			goto err;
	}
	rc = tb_reader_init(b);
	if (rc < 0)
		goto err;
	*out = b;
	return 0;
err:
	svc_tbuf_destroy(b);
	return rc;
}

void svc_tbuf_destroy(struct svc_tbuf *b)
{
	if (!b)
		return;
	tb_reader_fini(b);
	if (b->lanes) {
		for (unsigned i = 0; i < b->nlanes; i++)
			tb_lane_fini(&b->lanes[i]);
		svc_mem_munmap(b->lanes, b->lanes_len);
	}
	if (b->segs)
		svc_mem_munmap(b->segs, b->segs_len);
	if (b->data)
		svc_mem_munmap(b->data, b->data_len);
	svc_mem_munmap(b, tb_page_round(sizeof(*b)));
}

uint32_t svc_tbuf_segment_size(const struct svc_tbuf *b)
{
	return b->seg_size;
}

uint32_t svc_tbuf_segment_count(const struct svc_tbuf *b)
{
	return b->nseg;
}

bool tb_seg_pin(struct svc_tbuf *b, uint32_t seg, uint32_t gen)
{
	struct tb_seg *s = &b->segs[seg];
	/* Acquire: pairs with the release that published this generation
	 * (claim) and with the owner's release of seg->used / seal. */
	uint64_t st = atomic_load_explicit(&s->state, memory_order_acquire);

	for (;;) {
		enum tb_kind kind = tb_st_kind(st);

		if (tb_st_gen(st) != gen)
			return false;
		if (kind == TB_RECYCLING || tb_st_pins(st) == TB_PINS_MASK) {
			/* A DISCARD probe holds it for a short walk. */
			sched_yield();
			st = atomic_load_explicit(&s->state,
						  memory_order_acquire);
			continue;
		}
		if ((kind != TB_CURRENT && kind != TB_FULL) ||
		    (st & TB_CONDEMNED))
			return false;
		if (atomic_compare_exchange_weak_explicit(
			    &s->state, &st, st + 1, memory_order_acquire,
			    memory_order_acquire))
			return true;
	}
}

bool tb_seg_holds(struct svc_tbuf *b, uint32_t seg, uint32_t gen)
{
	uint64_t st = atomic_load_explicit(&b->segs[seg].state,
					   memory_order_relaxed);

	return tb_st_gen(st) == gen && !(st & TB_CONDEMNED) &&
	       tb_st_kind(st) != TB_FREE;
}

/*
 * Walks the records of a segment held exclusively (RECYCLING) and counts
 * the ones not fully read into ctr as overwritten (ring eviction), or, with
 * ctr == NULL, returns true at the first one (DISCARD probe). When nothing
 * in the segment was read, those are exactly its pending records: no walk
 * (one cache and TLB miss per record header saved).
 */
static bool tb_seg_walk(struct svc_tbuf *b, uint32_t seg,
			struct tb_counters *ctr)
{
	struct tb_seg *s = &b->segs[seg];
	uint32_t used = atomic_load_explicit(&s->used, memory_order_relaxed);
	uint32_t off = 0;

	if (!atomic_load_explicit(&s->touched, memory_order_relaxed)) {
		uint32_t n = atomic_load_explicit(&s->pending,
						  memory_order_relaxed);

		if (!ctr)
			return n > 0;
		if (n) {
			tb_count(ctr, TB_C_CHUNKS_OVERWRITTEN, n);
			tb_count(ctr, TB_C_BYTES_OVERWRITTEN,
				 atomic_load_explicit(&s->pending_bytes,
						      memory_order_relaxed));
		}
		return false;
	}

	while (used - off >= TB_REC_HDR) {
		struct tb_rec *r = (struct tb_rec *)(s->data + off);
		uint32_t meta, rs;

		if (r->rec_len < TB_REC_HDR || (r->rec_len & 15) ||
		    r->rec_len > used - off)
			break;
		meta = atomic_load_explicit(&r->meta, memory_order_relaxed);
		rs = atomic_load_explicit(&r->read_state, memory_order_relaxed);
		if (!(meta & TB_M_DEAD) && rs < tb_m_nfrags(meta)) {
			if (!ctr)
				return true;
			tb_count(ctr, TB_C_CHUNKS_OVERWRITTEN, 1);
			tb_count(ctr, TB_C_BYTES_OVERWRITTEN,
				 tb_stat_len(r->payload_len));
		}
		off += r->rec_len;
	}
	return false;
}

/* Resets a segment held exclusively, counting its padding as cleared. */
static void tb_seg_reset(struct tb_seg *s, struct tb_counters *ctr)
{
	if (s->pad)
		tb_count(ctr, TB_C_PADDING_CLEARED, s->pad);
	s->pad = 0;
	/* Relaxed: published by the release store of the next state. */
	atomic_store_explicit(&s->used, 0, memory_order_relaxed);
	atomic_store_explicit(&s->pending, 0, memory_order_relaxed);
	atomic_store_explicit(&s->pending_bytes, 0, memory_order_relaxed);
	atomic_store_explicit(&s->touched, 0, memory_order_relaxed);
}

void tb_seg_unpin(struct svc_tbuf *b, uint32_t seg, struct tb_counters *ctr)
{
	struct tb_seg *s = &b->segs[seg];
	uint64_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
	uint64_t n;
	bool retire;

	for (;;) {
		n = st - 1;
		retire = tb_st_pins(n) == 0 && (n & TB_CONDEMNED);
		if (retire)
			n = tb_st_make(tb_st_gen(st) + 1, TB_RECYCLING);
		/* Release: our reads of the records and our read_state/meta
		 * stores happen before any recycler's acquire CAS. Acquire
		 * when retiring: we then walk what others wrote. */
		if (atomic_compare_exchange_weak_explicit(
			    &s->state, &st, n,
			    retire ? memory_order_acq_rel :
				     memory_order_release,
			    memory_order_relaxed))
			break;
	}
	if (!retire)
		return;
	tb_seg_walk(b, seg, ctr);
	tb_seg_reset(s, ctr);
	/* Release: the reset happens before whoever claims it next. */
	atomic_store_explicit(&s->state, tb_st_make(tb_st_gen(n), TB_FREE),
			      memory_order_release);
}

void tb_seg_seal(struct svc_tbuf *b, struct tb_lane *l)
{
	struct tb_seg *s = &b->segs[l->cur];
	uint64_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
	uint64_t n;

	s->pad = b->seg_size - l->cur_used;
	if (s->pad)
		tb_count(&l->ctr, TB_C_PADDING_WRITTEN, s->pad);
	do {
		n = (st & ~TB_KIND_MASK) |
		    ((uint64_t)TB_FULL << TB_KIND_SHIFT);
		/* Release: records and pad happen before the recycler's
		 * acquire CAS on this word. */
	} while (!atomic_compare_exchange_weak_explicit(
		&s->state, &st, n, memory_order_release, memory_order_relaxed));
	l->cur = -1;
}

/* Makes segment idx lane l's current segment, generation gen. */
static void tb_seg_adopt(struct svc_tbuf *b, struct tb_lane *l, uint32_t idx,
			 uint32_t gen)
{
	(void)b;
	l->cur = (int32_t)idx;
	l->cur_gen = gen;
	l->cur_used = 0;
}

/*
 * Tries to take segment idx for lane l. Returns 0 (taken), -EAGAIN (busy:
 * try the next position) or -ENOSPC (DISCARD: it holds unread data).
 */
static int tb_seg_try_take(struct svc_tbuf *b, struct tb_lane *l, uint32_t idx)
{
	struct tb_seg *s = &b->segs[idx];
	uint64_t st = atomic_load_explicit(&s->state, memory_order_acquire);
	uint32_t gen;

	for (;;) {
		gen = tb_st_gen(st);
		switch (tb_st_kind(st)) {
		case TB_FREE:
			/* Acquire: pairs with the retire's release of FREE. */
			if (atomic_compare_exchange_weak_explicit(
				    &s->state, &st,
				    tb_st_make(gen + 1, TB_CURRENT),
				    memory_order_acq_rel, memory_order_acquire)) {
				tb_seg_adopt(b, l, idx, gen + 1);
				return 0;
			}
			continue;
		case TB_CURRENT:
		case TB_RECYCLING:
			return -EAGAIN;
		case TB_FULL:
			break;
		}
		if (st & TB_CONDEMNED)
			return -EAGAIN;
		if (tb_st_pins(st)) {
			if (b->policy == SVC_TBUF_DISCARD)
				return -EAGAIN;
			/* Ring: evict it now; the last unpin retires it.
			 * Nothing is published by condemning; acquire only
			 * because a failed CAS reloads st for the switch. */
			if (atomic_compare_exchange_weak_explicit(
				    &s->state, &st, st | TB_CONDEMNED,
				    memory_order_acquire, memory_order_acquire))
				return -EAGAIN;
			continue;
		}
		if (b->policy == SVC_TBUF_DISCARD) {
			/* Acquire: pairs with the seal and the readers'
			 * unpins, so read_state is current. */
			if (!atomic_compare_exchange_weak_explicit(
				    &s->state, &st, tb_st_make(gen, TB_RECYCLING),
				    memory_order_acquire, memory_order_acquire))
				continue;
			if (tb_seg_walk(b, idx, NULL)) {
				atomic_store_explicit(&s->state,
						      tb_st_make(gen, TB_FULL),
						      memory_order_release);
				atomic_store_explicit(&b->discarding, true,
						      memory_order_relaxed);
				return -ENOSPC;
			}
		} else {
			if (!atomic_compare_exchange_weak_explicit(
				    &s->state, &st,
				    tb_st_make(gen + 1, TB_RECYCLING),
				    memory_order_acquire, memory_order_acquire))
				continue;
			tb_seg_walk(b, idx, &l->ctr);
		}
		tb_seg_reset(s, &l->ctr);
		/* Release: the reset happens before readers pin gen + 1. */
		atomic_store_explicit(&s->state, tb_st_make(gen + 1, TB_CURRENT),
				      memory_order_release);
		tb_seg_adopt(b, l, idx, gen + 1);
		return 0;
	}
}

int tb_seg_claim(struct svc_tbuf *b, struct tb_lane *l)
{
	uint64_t attempts = 2ull * b->nseg + 2;

	while (attempts--) {
		uint64_t pos;
		int rc;

		if (b->policy == SVC_TBUF_DISCARD &&
		    atomic_load_explicit(&b->discarding, memory_order_relaxed))
			return -ENOSPC;
		pos = atomic_fetch_add_explicit(&b->cursor, 1,
						memory_order_relaxed);
		if (pos && pos % b->nseg == 0)
			tb_count(&l->ctr, TB_C_WRAPS, 1);
		rc = tb_seg_try_take(b, l, (uint32_t)(pos % b->nseg));
		if (rc != -EAGAIN)
			return rc;
	}
	return -EBUSY;
}

void svc_tbuf_get_stats(const struct svc_tbuf *b, struct svc_tbuf_stats *st)
{
	uint64_t v[TB_C_COUNT] = { 0 };

	for (unsigned i = 0; i < b->nlanes; i++)
		for (int c = 0; c < TB_C_COUNT; c++)
			v[c] += atomic_load_explicit(&b->lanes[i].ctr.v[c],
						     memory_order_relaxed);
	for (int c = 0; c < TB_C_COUNT; c++)
		v[c] += atomic_load_explicit(&b->rd.ctr.v[c],
					     memory_order_relaxed);
	memset(st, 0, sizeof(*st));
	st->buffer_size = b->size;
	st->bytes_written = v[TB_C_BYTES_WRITTEN];
	st->bytes_overwritten = v[TB_C_BYTES_OVERWRITTEN];
	st->bytes_read = v[TB_C_BYTES_READ];
	st->padding_bytes_written = v[TB_C_PADDING_WRITTEN];
	st->padding_bytes_cleared = v[TB_C_PADDING_CLEARED];
	st->chunks_written = v[TB_C_CHUNKS_WRITTEN];
	st->chunks_rewritten = v[TB_C_CHUNKS_REWRITTEN];
	st->chunks_overwritten = v[TB_C_CHUNKS_OVERWRITTEN];
	st->chunks_discarded = v[TB_C_CHUNKS_DISCARDED];
	st->chunks_read = v[TB_C_CHUNKS_READ];
	st->chunks_committed_out_of_order = v[TB_C_OUT_OF_ORDER];
	st->write_wrap_count = v[TB_C_WRAPS];
	st->patches_succeeded = v[TB_C_PATCHES_OK];
	st->patches_failed = v[TB_C_PATCHES_FAILED];
	st->readaheads_succeeded = v[TB_C_READAHEADS_OK];
	st->readaheads_failed = v[TB_C_READAHEADS_FAILED];
	st->abi_violations = v[TB_C_ABI_VIOLATIONS];
	st->trace_writer_packet_loss = v[TB_C_WRITER_PACKET_LOSS];
	st->invalid_packets = v[TB_C_INVALID_PACKETS];
	st->chunks_lost_no_space = v[TB_C_LOST_NO_SPACE];
	st->chunks_dropped_late = v[TB_C_DROPPED_LATE];
	st->chunks_copied_on_write = v[TB_C_COPIED_ON_WRITE];
	st->index_failures = v[TB_C_INDEX_FAILURES];
}
