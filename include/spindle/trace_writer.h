// SPDX-License-Identifier: Apache-2.0
// The trace writer: one thread's stream of TracePackets encoded straight into chunks of the SMB; the hot path as static inlines, the rest out of line (src/smb/trace_writer.c).
//
// A writer belongs to one thread (and one data-source instance); it is made
// by the arbiter (src/smb/arbiter.h) and every spn_tw_* call below is for
// its owner thread only. A packet is
//
//	spn_tw_begin_packet(tw);
//	spn_tw_varint(tw, 8, timestamp);
//	spn_tw_begin_nested(tw, 11);		// TrackEvent
//	spn_tw_string(tw, 23, "name");
//	spn_tw_end_nested(tw);
//	spn_tw_end_packet(tw);
//
// Hot path: each call checks the room left in the current chunk once and
// then writes with include/spindle/pb.h; it makes no syscall, takes no lock
// and allocates nothing. Everything rare goes to an out-of-line _slow()
// function: taking a new chunk (one CAS on a page word), splitting a packet
// across chunks (fragments, smb-abi.md §6.3), nested sizes that land in an
// earlier chunk (patched in the SMB while the chunk is still ours, else sent
// as CommitData patches, §8), the SMB being full (the packet is dropped and
// counted; the next packet says previous_packet_dropped), and handing the
// chunk back.
//
// Sharing with the SDK's I/O thread. Two words are shared: `in_packet`
// (the writer says it is inside a packet, or another call that touches its
// chunk) and `reclaim` (the I/O thread asks for the chunk back). The writer
// stores in_packet = 1 and then loads reclaim; the I/O thread stores reclaim
// and then loads in_packet. That is a Dekker pattern: each side needs its
// store ordered before its load. The I/O thread issues that barrier for
// every thread at once with membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), so
// the writer only needs a compiler barrier (heavy_fence == 0). Where
// membarrier is unavailable both sides use sequentially consistent
// operations instead (heavy_fence == 1: the writer's store becomes an xchg
// on x86). Either way, if the I/O thread finds a writer outside a packet it
// may take (steal) its partial chunk, and that writer sees the request when
// it next starts one.
#ifndef SPINDLE_TRACE_WRITER_H
#define SPINDLE_TRACE_WRITER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "spindle/pb.h"
#include "spindle/smb_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Deepest nesting of messages in one packet. A deeper begin_nested drops
 * the packet (counted, and signalled on the next one). */
#define SPN_TW_MAX_NESTING 16u
/* Room a chunk must have left for a packet to start in it: the size prefix,
 * a previous_packet_dropped field and a few small fields. */
#define SPN_TW_MIN_ROOM 24u
/* A chunk's soft end: this many bytes before its end the slow path takes
 * the next chunk ahead (arbiter.h, "Reserved chunks"), in chunks of at
 * least SPN_TW_SOFT_CHUNK bytes (the coarse layouts, not Div14's). */
#define SPN_TW_SOFT_END 256u
#define SPN_TW_SOFT_CHUNK 2048u
/* How far ahead of the cursor a small packet asks for its chunk's line for
 * writing (spn_tw_small_begin; on x86 only where the CPU has PREFETCHW). */
#define SPN_TW_PREFETCH_AHEAD 256u
/* Slots of a writer's standby ring and of its hand-off ring (a power of
 * two): how many chunks the I/O thread may park for it ahead of time, and
 * how many full chunks it may leave for the I/O thread between two drains
 * (arbiter.h, "Standby chunks" and "Hand-off"). */
#define SPN_TW_RING 32u
/* Bytes of the private sink a dropped packet is written into. */
#define SPN_TW_SCRATCH_SIZE 512u

/* TracePacket.previous_packet_dropped (field 42) values the writer puts on
 * the first packet after a loss: DataLossReason bits (track-event.md §3). */
#define SPN_TW_LOSS_PRESENT 1u	     /* DATA_LOSS_PRESENT, on every loss */
#define SPN_TW_LOSS_WRITER_ABORT 128u /* DATA_LOSS_WRITER_ABORT */
#define SPN_TW_LOSS_SMB_FULL 256u    /* DATA_LOSS_SMB_FULL */
#define SPN_TW_FIELD_PREVIOUS_PACKET_DROPPED 42u

