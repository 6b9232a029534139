// SPDX-License-Identifier: Apache-2.0
// The producer's side of an SMB: chunk allocation, writer ids, the lock-free queue of chunks and patches to commit, and its drain into CommitDataRequests.
//
// Threads and what each may call:
//   any thread       smb_arbiter_create_writer() (takes the registry mutex;
//                    not a hot path)
//   writer threads   everything in include/spindle/trace_writer.h; its slow
//                    path calls the smb_arbiter_*_w() functions below
//   the I/O thread   smb_arbiter_drain(), smb_arbiter_reclaim() (one I/O
//                    thread per arbiter: the drain side of the queue is
//                    single-consumer)
//
// Layout. A page is partitioned when a writer first needs it free, so each
// page can get its own layout (the service handles any). The coarse layout
// is the finest division whose chunks still hold about 4 KiB (4 KiB pages:
// Div1, 4088-byte chunks, as Perfetto's client; 8 KiB: Div2; 16 KiB: Div4;
// 32 KiB: Div7, 4680): a chunk holds a few hundred small events, so the
// per-chunk costs (the chunk change on the writer's slow path, one commit
// entry, one service-side copy) stay small per event (sdk_bench: ~0.35% of
// slice events change chunk). A 256 KiB SMB then has 64 coarse chunks, so
// while live writers outnumber half the coarse chunks, free pages are cut
// as Div14 instead (256 KiB: 896 chunks of 292 bytes): with that many
// threads most packets need a fresh chunk anyway (see reclaim), and more
// chunks give the I/O thread more time before the SMB runs out. Pages
// return to the coarse layout as they free up once the writers are fewer.
//
// The commit queue is an intrusive multi-producer stack (C11 atomics, so
// ThreadSanitizer sees it): a writer pushes a node with one CAS on `head`
// (release); the I/O thread takes the whole stack with one exchange
// (acquire) and reverses it, which yields push order. No node is popped
// singly, so there is no ABA: a push only needs `head` to be what it read.
// Nodes: one per SMB chunk slot, pushed once per acquisition (a slot is
// reused only after the service freed the chunk, which follows the drain
// that took its node; the drain marks the node IDLE with a release store
// and the next owner checks it with an acquire load), and two per writer
// (announce, retire), so the drain reports writer ids in order with their
// chunks: RegisterTraceWriter before the first chunk, UnregisterTraceWriter
// after the last.
//
// Patches. A nested size that closes while its slot is in an earlier chunk
// X is one patch for X. At most one per nesting level closes while a given
// chunk C is the writer's current one, so those patches ride on C's node
// (bounded: SPN_TW_MAX_NESTING) and are sent when C is committed, after X's
// move. Before that, with direct SMB patching (spec smb-abi.md §8) they
// are not needed at all while X is still ours: a chunk whose last packet
// still has open sizes is queued while still BeingWritten, its node's
// `state` word says OPEN(writer, chunk id), the writer patches it in place
// while it can CAS OPEN -> PATCHING, and the drain claims it with CAS
// OPEN -> QUEUED and forces it Complete before listing it. The drain waits
// (yielding) only if it meets PATCHING: a writer holds that for a 4-byte
// store.
//
// Standby chunks. A writer's chunk change is its slow path, and most of its
// cost is cache misses on lines other threads wrote last: the next page word
// (the service freed it), the chunk's node (the drain marked it IDLE). So
// while writers are few (live writers * SMB_STANDBY_RATIO <= chunks of the
// SMB) and the SMB is not short (no pressure), the drain takes free chunks
// for every writer whose chunks it just listed and parks them in the
// writer's standby ring (trace_writer.h: a single-producer single-consumer
// ring of SPN_TW_RING location words): BeingWritten, our writer id, chunk
// id 0 and packets 0 (no scraper takes anything from them). It parks as
// many as it listed of that writer, what the writer will likely fill again
// before the next drain, at least one, at most the writer's share of a
// quarter of the SMB. At its next chunk change the writer takes one with
// an acquire load of the ring's tail (mostly not even that: it remembers
// the tail it saw) and a release store of its head, instead of a search
// and a CAS, writes the chunk id and publishes packets. Standby chunks go
// back to Free unused (BeingWritten -> Free, smb-abi.h) when the writer is
// robbed by reclaim (it is idle, or the SMB runs short) or retires.
//
// Reserved chunks. The drain parks standby chunks only as often as it runs
// (once per commit period in the SDK), so a writer that fills more chunks
// in a period than the drain listed of it in the last one (or one whose
// drain finds no core free) runs out; its chunk change then searched the
// pages and won a chunk with a CAS, misses on lines the service and the
// drain wrote last, ~100 ns in all (sdk_bench, slice events: the
// chunk-change median). So a writer's chunk ends early at a soft end,
// SPN_TW_SOFT_END bytes before its real end; the slow path that meets it
// with no standby chunk parked takes the next chunk then
// (smb_arbiter_reserve_w), as the drain would, into the writer's own
// `reserve` word, and writes on to the real end. The chunk change takes
// it with plain loads and stores. The cost is the same search, paid by an
// event some bytes earlier, and the two slow events each stay well under
// what the one cost. Same rules as standby chunks: only while writers are
// few, a reclaim that robs the writer frees it, and so does the drain
// that retires it.
//
// Hand-off. Queueing the full chunk at a chunk change costs as much again:
// a CAS on its page word and one on the queue head, lines the service and
// the drain wrote last, and node stores that the second CAS must wait for.
// So a writer that takes a standby chunk at a packet boundary, with no
// patches riding on the full chunk (none can refer to it later either: no
// size of it is open), leaves the full chunk in its own hand-off ring
// instead (the chunk still BeingWritten; the ring's slot holds its
// location and chunk id) and goes on; the drain, which watches the writers
// it parked standby chunks for, takes every hand-off out (a CAS on the
// ring's head, which a retiring writer may race), marks the chunks
// Complete, fills their nodes and lists them like queued ones, oldest
// first. The writer's side is a few stores to words of its own and no
// locked instruction nor barrier: the store buffer absorbs the misses on
// them. Its order (the hand-off's tail, then the standby ring's head, both
// release) lets a drain that sees the last standby chunk taken see the
// hand-off. The ring always has room: the drain parks standby chunks only
// while they and the hand-offs out fit in it together, and each hand-off
// takes one of them. A writer that retires takes its hand-offs back and
// queues them itself. There is no wake check either (it would need a
// fence, and the fence would wait for those misses): an I/O thread that is
// awake drains within a commit period anyway, and one that sleeps (nothing
// was queued for a whole period) gets the chunks with the next push that
// wakes it, at the latest this writer's next chunk change that finds no
// standby chunk and queues, or with the next flush. So a hand-off waits at
// most as long as a partial chunk would.
#ifndef SPN_SMB_ARBITER_H
#define SPN_SMB_ARBITER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "commit_data_request.pb-c.h"
#include "spindle/smb_abi.h"
#include "spindle/trace_writer.h"

