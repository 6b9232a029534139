// SPDX-License-Identifier: Apache-2.0
// The SDK writer tests' in-process service: drain, CommitData processing (move, patch), and per-sequence reassembly (see sdk_test_service.h).
#include "sdk_test_service.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((format(printf, 2, 3)))
static void ts_error(struct test_service *ts, const char *fmt, ...)
{
	va_list ap;

	if (ts->errors++ == 0) {
		va_start(ap, fmt);
		vsnprintf(ts->first_error, sizeof(ts->first_error), fmt, ap);
		va_end(ap);
	}
}

int ts_init(struct test_service *ts, struct smb_arbiter *arb, ts_packet_cb cb,
	    void *cb_ctx)
{
	memset(ts, 0, sizeof(*ts));
	ts->arb = arb;
	ts->cb = cb;
	ts->cb_ctx = cb_ctx;
	ts->reclaim_on_pressure = true;
	ts->seqs = calloc(SPN_SMB_MAX_WRITER_ID + 1u, sizeof(*ts->seqs));
	ts->registered = calloc(SPN_SMB_MAX_WRITER_ID + 1u, sizeof(*ts->registered));
	ts->copy = malloc(SPN_SMB_MAX_CHUNK_SIZE);
	ts->touched = calloc(SPN_SMB_MAX_WRITER_ID + 1u, sizeof(*ts->touched));
	if (!ts->seqs || !ts->registered || !ts->copy || !ts->touched ||
	    smb_commit_init(&ts->commit)) {
		ts_fini(ts);
		return -ENOMEM;
	}
	return 0;
}

void ts_fini(struct test_service *ts)
{
	uint32_t i, j;

	for (i = 0; ts->seqs && i <= SPN_SMB_MAX_WRITER_ID; i++) {
		struct ts_seq *s = &ts->seqs[i];

		for (j = 0; j < s->cap; j++)
			free(s->win[j].data);
		free(s->win);
		free(s->partial);
	}
	free(ts->seqs);
	free((void *)ts->registered);
	free(ts->copy);
	free(ts->touched);
	smb_commit_fini(&ts->commit);
	if (ts->last_req)
		perfetto__protos__commit_data_request__free_unpacked(ts->last_req, NULL);
	memset(ts, 0, sizeof(*ts));
}

/* RegisterTraceWriter / UnregisterTraceWriter, as the I/O thread sends
 * them around the request. */
static void ts_writers(struct test_service *ts, const struct smb_writer_event *ev,
		       uint32_t n, bool added)
{
	for (uint32_t i = 0; i < n; i++) {
		uint16_t id = ev[i].writer_id;

		if (id == 0 || id > SPN_SMB_MAX_WRITER_ID) {
			ts_error(ts, "writer event for id %u", id);
			continue;
		}
		if (added) {
			if (ts->registered[id])
				ts_error(ts, "writer %u registered twice", id);
			ts->registered[id] = ev[i].target_buffer;
			ts->writers_added++;
		} else {
			if (ts->registered[id] != ev[i].target_buffer)
				ts_error(ts, "writer %u unregistered but not registered",
					 id);
			ts->registered[id] = 0;
			ts->writers_removed++;
		}
	}
}

/* Window slot for chunk id `id` of s, growing the window so that ids up to
 * `id` fit beside next_id. */
static struct ts_chunk *ts_slot(struct ts_seq *s, uint32_t id)
{
	uint32_t dist = id - s->next_id, ncap, i;
	struct ts_chunk *nw;

	if (s->cap && dist < s->cap)
		return &s->win[id & (s->cap - 1)];
	ncap = s->cap ? s->cap : 16;
	while (dist >= ncap)
		ncap *= 2;
	nw = calloc(ncap, sizeof(*nw));
	if (!nw)
		abort();
	for (i = 0; i < s->cap; i++)
		if (s->win[i].present)
			nw[s->win[i].chunk_id & (ncap - 1)] = s->win[i];
	free(s->win);
	s->win = nw;
	s->cap = ncap;
	return &s->win[id & (ncap - 1)];
}

static void ts_append(struct ts_seq *s, const uint8_t *p, size_t n)
{
	if (s->plen + n > s->pcap) {
		size_t ncap = s->pcap ? s->pcap : 4096;

		while (ncap < s->plen + n)
			ncap *= 2;
		s->partial = realloc(s->partial, ncap);
		if (!s->partial)
			abort();
		s->pcap = ncap;
	}
	memcpy(s->partial + s->plen, p, n);
	s->plen += n;
}

static void ts_emit(struct test_service *ts, uint16_t wid, struct ts_seq *s)
{
	if (s->plen == 0) {
		/* Empty packet: consumed silently (spec §6.1). */
		return;
	}
	s->packets++;
	ts->cb(ts->cb_ctx, wid, s->partial, s->plen, s->loss_pending);
	s->loss_pending = false;
	s->plen = 0;
}

