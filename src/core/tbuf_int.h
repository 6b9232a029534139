// SPDX-License-Identifier: Apache-2.0
// Internals shared by tbuf.c (segments), tbuf_lane.c (writing) and
// tbuf_read.c (reading): the segment state word, the record header, the
// counters and the buffer struct. See the top of tbuf.c for the threading.
#ifndef SPN_CORE_TBUF_INT_H
#define SPN_CORE_TBUF_INT_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <ck_ht.h>

#include "core/tbuf.h"

#define TB_CACHELINE 64

/*
 * Segment state word (struct tb_seg.state), 64 bits:
 *   bits  0..15  pins: threads currently reading the segment's records
 *   bits 16..17  kind (enum tb_kind)
 *   bit  18      CONDEMNED: logically evicted, retired by the last unpin
 *   bits 32..63  generation: +1 every time the segment is (re)claimed
 */
#define TB_PINS_MASK 0xFFFFull
#define TB_KIND_SHIFT 16
#define TB_KIND_MASK (3ull << TB_KIND_SHIFT)
#define TB_CONDEMNED (1ull << 18)
#define TB_GEN_SHIFT 32

/* What a segment is doing. */
enum tb_kind {
	TB_FREE = 0,	  /* holds nothing; the next lane whose cursor lands here takes it */
	TB_CURRENT = 1,	  /* one lane appends records to it */
	TB_FULL = 2,	  /* sealed; readable until recycled */
	TB_RECYCLING = 3, /* one thread has it exclusively (walk + reset) */
};

static inline uint32_t tb_st_gen(uint64_t s)
{
	return (uint32_t)(s >> TB_GEN_SHIFT);
}

static inline enum tb_kind tb_st_kind(uint64_t s)
{
	return (enum tb_kind)((s & TB_KIND_MASK) >> TB_KIND_SHIFT);
}

static inline uint32_t tb_st_pins(uint64_t s)
{
	return (uint32_t)(s & TB_PINS_MASK);
}

static inline uint64_t tb_st_make(uint32_t gen, enum tb_kind kind)
{
	return ((uint64_t)gen << TB_GEN_SHIFT) |
	       ((uint64_t)kind << TB_KIND_SHIFT);
}

/* One segment's control block (the data lives in the buffer's mapping). */
struct tb_seg {
	_Atomic uint64_t state;	/* see above; CAS by lanes and the reader */
	_Atomic uint32_t used;	/* bytes of published records: the owner lane
				 * stores (release) after each record, readers
				 * load (acquire); reset only while RECYCLING */
	uint32_t pad;		/* unused tail bytes when sealed: written by the
				 * owner before the FULL release, read by the
				 * recycler after its acquire */
	uint8_t *data;		/* seg_size bytes inside the buffer mapping */
	/* What a recycler would count as overwritten if nothing in this
	 * generation was read: kept by the owner lane (its CURRENT segment,
	 * or one it has pinned), zeroed by the recycler while it holds the
	 * segment exclusively; relaxed, published by the state word. */
	_Atomic uint32_t pending;	/* records with fragments, not DEAD */
	_Atomic uint32_t pending_bytes;	/* their tb_stat_len sum */
	_Atomic uint32_t touched;	/* 1 once some record's read_state was
				 * raised (reader, or a relocation carrying
				 * progress): then recyclers walk the records */
	char cl_pad[TB_CACHELINE - 36]; /* one segment per cache line */
};
static_assert(sizeof(struct tb_seg) == TB_CACHELINE, "tb_seg size");

/*
 * Record header, at the start of every record in a segment; the chunk
 * payload follows it. Plain fields are written once by the owner lane before
 * the record is published through seg->used and never change until the
 * segment is recycled; meta and read_state are atomics.
 */
struct tb_rec {
	uint16_t producer_id;	/* sequence key */
	uint16_t writer_id;	/* sequence key */
	uint32_t chunk_id;	/* chunk key */
	uint32_t payload_len;	/* payload bytes after the header */
	uint32_t rec_len;	/* header + payload, rounded up to 16 */
	_Atomic uint32_t meta;	/* TB_M_*: owner lane (and the reader's
				 * READING bit); see tb_m_* below */
	_Atomic uint32_t read_state; /* fragments consumed: written by the
				 * reader under a pin, read by lanes/recyclers */
	uint32_t uid;		/* trusted uid captured at copy time */
	int32_t pid;		/* trusted pid (<= 0 unknown) */
	uint64_t serial;	/* lane << 56 | the owner lane's record
				 * counter (publication order): a newer copy
				 * of the same chunk wins (relocation) */
	_Atomic uint64_t fwd;	/* where the relocated copy is (tb_loc_pack),
				 * 0 = none: the owner lane stores it before
				 * setting DEAD; the reader follows it to pass
				 * read_state on */
};
static_assert(sizeof(struct tb_rec) == 48, "tb_rec size");
#define TB_REC_HDR ((uint32_t)sizeof(struct tb_rec))

