// SPDX-License-Identifier: Apache-2.0
// The trace writer's slow path: taking and handing back chunks, splitting packets across chunks, nested sizes that land in an earlier chunk (direct SMB patches or CommitData patches), and dropping packets when the SMB is full.
//
// Everything here runs on the writer's owner thread, between its
// in_packet = 1 (with the barrier) and in_packet = 0 (release), except
// smb_arbiter_reclaim(), which is the I/O thread's side of the reclaim
// hand-shake (arbiter.c).
//
// Fragments (smb-abi.md §6.3). When a packet outgrows its chunk, the open
// fragment's size is back-filled with what it holds, the chunk gets
// LastPacketContinuesOnNextChunk, and the packet continues in a new chunk
// (id + 1) whose header starts as count 1 + FirstPacketContinuesFromPrevChunk.
// Nested messages still open whose size slot stays behind are recorded in a
// `pend` entry (one per chunk) and the old chunk gets ChunkNeedsPatching;
// their sizes are patched when they close (tw_patch()): in place while the
// chunk is still ours, else as a patch riding on the node of the chunk being
// written then. The packet offset of every byte is packet_base + (its offset
// in the current fragment), a running count, so a size spanning chunks is a
// difference of two such offsets.
//
// Losses. If no chunk can be had in the middle of a packet, the open
// fragment's size becomes the drop marker (0x0FFFFFFF), the chunk is
// completed without the continuation flag, the rest of the packet goes to a
// private sink, and the next packet that lands in the SMB starts with
// previous_packet_dropped = PRESENT | SMB_FULL (257). Earlier chunks of the
// dropped packet that still wait for patches get them anyway (with the sizes
// as they stood, riding on the chunk that gets the marker), so the service
// never keeps the sequence blocked.
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "smb/arbiter.h"
#include "spindle/trace_writer.h"

/* First byte of the payload of a chunk. */
static uint8_t *tw_payload(struct spn_smb_chunk_header *hdr)
{
	return (uint8_t *)hdr + SPN_SMB_CHUNK_HEADER_SIZE;
}

/* Bytes of the open packet written so far (all fragments). */
static uint64_t tw_packet_pos(const struct spn_tw *tw)
{
	return tw->packet_base +
	       (uint64_t)(tw->cur - (tw->frag + SPN_SMB_PACKET_HEADER_SIZE));
}

/* Leaves tw without a chunk: the next packet start takes the slow path. */
static void tw_set_no_chunk(struct spn_tw *tw)
{
	tw->has_chunk = false;
	smb_tw_aim_at_scratch(tw);
	tw->count = 0;
	tw->packets = 0;
	tw->gen++;
}

/* Whether a packet needing `need` bytes may start in the writable area: the
 * room is there and the chunk has not reached the packet limit. */
static bool tw_has_room(const struct spn_tw *tw, size_t need)
{
	return (size_t)(tw->end - tw->cur) >= need &&
	       tw->count < SPN_SMB_WRITER_MAX_PACKETS;
}

/* Makes the chunk at *loc (just acquired with `packets`) the current one. */
static void tw_use_chunk(struct spn_tw *tw, const struct smb_loc *loc,
			 uint16_t packets)
{
	struct smb_arbiter *arb = tw->arb;

	smb_arbiter_publish_w(loc, tw->next_chunk_id, packets);
	tw->hdr = loc->hdr;
	tw->page = loc->page;
	tw->chunk = loc->chunk;
	tw->layout = loc->layout;
	tw->rides = false;
	tw->has_chunk = true;
	/* The node is IDLE (checked when the chunk was taken): ours to fill. */
	smb_arbiter_node(arb, loc->page, loc->chunk)->npatches = 0;
	tw->chunk_id = tw->next_chunk_id++;
	tw->count = spn_smb_packets_count(packets);
	tw->packets = packets;
	tw->cur = tw_payload(loc->hdr);
	tw->chunk_end = (uint8_t *)loc->hdr + arb->smb.chunk_size[loc->layout];
	tw->end = tw->chunk_end;
	if (arb->smb.chunk_size[loc->layout] >= SPN_TW_SOFT_CHUNK)
		tw->end -= SPN_TW_SOFT_END;
	tw->gen++;
	tw->stats.chunks++;
}

