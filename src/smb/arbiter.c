// SPDX-License-Identifier: Apache-2.0
// The producer's side of an SMB: page partitioning and chunk search, writer ids, the commit queue and its drain into CommitDataRequests, and reclaiming idle writers' chunks.
//
// See arbiter.h for who calls what. The argument for reclaim (stealing a
// partial chunk from a writer that is between packets) is at the top of
// include/spindle/trace_writer.h; smb_arbiter_reclaim() below is the I/O
// thread's half of it, tw_reclaim_ack() in trace_writer.c the writer's.
#include "smb/arbiter.h"

#include <errno.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <linux/membarrier.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Chunk size (header included) the default layout aims for, at least:
 * about 4 KiB, as a 4 KiB page cut in one (Perfetto's SDK default). A
 * chunk change is a writer's slow path (a CAS to complete, a push, a CAS
 * to acquire, each on a line another thread touched last), so bigger
 * chunks take it less often: 1 KiB chunks put it on ~1.6% of slice
 * events, 4 KiB on ~0.4%. Many live writers still get Div14 pages (see
 * smb_pick_layout). */
#define SMB_TARGET_CHUNK_SIZE 4000u
/* Tries on one page word before moving on to the next page. */
#define SMB_PAGE_TRIES 8u
/* Tries to mark our own chunk Complete while other chunks of the page
 * keep changing the word (each failure is someone else's progress). */
#define SMB_COMPLETE_TRIES 100000u
/* Stall mode: first back-off sleep, and the longest one. */
#define SMB_STALL_FIRST_NS 10000L
#define SMB_STALL_MAX_NS 1000000L

uint32_t smb_arbiter_default_layout(uint32_t page_size)
{
	static const uint32_t finest_first[] = {
		SPN_SMB_PAGE_DIV14, SPN_SMB_PAGE_DIV7, SPN_SMB_PAGE_DIV4,
		SPN_SMB_PAGE_DIV2,
	};

	for (size_t i = 0; i < sizeof(finest_first) / sizeof(finest_first[0]); i++)
		if (spn_smb_chunk_size_for(page_size, finest_first[i]) >=
		    SMB_TARGET_CHUNK_SIZE)
			return finest_first[i];
	return SPN_SMB_PAGE_DIV1;
}

static long smb_membarrier(int cmd)
{
	return syscall(__NR_membarrier, cmd, 0, 0);
}

/* Whether writers prefetch ahead for writing (_spn_tw_prefetch_ahead): on
 * x86 only with PREFETCHW (CPUID 0x80000001: ECX bit 8, "3DNowPrefetch" /
 * PRFCHW: every AMD64 CPU, Intel's since Broadwell); elsewhere the
 * compiler's write prefetch is a hint every CPU may ignore. */
static bool smb_cpu_has_prefetchw(void)
{
#if defined(__x86_64__) || defined(__i386__)
	unsigned a, b, c, d;

	return __get_cpuid(0x80000001u, &a, &b, &c, &d) && (c & (1u << 8));
#else
	return true;
#endif
}

static uint32_t smb_page_free(const struct smb_arbiter *arb, uint32_t page);

int smb_arbiter_init(struct smb_arbiter *arb, const struct spn_smb *smb,
		     const struct smb_arbiter_opts *opts)
{
	uint32_t layout, i, nnodes;

	memset(arb, 0, sizeof(*arb));
	arb->smb = *smb;
	if (opts)
		arb->opts = *opts;
	layout = arb->opts.layout ? arb->opts.layout :
				    smb_arbiter_default_layout(smb->page_size);
	if (spn_smb_layout_chunks(layout) == 0 ||
	    smb->chunk_size[layout] > SPN_SMB_MAX_CHUNK_SIZE ||
	    smb->chunk_size[layout] < SPN_SMB_CHUNK_HEADER_SIZE + 2 * SPN_TW_MIN_ROOM)
		return -EINVAL;
	if (arb->opts.max_writer_id == 0 || arb->opts.max_writer_id > SPN_SMB_MAX_WRITER_ID)
		arb->opts.max_writer_id = SPN_SMB_MAX_WRITER_ID;
	arb->layout = layout;
	arb->prefetchw = smb_cpu_has_prefetchw();
	arb->adaptive = arb->opts.layout == 0 && layout != SPN_SMB_PAGE_DIV14;
	arb->total_chunks = smb->num_pages * spn_smb_layout_chunks(layout);
	nnodes = smb->num_pages * SPN_SMB_MAX_CHUNKS_PER_PAGE;
	arb->nodes = calloc(nnodes, sizeof(*arb->nodes));
	arb->writers = calloc(arb->opts.max_writer_id + 1u, sizeof(*arb->writers));
	arb->id_used = calloc(arb->opts.max_writer_id + 1u, 1);
	arb->page_free = calloc(smb->num_pages, sizeof(*arb->page_free));
	arb->watch = calloc(arb->opts.max_writer_id + 1u, sizeof(*arb->watch));
	arb->watched = calloc(arb->opts.max_writer_id + 1u, 1);
	if (!arb->nodes || !arb->writers || !arb->id_used || !arb->page_free ||
	    !arb->watch || !arb->watched) {
		free(arb->nodes);
		free(arb->writers);
		free(arb->id_used);
		free(arb->page_free);
		free(arb->watch);
		free(arb->watched);
		return -ENOMEM;
	}
	for (i = 0; i < smb->num_pages; i++) {
		arb->page_free[i] = smb_page_free(arb, i);
		arb->free_cached += arb->page_free[i];
	}
	for (i = 0; i < nnodes; i++) {
		arb->nodes[i].q.kind = SMB_Q_CHUNK;
		arb->nodes[i].page = i / SPN_SMB_MAX_CHUNKS_PER_PAGE;
		arb->nodes[i].chunk = i % SPN_SMB_MAX_CHUNKS_PER_PAGE;
	}
	atomic_init(&arb->head, NULL);
	atomic_init(&arb->live_writers, 0);
	arb->next_writer_id = 1;
	pthread_mutex_init(&arb->lock, NULL);
	/* Registering is per process and idempotent; without it (old kernel,
	 * seccomp) the writers pay a seq_cst store per packet instead. */
	arb->membarrier = !arb->opts.force_heavy_fence &&
			  smb_membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
	return 0;
}

static void smb_take_queue(struct smb_arbiter *arb);

/* Frees the writers whose GONE node is still listed in q, oldest first
 * (the drain never saw it). A writer's other node (its announce node)
 * lives in the same allocation and comes before GONE in that order. */
static void smb_free_retired(struct smb_qnode *q)
{
	while (q) {
		struct smb_qnode *next = q->next;

		if (q->kind == SMB_Q_WRITER_GONE) {
			struct spn_tw *tw = ((struct smb_writer_node *)q)->tw;

			free(tw->spare);
			free(tw);
		}
		q = next;
	}
}

void smb_arbiter_destroy(struct smb_arbiter *arb)
{
	uint32_t id;

	/* The queue, newest first, is appended to the carry list oldest
	 * first: walked newest first, a writer created and retired since the
	 * last drain would be freed at its GONE node before the walk reached
	 * its announce node inside it. No writer may run any more. */
	smb_take_queue(arb);
	smb_free_retired(arb->carry);
	for (id = 1; arb->writers && id <= arb->opts.max_writer_id; id++) {
		if (arb->writers[id]) {
			free(arb->writers[id]->spare);
			free(arb->writers[id]);
		}
	}
	for (id = 0; arb->nodes && id < arb->smb.num_pages * SPN_SMB_MAX_CHUNKS_PER_PAGE; id++)
		free(arb->nodes[id].patches);
	free(arb->writers);
	free(arb->id_used);
	free(arb->nodes);
	free(arb->page_free);
	free(arb->watch);
	free(arb->watched);
	pthread_mutex_destroy(&arb->lock);
	memset(arb, 0, sizeof(*arb));
}