/* Record meta word. */
#define TB_M_NFRAGS 0x3FFu	   /* stored fragment count */
#define TB_M_FLAGS_SHIFT 10	   /* SVC_CHUNK_* flags (6 bits) */
#define TB_M_COMPLETE (1u << 16) /* false only for scraped chunks */
#define TB_M_DEAD (1u << 17)	   /* superseded by a relocated copy */
#define TB_M_READING (1u << 18)  /* reader is parsing the payload */
#define TB_M_WRITING (1u << 19)  /* owner lane is rewriting the payload */

static inline uint32_t tb_m_nfrags(uint32_t m)
{
	return m & TB_M_NFRAGS;
}

static inline uint32_t tb_m_flags(uint32_t m)
{
	return (m >> TB_M_FLAGS_SHIFT) & 0x3Fu;
}

static inline uint32_t tb_m_make(uint32_t nfrags, uint32_t flags,
				 bool complete)
{
	return (nfrags & TB_M_NFRAGS) | ((flags & 0x3Fu) << TB_M_FLAGS_SHIFT) |
	       (complete ? TB_M_COMPLETE : 0);
}

/* Counter slots; every thread class has its own block (single writer). */
enum tb_ctr {
	TB_C_BYTES_WRITTEN,
	TB_C_BYTES_OVERWRITTEN,
	TB_C_BYTES_READ,
	TB_C_PADDING_WRITTEN,
	TB_C_PADDING_CLEARED,
	TB_C_CHUNKS_WRITTEN,
	TB_C_CHUNKS_REWRITTEN,
	TB_C_CHUNKS_OVERWRITTEN,
	TB_C_CHUNKS_DISCARDED,
	TB_C_CHUNKS_READ,
	TB_C_OUT_OF_ORDER,
	TB_C_WRAPS,
	TB_C_PATCHES_OK,
	TB_C_PATCHES_FAILED,
	TB_C_READAHEADS_OK,
	TB_C_READAHEADS_FAILED,
	TB_C_ABI_VIOLATIONS,
	TB_C_WRITER_PACKET_LOSS,
	TB_C_INVALID_PACKETS,
	TB_C_LOST_NO_SPACE,
	TB_C_DROPPED_LATE,
	TB_C_COPIED_ON_WRITE,
	TB_C_INDEX_FAILURES,
	TB_C_COUNT
};

/* A counter block. Only its owner thread adds; anyone may load. */
struct tb_counters {
	_Atomic uint64_t v[TB_C_COUNT]; /* relaxed: statistics only */
};

/* Adds n to counter i of a block the calling thread owns. */
static inline void tb_count(struct tb_counters *c, enum tb_ctr i, uint64_t n)
{
	uint64_t v = atomic_load_explicit(&c->v[i], memory_order_relaxed);

	atomic_store_explicit(&c->v[i], v + n, memory_order_relaxed);
}

/* Lane-private sequence state. */
struct tb_lane_seq {
	uint16_t producer_id;	/* key */
	uint16_t writer_id;	/* key */
	uint32_t newest;	/* newest chunk id stored (modular order) */
	bool valid;		/* newest is set (a chunk was stored) */
	uint32_t last_id;	/* chunk id of the record stored last */
	uint64_t last_loc;	/* where that record is (tb_loc_pack; a
				 * relocation of it moves this too), 0 = none */
};

/* One lane index entry not yet in the lane's ck_ht (tbuf_lane.c). */
struct tb_ient {
	uint64_t key;		/* (producer, writer, chunk) */
	uint64_t loc;		/* tb_loc_pack() of the record */
};

#define TB_SERIAL_LANE_SHIFT 56
#define TB_SERIAL_MASK ((1ull << TB_SERIAL_LANE_SHIFT) - 1)

/* One lane's shard state. Lane thread only, except ctr (loaded by stats)
 * and published (loaded by the reader). */