/* States of spn_tw.reclaim (written by both threads, see the top). */
enum spn_tw_reclaim {
	SPN_TW_RECLAIM_NONE = 0,      /* nothing asked */
	SPN_TW_RECLAIM_REQUESTED = 1, /* I/O thread wants the chunk back */
	SPN_TW_RECLAIM_STEALING = 2,  /* I/O thread is taking it now */
	SPN_TW_RECLAIM_STOLEN = 3,    /* I/O thread took it; writer resets */
};

struct smb_arbiter;
struct smb_chunk_node;
struct smb_writer_node;
struct smb_patch;

/* One open nested message. */
struct spn_tw_level {
	uint8_t *slot;	 /* its 4-byte size slot */
	uint32_t gen;	 /* tw->gen when the slot was written: the slot is in
			  * the current chunk iff gen == tw->gen */
	int32_t pend;	 /* slow path: index into tw->pend of the earlier chunk
			  * holding the slot, -1 when none (or a dead level) */
	uint64_t start;	 /* slow path: packet offset of the message payload */
	uint32_t offset; /* slow path: slot offset from its chunk's payload */
};

/* An earlier chunk of the open packet that holds size slots still open. */
struct spn_tw_pend {
	uint32_t open;	  /* slots of the chunk still open; 0 = record unused */
	uint32_t chunk_id; /* the chunk's id */
	struct spn_smb_chunk_header *hdr; /* the chunk in the SMB */
	struct smb_chunk_node *node; /* its commit node (direct patching) */
	uint32_t page;	  /* page of the chunk */
	uint32_t chunk;	  /* index of the chunk in its page */
};

/* A full chunk the owner left for the I/O thread (arbiter.h, "Hand-off"). */
struct spn_tw_handoff {
	uint64_t loc;  /* its location word (smb_standby_word) */
	uint64_t meta; /* its chunk id | its target buffer << 32 */
};

/* Counters of one writer (owner thread only; read them from that thread
 * or after it is joined). */
struct spn_tw_stats {
	uint64_t packets;	  /* packets begun */
	uint64_t packets_dropped; /* packets lost: SMB full or aborted */
	uint64_t chunks;	  /* chunks acquired */
	uint64_t fragments_split; /* chunk changes in the middle of a packet */
	uint64_t smb_full;	  /* chunk acquisitions that found no free chunk */
	uint64_t stalls;	  /* acquisitions that waited (stall mode) */
	uint64_t handbacks;	  /* partial chunks handed back (flush, reclaim) */
	uint64_t stolen;	  /* partial chunks the I/O thread took */
	uint64_t patches_direct;  /* sizes patched in place in the SMB */
	uint64_t patches_ipc;	  /* sizes sent as CommitData patches (they
				   * ride on the commit of the chunk being
				   * written when they close) */
	uint64_t standby_used;	  /* chunks taken from the standby ring (the I/O
				   * thread had acquired them for us) */
	uint64_t reserved;	  /* chunks taken ahead at a soft end */
};

/*
 * A trace writer. Fields are written by the owner thread only, except the
 * two atomics shared with the I/O thread (see the top of the file). The
 * first lines hold what the inline hot path touches.
 */
struct spn_tw {
	/* ---- hot path (owner thread) ---- */
	uint8_t *cur;	 /* next byte to write */
	uint8_t *end;	 /* end of the writable area (chunk end, or the
			  * scratch end while a packet is being dropped);
			  * cur == end between packets when there is no chunk */
	uint8_t *frag;	 /* 4-byte size prefix of the open fragment; NULL
			  * outside a packet */
	struct spn_smb_chunk_header *hdr; /* current chunk (or the scratch) */
	uint32_t count;	 /* fragments in the current chunk */
	uint32_t depth;	 /* open nested messages */
	uint32_t gen;	 /* changes whenever the bytes at cur move to another
			  * chunk (or the scratch wraps) */
	uint16_t packets; /* mirror of hdr->packets (count | flags << 10) */
	uint8_t heavy_fence; /* 1: no membarrier, seq_cst in_packet store (top) */
	uint8_t slow_end; /* end_packet must take the slow path: dropping,
			   * or a hand-back is due */
	uint8_t prefetchw; /* 1: prefetch ahead for writing (x86: the CPU
			    * has PREFETCHW; _spn_tw_prefetch_ahead) */
	/* in a packet (1) or not (0): owner stores (1 relaxed, 0 release),
	 * the I/O thread loads (acquire) */
	_Atomic uint32_t in_packet;
	/* enum spn_tw_reclaim: the I/O thread requests and steals, the owner
	 * cancels and acknowledges (CAS, see trace_writer.c) */
	_Atomic uint32_t reclaim;
	struct spn_tw_level nest[SPN_TW_MAX_NESTING]; /* open messages */

