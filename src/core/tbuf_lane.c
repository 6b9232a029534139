// SPDX-License-Identifier: Apache-2.0
// Lane side of the trace buffers: storing chunk copies, re-commits of
// scraped chunks and patches (trace-buffer.md §2, §3), and the lane's index.
//
// Everything here runs on the thread of lane `lane` only. The lane's index
// is private to it: (producer, writer, chunk) -> where the record is, and
// (producer, writer) -> newest chunk id and where the last stored record
// is. Index entries are validated on use (the segment generation, then the
// record header), so eviction by other lanes needs no notification.
// Payload rewrites take the record's WRITING bit, or copy the record if a
// reader holds it (see tbuf.c).
//
// Lookups are rare (re-commits of scraped chunks, patches) and most chunks
// are evicted without ever being looked up, so a commit does not hash: it
// appends (key, location) to the lane's log, a plain array. A lookup first
// tries the sequence's last stored record (patches and re-commits nearly
// always want the chunk just committed), and only otherwise moves the log
// into the ck_ht (in order, so the newest entry of a key wins) and looks
// there. A full log drops the entries of evicted segments; if it is still
// more than half full it doubles, and if that cannot be had it is moved
// into the ck_ht. The ck_ht is swept when it doubles. Either way the work
// is O(1) per commit amortised, and memory is bounded by the records the
// buffer holds, not by the chunks ever written.
#include "core/tbuf_int.h"

#include <errno.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "core/mem_hooks.h"

#define TB_SWEEP_MIN 4096u	/* smallest chunk-index size that triggers a sweep */
#define TB_HT_SEED 0x5eedu	/* ck_ht hash seed (lane-private tables) */
#define TB_LOG_MIN 256u		/* smallest index log (entries) */

static void *tb_ck_malloc(size_t size)
{
	return svc_mem_malloc(size);
}

static void *tb_ck_realloc(void *p, size_t old, size_t size, bool defer)
{
	(void)old;
	(void)defer;
	return svc_mem_realloc(p, size);
}

static void tb_ck_free(void *p, size_t size, bool defer)
{
	/* Lane-private tables: no concurrent reader, nothing to defer. */
	(void)size;
	(void)defer;
	svc_mem_free(p);
}

static struct ck_malloc tb_ck_allocator = {
	.malloc = tb_ck_malloc,
	.realloc = tb_ck_realloc,
	.free = tb_ck_free,
};

static uint64_t tb_chunk_key(uint16_t p, uint16_t w, uint32_t c)
{
	/* Never 0 (p >= 1) nor ~0 (w <= 32767): ck_ht's reserved keys. */
	return ((uint64_t)p << 48) | ((uint64_t)w << 32) | c;
}

int tb_lane_init(struct svc_tbuf *b, struct tb_lane *l)
{
	/* Room for this lane's share of 4 KiB chunks at load factor 0.5. */
	uint64_t cap = b->size / 4096 / b->nlanes * 2;

	if (cap < 1024)
		cap = 1024;
	if (cap > (1u << 20))
		cap = 1u << 20;
	l->cur = -1;
	l->sweep_at = cap / 2 > TB_SWEEP_MIN ? cap / 2 : TB_SWEEP_MIN;
	/* The log holds as many entries as the ck_ht is sized for: twice
	 * the lane's share of 4 KiB chunks. */
	l->log_cap = cap > TB_LOG_MIN ? (uint32_t)cap : TB_LOG_MIN;
	l->log = svc_mem_malloc((size_t)l->log_cap * sizeof(*l->log));
	if (!l->log)
		return -ENOMEM;
	if (!ck_ht_init(&l->chunks, CK_HT_MODE_DIRECT, NULL, &tb_ck_allocator,
			cap, TB_HT_SEED))
		return -ENOMEM;
	l->chunks_init = true;
	if (!ck_ht_init(&l->seqs, CK_HT_MODE_DIRECT, NULL, &tb_ck_allocator,
			64, TB_HT_SEED))
		return -ENOMEM;
	l->seqs_init = true;
	return 0;
}