struct tb_lane {
	unsigned idx;		/* lane index */
	int32_t cur;		/* current segment index, -1 when none */
	uint32_t cur_gen;	/* its generation */
	uint32_t cur_used;	/* bytes appended to it (lane's copy of used) */
	uint64_t serial;	/* records written by this lane */
	_Atomic uint64_t published; /* counter of the last record published:
				 * lane stores (release) after seg->used, the
				 * reader loads (acquire) before scanning */
	ck_ht_t chunks;		/* (producer, writer, chunk) -> location, for
				 * every entry older than those in log */
	struct tb_ient *log;	/* newer entries, in the order they were made;
				 * moved into chunks before a lookup there */
	uint32_t log_n;		/* entries in log */
	uint32_t log_cap;	/* entries allocated */
	ck_ht_t seqs;		/* (producer, writer) -> struct tb_lane_seq * */
	bool chunks_init;	/* chunks was initialised */
	bool seqs_init;		/* seqs was initialised */
	uint64_t sweep_at;	/* chunk index size that triggers a sweep */
	struct tb_lane_seq *last_seq; /* one-entry lookup cache */
	uint8_t *stage;		/* svc_tbuf_lane_stage()'s room (payload of a
				 * record reserved at the cursor), NULL none */
	uint32_t stage_len;	/* its payload bytes */
	bool unpublished;	/* records past seg->used wait for
				 * tb_lane_publish_now() (deferred commits) */
	bool nt_pending;	/* streaming stores not yet fenced */
	struct tb_counters ctr;	/* this lane's counters */
} __attribute__((aligned(TB_CACHELINE)));

/* Reader view of one stored chunk (reader-private). */
struct tb_cref {
	uint32_t chunk_id;	/* chunk key */
	uint32_t seg;		/* segment index of the record */
	uint32_t gen;		/* segment generation when the record was seen */
	uint32_t off;		/* record offset in the segment */
	uint64_t serial;	/* record serial (newest copy wins) */
	uint32_t gone_pass;	/* pass that first found it evicted, 0 none */
	uint16_t frags_done;	/* fragments consumed */
	bool done;		/* consumed whole by a reassembly, already counted */
	uint32_t used_bytes;	/* payload bytes the parsed fragments span */
};

/* Reader view of one sequence (reader-private). */
struct tb_rseq {
	uint16_t producer_id;	/* key */
	uint16_t writer_id;	/* key */
	uint32_t loss;		/* SVC_LOSS_* bits for the next packet */
	bool has_last;		/* a chunk of this sequence was consumed/passed */
	bool last_located;	/* last_seg/last_gen locate that chunk */
	bool last_virtual;	/* last_id was skipped (gap given up), not consumed */
	uint32_t last_id;	/* id of that chunk */
	uint32_t last_seg;	/* its segment */
	uint32_t last_gen;	/* and generation */
	struct tb_cref *v;	/* stored, unconsumed chunks sorted by id; [head, n) */
	uint32_t head;		/* first live entry */
	uint32_t n;		/* end of live entries */
	uint32_t cap;		/* allocated entries */
	struct svc_seqids *ids;	/* map seqid was taken from */
	uint32_t seqid;		/* cached trusted_packet_sequence_id */
	uint64_t hist_counts[SVC_TBUF_HIST_BUCKETS]; /* writer_stats counts */
	uint64_t hist_sums[SVC_TBUF_HIST_BUCKETS];   /* writer_stats sums */
};

/* A segment pin held by the reader across a reassembly. */
struct tb_hold {
	uint32_t seg;		/* segment index */
	uint32_t idx;		/* cref index in the sequence */
	bool whole;		/* the piece is the chunk's only fragment and the
				 * chunk is complete: consumed whole */
};

/* Reader state; every field is guarded by mu. */
struct tb_reader {
	bool live;		/* mu is initialised */
	pthread_mutex_t mu;	/* serialises readers; lanes never take it */
	uint32_t *scan_gen;	/* per segment: generation scanned */
	uint32_t *scan_off;	/* per segment: bytes scanned in that generation */
	struct tb_rseq **seqs;	/* sequences sorted by (producer, writer) */
	uint32_t nseqs;		/* entries in seqs */
	uint32_t seqs_cap;	/* allocated entries */
	uint32_t resume_key;	/* (producer << 16 | writer) to start the next pass at */
	struct tb_hold *holds;	/* pins of the reassembly in progress */
	uint32_t nholds;	/* entries in holds */
	uint32_t holds_cap;	/* allocated entries */
	bool oom;		/* this pass stopped somewhere for lack of memory */
	bool retry;		/* this pass left something for the next one */
	uint32_t pass;		/* read passes so far */
	uint64_t *wm;		/* per lane: published counter at pass start */
	struct tb_counters ctr;	/* reader's counters */
};