	/* ---- the exchange rings: the words the I/O thread and the owner
	 * pass chunks through (arbiter.h, "Standby chunks" and "Hand-off").
	 * Two single-producer single-consumer rings of SPN_TW_RING slots,
	 * indexes free-running (slot = index % SPN_TW_RING). Each side's
	 * words are on lines of their own, away from the hot line: the drain
	 * reads them whenever it looks for hand-offs, and a read of the hot
	 * line would make the owner's next event wait for the line to come
	 * back (sdk_bench: raw16 p99 30-40 -> 10 ns) ---- */
	/* Written by the I/O thread. Standby chunks parked so far: it fills
	 * sb_slot[sb_tail % SPN_TW_RING] (a location word, smb_standby_word:
	 * a chunk it acquired for this writer ahead of time), then stores
	 * sb_tail + 1 (release), only while sb_tail - sb_head < SPN_TW_RING */
	_Alignas(64) _Atomic uint32_t sb_tail;
	/* hand-offs taken so far: the drain, or the owner at retirement,
	 * copies ho_slot[ho_head .. ho_tail) and then moves it with a CAS
	 * (acq_rel: both may try, one wins) */
	_Atomic uint32_t ho_head;
	uint64_t sb_slot[SPN_TW_RING]; /* the standby ring's location words */
	/* Written by the owner. Standby chunks taken so far: it reads
	 * sb_slot[sb_head % SPN_TW_RING] after an acquire load of sb_tail,
	 * only inside a packet, then stores sb_head + 1 (release). The I/O
	 * thread gives the rest back (sb_head = sb_tail) only while it holds
	 * reclaim == STEALING or after the writer retired */
	_Alignas(64) _Atomic uint32_t sb_head;
	/* full chunks left for the I/O thread to complete and queue when the
	 * owner took a standby chunk: it fills ho_slot[ho_tail % SPN_TW_RING],
	 * then stores ho_tail + 1 (release) before it takes the standby
	 * chunk (the I/O thread parks standby chunks only while they fit in
	 * the ring beside the hand-offs out, so the ring has room) */
	_Atomic uint32_t ho_tail;
	struct spn_tw_handoff ho_slot[SPN_TW_RING]; /* the hand-off ring */

	/* ---- slow path (owner thread; the I/O thread reads the chunk
	 * location only while it holds reclaim == STEALING) ---- */
	struct smb_arbiter *arb;	/* the arbiter of the SMB */
	uint32_t target_buffer;		/* BufferID the chunks go to */
	uint16_t writer_id;		/* 1..32767 */
	bool has_chunk;			/* hdr is a real SMB chunk */
	bool rides;			/* patches ride on the current chunk's
					 * node (its npatches, mirrored here so
					 * the chunk change reads no node) */
	bool dropping;			/* the open packet goes to the scratch */
	uint32_t chunk_id;		/* id of the current chunk */
	uint32_t next_chunk_id;		/* id of the next chunk to acquire */
	uint32_t page;			/* page of the current chunk */
	uint32_t chunk;			/* chunk index in that page */
	uint32_t layout;		/* that page's layout */
	uint32_t page_hint;		/* where the next chunk search starts */
	/* the chunk taken at the soft end for the next chunk change
	 * (arbiter.h, "Reserved chunks"): 0, or its location word
	 * (smb_standby_word). The I/O thread frees it and stores 0 only while
	 * it holds reclaim == STEALING, or after the writer retired */
	uint64_t reserve;
	/* sb_tail as the owner last loaded it: a lower bound that spares it
	 * a load of the I/O thread's line at most chunk changes
	 * (smb_standby_next) */
	uint32_t sb_seen;
	/* real end of the writable area; in a chunk of SPN_TW_SOFT_CHUNK
	 * bytes or more, `end` stops SPN_TW_SOFT_END short of it until the
	 * slow path has reserved the next chunk */
	uint8_t *chunk_end;
	uint32_t dead_depth;		/* levels opened past the nesting limit
					 * while dropping */
	uint32_t lost;			/* DataLossReason bits the next packet
					 * must carry (0: none) */
	uint64_t packet_base;		/* bytes of the open packet in
					 * earlier fragments */
	struct spn_tw_pend pend[SPN_TW_MAX_NESTING]; /* chunks with open slots */
	/* two queue nodes: [0] announces the writer to the drain at
	 * creation, [1] retires it at destroy (the drain then frees it) */
	struct smb_writer_node *wnodes;
	/* a patch block (SMB_PATCHES_PER_NODE) ready for the next chunk
	 * that must be able to carry patches and whose node has none */
	struct smb_patch *spare;
	struct spn_tw_stats stats;	/* counters */
	uint8_t dummy_slot[4];		/* where dead levels' sizes go */
	/* sink for dropped packets: a fake chunk header, then the payload */
	_Alignas(8) uint8_t scratch[SPN_TW_SCRATCH_SIZE];
};