void tb_lane_fini(struct tb_lane *l)
{
	if (l->seqs_init) {
		ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
		ck_ht_entry_t *e;

		while (ck_ht_next(&l->seqs, &it, &e))
			svc_mem_free((void *)ck_ht_entry_value_direct(e));
		ck_ht_destroy(&l->seqs);
		l->seqs_init = false;
	}
	if (l->chunks_init) {
		ck_ht_destroy(&l->chunks);
		l->chunks_init = false;
	}
	svc_mem_free(l->log);
	l->log = NULL;
	l->log_n = l->log_cap = 0;
}

/* The lane's state of sequence (p, w), created on first use if `create`;
 * NULL if unknown or out of memory (the caller then skips the shortcuts
 * it gives). */
static struct tb_lane_seq *tb_lane_seq(struct tb_lane *l, uint16_t p,
				       uint16_t w, bool create)
{
	uint64_t key = ((uint64_t)p << 16) | w;
	struct tb_lane_seq *s = l->last_seq;
	ck_ht_entry_t e;
	ck_ht_hash_t h;

	if (s && s->producer_id == p && s->writer_id == w)
		return s;
	ck_ht_hash_direct(&h, &l->seqs, key);
	ck_ht_entry_key_set_direct(&e, key);
	if (ck_ht_get_spmc(&l->seqs, h, &e)) {
		s = (struct tb_lane_seq *)ck_ht_entry_value_direct(&e);
		l->last_seq = s;
		return s;
	}
	if (!create)
		return NULL;
	s = svc_mem_calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->producer_id = p;
	s->writer_id = w;
	ck_ht_entry_set_direct(&e, h, key, (uintptr_t)s);
	if (!ck_ht_put_spmc(&l->seqs, h, &e)) {
		svc_mem_free(s);
		return NULL;
	}
	l->last_seq = s;
	return s;
}

static void tb_index_remove(struct tb_lane *l, uint64_t key)
{
	ck_ht_entry_t e;
	ck_ht_hash_t h;

	ck_ht_hash_direct(&h, &l->chunks, key);
	ck_ht_entry_key_set_direct(&e, key);
	ck_ht_remove_spmc(&l->chunks, h, &e);
}

/*
 * Drops index entries whose record was evicted. ck_ht never turns a
 * tombstone back into an empty slot, and an insert probes up to an empty
 * slot, so removing in place would make inserts slower and slower: the
 * live entries are moved into a fresh table instead. Runs when the table
 * has doubled since the last sweep, so it costs O(1) per commit amortised.
 * If the fresh table cannot be had, the old one stays (still correct).
 */
static void tb_index_sweep(struct svc_tbuf *b, struct tb_lane *l)
{
	ck_ht_iterator_t it = CK_HT_ITERATOR_INITIALIZER;
	uint64_t n = ck_ht_count(&l->chunks);
	ck_ht_entry_t *e;
	ck_ht_t fresh;

	if (!ck_ht_init(&fresh, CK_HT_MODE_DIRECT, NULL, &tb_ck_allocator,
			2 * n, TB_HT_SEED)) {
		l->sweep_at = 2 * n;
		return;
	}
	while (ck_ht_next(&l->chunks, &it, &e)) {
		struct tb_loc loc;
		ck_ht_hash_t h;

		if (!tb_loc_unpack(b, ck_ht_entry_value_direct(e), &loc) ||
		    !tb_seg_holds(b, loc.seg, loc.gen))
			continue;
		ck_ht_hash_direct(&h, &fresh, ck_ht_entry_key_direct(e));
		if (!ck_ht_put_spmc(&fresh, h, e)) {
			ck_ht_destroy(&fresh);
			l->sweep_at = 2 * n;
			return;
		}
	}
	ck_ht_destroy(&l->chunks);
	l->chunks = fresh;
	n = ck_ht_count(&l->chunks);
	l->sweep_at = 2 * n > TB_SWEEP_MIN ? 2 * n : TB_SWEEP_MIN;
}

/* Puts one entry into the ck_ht (newest wins), sweeping it when it has
 * doubled. */
static void tb_index_ht_set(struct svc_tbuf *b, struct tb_lane *l,
			    uint64_t key, uint64_t packed)
{
	ck_ht_entry_t e;
	ck_ht_hash_t h;

	ck_ht_hash_direct(&h, &l->chunks, key);
	ck_ht_entry_set_direct(&e, h, key, packed);
	if (!ck_ht_set_spmc(&l->chunks, h, &e)) {
		/* Still readable (the reader finds records by scanning);
		 * only re-commits and patches of it will miss it. */
		tb_count(&l->ctr, TB_C_INDEX_FAILURES, 1);
		return;
	}
	if (ck_ht_count(&l->chunks) >= l->sweep_at)
		tb_index_sweep(b, l);
}