/* ---- Writers ------------------------------------------------------------ */

/*
 * Drain or retiring writer: takes every hand-off tw has left (arbiter.h,
 * "Hand-off") into out[], oldest first. Returns how many: 0 when there is
 * none, or when the other taker won them.
 */
static uint32_t smb_handoffs_take(struct spn_tw *tw, struct spn_tw_handoff *out)
{
	/* Acquire: pairs with the other taker's release CAS below, so a
	 * failed race is seen as what it took. */
	uint32_t h = atomic_load_explicit(&tw->ho_head, memory_order_acquire);

	for (;;) {
		/* Acquire: pairs with the owner's release store of ho_tail
		 * (smb_arbiter_handoff_w), so the slots, the chunks' bytes and
		 * headers are visible. */
		uint32_t t = atomic_load_explicit(&tw->ho_tail, memory_order_acquire);
		uint32_t n = t - h;

		/* n <= SPN_TW_RING: the drain parks standby chunks only while
		 * they and the hand-offs out fit the ring together
		 * (smb_park_standby), and each hand-off takes one; checked all
		 * the same, so that a broken invariant cannot overrun out[]. */
		if (n == 0 || n > SPN_TW_RING)
			return 0;
		for (uint32_t i = 0; i < n; i++)
			out[i] = tw->ho_slot[(h + i) % SPN_TW_RING];
		/* acq_rel: the drain and a retiring owner may both try; one
		 * moves ho_head past these slots, the other fails and sees
		 * the new head (acquire on failure: it retries from there).
		 * The owner's later writes to these slots are ordered after
		 * our reads through the standby ring (see smb_park_standby). */
		if (atomic_compare_exchange_strong_explicit(&tw->ho_head, &h, t,
							    memory_order_acq_rel,
							    memory_order_acquire))
			return n;
	}
}

static void smb_push(struct smb_arbiter *arb, struct smb_qnode *q);

int smb_arbiter_create_writer(struct smb_arbiter *arb, uint32_t target_buffer,
			      struct spn_tw **out)
{
	size_t size = sizeof(struct spn_tw) + 2 * sizeof(struct smb_writer_node);
	struct spn_tw *tw;
	uint32_t id = 0, i, max = arb->opts.max_writer_id;

	if (target_buffer == 0 || target_buffer > UINT16_MAX)
		return -EINVAL;
	size = (size + 63u) & ~(size_t)63u;
	tw = aligned_alloc(64, size);
	if (!tw)
		return -ENOMEM;
	memset(tw, 0, size);
	pthread_mutex_lock(&arb->lock);
	/* Round robin: an id comes back only after all others were used. */
	for (i = 0; i < max; i++) {
		uint32_t cand = (arb->next_writer_id - 1u + i) % max + 1u;

		if (!arb->id_used[cand]) {
			id = cand;
			break;
		}
	}
	if (id == 0) {
		pthread_mutex_unlock(&arb->lock);
		free(tw);
		return -EMFILE;
	}
	arb->next_writer_id = id % max + 1u;
	if (id > arb->hi_writer_id)
		arb->hi_writer_id = id;
	arb->id_used[id] = 1;
	arb->writers[id] = tw;
	arb->nwriters++;
	atomic_fetch_add_explicit(&arb->live_writers, 1, memory_order_relaxed);

	tw->arb = arb;
	tw->writer_id = (uint16_t)id;
	tw->target_buffer = target_buffer;
	tw->heavy_fence = !arb->membarrier;
	tw->prefetchw = arb->prefetchw;
	smb_tw_aim_at_scratch(tw);
	/* Spread writers over the SMB so they do not all fight over page 0. */
	tw->page_hint = (uint32_t)(((uint64_t)id * 2654435761u) % arb->smb.num_pages);
	tw->wnodes = (struct smb_writer_node *)(void *)(tw + 1);
	tw->wnodes[0].q.kind = SMB_Q_WRITER_ADD;
	tw->wnodes[0].tw = tw;
	tw->wnodes[1].q.kind = SMB_Q_WRITER_GONE;
	tw->wnodes[1].tw = tw;
	/* Announced before any of its chunks can be queued. */
	smb_push(arb, &tw->wnodes[0].q);
	pthread_mutex_unlock(&arb->lock);
	*out = tw;
	return 0;
}

void smb_arbiter_take_back_w(struct smb_arbiter *arb, struct spn_tw *tw)
{
	struct spn_tw_handoff ho[SPN_TW_RING];
	struct smb_loc loc;
	uint32_t n = smb_handoffs_take(tw, ho);

	for (uint32_t i = 0; i < n; i++) {
		smb_standby_loc(&arb->smb, ho[i].loc, &loc);
		smb_arbiter_commit_w(arb, loc.page, loc.chunk, (uint32_t)(ho[i].meta >> 32),
				     tw->writer_id, (uint32_t)ho[i].meta, false);
	}
}

void smb_arbiter_retire_writer_w(struct smb_arbiter *arb, struct spn_tw *tw)
{
	pthread_mutex_lock(&arb->lock);
	arb->writers[tw->writer_id] = NULL;
	arb->nwriters--;
	atomic_fetch_sub_explicit(&arb->live_writers, 1, memory_order_relaxed);
	pthread_mutex_unlock(&arb->lock);
	/* After its last chunk; the drain frees tw and the id. */
	smb_push(arb, &tw->wnodes[1].q);
}

/* ---- Chunks ------------------------------------------------------------- */

/* Mask of the chunks of a page word (in `nchunks` chunks) that are Free:
 * one bit at the even position 2i for each free chunk i. */
static uint32_t smb_free_mask(uint32_t word, uint32_t nchunks)
{
	uint32_t valid = (uint32_t)((1ull << (2u * nchunks)) - 1u) & 0x05555555u;

	return ~(word | (word >> 1)) & valid;
}

/*
 * True when the node of a chunk we just took is IDLE, i.e. the drain is
 * done with its previous use; then it is ours to fill.
 */
static bool smb_node_idle(struct smb_arbiter *arb, uint32_t page, uint32_t chunk)
{
	struct smb_chunk_node *node = smb_arbiter_node(arb, page, chunk);

	/* Acquire: pairs with the drain's release store of IDLE, so its reads
	 * of the node's fields are done before we rewrite them. */
	return (atomic_load_explicit(&node->state, memory_order_acquire) & 0xFF) ==
	       SMB_NODE_IDLE;
}

/* Layout for a page being partitioned now (see the top of arbiter.h). */
static uint32_t smb_pick_layout(struct smb_arbiter *arb)
{
	/* Relaxed: a hint; a stale count only picks the other layout once. */
	if (arb->adaptive &&
	    atomic_load_explicit(&arb->live_writers, memory_order_relaxed) * 2u >
		    arb->total_chunks) {
		atomic_fetch_add_explicit(&arb->stats.pages_fine, 1, memory_order_relaxed);
		return SPN_SMB_PAGE_DIV14;
	}
	return arb->layout;
}

/* Gives node the patch block *block (NULL: none needed) unless it has one. */
static void smb_node_give_block(struct smb_chunk_node *node, struct smb_patch **block)
{
	if (block && !node->patches) {
		node->patches = *block;
		*block = NULL;
	}
}