#pragma GCC visibility push(hidden)

/* Largest CommitDataRequest one drain builds: moves (about 12 bytes each on
 * the wire) and patches (about 25 bytes each with their entry) stay well
 * below the 128 KiB IPC frame limit. What does not fit waits for the next
 * drain. */
#define SMB_COMMIT_MAX_MOVES 4096u
#define SMB_COMMIT_MAX_PATCHES 1024u
/* Writer ids one drain reports as added, and as removed. */
#define SMB_COMMIT_MAX_WRITER_EVENTS 1024u
/* Patches one chunk node carries: one per nesting level at most. The block
 * is allocated the first time a chunk in that slot may carry patches. */
#define SMB_PATCHES_PER_NODE SPN_TW_MAX_NESTING
/* A drain reports pressure when less than half of the SMB will be free. */
#define SMB_PRESSURE_DIVISOR 2u
/* A writer taking a chunk checks every this many chunks whether less than
 * 1/SMB_LOW_WATER_DIVISOR of the SMB is free, and if so hurries the I/O
 * thread (see smb_low_water_check). The count is the writer's own, offset
 * by its writer id: no counter shared by writers. Half, not a quarter: a writer flat
 * out fills the last quarter of a 256 KiB SMB in ~0.1 ms, often before
 * the commit the hurry starts has freed chunks (spindle-loadgen, 1 thread
 * flat out: 0.34% lost with a quarter, 0.11% with half). */