/* Moves the log into the ck_ht, oldest first. */
static void tb_log_flush(struct svc_tbuf *b, struct tb_lane *l)
{
	for (uint32_t i = 0; i < l->log_n; i++)
		tb_index_ht_set(b, l, l->log[i].key, l->log[i].loc);
	l->log_n = 0;
}

/*
 * Makes room in a full log: drops the entries whose segment was evicted
 * (their records are gone; an older ck_ht entry of the same key points at
 * a record that is gone too or DEAD, both rejected on use). Doubles the log
 * if that freed less than half of it, or flushes it when that fails.
 */
static void tb_log_make_room(struct svc_tbuf *b, struct tb_lane *l)
{
	uint32_t n = 0;
	struct tb_ient *v;

	for (uint32_t i = 0; i < l->log_n; i++) {
		struct tb_loc loc;

		if (tb_loc_unpack(b, l->log[i].loc, &loc) &&
		    tb_seg_holds(b, loc.seg, loc.gen))
			l->log[n++] = l->log[i];
	}
	l->log_n = n;
	if (n <= l->log_cap / 2)
		return;
	v = l->log_cap <= UINT32_MAX / 2 ?
		    svc_mem_realloc(l->log, 2 * (size_t)l->log_cap * sizeof(*v)) :
		    NULL;
	if (!v) {
		tb_log_flush(b, l);
		return;
	}
	l->log = v;
	l->log_cap *= 2;
}

/*
 * Notes that the newest record of `key` is at loc (a new chunk or a
 * relocated copy): one store into the log. `seq` is the key's sequence,
 * or NULL when it could not be had.
 */
static void tb_index_set(struct svc_tbuf *b, struct tb_lane *l,
			 struct tb_lane_seq *seq, uint64_t key,
			 const struct tb_loc *loc)
{
	uint64_t packed = tb_loc_pack(b, loc);

	if (seq) {
		seq->last_id = (uint32_t)key;
		seq->last_loc = packed;
	}
	if (l->log_n == l->log_cap)
		tb_log_make_room(b, l);
	l->log[l->log_n].key = key;
	l->log[l->log_n].loc = packed;
	l->log_n++;
}

/*
 * Pins the segment of the record at `packed` and returns the record if it
 * is still the live copy of `key`; NULL (nothing pinned) otherwise.
 */
static struct tb_rec *tb_index_try(struct svc_tbuf *b, struct tb_lane *l,
				   uint64_t key, uint64_t packed,
				   struct tb_loc *loc)
{
	struct tb_rec *r;

	if (!tb_loc_unpack(b, packed, loc) ||
	    !tb_seg_pin(b, loc->seg, loc->gen))
		return NULL;
	r = tb_rec_at(b, loc->seg, loc->off);
	if (tb_chunk_key(r->producer_id, r->writer_id, r->chunk_id) != key ||
	    (atomic_load_explicit(&r->meta, memory_order_relaxed) &
	     TB_M_DEAD)) {
		tb_seg_unpin(b, loc->seg, &l->ctr);
		return NULL;
	}
	return r;
}

/*
 * Finds the lane's stored record of `key` and pins its segment. Returns the
 * record, or NULL when it is not stored any more (its entry is dropped).
 */
static struct tb_rec *tb_index_find(struct svc_tbuf *b, struct tb_lane *l,
				    uint64_t key, struct tb_loc *loc)
{
	struct tb_lane_seq *seq = tb_lane_seq(l, (uint16_t)(key >> 48),
					      (uint16_t)(key >> 32), false);
	struct tb_rec *r;
	ck_ht_entry_t e;
	ck_ht_hash_t h;

	/* The sequence's last record: its newest copy is at last_loc. */
	if (seq && seq->last_loc && seq->last_id == (uint32_t)key) {
		r = tb_index_try(b, l, key, seq->last_loc, loc);
		if (r)
			return r;
	}
	tb_log_flush(b, l);
	ck_ht_hash_direct(&h, &l->chunks, key);
	ck_ht_entry_key_set_direct(&e, key);
	if (!ck_ht_get_spmc(&l->chunks, h, &e))
		return NULL;
	r = tb_index_try(b, l, key, ck_ht_entry_value_direct(&e), loc);
	if (!r)
		tb_index_remove(l, key);
	return r;
}