/* A chunk just won: check its node and give it a patch block if needed.
 * Returns false (chunk given up) if the node is still queued. */
static bool smb_claim_node(struct smb_arbiter *arb, struct smb_patch **block,
			   const struct smb_loc *loc)
{
	struct smb_chunk_node *node = smb_arbiter_node(arb, loc->page, loc->chunk);

	if (!smb_node_idle(arb, loc->page, loc->chunk)) {
		/* The service freed a chunk we never committed: keep away
		 * from its node (it is in the queue). */
		smb_arbiter_complete(arb, loc->page, loc->chunk);
		atomic_fetch_add_explicit(&arb->stats.abi_errors, 1, memory_order_relaxed);
		return false;
	}
	smb_node_give_block(node, block);
	return true;
}

/* One pass over the pages from *hint (updated to the page found) for a
 * chunk of `writer_id`; `block`: a patch block for its node if it has none
 * (NULL: none needed). Returns 0 or -ENOSPC. */
static int smb_scan(struct smb_arbiter *arb, uint32_t *hint, uint16_t writer_id,
		    uint32_t chunk_id, uint16_t packets, struct smb_patch **block,
		    struct smb_loc *loc)
{
	uint32_t n = arb->smb.num_pages, i;

	for (i = 0; i < n; i++) {
		uint32_t page = *hint + i, tries;

		if (page >= n)
			page -= n;
		for (tries = 0; tries < SMB_PAGE_TRIES; tries++) {
			/* Relaxed: the CASes below decide. */
			uint32_t w = spn_smb_page_load(&arb->smb, page, memory_order_relaxed);
			uint32_t layout = spn_smb_word_layout(w), nch, free_mask, c;
			int r;

			if (w == 0) {
				/* Cut the page and take its chunk 0 at once. */
				layout = smb_pick_layout(arb);
				c = 0;
				r = spn_smb_try_partition_acquire(&arb->smb, page, layout,
								  writer_id, chunk_id,
								  packets, &loc->hdr);
			} else {
				nch = spn_smb_layout_chunks(layout);
				if (nch == 0)
					break;
				free_mask = smb_free_mask(w, nch);
				if (!free_mask)
					break;
				c = (uint32_t)__builtin_ctz(free_mask) / 2u;
				r = spn_smb_try_acquire_write(&arb->smb, page, layout, c,
							      writer_id, chunk_id, packets,
							      &loc->hdr);
			}
			if (r == -EINVAL)
				break;
			if (r != 0)
				continue;
			loc->page = page;
			loc->chunk = c;
			loc->layout = layout;
			if (!smb_claim_node(arb, block, loc))
				continue;
			*hint = page;
			return 0;
		}
	}
	return -ENOSPC;
}

static uint64_t smb_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * The SMB is short or full: calls the hurry hook (else the wake hook)
 * after a seq_cst fence (their contract, arbiter.h), for callers that did
 * no seq_cst operation just before. Not inlined: gcc rejects
 * atomic_thread_fence under -fsanitize=thread (-Wtsan) once it is inlined
 * into a caller; ThreadSanitizer does not model fences anyway.
 */
static __attribute__((noinline)) void smb_hurry_fenced(struct smb_arbiter *arb)
{
	atomic_thread_fence(memory_order_seq_cst);
	if (arb->opts.hurry)
		arb->opts.hurry(arb->opts.ctx);
	else
		arb->opts.wake(arb->opts.ctx);
}

/*
 * Free chunk bytes in a sample of the SMB: at most SMB_LOW_WATER_SAMPLES
 * pages spread evenly over it (every page of a small SMB), the first one
 * picked by `seed`; *seen gets the chunk bytes of the pages looked at.
 */
static uint64_t smb_free_sample(const struct smb_arbiter *arb, uint32_t seed,
				uint64_t *seen)
{
	uint32_t n = arb->smb.num_pages, k, stride, page, i;
	uint64_t free_bytes = 0;

	k = n < SMB_LOW_WATER_SAMPLES ? n : SMB_LOW_WATER_SAMPLES;
	stride = n / k;
	page = seed % stride;
	for (i = 0; i < k; i++, page += stride)
		free_bytes += smb_page_free(arb, page);
	*seen = (uint64_t)k * (arb->smb.page_size - SPN_SMB_PAGE_HEADER_SIZE);
	return free_bytes;
}

/*
 * Every SMB_LOW_WATER_EVERY-th chunk tw takes, hurries the I/O thread when
 * less than half of the SMB is free, so that it drains and reclaims
 * idle writers' partial chunks before some writer finds none: 1,000
 * threads each holding a partial chunk exhaust a 256 KiB SMB (896 chunks
 * at most) while nothing is queued that would wake it; and a thread that
 * writes more than an SMB per commit period would fill it while the I/O
 * thread, awake, waits out the period. Writer slow path (once per chunk,
 * never per event); the hook is a flag test while a hurry is on its way.
 * The free share is estimated from a sample of pages (smb_free_sample):
 * summing every page word cost a load per page, most of them lines the
 * service wrote last, 2,048 for an 8 MiB SMB, on the chunk change of the
 * writer that happened to check.
 */
static void smb_low_water_check(struct smb_arbiter *arb, const struct spn_tw *tw)
{
	/* The writer's own count, offset by its id so that writers check at
	 * different chunks: 1,000 writers taking one chunk each still check
	 * about 1 in SMB_LOW_WATER_EVERY times. A counter shared by all
	 * writers cost every chunk change a locked add on a line that every
	 * slow path reads (arb->smb, arb->nodes): sdk_bench, 2 threads,
	 * chunk change median 120-160 -> 80-110 ns for raw16. */
	uint32_t n = (uint32_t)tw->stats.chunks + tw->writer_id;
	uint64_t seen;

	if (n % SMB_LOW_WATER_EVERY || !arb->opts.wake)
		return;
	/* The sample moves on with every check, so that checks together
	 * look at every page. */
	if (smb_free_sample(arb, n / SMB_LOW_WATER_EVERY, &seen) *
		    SMB_LOW_WATER_DIVISOR < seen)
		smb_hurry_fenced(arb);
}

/* ---- Standby chunks (see the top of arbiter.h) -------------------------- */

/* Standby chunks are parked while writers are few (see arbiter.h). */
static bool smb_standby_on(struct smb_arbiter *arb)
{
	/* Relaxed: a hint, as in smb_pick_layout. */
	return !arb->opts.no_standby &&
	       atomic_load_explicit(&arb->live_writers, memory_order_relaxed) *
			       SMB_STANDBY_RATIO <= arb->total_chunks;
}

/* Writer: *loc becomes the chunk taken ahead for it (location word w: a
 * standby or reserved chunk, chunk id and packets still to publish), with
 * a patch block for its node if `block` offers one and it has none. */
static void smb_use_taken(struct smb_arbiter *arb, uint64_t w, struct smb_patch **block,
			  struct smb_loc *loc)
{
	smb_standby_loc(&arb->smb, w, loc);
	smb_node_give_block(smb_arbiter_node(arb, loc->page, loc->chunk), block);
	loc->standby = true;
}

/*
 * Writer: the location word of the next chunk in tw's standby ring, or 0
 * when the drain has parked none since the writer took the last.
 */