/* The writer reached the soft end of its chunk: take the next chunk ahead
 * and write on to the real end (arbiter.h, "Reserved chunks"). Returns
 * false when it was at the real end already. */
static bool tw_soft_end(struct spn_tw *tw)
{
	if (tw->end == tw->chunk_end)
		return false;
	tw->end = tw->chunk_end;
	smb_arbiter_reserve_w(tw->arb, tw);
	return true;
}

/* Hands the current chunk back: Complete and queued. */
static void tw_release_chunk(struct spn_tw *tw)
{
	smb_arbiter_commit_w(tw->arb, tw->page, tw->chunk, tw->target_buffer,
			     tw->writer_id, tw->chunk_id, false);
	tw_set_no_chunk(tw);
}

/*
 * Answers the I/O thread's reclaim word (called with in_packet == 1 and the
 * barrier done). REQUESTED: cancel it and hand the chunk back ourselves at
 * the end of what we are doing. STEALING: the I/O thread saw us outside a
 * packet and is taking our chunk; wait for it (a CAS and a push). STOLEN:
 * forget the chunk. Returns with reclaim == NONE.
 */
static void tw_reclaim_ack(struct spn_tw *tw)
{
	/* Acquire: pairs with the I/O thread's release store of STOLEN. */
	uint32_t st = atomic_load_explicit(&tw->reclaim, memory_order_acquire);
	unsigned spins = 0;

	for (;;) {
		switch (st) {
		case SPN_TW_RECLAIM_NONE:
			return;
		case SPN_TW_RECLAIM_REQUESTED:
			/* Acquire (both ways): on failure we may read
			 * STOLEN, released by the I/O thread. */
			if (atomic_compare_exchange_weak_explicit(
				    &tw->reclaim, &st, SPN_TW_RECLAIM_NONE,
				    memory_order_acquire, memory_order_acquire)) {
				tw->slow_end = 1; /* hand back at the end */
				return;
			}
			continue;
		case SPN_TW_RECLAIM_STEALING:
			if (++spins > 64)
				sched_yield();
			st = atomic_load_explicit(&tw->reclaim, memory_order_acquire);
			continue;
		default: /* STOLEN */
			if (tw->has_chunk)
				tw->stats.stolen++;
			tw_set_no_chunk(tw);
			/* Relaxed: the I/O thread only CASes NONE -> REQUESTED
			 * next, and what it then reads of us is ordered by
			 * in_packet. */
			atomic_store_explicit(&tw->reclaim, SPN_TW_RECLAIM_NONE,
					      memory_order_relaxed);
			return;
		}
	}
}

/*
 * Applies the size `data` at `offset` of pending chunk `pidx`: in place in
 * the SMB while the chunk is still ours (direct patching; the last patch
 * completes it), else as a patch riding on the current chunk's node, sent
 * when that chunk is committed (after the pending chunk's move).
 */
static void tw_patch(struct spn_tw *tw, int32_t pidx, uint32_t offset,
		     const uint8_t data[4])
{
	struct spn_tw_pend *p = &tw->pend[pidx];
	struct smb_arbiter *arb = tw->arb;

	if (arb->opts.direct_patching) {
		uint64_t open = smb_node_word(tw->writer_id, p->chunk_id, SMB_NODE_OPEN);

		/* Winning means the drain has not claimed the chunk: it is
		 * still BeingWritten and ours. Acquire orders our patch after
		 * the win; the release stores below publish it to the drain. */
		if (atomic_compare_exchange_strong_explicit(
			    &p->node->state, &open,
			    smb_node_word(tw->writer_id, p->chunk_id, SMB_NODE_PATCHING),
			    memory_order_acquire, memory_order_relaxed)) {
			memcpy(tw_payload(p->hdr) + offset, data, 4);
			tw->stats.patches_direct++;
			if (--p->open == 0) {
				spn_smb_chunk_clear_flags(p->hdr, SPN_SMB_NEEDS_PATCHING);
				smb_arbiter_complete(arb, p->page, p->chunk);
				/* Release: pairs with the drain's acquire
				 * load; it lists the chunk only after. */
				atomic_store_explicit(&p->node->state,
						      smb_node_word(tw->writer_id,
								    p->chunk_id,
								    SMB_NODE_QUEUED),
						      memory_order_release);
			} else {
				/* Release: the patch is in before the drain
				 * can claim the chunk. */
				atomic_store_explicit(&p->node->state,
						      smb_node_word(tw->writer_id,
								    p->chunk_id,
								    SMB_NODE_OPEN),
						      memory_order_release);
			}
			return;
		}
	}
	/* The chunk was handed to the service (or no direct patching). At
	 * most one patch per open level lands while a chunk is current, so
	 * the node has room (SMB_PATCHES_PER_NODE); it has a block because
	 * the chunk was taken while this packet had sizes pending. */
	{
		struct smb_chunk_node *cur = smb_arbiter_node(arb, tw->page, tw->chunk);
		struct smb_patch *sp = &cur->patches[cur->npatches++];

		p->open--;
		sp->chunk_id = p->chunk_id;
		sp->offset = (uint16_t)offset;
		sp->more = p->open != 0;
		memcpy(sp->data, data, 4);
		tw->rides = true;
		tw->stats.patches_ipc++;
	}
}