/*
 * Publishes every record appended to the current segment so far. A
 * release store alone does not order streaming (non-temporal) stores on
 * x86, so those get their sfence first.
 */
static void tb_lane_publish_now(struct svc_tbuf *b, struct tb_lane *l)
{
#ifdef __SSE2__
	/* Orders the payloads' streaming stores (tb_payload_copy) before
	 * the release store of used below. */
	if (l->nt_pending)
		_mm_sfence();
#endif
	l->nt_pending = false;
	l->unpublished = false;
	/* Release: the records' bytes happen before a reader's acquire
	 * load of used. */
	atomic_store_explicit(&b->segs[l->cur].used, l->cur_used,
			      memory_order_release);
	/* Release: pairs with the reader's acquire load at the start of a
	 * pass; every record up to this one is then in its scan. (The
	 * record just published carries the newest serial.) */
	atomic_store_explicit(&l->published, l->serial, memory_order_release);
}

/* Publishes the record just written at the lane's cursor (and any
 * deferred one before it). */
static void tb_lane_publish(struct svc_tbuf *b, struct tb_lane *l,
			    uint32_t rec_len)
{
	l->cur_used += rec_len;
	tb_lane_publish_now(b, l);
}

/* Publishes deferred records first: before the lane seals their segment,
 * rewrites or stages anything, so every other path sees them as it saw
 * records before deferral existed. */
static void tb_lane_settle(struct svc_tbuf *b, struct tb_lane *l)
{
	if (l->unpublished)
		tb_lane_publish_now(b, l);
}

/*
 * Reserves rec_len bytes in the lane's current segment, taking a new one
 * when it is full. Returns 0 and the location, or what tb_seg_claim()
 * returns.
 */
static int tb_lane_reserve(struct svc_tbuf *b, struct tb_lane *l,
			   uint32_t rec_len, struct tb_loc *loc)
{
	if (l->cur < 0 || b->seg_size - l->cur_used < rec_len) {
		int rc;

		if (l->cur >= 0) {
			tb_lane_settle(b, l);
			tb_seg_seal(b, l);
		}
		rc = tb_seg_claim(b, l);
		if (rc < 0)
			return rc;
	}
	loc->seg = (uint32_t)l->cur;
	loc->gen = l->cur_gen;
	loc->off = l->cur_used;
	return 0;
}

/* Fills a record header (not yet published). */
static void tb_rec_init(struct tb_lane *l, struct tb_rec *r, uint16_t p,
			uint16_t w, uint32_t c, uint32_t uid, int32_t pid,
			uint32_t len, uint32_t meta, uint32_t read_state)
{
	r->producer_id = p;
	r->writer_id = w;
	r->chunk_id = c;
	r->payload_len = len;
	r->rec_len = tb_align16(TB_REC_HDR + len);
	r->uid = uid;
	r->pid = pid;
	r->serial = ((uint64_t)l->idx << TB_SERIAL_LANE_SHIFT) | ++l->serial;
	atomic_store_explicit(&r->fwd, 0, memory_order_relaxed);
	atomic_store_explicit(&r->meta, meta, memory_order_relaxed);
	atomic_store_explicit(&r->read_state, read_state, memory_order_relaxed);
}

/*
 * Takes the WRITING bit of a record whose segment the lane pinned. Returns
 * false when the reader holds it (the caller relocates instead).
 */
static bool tb_rec_write_lock(struct tb_rec *r, uint32_t *meta)
{
	uint32_t m = atomic_load_explicit(&r->meta, memory_order_relaxed);

	do {
		if (m & (TB_M_READING | TB_M_DEAD))
			return false;
		/* Acquire: pairs with the reader's release of READING, so
		 * its reads of the payload happen before our writes. */
	} while (!atomic_compare_exchange_weak_explicit(
		&r->meta, &m, m | TB_M_WRITING, memory_order_acquire,
		memory_order_relaxed));
	*meta = m;
	return true;
}

