// SPDX-License-Identifier: Apache-2.0
// Concurrency test of the trace buffers: two lane threads write sequences
// (fragmented packets, patches after the continuation, scraped chunks
// re-committed, commits deferred and published per round) into a small
// ring buffer while a reader thread drains it; the buffer overwrites while
// being read. Checks order, content, loss marking and the stats balance.
// Also run under ThreadSanitizer.
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include "core_tbuf_util.h"

#define NLANES 2
#define WRITERS_PER_LANE 4
#define NSEQ (NLANES * WRITERS_PER_LANE)
#define CHUNK_CAP 1800		/* payload bytes per chunk */
#define RUN_NS 1500000000ull	/* writers run this long */

static struct svc_tbuf *B;
static _Atomic int writers_running;

/* One simulated trace writer. */
struct writer {
	uint16_t p, w;		/* producer, writer id */
	uint32_t seq;		/* value of field 1 in its packets */
	uint32_t chunk_id;	/* next chunk id */
	uint32_t counter;	/* last packet counter used */
	uint8_t pkt[8192];	/* packet being written */
	uint32_t pkt_len;	/* its size, 0 = none */
	uint32_t pkt_off;	/* bytes already in chunks */
	bool patch_due;		/* a patch waits for the next commit */
	uint32_t patch_chunk;	/* chunk it patches */
	struct svc_tbuf_patch patch; /* the patch */
	uint64_t rng;		/* xorshift state */
	struct tcb cb;		/* chunk being built */
};

/* Per-lane results. */
struct lane_res {
	uint64_t commits;	/* chunks committed */
	uint64_t lost;		/* commits refused (-ENOSPC) */
	uint64_t patches;	/* patch calls */
	uint64_t scrapes;	/* chunks first committed scraped */
	uint64_t scrape_stored;	/* of those, stored */
	uint64_t scrape_lost;	/* of those, refused (-ENOSPC) */
};

static uint32_t rnd(struct writer *w, uint32_t n)
{
	w->rng ^= w->rng << 13;
	w->rng ^= w->rng >> 7;
	w->rng ^= w->rng << 17;
	return (uint32_t)(w->rng % n);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Builds and commits the writer's next chunk (with `finish`, starts no
 * new packet once the chunk holds something). */
static void write_chunk(struct writer *w, unsigned lane, struct lane_res *res,
			bool finish)
{
	struct tcb *c = &w->cb;
	struct svc_tbuf_patch np;	/* this chunk's patch, if any */
	struct svc_tbuf_chunk ch;
	bool need_patch = false, scrape;
	uint8_t flags = 0;
	int rc;

	tcb_init(c);
	if (w->pkt_len)
		flags |= SVC_CHUNK_FIRST_CONT;
	for (;;) {
		uint32_t space, n;

		if (!w->pkt_len) {
			uint32_t filler = rnd(w, 8) ? rnd(w, 200) :
						      rnd(w, 6000);

			if (finish && c->nfrags)
				break;
			w->pkt_len = tpkt(w->pkt, w->seq, ++w->counter, filler);
			w->pkt_off = 0;
		}
		space = CHUNK_CAP - c->len;
		if (space < 8)
			break;
		n = w->pkt_len - w->pkt_off;
		if (n > space - 4)
			n = space - 4;
		tcb_frag(c, w->pkt + w->pkt_off, n, false);
		w->pkt_off += n;
		if (w->pkt_off < w->pkt_len) {
			flags |= SVC_CHUNK_LAST_CONT;
			if (n >= 8 && !rnd(w, 3)) {
				/* A length to be patched: zero 4 bytes now. */
				uint32_t k = rnd(w, n - 3);

				need_patch = true;
				np.offset = c->len - n + k;
				memcpy(np.data, c->buf + np.offset, 4);
				memset(c->buf + np.offset, 0, 4);
				flags |= SVC_CHUNK_NEEDS_PATCH;
			}
			break;
		}
		w->pkt_len = 0;
		if (c->nfrags >= 6 || !rnd(w, 5))
			break;
	}
	ch = (struct svc_tbuf_chunk){
		.producer_id = w->p, .writer_id = w->w, .chunk_id = w->chunk_id,
		.uid = 1000u + w->p, .pid = 4000 + w->p, .nfrags = c->nfrags,
		.flags = flags, .payload = c->buf, .len = c->len,
	};
	scrape = !rnd(w, 8);
	if (scrape) {
		/* Scraped while its last fragment was still being written. */
		ch.complete = false;
		rc = svc_tbuf_lane_commit(B, lane, &ch);
		assert_true(rc == SVC_TBUF_STORED || rc == -ENOSPC);
		res->scrapes++;
		if (rc == SVC_TBUF_STORED)
			res->scrape_stored++;
		else
			res->scrape_lost++;
	}
	ch.complete = true;
	/* Deferred, as a CommitData stores its chunks: lane_main()
	 * publishes after each round of its writers. */
	ch.defer = true;
	rc = svc_tbuf_lane_commit(B, lane, &ch);
	if (rc == -ENOSPC)
		res->lost++;
	else if (scrape)
		/* Rewritten, or stored anew if the scraped copy was
		 * already evicted (or never made it). */
		assert_true(rc == SVC_TBUF_REWRITTEN ||
			    rc == SVC_TBUF_STORED);
	else
		assert_int_equal(rc, SVC_TBUF_STORED);
	res->commits++;
	/* The patch of the previous chunk travels with this commit. */
	if (w->patch_due) {
		rc = svc_tbuf_lane_patch(B, lane, w->p, w->w, w->patch_chunk,
					 &w->patch, 1, false);
		assert_true(rc == 1 || rc == -ENOENT);
		res->patches++;
		w->patch_due = false;
	}
	if (need_patch) {
		w->patch_due = true;
		w->patch_chunk = w->chunk_id;
		w->patch = np;
	}
	w->chunk_id++;
}