/* A trace buffer. */
struct svc_tbuf {
	uint64_t size;		/* configured bytes */
	enum svc_tbuf_policy policy; /* ring or discard */
	unsigned nlanes;	/* lanes (shards) */
	uint32_t seg_size;	/* bytes per segment (power of two) */
	uint32_t seg_shift;	/* log2(seg_size) */
	uint32_t nseg;		/* segments */
	uint8_t *data;		/* nseg * seg_size bytes, mmap'ed */
	size_t data_len;	/* mapping length */
	struct tb_seg *segs;	/* control blocks, mmap'ed */
	size_t segs_len;	/* mapping length */
	struct tb_lane *lanes;	/* nlanes lane states, mmap'ed */
	size_t lanes_len;	/* mapping length */
	struct tb_reader rd;	/* reader state */
	bool read_only;		/* a clone: lanes are refused, and a chunk-id
				 * gap is given up at once (nothing can fill
				 * it); set before the buffer is shared */
	/* Shared by all lanes, on its own line. */
	_Atomic uint64_t cursor __attribute__((aligned(TB_CACHELINE)));
				/* next claim position (segment = pos % nseg) */
	_Atomic bool discarding; /* DISCARD: refusing new chunks for good */
	char cl_pad[TB_CACHELINE - 16]; /* keep the line to these two */
};

/* Where a record is. */
struct tb_loc {
	uint32_t seg;		/* segment index */
	uint32_t gen;		/* segment generation */
	uint32_t off;		/* byte offset in the segment */
};

/* Packs a location into 64 bits: generation, then 16-byte unit offset in
 * the whole mapping (< 2^29 since buffers are < 4 GiB + one segment). */
static inline uint64_t tb_loc_pack(const struct svc_tbuf *b,
				   const struct tb_loc *loc)
{
	uint64_t global = ((uint64_t)loc->seg << b->seg_shift) | loc->off;

	return ((uint64_t)loc->gen << 32) | (global >> 4);
}

/* Unpacks a location; false if it cannot be one of this buffer's. */
static inline bool tb_loc_unpack(const struct svc_tbuf *b, uint64_t v,
				 struct tb_loc *loc)
{
	uint64_t global = (v & 0xFFFFFFFFull) << 4;

	loc->gen = (uint32_t)(v >> 32);
	loc->seg = (uint32_t)(global >> b->seg_shift);
	loc->off = (uint32_t)(global & (b->seg_size - 1));
	return loc->seg < b->nseg && b->seg_size - loc->off >= 48;
}

/* Raises an atomic to at least v (read_state only grows). */
static inline void tb_atomic_max(_Atomic uint32_t *a, uint32_t v)
{
	uint32_t cur = atomic_load_explicit(a, memory_order_seq_cst);

	/* seq_cst: see tb_relocate_finish() and tb_set_read_state(). */
	while (cur < v && !atomic_compare_exchange_weak_explicit(
				  a, &cur, v, memory_order_seq_cst,
				  memory_order_seq_cst))
		;
}

/* Segment holding record r. */
static inline struct tb_seg *tb_seg_of(struct svc_tbuf *b,
				       const struct tb_rec *r)
{
	return &b->segs[((const uint8_t *)r - b->data) >> b->seg_shift];
}

/*
 * Marks the segment of r as read in part, before r's read_state is raised
 * (the raiser then drops its pin, or the owner seals: both release, so
 * whoever recycles the segment sees the mark).
 */
static inline void tb_seg_touch(struct svc_tbuf *b, const struct tb_rec *r)
{
	struct tb_seg *s = tb_seg_of(b, r);

	if (!atomic_load_explicit(&s->touched, memory_order_relaxed))
		atomic_store_explicit(&s->touched, 1, memory_order_relaxed);
}

static inline uint32_t tb_align16(uint32_t v)
{
	return (v + 15u) & ~15u;
}

/* Bytes a chunk of payload_len counts for in the byte stats (written,
 * read, overwritten): what the reference stores per chunk, a 16-byte
 * record header and the payload rounded up to 16 (trace-buffer.md §1,
 * consumer-port.md TraceStats.BufferStats), not our 48-byte header, so
 * that the figures match traced's for the same chunks. */