/* Ends a rewrite: stores the new meta and drops WRITING. */
static void tb_rec_write_unlock(struct tb_rec *r, uint32_t meta)
{
	/* Release: the payload writes happen before the reader's acquire
	 * CAS that sets READING. While WRITING is set nobody else changes
	 * meta, so a plain store is enough. */
	atomic_store_explicit(&r->meta, meta & ~TB_M_WRITING,
			      memory_order_release);
}

/*
 * Copy on write: writes a copy of record `old` (pinned) with payload `src`
 * (len bytes; the old payload when src is NULL) at the lane's cursor. The
 * copy is not published: the caller edits its payload, then calls
 * tb_relocate_finish(). Returns the copy, or NULL when no space was left.
 */
static struct tb_rec *tb_relocate_begin(struct svc_tbuf *b, struct tb_lane *l,
					struct tb_rec *old, const uint8_t *src,
					struct tb_loc *nloc)
{
	struct tb_rec *n;

	if (tb_lane_reserve(b, l, old->rec_len, nloc) < 0)
		return NULL;
	n = tb_rec_at(b, nloc->seg, nloc->off);
	if (!src)
		src = (const uint8_t *)(old + 1);
	/* Reading the old payload while the reader also reads it is fine:
	 * nobody writes it (we would need WRITING for that). A staged
	 * payload is already in place (same reservation). */
	if ((const uint8_t *)(n + 1) != src)
		memcpy((uint8_t *)(n + 1), src, old->payload_len);
	tb_rec_init(l, n, old->producer_id, old->writer_id, old->chunk_id,
		    old->uid, old->pid, old->payload_len, 0, 0);
	return n;
}

/*
 * Publishes the copy with `meta`, retires the old record, repoints the
 * index. The reader may still be consuming the old record and storing its
 * read_state; that progress must reach the copy or the copy would later
 * count as overwritten although read. Both sides use seq_cst: the reader
 * stores read_state then loads meta, we set DEAD then load read_state, so
 * at least one of us sees the other's write; the reader then follows fwd
 * and raises the copy's read_state, or we raise it here (both with max).
 */
static void tb_relocate_finish(struct svc_tbuf *b, struct tb_lane *l,
			       struct tb_rec *old, struct tb_rec *n,
			       const struct tb_loc *nloc, uint32_t meta)
{
	uint32_t rs = atomic_load_explicit(&old->read_state,
					   memory_order_relaxed);
	uint32_t om;

	atomic_store_explicit(&n->meta, meta & ~(TB_M_WRITING | TB_M_READING),
			      memory_order_relaxed);
	if (rs)
		tb_seg_touch(b, n);
	atomic_store_explicit(&n->read_state, rs, memory_order_relaxed);
	if (tb_m_nfrags(meta))
		tb_seg_pending(b, n, 1);
	tb_lane_publish(b, l, n->rec_len);
	atomic_store_explicit(&old->fwd, tb_loc_pack(b, nloc),
			      memory_order_relaxed);
	/* seq_cst (also a release): the copy and fwd are visible to a
	 * reader that sees DEAD; ordered against the read_state load. */
	om = atomic_fetch_or_explicit(&old->meta, TB_M_DEAD,
				      memory_order_seq_cst);
	if (tb_m_nfrags(om))
		tb_seg_pending(b, old, -1);
	rs = atomic_load_explicit(&old->read_state, memory_order_seq_cst);
	if (rs)
		tb_seg_touch(b, n);
	tb_atomic_max(&n->read_state, rs);
	tb_index_set(b, l, tb_lane_seq(l, n->producer_id, n->writer_id, false),
		     tb_chunk_key(n->producer_id, n->writer_id, n->chunk_id),
		     nloc);
	tb_count(&l->ctr, TB_C_COPIED_ON_WRITE, 1);
}