struct lane_arg {
	unsigned lane;		/* lane index */
	struct writer w[WRITERS_PER_LANE]; /* its writers */
	struct lane_res res;	/* what it did */
};

static void *lane_main(void *p)
{
	struct lane_arg *a = p;
	uint64_t end = now_ns() + RUN_NS;

	while (now_ns() < end) {
		for (int i = 0; i < WRITERS_PER_LANE; i++)
			write_chunk(&a->w[i], a->lane, &a->res, false);
		svc_tbuf_lane_publish(B, a->lane);
	}
	/* Finish the packets in progress and send the last patches. */
	for (int i = 0; i < WRITERS_PER_LANE; i++) {
		struct writer *w = &a->w[i];

		while (w->pkt_len || w->patch_due)
			write_chunk(w, a->lane, &a->res, true);
	}
	svc_tbuf_lane_publish(B, a->lane);
	atomic_fetch_sub(&writers_running, 1);
	return NULL;
}

/* What the reader saw of one sequence. */
struct seen {
	uint32_t last;		/* last counter, 0 = none yet */
	uint32_t seqid;		/* its trusted_packet_sequence_id */
	uint64_t packets;	/* packets received */
	uint64_t gaps;		/* counters skipped (flagged) */
};

struct reader_arg {
	struct svc_seqids *ids;	/* the session's map */
	struct seen seen[NSEQ + 1]; /* by seq */
	uint64_t reads;		/* read calls */
	uint64_t packets;	/* packets read */
	int errors;		/* checks that failed */
};

static struct tpk rpk[20000];

/* Checks one batch; counts failures instead of asserting (thread). */
static void check_batch(struct reader_arg *a, const struct svc_tbuf_out *o)
{
	int n = tparse(o, rpk, 20000);

	if (n < 0) {
		a->errors++;
		return;
	}
	for (int i = 0; i < n; i++) {
		const struct tpk *k = &rpk[i];
		struct seen *s;

		if (k->seq < 1 || k->seq > NSEQ || !k->filler_ok ||
		    !k->trailer_ok || k->pid != 4000 + (int32_t)(k->uid - 1000)) {
			a->errors++;
			continue;
		}
		s = &a->seen[k->seq];
		if (s->seqid && s->seqid != k->seqid)
			a->errors++;
		s->seqid = k->seqid;
		/* Write order, at most once; any skip is flagged. */
		if (k->counter <= s->last)
			a->errors++;
		if (k->counter != s->last + 1) {
			if (!k->loss)
				a->errors++;
			s->gaps++;
		}
		if (s->last == 0 && !k->loss)
			a->errors++;	/* V1 flags the first packet */
		s->last = k->counter;
		s->packets++;
		a->packets++;
	}
}

static void *reader_main(void *p)
{
	struct reader_arg *a = p;
	struct svc_tbuf_out o = { 0 };
	int idle = 0;

	for (;;) {
		bool running = atomic_load(&writers_running) > 0;
		bool drained;
		int n;

		o.len = 0;
		n = svc_tbuf_read(B, a->ids, &o, 32768, &drained);
		a->reads++;
		if (n < 0) {
			a->errors++;
			break;
		}
		check_batch(a, &o);
		/* After the writers stop: read until two passes find
		 * nothing. */
		if (!running && drained && n == 0 && ++idle >= 2)
			break;
	}
	svc_tbuf_out_free(&o);
	return NULL;
}

