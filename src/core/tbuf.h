// SPDX-License-Identifier: Apache-2.0
// Central trace buffers (spec/trace-buffer.md): lane-sharded chunk storage,
// re-commits and patches on the lane side, ordered packet reading with the
// trusted trailer on the control-plane side, and the per-buffer stats.
//
// Thread classes (tbuf.c has the full argument):
//  - svc_tbuf_create/destroy: control plane, with no lane or reader using
//    the buffer (the caller retires buffers through ck_epoch).
//  - svc_tbuf_lane_*(b, lane, ...): only the thread of lane `lane`. Lanes
//    never lock and never wait for a reader (the one short yield is behind
//    another lane's DISCARD probe, see tbuf.c); they allocate only small
//    index growth. All chunks of one sequence (producer, writer) must come
//    through one lane (the lane owning the producer's connection).
//  - svc_tbuf_read*, svc_tbuf_for_each_writer: any control-plane thread;
//    calls on one buffer are serialised by a reader mutex lanes never take.
//  - svc_tbuf_get_stats: any thread, any time.
#ifndef SPN_CORE_TBUF_H
#define SPN_CORE_TBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct svc_tbuf;
struct svc_seqids;

/* What a full buffer does with a new chunk (BufferConfig.fill_policy). */
enum svc_tbuf_policy {
	SVC_TBUF_RING = 0,	/* overwrite the oldest data (RING_BUFFER/UNSPECIFIED) */
	SVC_TBUF_DISCARD = 1,	/* keep the first part, drop new chunks (V1 semantics) */
};

/* svc_tbuf_create() flags. */
#define SVC_TBUF_PREFAULT 0x1u	/* touch every page at creation (MAP_POPULATE) */

#define SVC_TBUF_MAX_LANES 64		/* lanes one buffer can be sharded into */
#define SVC_TBUF_MIN_SIZE 4096u		/* smallest buffer accepted */
#define SVC_TBUF_MAX_SIZE 0xFFFFFFFFull /* size_kb * 1024 must fit in 32 bits */
/* Largest chunk payload stored: a record of payload + 16 must stay <= 65535. */
#define SVC_TBUF_MAX_PAYLOAD (65535u - 16u)
#define SVC_TBUF_MAX_PATCHES 1024u	/* patches per chunk entry (constants.md) */

/* Chunk flags, as in the SMB chunk header (smb-abi.md §4). */
#define SVC_CHUNK_FIRST_CONT 0x01u	/* fragment 0 continues the previous chunk */
#define SVC_CHUNK_LAST_CONT 0x02u	/* last fragment continues on the next chunk */
#define SVC_CHUNK_NEEDS_PATCH 0x04u	/* last fragment waits for patches */
#define SVC_CHUNK_KNOWN_FLAGS 0x07u

/* DataLossReason bits written into previous_packet_dropped (track-event.md). */
#define SVC_LOSS_PRESENT 1u
#define SVC_LOSS_READ_GAP 2u
#define SVC_LOSS_CHUNK_CORRUPTED 4u
#define SVC_LOSS_ORPHAN_CONTINUATION 8u
#define SVC_LOSS_REASSEMBLY_GAP 16u
#define SVC_LOSS_REASSEMBLY_BROKEN_CHAIN 32u
#define SVC_LOSS_OVERWRITE 64u
#define SVC_LOSS_WRITER_ABORT 128u

/*
 * Per-buffer stats (consumer-port.md §7 BufferStats, trace-buffer.md §7),
 * plus a few counters Spindle adds so that every loss has a cause.
 */