/* true when a fragment of chunk c + 1 of the sequence was read. */
static bool tb_next_was_read(struct svc_tbuf *b, struct tb_lane *l,
			     uint16_t p, uint16_t w, uint32_t c)
{
	struct tb_lane_seq *seq = tb_lane_seq(l, p, w, false);
	struct tb_loc loc;
	struct tb_rec *r;
	bool read;

	/* Never stored if newer than the newest (the common case: c is the
	 * chunk the writer was on when it was scraped). */
	if (seq && seq->valid && tb_id_after(c + 1, seq->newest))
		return false;
	r = tb_index_find(b, l, tb_chunk_key(p, w, c + 1), &loc);
	if (!r)
		return false;
	read = atomic_load_explicit(&r->read_state, memory_order_relaxed) > 0;
	tb_seg_unpin(b, loc.seg, &l->ctr);
	return read;
}

/*
 * Re-commit of stored record r (pinned at loc) per trace-buffer.md §2.2.
 * Unpins it.
 */
static int tb_recommit(struct svc_tbuf *b, struct tb_lane *l, struct tb_rec *r,
		       const struct tb_loc *loc, const struct svc_tbuf_chunk *c,
		       uint32_t nfrags, uint32_t flags)
{
	uint32_t old = atomic_load_explicit(&r->meta, memory_order_relaxed);
	uint32_t meta = tb_m_make(nfrags, flags, c->complete);
	struct tb_loc nloc;
	struct tb_rec *n;
	int rc = SVC_TBUF_REWRITTEN;

	if (r->payload_len != c->len || nfrags < tb_m_nfrags(old) ||
	    (tb_m_flags(old) & ~flags))
		goto violation;
	if (nfrags == tb_m_nfrags(old)) {
		/* A duplicate (e.g. scraped Complete, then committed). */
		rc = SVC_TBUF_IGNORED;
		goto out;
	}
	/* New fragments after chunk c + 1 was read would come out of
	 * order. */
	if (tb_next_was_read(b, l, c->producer_id, c->writer_id, c->chunk_id))
		goto violation;
	if (tb_rec_write_lock(r, &old)) {
		memcpy((uint8_t *)(r + 1), c->payload, c->len);
		if (!tb_m_nfrags(old) && tb_m_nfrags(meta))
			tb_seg_pending(b, r, 1);
		tb_rec_write_unlock(r, meta);
	} else {
		n = tb_relocate_begin(b, l, r, c->payload, &nloc);
		if (!n) {
			tb_count(&l->ctr, TB_C_CHUNKS_DISCARDED, 1);
			rc = -ENOSPC;
			goto out;
		}
		tb_relocate_finish(b, l, r, n, &nloc, meta);
	}
	tb_count(&l->ctr, TB_C_CHUNKS_REWRITTEN, 1);
	goto out;
violation:
	tb_count(&l->ctr, TB_C_ABI_VIOLATIONS, 1);
	rc = -EPROTO;
out:
	tb_seg_unpin(b, loc->seg, &l->ctr);
	return rc;
}

/*
 * Copies a new record's payload (len bytes from the lane's private copy at
 * src) into the buffer at dst with streaming stores where the CPU has them:
 * the payload is written once here and read much later by a reader, so
 * filling the cache with it (and reading each destination line for
 * ownership first) would only cost. Sets l->nt_pending: the publication
 * that follows (tb_lane_publish_now) fences them first, since a release
 * store alone does not order non-temporal stores on x86.
 */
static void tb_payload_copy(struct tb_lane *l, uint8_t *dst, const uint8_t *src,
			    uint32_t len)
{
#ifdef __SSE2__
	/* Whole cache lines only: the first and last line of a record share
	 * a line with its header or the next record, which get ordinary
	 * stores, and a partial streamed line costs a read of memory. */
	uint32_t i, head = (uint32_t)(-(uintptr_t)dst & 63u);

	if (head >= len) {
		memcpy(dst, src, len);
		return;
	}
	memcpy(dst, src, head);
	for (i = head; len - i >= 64; i += 64) {
		__m128i a = _mm_loadu_si128((const __m128i *)(src + i));
		__m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
		__m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
		__m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));

		_mm_stream_si128((__m128i *)(dst + i), a);
		_mm_stream_si128((__m128i *)(dst + i + 16), b);
		_mm_stream_si128((__m128i *)(dst + i + 32), c);
		_mm_stream_si128((__m128i *)(dst + i + 48), d);
	}
	memcpy(dst + i, src + i, len - i);
	l->nt_pending = true;
#else
	(void)l;
	memcpy(dst, src, len);
#endif
}