/* Reads one stored chunk of sequence wid (spec §6.3 reassembly). */
static void ts_read_chunk(struct test_service *ts, uint16_t wid, struct ts_seq *s,
			  struct ts_chunk *c)
{
	const uint8_t *payload = c->data + SPN_SMB_CHUNK_HEADER_SIZE;
	uint32_t len = c->info.size - SPN_SMB_CHUNK_HEADER_SIZE, pos = 0, k;
	uint32_t flags = c->info.flags;

	for (k = 0; k < c->info.nfrags; k++) {
		struct smb_frag f;
		int r = smb_frag_parse(payload, len, pos, &f);
		bool cont_in = k == 0 && (flags & SPN_SMB_FIRST_CONTINUES);
		bool cont_out = k + 1 == c->info.nfrags && (flags & SPN_SMB_LAST_CONTINUES);

		if (r < 0) {
			ts_error(ts, "writer %u chunk %u: fragment %u does not parse again",
				 wid, c->chunk_id, k);
			return;
		}
		pos += (uint32_t)r;
		if (cont_in) {
			if (!s->in_partial) {
				ts_error(ts, "writer %u chunk %u: orphan continuation", wid,
					 c->chunk_id);
				s->loss_pending = true;
				s->plen = 0;
				continue;
			}
		} else if (s->in_partial) {
			ts_error(ts, "writer %u chunk %u: expected a continuation", wid,
				 c->chunk_id);
			s->loss_pending = true;
			s->plen = 0;
		}
		ts_append(s, payload + f.off, f.size);
		s->in_partial = cont_out;
		if (!cont_out)
			ts_emit(ts, wid, s);
	}
	if (c->vr == -ENOMSG) {
		/* A drop marker: the packet it starts or continues is lost. */
		ts->drop_markers++;
		s->loss_pending = true;
		s->in_partial = false;
		s->plen = 0;
	}
}

/* Reads sequence wid as far as it can go. */
static void ts_read_seq(struct test_service *ts, uint16_t wid)
{
	struct ts_seq *s = &ts->seqs[wid];

	while (s->cap) {
		struct ts_chunk *c = &s->win[s->next_id & (s->cap - 1)];

		if (!c->present || c->chunk_id != s->next_id || c->needs_patching)
			return;
		ts_read_chunk(ts, wid, s, c);
		free(c->data);
		memset(c, 0, sizeof(*c));
		s->chunks++;
		s->next_id++;
	}
}

/* Notes that sequence wid has new chunks or patches to read. */
static void ts_touch(struct test_service *ts, uint16_t wid)
{
	if (!ts->seqs[wid].touched) {
		ts->seqs[wid].touched = true;
		ts->touched[ts->ntouched++] = wid;
	}
}

static void ts_move(struct test_service *ts,
		    const Perfetto__Protos__CommitDataRequest__ChunksToMove *m)
{
	struct smb_chunk_info info;
	struct ts_chunk *c;
	struct ts_seq *s;
	uint32_t reg;
	int r = -EAGAIN, i;

	ts->moves++;
	for (i = 0; i < 64 && r == -EAGAIN; i++)
		r = smb_chunk_commit_copy(&ts->arb->smb, m->page, m->chunk, ts->copy,
					  SPN_SMB_MAX_CHUNK_SIZE, &info);
	if (r != 0 && r != -ENOMSG) {
		ts_error(ts, "move page %u chunk %u: %d (%s)", m->page, m->chunk, r,
			 info.why ? info.why : "");
		return;
	}
	if (!info.freed)
		ts_error(ts, "move page %u chunk %u: not freed", m->page, m->chunk);
	if (ts->on_chunk)
		ts->on_chunk(ts->chunk_ctx, &info, ts->copy);
	reg = ts->registered[info.writer_id];
	if (reg == 0 || reg != m->target_buffer) {
		ts_error(ts, "chunk of writer %u for buffer %u (registered %u)",
			 info.writer_id, m->target_buffer, reg);
		return;
	}
	s = &ts->seqs[info.writer_id];
	if (!s->started) {
		if (info.chunk_id != 0)
			ts_error(ts, "writer %u starts at chunk %u", info.writer_id,
				 info.chunk_id);
		s->started = true;
		s->next_id = info.chunk_id;
	}
	if (info.chunk_id - s->next_id >= 0x80000000u) {
		ts_error(ts, "writer %u chunk %u is older than %u", info.writer_id,
			 info.chunk_id, s->next_id);
		return;
	}
	c = ts_slot(s, info.chunk_id);
	if (c->present) {
		ts_error(ts, "writer %u chunk %u committed twice", info.writer_id,
			 info.chunk_id);
		return;
	}
	c->present = true;
	c->chunk_id = info.chunk_id;
	c->vr = r;
	c->info = info;
	c->needs_patching = (info.flags & SPN_SMB_NEEDS_PATCHING) != 0;
	c->data = malloc(info.size);
	if (!c->data)
		abort();
	memcpy(c->data, ts->copy, info.size);
	ts_touch(ts, info.writer_id);
}