/* Closes level l, whose slot is in an earlier chunk, with the size it has
 * now. */
static void tw_close_pending(struct spn_tw *tw, struct spn_tw_level *l)
{
	uint64_t size = tw_packet_pos(tw) - l->start;
	uint8_t data[4];

	spn_pb_put_varint4(data, (uint32_t)(size & SPN_PB_MAX_NESTED_SIZE));
	tw_patch(tw, l->pend, l->offset, data);
	l->pend = -1;
}

/* The rest of the open packet goes to the scratch sink (it is lost for
 * `reason`, a DataLossReason bit, which the next packet reports). */
static void tw_start_sink(struct spn_tw *tw, uint32_t reason)
{
	tw->lost |= SPN_TW_LOSS_PRESENT | reason;
	tw->dropping = true;
	tw->slow_end = 1;
	tw->hdr = (struct spn_smb_chunk_header *)(void *)tw->scratch;
	tw->frag = tw->scratch + SPN_SMB_CHUNK_HEADER_SIZE;
	tw->cur = tw->frag + SPN_SMB_PACKET_HEADER_SIZE;
	tw->end = tw->chunk_end = tw->scratch + SPN_TW_SCRATCH_SIZE;
	tw->gen++;
}

/*
 * Gives up the open packet (SMB full, nesting too deep, or a message too
 * large): earlier chunks waiting for patches get them, the open
 * fragment becomes a drop marker and its chunk is handed back, and the rest
 * of the packet goes to the scratch sink. `reason` is a DataLossReason bit.
 */
static void tw_abort_packet(struct spn_tw *tw, uint32_t reason)
{
	uint32_t i;

	if (tw->dropping)
		return;
	for (i = tw->depth; i-- > 0;) {
		struct spn_tw_level *l = &tw->nest[i];

		if (l->gen != tw->gen && l->pend >= 0)
			tw_close_pending(tw, l);
	}
	for (i = 0; i < tw->depth; i++) {
		tw->nest[i].slot = tw->dummy_slot;
		tw->nest[i].gen = tw->gen; /* the sink gets a newer gen */
		tw->nest[i].pend = -1;
	}
	if (tw->has_chunk) {
		uint8_t *frag = tw->frag;

		spn_pb_put_varint4(frag, SPN_SMB_DROP_PACKET_SIZE);
		tw_release_chunk(tw);
	}
	tw_start_sink(tw, reason);
}

/* Records the levels whose slots stay behind in the current chunk (gen ==
 * tw->gen, `nopen` of them) as pending in record `pidx`. */
static void tw_record_pending(struct spn_tw *tw, int32_t pidx, uint32_t nopen)
{
	struct spn_tw_pend *p = &tw->pend[pidx];
	uint8_t *payload = tw_payload(tw->hdr);
	uint32_t i;

	p->open = nopen;
	p->chunk_id = tw->chunk_id;
	p->hdr = tw->hdr;
	p->page = tw->page;
	p->chunk = tw->chunk;
	for (i = 0; i < tw->depth; i++) {
		struct spn_tw_level *l = &tw->nest[i];

		if (l->gen != tw->gen)
			continue;
		l->pend = pidx;
		l->offset = (uint32_t)(l->slot - payload);
		l->start = tw->packet_base + (uint64_t)(l->slot - tw->frag);
	}
}