/* Stores a new chunk of sequence seq (NULL when it could not be had). */
static int tb_store_new(struct svc_tbuf *b, struct tb_lane *l,
			struct tb_lane_seq *seq,
			const struct svc_tbuf_chunk *c, uint32_t meta)
{
	uint32_t rec_len = tb_align16(TB_REC_HDR + c->len);
	struct tb_loc loc;
	struct tb_rec *r;
	int rc;

	if (b->policy == SVC_TBUF_DISCARD &&
	    atomic_load_explicit(&b->discarding, memory_order_relaxed)) {
		rc = -ENOSPC;
	} else {
		rc = tb_lane_reserve(b, l, rec_len, &loc);
	}
	if (rc < 0) {
		tb_count(&l->ctr, rc == -ENOSPC ? TB_C_CHUNKS_DISCARDED :
						  TB_C_LOST_NO_SPACE, 1);
		return -ENOSPC;
	}
	r = tb_rec_at(b, loc.seg, loc.off);
	/* A staged payload is already there (the reservation is the same:
	 * nothing moved the cursor since svc_tbuf_lane_stage()). */
	if ((const uint8_t *)(r + 1) != c->payload)
		tb_payload_copy(l, (uint8_t *)(r + 1), c->payload, c->len);
	tb_rec_init(l, r, c->producer_id, c->writer_id, c->chunk_id, c->uid,
		    c->pid, c->len, meta, 0);
	if (tb_m_nfrags(meta))
		tb_seg_pending(b, r, 1);
	l->cur_used += rec_len;
	if (c->defer)
		l->unpublished = true;
	else
		tb_lane_publish_now(b, l);
	tb_count(&l->ctr, TB_C_CHUNKS_WRITTEN, 1);
	tb_count(&l->ctr, TB_C_BYTES_WRITTEN, tb_stat_len(c->len));
	tb_index_set(b, l, seq, tb_chunk_key(c->producer_id, c->writer_id,
					     c->chunk_id), &loc);
	return SVC_TBUF_STORED;
}

uint8_t *svc_tbuf_lane_stage(struct svc_tbuf *b, unsigned lane, uint32_t len)
{
	struct tb_lane *l;
	struct tb_loc loc;

	if (lane >= b->nlanes || b->read_only)
		return NULL;
	l = &b->lanes[lane];
	l->stage = NULL;
	tb_lane_settle(b, l);
	if (len > SVC_TBUF_MAX_PAYLOAD ||
	    tb_align16(TB_REC_HDR + len) > b->seg_size ||
	    (b->policy == SVC_TBUF_DISCARD &&
	     atomic_load_explicit(&b->discarding, memory_order_relaxed)) ||
	    tb_lane_reserve(b, l, tb_align16(TB_REC_HDR + len), &loc) < 0)
		return NULL;
	/* Past seg->used: no reader or recycler looks there, and the
	 * segment stays this lane's (CURRENT) until it seals it. */
	l->stage = (uint8_t *)(tb_rec_at(b, loc.seg, loc.off) + 1);
	l->stage_len = len;
	return l->stage;
}