#define SMB_LOW_WATER_EVERY 16u
#define SMB_LOW_WATER_DIVISOR 2u
/* Pages that check looks at, spread over the SMB (all of a smaller one). */
#define SMB_LOW_WATER_SAMPLES 16u
/* Pages of the SMB whose free space one drain looks at again. */
#define SMB_FREE_SCAN_PAGES 64u
/* Standby chunks (see the top) while live writers * this <= SMB chunks. */
#define SMB_STANDBY_RATIO 4u
/* Standby chunks a drain parks for a writer whose chunk it listed, at least
 * (fewer where the writer's share of the SMB is smaller; see
 * smb_standby_want). */
#define SMB_STANDBY_MIN 4u
/* Writers one drain parks standby chunks for, at most. */
#define SMB_STANDBY_PER_DRAIN 32u

/* Kinds of queue nodes. */
enum smb_qkind {
	SMB_Q_CHUNK = 1,	/* struct smb_chunk_node: a chunk to move */
	SMB_Q_WRITER_ADD = 2,	/* struct smb_writer_node: a new writer */
	SMB_Q_WRITER_GONE = 3,	/* struct smb_writer_node: a retired writer */
};

/* Link of the commit queue. `next` is written by the pusher before its
 * release CAS and read by the drain after its acquire exchange. */
struct smb_qnode {
	struct smb_qnode *next; /* older node, or NULL */
	uint32_t kind;		/* enum smb_qkind */
};

/* States in the low byte of smb_chunk_node.state. */
enum smb_node_state {
	SMB_NODE_IDLE = 0,     /* not queued: the chunk's next owner may use it */
	SMB_NODE_QUEUED = 1,   /* queued, the chunk is Complete */
	SMB_NODE_OPEN = 2,     /* queued, BeingWritten; its writer may patch it */
	SMB_NODE_PATCHING = 3, /* its writer is patching it right now */
};

/* A patch for an earlier chunk of the same writer, riding on a node. */
struct smb_patch {
	uint32_t chunk_id; /* chunk it patches */
	uint16_t offset;   /* from that chunk's payload start */
	uint8_t more;	   /* that chunk still has open sizes after this one */
	uint8_t data[4];   /* redundant 4-byte varint */
};

/* One per chunk slot of the SMB (page, chunk index). Apart from `state`,
 * written by the chunk's owner before the push, read by the drain after. */
struct smb_chunk_node {
	struct smb_qnode q;	/* queue link */
	uint32_t page;		/* page index (constant) */
	uint32_t chunk;		/* chunk index in the page (constant) */
	uint32_t target_buffer;	/* buffer of the chunk */
	uint16_t writer_id;	/* writer of the chunk (for its patches) */
	uint16_t npatches;	/* patches riding on this node */
	/* chunk_id << 32 | writer_id << 8 | enum smb_node_state; orders at
	 * each site in arbiter.c / trace_writer.c */
	_Atomic uint64_t state;
	/* SMB_PATCHES_PER_NODE patches for earlier chunks, or NULL until a
	 * chunk in this slot first had to be able to carry some (the owner
	 * attaches its spare block; kept until the arbiter is destroyed) */
	struct smb_patch *patches;
};

/* Announce / retire node of a writer (allocated with it). */
struct smb_writer_node {
	struct smb_qnode q;	/* queue link */
	struct spn_tw *tw;	/* the writer */
};