/*
 * The open packet needs more room than the current chunk has: continue it
 * in a new chunk (see the top of the file). While dropping, the scratch
 * sink simply starts over.
 */
static void tw_next_chunk(struct spn_tw *tw)
{
	uint16_t packets = spn_smb_packets(1, SPN_SMB_FIRST_CONTINUES);
	uint32_t i, nopen = 0, npend = 0, frag_len;
	struct smb_chunk_node *node;
	int32_t pidx = -1;
	struct smb_loc loc;

	if (tw->dropping) {
		for (i = 0; i < tw->depth; i++)
			if (tw->nest[i].gen == tw->gen)
				tw->nest[i].pend = -1;
		tw->cur = tw->frag + SPN_SMB_PACKET_HEADER_SIZE;
		tw->gen++;
		return;
	}
	for (i = 0; i < tw->depth; i++)
		nopen += tw->nest[i].gen == tw->gen;
	for (i = 0; i < SPN_TW_MAX_NESTING; i++)
		npend += tw->pend[i].open != 0;
	if (nopen) {
		for (pidx = 0; tw->pend[pidx].open != 0; pidx++)
			; /* fewer records than levels in use: one is free */
	}
	/* While sizes of this packet are pending, the chunk being written
	 * must be able to carry their patches (tw_patch). */
	if ((nopen || npend) && !tw->spare) {
		tw->spare = malloc(SMB_PATCHES_PER_NODE * sizeof(*tw->spare));
		if (!tw->spare) {
			tw_abort_packet(tw, SPN_TW_LOSS_WRITER_ABORT);
			return;
		}
	}
	if (smb_arbiter_acquire_w(tw->arb, tw, tw->next_chunk_id, packets,
				  nopen || npend, &loc) != 0) {
		tw_abort_packet(tw, SPN_TW_LOSS_SMB_FULL);
		return;
	}
	/* Close the old chunk's fragment with what it holds, flag it, and
	 * queue it (kept BeingWritten for direct patches if sizes are open). */
	frag_len = (uint32_t)(tw->cur - (tw->frag + SPN_SMB_PACKET_HEADER_SIZE));
	spn_pb_put_varint4(tw->frag, frag_len);
	if (nopen)
		tw_record_pending(tw, pidx, nopen);
	spn_smb_chunk_set_flags(tw->hdr, SPN_SMB_LAST_CONTINUES |
						 (nopen ? SPN_SMB_NEEDS_PATCHING : 0));
	node = smb_arbiter_commit_w(tw->arb, tw->page, tw->chunk, tw->target_buffer,
				    tw->writer_id, tw->chunk_id,
				    nopen && tw->arb->opts.direct_patching);
	if (nopen)
		tw->pend[pidx].node = node;
	tw->packet_base += frag_len;
	tw_use_chunk(tw, &loc, packets);
	tw->frag = tw->cur;
	memset(tw->frag, 0, SPN_SMB_PACKET_HEADER_SIZE);
	tw->cur += SPN_SMB_PACKET_HEADER_SIZE;
	tw->stats.fragments_split++;
}

