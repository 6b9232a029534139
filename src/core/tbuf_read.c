// SPDX-License-Identifier: Apache-2.0
// Reader side of the trace buffers (trace-buffer.md §4, §5): finds the
// records the lanes published, orders them per sequence, returns whole
// packets with reassembly across chunks, and marks every loss.
//
// Control plane only, one reader at a time per buffer (rd.mu); lanes never
// wait for it. The reader keeps its own index: for every segment, how far
// it has scanned which generation; for every sequence, the stored chunks it
// has not consumed yet, sorted by chunk id (modular), and where the last
// consumed one is. Each pass first scans what the lanes appended since the
// last pass (under a pin of each segment, `used` read with acquire), then
// walks the sequences. A chunk's payload is parsed in place while the
// reader holds the segment pin and the record's READING bit; fragments are
// copied straight into the output. A reassembled packet keeps a pin on every
// chunk it took a piece from until its consumption is recorded, so a chunk
// is counted either read or overwritten, never both.
//
// Order and loss rules (V1 semantics): a sequence stops for the pass at a
// chunk that needs patches, at an incomplete (scraped) chunk, at a packet
// whose continuation is missing or waits for patches, and at a chunk-id gap
// while the chunk before the gap is still stored (it may arrive late; since
// a lane evicts in commit order, once that chunk is gone the gap is given
// up). previous_packet_dropped carries DataLossReason bits, PRESENT always
// set, on the next packet returned for the sequence; like V1 the first
// packet of every sequence is flagged.
#include "core/tbuf_int.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem_hooks.h"
#include "spindle/pb.h"

/* Writer histogram bucket bounds (constants.md §6); bucket 10 = above. */
static const uint32_t tb_hist_bounds[SVC_TBUF_HIST_BUCKETS - 1] = {
	8, 32, 128, 512, 1024, 2048, 4096, 8192, 12288, 16384,
};

int tb_reader_init(struct svc_tbuf *b)
{
	struct tb_reader *rd = &b->rd;

	rd->scan_gen = svc_mem_calloc(b->nseg, sizeof(uint32_t));
	rd->scan_off = svc_mem_calloc(b->nseg, sizeof(uint32_t));
	rd->wm = svc_mem_calloc(b->nlanes, sizeof(uint64_t));
	if (!rd->scan_gen || !rd->scan_off || !rd->wm)
		return -ENOMEM;
	if (pthread_mutex_init(&rd->mu, NULL) != 0)
		return -ENOMEM;
	rd->live = true;
	return 0;
}

void tb_reader_fini(struct svc_tbuf *b)
{
	struct tb_reader *rd = &b->rd;

	for (uint32_t i = 0; i < rd->nseqs; i++) {
		svc_mem_free(rd->seqs[i]->v);
		svc_mem_free(rd->seqs[i]);
	}
	svc_mem_free(rd->seqs);
	svc_mem_free(rd->holds);
	svc_mem_free(rd->scan_gen);
	svc_mem_free(rd->scan_off);
	svc_mem_free(rd->wm);
	if (rd->live)
		pthread_mutex_destroy(&rd->mu);
	memset(rd, 0, sizeof(*rd));
}

void svc_tbuf_out_free(struct svc_tbuf_out *out)
{
	svc_mem_free(out->data);
	memset(out, 0, sizeof(*out));
}

/* Makes room for `extra` more bytes. 0 or -ENOMEM. */
static int tb_out_reserve(struct svc_tbuf_out *out, size_t extra)
{
	size_t cap;
	uint8_t *p;

	if (out->cap - out->len >= extra)
		return 0;
	cap = out->cap ? out->cap : 4096;
	while (cap - out->len < extra)
		cap *= 2;
	p = svc_mem_realloc(out->data, cap);
	if (!p)
		return -ENOMEM;
	out->data = p;
	out->cap = cap;
	return 0;
}

/* ---- Sequences and chunk references ---------------------------------- */

static uint32_t tb_seq_key(uint16_t p, uint16_t w)
{
	return ((uint32_t)p << 16) | w;
}