#ifndef __cplusplus
/* Writers are 64-byte aligned (smb_arbiter_create_writer); the hot path's
 * fields, in_packet and reclaim share the first line; the rings' words
 * start lines of their own, the I/O thread's apart from the owner's. */
_Static_assert(offsetof(struct spn_tw, reclaim) + sizeof(uint32_t) <= 64,
	       "the hot fields of a trace writer fill one cache line");
_Static_assert(offsetof(struct spn_tw, sb_slot) + sizeof(uint64_t) * SPN_TW_RING <=
		       offsetof(struct spn_tw, sb_head),
	       "the owner's ring words are not on the I/O thread's lines");
#endif

/* ---- Out of line (src/smb/trace_writer.c) ------------------------------ */

int _spn_tw_begin_packet_slow(struct spn_tw *tw);
uint8_t *_spn_tw_small_begin_slow(struct spn_tw *tw, size_t max);
void _spn_tw_end_packet_slow(struct spn_tw *tw);
void _spn_tw_write_slow(struct spn_tw *tw, const void *data, size_t len);
void _spn_tw_bytes_slow(struct spn_tw *tw, uint32_t field, const void *data,
			size_t len);
void _spn_tw_begin_nested_slow(struct spn_tw *tw, uint32_t field);
void _spn_tw_end_nested_slow(struct spn_tw *tw);

/*
 * Owner thread: hands the current partial chunk back (marks it Complete and
 * queues it for commit), so an idle thread does not pin SMB memory. Call it
 * between packets. Returns 0, or -EBUSY inside a packet.
 */
int spn_tw_flush(struct spn_tw *tw);

/*
 * Owner thread: flushes and retires the writer. Its chunks are committed
 * first; the drain then reports its id as removed (UnregisterTraceWriter)
 * and frees the writer; the id is reused only after that. A packet left
 * open is ended first. tw is invalid afterwards.
 */
void spn_tw_destroy(struct spn_tw *tw);

/* ---- Hot path ----------------------------------------------------------- */

#define _spn_tw_unlikely(x) __builtin_expect(!!(x), 0)

/*
 * Says "inside a packet" (in_packet = 1), ordered before the caller's next
 * load of reclaim (see the top). Light: relaxed store and a compiler
 * barrier; the I/O thread's membarrier supplies the rest. Heavy: seq_cst
 * store, pairing with the I/O thread's seq_cst CAS of reclaim and load of
 * in_packet.
 */
static inline void _spn_tw_enter(struct spn_tw *tw)
{
	if (_spn_tw_unlikely(tw->heavy_fence)) {
		atomic_store_explicit(&tw->in_packet, 1, memory_order_seq_cst);
	} else {
		atomic_store_explicit(&tw->in_packet, 1, memory_order_relaxed);
		atomic_signal_fence(memory_order_seq_cst);
	}
}

/* The reclaim word, loaded after _spn_tw_enter() (seq_cst: see there; a
 * plain load on x86). */