int svc_tbuf_lane_commit(struct svc_tbuf *b, unsigned lane,
			 const struct svc_tbuf_chunk *c)
{
	struct tb_lane *l;
	struct tb_lane_seq *seq;
	uint32_t nfrags, flags;
	bool newer, maybe_stored = true;
	int rc;

	if (lane >= b->nlanes)
		return -EINVAL;
	if (b->read_only)
		return -EPERM;
	l = &b->lanes[lane];
	if (l->stage && c->payload == l->stage && c->len > l->stage_len) {
		/* Would not fit where it already is. */
		l->stage = NULL;
		return -EINVAL;
	}
	l->stage = NULL;
	if (c->producer_id == 0 || c->writer_id == 0 || c->writer_id > 32767 ||
	    c->nfrags > TB_M_NFRAGS || (c->len && !c->payload)) {
		tb_count(&l->ctr, TB_C_ABI_VIOLATIONS, 1);
		return -EINVAL;
	}
	if (c->len > SVC_TBUF_MAX_PAYLOAD ||
	    tb_align16(TB_REC_HDR + c->len) > b->seg_size) {
		tb_count(&l->ctr, TB_C_ABI_VIOLATIONS, 1);
		return -E2BIG;
	}
	nfrags = c->nfrags;
	flags = c->flags & SVC_CHUNK_KNOWN_FLAGS;
	if (!c->complete) {
		/* §2.3: the last fragment may still be in progress. */
		if (nfrags)
			nfrags--;
		flags &= ~(SVC_CHUNK_LAST_CONT | SVC_CHUNK_NEEDS_PATCH);
	}

	/* A chunk newer than any stored for its sequence is new for sure:
	 * skip the index lookup (the common case). */
	seq = tb_lane_seq(l, c->producer_id, c->writer_id, true);
	newer = seq && (!seq->valid || tb_id_after(c->chunk_id, seq->newest));
	if (newer)
		maybe_stored = false;
	if (maybe_stored) {
		uint64_t key = tb_chunk_key(c->producer_id, c->writer_id,
					    c->chunk_id);
		struct tb_loc loc;
		struct tb_rec *r = tb_index_find(b, l, key, &loc);

		if (r) {
			tb_lane_settle(b, l);
			return tb_recommit(b, l, r, &loc, c, nfrags, flags);
		}
		if (seq)
			tb_count(&l->ctr, TB_C_OUT_OF_ORDER, 1);
	}
	rc = tb_store_new(b, l, seq, c, tb_m_make(nfrags, flags, c->complete));
	if (rc >= 0 && newer) {
		seq->newest = c->chunk_id;
		seq->valid = true;
	}
	return rc;
}

int svc_tbuf_lane_patch(struct svc_tbuf *b, unsigned lane,
			uint16_t producer_id, uint16_t writer_id,
			uint32_t chunk_id, const struct svc_tbuf_patch *p,
			size_t n, bool has_more)
{
	struct tb_loc loc, nloc;
	struct tb_lane *l;
	struct tb_rec *r, *t = NULL;
	uint32_t meta;
	size_t good;

	if (lane >= b->nlanes || producer_id == 0 || writer_id == 0 ||
	    writer_id > 32767 || (n && !p))
		return -EINVAL;
	if (b->read_only)
		return -EPERM;
	if (n > SVC_TBUF_MAX_PATCHES)
		return -E2BIG;
	l = &b->lanes[lane];
	l->stage = NULL;	/* a relocation below may take its room */
	tb_lane_settle(b, l);
	r = tb_index_find(b, l, tb_chunk_key(producer_id, writer_id, chunk_id),
			  &loc);
	if (!r) {
		tb_count(&l->ctr, TB_C_PATCHES_FAILED, 1);
		return -ENOENT;
	}
	/* Patches apply in order up to the first one out of bounds. */
	for (good = 0; good < n; good++)
		if (p[good].offset > r->payload_len ||
		    r->payload_len - p[good].offset < 4)
			break;
	if (good || (good == n && !has_more)) {
		if (tb_rec_write_lock(r, &meta)) {
			t = r;
		} else {
			t = tb_relocate_begin(b, l, r, NULL, &nloc);
			if (!t) {
				tb_seg_unpin(b, loc.seg, &l->ctr);
				tb_count(&l->ctr, TB_C_PATCHES_FAILED, 1);
				return -ENOSPC;
			}
			meta = atomic_load_explicit(&r->meta,
						    memory_order_relaxed);
		}
		for (size_t i = 0; i < good; i++)
			memcpy((uint8_t *)(t + 1) + p[i].offset, p[i].data, 4);
		if (good == n && !has_more)
			meta &= ~(SVC_CHUNK_NEEDS_PATCH << TB_M_FLAGS_SHIFT);
		if (t == r)
			tb_rec_write_unlock(r, meta);
		else
			tb_relocate_finish(b, l, r, t, &nloc, meta);
	}
	tb_seg_unpin(b, loc.seg, &l->ctr);
	if (good < n) {
		tb_count(&l->ctr, TB_C_PATCHES_FAILED, 1);
		return -ERANGE;
	}
	tb_count(&l->ctr, TB_C_PATCHES_OK, n);
	return (int)n;
}

void svc_tbuf_lane_publish(struct svc_tbuf *b, unsigned lane)
{
	if (lane < b->nlanes)
		tb_lane_settle(b, &b->lanes[lane]);
}