#define TB_STAT_REC_HDR 16u
static inline uint32_t tb_stat_len(uint32_t payload_len)
{
	return tb_align16(TB_STAT_REC_HDR + payload_len);
}

/*
 * Owner lane: record r (tb_stat_len of its payload in the byte figures)
 * starts (+1) or stops (-1) counting as pending in its segment (see struct
 * tb_seg).
 */
static inline void tb_seg_pending(struct svc_tbuf *b, const struct tb_rec *r,
				  int d)
{
	struct tb_seg *s = tb_seg_of(b, r);
	uint32_t n = atomic_load_explicit(&s->pending, memory_order_relaxed);
	uint32_t by = atomic_load_explicit(&s->pending_bytes,
					   memory_order_relaxed);
	uint32_t len = tb_stat_len(r->payload_len);

	atomic_store_explicit(&s->pending, n + (uint32_t)d,
			      memory_order_relaxed);
	atomic_store_explicit(&s->pending_bytes, d > 0 ? by + len : by - len,
			      memory_order_relaxed);
}

/* Record at byte offset off of segment seg. */
static inline struct tb_rec *tb_rec_at(struct svc_tbuf *b, uint32_t seg,
				       uint32_t off)
{
	return (struct tb_rec *)(b->segs[seg].data + off);
}

/* true when chunk id a comes after b (modular, trace-buffer.md §2.1). */
static inline bool tb_id_after(uint32_t a, uint32_t b)
{
	return a != b && (uint32_t)(a - b) < 0x80000000u;
}

/*
 * Segment protocol (tbuf.c). Pins keep a segment's records from being
 * recycled; any thread may pin. All return false when the segment no
 * longer holds generation `gen` (evicted).
 */
bool tb_seg_pin(struct svc_tbuf *b, uint32_t seg, uint32_t gen);
/* Drops a pin; the last pin of a CONDEMNED segment retires it, counting
 * the evicted records into `ctr` (the caller's own block). */
void tb_seg_unpin(struct svc_tbuf *b, uint32_t seg, struct tb_counters *ctr);
/* true when generation gen of seg is still readable (a snapshot). */
bool tb_seg_holds(struct svc_tbuf *b, uint32_t seg, uint32_t gen);
/* Lane only: seals the lane's current segment (tail becomes padding). */
void tb_seg_seal(struct svc_tbuf *b, struct tb_lane *l);
/* Lane only: makes a new current segment for lane l. 0, -ENOSPC (discard
 * full) or -EBUSY (every segment busy). */
int tb_seg_claim(struct svc_tbuf *b, struct tb_lane *l);

/* Lane side set-up and tear-down (tbuf_lane.c). */
int tb_lane_init(struct svc_tbuf *b, struct tb_lane *l);
void tb_lane_fini(struct tb_lane *l);

/* Packet processing (tbuf_packet.c). */
/* true when [p, p + len) is a valid top-level TracePacket (§5.1). */
bool tb_packet_valid(const uint8_t *p, size_t len);
#define TB_TRAILER_MAX 40	/* bytes tb_trailer() writes at most */
/* Writes the trusted trailer (trace-config.md §4.1); returns its length. */
size_t tb_trailer(uint8_t *out, uint32_t uid, uint32_t seqid, int32_t pid,
		  uint32_t loss);

/* Result of parsing one fragment. */
enum tb_frag_rc {
	TB_FRAG_OK,		/* *doff, *size describe the data */
	TB_FRAG_DROP,		/* drop marker: the writer lost the packet */
	TB_FRAG_BAD,		/* malformed (smb-abi.md §6.2) */
};

/* Parses the fragment at payload offset off (<= len) of a payload the
 * caller holds (pin + READING): TB_FRAG_OK sets *doff (data offset) and
 * *size (tbuf_read.c). */
enum tb_frag_rc tb_frag_parse(const uint8_t *pl, uint32_t len, uint32_t off,
			      uint32_t *doff, uint32_t *size);

/* Reader only, under rd.mu: indexes the records published since the last
 * pass (tbuf_read.c). 0 or -ENOMEM. */
int tb_reader_scan(struct svc_tbuf *b);

/* Reader set-up and tear-down (tbuf_read.c). */
int tb_reader_init(struct svc_tbuf *b);
void tb_reader_fini(struct svc_tbuf *b);

#endif
