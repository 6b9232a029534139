// SPDX-License-Identifier: Apache-2.0
// Trace buffer snapshots for CloneSession (trace-buffer.md §8): a read-only
// copy of a live buffer, taken while its lanes keep writing, and the
// sealing of a buffer moved whole into a clone (transfer_on_clone).
//
// Why the copy is consistent without stopping the lanes. The copy runs as a
// reader would (under rd.mu, so no read pass of the source runs meanwhile):
// it first lets the reader index what the lanes published up to a
// per-lane watermark (tb_reader_scan()), then copies every indexed, not yet
// consumed chunk, sequence by sequence, each under a pin of its segment
// and the record's READING bit. A lane never waits for that: a re-commit
// or patch of a record we hold is relocated (copy on write), and a segment
// we pin that the ring wants is condemned, not waited for. A record found
// relocated (DEAD) is followed along its fwd chain to the newest copy, so a
// chunk rewritten after the watermark is not lost. Records published after
// the watermark are left out whole; since a lane publishes in commit order,
// the copy holds a prefix of each sequence, less what the ring evicted
// while we copied (the copy's reader marks each such gap as a loss).
//
// Newest first. Within a sequence the chunks are copied from the newest
// down. A ring buffer recycles its oldest segments first, so a copy that
// started with the oldest would race the lanes at the very point they
// overwrite, and a copy slower than a lane writing flat out (a worker at
// SCHED_IDLE is) would lose everything; newest first, it keeps all it
// reaches before the lanes come round, and loses only the oldest part. The
// copy's reader is built for that order (tb_cref_add's front insertion).
//
// The source's read progress is carried over by leaving out what it already
// returned: whole chunks it consumed are not in its index any more, and the
// fragments consumed from a partly read chunk are cut off its copy (a read
// always stops at a packet boundary, so the rest starts a packet: the copy
// drops FIRST_CONT). Nothing in the source changes except its reader's
// index, which the next read would have built the same way.
#include "core/tbuf_int.h"

#include <errno.h>
#include <sched.h>
#include <string.h>

/* Hops along a relocation chain before a chunk is given up (a relocation
 * needs a rewrite while we hold the record: more than a few is absurd). */
#define TBC_MAX_HOPS 8

/*
 * Pins the newest copy of the chunk c refers to and sets READING on it.
 * Returns the record (its segment pinned: *seg) and its meta, or NULL if
 * the chunk is gone (evicted, or relocated too often).
 */