/* Options of an arbiter. */
struct smb_arbiter_opts {
	/* page layout for new pages (SPN_SMB_PAGE_DIV1..DIV14); 0: chosen
	 * from the page size (see the top) */
	uint32_t layout;
	/* the service advertised direct_smb_patching_supported and we use it */
	bool direct_patching;
	/* 0: a writer that finds the SMB full drops its packet (default);
	 * otherwise it retries for up to this many microseconds first */
	uint32_t stall_max_us;
	/* highest writer id handed out (0: 32767); tests lower it */
	uint32_t max_writer_id;
	/* called by a writer thread that pushed onto an empty queue (the
	 * I/O thread has something to commit) or found the SMB full or
	 * short (it should drain and reclaim now); may be NULL. Always
	 * called right after a seq_cst operation (the push's CAS) or a
	 * seq_cst fence, so a hook that tests a "sleeping" flag with a
	 * seq_cst load needs no fence of its own to pair with the fence a
	 * thread puts between setting that flag and looking at the queue */
	void (*wake)(void *ctx);
	/* called instead of `wake` by a writer that found the SMB short
	 * (less than 1/SMB_LOW_WATER_DIVISOR free) or full: the I/O thread
	 * should drain now even if it is awake and waiting out its commit
	 * period, which `wake` does not ask for. Same ordering contract as
	 * `wake`, and used only with `wake` set; NULL: `wake` is called */
	void (*hurry)(void *ctx);
	void *ctx; /* for the callbacks */
	/* test only: never use membarrier, make writers run a full fence */
	bool force_heavy_fence;
	/* never park standby chunks (tests that count chunks exactly) */
	bool no_standby;
	/* standby chunks a drain parks at least for a writer whose chunk it
	 * listed; 0: SMB_STANDBY_MIN (tests set 1 to follow one chunk) */
	uint32_t standby_min;
};

/* Counters of an arbiter (relaxed atomics; any thread may read them). */
struct smb_arbiter_stats {
	_Atomic uint64_t chunks_committed; /* chunk entries drained */
	_Atomic uint64_t patches;	   /* patches drained (as CommitData) */
	_Atomic uint64_t packets_dropped;  /* packets lost by any writer */
	_Atomic uint64_t smb_full;	   /* acquisitions that found no chunk */
	_Atomic uint64_t stolen;	   /* partial chunks taken by reclaim */
	_Atomic uint64_t forced_complete;  /* direct-patch chunks the drain
					    * completed for their writer */
	_Atomic uint64_t pressure_rounds;  /* drains that reported pressure */
	_Atomic uint64_t abi_errors;	   /* page word in a state we did not
					    * expect (a misbehaving service) */
	_Atomic uint64_t pages_fine;	   /* pages partitioned as Div14 for
					    * many writers (the coarse ones are
					    * not counted: a shared counter on
					    * every chunk change) */
	_Atomic uint64_t standby_parked;   /* chunks the drain took for writers */
	_Atomic uint64_t standby_returned; /* of those and of the chunks writers
					    * reserved, freed unused */
	_Atomic uint64_t handoffs;	   /* full chunks writers left to the
					    * drain instead of queueing them */
};

/* A producer's view of one SMB. */
struct smb_arbiter {
	struct spn_smb smb;		/* the mapping (not owned) */
	struct smb_arbiter_opts opts;	/* as given */
	uint32_t layout;		/* opts.layout, or the coarse layout for
					 * the page size (see the top) */
	bool adaptive;			/* opts.layout was 0: pages are cut as
					 * Div14 while writers are many */
	uint32_t total_chunks;		/* chunks of the SMB in `layout` */
	bool prefetchw;			/* writers prefetch ahead for writing
					 * (x86: the CPU has PREFETCHW) */
	bool membarrier;		/* membarrier registered: writers need
					 * only a compiler barrier */
	/* num_pages * SPN_SMB_MAX_CHUNKS_PER_PAGE nodes, by
	 * page * SPN_SMB_MAX_CHUNKS_PER_PAGE + chunk */
	struct smb_chunk_node *nodes;
	/* live writers (relaxed: a hint for the layout of new pages) */
	_Atomic uint32_t live_writers;
	/* commit queue head (writers push with CAS, drain exchanges) */
	_Alignas(64) _Atomic(struct smb_qnode *) head;
	/* ---- I/O thread only ---- */
	_Alignas(64) struct smb_qnode *carry; /* drained nodes not yet sent,
					       * oldest first */
	uint32_t standby_hint;		/* where the standby search starts */
	uint32_t *page_free;		/* free chunk bytes per page, as last
					 * seen (smb_free_estimate) */
	uint64_t free_cached;		/* their sum */
	uint32_t free_cursor;		/* next page the estimate refreshes */
	uint32_t nrefill;		/* writer ids in refill[] */
	/* writers whose chunks this drain listed: candidates for standby
	 * chunks, and how many chunks of each it listed */
	uint16_t refill[SMB_STANDBY_PER_DRAIN];
	uint16_t refill_n[SMB_STANDBY_PER_DRAIN];
	/* writers the drain parked standby chunks for and still watches for
	 * hand-offs (see the top), and which ids are among them */
	uint16_t *watch;
	uint8_t *watched;
	uint32_t nwatch;		/* ids in watch[] */
	/* ---- registry (mutex) ---- */
	pthread_mutex_t lock;		/* guards everything below */
	struct spn_tw **writers;	/* live writers by id (reclaim sees these) */
	uint8_t *id_used;		/* by id: 1 from creation until the drain
					 * reported the id as removed */
	uint32_t next_writer_id;	/* round-robin allocation cursor */
	uint32_t hi_writer_id;		/* highest id handed out so far */
	uint32_t nwriters;		/* live writers */
	struct smb_arbiter_stats stats;	/* counters */
};