struct svc_tbuf_stats {
	uint64_t buffer_size;		/* bytes the buffer was created with */
	uint64_t bytes_written;		/* record bytes of new chunks (header + payload, 16-aligned) */
	uint64_t bytes_overwritten;	/* record bytes evicted before being fully read */
	uint64_t bytes_read;		/* record bytes of chunks fully consumed */
	uint64_t padding_bytes_written;	/* segment tails left unused when a segment filled */
	uint64_t padding_bytes_cleared;	/* such padding later reused */
	uint64_t chunks_written;	/* new chunks stored */
	uint64_t chunks_rewritten;	/* accepted re-commits (scraped, then committed) */
	uint64_t chunks_overwritten;	/* chunks evicted before fully read (ring) */
	uint64_t chunks_discarded;	/* chunks refused because the DISCARD buffer is full */
	uint64_t chunks_read;		/* chunks fully consumed */
	uint64_t chunks_committed_out_of_order; /* chunk id not newer than the newest of its sequence */
	uint64_t write_wrap_count;	/* write cursor wrapped to the first segment */
	uint64_t patches_succeeded;	/* patches applied */
	uint64_t patches_failed;	/* patch batches whose chunk was gone or offset bad */
	uint64_t readaheads_succeeded;	/* fragmented packets reassembled */
	uint64_t readaheads_failed;	/* reassemblies that had to wait */
	uint64_t abi_violations;	/* malformed chunks/fragments, bad re-commits, bad ids */
	uint64_t trace_writer_packet_loss; /* drop markers met */
	/* Spindle additions (not in BufferStats). */
	uint64_t invalid_packets;	/* packets dropped by the validator (session-level TraceStats field 10) */
	uint64_t chunks_lost_no_space;	/* ring: no segment could be taken (all busy); chunk dropped */
	uint64_t chunks_dropped_late;	/* arrived after the reader had moved past its id */
	uint64_t chunks_copied_on_write; /* re-commits/patches relocated because a reader held the chunk */
	uint64_t index_failures;	/* chunks stored without a lane index entry (out of memory) */
};

/* A chunk handed to a lane: a private, already copied payload plus header. */
struct svc_tbuf_chunk {
	uint16_t producer_id;	/* ProducerID of the connection (1..65535) */
	uint16_t writer_id;	/* WriterID from the chunk header (1..32767) */
	uint32_t chunk_id;	/* ChunkID from the chunk header */
	uint32_t uid;		/* trusted uid of the producer, captured at copy time */
	int32_t pid;		/* trusted pid of the producer; <= 0 = unknown */
	uint16_t nfrags;	/* fragment count from the header (0..1023) */
	uint8_t flags;		/* SVC_CHUNK_* flags from the header */
	bool complete;		/* false: scraped while BeingWritten */
	const uint8_t *payload;	/* payload bytes (after the 8-byte chunk header) */
	uint32_t len;		/* payload bytes (<= SVC_TBUF_MAX_PAYLOAD) */
	/* a new record may stay invisible to readers until the lane's next
	 * svc_tbuf_lane_publish() (or anything else it publishes) */
	bool defer;
};

/* svc_tbuf_lane_commit() successes. */
enum svc_tbuf_commit {
	SVC_TBUF_STORED = 0,	/* new chunk stored */
	SVC_TBUF_REWRITTEN = 1,	/* stored copy replaced (re-commit of a scraped chunk) */
	SVC_TBUF_IGNORED = 2,	/* re-commit with the same fragment count: nothing to do */
};

/* One patch (smb-abi.md §8): 4 bytes at `offset` of the chunk payload. */
struct svc_tbuf_patch {
	uint32_t offset;	/* relative to the first payload byte */
	uint8_t data[4];	/* bytes to write */
};

/* Reader output: packets in Trace framing (0x0A, varint length, packet). */
struct svc_tbuf_out {
	uint8_t *data;		/* svc_mem_* allocated; NULL until something is written */
	size_t len;		/* bytes used */
	size_t cap;		/* bytes allocated */
};

/*
 * Creates a buffer of `size` bytes (SVC_TBUF_MIN_SIZE..SVC_TBUF_MAX_SIZE)
 * sharded for `nlanes` lanes (1..SVC_TBUF_MAX_LANES). Control plane only:
 * it maps (and with SVC_TBUF_PREFAULT populates) all memory up front.
 * Returns 0 and sets *out, -EINVAL for a bad size/policy/lane count/flag,
 * or -ENOMEM (nothing leaked).
 */
int svc_tbuf_create(uint64_t size, enum svc_tbuf_policy policy,
		    unsigned nlanes, unsigned flags, struct svc_tbuf **out);

/* Frees the buffer. No lane or reader may use it any more. NULL is a no-op. */
void svc_tbuf_destroy(struct svc_tbuf *b);