static struct tb_rec *tbc_hold(struct svc_tbuf *b, const struct tb_cref *c,
			       uint32_t *seg, uint32_t *meta)
{
	struct tb_rec *r;
	uint64_t key;
	uint32_t m;
	int hops = 0;

	if (!tb_seg_pin(b, c->seg, c->gen))
		return NULL;
	*seg = c->seg;
	r = tb_rec_at(b, c->seg, c->off);
	key = ((uint64_t)r->producer_id << 48) |
	      ((uint64_t)r->writer_id << 32) | r->chunk_id;
	m = atomic_load_explicit(&r->meta, memory_order_relaxed);
	for (;;) {
		if (m & TB_M_DEAD) {
			struct tb_loc loc;
			struct tb_rec *n;
			uint64_t nkey;

			/* seq_cst: pairs with the lane's DEAD fetch_or after
			 * it stored fwd (as in tb_set_read_state()). */
			m = atomic_load_explicit(&r->meta,
						 memory_order_seq_cst);
			if (++hops > TBC_MAX_HOPS ||
			    !tb_loc_unpack(b, atomic_load_explicit(
						      &r->fwd,
						      memory_order_relaxed),
					   &loc) ||
			    !tb_seg_pin(b, loc.seg, loc.gen))
				goto gone;
			n = tb_rec_at(b, loc.seg, loc.off);
			nkey = ((uint64_t)n->producer_id << 48) |
			       ((uint64_t)n->writer_id << 32) | n->chunk_id;
			if (nkey != key) {
				tb_seg_unpin(b, loc.seg, &b->rd.ctr);
				goto gone;
			}
			tb_seg_unpin(b, *seg, &b->rd.ctr);
			*seg = loc.seg;
			r = n;
			m = atomic_load_explicit(&r->meta,
						 memory_order_relaxed);
			continue;
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
	*meta = m;
	return r;
gone:
	tb_seg_unpin(b, *seg, &b->rd.ctr);
	return NULL;
}

/*
 * Copies what is left of record r (meta m; `done` fragments of it already
 * returned by the source) into lane 0 of the copy. 0 (also when the rest
 * cannot be parsed: the source would skip it as lost) or -ENOSPC.
 */
static int tbc_copy_rec(struct svc_tbuf *copy, const struct tb_rec *r,
			uint32_t m, uint32_t done)
{
	const uint8_t *pl = (const uint8_t *)(r + 1);
	uint32_t nfrags = tb_m_nfrags(m), flags = tb_m_flags(m), off = 0;
	struct svc_tbuf_chunk ch;
	struct tb_rec *dst;
	uint8_t *room;
	int rc;

	if (done > nfrags)
		return 0;
	for (uint32_t k = 0; k < done; k++) {
		uint32_t doff, size;

		if (tb_frag_parse(pl, r->payload_len, off, &doff, &size) !=
		    TB_FRAG_OK)
			return 0;
		off = doff + size;
	}
	if (done)
		flags &= ~SVC_CHUNK_FIRST_CONT;
	ch = (struct svc_tbuf_chunk){
		.producer_id = r->producer_id, .writer_id = r->writer_id,
		.chunk_id = r->chunk_id, .uid = r->uid, .pid = r->pid,
		.nfrags = (uint16_t)(nfrags - done), .flags = (uint8_t)flags,
		.complete = true, .len = r->payload_len - off,
	};
	room = svc_tbuf_lane_stage(copy, 0, ch.len);
	if (!room)
		return -ENOSPC;
	memcpy(room, pl + off, ch.len);
	ch.payload = room;
	rc = svc_tbuf_lane_commit(copy, 0, &ch);
	if (rc != SVC_TBUF_STORED)
		return rc < 0 ? rc : -EPROTO;
	/* The record header sits right before its payload. Keep the source's
	 * COMPLETE bit (a scraped chunk stays incomplete): the copy is not
	 * shared yet, so a relaxed store is enough. */
	dst = (struct tb_rec *)room - 1;
	atomic_store_explicit(&dst->meta,
			      tb_m_make(nfrags - done, flags,
					(m & TB_M_COMPLETE) != 0),
			      memory_order_relaxed);
	return 0;
}

/* Copies every chunk the source's reader has indexed and not consumed,
 * each sequence newest first (see the top of the file). */
static int tbc_copy_all(struct svc_tbuf *b, struct svc_tbuf *copy)
{
	struct tb_reader *rd = &b->rd;

	for (uint32_t i = 0; i < rd->nseqs; i++) {
		struct tb_rseq *s = rd->seqs[i];

		for (uint32_t j = s->n; j-- > s->head;) {
			const struct tb_cref *c = &s->v[j];
			struct tb_rec *r;
			uint32_t seg, m;
			int rc;

			if (c->done)
				continue;
			r = tbc_hold(b, c, &seg, &m);
			if (!r)
				continue;	/* evicted: lost in the source too */
			rc = tbc_copy_rec(copy, r, m, c->frags_done);
			/* Release: our reads of the payload happen before the
			 * lane's acquire CAS that sets WRITING. */
			atomic_fetch_and_explicit(&r->meta, ~TB_M_READING,
						  memory_order_release);
			tb_seg_unpin(b, seg, &rd->ctr);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

/* The copy's counters: the source's sums, minus what reading counts. */
static void tbc_copy_stats(const struct svc_tbuf *b, struct svc_tbuf *copy)
{
	uint64_t v[TB_C_COUNT] = { 0 };

	for (unsigned i = 0; i < b->nlanes; i++)
		for (int c = 0; c < TB_C_COUNT; c++)
			v[c] += atomic_load_explicit(&b->lanes[i].ctr.v[c],
						     memory_order_relaxed);
	for (int c = 0; c < TB_C_COUNT; c++)
		v[c] += atomic_load_explicit(&b->rd.ctr.v[c],
					     memory_order_relaxed);
	v[TB_C_BYTES_READ] = v[TB_C_CHUNKS_READ] = 0;
	v[TB_C_READAHEADS_OK] = v[TB_C_READAHEADS_FAILED] = 0;
	for (int c = 0; c < TB_C_COUNT; c++) {
		for (unsigned i = 0; i < copy->nlanes; i++)
			atomic_store_explicit(&copy->lanes[i].ctr.v[c], 0,
					      memory_order_relaxed);
		atomic_store_explicit(&copy->rd.ctr.v[c], v[c],
				      memory_order_relaxed);
	}
}

int svc_tbuf_clone(struct svc_tbuf *b, struct svc_tbuf **out)
{
	struct svc_tbuf *copy;
	uint64_t size;
	int rc;

	*out = NULL;
	/* Room for everything b maps, whatever the packing: untouched pages
	 * of the (unpopulated) mapping cost nothing. DISCARD: running out
	 * fails the copy instead of overwriting part of it. */
	size = 2ull * b->data_len + 4ull * b->seg_size;
	if (size > SVC_TBUF_MAX_SIZE)
		size = SVC_TBUF_MAX_SIZE;
	rc = svc_tbuf_create(size, SVC_TBUF_DISCARD, 1, 0, &copy);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&b->rd.mu);
	rc = tb_reader_scan(b);
	if (rc == 0)
		rc = tbc_copy_all(b, copy);
	if (rc == 0)
		tbc_copy_stats(b, copy);
	pthread_mutex_unlock(&b->rd.mu);
	if (rc < 0) {
		svc_tbuf_destroy(copy);
		return rc == -ENOMEM ? -ENOMEM : -ENOSPC;
	}
	copy->size = b->size;
	copy->policy = b->policy;
	copy->read_only = true;
	*out = copy;
	return 0;
}

void svc_tbuf_seal(struct svc_tbuf *b)
{
	/* Under the reader mutex: a reader pass sees the flag either for
	 * the whole pass or not at all. No lane writes any more (the
	 * caller's contract), so none reads it concurrently. */
	pthread_mutex_lock(&b->rd.mu);
	b->read_only = true;
	pthread_mutex_unlock(&b->rd.mu);
}