static uint64_t smb_standby_next(struct spn_tw *tw)
{
	/* Relaxed: only we move sb_head, except the I/O thread while we are
	 * quiet (reclaim, ordered for us by tw_reclaim_ack's acquire); it
	 * then moves it to sb_tail, so sb_seen may lag behind it. */
	uint32_t h = atomic_load_explicit(&tw->sb_head, memory_order_relaxed);

	/* sb_seen is a lower bound of sb_tail: while it is ahead of sb_head,
	 * slot h was parked and acquired when we loaded it. Otherwise load
	 * sb_tail again. Acquire: pairs with the drain's release store in
	 * smb_park_standby, so its acquire CAS on the page word, its header
	 * stores, its check that the node is IDLE and the slot happen-before
	 * our use of the chunk. */
	if ((int32_t)(tw->sb_seen - h) <= 0) {
		tw->sb_seen = atomic_load_explicit(&tw->sb_tail, memory_order_acquire);
		if (tw->sb_seen == h)
			return 0;
	}
	return tw->sb_slot[h % SPN_TW_RING];
}

/*
 * Writer, inside a packet: takes the next chunk of tw's standby ring if the
 * drain parked one. No search and no CAS: the drain did both. Its header
 * still says chunk id 0 and packets 0; smb_arbiter_publish_w() writes them
 * once the caller has queued its full chunk (loc->standby tells it to), so
 * that the stores to the header's line, which the drain wrote last, wait in
 * the store buffer behind no locked instruction of ours. Returns false
 * when there is none.
 */
static bool smb_take_standby(struct smb_arbiter *arb, struct spn_tw *tw,
			     struct smb_patch **block, struct smb_loc *loc)
{
	uint64_t w = smb_standby_next(tw);

	if (!w)
		return false;
	/* Release: a hand-off stored before (smb_arbiter_handoff_w) is seen
	 * by a drain that sees this take (its acquire load in
	 * smb_take_handoffs), and our read of the slot comes before the
	 * drain's next write to it (its acquire load in smb_park_standby).
	 * Reclaim reads sb_head after in_packet's release store of 0 (see
	 * smb_return_standby). */
	atomic_store_explicit(&tw->sb_head,
			      atomic_load_explicit(&tw->sb_head, memory_order_relaxed) + 1u,
			      memory_order_release);
	smb_use_taken(arb, w, block, loc);
	tw->stats.standby_used++;
	return true;
}

void smb_arbiter_publish_w(const struct smb_loc *loc, uint32_t chunk_id, uint16_t packets)
{
	if (!loc->standby)
		return; /* spn_smb_try_acquire_write() wrote them */
	/* Relaxed: published by the release store of packets just after. */
	atomic_store_explicit(&loc->hdr->chunk_id, chunk_id, memory_order_relaxed);
	/* Release: as in spn_smb_try_acquire_write(), the chunk id before
	 * packets; pairs with a scraper's acquire load of packets. */
	atomic_store_explicit(&loc->hdr->packets, packets, memory_order_release);
}

/*
 * Writer, at a soft end with a standby chunk parked (location word w: the
 * one its chunk change will take):
 * stores 0 into the size slot of the chunk's first packet, which the
 * chunk change writes first anyway. The drain wrote that line last (page
 * word and header, when it parked the chunk); the store asks for it now, a
 * few hundred ns ahead, so that the chunk change finds it in our cache
 * (sdk_bench, 1 thread, quiet spells: chunk-change p90 150 -> 100-125 ns,
 * slice p99.9 140-170 -> 100-120 ns). A read prefetch or a load would only
 * share the line. Harmless: the header says 0 packets until
 * smb_arbiter_publish_w(), so no scraper reads the payload, and the chunk
 * stays ours (the caller is inside a packet: no reclaim can take it).
 */
static void smb_warm_standby(struct smb_arbiter *arb, uint64_t w)
{
	struct smb_loc loc;

	smb_standby_loc(&arb->smb, w, &loc);
	memset((uint8_t *)loc.hdr + SPN_SMB_CHUNK_HEADER_SIZE, 0,
	       SPN_SMB_PACKET_HEADER_SIZE);
}

void smb_arbiter_reserve_w(struct smb_arbiter *arb, struct spn_tw *tw)
{
	struct smb_loc loc;
	uint64_t w;

	if (tw->reserve || !smb_standby_on(arb))
		return;
	/* Acquired (smb_standby_next): the drain's CAS and header stores (and
	 * the service's reads of the chunk's last contents before it)
	 * happen-before our store into the chunk. smb_arbiter_handoff_w then
	 * finds the line in our cache. */
	w = smb_standby_next(tw);
	if (w) {
		smb_warm_standby(arb, w);
		return;
	}
	/* As the drain parks a standby chunk: chunk id 0 and packets 0 until
	 * smb_arbiter_publish_w(), so no scraper takes anything from it. */
	if (smb_scan(arb, &tw->page_hint, tw->writer_id, 0, 0, NULL, &loc) != 0)
		return;
	tw->reserve = smb_standby_word(&loc);
	tw->stats.reserved++;
	smb_low_water_check(arb, tw);
}

bool smb_arbiter_handoff_w(struct smb_arbiter *arb, struct spn_tw *tw,
			   struct smb_loc *loc)
{
	const struct smb_loc full = { .page = tw->page, .chunk = tw->chunk,
				      .layout = tw->layout };
	/* Relaxed: only we move ho_tail. */
	uint32_t t = atomic_load_explicit(&tw->ho_tail, memory_order_relaxed);
	struct spn_tw_handoff *slot = &tw->ho_slot[t % SPN_TW_RING];

	/* No room check: the drain parks standby chunks only while they and
	 * the hand-offs out fit the ring together (smb_park_standby), and
	 * each hand-off takes one of them. */
	if (tw->rides || smb_standby_next(tw) == 0)
		return false;
	slot->loc = smb_standby_word(&full);
	slot->meta = (uint64_t)tw->chunk_id | (uint64_t)tw->target_buffer << 32;
	/* Release: the chunk's bytes and header and the slot before the
	 * hand-off; pairs with the acquire load in smb_handoffs_take. Then
	 * the standby chunk is taken, sb_head moved with release after this
	 * store, which is what lets the drain stop watching us safely. No
	 * wake check: see "Hand-off" in arbiter.h for why none is owed. */
	atomic_store_explicit(&tw->ho_tail, t + 1u, memory_order_release);
	return smb_take_standby(arb, tw, NULL, loc);
}

/*
 * I/O thread: parks free chunks in tw's standby ring until it holds `want`
 * (at most SPN_TW_RING), or no free chunk is left.
 */
static void smb_park_standby(struct smb_arbiter *arb, struct spn_tw *tw, uint32_t want)
{
	/* Relaxed: only we move sb_tail. Acquire on sb_head: pairs with the
	 * writer's release store in smb_take_standby, so its reads of the
	 * slots we refill are done, and the hand-offs it made before those
	 * takes are counted below. */
	uint32_t t = atomic_load_explicit(&tw->sb_tail, memory_order_relaxed);
	uint32_t h = atomic_load_explicit(&tw->sb_head, memory_order_acquire);
	/* Hand-offs out. Each later one takes a standby chunk counted in
	 * t - h, so while t - h + out <= SPN_TW_RING the hand-off ring can
	 * never be full when the writer has a standby chunk to take. That
	 * also orders the ring's slots: the writer rewrites the slot of
	 * hand-off k only with a standby chunk parked after the drain took k
	 * (and read its slot), which it acquired through sb_tail. Relaxed on
	 * ho_head: we move it, or a retiring owner (which only makes it
	 * larger: `out` is then too large, which is safe). */
	uint32_t out = atomic_load_explicit(&tw->ho_tail, memory_order_acquire) -
		       atomic_load_explicit(&tw->ho_head, memory_order_relaxed);
	uint32_t room = out < SPN_TW_RING ? SPN_TW_RING - out : 0;
	uint32_t t0 = t;
	struct smb_loc loc;

	if (want > room)
		want = room;
	/* Refill only once the ring is down to half of what the writer
	 * wants: a drain that tops it up by one chunk at every pass rewrites
	 * the ring's tail line while the writer reads it (sdk_bench, polling
	 * drainer, 1 thread: raw16 chunk change p90 ~130 ns that way). */
	if (t - h > want / 2)
		return;
	while (t - h < want &&
	       smb_scan(arb, &arb->standby_hint, tw->writer_id, 0, 0, NULL, &loc) == 0)
		tw->sb_slot[t++ % SPN_TW_RING] = smb_standby_word(&loc);
	if (t == t0)
		return;
	atomic_fetch_add_explicit(&arb->stats.standby_parked, t - t0, memory_order_relaxed);
	/* Release: the slots and the chunks' headers before the writer can
	 * see them; pairs with its acquire load in smb_standby_next. */
	atomic_store_explicit(&tw->sb_tail, t, memory_order_release);
	/* Watched for hand-offs from now on (smb_take_handoffs). */
	if (!arb->watched[tw->writer_id]) {
		arb->watched[tw->writer_id] = 1;
		arb->watch[arb->nwatch++] = tw->writer_id;
	}
}