/* Segment size and count the buffer was split into (for tests and stats). */
uint32_t svc_tbuf_segment_size(const struct svc_tbuf *b);
uint32_t svc_tbuf_segment_count(const struct svc_tbuf *b);

/*
 * Lane `lane` stores a chunk copy (trace-buffer.md §2). The payload is
 * copied; the caller keeps ownership of c->payload. A scraped chunk
 * (complete == false) is stored with nfrags - 1 fragments and without
 * LAST_CONT/NEEDS_PATCH (§2.3). A chunk already stored for (producer,
 * writer, chunk id) is a re-commit, accepted per §2.2.
 * Returns SVC_TBUF_STORED / SVC_TBUF_REWRITTEN / SVC_TBUF_IGNORED, or:
 *   -EINVAL   bad lane, ids or fragment count (abi_violations++ except a
 *             bad lane), or a staged payload longer than its stage;
 *   -E2BIG    payload too big for a record or a segment (abi_violations++);
 *   -EPROTO   re-commit breaking §2.2 (abi_violations++);
 *   -ENOSPC   DISCARD buffer full (chunks_discarded++), or ring buffer with
 *             every segment busy (chunks_lost_no_space++);
 *   -EPERM    b is a clone (read-only).
 */
int svc_tbuf_lane_commit(struct svc_tbuf *b, unsigned lane,
			 const struct svc_tbuf_chunk *c);

/*
 * Lane `lane` makes every record it stored with c->defer visible to readers:
 * one store fence for the streaming stores of all of them, then one
 * publication. A batch of chunks (one CommitData) pays the fence once
 * instead of once per chunk, which at 4 KiB chunks was a third of the
 * commit's time (tbuf_bench). Nothing to do when nothing waits.
 */
void svc_tbuf_lane_publish(struct svc_tbuf *b, unsigned lane);

/*
 * Lane `lane`: room for a chunk payload of `len` bytes where it would be
 * stored, so the caller can copy a chunk there straight from the SMB and
 * validate it in place (nobody else can see it until it is committed).
 * Commit it with svc_tbuf_lane_commit() with c->payload equal to the
 * returned pointer and c->len <= len: nothing is copied again. The room is
 * valid until the lane's next svc_tbuf_lane_* call on this buffer; one that
 * is never committed is simply reused. Returns NULL when no room can be had
 * now (len too big for a record, DISCARD buffer full, every segment busy):
 * the caller copies elsewhere and commits that, which counts the loss.
 * Always NULL on a clone.
 */
uint8_t *svc_tbuf_lane_stage(struct svc_tbuf *b, unsigned lane, uint32_t len);

/*
 * Lane `lane` applies `n` patches to its stored chunk (trace-buffer.md §3).
 * has_more == false clears the chunk's NEEDS_PATCH once all applied.
 * Returns n (all applied, patches_succeeded += n), or:
 *   -E2BIG   n > SVC_TBUF_MAX_PATCHES: nothing applied or counted (the
 *            caller counts the service-level patches_discarded);
 *   -EINVAL  bad lane or ids;
 *   -EPERM   b is a clone (read-only);
 *   -ENOENT  chunk not stored (never came, overwritten, other buffer):
 *            patches_failed++;
 *   -ERANGE  a patch past the payload: patches_failed++, the earlier ones
 *            of the batch stay applied;
 *   -ENOSPC  the chunk had to be relocated and no space was left:
 *            patches_failed++.
 */
int svc_tbuf_lane_patch(struct svc_tbuf *b, unsigned lane,
			uint16_t producer_id, uint16_t writer_id,
			uint32_t chunk_id, const struct svc_tbuf_patch *p,
			size_t n, bool has_more);

/*
 * One read pass (trace-buffer.md §4, §5): appends whole packets to `out`
 * until out->len >= limit (the packet in progress is finished) or nothing
 * more is readable. Each packet is validated (invalid ones are dropped and
 * counted) and gets the trusted trailer: trusted_uid, the
 * trusted_packet_sequence_id from `ids`, trusted_pid when known, and
 * previous_packet_dropped when non-zero. Sets *drained to true when
 * everything readable was read, false when it stopped because of `limit`,
 * of a failed allocation, or to re-check a chunk found overwritten (call
 * again).
 * Returns the packets appended (>= 0), or -ENOMEM when memory ran out
 * before anything was appended. Nothing is lost or repeated either way:
 * what was appended is consumed, the rest stays for the next call.
 */