/*
 * Sets up *arb over the mapped SMB *smb (which must outlive it). Picks the
 * layout, registers for membarrier (else writers use seq_cst stores).
 * Returns 0, -EINVAL (layout with no chunks, or a chunk larger than the
 * ABI allows) or -ENOMEM.
 */
int smb_arbiter_init(struct smb_arbiter *arb, const struct spn_smb *smb,
		     const struct smb_arbiter_opts *opts);

/*
 * Frees what init allocated. Every writer must be destroyed already (a
 * writer still registered is freed too, its chunk left as it is).
 */
void smb_arbiter_destroy(struct smb_arbiter *arb);

/* The layout smb_arbiter_init() picks for pages of `page_size` bytes. */
uint32_t smb_arbiter_default_layout(uint32_t page_size);

/*
 * Any thread: makes a writer for `target_buffer` (a BufferID, 1..65535)
 * with the next free writer id. *out belongs to the calling thread from
 * now on. Returns 0, -EINVAL (target_buffer 0), -EMFILE (every writer id
 * is taken) or -ENOMEM.
 */
int smb_arbiter_create_writer(struct smb_arbiter *arb, uint32_t target_buffer,
			      struct spn_tw **out);

/* ---- Storage for one CommitDataRequest (I/O thread) ------------------- */

/* A writer id the I/O thread must announce or retire. */
struct smb_writer_event {
	uint16_t writer_id;	/* 1..32767 */
	uint32_t target_buffer;	/* its buffer (for RegisterTraceWriter) */
};

/* The request a drain fills, and the writer ids around it. All arrays are
 * allocated once by smb_commit_init(); a drain allocates nothing. */
struct smb_commit {
	Perfetto__Protos__CommitDataRequest req; /* what to send */
	Perfetto__Protos__CommitDataRequest__ChunksToMove *moves; /* storage */
	Perfetto__Protos__CommitDataRequest__ChunksToMove **move_ptrs; /* req view */
	Perfetto__Protos__CommitDataRequest__ChunkToPatch *entries; /* storage */
	Perfetto__Protos__CommitDataRequest__ChunkToPatch **entry_ptrs; /* req view */
	Perfetto__Protos__CommitDataRequest__ChunkToPatch__Patch *patches; /* storage */
	Perfetto__Protos__CommitDataRequest__ChunkToPatch__Patch **patch_ptrs; /* views */
	uint8_t *patch_data;	/* 4 bytes per patch */
	size_t npatches;	/* patches used in this request */
	/* RegisterTraceWriter these before sending req */
	struct smb_writer_event *added;
	uint32_t n_added;
	/* UnregisterTraceWriter these after sending req */
	struct smb_writer_event *removed;
	uint32_t n_removed;
	bool more;		/* the last drain left entries for another one */
	bool pressure;		/* the last drain found the SMB short of free
				 * chunks: call smb_arbiter_reclaim() */
};

/* Allocates the storage. Returns 0 or -ENOMEM. */
int smb_commit_init(struct smb_commit *c);