/* I/O thread: gives a chunk taken for a writer but never used (location
 * word w: BeingWritten, packets 0) back to Free. */
static void smb_free_unused(struct smb_arbiter *arb, uint64_t w)
{
	struct smb_loc loc;
	uint32_t i;
	int r = -EAGAIN;

	smb_standby_loc(&arb->smb, w, &loc);
	for (i = 0; i < SMB_COMPLETE_TRIES && r == -EAGAIN; i++)
		r = spn_smb_try_free(&arb->smb, loc.page, loc.layout, loc.chunk,
				     SPN_SMB_BEING_WRITTEN);
	atomic_fetch_add_explicit(r == 0 ? &arb->stats.standby_returned :
					   &arb->stats.abi_errors,
				  1, memory_order_relaxed);
}

/*
 * I/O thread, while tw cannot take its standby chunks (reclaim holds
 * STEALING, or tw retired): gives them, and the chunk tw reserved, back to
 * Free unused.
 */
static void smb_return_standby(struct smb_arbiter *arb, struct spn_tw *tw)
{
	/* Relaxed: what tw stored last is ordered before us by the acquire
	 * that made it quiet (in_packet == 0 under STEALING, or the queue's
	 * acquire exchange that brought its GONE node); sb_tail is ours. */
	uint32_t h = atomic_load_explicit(&tw->sb_head, memory_order_relaxed);
	uint32_t t = atomic_load_explicit(&tw->sb_tail, memory_order_relaxed);

	if (h != t) {
		for (; h != t; h++)
			smb_free_unused(arb, tw->sb_slot[h % SPN_TW_RING]);
		/* Relaxed: the writer reads it after the release store of
		 * STOLEN (reclaim), or never again (retired). */
		atomic_store_explicit(&tw->sb_head, t, memory_order_relaxed);
	}
	/* The chunk tw took ahead (smb_arbiter_reserve_w): a plain field of
	 * the writer's slow path, ordered for us as above. */
	if (tw->reserve) {
		smb_free_unused(arb, tw->reserve);
		tw->reserve = 0;
	}
}

/*
 * Standby chunks one writer may hold: as many as the drain listed of it
 * (what it will likely fill again by the next drain), at least
 * SMB_STANDBY_MIN, at most its share of the standby quarter of the SMB
 * (SMB_STANDBY_RATIO) and the ring, and never none.
 */
static uint32_t smb_standby_want(const struct smb_arbiter *arb, uint32_t listed)
{
	/* Relaxed: a hint, as in smb_standby_on. */
	uint32_t live = atomic_load_explicit(&arb->live_writers, memory_order_relaxed);
	uint32_t cap = arb->total_chunks / SMB_STANDBY_RATIO / (live ? live : 1u);
	uint32_t min = arb->opts.standby_min ? arb->opts.standby_min : SMB_STANDBY_MIN;

	if (cap > SPN_TW_RING)
		cap = SPN_TW_RING;
	if (listed < min)
		listed = min;
	if (listed > cap)
		listed = cap;
	return listed ? listed : 1u;
}

/* I/O thread, end of a drain: parks standby chunks for the writers whose
 * chunks it listed, while writers are few and the SMB is not short. */
static void smb_refill_standby(struct smb_arbiter *arb, bool pressure)
{
	uint32_t i;

	if (!pressure && smb_standby_on(arb)) {
		pthread_mutex_lock(&arb->lock);
		for (i = 0; i < arb->nrefill; i++) {
			struct spn_tw *tw = arb->writers[arb->refill[i]];

			if (tw)
				smb_park_standby(arb, tw,
						 smb_standby_want(arb, arb->refill_n[i]));
		}
		pthread_mutex_unlock(&arb->lock);
	}
	arb->nrefill = 0;
}

/* I/O thread: notes that the drain listed a chunk of writer `id` (not
 * while standby chunks are off: nobody would get one). */
static void smb_note_refill(struct smb_arbiter *arb, uint16_t id)
{
	uint32_t i;

	if (!smb_standby_on(arb))
		return;
	for (i = 0; i < arb->nrefill; i++)
		if (arb->refill[i] == id) {
			if (arb->refill_n[i] < UINT16_MAX)
				arb->refill_n[i]++;
			return;
		}
	if (arb->nrefill < SMB_STANDBY_PER_DRAIN) {
		arb->refill_n[arb->nrefill] = 1;
		arb->refill[arb->nrefill++] = id;
	}
}

int smb_arbiter_acquire_w(struct smb_arbiter *arb, struct spn_tw *tw,
			  uint32_t chunk_id, uint16_t packets, bool carries_patches,
			  struct smb_loc *loc)
{
	struct smb_patch **block = carries_patches ? &tw->spare : NULL;
	uint64_t deadline;
	long sleep_ns = SMB_STALL_FIRST_NS;

	loc->standby = false;
	if (smb_take_standby(arb, tw, block, loc))
		return 0;
	if (tw->reserve) {
		/* Taken at the soft end of the chunk before (reserve_w). */
		smb_use_taken(arb, tw->reserve, block, loc);
		tw->reserve = 0;
		return 0;
	}
	if (smb_scan(arb, &tw->page_hint, tw->writer_id, chunk_id, packets, block,
		     loc) == 0) {
		smb_low_water_check(arb, tw);
		return 0;
	}
	tw->stats.smb_full++;
	atomic_fetch_add_explicit(&arb->stats.smb_full, 1, memory_order_relaxed);
	/* The queue may be empty (every chunk sits idle with a writer), so
	 * nothing else would wake the I/O thread to drain and reclaim. */
	if (arb->opts.wake)
		smb_hurry_fenced(arb);
	if (arb->opts.stall_max_us == 0)
		return -ENOSPC;
	/* Stall mode (opt-in): the only place a writer sleeps. Wait for the
	 * I/O thread and the service to free chunks, with a bounded budget. */
	tw->stats.stalls++;
	deadline = smb_mono_ns() + (uint64_t)arb->opts.stall_max_us * 1000u;
	for (;;) {
		uint64_t now = smb_mono_ns();
		struct timespec ts;

		if (now >= deadline)
			return -ENOSPC;
		if (sleep_ns > (long)(deadline - now))
			sleep_ns = (long)(deadline - now);
		ts.tv_sec = 0;
		ts.tv_nsec = sleep_ns;
		nanosleep(&ts, NULL);
		if (smb_scan(arb, &tw->page_hint, tw->writer_id, chunk_id, packets,
			     block, loc) == 0)
			return 0;
		sleep_ns = sleep_ns * 2 > SMB_STALL_MAX_NS ? SMB_STALL_MAX_NS : sleep_ns * 2;
	}
}