static inline uint32_t _spn_tw_reclaim(struct spn_tw *tw)
{
	return atomic_load_explicit(&tw->reclaim, memory_order_seq_cst);
}

/* Bytes left in the writable area. */
static inline size_t _spn_tw_room(const struct spn_tw *tw)
{
	return (size_t)(tw->end - tw->cur);
}

/* Counts one more packet in the current chunk, whose size prefix goes at
 * `at` (zeroed until the packet ends). Fast paths of the packet starts. */
static inline void _spn_tw_count_packet(struct spn_tw *tw, uint8_t *at)
{
	tw->stats.packets++;
	tw->count++;
	tw->packets++;
	/* Release: the earlier fragments are complete before the count says
	 * there is one more; pairs with a scraper's acquire load. */
	atomic_store_explicit(&tw->hdr->packets, tw->packets,
			      memory_order_release);
	memset(at, 0, SPN_SMB_PACKET_HEADER_SIZE);
}

/*
 * Starts a packet. Returns 0 when it is written into the SMB, or -ENOSPC
 * when it is being dropped (no free chunk; the writes still succeed into a
 * private sink, the loss is counted and the next packet reports it), so a
 * caller may skip building it.
 */
static inline int spn_tw_begin_packet(struct spn_tw *tw)
{
	/* Pairs with the I/O thread's reclaim store + barrier + in_packet
	 * load (smb_arbiter_reclaim). */
	_spn_tw_enter(tw);
	if (_spn_tw_unlikely(_spn_tw_reclaim(tw) != 0 ||
			     _spn_tw_room(tw) < SPN_TW_MIN_ROOM ||
			     tw->count >= SPN_SMB_WRITER_MAX_PACKETS))
		return _spn_tw_begin_packet_slow(tw);
	_spn_tw_count_packet(tw, tw->cur);
	tw->frag = tw->cur;
	tw->cur += SPN_SMB_PACKET_HEADER_SIZE;
	return 0;
}

/* Ends the packet (closing any message left open) and back-fills its size.
 * Without a packet open it does nothing. */
static inline void spn_tw_end_packet(struct spn_tw *tw)
{
	if (_spn_tw_unlikely((tw->depth | tw->slow_end |
			      atomic_load_explicit(&tw->reclaim,
						   memory_order_relaxed)) != 0 ||
			     !tw->frag)) {
		_spn_tw_end_packet_slow(tw);
		return;
	}
	spn_pb_put_varint4(tw->frag, (uint32_t)(tw->cur - tw->frag -
						SPN_SMB_PACKET_HEADER_SIZE));
	tw->frag = NULL;
	/* Release: the packet's bytes are written before we say we are out;
	 * pairs with the I/O thread's acquire load before it steals. */
	atomic_store_explicit(&tw->in_packet, 0, memory_order_release);
}

/*
 * Asks for the chunk's line SPN_TW_PREFETCH_AHEAD bytes past `cur` for
 * writing, while that is still inside the writable area. Stores that find
 * their line already ours leave the store buffer at once; without this,
 * the lines a chunk's events write come in one miss at a time (the drain
 * read them last), and the slow events that follow wait behind them: the
 * soft end's first store into the next chunk, the CAS of a reserve.
 * sdk_bench, 8 alternating runs: slice p99.9 100 -> 80 ns (1 thread), 105
 * -> 90 (2); counter 100 -> 85, 120 -> 105; medians within one 0.6 ns step.
 * On x86, PREFETCHW only where the CPU says it has it (CPUID 0x80000001
 * ECX bit 8, checked by the arbiter): a read prefetch only shares the
 * line. Elsewhere the compiler's write prefetch.
 */
static inline void _spn_tw_prefetch_ahead(const struct spn_tw *tw, const uint8_t *cur)
{
	if (tw->prefetchw && cur + SPN_TW_PREFETCH_AHEAD < tw->end) {
#if defined(__x86_64__) || defined(__i386__)
		__asm__ volatile("prefetchw %0" : : "m"(cur[SPN_TW_PREFETCH_AHEAD]));
#else
		__builtin_prefetch(cur + SPN_TW_PREFETCH_AHEAD, 1, 3);
#endif
	}
}