static void test_two_lanes_and_a_reader(void **state)
{
	static struct lane_arg lanes[NLANES];
	static struct reader_arg rd;
	struct svc_tbuf_stats st;
	pthread_t lt[NLANES], rt;
	uint64_t commits = 0, lost = 0, patches = 0, scrapes = 0, gaps = 0;
	uint64_t scrape_stored = 0, scrape_lost = 0;

	(void)state;
	/* 512 KiB: 8 segments of 64 KiB; the writers lap it many times. */
	assert_int_equal(svc_tbuf_create(512 * 1024, SVC_TBUF_RING, NLANES, 0,
					 &B), 0);
	assert_int_equal(svc_seqids_create(&rd.ids), 0);
	atomic_store(&writers_running, NLANES);
	for (unsigned l = 0; l < NLANES; l++) {
		lanes[l].lane = l;
		for (int i = 0; i < WRITERS_PER_LANE; i++) {
			struct writer *w = &lanes[l].w[i];

			w->p = (uint16_t)(l + 1);
			w->w = (uint16_t)(i + 1);
			w->seq = l * WRITERS_PER_LANE + (uint32_t)i + 1;
			w->chunk_id = 0xFFFFFF00u * (uint32_t)(i & 1); /* wraps */
			w->rng = 0x9E3779B97F4A7C15ull * w->seq;
		}
	}
	assert_int_equal(pthread_create(&rt, NULL, reader_main, &rd), 0);
	for (unsigned l = 0; l < NLANES; l++)
		assert_int_equal(pthread_create(&lt[l], NULL, lane_main,
						&lanes[l]), 0);
	for (unsigned l = 0; l < NLANES; l++)
		pthread_join(lt[l], NULL);
	pthread_join(rt, NULL);

	for (unsigned l = 0; l < NLANES; l++) {
		commits += lanes[l].res.commits;
		lost += lanes[l].res.lost;
		patches += lanes[l].res.patches;
		scrapes += lanes[l].res.scrapes;
		scrape_stored += lanes[l].res.scrape_stored;
		scrape_lost += lanes[l].res.scrape_lost;
	}
	for (int s = 1; s <= NSEQ; s++)
		gaps += rd.seen[s].gaps;
	svc_tbuf_get_stats(B, &st);
	print_message("commits %lu (scraped first %lu, lost %lu), patches %lu, "
		      "reads %lu, packets %lu, gaps %lu\n"
		      "written %lu read %lu overwritten %lu rewritten %lu "
		      "cow %lu late %lu readaheads %lu/%lu wraps %lu\n",
		      commits, scrapes, lost, patches, rd.reads, rd.packets,
		      gaps, st.chunks_written, st.chunks_read,
		      st.chunks_overwritten, st.chunks_rewritten,
		      st.chunks_copied_on_write, st.chunks_dropped_late,
		      st.readaheads_succeeded, st.readaheads_failed,
		      st.write_wrap_count);
	assert_int_equal(rd.errors, 0);
	assert_true(rd.packets > 1000);
	assert_int_equal(st.abi_violations, 0);
	assert_int_equal(st.invalid_packets, 0);
	assert_int_equal(st.chunks_discarded, 0);
	assert_true(st.write_wrap_count > 0);
	/* Every chunk written is read, overwritten or came too late; with
	 * no chunk lost for space none is left blocked behind a gap. */
	if (st.chunks_lost_no_space == 0 && st.index_failures == 0)
		assert_int_equal(st.chunks_written, st.chunks_read +
				 st.chunks_overwritten + st.chunks_dropped_late);
	else
		assert_true(st.chunks_written >= st.chunks_read +
			    st.chunks_overwritten + st.chunks_dropped_late);
	/* Each commit is accounted for exactly once. */
	assert_int_equal(st.chunks_lost_no_space, lost + scrape_lost);
	assert_int_equal(st.chunks_written,
			 commits - lost - st.chunks_rewritten + scrape_stored);
	assert_int_equal(st.patches_succeeded + st.patches_failed, patches);
	/* A gap in what the reader got is a loss the buffer counted. */
	if (gaps > NSEQ)
		assert_true(st.chunks_overwritten > 0);
	svc_seqids_destroy(rd.ids);
	svc_tbuf_destroy(B);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_two_lanes_and_a_reader),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