int smb_arbiter_complete(struct smb_arbiter *arb, uint32_t page, uint32_t chunk)
{
	uint32_t i;

	for (i = 0; i < SMB_COMPLETE_TRIES; i++) {
		/* Relaxed: the CAS in try_complete re-checks the word. */
		uint32_t layout = spn_smb_word_layout(
			spn_smb_page_load(&arb->smb, page, memory_order_relaxed));
		int r = spn_smb_try_complete(&arb->smb, page, layout, chunk);

		if (r == 0)
			return 0;
		if (r != -EAGAIN)
			break;
	}
	/* Only a service that broke the ABI takes our chunk from us. */
	atomic_fetch_add_explicit(&arb->stats.abi_errors, 1, memory_order_relaxed);
	return -EBUSY;
}

/* Any thread: pushes q onto the commit queue. */
static void smb_push(struct smb_arbiter *arb, struct smb_qnode *q)
{
	/* Relaxed: the CAS below re-checks it. */
	struct smb_qnode *old = atomic_load_explicit(&arb->head, memory_order_relaxed);

	do {
		q->next = old;
		/* seq_cst (so release): the node's fields (and, for a chunk,
		 * its bytes and header) are written before it is reachable;
		 * pairs with the drain's acquire exchange. seq_cst also puts
		 * the push before the wake hook's flag load in the single
		 * total order, which is what a sleeping I/O thread's fence
		 * pairs with (arbiter.h, `wake`): a locked cmpxchg either way
		 * on x86, and the hook needs no fence of its own. */
	} while (!atomic_compare_exchange_weak_explicit(&arb->head, &old, q,
							memory_order_seq_cst,
							memory_order_relaxed));
	if (!old && arb->opts.wake)
		arb->opts.wake(arb->opts.ctx);
}

struct smb_chunk_node *smb_arbiter_commit_w(struct smb_arbiter *arb,
					    uint32_t page, uint32_t chunk,
					    uint32_t target_buffer,
					    uint16_t writer_id, uint32_t chunk_id,
					    bool open_for_patches)
{
	struct smb_chunk_node *node = smb_arbiter_node(arb, page, chunk);

	node->target_buffer = target_buffer;
	node->writer_id = writer_id;
	if (!open_for_patches)
		smb_arbiter_complete(arb, page, chunk);
	/* Relaxed: published by the push's release CAS. */
	atomic_store_explicit(&node->state,
			      smb_node_word(writer_id, chunk_id,
					    open_for_patches ? SMB_NODE_OPEN :
							       SMB_NODE_QUEUED),
			      memory_order_relaxed);
	smb_push(arb, &node->q);
	return node;
}

/* ---- Commit storage and drain (I/O thread) ------------------------------ */

int smb_commit_init(struct smb_commit *c)
{
	size_t np = SMB_COMMIT_MAX_PATCHES;

	memset(c, 0, sizeof(*c));
	c->moves = calloc(SMB_COMMIT_MAX_MOVES, sizeof(*c->moves));
	c->move_ptrs = calloc(SMB_COMMIT_MAX_MOVES, sizeof(*c->move_ptrs));
	c->entries = calloc(np, sizeof(*c->entries));
	c->entry_ptrs = calloc(np, sizeof(*c->entry_ptrs));
	c->patches = calloc(np, sizeof(*c->patches));
	c->patch_ptrs = calloc(np, sizeof(*c->patch_ptrs));
	c->patch_data = calloc(np, 4);
	c->added = calloc(SMB_COMMIT_MAX_WRITER_EVENTS, sizeof(*c->added));
	c->removed = calloc(SMB_COMMIT_MAX_WRITER_EVENTS, sizeof(*c->removed));
	if (!c->moves || !c->move_ptrs || !c->entries || !c->entry_ptrs ||
	    !c->patches || !c->patch_ptrs || !c->patch_data || !c->added ||
	    !c->removed) {
		smb_commit_fini(c);
		return -ENOMEM;
	}
	perfetto__protos__commit_data_request__init(&c->req);
	return 0;
}

void smb_commit_fini(struct smb_commit *c)
{
	free(c->moves);
	free(c->move_ptrs);
	free(c->entries);
	free(c->entry_ptrs);
	free(c->patches);
	free(c->patch_ptrs);
	free(c->patch_data);
	free(c->added);
	free(c->removed);
	memset(c, 0, sizeof(*c));
}

/* Makes sure a queued chunk is Complete before it is listed: a chunk kept
 * open for direct patches is claimed from its writer and completed. */
static void smb_settle(struct smb_arbiter *arb, struct smb_chunk_node *node)
{
	/* Acquire: pairs with the writer's release store after a direct patch,
	 * so the patched bytes are ordered before our Complete CAS. */
	uint64_t s = atomic_load_explicit(&node->state, memory_order_acquire);
	unsigned spins = 0;

	for (;;) {
		uint64_t st = s & 0xFF;

		if (st == SMB_NODE_OPEN) {
			/* acq_rel: acquire as above; release is moot (the
			 * writer only learns "not OPEN" from it). */
			if (atomic_compare_exchange_strong_explicit(
				    &node->state, &s, (s & ~(uint64_t)0xFF) | SMB_NODE_QUEUED,
				    memory_order_acq_rel, memory_order_acquire)) {
				smb_arbiter_complete(arb, node->page, node->chunk);
				atomic_fetch_add_explicit(&arb->stats.forced_complete, 1,
							  memory_order_relaxed);
				return;
			}
			continue;
		}
		if (st != SMB_NODE_PATCHING)
			return; /* QUEUED: Complete already */
		/* PATCHING: the writer is storing 4 bytes; let it finish. */
		if (++spins > 64)
			sched_yield();
		s = atomic_load_explicit(&node->state, memory_order_acquire);
	}
}

/* I/O thread: the link at the end of the carry list (where to append). */
static struct smb_qnode **smb_carry_tail(struct smb_arbiter *arb)
{
	struct smb_qnode **tail = &arb->carry;

	while (*tail)
		tail = &(*tail)->next;
	return tail;
}

/* Takes the writers' new nodes (newest first on the stack) and appends
 * them, oldest first, to the carry list. */
static void smb_take_queue(struct smb_arbiter *arb)
{
	/* Acquire: pairs with the release CAS of every push, so each node's
	 * fields (and the chunks behind them) are visible. */
	struct smb_qnode *q = atomic_exchange_explicit(&arb->head, NULL,
						       memory_order_acquire);
	struct smb_qnode *fifo = NULL, **end = smb_carry_tail(arb);

	while (q) {
		struct smb_qnode *next = q->next;

		q->next = fifo;
		fifo = q;
		q = next;
	}
	*end = fifo;
}

/* Free chunk bytes of one page right now. */
static uint32_t smb_page_free(const struct smb_arbiter *arb, uint32_t page)
{
	/* Relaxed: an estimate for the pressure heuristic. */
	uint32_t w = spn_smb_page_load(&arb->smb, page, memory_order_relaxed);
	uint32_t layout = spn_smb_word_layout(w);

	if (w == 0)
		return arb->smb.page_size - SPN_SMB_PAGE_HEADER_SIZE;
	return (uint32_t)__builtin_popcount(smb_free_mask(w, spn_smb_layout_chunks(layout))) *
	       arb->smb.chunk_size[layout];
}