/*
 * A whole small packet in one piece, for encoders that know its size
 * bound: when a packet of up to `max` payload bytes fits in the current
 * chunk and nothing needs the slow path, opens it and returns where its
 * payload goes; the caller writes at most `max` bytes there through its own
 * cursor (kept in a register: no reloads of tw->cur after each byte, which
 * may alias it) and closes it with spn_tw_small_end(tw, payload, end).
 * Its slow path (_spn_tw_small_begin_slow) also passes the soft end and,
 * with a standby chunk parked, changes chunk by hand-off, then opens the
 * packet the same way. Returns NULL otherwise: then use
 * spn_tw_begin_packet() and the field calls, which handle every other
 * chunk change and drops. Same protocol with the I/O thread and the
 * scrapers as begin_packet / end_packet.
 */
static inline uint8_t *spn_tw_small_begin(struct spn_tw *tw, size_t max)
{
	uint8_t *cur = tw->cur;

	/* Pairs as in spn_tw_begin_packet(). On NULL the caller's
	 * begin_packet repeats the store, which is harmless. */
	_spn_tw_enter(tw);
	if (_spn_tw_unlikely(_spn_tw_reclaim(tw) != 0 || tw->slow_end ||
			     (size_t)(tw->end - cur) <
				     max + SPN_SMB_PACKET_HEADER_SIZE + SPN_TW_MIN_ROOM ||
			     tw->count >= SPN_SMB_WRITER_MAX_PACKETS))
		return _spn_tw_small_begin_slow(tw, max);
	_spn_tw_prefetch_ahead(tw, cur);
	_spn_tw_count_packet(tw, cur);
	return cur + SPN_SMB_PACKET_HEADER_SIZE;
}

/* Closes the packet spn_tw_small_begin() opened at `payload`; `end` is one
 * past its last byte. */
static inline void spn_tw_small_end(struct spn_tw *tw, uint8_t *payload, uint8_t *end)
{
	spn_pb_put_varint4(payload - SPN_SMB_PACKET_HEADER_SIZE,
			   (uint32_t)(end - payload));
	tw->cur = end;
	if (_spn_tw_unlikely(atomic_load_explicit(&tw->reclaim,
						  memory_order_relaxed) != 0)) {
		/* A hand-back was asked meanwhile: the slow end does it (the
		 * size is already final, so it only closes the packet). */
		tw->frag = payload - SPN_SMB_PACKET_HEADER_SIZE;
		_spn_tw_end_packet_slow(tw);
		return;
	}
	/* Release: as in spn_tw_end_packet(). */
	atomic_store_explicit(&tw->in_packet, 0, memory_order_release);
}

/* Raw bytes appended to the packet (already encoded fields). */
static inline void spn_tw_append(struct spn_tw *tw, const void *data, size_t len)
{
	if (_spn_tw_unlikely(_spn_tw_room(tw) < len)) {
		_spn_tw_write_slow(tw, data, len);
		return;
	}
	memcpy(tw->cur, data, len);
	tw->cur += len;
}

/* Slow path of the fixed-size fields: encodes into a buffer, then copies
 * it across the chunk boundary. */
static inline void _spn_tw_small_slow(struct spn_tw *tw, const uint8_t *buf,
				      const uint8_t *end)
{
	_spn_tw_write_slow(tw, buf, (size_t)(end - buf));
}

/* uint32/64, enum, non-negative int fields. */
static inline void spn_tw_varint(struct spn_tw *tw, uint32_t field, uint64_t v)
{
	if (_spn_tw_unlikely(_spn_tw_room(tw) < SPN_PB_MAX_KEY + SPN_PB_MAX_VARINT)) {
		uint8_t b[SPN_PB_MAX_KEY + SPN_PB_MAX_VARINT];

		_spn_tw_small_slow(tw, b, spn_pb_field_varint(b, field, v));
		return;
	}
	tw->cur = spn_pb_field_varint(tw->cur, field, v);
}

/* int32/int64 fields (negative values take 10 bytes). */
static inline void spn_tw_int(struct spn_tw *tw, uint32_t field, int64_t v)
{
	spn_tw_varint(tw, field, (uint64_t)v);
}