/* Frees it. */
void smb_commit_fini(struct smb_commit *c);

/*
 * I/O thread: moves what writers queued into c, oldest first: one
 * ChunksToMove {page, chunk, target_buffer} per chunk (a chunk still kept
 * BeingWritten for direct patches is forced Complete first), then the
 * patches that rode on it as ChunkToPatch {target_buffer, writer_id,
 * chunk_id, patches, has_more_patches}; new writer ids into c->added and
 * retired ones into c->removed (their writers are freed and the ids become
 * reusable). Stops at SMB_COMMIT_MAX_MOVES moves, SMB_COMMIT_MAX_PATCHES
 * patches or SMB_COMMIT_MAX_WRITER_EVENTS events of a kind (c->more is
 * then true: drain again after sending); a patch never precedes the move of
 * its chunk. flush_request_id != 0 goes into the request only when it
 * leaves nothing behind (c->more false): pass it on every drain of the
 * round. Sets c->pressure when, even once the listed chunks are freed, less
 * than half of the SMB is free. c is valid until the next drain.
 * Returns the number of entries and events (moves + patch entries + added +
 * removed); 0 means there is nothing to send unless flush_request_id is
 * set.
 *
 * The I/O thread's round: drain; RegisterTraceWriter for c->added; send
 * c->req (if it has entries or a flush id); UnregisterTraceWriter for
 * c->removed; again while c->more. When c->pressure, or before answering a
 * Flush, smb_arbiter_reclaim() and drain again: patches ride on the chunk a
 * writer is filling, so a flush must take that chunk too.
 */
int smb_arbiter_drain(struct smb_arbiter *arb, struct smb_commit *c,
		      uint64_t flush_request_id);

/*
 * I/O thread: asks every writer to hand its partial chunk back (for a
 * flush, or to sweep idle threads). Writers that are outside a packet lose
 * their chunk at once: it is marked Complete and queued here (they see it
 * at their next call). Writers inside a packet hand it back when the packet
 * ends. Returns the number of writers left to do it themselves (>= 0).
 * Makes one membarrier system call.
 */
int smb_arbiter_reclaim(struct smb_arbiter *arb);

/* I/O thread: true when writers queued or handed off something the drain
 * has not taken yet. */
bool smb_arbiter_pending(struct smb_arbiter *arb);

/* ---- For the trace writer's slow path (writer threads) ---------------- */

/* Where an acquired chunk is. */
struct smb_loc {
	struct spn_smb_chunk_header *hdr; /* its header in the SMB */
	uint32_t page;			  /* page index */
	uint32_t chunk;			  /* chunk index in the page */
	uint32_t layout;		  /* layout of the page */
	bool standby;			  /* it was the writer's standby chunk:
					   * smb_arbiter_publish_w() still has
					   * to write its id and packets */
};

/*
 * Takes a free chunk for tw (partitioning a free page if needed, starting
 * the search at tw->page_hint) and writes its header: chunk_id, tw's
 * writer id and `packets` (for a standby chunk, smb_arbiter_publish_w()
 * does that later). With `carries_patches`, the chunk's node must be
 * able to carry patches: if it has no block yet it gets tw->spare (the
 * caller made sure there is one). Honours the stall option. Fills *loc.
 * Returns 0 or -ENOSPC (no free chunk; counted).
 */
int smb_arbiter_acquire_w(struct smb_arbiter *arb, struct spn_tw *tw,
			  uint32_t chunk_id, uint16_t packets, bool carries_patches,
			  struct smb_loc *loc);

/* The standby word of a chunk: page + 1, layout, chunk index (0: none). */
static inline uint64_t smb_standby_word(const struct smb_loc *loc)
{
	return ((uint64_t)loc->page + 1u) << 16 | (uint64_t)loc->layout << 8 | loc->chunk;
}

/* Where standby word w (non-zero) points in smb (loc->standby untouched). */
static inline void smb_standby_loc(struct spn_smb *smb, uint64_t w, struct smb_loc *loc)
{
	loc->page = (uint32_t)(w >> 16) - 1u;
	loc->layout = (uint32_t)(w >> 8) & 0xFFu;
	loc->chunk = (uint32_t)w & 0xFFu;
	loc->hdr = spn_smb_chunk(smb, loc->page, loc->layout, loc->chunk);
}