/*
 * I/O thread: free chunk bytes of the SMB, from a per-page cache of which
 * each drain refreshes SMB_FREE_SCAN_PAGES pages: the whole SMB for the
 * default 256 KiB, a window of a large one (a full scan of 8 MiB is 2,048
 * cold lines, which made each drain slower than a writer fills a chunk).
 */
static uint64_t smb_free_estimate(struct smb_arbiter *arb)
{
	uint32_t i, n = arb->smb.num_pages < SMB_FREE_SCAN_PAGES ? arb->smb.num_pages :
								  SMB_FREE_SCAN_PAGES;

	for (i = 0; i < n; i++) {
		uint32_t page = arb->free_cursor, now = smb_page_free(arb, page);

		arb->free_cached += now;
		arb->free_cached -= arb->page_free[page];
		arb->page_free[page] = now;
		arb->free_cursor = page + 1u == arb->smb.num_pages ? 0 : page + 1u;
	}
	return arb->free_cached;
}

/* Bytes of chunk (page, chunk), which we own or are about to hand over. */
static uint32_t smb_chunk_bytes(const struct smb_arbiter *arb, uint32_t page)
{
	/* Relaxed: the layout cannot change while the chunk is not free. */
	uint32_t w = spn_smb_page_load(&arb->smb, page, memory_order_relaxed);

	return arb->smb.chunk_size[spn_smb_word_layout(w)];
}

/* Appends the patches riding on `node` to the request, one ChunkToPatch
 * per run of patches for the same chunk. */
static void smb_drain_patches(struct smb_commit *c, const struct smb_chunk_node *node)
{
	Perfetto__Protos__CommitDataRequest__ChunkToPatch *e = NULL;
	uint32_t i;

	for (i = 0; i < node->npatches && i < SMB_PATCHES_PER_NODE; i++) {
		const struct smb_patch *sp = &node->patches[i];
		Perfetto__Protos__CommitDataRequest__ChunkToPatch__Patch *p =
			&c->patches[c->npatches];
		uint8_t *d = &c->patch_data[c->npatches * 4u];

		if (!e || e->chunk_id != sp->chunk_id) {
			e = &c->entries[c->req.n_chunks_to_patch];
			perfetto__protos__commit_data_request__chunk_to_patch__init(e);
			e->has_target_buffer = 1;
			e->target_buffer = node->target_buffer;
			e->has_writer_id = 1;
			e->writer_id = node->writer_id;
			e->has_chunk_id = 1;
			e->chunk_id = sp->chunk_id;
			e->has_has_more_patches = 1;
			e->patches = &c->patch_ptrs[c->npatches];
			c->entry_ptrs[c->req.n_chunks_to_patch++] = e;
		}
		perfetto__protos__commit_data_request__chunk_to_patch__patch__init(p);
		p->has_offset = 1;
		p->offset = sp->offset;
		memcpy(d, sp->data, 4);
		p->has_data = 1;
		p->data.len = 4;
		p->data.data = d;
		c->patch_ptrs[c->npatches++] = p;
		e->n_patches++;
		e->has_more_patches = sp->more != 0;
	}
}

/* Lists chunk node q; false when the request has no room left for it. */
static bool smb_drain_chunk(struct smb_arbiter *arb, struct smb_commit *c,
			    struct smb_chunk_node *node, uint64_t *bytes)
{
	Perfetto__Protos__CommitDataRequest__ChunksToMove *m;

	if (c->req.n_chunks_to_move >= SMB_COMMIT_MAX_MOVES ||
	    c->npatches + node->npatches > SMB_COMMIT_MAX_PATCHES)
		return false;
	smb_settle(arb, node);
	m = &c->moves[c->req.n_chunks_to_move];
	perfetto__protos__commit_data_request__chunks_to_move__init(m);
	m->has_page = 1;
	m->page = node->page;
	m->has_chunk = 1;
	m->chunk = node->chunk;
	m->has_target_buffer = 1;
	m->target_buffer = node->target_buffer;
	c->move_ptrs[c->req.n_chunks_to_move++] = m;
	*bytes += smb_chunk_bytes(arb, node->page);
	smb_drain_patches(c, node);
	smb_note_refill(arb, node->writer_id);
	/* Release: our reads of the node are done before the chunk's next
	 * owner rewrites it; pairs with its acquire load (smb_node_idle). */
	atomic_store_explicit(&node->state, SMB_NODE_IDLE, memory_order_release);
	return true;
}

/* Reports writer node q; false when its list is full. */
static bool smb_drain_writer(struct smb_arbiter *arb, struct smb_commit *c,
			     struct smb_writer_node *wn)
{
	struct spn_tw *tw = wn->tw;

	if (wn->q.kind == SMB_Q_WRITER_ADD) {
		if (c->n_added >= SMB_COMMIT_MAX_WRITER_EVENTS)
			return false;
		c->added[c->n_added].writer_id = tw->writer_id;
		c->added[c->n_added++].target_buffer = tw->target_buffer;
		return true;
	}
	if (c->n_removed >= SMB_COMMIT_MAX_WRITER_EVENTS)
		return false;
	c->removed[c->n_removed].writer_id = tw->writer_id;
	c->removed[c->n_removed++].target_buffer = tw->target_buffer;
	pthread_mutex_lock(&arb->lock);
	arb->id_used[tw->writer_id] = 0;
	pthread_mutex_unlock(&arb->lock);
	smb_return_standby(arb, tw);
	/* The writer was retired after its last push; nothing refers to it. */
	free(tw->spare);
	free(tw);
	return true;
}

/* I/O thread: links the node of hand-off chunk `ho` of tw at *tail, the
 * end of the carry list, and moves *tail past it; the chunk is marked
 * Complete. */
static void smb_queue_handoff(struct smb_arbiter *arb, struct spn_tw *tw,
			      const struct spn_tw_handoff *ho, struct smb_qnode ***tail)
{
	struct smb_loc loc;
	struct smb_chunk_node *node;

	smb_standby_loc(&arb->smb, ho->loc, &loc);
	node = smb_arbiter_node(arb, loc.page, loc.chunk);
	node->target_buffer = (uint32_t)(ho->meta >> 32);
	node->writer_id = tw->writer_id;
	smb_arbiter_complete(arb, loc.page, loc.chunk);
	/* Relaxed: the node is ours (the writer handed it over). */
	atomic_store_explicit(&node->state,
			      smb_node_word(tw->writer_id, (uint32_t)ho->meta,
					    SMB_NODE_QUEUED),
			      memory_order_relaxed);
	node->q.next = NULL;
	**tail = &node->q;
	*tail = &node->q.next;
	atomic_fetch_add_explicit(&arb->stats.handoffs, 1, memory_order_relaxed);
}

/*
 * I/O thread, before taking the queue: appends to the carry list the
 * hand-offs of the watched writers, oldest first (a hand-off chunk carries
 * no patches and no later patch refers to it, so only chunk-id order
 * decides its place: see smb_arbiter_drain), and stops watching writers
 * whose standby ring is empty (none can hand off before we park more).
 */