int svc_tbuf_read(struct svc_tbuf *b, struct svc_seqids *ids,
		  struct svc_tbuf_out *out, size_t limit, bool *drained);

/*
 * A read-only copy of everything readable in b now (trace-buffer.md §8),
 * for CloneSession. Control plane, any thread; serialised with b's readers
 * (it takes the reader mutex) while b's lanes go on writing, never blocked:
 * every record is copied under a pin and the READING bit, like a read. The
 * copy holds the chunks b's reader had indexed at a publication watermark
 * taken first, so it is a prefix, in commit order, of every lane's records,
 * less what the ring evicts while the copy runs: each sequence is copied
 * newest first, so that loss falls on its oldest part (a gap the copy's
 * reader marks as a loss).
 * b's read progress is kept, not changed: fragments b already returned are
 * left out of the copy, and nothing of b is consumed. Chunks waiting for
 * patches or a re-commit are copied as they are (their packets are never
 * returned by the copy: nothing can be written into it). The copy's stats
 * are b's with bytes_read, chunks_read and readaheads_* zeroed. Lane calls
 * on the copy fail (-EPERM, stage NULL); a chunk-id gap in the copy is given
 * up at once (marked READ_GAP). Free it with svc_tbuf_destroy().
 * Returns 0 and sets *out, or -ENOMEM, or -ENOSPC if b held more than the
 * copy could take (cannot happen short of a 4 GiB buffer).
 */
int svc_tbuf_clone(struct svc_tbuf *b, struct svc_tbuf **out);

/*
 * Makes b read-only, as a clone is: lane calls fail from now on (-EPERM,
 * stage NULL) and a chunk-id gap is given up at once (nothing can fill it
 * any more). For a buffer moved whole into a CloneSession clone
 * (transfer_on_clone). The caller guarantees that no lane writes into b
 * any more (every lane let go of it); readers may run concurrently.
 */
void svc_tbuf_seal(struct svc_tbuf *b);

/* Frees out->data and zeroes *out. */
void svc_tbuf_out_free(struct svc_tbuf_out *out);

/* Writer histogram buckets (consumer-port.md §7): bounds, then overflow. */
#define SVC_TBUF_HIST_BUCKETS 11

/* Per-writer stats handed to svc_tbuf_for_each_writer()'s callback. */
struct svc_tbuf_writer_stats {
	uint16_t producer_id;	/* sequence's producer */
	uint16_t writer_id;	/* sequence's writer */
	uint32_t sequence_id;	/* trusted_packet_sequence_id in the session */
	uint64_t counts[SVC_TBUF_HIST_BUCKETS]; /* fully read chunks per bucket */
	uint64_t sums[SVC_TBUF_HIST_BUCKETS];	/* their used payload bytes */
};

/*
 * Calls cb for every sequence the reader has seen in this buffer, in
 * (producer, writer) order. Stops early and returns cb's value when it is
 * non-zero; returns 0, or -ENOMEM if a sequence id could not be assigned.
 */
int svc_tbuf_for_each_writer(struct svc_tbuf *b, struct svc_seqids *ids,
			     int (*cb)(void *ctx,
				       const struct svc_tbuf_writer_stats *w),
			     void *ctx);

/* Sums the lanes' and the reader's counters. Any thread. */
void svc_tbuf_get_stats(const struct svc_tbuf *b, struct svc_tbuf_stats *st);

/*
 * Session-wide trusted_packet_sequence_id assignment (trace-config.md §4.2):
 * each (producer, writer) gets the next id from 2 the first time it is
 * asked for; ids are never reused. Control plane; not thread-safe (one
 * session is served by one control thread at a time).
 */
int svc_seqids_create(struct svc_seqids **out);	/* 0 or -ENOMEM */
void svc_seqids_destroy(struct svc_seqids *ids);
/* The id of (producer, writer), assigned if new; 0 when out of memory. */
uint32_t svc_seqids_get(struct svc_seqids *ids, uint16_t producer_id,
			uint16_t writer_id);

#endif