int _spn_tw_begin_packet_slow(struct spn_tw *tw)
{
	struct smb_loc loc;
	bool full;

	/* Relaxed: tw_reclaim_ack reloads it with acquire. */
	if (atomic_load_explicit(&tw->reclaim, memory_order_relaxed) != 0)
		tw_reclaim_ack(tw);
	tw_soft_end(tw);
	full = tw->has_chunk && !tw_has_room(tw, SPN_TW_MIN_ROOM);
	tw->stats.packets++;
	if (full && smb_arbiter_handoff_w(tw->arb, tw, &loc)) {
		/* The I/O thread completes and queues the full chunk; we
		 * go on in our standby chunk (arbiter.h, "Hand-off"). */
		tw_use_chunk(tw, &loc, 0);
	} else if (full || !tw->has_chunk) {
		/* The next chunk first, then the full one: taking our standby
		 * chunk before the push lets the drain that push wakes park
		 * the next one (arbiter.h, "Standby chunks"). */
		int r = smb_arbiter_acquire_w(tw->arb, tw, tw->next_chunk_id, 0, false,
					      &loc);

		if (full)
			tw_release_chunk(tw);
		if (r != 0) {
			tw_start_sink(tw, SPN_TW_LOSS_SMB_FULL);
			return -ENOSPC;
		}
		tw_use_chunk(tw, &loc, 0);
	}
	tw->count++;
	tw->packets++;
	/* Release: as in spn_tw_begin_packet(). */
	atomic_store_explicit(&tw->hdr->packets, tw->packets, memory_order_release);
	tw->frag = tw->cur;
	memset(tw->cur, 0, SPN_SMB_PACKET_HEADER_SIZE);
	tw->cur += SPN_SMB_PACKET_HEADER_SIZE;
	if (tw->lost) {
		/* Room: SPN_TW_MIN_ROOM covers it. */
		tw->cur = spn_pb_field_varint(tw->cur, SPN_TW_FIELD_PREVIOUS_PACKET_DROPPED,
					      tw->lost);
		tw->lost = 0;
	}
	return 0;
}

/*
 * spn_tw_small_begin() found too little room (or a reclaim, a drop, the
 * packet limit). Does the two common chunk-boundary steps itself, as
 * _spn_tw_begin_packet_slow() would: the soft end, and at a full chunk the
 * hand-off to the parked standby chunk; then opens the small packet where
 * the fast path would have. Before this, such events went the long way
 * (begin_packet, the packet encoded on the stack, then appended), code
 * that runs once a chunk and came cold: sdk_bench, 1 thread, slice events'
 * chunk change median 90 -> 20 ns. Everything else, and a packet that
 * must say previous_packet_dropped first, gets NULL and the long way.
 */
uint8_t *_spn_tw_small_begin_slow(struct spn_tw *tw, size_t max)
{
	size_t need = max + SPN_SMB_PACKET_HEADER_SIZE + SPN_TW_MIN_ROOM;
	struct smb_loc loc;

	/* Relaxed: the long way's slow path acknowledges it. */
	if (atomic_load_explicit(&tw->reclaim, memory_order_relaxed) != 0 ||
	    tw->slow_end || tw->lost || !tw->has_chunk)
		return NULL;
	tw_soft_end(tw);
	if (!tw_has_room(tw, SPN_TW_MIN_ROOM)) {
		/* Full, at a packet boundary: as in _spn_tw_begin_packet_slow. */
		if (!smb_arbiter_handoff_w(tw->arb, tw, &loc))
			return NULL;
		tw_use_chunk(tw, &loc, 0);
	}
	if (!tw_has_room(tw, need))
		return NULL;
	_spn_tw_count_packet(tw, tw->cur);
	return tw->cur + SPN_SMB_PACKET_HEADER_SIZE;
}

void _spn_tw_end_packet_slow(struct spn_tw *tw)
{
	bool handback;

	while (tw->dead_depth || tw->depth)
		_spn_tw_end_nested_slow(tw);
	if (!tw->frag) {
		/* end without begin: nothing is open */
	} else if (tw->dropping) {
		tw->dropping = false;
		tw->stats.packets_dropped++;
		atomic_fetch_add_explicit(&tw->arb->stats.packets_dropped, 1,
					  memory_order_relaxed);
		tw_set_no_chunk(tw);
	} else {
		spn_pb_put_varint4(tw->frag, (uint32_t)(tw->cur - tw->frag -
							SPN_SMB_PACKET_HEADER_SIZE));
		/* Relaxed: tw_reclaim_ack reloads it with acquire. */
		if (atomic_load_explicit(&tw->reclaim, memory_order_relaxed) != 0)
			tw_reclaim_ack(tw);
		/* The I/O thread asked for the chunk (flush, or the SMB runs
		 * short) while we were inside this packet. */
		handback = tw->slow_end;
		if (handback && tw->has_chunk) {
			tw_release_chunk(tw);
			tw->stats.handbacks++;
		}
	}
	tw->frag = NULL;
	tw->slow_end = 0;
	/* Release: as in spn_tw_end_packet(). */
	atomic_store_explicit(&tw->in_packet, 0, memory_order_release);
}