static void smb_take_handoffs(struct smb_arbiter *arb)
{
	struct spn_tw_handoff ho[SPN_TW_RING];
	struct smb_qnode **tail;
	uint32_t i = 0;

	if (!arb->nwatch)
		return;
	tail = smb_carry_tail(arb);
	pthread_mutex_lock(&arb->lock);
	while (i < arb->nwatch) {
		uint16_t id = arb->watch[i];
		struct spn_tw *tw = arb->writers[id];
		bool parked = false;

		if (tw) {
			/* Acquire: pairs with the release store of sb_head in
			 * smb_take_standby: the hand-offs made before the
			 * takes we see are seen below. sb_tail is ours. */
			parked = atomic_load_explicit(&tw->sb_head, memory_order_acquire) !=
				 atomic_load_explicit(&tw->sb_tail, memory_order_relaxed);
			for (uint32_t k = 0, n = smb_handoffs_take(tw, ho); k < n; k++)
				smb_queue_handoff(arb, tw, &ho[k], &tail);
		}
		if (parked) {
			i++;
			continue;
		}
		arb->watched[id] = 0;
		arb->watch[i] = arb->watch[--arb->nwatch];
	}
	pthread_mutex_unlock(&arb->lock);
}

bool smb_arbiter_pending(struct smb_arbiter *arb)
{
	bool any = false;

	/* Relaxed: a hint; the drain's exchange is what takes the nodes. */
	if (atomic_load_explicit(&arb->head, memory_order_relaxed) != NULL ||
	    arb->carry != NULL)
		return true;
	if (!arb->nwatch)
		return false;
	pthread_mutex_lock(&arb->lock);
	for (uint32_t i = 0; i < arb->nwatch && !any; i++) {
		struct spn_tw *tw = arb->writers[arb->watch[i]];

		/* Relaxed: a hint, as above (the caller's fence orders it). */
		any = tw && atomic_load_explicit(&tw->ho_tail, memory_order_relaxed) !=
				    atomic_load_explicit(&tw->ho_head, memory_order_relaxed);
	}
	pthread_mutex_unlock(&arb->lock);
	return any;
}

int smb_arbiter_drain(struct smb_arbiter *arb, struct smb_commit *c,
		      uint64_t flush_request_id)
{
	uint64_t moved = 0, total;

	perfetto__protos__commit_data_request__init(&c->req);
	c->req.chunks_to_move = c->move_ptrs;
	c->req.chunks_to_patch = c->entry_ptrs;
	c->npatches = 0;
	c->n_added = 0;
	c->n_removed = 0;
	/* Hand-offs before the queue: a writer that runs out of standby
	 * chunks (or whose full chunk carries patches) queues its next chunks,
	 * so what the queue brings of it is newer than its hand-offs; listed the other way round, the service
	 * saw chunk ids go back (chunks_committed_out_of_order in Perfetto's
	 * traced: 5-6 per 2 s of spindle-example). */
	smb_take_handoffs(arb);
	smb_take_queue(arb);
	while (arb->carry) {
		struct smb_qnode *q = arb->carry, *next = q->next;
		bool ok;

		/* `next` is read first: a retired writer's node is freed. */
		if (q->kind == SMB_Q_CHUNK)
			ok = smb_drain_chunk(arb, c, (struct smb_chunk_node *)q, &moved);
		else
			ok = smb_drain_writer(arb, c, (struct smb_writer_node *)q);
		if (!ok)
			break;
		arb->carry = next;
	}
	c->more = arb->carry != NULL;
	if (flush_request_id && !c->more) {
		c->req.has_flush_request_id = 1;
		c->req.flush_request_id = flush_request_id;
	}
	atomic_fetch_add_explicit(&arb->stats.chunks_committed, c->req.n_chunks_to_move,
				  memory_order_relaxed);
	atomic_fetch_add_explicit(&arb->stats.patches, c->npatches, memory_order_relaxed);
	/* Pressure: the chunks listed here will be free soon; if even then
	 * less than half of the SMB is free, the partial chunks held by
	 * writers between packets are what is missing. */
	total = (uint64_t)arb->smb.num_pages *
		(arb->smb.page_size - SPN_SMB_PAGE_HEADER_SIZE);
	c->pressure = (smb_free_estimate(arb) + moved) * SMB_PRESSURE_DIVISOR < total;
	if (c->pressure)
		atomic_fetch_add_explicit(&arb->stats.pressure_rounds, 1,
					  memory_order_relaxed);
	smb_refill_standby(arb, c->pressure);
	return (int)(c->req.n_chunks_to_move + c->req.n_chunks_to_patch + c->n_added +
		     c->n_removed);
}

/* ---- Reclaim (I/O thread) ----------------------------------------------- */

/*
 * The I/O thread's half of the store-load ordering (see trace_writer.h):
 * membarrier orders every writer's in_packet store before its later reclaim
 * load. Returns whether it covers writers with light fences; without
 * membarrier (or if it fails after a successful registration, which it
 * cannot short of a kernel bug) only heavy writers, whose seq_cst store
 * pairs with our seq_cst CAS and load, are covered.
 */
static bool smb_barrier_all(struct smb_arbiter *arb)
{
	return arb->membarrier && smb_membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0;
}

int smb_arbiter_reclaim(struct smb_arbiter *arb)
{
	uint32_t id, max;
	int busy = 0;
	bool covered;

	pthread_mutex_lock(&arb->lock);
	if (arb->nwriters == 0) {
		pthread_mutex_unlock(&arb->lock);
		return 0;
	}
	max = arb->hi_writer_id;
	for (id = 1; id <= max; id++) {
		struct spn_tw *tw = arb->writers[id];
		uint32_t none = SPN_TW_RECLAIM_NONE;

		if (!tw)
			continue;
		/* seq_cst: ordered before the in_packet loads below, by the
		 * barrier for light writers, by the seq_cst total order for
		 * heavy ones (their in_packet store is seq_cst too). */
		atomic_compare_exchange_strong_explicit(&tw->reclaim, &none,
							SPN_TW_RECLAIM_REQUESTED,
							memory_order_seq_cst,
							memory_order_relaxed);
	}
	covered = smb_barrier_all(arb);
	for (id = 1; id <= max; id++) {
		struct spn_tw *tw = arb->writers[id];
		uint32_t req = SPN_TW_RECLAIM_REQUESTED;

		if (!tw || atomic_load_explicit(&tw->reclaim, memory_order_relaxed) !=
				   SPN_TW_RECLAIM_REQUESTED)
			continue;
		if (!covered && !tw->heavy_fence) {
			busy++;
			continue;
		}
		/* seq_cst (so acquire): pairs with the writer's release store
		 * of 0 at the end of its last packet, so its chunk bytes and
		 * chunk fields (hdr, page, chunk, ids) are visible; and see
		 * the CAS above. */
		if (atomic_load_explicit(&tw->in_packet, memory_order_seq_cst) != 0) {
			busy++;
			continue;
		}
		/* acq_rel: the writer may have cancelled (REQUESTED -> NONE)
		 * at its next packet start; only one of us wins. */
		if (!atomic_compare_exchange_strong_explicit(
			    &tw->reclaim, &req, SPN_TW_RECLAIM_STEALING,
			    memory_order_acq_rel, memory_order_relaxed))
			continue;
		if (tw->has_chunk) {
			smb_arbiter_commit_w(arb, tw->page, tw->chunk, tw->target_buffer,
					     tw->writer_id, tw->chunk_id, false);
			atomic_fetch_add_explicit(&arb->stats.stolen, 1,
						  memory_order_relaxed);
		}
		smb_return_standby(arb, tw);
		/* Release: our reads of the writer's fields happen-before its
		 * reset; pairs with its acquire load in tw_reclaim_ack(). */
		atomic_store_explicit(&tw->reclaim, SPN_TW_RECLAIM_STOLEN,
				      memory_order_release);
	}
	pthread_mutex_unlock(&arb->lock);
	return busy;
}