static void ts_patch(struct test_service *ts,
		     const Perfetto__Protos__CommitDataRequest__ChunkToPatch *e)
{
	struct ts_chunk *c = NULL;
	struct ts_seq *s;
	size_t i;

	ts->patch_entries++;
	if (!e->has_writer_id || e->writer_id == 0 || e->writer_id > SPN_SMB_MAX_WRITER_ID ||
	    !e->has_chunk_id) {
		ts_error(ts, "patch entry without a valid writer id / chunk id");
		return;
	}
	if (ts->registered[e->writer_id] != e->target_buffer)
		ts_error(ts, "patch for writer %u with buffer %u", e->writer_id,
			 e->target_buffer);
	s = &ts->seqs[e->writer_id];
	if (s->cap) {
		c = &s->win[e->chunk_id & (s->cap - 1)];
		if (!c->present || c->chunk_id != e->chunk_id)
			c = NULL;
	}
	if (!c) {
		ts_error(ts, "patch for writer %u chunk %u: no such chunk", e->writer_id,
			 e->chunk_id);
		return;
	}
	if (!c->needs_patching)
		ts_error(ts, "patch for writer %u chunk %u that needs none", e->writer_id,
			 e->chunk_id);
	for (i = 0; i < e->n_patches; i++) {
		const Perfetto__Protos__CommitDataRequest__ChunkToPatch__Patch *p =
			e->patches[i];

		if (!p->has_data || p->data.len != 4 || !p->has_offset ||
		    (uint64_t)p->offset + 4 > c->info.size - SPN_SMB_CHUNK_HEADER_SIZE) {
			ts_error(ts, "bad patch for writer %u chunk %u", e->writer_id,
				 e->chunk_id);
			return;
		}
		memcpy(c->data + SPN_SMB_CHUNK_HEADER_SIZE + p->offset, p->data.data, 4);
		ts->patches++;
	}
	if (!e->has_more_patches)
		c->needs_patching = false;
	ts_touch(ts, (uint16_t)e->writer_id);
}

void ts_process(struct test_service *ts, const Perfetto__Protos__CommitDataRequest *req)
{
	size_t i;

	ts->requests++;
	for (i = 0; i < req->n_chunks_to_move; i++)
		ts_move(ts, req->chunks_to_move[i]);
	for (i = 0; i < req->n_chunks_to_patch; i++)
		ts_patch(ts, req->chunks_to_patch[i]);
	if (req->has_flush_request_id)
		ts->flush_id = req->flush_request_id;
	/* Read every sequence the request touched. */
	for (i = 0; i < ts->ntouched; i++) {
		ts->seqs[ts->touched[i]].touched = false;
		ts_read_seq(ts, ts->touched[i]);
	}
	ts->ntouched = 0;
}

uint64_t ts_pump(struct test_service *ts, uint64_t flush_request_id)
{
	uint64_t total = 0;
	bool pressure = false, reclaimed = false;

	for (;;) {
		int n = smb_arbiter_drain(ts->arb, &ts->commit, flush_request_id);
		size_t len;
		uint8_t *buf;
		Perfetto__Protos__CommitDataRequest *req;

		pressure |= ts->commit.pressure;
		ts_writers(ts, ts->commit.added, ts->commit.n_added, true);
		if (ts->commit.req.n_chunks_to_move || ts->commit.req.n_chunks_to_patch ||
		    ts->commit.req.has_flush_request_id) {
			if (ts->commit.req.has_flush_request_id)
				flush_request_id = 0; /* sent once */
			len = perfetto__protos__commit_data_request__get_packed_size(
				&ts->commit.req);
			buf = malloc(len ? len : 1);
			if (!buf)
				abort();
			perfetto__protos__commit_data_request__pack(&ts->commit.req, buf);
			req = perfetto__protos__commit_data_request__unpack(NULL, len, buf);
			free(buf);
			if (!req) {
				ts_error(ts, "CommitDataRequest of %zu bytes does not unpack",
					 len);
				break;
			}
			ts_process(ts, req);
			if (ts->keep_last) {
				if (ts->last_req)
					perfetto__protos__commit_data_request__free_unpacked(
						ts->last_req, NULL);
				ts->last_req = req;
			} else {
				perfetto__protos__commit_data_request__free_unpacked(req, NULL);
			}
		}
		ts_writers(ts, ts->commit.removed, ts->commit.n_removed, false);
		total += (uint64_t)n;
		if (ts->commit.more)
			continue;
		/* What the SDK's I/O thread does when the SMB runs short: take
		 * the partial chunks of writers between packets, once. */
		if (pressure && ts->reclaim_on_pressure && !reclaimed) {
			ts->reclaims++;
			smb_arbiter_reclaim(ts->arb);
			reclaimed = true;
			continue;
		}
		break;
	}
	return total;
}