void _spn_tw_write_slow(struct spn_tw *tw, const void *data, size_t len)
{
	const uint8_t *src = data;

	if (!tw->frag)
		return; /* outside a packet: nothing to write into */
	while (len) {
		size_t room = (size_t)(tw->end - tw->cur), n;

		if (room == 0) {
			if (!tw_soft_end(tw))
				tw_next_chunk(tw);
			continue;
		}
		n = room < len ? room : len;
		memcpy(tw->cur, src, n);
		tw->cur += n;
		src += n;
		len -= n;
	}
}

void _spn_tw_bytes_slow(struct spn_tw *tw, uint32_t field, const void *data,
			size_t len)
{
	uint8_t b[SPN_PB_MAX_KEY + SPN_PB_MAX_VARINT], *p;

	p = spn_pb_put_key(b, field, SPN_PB_LEN);
	p = spn_pb_put_varint(p, len);
	_spn_tw_write_slow(tw, b, (size_t)(p - b));
	_spn_tw_write_slow(tw, data, len);
}

void _spn_tw_begin_nested_slow(struct spn_tw *tw, uint32_t field)
{
	size_t need = spn_pb_varint_len((uint64_t)field << 3) + SPN_PB_NESTED_SIZE;
	struct spn_tw_level *l;

	if (!tw->frag)
		return; /* outside a packet */
	if (tw->depth >= SPN_TW_MAX_NESTING) {
		tw_abort_packet(tw, SPN_TW_LOSS_WRITER_ABORT);
		tw->dead_depth++;
		return;
	}
	/* The size slot must not straddle chunks: start a new one if the key
	 * and the slot do not fit (the old one keeps a few unused bytes). */
	if ((size_t)(tw->end - tw->cur) < need)
		tw_soft_end(tw);
	if ((size_t)(tw->end - tw->cur) < need)
		tw_next_chunk(tw);
	l = &tw->nest[tw->depth++];
	tw->cur = spn_pb_begin_nested(tw->cur, field, &l->slot);
	l->gen = tw->gen;
	l->pend = -1;
}

void _spn_tw_end_nested_slow(struct spn_tw *tw)
{
	struct spn_tw_level *l;

	if (tw->dead_depth) {
		tw->dead_depth--;
		return;
	}
	if (tw->depth == 0)
		return; /* more ends than begins: ignore */
	l = &tw->nest[--tw->depth];
	if (l->gen == tw->gen) {
		spn_pb_end_nested(l->slot, tw->cur);
		return;
	}
	if (l->pend < 0)
		return; /* dead level, or its slot was in a wrapped scratch */
	if (tw_packet_pos(tw) - l->start > SPN_PB_MAX_NESTED_SIZE) {
		/* Larger than a 4-byte size can say: the packet is lost. */
		tw->depth++;
		tw_abort_packet(tw, SPN_TW_LOSS_WRITER_ABORT);
		tw->depth--;
		return;
	}
	tw_close_pending(tw, l);
}

int spn_tw_flush(struct spn_tw *tw)
{
	if (tw->frag)
		return -EBUSY;
	/* As in spn_tw_begin_packet(). */
	_spn_tw_enter(tw);
	if (_spn_tw_reclaim(tw) != 0)
		tw_reclaim_ack(tw);
	if (tw->has_chunk) {
		tw_release_chunk(tw);
		tw->stats.handbacks++;
	}
	tw->slow_end = 0;
	/* Release: as in spn_tw_end_packet(). */
	atomic_store_explicit(&tw->in_packet, 0, memory_order_release);
	return 0;
}

void spn_tw_destroy(struct spn_tw *tw)
{
	if (tw->frag)
		spn_tw_end_packet(tw);
	/* Stay "in a packet" until we are out of the registry, so the I/O
	 * thread does not steal from us meanwhile. */
	_spn_tw_enter(tw);
	if (_spn_tw_reclaim(tw) != 0)
		tw_reclaim_ack(tw);
	smb_arbiter_take_back_w(tw->arb, tw);
	if (tw->has_chunk)
		tw_release_chunk(tw);
	smb_arbiter_retire_writer_w(tw->arb, tw);
}