/*
 * Writer, at the soft end of its chunk (trace_writer.h, SPN_TW_SOFT_END):
 * unless a chunk is already waiting (standby or reserved) or standby chunks
 * are off, takes a free chunk now, as the drain parks a standby chunk, for
 * its next chunk change (see "Reserved chunks" at the top). Nothing when
 * the SMB has no free chunk: the chunk change then searches as usual. With
 * a standby chunk parked, it brings that chunk's first line into our cache
 * for writing instead (a store to it: see smb_warm_standby in arbiter.c).
 */
void smb_arbiter_reserve_w(struct smb_arbiter *arb, struct spn_tw *tw);

/*
 * Writer, at a packet boundary with its chunk full: if a standby chunk is
 * parked and no patches ride on the full chunk, leaves the full chunk to
 * the drain in its hand-off ring (see "Hand-off" at the top), takes the
 * standby chunk into *loc as smb_arbiter_acquire_w() would (chunk id and
 * packets still to publish). Returns false, with nothing done, otherwise.
 */
bool smb_arbiter_handoff_w(struct smb_arbiter *arb, struct spn_tw *tw,
			   struct smb_loc *loc);

/*
 * Writes the chunk id and packets of a chunk taken from the writer's standby
 * ring or reserve (loc->standby; otherwise the acquisition wrote them already). Call it
 * before writing into the chunk.
 */
void smb_arbiter_publish_w(const struct smb_loc *loc, uint32_t chunk_id, uint16_t packets);

/*
 * Queues chunk (page, chunk) of tw for commit. If `open_for_patches`, the
 * chunk stays BeingWritten and its node becomes OPEN(writer, chunk_id) for
 * direct patching; otherwise it is marked Complete first. Returns the
 * chunk's node.
 */
struct smb_chunk_node *smb_arbiter_commit_w(struct smb_arbiter *arb,
					    uint32_t page, uint32_t chunk,
					    uint32_t target_buffer,
					    uint16_t writer_id, uint32_t chunk_id,
					    bool open_for_patches);

/* Marks BeingWritten chunk (page, chunk) Complete (in the page's layout,
 * which cannot change while we own a chunk of it). Returns 0, or -EBUSY
 * (counted in abi_errors) if it is not ours any more. */
int smb_arbiter_complete(struct smb_arbiter *arb, uint32_t page, uint32_t chunk);

/* The state word of a node in state `st` for (writer_id, chunk_id). */
static inline uint64_t smb_node_word(uint16_t writer_id, uint32_t chunk_id,
				     enum smb_node_state st)
{
	return (uint64_t)chunk_id << 32 | (uint64_t)writer_id << 8 | (uint64_t)st;
}

/* Queues tw's hand-off chunks itself if the drain has not taken them yet
 * (destroy, before the current chunk, so chunk ids stay in order). */
void smb_arbiter_take_back_w(struct smb_arbiter *arb, struct spn_tw *tw);

/* Retires tw (destroy, after smb_arbiter_take_back_w() and the last
 * chunk): out of the registry, then the GONE node queued. */
void smb_arbiter_retire_writer_w(struct smb_arbiter *arb, struct spn_tw *tw);

/* Owner thread (or the creator): aims tw's cursors at its scratch header,
 * as a writer without a chunk has them, so that the next packet start
 * takes the slow path. */
static inline void smb_tw_aim_at_scratch(struct spn_tw *tw)
{
	tw->hdr = (struct spn_smb_chunk_header *)(void *)tw->scratch;
	tw->cur = tw->end = tw->chunk_end = tw->scratch + SPN_SMB_CHUNK_HEADER_SIZE;
}

/* The node of chunk (page, chunk). */
static inline struct smb_chunk_node *smb_arbiter_node(struct smb_arbiter *arb,
						      uint32_t page, uint32_t chunk)
{
	return &arb->nodes[page * SPN_SMB_MAX_CHUNKS_PER_PAGE + chunk];
}

#pragma GCC visibility pop

#endif