/* sint32/sint64 fields (zig-zag). */
static inline void spn_tw_sint(struct spn_tw *tw, uint32_t field, int64_t v)
{
	spn_tw_varint(tw, field, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

static inline void spn_tw_bool(struct spn_tw *tw, uint32_t field, bool v)
{
	spn_tw_varint(tw, field, v ? 1u : 0u);
}

/* fixed64/sfixed64 fields. */
static inline void spn_tw_fixed64(struct spn_tw *tw, uint32_t field, uint64_t v)
{
	if (_spn_tw_unlikely(_spn_tw_room(tw) < SPN_PB_MAX_KEY + 8)) {
		uint8_t b[SPN_PB_MAX_KEY + 8];

		_spn_tw_small_slow(tw, b, spn_pb_field_fixed64(b, field, v));
		return;
	}
	tw->cur = spn_pb_field_fixed64(tw->cur, field, v);
}

/* fixed32/sfixed32 fields. */
static inline void spn_tw_fixed32(struct spn_tw *tw, uint32_t field, uint32_t v)
{
	if (_spn_tw_unlikely(_spn_tw_room(tw) < SPN_PB_MAX_KEY + 4)) {
		uint8_t b[SPN_PB_MAX_KEY + 4];

		_spn_tw_small_slow(tw, b, spn_pb_field_fixed32(b, field, v));
		return;
	}
	tw->cur = spn_pb_field_fixed32(tw->cur, field, v);
}

static inline void spn_tw_double(struct spn_tw *tw, uint32_t field, double v)
{
	uint64_t bits;

	memcpy(&bits, &v, sizeof(bits));
	spn_tw_fixed64(tw, field, bits);
}

static inline void spn_tw_float(struct spn_tw *tw, uint32_t field, float v)
{
	uint32_t bits;

	memcpy(&bits, &v, sizeof(bits));
	spn_tw_fixed32(tw, field, bits);
}

/* string/bytes fields, and nested messages encoded elsewhere. */
static inline void spn_tw_bytes(struct spn_tw *tw, uint32_t field,
				const void *data, size_t len)
{
	if (_spn_tw_unlikely(_spn_tw_room(tw) < SPN_PB_MAX_KEY + SPN_PB_MAX_VARINT ||
			     _spn_tw_room(tw) - (SPN_PB_MAX_KEY + SPN_PB_MAX_VARINT) <
				     len)) {
		_spn_tw_bytes_slow(tw, field, data, len);
		return;
	}
	tw->cur = spn_pb_field_bytes(tw->cur, field, data, len);
}

static inline void spn_tw_string(struct spn_tw *tw, uint32_t field, const char *s)
{
	spn_tw_bytes(tw, field, s, strlen(s));
}

/* Opens a nested message (field `field`); close it with spn_tw_end_nested(). */
static inline void spn_tw_begin_nested(struct spn_tw *tw, uint32_t field)
{
	struct spn_tw_level *l;

	if (_spn_tw_unlikely(_spn_tw_room(tw) < SPN_PB_MAX_KEY + SPN_PB_NESTED_SIZE ||
			     tw->depth >= SPN_TW_MAX_NESTING)) {
		_spn_tw_begin_nested_slow(tw, field);
		return;
	}
	l = &tw->nest[tw->depth++];
	tw->cur = spn_pb_begin_nested(tw->cur, field, &l->slot);
	l->gen = tw->gen;
}

/* Closes the innermost open nested message and back-fills its size. */
static inline void spn_tw_end_nested(struct spn_tw *tw)
{
	struct spn_tw_level *l;

	if (_spn_tw_unlikely(tw->depth == 0 || tw->dead_depth != 0)) {
		_spn_tw_end_nested_slow(tw);
		return;
	}
	l = &tw->nest[tw->depth - 1];
	if (_spn_tw_unlikely(l->gen != tw->gen)) {
		_spn_tw_end_nested_slow(tw);
		return;
	}
	tw->depth--;
	spn_pb_end_nested(l->slot, tw->cur);
}

/* Counters of the writer (owner thread). */
static inline const struct spn_tw_stats *spn_tw_stats(const struct spn_tw *tw)
{
	return &tw->stats;
}

/* The writer id (1..32767) the chunks of this writer carry. */
static inline uint16_t spn_tw_writer_id(const struct spn_tw *tw)
{
	return tw->writer_id;
}

#ifdef __cplusplus
}
#endif
#endif