/* Index of the first sequence whose key is >= key. */
static uint32_t tb_rseq_lower(const struct tb_reader *rd, uint32_t key)
{
	uint32_t lo = 0, hi = rd->nseqs;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct tb_rseq *s = rd->seqs[mid];

		if (tb_seq_key(s->producer_id, s->writer_id) < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The reader's sequence (p, w), created if new; NULL if out of memory. */
static struct tb_rseq *tb_rseq_get(struct tb_reader *rd, uint16_t p,
				   uint16_t w)
{
	uint32_t key = tb_seq_key(p, w);
	uint32_t i = tb_rseq_lower(rd, key);
	struct tb_rseq *s;

	if (i < rd->nseqs && tb_seq_key(rd->seqs[i]->producer_id,
					rd->seqs[i]->writer_id) == key)
		return rd->seqs[i];
	if (rd->nseqs == rd->seqs_cap) {
		uint32_t cap = rd->seqs_cap ? rd->seqs_cap * 2 : 16;
		struct tb_rseq **v = svc_mem_realloc(rd->seqs,
						     cap * sizeof(*v));

		if (!v)
			return NULL;
		rd->seqs = v;
		rd->seqs_cap = cap;
	}
	s = svc_mem_calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->producer_id = p;
	s->writer_id = w;
	s->loss = SVC_LOSS_PRESENT;	/* V1 flags a sequence's first packet */
	memmove(&rd->seqs[i + 1], &rd->seqs[i],
		(rd->nseqs - i) * sizeof(rd->seqs[0]));
	rd->seqs[i] = s;
	rd->nseqs++;
	return s;
}

/* Room for one more chunk reference at the end. 0 or -ENOMEM. */
static int tb_cref_reserve(struct tb_rseq *s)
{
	struct tb_cref *v;
	uint32_t cap;

	if (s->n < s->cap)
		return 0;
	if (s->head > 0) {
		memmove(s->v, &s->v[s->head], (s->n - s->head) * sizeof(*v));
		s->n -= s->head;
		s->head = 0;
		return 0;
	}
	cap = s->cap ? s->cap * 2 : 16;
	v = svc_mem_realloc(s->v, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	s->v = v;
	s->cap = cap;
	return 0;
}

/* Room for one chunk reference before the first live one, for a reader
 * fed newest first (a clone's copy, tbuf_clone.c): the live ones move back
 * by as many as there are (at least 16), so each insertion at the front is
 * O(1) amortised. 0 or -ENOMEM. */
static int tb_cref_reserve_front(struct tb_rseq *s)
{
	uint32_t live = s->n - s->head, room = live > 16 ? live : 16;
	struct tb_cref *v = s->v;

	if (s->head > 0)
		return 0;
	if (s->cap < live + room) {
		v = svc_mem_realloc(s->v, (live + room) * sizeof(*v));
		if (!v)
			return -ENOMEM;
		s->v = v;
		s->cap = live + room;
	}
	memmove(&v[room], v, live * sizeof(*v));
	s->head = room;
	s->n = room + live;
	return 0;
}

static uint64_t tb_rec_key(const struct tb_rec *r)
{
	return ((uint64_t)r->producer_id << 48) |
	       ((uint64_t)r->writer_id << 32) | r->chunk_id;
}

/*
 * Records that v fragments of record r (its segment pinned by the caller)
 * were consumed. If the owner lane relocated the record meanwhile, passes
 * the progress on along the fwd chain (see tb_relocate_finish()), holding a
 * pin on each record while looking at it.
 */
static void tb_set_read_state(struct svc_tbuf *b, struct tb_rec *r, uint32_t v)
{
	uint64_t key = tb_rec_key(r);
	uint32_t pinned = UINT32_MAX;	/* segment we pinned for r, if any */

	tb_seg_touch(b, r);
	tb_atomic_max(&r->read_state, v);
	/* Bounded: each hop is a relocation that happened during our hold. */
	for (int hop = 0; hop < 8; hop++) {
		/* seq_cst: pairs with the lane's DEAD fetch_or. */
		uint32_t m = atomic_load_explicit(&r->meta,
						  memory_order_seq_cst);
		struct tb_loc loc;
		struct tb_rec *n;

		if (!(m & TB_M_DEAD) ||
		    !tb_loc_unpack(b, atomic_load_explicit(&r->fwd,
							   memory_order_relaxed),
				   &loc) ||
		    !tb_seg_pin(b, loc.seg, loc.gen))
			break;
		n = tb_rec_at(b, loc.seg, loc.off);
		if (tb_rec_key(n) != key) {
			tb_seg_unpin(b, loc.seg, &b->rd.ctr);
			break;
		}
		tb_seg_touch(b, n);
		tb_atomic_max(&n->read_state, v);
		if (pinned != UINT32_MAX)
			tb_seg_unpin(b, pinned, &b->rd.ctr);
		pinned = loc.seg;
		r = n;
	}
	if (pinned != UINT32_MAX)
		tb_seg_unpin(b, pinned, &b->rd.ctr);
}

/* Marks a record (its segment pinned by the caller) as read through. */
static void tb_rec_mark_read(struct svc_tbuf *b, struct tb_rec *r)
{
	uint32_t m = atomic_load_explicit(&r->meta, memory_order_relaxed);

	tb_set_read_state(b, r, tb_m_nfrags(m));
}

/*
 * Records that the published record r (segment seg, generation gen, pinned)
 * holds chunk r->chunk_id of its sequence. A newer copy of a chunk replaces
 * the location of the older one; a chunk the reader already moved past is
 * marked read and dropped. 0 or -ENOMEM.
 */
static int tb_cref_add(struct svc_tbuf *b, struct tb_rec *r, uint32_t seg,
		       uint32_t gen, uint32_t off)
{
	struct tb_reader *rd = &b->rd;
	struct tb_rseq *s = tb_rseq_get(rd, r->producer_id, r->writer_id);
	uint32_t id = r->chunk_id;
	uint32_t i;

	if (!s)
		return -ENOMEM;
	if (s->has_last && !tb_id_after(id, s->last_id)) {
		/* Same id as the consumed chunk: a relocated copy of it.
		 * Older, or a chunk given up on: it came too late. */
		if (id != s->last_id || s->last_virtual)
			tb_count(&rd->ctr, TB_C_DROPPED_LATE, 1);
		tb_rec_mark_read(b, r);
		return 0;
	}
	if (s->n > s->head && tb_id_after(s->v[s->head].chunk_id, id)) {
		/* Before every live one: the front, without a scan. */
		if (tb_cref_reserve_front(s) < 0)
			return -ENOMEM;
		s->v[--s->head] = (struct tb_cref){
			.chunk_id = id, .seg = seg, .gen = gen, .off = off,
			.serial = r->serial,
		};
		return 0;
	}
	if (tb_cref_reserve(s) < 0)
		return -ENOMEM;
	for (i = s->n; i > s->head && tb_id_after(s->v[i - 1].chunk_id, id);)
		i--;
	if (i > s->head && s->v[i - 1].chunk_id == id) {
		struct tb_cref *c = &s->v[i - 1];

		if (r->serial > c->serial) {
			c->seg = seg;
			c->gen = gen;
			c->off = off;
			c->serial = r->serial;
			c->gone_pass = 0;
		}
		return 0;
	}
	memmove(&s->v[i + 1], &s->v[i], (s->n - i) * sizeof(s->v[0]));
	s->v[i] = (struct tb_cref){
		.chunk_id = id, .seg = seg, .gen = gen, .off = off,
		.serial = r->serial,
	};
	s->n++;
	return 0;
}

/* Pins whatever generation segment seg holds, if it is readable. */
static bool tb_seg_pin_current(struct svc_tbuf *b, uint32_t seg, uint32_t *gen)
{
	uint64_t st = atomic_load_explicit(&b->segs[seg].state,
					   memory_order_acquire);
	enum tb_kind kind = tb_st_kind(st);

	if ((kind != TB_CURRENT && kind != TB_FULL) || (st & TB_CONDEMNED))
		return false;
	*gen = tb_st_gen(st);
	return tb_seg_pin(b, seg, *gen);
}

/*
 * Indexes the records published since the last pass, up to each lane's
 * publication watermark taken first. Segments are visited in index order,
 * not in the order lanes filled them, so without the watermark a pass
 * could see a lane's newer record and miss an older one published while
 * the scan was under way, and take the older one for lost. With it, every
 * record a lane published before the watermark is indexed (or was evicted)
 * and nothing after it is. 0 or -ENOMEM.
 */
static int tb_scan(struct svc_tbuf *b)
{
	struct tb_reader *rd = &b->rd;

	for (unsigned l = 0; l < b->nlanes; l++)
		/* Acquire: pairs with the lane's release after publishing. */
		rd->wm[l] = atomic_load_explicit(&b->lanes[l].published,
						 memory_order_acquire);

	for (uint32_t seg = 0; seg < b->nseg; seg++) {
		struct tb_seg *s = &b->segs[seg];
		uint32_t gen, used, off;
		int rc = 0;

		if (!tb_seg_pin_current(b, seg, &gen))
			continue;
		if (rd->scan_gen[seg] != gen) {
			rd->scan_gen[seg] = gen;
			rd->scan_off[seg] = 0;
		}
		/* Acquire: pairs with the owner lane's release of used. */
		used = atomic_load_explicit(&s->used, memory_order_acquire);
		off = rd->scan_off[seg];
		while (used > off && used - off >= TB_REC_HDR) {
			struct tb_rec *r = (struct tb_rec *)(s->data + off);
			uint32_t m;

			if (r->rec_len < TB_REC_HDR || (r->rec_len & 15) ||
			    r->rec_len > used - off)
				break;	/* cannot happen: lanes write these */
			/* A segment holds one lane's records in serial
			 * order: stop at the first one past the mark. */
			if ((r->serial >> TB_SERIAL_LANE_SHIFT) < b->nlanes &&
			    (r->serial & TB_SERIAL_MASK) >
				    rd->wm[r->serial >> TB_SERIAL_LANE_SHIFT])
				break;
			m = atomic_load_explicit(&r->meta, memory_order_relaxed);
			if (!(m & TB_M_DEAD)) {
				rc = tb_cref_add(b, r, seg, gen, off);
				if (rc < 0)
					break;
			}
			off += r->rec_len;
		}
		rd->scan_off[seg] = off;
		tb_seg_unpin(b, seg, &rd->ctr);
		if (rc < 0)
			return rc;
	}
	return 0;
}

int tb_reader_scan(struct svc_tbuf *b)
{
	return tb_scan(b);
}

/* ---- Chunks and fragments --------------------------------------------- */

/* Outcome of taking a chunk for reading. */
enum tb_hold_rc {
	TB_HOLD_OK,		/* pinned, READING set */
	TB_HOLD_EVICTED,	/* the record is gone */
	TB_HOLD_MOVED,		/* relocated; the copy shows up in a later scan */
};

/* Pins c's segment and sets READING on its record. */
static enum tb_hold_rc tb_hold(struct svc_tbuf *b, const struct tb_cref *c,
			       struct tb_rec **rec, uint32_t *meta)
{
	struct tb_rec *r;
	uint32_t m;

	if (!tb_seg_pin(b, c->seg, c->gen))
		return TB_HOLD_EVICTED;
	r = tb_rec_at(b, c->seg, c->off);
	m = atomic_load_explicit(&r->meta, memory_order_relaxed);
	for (;;) {
		if (m & TB_M_DEAD) {
			tb_seg_unpin(b, c->seg, &b->rd.ctr);
			return TB_HOLD_MOVED;
		}
		if (m & TB_M_WRITING) {
			/* The owner lane rewrites it: a memcpy at most. */
			sched_yield();
			m = atomic_load_explicit(&r->meta, memory_order_relaxed);
			continue;
		}
		/* Acquire: pairs with the lane's release of WRITING, so its
		 * payload writes are visible. */
		if (atomic_compare_exchange_weak_explicit(
			    &r->meta, &m, m | TB_M_READING,
			    memory_order_acquire, memory_order_relaxed))
			break;
	}
	*rec = r;
	*meta = m;
	return TB_HOLD_OK;
}

/*
 * A reference whose record is gone is given up only in a later pass than
 * the one that first found it gone: a relocated copy of the chunk,
 * published before the eviction, is then in the index (see tb_scan()).
 */
static bool tb_gone_confirmed(struct tb_reader *rd, struct tb_cref *c)
{
	if (!c->gone_pass) {
		c->gone_pass = rd->pass;
		rd->retry = true;
		return false;
	}
	return c->gone_pass != rd->pass;
}

/* Drops READING (keeps the pin). */
static void tb_unread(struct tb_rec *r)
{
	/* Release: our reads of the payload happen before the lane's
	 * acquire CAS that sets WRITING. */
	atomic_fetch_and_explicit(&r->meta, ~TB_M_READING,
				  memory_order_release);
}

static void tb_release(struct svc_tbuf *b, const struct tb_cref *c,
		       struct tb_rec *r)
{
	tb_unread(r);
	tb_seg_unpin(b, c->seg, &b->rd.ctr);
}

enum tb_frag_rc tb_frag_parse(const uint8_t *pl, uint32_t len,
				     uint32_t off, uint32_t *doff,
				     uint32_t *size)
{
	uint32_t v = 0;

	for (uint32_t i = 0; i < 4; i++) {
		uint8_t c;

		if (i >= len - off)
			return TB_FRAG_BAD;
		c = pl[off + i];
		v |= (uint32_t)(c & 0x7F) << (7 * i);
		if (c & 0x80)
			continue;
		if (v == SPN_PB_MAX_NESTED_SIZE)
			return TB_FRAG_DROP;
		*doff = off + i + 1;
		if (v > len - *doff)
			return TB_FRAG_BAD;
		*size = v;
		return TB_FRAG_OK;
	}
	return TB_FRAG_BAD;
}

static uint32_t tb_seqid(struct tb_rseq *s, struct svc_seqids *ids)
{
	if (s->ids != ids || !s->seqid) {
		s->seqid = svc_seqids_get(ids, s->producer_id, s->writer_id);
		s->ids = ids;
	}
	return s->seqid;
}

/*
 * Finishes the packet whose `plen` bytes sit at out->data + at + 6: checks
 * it, writes the Trace framing in front and the trailer after it. On an
 * invalid packet the output is cut back to `at`. Returns 1 (appended), 0
 * (dropped as invalid) or -ENOMEM (cut back; nothing changed).
 */
static int tb_finish_packet(struct svc_tbuf *b, struct tb_rseq *s,
			    struct svc_seqids *ids, const struct tb_rec *r,
			    struct svc_tbuf_out *out, size_t at, size_t plen)
{
	uint8_t tr[TB_TRAILER_MAX], hdr[1 + SPN_PB_MAX_VARINT];
	uint32_t seqid, loss;
	size_t tlen, hlen;

	if (!tb_packet_valid(out->data + at + 6, plen)) {
		tb_count(&b->rd.ctr, TB_C_INVALID_PACKETS, 1);
		s->loss |= SVC_LOSS_PRESENT;
		out->len = at;
		return 0;
	}
	seqid = tb_seqid(s, ids);
	if (!seqid || tb_out_reserve(out, TB_TRAILER_MAX) < 0) {
		out->len = at;
		return -ENOMEM;
	}
	loss = s->loss ? s->loss | SVC_LOSS_PRESENT : 0;
	tlen = tb_trailer(tr, r->uid, seqid, r->pid, loss);
	hdr[0] = 0x0A;	/* Trace.packet, length-delimited */
	hlen = (size_t)(spn_pb_put_varint(hdr + 1, plen + tlen) - hdr);
	memmove(out->data + at + hlen, out->data + at + 6, plen);
	memcpy(out->data + at, hdr, hlen);
	memcpy(out->data + at + hlen + plen, tr, tlen);
	out->len = at + hlen + plen + tlen;
	s->loss = 0;
	return 1;
}

/* Appends a one-fragment packet. 1, 0 (invalid, dropped) or -ENOMEM. */
static int tb_emit(struct svc_tbuf *b, struct tb_rseq *s,
		   struct svc_seqids *ids, const struct tb_rec *r,
		   struct svc_tbuf_out *out, const uint8_t *data, uint32_t size)
{
	size_t at = out->len;

	if (tb_out_reserve(out, 6 + (size_t)size + TB_TRAILER_MAX) < 0)
		return -ENOMEM;
	memcpy(out->data + at + 6, data, size);
	out->len = at + 6 + size;
	return tb_finish_packet(b, s, ids, r, out, at, size);
}

/* Drops every reassembly pin. */
static void tb_holds_release(struct svc_tbuf *b)
{
	for (uint32_t i = 0; i < b->rd.nholds; i++)
		tb_seg_unpin(b, b->rd.holds[i].seg, &b->rd.ctr);
	b->rd.nholds = 0;
}

static int tb_holds_push(struct tb_reader *rd, const struct tb_hold *h)
{
	if (rd->nholds == rd->holds_cap) {
		uint32_t cap = rd->holds_cap ? rd->holds_cap * 2 : 16;
		struct tb_hold *v = svc_mem_realloc(rd->holds,
						    cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		rd->holds = v;
		rd->holds_cap = cap;
	}
	rd->holds[rd->nholds++] = *h;
	return 0;
}

static void tb_hist_add(struct tb_rseq *s, uint32_t used);

/* Outcome of a reassembly. */
enum tb_ra_rc {
	TB_RA_DONE,		/* packet appended (or dropped as invalid) */
	TB_RA_WAIT,		/* a later piece is missing or waits for patches */
	TB_RA_BROKEN,		/* cannot be completed; loss marked */
};

/*
 * Appends the next piece (fragment 0 of chunk reference idx) of the packet
 * being reassembled. Sets *last when it is the final piece. Returns a
 * tb_ra_rc, or -ENOMEM.
 */
static int tb_ra_piece(struct svc_tbuf *b, struct tb_rseq *s, uint32_t idx,
		       struct svc_tbuf_out *out, bool *last)
{
	struct tb_cref *c = &s->v[idx];
	uint32_t m, nf, fl, doff, size;
	struct tb_rec *r;
	enum tb_frag_rc fr;
	int rc = TB_RA_BROKEN;

	switch (tb_hold(b, c, &r, &m)) {
	case TB_HOLD_EVICTED:
		if (!tb_gone_confirmed(&b->rd, c))
			return TB_RA_WAIT;
		s->loss |= SVC_LOSS_REASSEMBLY_GAP;
		return TB_RA_BROKEN;
	case TB_HOLD_MOVED:
		return TB_RA_WAIT;
	case TB_HOLD_OK:
		break;
	}
	nf = tb_m_nfrags(m);
	fl = tb_m_flags(m);
	if (!(fl & SVC_CHUNK_FIRST_CONT) || c->frags_done) {
		s->loss |= SVC_LOSS_REASSEMBLY_BROKEN_CHAIN;
		goto out;
	}
	if ((fl & SVC_CHUNK_NEEDS_PATCH) || (nf == 0 && !(m & TB_M_COMPLETE))) {
		rc = TB_RA_WAIT;
		goto out;
	}
	if (nf == 0) {
		s->loss |= SVC_LOSS_REASSEMBLY_BROKEN_CHAIN;
		goto out;
	}
	fr = tb_frag_parse((const uint8_t *)(r + 1), r->payload_len, 0, &doff,
			   &size);
	if (fr != TB_FRAG_OK) {
		if (fr == TB_FRAG_DROP) {
			tb_count(&b->rd.ctr, TB_C_WRITER_PACKET_LOSS, 1);
			s->loss |= SVC_LOSS_WRITER_ABORT;
		} else {
			tb_count(&b->rd.ctr, TB_C_ABI_VIOLATIONS, 1);
			s->loss |= SVC_LOSS_CHUNK_CORRUPTED;
		}
		goto out;
	}
	if (tb_out_reserve(out, size) < 0 ||
	    tb_holds_push(&b->rd, &(struct tb_hold){
		    .seg = c->seg, .idx = idx,
		    .whole = nf == 1 && (m & TB_M_COMPLETE) }) < 0) {
		rc = -ENOMEM;
		goto out;
	}
	memcpy(out->data + out->len, (const uint8_t *)(r + 1) + doff, size);
	out->len += size;
	if (doff + size > c->used_bytes)
		c->used_bytes = doff + size;
	*last = !(nf == 1 && (fl & SVC_CHUNK_LAST_CONT));
	tb_unread(r);	/* the pin stays until consumption is recorded */
	return TB_RA_DONE;
out:
	tb_release(b, c, r);
	return rc;
}

/*
 * Reassembles the packet that starts with the last fragment (data, size)
 * of the chunk at the head of sequence s (held by the caller) and goes on
 * in chunks id + 1, id + 2, ... (smb-abi.md §6.3). Returns a tb_ra_rc, or
 * -ENOMEM (nothing consumed). On TB_RA_DONE *emitted says whether the
 * packet was appended (0: it failed validation and was dropped).
 */
static int tb_reassemble(struct svc_tbuf *b, struct tb_rseq *s,
			 struct svc_seqids *ids, const struct tb_rec *head,
			 struct svc_tbuf_out *out, const uint8_t *data,
			 uint32_t size, int *emitted)
{
	size_t at = out->len;
	uint32_t idx = s->head + 1, id = s->v[s->head].chunk_id + 1;
	bool last = false;
	int rc;

	if (tb_out_reserve(out, 6 + (size_t)size) < 0)
		return -ENOMEM;
	memcpy(out->data + at + 6, data, size);
	out->len = at + 6 + size;
	do {
		if (idx >= s->n || s->v[idx].chunk_id != id) {
			rc = TB_RA_WAIT;	/* not (yet) stored */
			break;
		}
		rc = tb_ra_piece(b, s, idx, out, &last);
		idx++;
		id++;
	} while (rc == TB_RA_DONE && !last);
	if (rc == TB_RA_DONE) {
		int fin = tb_finish_packet(b, s, ids, head, out, at,
					   out->len - at - 6);

		if (fin < 0) {
			rc = fin;
		} else {
			*emitted = fin;
			/* Every piece's fragment 0 is consumed; the pins
			 * keep the records until read_state says so, and a
			 * piece consumed whole is counted read now, while it
			 * cannot be evicted. */
			for (uint32_t i = 0; i < b->rd.nholds; i++) {
				const struct tb_hold *h = &b->rd.holds[i];
				struct tb_cref *c = &s->v[h->idx];
				struct tb_rec *r = tb_rec_at(b, c->seg, c->off);

				c->frags_done = 1;
				tb_set_read_state(b, r, 1);
				if (!h->whole)
					continue;
				c->done = true;
				tb_count(&b->rd.ctr, TB_C_CHUNKS_READ, 1);
				tb_count(&b->rd.ctr, TB_C_BYTES_READ,
					 tb_stat_len(r->payload_len));
				tb_hist_add(s, c->used_bytes);
			}
		}
	}
	if (rc != TB_RA_DONE)
		out->len = at;
	tb_holds_release(b);
	return rc;
}

/* Adds a fully read chunk to its writer's histogram. */
static void tb_hist_add(struct tb_rseq *s, uint32_t used)
{
	uint32_t i = 0;

	while (i < SVC_TBUF_HIST_BUCKETS - 1 && used > tb_hist_bounds[i])
		i++;
	s->hist_counts[i]++;
	s->hist_sums[i] += used;
}

/*
 * Reads what it can of the chunk at the head of sequence s (held: r, m).
 * Returns the packets appended. Sets *stop when the sequence must wait
 * (patches, reassembly, or out of memory: b->rd.oom set).
 */
static int tb_read_chunk(struct svc_tbuf *b, struct tb_rseq *s,
			 struct svc_seqids *ids, struct tb_rec *r, uint32_t m,
			 struct svc_tbuf_out *out, size_t limit, bool *stop)
{
	struct tb_cref *c = &s->v[s->head];
	const uint8_t *pl = (const uint8_t *)(r + 1);
	uint32_t nf = tb_m_nfrags(m), fl = tb_m_flags(m), len = r->payload_len;
	uint32_t k, off = 0, doff, size;
	int n = 0, rc, err = 0;

	/* Skip what earlier passes consumed. */
	for (k = 0; k < c->frags_done && k < nf; k++) {
		if (tb_frag_parse(pl, len, off, &doff, &size) != TB_FRAG_OK)
			break;
		off = doff + size;
	}
	if (k < c->frags_done && k < nf) {
		/* The consumed prefix no longer parses: the producer
		 * rewrote it. Give the rest of the chunk up. */
		tb_count(&b->rd.ctr, TB_C_ABI_VIOLATIONS, 1);
		s->loss |= SVC_LOSS_CHUNK_CORRUPTED;
		c->frags_done = (uint16_t)nf;
	}
	for (k = c->frags_done; k < nf; k++) {
		enum tb_frag_rc fr;

		if ((fl & SVC_CHUNK_NEEDS_PATCH) && k == nf - 1) {
			*stop = true;	/* §3: wait for the patches */
			break;
		}
		fr = tb_frag_parse(pl, len, off, &doff, &size);
		if (fr != TB_FRAG_OK) {
			if (fr == TB_FRAG_DROP) {
				tb_count(&b->rd.ctr, TB_C_WRITER_PACKET_LOSS, 1);
				s->loss |= SVC_LOSS_WRITER_ABORT;
			} else {
				tb_count(&b->rd.ctr, TB_C_ABI_VIOLATIONS, 1);
				s->loss |= SVC_LOSS_CHUNK_CORRUPTED;
			}
			c->frags_done = (uint16_t)nf;
			break;
		}
		off = doff + size;
		if (off > c->used_bytes)
			c->used_bytes = off;
		if (k == 0 && (fl & SVC_CHUNK_FIRST_CONT)) {
			/* Its beginning was not returned: orphan. */
			s->loss |= SVC_LOSS_ORPHAN_CONTINUATION;
			c->frags_done = 1;
			continue;
		}
		if (k == nf - 1 && (fl & SVC_CHUNK_LAST_CONT)) {
			int emitted = 0;

			rc = tb_reassemble(b, s, ids, r, out, pl + doff, size,
					   &emitted);
			if (rc < 0) {
				err = rc;
				break;
			}
			if (rc == TB_RA_WAIT) {
				tb_count(&b->rd.ctr, TB_C_READAHEADS_FAILED, 1);
				*stop = true;
				break;
			}
			if (rc == TB_RA_DONE) {
				tb_count(&b->rd.ctr, TB_C_READAHEADS_OK, 1);
				n += emitted;
			}
			c->frags_done = (uint16_t)nf;
			break;
		}
		if (size) {
			rc = tb_emit(b, s, ids, r, out, pl + doff, size);
			if (rc < 0) {
				err = rc;
				break;
			}
			n += rc;
		}
		c->frags_done = (uint16_t)(k + 1);
		if (out->len >= limit)
			break;
	}
	tb_set_read_state(b, r, c->frags_done);
	if (err) {
		/* Out of memory: keep the rest for a later pass. */
		*stop = true;
		b->rd.oom = true;
	}
	return n;
}

/* Removes the head chunk reference, remembering it as the last one:
 * consumed (located) or evicted. */
static void tb_pop(struct tb_rseq *s, bool located)
{
	struct tb_cref *c = &s->v[s->head];

	s->has_last = true;
	s->last_id = c->chunk_id;
	s->last_located = located;
	s->last_virtual = !located;	/* evicted, not consumed */
	s->last_seg = c->seg;
	s->last_gen = c->gen;
	if (++s->head == s->n)
		s->head = s->n = 0;
}

/*
 * Reads sequence s until it must wait, runs dry or out reaches limit
 * (*full set). Returns the packets appended; b->rd.oom is set if it
 * stopped for lack of memory.
 */
static int tb_read_seq(struct svc_tbuf *b, struct tb_rseq *s,
		       struct svc_seqids *ids, struct svc_tbuf_out *out,
		       size_t limit, bool *full)
{
	int total = 0;

	for (;;) {
		struct tb_cref *c;
		struct tb_rec *r;
		bool stop = false;
		uint32_t m;
		int n;

		if (out->len >= limit) {
			*full = true;
			return total;
		}
		if (s->head == s->n)
			return total;
		c = &s->v[s->head];
		if (s->has_last && c->chunk_id != s->last_id + 1) {
			/* §4.4 V1: wait while the chunk before the gap is
			 * still stored; once it is gone, give the gap up. */
			if (!b->read_only && s->last_located &&
			    tb_seg_holds(b, s->last_seg, s->last_gen))
				return total;
			s->loss |= SVC_LOSS_READ_GAP;
			s->last_id = c->chunk_id - 1;
			s->last_located = false;
			s->last_virtual = true;
		}
		if (c->done) {
			/* A piece a reassembly consumed and counted. */
			tb_pop(s, true);
			continue;
		}
		switch (tb_hold(b, c, &r, &m)) {
		case TB_HOLD_EVICTED:
			/* Its record was overwritten. If the owner lane
			 * relocated it first, the copy shows up in the next
			 * pass's scan (the watermark is taken after now). */
			if (!tb_gone_confirmed(&b->rd, c)) {
				/* Mark the ones gone after it too, so the next
				 * pass gives them all up at once. */
				for (uint32_t j = s->head + 1; j < s->n &&
				     !tb_seg_holds(b, s->v[j].seg, s->v[j].gen);
				     j++)
					tb_gone_confirmed(&b->rd, &s->v[j]);
				return total;
			}
			s->loss |= SVC_LOSS_OVERWRITE;
			tb_pop(s, false);
			continue;
		case TB_HOLD_MOVED:
			return total;
		case TB_HOLD_OK:
			break;
		}
		n = tb_read_chunk(b, s, ids, r, m, out, limit, &stop);
		total += n;
		if ((m & TB_M_COMPLETE) && c->frags_done >= tb_m_nfrags(m)) {
			tb_count(&b->rd.ctr, TB_C_CHUNKS_READ, 1);
			tb_count(&b->rd.ctr, TB_C_BYTES_READ,
				 tb_stat_len(r->payload_len));
			tb_hist_add(s, c->used_bytes);
			tb_release(b, c, r);
			tb_pop(s, true);
			continue;
		}
		tb_release(b, c, r);
		/* Not finished: patches, an incomplete chunk (§2.3: never
		 * read past it), a wait, or the limit. */
		if (!stop && out->len >= limit)
			*full = true;
		return total;
	}
}

int svc_tbuf_read(struct svc_tbuf *b, struct svc_seqids *ids,
		  struct svc_tbuf_out *out, size_t limit, bool *drained)
{
	struct tb_reader *rd = &b->rd;
	bool full = false;
	uint32_t start, i;
	int total = 0, rc;

	*drained = false;
	pthread_mutex_lock(&rd->mu);
	rd->oom = false;
	rd->retry = false;
	if (++rd->pass == 0)	/* 0 means "not seen gone" */
		rd->pass = 1;
	/* Out of memory while scanning: read what is indexed, then fail. */
	rc = tb_scan(b);
	start = tb_rseq_lower(rd, rd->resume_key);
	for (i = 0; i < rd->nseqs && !full; i++) {
		struct tb_rseq *s = rd->seqs[(start + i) % rd->nseqs];

		total += tb_read_seq(b, s, ids, out, limit, &full);
		if (full)
			rd->resume_key = tb_seq_key(s->producer_id,
						    s->writer_id);
	}
	if (!full)
		rd->resume_key = 0;
	if (rc < 0 || rd->oom) {
		rc = total ? total : -ENOMEM;
	} else {
		*drained = !full && !rd->retry;
		rc = total;
	}
	pthread_mutex_unlock(&rd->mu);
	return rc;
}

int svc_tbuf_for_each_writer(struct svc_tbuf *b, struct svc_seqids *ids,
			     int (*cb)(void *ctx,
				       const struct svc_tbuf_writer_stats *w),
			     void *ctx)
{
	struct tb_reader *rd = &b->rd;
	int rc = 0;

	pthread_mutex_lock(&rd->mu);
	for (uint32_t i = 0; i < rd->nseqs && !rc; i++) {
		struct tb_rseq *s = rd->seqs[i];
		struct svc_tbuf_writer_stats w = {
			.producer_id = s->producer_id,
			.writer_id = s->writer_id,
			.sequence_id = tb_seqid(s, ids),
		};

		if (!w.sequence_id) {
			rc = -ENOMEM;
			break;
		}
		memcpy(w.counts, s->hist_counts, sizeof(w.counts));
		memcpy(w.sums, s->hist_sums, sizeof(w.sums));
		rc = cb(ctx, &w);
	}
	pthread_mutex_unlock(&rd->mu);
	return rc;
}
