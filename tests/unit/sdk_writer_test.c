// SPDX-License-Identifier: Apache-2.0
// Single-threaded tests of the SDK trace writer and arbiter: encoding, fragmentation at every boundary, patches (direct and CommitData), chunk ids and flags, drops and their signal, hand-back, reclaim, writer ids and the drain, all read back through an in-process service.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sdk_test_gen.h"
#include "sdk_test_service.h"
#include "smb/arbiter.h"
#include "smb/shm.h"
#include "spindle/trace_writer.h"
#include "trace_packet.pb-c.h"

/* ---- Recording packets and chunks --------------------------------------- */

struct rec {
	uint16_t wid;	/* writer id */
	uint8_t *data;	/* packet bytes */
	size_t len;	/* their length */
	bool loss;	/* the service saw a loss before it */
};

struct recorder {
	struct rec *v;
	size_t n, cap;
};

static void rec_add(struct recorder *r, uint16_t wid, const uint8_t *d, size_t len,
		    bool loss)
{
	if (r->n == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 64;
		r->v = realloc(r->v, r->cap * sizeof(*r->v));
		assert_non_null(r->v);
	}
	r->v[r->n].wid = wid;
	r->v[r->n].data = malloc(len ? len : 1);
	assert_non_null(r->v[r->n].data);
	memcpy(r->v[r->n].data, d, len);
	r->v[r->n].len = len;
	r->v[r->n].loss = loss;
	r->n++;
}

static void rec_clear(struct recorder *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->v[i].data);
	r->n = 0;
}

static void rec_free(struct recorder *r)
{
	rec_clear(r);
	free(r->v);
	memset(r, 0, sizeof(*r));
}

static void rec_cb(void *ctx, uint16_t wid, const uint8_t *d, size_t len, bool loss)
{
	rec_add(ctx, wid, d, len, loss);
}

struct chunk_log {
	struct smb_chunk_info *v;
	size_t n, cap;
};

struct env {
	struct smb_shm shm;	/* the SMB (memfd) */
	struct smb_arbiter arb;	/* producer side */
	struct test_service ts;	/* service side */
	struct recorder got;	/* packets read back */
	struct recorder want;	/* packets written (flat reference) */
	struct chunk_log chunks; /* chunks the service took */
};

static void log_chunk(void *ctx, const struct smb_chunk_info *info, const uint8_t *copy)
{
	struct chunk_log *l = ctx;

	(void)copy;
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		assert_non_null(l->v);
	}
	l->v[l->n++] = *info;
}

static struct env *env_new(size_t size, uint32_t page, const struct smb_arbiter_opts *o,
			   ts_packet_cb cb, void *cb_ctx)
{
	struct env *e = calloc(1, sizeof(*e));
	struct smb_arbiter_opts opts = { 0 };

	assert_non_null(e);
	if (o)
		opts = *o;
	smb_shm_init(&e->shm);
	assert_int_equal(smb_shm_create(&e->shm, size, page), 0);
	assert_int_equal(ts_init(&e->ts, &e->arb, cb ? cb : rec_cb,
				 cb ? cb_ctx : &e->got), 0);
	assert_int_equal(smb_arbiter_init(&e->arb, &e->shm.smb, &opts), 0);
	e->ts.on_chunk = log_chunk;
	e->ts.chunk_ctx = &e->chunks;
	return e;
}

/* No service error so far (prints the first one). */
static void env_ok(struct env *e)
{
	if (e->ts.errors)
		fail_msg("service: %llu errors, first: %s",
			 (unsigned long long)e->ts.errors, e->ts.first_error);
}

static void env_free(struct env *e)
{
	env_ok(e);
	ts_fini(&e->ts);
	smb_arbiter_destroy(&e->arb);
	smb_shm_close(&e->shm);
	rec_free(&e->got);
	rec_free(&e->want);
	free(e->chunks.v);
	free(e);
}

/* Every packet written came back, byte-exact, in order, without loss. */
static void expect_all(struct env *e)
{
	env_ok(e);
	if (e->got.n != e->want.n)
		fail_msg("%zu packets read back, %zu written", e->got.n, e->want.n);
	for (size_t i = 0; i < e->want.n; i++) {
		struct rec *g = &e->got.v[i], *w = &e->want.v[i];

		if (g->wid != w->wid || g->len != w->len ||
		    memcmp(g->data, w->data, w->len) != 0 || g->loss)
			fail_msg("packet %zu differs (writer %u/%u, %zu/%zu bytes, loss %d)",
				 i, g->wid, w->wid, g->len, w->len, g->loss);
	}
}

/* The service took exactly n chunks, with chunk ids 0..n-1 in that order. */
static void expect_chunk_ids(struct env *e, uint32_t n)
{
	assert_int_equal(e->chunks.n, n);
	for (uint32_t i = 0; i < n; i++)
		assert_int_equal(e->chunks.v[i].chunk_id, i);
}

/* ---- Scripts run through the writer and the reference encoder ------------ */

typedef void (*script_fn)(const struct gen_sink *k, const void *arg);

/* A trace writer sink that runs a hook after every operation. */
struct hooked {
	struct spn_tw *tw;
	void (*hook)(void *);
	void *ctx;
};

static void hk_varint(void *s, uint32_t f, uint64_t v)
{
	struct hooked *h = s;

	spn_tw_varint(h->tw, f, v);
	h->hook(h->ctx);
}

static void hk_fixed64(void *s, uint32_t f, uint64_t v)
{
	struct hooked *h = s;

	spn_tw_fixed64(h->tw, f, v);
	h->hook(h->ctx);
}

static void hk_fixed32(void *s, uint32_t f, uint32_t v)
{
	struct hooked *h = s;

	spn_tw_fixed32(h->tw, f, v);
	h->hook(h->ctx);
}

static void hk_bytes(void *s, uint32_t f, const void *d, size_t n)
{
	struct hooked *h = s;

	spn_tw_bytes(h->tw, f, d, n);
	h->hook(h->ctx);
}

static void hk_begin(void *s, uint32_t f)
{
	struct hooked *h = s;

	spn_tw_begin_nested(h->tw, f);
	h->hook(h->ctx);
}

static void hk_end(void *s)
{
	struct hooked *h = s;

	spn_tw_end_nested(h->tw);
	h->hook(h->ctx);
}

/* Writes one packet with `fn` through tw (hook after each operation) and
 * records the reference bytes as expected. */
static void both(struct env *e, struct spn_tw *tw, script_fn fn, const void *arg,
		 void (*hook)(void *), void *hook_ctx)
{
	struct gen_flat f = { 0 };
	struct gen_sink fk = gen_flat_sink(&f), k = gen_tw_sink(tw);
	struct hooked h = { tw, hook, hook_ctx };

	fn(&fk, arg);
	rec_add(&e->want, tw->writer_id, f.buf, f.len, false);
	free(f.buf);
	if (hook) {
		k = (struct gen_sink){ hk_varint, hk_fixed64, hk_fixed32, hk_bytes,
				       hk_begin, hk_end, NULL, &h, NULL };
	}
	spn_tw_begin_packet(tw);
	fn(&k, arg);
	spn_tw_end_packet(tw);
}

static void pump_hook(void *ctx)
{
	ts_pump(ctx, 0);
}

/* One bytes field of *(size_t *)arg bytes after a marker field. */
static void script_blob(const struct gen_sink *k, const void *arg)
{
	size_t n = *(const size_t *)arg;
	uint8_t *d = malloc(n ? n : 1);

	assert_non_null(d);
	for (size_t i = 0; i < n; i++)
		d[i] = (uint8_t)(i * 7 + 3);
	k->varint(k->s, 1, 7);
	k->bytes(k->s, 2, d, n);
	free(d);
}

/* Like a TrackEvent with nested annotations, each level holding ~n bytes,
 * so open sizes straddle chunk boundaries. */
static void script_deep(const struct gen_sink *k, const void *arg)
{
	size_t n = *(const size_t *)arg;
	uint8_t *d = malloc(n + 1);

	assert_non_null(d);
	for (size_t i = 0; i <= n; i++)
		d[i] = (uint8_t)(i ^ 0x5A);
	k->varint(k->s, 8, 1234567890123ull);
	k->begin(k->s, 11);
	k->varint(k->s, 9, 1);
	k->bytes(k->s, 23, "a slice name", 12);
	k->begin(k->s, 4);
	k->bytes(k->s, 10, "key", 3);
	k->begin(k->s, 6);
	k->bytes(k->s, 7, d, n);
	k->fixed64(k->s, 1, 0x0102030405060708ull);
	k->end(k->s);
	k->fixed32(k->s, 2, 0xA1B2C3D4u);
	k->end(k->s);
	k->begin(k->s, 4);
	k->varint(k->s, 4, 12345);
	k->end(k->s);
	k->bytes(k->s, 22, d, n / 3);
	k->end(k->s);
	k->bytes(k->s, 5, d, n / 2);
	free(d);
}

static struct spn_tw *new_writer(struct env *e, uint32_t buffer)
{
	struct spn_tw *tw = NULL;

	assert_int_equal(smb_arbiter_create_writer(&e->arb, buffer, &tw), 0);
	assert_non_null(tw);
	return tw;
}

static uint32_t payload_of(struct env *e)
{
	return e->arb.smb.chunk_size[e->arb.layout] - SPN_SMB_CHUNK_HEADER_SIZE;
}

/* ---- Encoding ------------------------------------------------------------ */

/* Every field writer, against pb.h into a flat buffer, and decoded by
 * protobuf-c as a TracePacket. */
static void test_encoding(void **state)
{
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, NULL, NULL, NULL);
	struct spn_tw *tw = new_writer(e, 1);
	uint8_t flat[512], *p = flat, *s1, *s2;
	static const uint8_t raw[] = { 0xF8, 0x06, 0x2A }; /* field 111 = 42 */
	Perfetto__Protos__TracePacket *pkt;
	Perfetto__Protos__TrackEvent *te;

	(void)state;
	assert_int_equal(spn_tw_begin_packet(tw), 0);
	spn_tw_varint(tw, 8, 1700000000123456789ull);
	spn_tw_varint(tw, 13, 3);
	spn_tw_begin_nested(tw, 11);
	spn_tw_varint(tw, 9, 1);
	spn_tw_string(tw, 23, "my slice");
	spn_tw_string(tw, 22, "cat");
	spn_tw_varint(tw, 11, 0xABCDEF);
	spn_tw_begin_nested(tw, 4);
	spn_tw_string(tw, 10, "arg");
	spn_tw_int(tw, 4, -5);
	spn_tw_end_nested(tw);
	spn_tw_fixed64(tw, 47, 0x1122334455667788ull);
	spn_tw_double(tw, 44, 2.5);
	spn_tw_sint(tw, 1001, -3);
	spn_tw_float(tw, 1002, 1.5f);
	spn_tw_bool(tw, 1003, true);
	spn_tw_fixed32(tw, 1004, 0xDEADBEEFu);
	spn_tw_bytes(tw, 1005, "\x00\x01\x02", 3);
	spn_tw_end_nested(tw);
	spn_tw_append(tw, raw, sizeof(raw));
	spn_tw_end_packet(tw);

	p = spn_pb_field_varint(p, 8, 1700000000123456789ull);
	p = spn_pb_field_varint(p, 13, 3);
	p = spn_pb_begin_nested(p, 11, &s1);
	p = spn_pb_field_varint(p, 9, 1);
	p = spn_pb_field_string(p, 23, "my slice");
	p = spn_pb_field_string(p, 22, "cat");
	p = spn_pb_field_varint(p, 11, 0xABCDEF);
	p = spn_pb_begin_nested(p, 4, &s2);
	p = spn_pb_field_string(p, 10, "arg");
	p = spn_pb_field_int(p, 4, -5);
	spn_pb_end_nested(s2, p);
	p = spn_pb_field_fixed64(p, 47, 0x1122334455667788ull);
	p = spn_pb_field_double(p, 44, 2.5);
	p = spn_pb_field_sint(p, 1001, -3);
	p = spn_pb_field_float(p, 1002, 1.5f);
	p = spn_pb_field_bool(p, 1003, true);
	p = spn_pb_field_fixed32(p, 1004, 0xDEADBEEFu);
	p = spn_pb_field_bytes(p, 1005, "\x00\x01\x02", 3);
	spn_pb_end_nested(s1, p);
	memcpy(p, raw, sizeof(raw));
	p += sizeof(raw);
	rec_add(&e->want, tw->writer_id, flat, (size_t)(p - flat), false);

	assert_int_equal(spn_tw_flush(tw), 0);
	ts_pump(&e->ts, 0);
	expect_all(e);

	pkt = perfetto__protos__trace_packet__unpack(NULL, e->got.v[0].len,
						     e->got.v[0].data);
	assert_non_null(pkt);
	assert_true(pkt->has_timestamp);
	assert_int_equal(pkt->timestamp, 1700000000123456789ull);
	assert_int_equal(pkt->sequence_flags, 3);
	assert_false(pkt->has_previous_packet_dropped);
	assert_int_equal(pkt->data_case, PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACK_EVENT);
	te = pkt->track_event;
	assert_int_equal(te->type, PERFETTO__PROTOS__TRACK_EVENT__TYPE__TYPE_SLICE_BEGIN);
	assert_int_equal(te->name_field_case, PERFETTO__PROTOS__TRACK_EVENT__NAME_FIELD_NAME);
	assert_string_equal(te->name, "my slice");
	assert_int_equal(te->n_categories, 1);
	assert_string_equal(te->categories[0], "cat");
	assert_int_equal(te->track_uuid, 0xABCDEF);
	assert_int_equal(te->n_debug_annotations, 1);
	assert_string_equal(te->debug_annotations[0]->name, "arg");
	assert_int_equal(te->debug_annotations[0]->int_value, -5);
	assert_int_equal(te->n_flow_ids, 1);
	assert_int_equal(te->flow_ids[0], 0x1122334455667788ull);
	assert_true(te->double_counter_value == 2.5);
	perfetto__protos__trace_packet__free_unpacked(pkt, NULL);
	spn_tw_destroy(tw);
	env_free(e);
}

/* ---- Chunks: ids, flags, moves ------------------------------------------- */

static void test_chunk_ids_and_flags(void **state)
{
	struct smb_arbiter_opts o = { .layout = SPN_SMB_PAGE_DIV14 };
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, &o, NULL, NULL);
	struct spn_tw *a = new_writer(e, 7), *b = new_writer(e, 9);
	size_t big = 700, small = 10;
	Perfetto__Protos__CommitDataRequest *req;
	uint32_t i;

	(void)state;
	e->ts.keep_last = true;
	assert_int_equal(payload_of(e), 284);
	/* 700 data bytes + 4 of fields = 704: fragments of 280, 280, 144
	 * (each chunk gives 4 bytes to the size prefix). */
	both(e, a, script_blob, &big, NULL, NULL);
	both(e, a, script_blob, &small, NULL, NULL);
	both(e, b, script_blob, &small, NULL, NULL);
	assert_int_equal(spn_tw_flush(a), 0);
	assert_int_equal(spn_tw_flush(b), 0);
	ts_pump(&e->ts, 0);
	expect_all(e);

	assert_int_equal(e->chunks.n, 4);
	{
		/* writer a: ids 0, 1, 2 with the continuation flags */
		static const uint8_t flags[3] = {
			SPN_SMB_LAST_CONTINUES,
			SPN_SMB_FIRST_CONTINUES | SPN_SMB_LAST_CONTINUES,
			SPN_SMB_FIRST_CONTINUES,
		};
		static const uint16_t counts[3] = { 1, 1, 2 };

		for (i = 0; i < 3; i++) {
			assert_int_equal(e->chunks.v[i].writer_id, a->writer_id);
			assert_int_equal(e->chunks.v[i].chunk_id, i);
			assert_int_equal(e->chunks.v[i].flags, flags[i]);
			assert_int_equal(e->chunks.v[i].count, counts[i]);
			assert_int_equal(e->chunks.v[i].size, 292);
		}
	}
	assert_int_equal(e->chunks.v[3].writer_id, b->writer_id);
	assert_int_equal(e->chunks.v[3].chunk_id, 0);
	assert_int_equal(e->chunks.v[3].count, 1);
	assert_int_equal(e->chunks.v[3].flags, 0);
	req = e->ts.last_req;
	assert_non_null(req);
	assert_int_equal(req->n_chunks_to_move, 4);
	assert_int_equal(req->n_chunks_to_patch, 0);
	assert_false(req->has_flush_request_id);
	for (i = 0; i < 4; i++) {
		assert_true(req->chunks_to_move[i]->has_page);
		assert_true(req->chunks_to_move[i]->has_chunk);
		assert_true(req->chunks_to_move[i]->chunk < 14);
		assert_int_equal(req->chunks_to_move[i]->target_buffer, i < 3 ? 7 : 9);
		assert_false(req->chunks_to_move[i]->has_data);
	}
	/* Next packet of a: chunk id 3. */
	both(e, a, script_blob, &small, NULL, NULL);
	spn_tw_flush(a);
	ts_pump(&e->ts, 0);
	expect_all(e);
	assert_int_equal(e->chunks.v[4].chunk_id, 3);
	assert_int_equal(a->stats.chunks, 4);
	assert_int_equal(a->stats.fragments_split, 2);
	spn_tw_destroy(a);
	spn_tw_destroy(b);
	env_free(e);
}

/* ---- Fragmentation sweeps ------------------------------------------------ */

static const uint32_t k_layouts[] = {
	SPN_SMB_PAGE_DIV14, SPN_SMB_PAGE_DIV7, SPN_SMB_PAGE_DIV4,
	SPN_SMB_PAGE_DIV2, SPN_SMB_PAGE_DIV1,
};

/* Generated packets verified on the fly (stream 0, in order). */
struct gen_verify {
	uint32_t next_seq[4];	/* next expected seq per stream */
	uint64_t bad;		/* packets that did not match */
	uint64_t losses;	/* packets after a loss */
	uint64_t lost_field;	/* packets carrying previous_packet_dropped */
};

static void gv_cb(void *ctx, uint16_t wid, const uint8_t *d, size_t len, bool loss)
{
	struct gen_verify *v = ctx;
	struct gen_found f;

	(void)wid;
	if (!gen_check(d, len, &f) || f.stream >= 4 || f.seq != v->next_seq[f.stream]) {
		v->bad++;
		return;
	}
	v->next_seq[f.stream]++;
	v->losses += loss;
	v->lost_field += f.lost != 0;
}

/* Packets of every size from 1 byte to three chunks, back to back, in
 * every layout, with and without direct patching. */
static void test_size_sweep(void **state)
{
	(void)state;
	for (size_t li = 0; li < sizeof(k_layouts) / sizeof(k_layouts[0]); li++) {
		for (int direct = 0; direct < 2; direct++) {
			struct gen_verify v = { 0 };
			struct smb_arbiter_opts o = { .layout = k_layouts[li],
						      .direct_patching = direct };
			struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, &o, gv_cb, &v);
			struct spn_tw *tw = new_writer(e, 1);
			uint32_t pl = payload_of(e), step = pl > 1000 ? 3 : 1, t, n = 0;

			for (t = 1; t <= 3 * pl; t += step) {
				assert_int_equal(gen_write(tw, 0, n++, t, 3, NULL, NULL), 0);
				ts_pump(&e->ts, 0);
			}
			spn_tw_flush(tw);
			ts_pump(&e->ts, 0);
			env_ok(e);
			if (v.bad || v.next_seq[0] != n || v.losses || v.lost_field)
				fail_msg("layout %u direct %d: %llu bad, %u/%u read, %llu losses",
					 k_layouts[li], direct, (unsigned long long)v.bad,
					 v.next_seq[0], n, (unsigned long long)v.losses);
			assert_int_equal(tw->stats.packets_dropped, 0);
			if (direct)
				assert_int_equal(tw->stats.patches_ipc, 0);
			else
				assert_int_equal(tw->stats.patches_direct, 0);
			assert_true(tw->stats.patches_direct + tw->stats.patches_ipc > 0);
			spn_tw_destroy(tw);
			env_free(e);
		}
	}
}

/*
 * The chunk boundary at every byte of a nested packet: a filler packet of
 * growing size shifts where a deep packet (open sizes at every cut) is cut.
 * In every layout; direct patching off, on, and on with the drain running
 * between any two writes (so chunks are taken from under the writer and
 * patches go through CommitData).
 */
static void test_cut_sweep(void **state)
{
	(void)state;
	for (size_t li = 0; li < sizeof(k_layouts) / sizeof(k_layouts[0]); li++) {
		for (int mode = 0; mode < 3; mode++) {
			struct smb_arbiter_opts o = { .layout = k_layouts[li],
						      .direct_patching = mode > 0 };
			struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, &o, NULL, NULL);
			struct spn_tw *tw = new_writer(e, 1);
			uint32_t pl = payload_of(e);
			size_t deep = pl, fill, extra;

			for (extra = 0; extra < 2; extra++) {
				for (fill = 0; fill + 8 < pl; fill++) {
					size_t f = fill;

					spn_tw_flush(tw);
					if (extra) {
						size_t one = 0;

						both(e, tw, script_blob, &one, NULL, NULL);
					}
					both(e, tw, script_blob, &f, NULL, NULL);
					both(e, tw, script_deep, &deep,
					     mode == 2 ? pump_hook : NULL, &e->ts);
					spn_tw_flush(tw);
					ts_pump(&e->ts, 0);
					expect_all(e);
					rec_clear(&e->got);
					rec_clear(&e->want);
				}
			}
			if (mode == 0)
				assert_int_equal(tw->stats.patches_direct, 0);
			if (mode == 1)
				assert_int_equal(tw->stats.patches_ipc, 0);
			if (mode == 2)
				assert_true(tw->stats.patches_ipc > 0);
			assert_true(tw->stats.patches_direct + tw->stats.patches_ipc > 0);
			assert_int_equal(tw->stats.packets_dropped, 0);
			if (mode == 2)
				assert_true(e->arb.stats.forced_complete > 0);
			spn_tw_destroy(tw);
			env_free(e);
		}
	}
}

/* The ChunkToPatch entry itself: writer, chunk id, buffer, offsets, 4-byte
 * redundant varints, has_more_patches false, after the chunk's move. */
static void test_patch_entries(void **state)
{
	struct smb_arbiter_opts o = { .layout = SPN_SMB_PAGE_DIV14 };
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, &o, NULL, NULL);
	struct spn_tw *tw = new_writer(e, 5);
	Perfetto__Protos__CommitDataRequest *req;
	Perfetto__Protos__CommitDataRequest__ChunkToPatch *cp;
	uint8_t blob[300];

	(void)state;
	e->ts.keep_last = true;
	memset(blob, 0xEE, sizeof(blob));
	/* Two messages open across the first boundary: slots at payload
	 * offsets 4 + 1 (after the prefix and key 0x5A) and 4 + 1 + 4 + 1. */
	spn_tw_begin_packet(tw);
	spn_tw_begin_nested(tw, 11);
	spn_tw_begin_nested(tw, 4);
	spn_tw_bytes(tw, 7, blob, sizeof(blob));
	spn_tw_end_nested(tw);
	spn_tw_end_nested(tw);
	spn_tw_end_packet(tw);
	spn_tw_flush(tw);
	ts_pump(&e->ts, 0);
	env_ok(e);
	req = e->ts.last_req;
	assert_non_null(req);
	assert_int_equal(req->n_chunks_to_move, 2);
	assert_int_equal(req->n_chunks_to_patch, 1);
	cp = req->chunks_to_patch[0];
	assert_int_equal(cp->writer_id, tw->writer_id);
	assert_int_equal(cp->chunk_id, 0);
	assert_int_equal(cp->target_buffer, 5);
	assert_true(cp->has_has_more_patches);
	assert_false(cp->has_more_patches);
	assert_int_equal(cp->n_patches, 2);
	/* The inner size closes first. Payload: prefix 0-3, outer key 4,
	 * outer slot 5-8, inner key 9, inner slot 10-13. */
	assert_int_equal(cp->patches[0]->offset, 10);
	assert_int_equal(cp->patches[0]->data.len, 4);
	/* inner size = 1 (key) + 2 (len 300) + 300 = 303 = AF 82 80 00 */
	assert_memory_equal(cp->patches[0]->data.data, "\xAF\x82\x80\x00", 4);
	assert_int_equal(cp->patches[1]->offset, 5);
	/* outer = 1 (key 0x22) + 4 (slot) + 303 = 308 = B4 82 80 00 */
	assert_memory_equal(cp->patches[1]->data.data, "\xB4\x82\x80\x00", 4);
	assert_int_equal(e->chunks.v[0].flags,
			 SPN_SMB_LAST_CONTINUES | SPN_SMB_NEEDS_PATCHING);
	assert_int_equal(e->chunks.v[1].flags, SPN_SMB_FIRST_CONTINUES);
	assert_int_equal(e->got.n, 1);
	assert_int_equal(e->ts.patches, 2);
	assert_int_equal(tw->stats.patches_ipc, 2);
	spn_tw_destroy(tw);
	env_free(e);
}

/* Direct patching: the chunk waits BeingWritten, gets patched in place and
 * is completed without ChunkNeedsPatching; nothing travels as a patch. */
static void test_direct_patch_in_place(void **state)
{
	struct smb_arbiter_opts o = { .layout = SPN_SMB_PAGE_DIV14,
				      .direct_patching = true };
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, &o, NULL, NULL);
	struct spn_tw *tw = new_writer(e, 5);
	size_t n = 600;
	uint32_t w;

	(void)state;
	spn_tw_begin_packet(tw);
	spn_tw_begin_nested(tw, 11);
	spn_tw_bytes(tw, 7, "x", 1);
	/* Cross into a second chunk with the slot still open. */
	{
		uint8_t *d = calloc(1, n);

		spn_tw_bytes(tw, 8, d, n);
		free(d);
	}
	/* The first chunk is queued but still BeingWritten (node OPEN). */
	w = spn_smb_page_load(&e->arb.smb, tw->pend[0].page, memory_order_relaxed);
	assert_int_equal(spn_smb_word_state(w, tw->pend[0].chunk), SPN_SMB_BEING_WRITTEN);
	assert_true(smb_arbiter_pending(&e->arb));
	spn_tw_end_nested(tw);
	w = spn_smb_page_load(&e->arb.smb, tw->pend[0].page, memory_order_relaxed);
	assert_int_equal(spn_smb_word_state(w, tw->pend[0].chunk), SPN_SMB_COMPLETE);
	spn_tw_end_packet(tw);
	spn_tw_flush(tw);
	e->ts.keep_last = true;
	ts_pump(&e->ts, 0);
	env_ok(e);
	assert_int_equal(e->got.n, 1);
	assert_int_equal(e->ts.last_req->n_chunks_to_patch, 0);
	assert_int_equal(e->chunks.v[0].flags, SPN_SMB_LAST_CONTINUES);
	assert_int_equal(tw->stats.patches_direct, 1);
	assert_int_equal(tw->stats.patches_ipc, 0);
	assert_int_equal(e->arb.stats.forced_complete, 0);
	spn_tw_destroy(tw);
	env_free(e);
}

/* ---- Drops -------------------------------------------------------------- */

/* Fill the SMB with nobody draining: packets are dropped and counted, the
 * packet cut by the full SMB ends in a drop marker, and the first packet
 * after the drain says previous_packet_dropped = 257. */
static void test_drop_when_full(void **state)
{
	struct gen_verify v = { 0 };
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, NULL, gv_cb, &v);
	struct spn_tw *tw = new_writer(e, 1);
	uint32_t seq = 0, dropped_begin = 0;

	(void)state;
	/* 256 chunks of 1020 bytes; packets of ~150 bytes. */
	while (dropped_begin < 3) {
		if (gen_write(tw, 0, seq++, 150, 2, NULL, NULL) != 0)
			dropped_begin++;
		assert_true(seq < 10000);
	}
	assert_true(tw->stats.packets_dropped >= 3);
	assert_int_equal(e->arb.stats.packets_dropped, tw->stats.packets_dropped);
	assert_true(tw->stats.smb_full >= 3);
	ts_pump(&e->ts, 0);
	env_ok(e);
	/* Everything before the first loss came back, in order. */
	assert_int_equal(v.bad, 0);
	assert_int_equal(v.next_seq[0], seq - tw->stats.packets_dropped);
	assert_int_equal(v.losses, 0);
	/* The next packet: in a fresh chunk, with the loss signal. */
	{
		struct gen_found f;

		rec_clear(&e->got);
		e->ts.cb = rec_cb;
		e->ts.cb_ctx = &e->got;
		assert_int_equal(gen_write(tw, 0, seq, 150, 2, NULL, NULL), 0);
		spn_tw_flush(tw);
		ts_pump(&e->ts, 0);
		env_ok(e);
		assert_int_equal(e->got.n, 1);
		assert_true(gen_check(e->got.v[0].data, e->got.v[0].len, &f));
		assert_int_equal(f.seq, seq);
		assert_int_equal(f.lost, SPN_TW_LOSS_PRESENT | SPN_TW_LOSS_SMB_FULL);
		/* Only the packet after a drop carries it. */
		rec_clear(&e->got);
		gen_write(tw, 0, seq + 1, 150, 2, NULL, NULL);
		spn_tw_flush(tw);
		ts_pump(&e->ts, 0);
		assert_true(gen_check(e->got.v[0].data, e->got.v[0].len, &f));
		assert_int_equal(f.lost, 0);
	}
	spn_tw_destroy(tw);
	env_free(e);
}

/* A packet that runs out of SMB in its fourth chunk while its outer message
 * is open in the first: the first chunk still gets its patch (so the
 * service is not blocked), the fourth ends in a drop marker, the service
 * reports the loss, and the next packet carries the signal. */
static void test_drop_mid_packet(void **state)
{
	(void)state;
	for (int direct = 0; direct < 2; direct++) {
		struct smb_arbiter_opts o = { .layout = SPN_SMB_PAGE_DIV4,
					      .direct_patching = direct };
		struct env *e = env_new(4096, 4096, &o, NULL, NULL);
		struct spn_tw *tw = new_writer(e, 1);
		uint8_t *d = calloc(1, 5000);
		size_t small = 20;
		struct gen_found f;

		assert_int_equal(e->arb.total_chunks, 4);
		assert_int_equal(spn_tw_begin_packet(tw), 0);
		spn_tw_begin_nested(tw, 11);
		spn_tw_bytes(tw, 2, d, 5000);
		spn_tw_end_nested(tw);
		spn_tw_end_packet(tw);
		free(d);
		assert_int_equal(tw->stats.packets_dropped, 1);
		assert_int_equal(tw->stats.chunks, 4);
		ts_pump(&e->ts, 0);
		env_ok(e);
		assert_int_equal(e->got.n, 0);
		assert_int_equal(e->ts.drop_markers, 1);
		assert_int_equal(e->chunks.n, 4);
		assert_int_equal(e->chunks.v[3].flags, SPN_SMB_FIRST_CONTINUES);
		if (direct) {
			assert_int_equal(tw->stats.patches_direct, 1);
			assert_int_equal(e->chunks.v[0].flags, SPN_SMB_LAST_CONTINUES);
		} else {
			assert_int_equal(e->ts.patches, 1);
		}
		/* The service did not stay blocked: the next packet arrives. */
		spn_tw_begin_packet(tw);
		script_blob(&(struct gen_sink){ gen_tw_varint, gen_tw_fixed64,
						 gen_tw_fixed32, gen_tw_bytes,
						 gen_tw_begin, gen_tw_end, NULL, tw,
						 NULL },
			    &small);
		spn_tw_end_packet(tw);
		spn_tw_flush(tw);
		ts_pump(&e->ts, 0);
		env_ok(e);
		assert_int_equal(e->got.n, 1);
		assert_true(e->got.v[0].loss);
		/* It starts with field 42 = 257 (D0 02 81 02). */
		assert_memory_equal(e->got.v[0].data, "\xD0\x02\x81\x02", 4);
		(void)f;
		spn_tw_destroy(tw);
		env_free(e);
	}
}

/* Nesting past SPN_TW_MAX_NESTING drops the packet with WRITER_ABORT. */
static void test_nesting_too_deep(void **state)
{
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, NULL, NULL, NULL);
	struct spn_tw *tw = new_writer(e, 1);
	uint32_t i;

	(void)state;
	spn_tw_begin_packet(tw);
	spn_tw_varint(tw, 1, 1);
	for (i = 0; i < SPN_TW_MAX_NESTING + 3; i++)
		spn_tw_begin_nested(tw, 2);
	spn_tw_varint(tw, 3, 3);
	for (i = 0; i < SPN_TW_MAX_NESTING + 3; i++)
		spn_tw_end_nested(tw);
	spn_tw_end_packet(tw);
	assert_int_equal(tw->stats.packets_dropped, 1);
	/* Exactly the maximum is fine. */
	spn_tw_begin_packet(tw);
	for (i = 0; i < SPN_TW_MAX_NESTING; i++)
		spn_tw_begin_nested(tw, 2);
	spn_tw_varint(tw, 3, 3);
	for (i = 0; i < SPN_TW_MAX_NESTING; i++)
		spn_tw_end_nested(tw);
	spn_tw_end_packet(tw);
	spn_tw_flush(tw);
	ts_pump(&e->ts, 0);
	env_ok(e);
	assert_int_equal(e->ts.drop_markers, 1);
	assert_int_equal(e->got.n, 1);
	/* previous_packet_dropped = PRESENT | WRITER_ABORT = 129 (81 01) */
	assert_memory_equal(e->got.v[0].data, "\xD0\x02\x81\x01", 4);
	assert_true(e->got.v[0].loss);
	assert_int_equal(e->got.v[0].len, 4 + SPN_TW_MAX_NESTING * 5 + 2);
	spn_tw_destroy(tw);
	env_free(e);
}

/* One message around ~n bytes. */
static void script_one_span(const struct gen_sink *k, const void *arg)
{
	size_t n = *(const size_t *)arg;
	uint8_t *d = calloc(1, n + 1);

	assert_non_null(d);
	k->begin(k->s, 11);
	k->bytes(k->s, 2, d, n);
	k->end(k->s);
	free(d);
}

/*
 * Patches in flight: with nobody draining, every packet whose message spans
 * a chunk boundary leaves one patch riding on the next chunk; ten writers
 * queue more patches than one request carries, so the drain splits them
 * (never a patch before its chunk's move), and every packet comes back.
 * Nothing is dropped however many are queued.
 */
static void test_patches_in_flight(void **state)
{
	struct smb_arbiter_opts o = { .layout = SPN_SMB_PAGE_DIV14 };
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE * 4, 4096, &o, NULL, NULL);
	struct spn_tw *tw[10];
	size_t span = 400, i, j, per = 120;
	uint64_t req_before;

	(void)state;
	for (i = 0; i < 10; i++)
		tw[i] = new_writer(e, 1);
	/* Each packet starts a chunk and crosses exactly one boundary with
	 * its message open: one patch each. */
	for (j = 0; j < per; j++) {
		for (i = 0; i < 10; i++) {
			spn_tw_flush(tw[i]);
			both(e, tw[i], script_one_span, &span, NULL, NULL);
		}
	}
	for (i = 0; i < 10; i++) {
		assert_int_equal(tw[i]->stats.packets_dropped, 0);
		assert_int_equal(tw[i]->stats.patches_ipc, per);
		spn_tw_flush(tw[i]);
	}
	req_before = e->ts.requests;
	ts_pump(&e->ts, 0);
	env_ok(e);
	assert_true(e->ts.requests - req_before >= 2);
	assert_int_equal(e->ts.patches, 10 * per);
	assert_int_equal(e->ts.patch_entries, 10 * per);
	/* The order across writers is the service's; compare per writer. */
	assert_int_equal(e->got.n, e->want.n);
	for (i = 0; i < 10; i++) {
		size_t gi = 0, wi = 0;

		for (;;) {
			while (gi < e->got.n && e->got.v[gi].wid != tw[i]->writer_id)
				gi++;
			while (wi < e->want.n && e->want.v[wi].wid != tw[i]->writer_id)
				wi++;
			if (gi == e->got.n || wi == e->want.n)
				break;
			assert_int_equal(e->got.v[gi].len, e->want.v[wi].len);
			assert_memory_equal(e->got.v[gi].data, e->want.v[wi].data,
					    e->want.v[wi].len);
			gi++;
			wi++;
		}
		assert_int_equal(gi, e->got.n);
		assert_int_equal(wi, e->want.n);
	}
	for (i = 0; i < 10; i++)
		spn_tw_destroy(tw[i]);
	env_free(e);
}

/* Stall mode with nobody draining: waits about stall_max_us, then drops. */
static void test_stall_is_bounded(void **state)
{
	struct smb_arbiter_opts o = { .layout = SPN_SMB_PAGE_DIV4, .stall_max_us = 50000 };
	struct env *e = env_new(4096, 4096, &o, NULL, NULL);
	struct spn_tw *tw = new_writer(e, 1);
	struct timespec t0, t1;
	uint8_t d[1005] = { 0 }; /* 4 + 1 + 2 + 1005 = one 1012-byte payload */
	double ms;
	int i, r;

	(void)state;
	for (i = 0; i < 4; i++) {
		spn_tw_begin_packet(tw);
		spn_tw_bytes(tw, 2, d, sizeof(d));
		spn_tw_end_packet(tw);
	}
	assert_int_equal(tw->stats.chunks, 4);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = spn_tw_begin_packet(tw);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	spn_tw_end_packet(tw);
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	assert_int_equal(r, -ENOSPC);
	assert_int_equal(tw->stats.stalls, 1);
	assert_int_equal(tw->stats.packets_dropped, 1);
	if (ms < 49.0 || ms > 2000.0)
		fail_msg("stalled %.1f ms for a 50 ms budget", ms);
	/* That packet was lost before it started: no drop marker, so only
	 * the writer knows; its next packet says so. */
	ts_pump(&e->ts, 0);
	env_ok(e);
	assert_int_equal(e->got.n, 4);
	assert_int_equal(e->ts.drop_markers, 0);
	spn_tw_begin_packet(tw);
	spn_tw_varint(tw, 1, 1);
	spn_tw_end_packet(tw);
	spn_tw_flush(tw);
	ts_pump(&e->ts, 0);
	assert_int_equal(e->got.n, 5);
	assert_false(e->got.v[4].loss);
	assert_int_equal(e->got.v[4].len, 6);
	assert_memory_equal(e->got.v[4].data, "\xD0\x02\x81\x02\x08\x01", 6);
	spn_tw_destroy(tw);
	env_free(e);
}

/* ---- Hand-back and reclaim ------------------------------------------------ */

static void test_flush_hands_back(void **state)
{
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, NULL, NULL, NULL);
	struct spn_tw *tw = new_writer(e, 1);
	size_t small = 30;

	(void)state;
	both(e, tw, script_blob, &small, NULL, NULL);
	ts_pump(&e->ts, 0);
	assert_int_equal(e->got.n, 0); /* the chunk is still the writer's */
	spn_tw_begin_packet(tw);
	assert_int_equal(spn_tw_flush(tw), -EBUSY);
	spn_tw_end_packet(tw); /* empty: the service consumes it silently */
	assert_int_equal(spn_tw_flush(tw), 0);
	assert_int_equal(spn_tw_flush(tw), 0); /* nothing left: no-op */
	assert_int_equal(tw->stats.handbacks, 1);
	ts_pump(&e->ts, 0);
	expect_all(e);
	both(e, tw, script_blob, &small, NULL, NULL);
	spn_tw_flush(tw);
	ts_pump(&e->ts, 0);
	expect_all(e);
	assert_int_equal(e->chunks.n, 2);
	assert_int_equal(e->chunks.v[1].chunk_id, 1);
	spn_tw_destroy(tw);
	env_free(e);
}

static void test_reclaim(void **state)
{
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, NULL, NULL, NULL);
	struct spn_tw *tw = new_writer(e, 1), *idle = new_writer(e, 1);
	size_t small = 30;

	(void)state;
	/* Idle writer: its chunk is taken at once. */
	both(e, tw, script_blob, &small, NULL, NULL);
	both(e, idle, script_blob, &small, NULL, NULL);
	assert_int_equal(smb_arbiter_reclaim(&e->arb), 0);
	assert_int_equal(e->arb.stats.stolen, 2);
	ts_pump(&e->ts, 0);
	expect_all(e);
	/* The writer notices at its next packet, which takes chunk id 1. */
	both(e, tw, script_blob, &small, NULL, NULL);
	assert_int_equal(tw->stats.stolen, 1);
	spn_tw_flush(tw);
	ts_pump(&e->ts, 0);
	expect_all(e);
	assert_int_equal(e->chunks.v[e->chunks.n - 1].chunk_id, 1);
	/* Inside a packet: not taken; the writer hands it back at the end. */
	spn_tw_begin_packet(tw);
	spn_tw_varint(tw, 1, 7);
	assert_int_equal(smb_arbiter_reclaim(&e->arb), 1);
	ts_pump(&e->ts, 0);
	assert_int_equal(e->got.n, e->want.n);
	spn_tw_varint(tw, 2, 0);
	spn_tw_end_packet(tw);
	rec_add(&e->want, tw->writer_id, (const uint8_t *)"\x08\x07\x10\x00", 4, false);
	assert_int_equal(tw->stats.handbacks, 2); /* the flush, then this */
	ts_pump(&e->ts, 0);
	expect_all(e);
	/* A writer that went idle without a chunk: nothing to take. */
	assert_int_equal(smb_arbiter_reclaim(&e->arb), 0);
	assert_int_equal(e->arb.stats.stolen, 2);
	spn_tw_destroy(tw);
	spn_tw_destroy(idle);
	env_free(e);
}

/* With the SMB nearly full, the drain reports pressure and the I/O thread
 * (here the test service) reclaims the partial chunks of idle writers. */
static void test_pressure_reclaims(void **state)
{
	struct smb_arbiter_opts o = { .layout = SPN_SMB_PAGE_DIV4 };
	struct env *e = env_new(4096, 4096, &o, NULL, NULL);
	struct spn_tw *tw[4];
	size_t small = 30;
	int i;

	(void)state;
	for (i = 0; i < 4; i++) {
		tw[i] = new_writer(e, 1);
		both(e, tw[i], script_blob, &small, NULL, NULL);
	}
	/* Four writers hold the four chunks, nothing is queued. */
	ts_pump(&e->ts, 0);
	assert_int_equal(e->arb.stats.pressure_rounds, 1);
	assert_int_equal(e->ts.reclaims, 1);
	assert_int_equal(e->arb.stats.stolen, 4);
	assert_int_equal(e->got.n, 4);
	/* The writers carry on in new chunks. */
	for (i = 0; i < 4; i++)
		both(e, tw[i], script_blob, &small, NULL, NULL);
	for (i = 0; i < 4; i++) {
		assert_int_equal(tw[i]->stats.stolen, 1);
		spn_tw_destroy(tw[i]);
	}
	ts_pump(&e->ts, 0);
	/* Without pressure nobody loses a chunk. */
	{
		struct spn_tw *a = new_writer(e, 1);

		both(e, a, script_blob, &small, NULL, NULL);
		ts_pump(&e->ts, 0);
		assert_int_equal(e->got.n, 8);
		both(e, a, script_blob, &small, NULL, NULL);
		assert_int_equal(a->stats.stolen, 0);
		spn_tw_destroy(a);
		ts_pump(&e->ts, 0);
	}
	assert_int_equal(e->arb.stats.pressure_rounds, 1);
	env_ok(e);
	assert_int_equal(e->got.n, e->want.n);
	env_free(e);
}

/* The arbiter's wake and hurry hooks, counting into calls[0] / calls[1]. */
static void count_wake(void *ctx)
{
	((unsigned *)ctx)[0]++;
}

static void count_hurry(void *ctx)
{
	((unsigned *)ctx)[1]++;
}

/* The page-word state of chunk (page, chunk) in its page's layout. */
static uint32_t chunk_state(struct env *e, uint32_t page, uint32_t chunk)
{
	return spn_smb_word_state(spn_smb_page_load(&e->arb.smb, page, memory_order_relaxed),
				  chunk);
}

/* Pages of e's SMB whose first chunk is free (all of a Div1 page; an
 * unpartitioned page reads as free), from every page word. */
static uint32_t free_pages(struct env *e)
{
	uint32_t n = 0;

	for (uint32_t p = 0; p < e->arb.smb.num_pages; p++)
		n += chunk_state(e, p, 0) == SPN_SMB_FREE;
	return n;
}

/* Every page of the SMB is Free (un-partitioned) again. */
static void expect_smb_free(struct env *e)
{
	for (uint32_t i = 0; i < e->arb.smb.num_pages; i++)
		assert_int_equal(spn_smb_page_load(&e->arb.smb, i, memory_order_relaxed), 0);
}

/* The low-water check (smb_low_water_check): a writer that keeps taking
 * chunks while nothing is freed hurries the I/O thread once about half of
 * the SMB is taken, and not while clearly more than half is free, in a
 * default-size SMB and in one whose pages it only samples. */
static void test_low_water_hurries(void **state)
{
	static const size_t sizes[] = { SPN_SMB_DEFAULT_SIZE, 4u << 20 };

	(void)state;
	for (size_t s = 0; s < 2; s++) {
		unsigned calls[2] = { 0, 0 }, first_at = 0;
		struct smb_arbiter_opts o = {
			.layout = SPN_SMB_PAGE_DIV1, .wake = count_wake,
			.hurry = count_hurry, .ctx = calls, .no_standby = true,
		};
		struct env *e = env_new(sizes[s], 4096, &o, NULL, NULL);
		struct spn_tw *tw;
		uint32_t pages, seq = 0;
		uint64_t chunks = 0;

		pages = e->arb.smb.num_pages;
		tw = new_writer(e, 1);
		/* 3000-byte packets: a new chunk for about every packet. Stop
		 * short of full (a writer that finds it full hurries too). */
		while (tw->stats.chunks < pages - 4) {
			unsigned before = calls[1];

			assert_int_equal(gen_write(tw, 0, seq++, 3000, 2, NULL, NULL), 0);
			if (tw->stats.chunks == chunks)
				continue;
			chunks = tw->stats.chunks;
			if (calls[1] != before && !first_at) {
				first_at = (unsigned)chunks;
				/* Not while more than 5/8 of the SMB is free. */
				assert_true(free_pages(e) * 8u < pages * 5u);
			}
		}
		/* It hurried within a check period (SMB_LOW_WATER_EVERY chunks)
		 * of half the SMB being taken, give or take the sample's
		 * stride. */
		assert_true(first_at != 0);
		assert_true(first_at <= pages / 2u + SMB_LOW_WATER_EVERY +
						pages / SMB_LOW_WATER_SAMPLES + 1u);
		spn_tw_destroy(tw);
		env_free(e);
	}
}

/* Packets that take tw, at the start of a chunk, just past its soft end
 * (SPN_TW_SOFT_END bytes before the end), still in the same chunk. */
static void cross_soft_end(struct env *e, struct spn_tw *tw)
{
	size_t before_soft = payload_of(e) - SPN_TW_SOFT_END - 64, small = 30;

	both(e, tw, script_blob, &before_soft, NULL, NULL);
	for (int i = 0; i < 3; i++)
		both(e, tw, script_blob, &small, NULL, NULL);
}

/* Arbiter options of the tests that follow one standby chunk at a time
 * (test_standby_ring has the default, SMB_STANDBY_MIN). */
static const struct smb_arbiter_opts one_standby = { .standby_min = 1 };

/* Standby chunks parked for tw and not taken yet. */
static uint32_t standby_count(struct spn_tw *tw)
{
	return atomic_load(&tw->sb_tail) - atomic_load(&tw->sb_head);
}

/* The location word of the next standby chunk parked for tw (0: none). */
static uint64_t standby_peek(struct spn_tw *tw)
{
	return standby_count(tw) ? tw->sb_slot[atomic_load(&tw->sb_head) % SPN_TW_RING] : 0;
}

/* Full chunks tw handed off that no drain has taken yet. */
static uint32_t handoffs_out(struct spn_tw *tw)
{
	return atomic_load(&tw->ho_tail) - atomic_load(&tw->ho_head);
}

/* Standby chunks (arbiter.h): the drain parks a chunk for a writer whose
 * chunk it listed, the writer's next chunk change takes it, reclaim and
 * retirement give it back to Free unused, and none is parked while
 * writers are many. */
static void test_standby_chunks(void **state)
{
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, &one_standby, NULL, NULL);
	struct spn_tw *tw = new_writer(e, 1), *many[17];
	size_t big = payload_of(e) - 64, small = 30;
	struct smb_loc loc;
	uint32_t i;
	uint64_t w;

	(void)state;
	assert_int_equal(e->arb.layout, SPN_SMB_PAGE_DIV1);
	/* No chunk listed yet: nothing parked. */
	both(e, tw, script_blob, &big, NULL, NULL);
	ts_pump(&e->ts, 0);
	assert_int_equal(standby_peek(tw), 0);
	/* The second packet does not fit: chunk 0 is queued, the writer
	 * searches for chunk 1 itself; the drain then parks one. */
	both(e, tw, script_blob, &big, NULL, NULL);
	assert_int_equal(tw->stats.standby_used, 0);
	ts_pump(&e->ts, 0);
	w = standby_peek(tw);
	assert_int_not_equal(w, 0);
	assert_int_equal(e->arb.stats.standby_parked, 1);
	smb_standby_loc(&e->arb.smb, w, &loc);
	assert_int_equal(loc.layout, SPN_SMB_PAGE_DIV1);
	assert_true(loc.page != tw->page);
	assert_int_equal(chunk_state(e, loc.page, loc.chunk), SPN_SMB_BEING_WRITTEN);
	assert_int_equal(atomic_load(&loc.hdr->writer_id), tw->writer_id);
	assert_int_equal(atomic_load(&loc.hdr->packets), 0); /* nothing to scrape */
	/* The next change takes it: chunk id 2 in the parked chunk. It
	 * comes in the middle of a packet, so chunk 1 is queued, not handed
	 * off (that is for packet boundaries: test_handoff). */
	both(e, tw, script_blob, &big, NULL, NULL);
	assert_int_equal(tw->stats.standby_used, 1);
	assert_int_equal(tw->page, loc.page);
	assert_int_equal(tw->chunk, loc.chunk);
	assert_int_equal(atomic_load(&loc.hdr->chunk_id), 2);
	assert_int_equal(handoffs_out(tw), 0);
	ts_pump(&e->ts, 0);
	/* Reclaim robs the idle writer of its partial chunk, its standby and
	 * the chunk it reserved (its big packets crossed soft ends: see
	 * test_reserved_chunks), which go back to Free. */
	w = standby_peek(tw);
	assert_int_not_equal(w, 0);
	assert_int_not_equal(tw->reserve, 0);
	smb_standby_loc(&e->arb.smb, w, &loc);
	assert_int_equal(smb_arbiter_reclaim(&e->arb), 0);
	assert_int_equal(standby_peek(tw), 0);
	assert_int_equal(tw->reserve, 0);
	assert_int_equal(e->arb.stats.standby_returned, 2);
	assert_int_equal(spn_smb_page_load(&e->arb.smb, loc.page, memory_order_relaxed), 0);
	ts_pump(&e->ts, 0);
	expect_all(e);
	/* Chunk ids stay consecutive: 0, 1, 2 committed, 3 next. */
	expect_chunk_ids(e, 3);
	both(e, tw, script_blob, &small, NULL, NULL);
	spn_tw_flush(tw);
	ts_pump(&e->ts, 0);
	assert_int_equal(e->chunks.v[3].chunk_id, 3);
	/* A retired writer's standby is freed when the drain retires it. */
	assert_int_not_equal(standby_peek(tw), 0);
	spn_tw_destroy(tw);
	ts_pump(&e->ts, 0);
	assert_int_equal(e->arb.stats.standby_returned, 3);
	/* Many writers (17 * SMB_STANDBY_RATIO > 64 chunks): none parked,
	 * and none reserved past a soft end (test_reserved_chunks). */
	for (i = 0; i < 17; i++)
		many[i] = new_writer(e, 1);
	for (i = 0; i < 17; i++) {
		cross_soft_end(e, many[i]);
		assert_true(many[i]->end == many[i]->chunk_end); /* past it */
		assert_int_equal(many[i]->stats.reserved, 0);
		spn_tw_flush(many[i]);
	}
	ts_pump(&e->ts, 0);
	for (i = 0; i < 17; i++) {
		assert_int_equal(standby_peek(many[i]), 0);
		spn_tw_destroy(many[i]);
	}
	ts_pump(&e->ts, 0);
	expect_all(e);
	assert_int_equal(e->arb.stats.abi_errors, 0);
	/* Everything is free again. */
	expect_smb_free(e);
	env_free(e);
}

/* Small packets until the writer changes chunk at a packet boundary. */
static void fill_to_change(struct env *e, struct spn_tw *tw)
{
	uint64_t chunks = tw->stats.chunks;
	size_t small = 30;

	while (tw->stats.chunks == chunks)
		both(e, tw, script_blob, &small, NULL, NULL);
}


/* A fresh writer takes chunk 0 and queues it when it fills; the drain
 * then parks a standby chunk for it (arbiter.h, "Standby chunks"). */
static void park_first_standby(struct env *e, struct spn_tw *tw)
{
	fill_to_change(e, tw);			/* chunk 0 taken */
	fill_to_change(e, tw);			/* chunk 0 queued */
	ts_pump(&e->ts, 0);			/* a standby parked */
	assert_int_not_equal(standby_peek(tw), 0);
}

/* Packet pkt[0..n) through spn_tw_small_begin(), or the long way when it
 * returns NULL; recorded as wanted. Returns true for the small path. */
static bool small_or_long(struct env *e, struct spn_tw *tw, const uint8_t *pkt,
			  size_t n)
{
	uint8_t *p = spn_tw_small_begin(tw, n);

	if (p) {
		/* it fits: the room checked covers the payload */
		assert_true((size_t)(tw->end - p) >= n);
		memcpy(p, pkt, n);
		spn_tw_small_end(tw, p, p + n);
	} else {
		spn_tw_begin_packet(tw);
		spn_tw_append(tw, pkt, n);
		spn_tw_end_packet(tw);
	}
	rec_add(&e->want, tw->writer_id, pkt, n, false);
	return p != NULL;
}

/*
 * Small packets pass chunk boundaries themselves (spn_tw_small_begin's
 * slow path): the soft end, and with a standby chunk parked the chunk
 * change too, where the packet opens in the standby chunk and the full
 * chunk is handed off. With no standby parked the change goes the long
 * way (NULL). Everything written arrives, in chunk-id order.
 */
static void test_small_packets_change_chunk(void **state)
{
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, &one_standby, NULL, NULL);
	struct spn_tw *tw = new_writer(e, 1);
	struct smb_loc loc;
	uint64_t reserved;
	bool small = false;
	uint8_t pkt[20];
	uint32_t i;

	(void)state;
	park_first_standby(e, tw);
	smb_standby_loc(&e->arb.smb, standby_peek(tw), &loc);
	reserved = tw->stats.reserved;
	for (i = 0; tw->stats.standby_used == 0; i++) {
		assert_true(i < 4096 / sizeof(pkt));
		memset(pkt, (int)i, sizeof(pkt));
		small = small_or_long(e, tw, pkt, sizeof(pkt));
	}
	/* The last packet opened in the standby chunk, through the small
	 * path, and chunk 1 waits in the hand-off ring. (A packet that fits
	 * the chunk's tail but not with SPN_TW_MIN_ROOM to spare still goes
	 * the long way, without a chunk change.) */
	assert_true(small);
	assert_int_equal(tw->stats.reserved, reserved);
	assert_ptr_equal(tw->hdr, loc.hdr);
	assert_int_equal(tw->count, 1);
	assert_int_equal(atomic_load(&loc.hdr->chunk_id), 2);
	assert_int_not_equal(handoffs_out(tw), 0);
	/* No standby parked (not pumped): the next change falls back. */
	assert_int_equal(standby_peek(tw), 0);
	for (i = 0; tw->stats.chunks == 3; i++) {
		assert_true(i < 4096 / sizeof(pkt));
		memset(pkt, (int)(i + 77), sizeof(pkt));
		small = small_or_long(e, tw, pkt, sizeof(pkt));
	}
	assert_false(small);
	spn_tw_flush(tw);
	ts_pump(&e->ts, 0);
	expect_all(e);
	expect_chunk_ids(e, 4);
	assert_int_equal(e->arb.stats.handoffs, 1);
	assert_int_equal(tw->stats.packets_dropped, 0);
	spn_tw_destroy(tw);
	ts_pump(&e->ts, 0);
	env_free(e);
}

/*
 * Reserved chunks (arbiter.h): a writer that passes the soft end of its
 * chunk with no standby chunk parked takes its next chunk there, as the
 * drain would park one (BeingWritten, its writer id, nothing to scrape),
 * and its chunk change then goes on in it without a search. Reclaim frees
 * an idle writer's reserve, the drain frees a retired writer's, and small
 * (Div14) chunks have no soft end. (Many writers take none:
 * test_standby_chunks.)
 */
static void test_reserved_chunks(void **state)
{
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, &one_standby, NULL, NULL);
	struct spn_tw *tw = new_writer(e, 1);
	size_t before_soft = payload_of(e) - SPN_TW_SOFT_END - 64, small = 30;
	struct smb_loc loc;
	uint32_t j;

	(void)state;
	/* Up to just before the soft end: nothing reserved. */
	both(e, tw, script_blob, &before_soft, NULL, NULL);
	assert_int_equal(tw->stats.chunks, 1);
	assert_int_equal(tw->stats.reserved, 0);
	assert_int_equal(tw->reserve, 0);
	/* Across it: the next chunk is taken, the packets stay in chunk 0. */
	for (j = 0; j < 3; j++)
		both(e, tw, script_blob, &small, NULL, NULL);
	assert_int_equal(tw->stats.chunks, 1);
	assert_int_equal(tw->stats.reserved, 1);
	assert_int_not_equal(tw->reserve, 0);
	smb_standby_loc(&e->arb.smb, tw->reserve, &loc);
	assert_true(loc.page != tw->page);
	assert_int_equal(chunk_state(e, loc.page, loc.chunk), SPN_SMB_BEING_WRITTEN);
	assert_int_equal(atomic_load(&loc.hdr->writer_id), tw->writer_id);
	assert_int_equal(atomic_load(&loc.hdr->packets), 0); /* nothing to scrape */
	/* The chunk change goes on in it, as chunk 1; no second reserve
	 * until its own soft end. */
	fill_to_change(e, tw);
	assert_int_equal(tw->stats.chunks, 2);
	assert_int_equal(tw->page, loc.page);
	assert_int_equal(tw->chunk, loc.chunk);
	assert_int_equal(atomic_load(&loc.hdr->chunk_id), 1);
	assert_int_equal(tw->reserve, 0);
	assert_int_equal(tw->stats.reserved, 1);
	/* With a standby chunk parked, the soft end takes none; it only
	 * stores 0 into the standby's first size slot (smb_warm_standby):
	 * the header stays unpublished, so there is still nothing to scrape. */
	ts_pump(&e->ts, 0);
	assert_int_not_equal(standby_peek(tw), 0);
	smb_standby_loc(&e->arb.smb, standby_peek(tw), &loc);
	memset((uint8_t *)loc.hdr + SPN_SMB_CHUNK_HEADER_SIZE, 0xAB, 8);
	cross_soft_end(e, tw);
	assert_int_equal(tw->stats.reserved, 1);
	{
		const uint8_t *pl = (const uint8_t *)loc.hdr + SPN_SMB_CHUNK_HEADER_SIZE;
		static const uint8_t want[8] = { 0, 0, 0, 0, 0xAB, 0xAB, 0xAB, 0xAB };

		assert_memory_equal(pl, want, sizeof(want));
		assert_int_equal(atomic_load(&loc.hdr->packets), 0);
		assert_int_equal(atomic_load(&loc.hdr->chunk_id), 0);
		assert_int_equal(chunk_state(e, loc.page, loc.chunk),
				 SPN_SMB_BEING_WRITTEN);
	}
	fill_to_change(e, tw);			/* chunk 2: the standby */
	assert_int_equal(tw->stats.standby_used, 1);
	/* Its soft end (no standby now): reserved; reclaim frees it. */
	cross_soft_end(e, tw);
	assert_int_equal(tw->stats.reserved, 2);
	smb_standby_loc(&e->arb.smb, tw->reserve, &loc);
	ts_pump(&e->ts, 0);			/* hand-off listed, standby parked */
	assert_int_equal(smb_arbiter_reclaim(&e->arb), 0);
	assert_int_equal(tw->reserve, 0);
	assert_int_equal(standby_peek(tw), 0);
	assert_int_equal(e->arb.stats.standby_returned, 2);
	assert_int_equal(spn_smb_page_load(&e->arb.smb, loc.page, memory_order_relaxed), 0);
	ts_pump(&e->ts, 0);
	/* A retired writer's reserve is freed by the drain that retires it. */
	cross_soft_end(e, tw);
	assert_int_equal(tw->stats.reserved, 3);
	spn_tw_destroy(tw);
	ts_pump(&e->ts, 0);
	assert_int_equal(e->arb.stats.standby_returned, 3);
	expect_all(e);
	expect_chunk_ids(e, 4); /* 0, 1 (the reserve), 2 (the standby), 3 */
	assert_int_equal(e->arb.stats.abi_errors, 0);
	expect_smb_free(e);
	env_free(e);
	/* Div14 chunks (292 bytes) have no soft end: nothing is reserved. */
	{
		struct smb_arbiter_opts o = { .layout = SPN_SMB_PAGE_DIV14 };

		e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, &o, NULL, NULL);
		tw = new_writer(e, 1);
		for (j = 0; j < 40; j++) {
			both(e, tw, script_blob, &small, NULL, NULL);
			assert_true(tw->end == tw->chunk_end);
		}
		assert_true(tw->stats.chunks > 3);
		assert_int_equal(tw->stats.reserved, 0);
		spn_tw_destroy(tw);
		ts_pump(&e->ts, 0);
		expect_all(e);
	}
	env_free(e);
}

/*
 * Hand-off (arbiter.h): a change at a packet boundary that takes a
 * standby chunk leaves the full chunk in the writer's hand-off ring, still
 * BeingWritten and not queued; the drain completes and lists it. A
 * writer retired with a hand-off the drain has not taken queues it itself,
 * before its GONE node. Nothing is lost and ids stay in order either way.
 */
static void test_handoff(void **state)
{
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, &one_standby, NULL, NULL);
	struct spn_tw *tw = new_writer(e, 1);
	uint32_t page, chunk;
	struct spn_tw_handoff ho;
	struct smb_loc loc;

	(void)state;
	park_first_standby(e, tw);
	page = tw->page;
	chunk = tw->chunk;
	fill_to_change(e, tw);			/* chunk 1 handed off */
	assert_int_equal(tw->stats.standby_used, 1);
	assert_int_equal(handoffs_out(tw), 1);
	ho = tw->ho_slot[atomic_load(&tw->ho_head) % SPN_TW_RING];
	smb_standby_loc(&e->arb.smb, ho.loc, &loc);
	assert_int_equal(loc.page, page);
	assert_int_equal(loc.chunk, chunk);
	assert_int_equal(ho.meta, 1u | (uint64_t)1 << 32);
	assert_int_equal(chunk_state(e, page, chunk), SPN_SMB_BEING_WRITTEN);
	assert_null(atomic_load(&e->arb.head));
	assert_true(smb_arbiter_pending(&e->arb));
	ts_pump(&e->ts, 0);
	assert_int_equal(handoffs_out(tw), 0);
	assert_int_equal(e->arb.stats.handoffs, 1);
	assert_false(smb_arbiter_pending(&e->arb));
	assert_int_not_equal(standby_peek(tw), 0); /* parked again */
	/* Patches riding on the full chunk: no hand-off (tw->rides). */
	tw->rides = true;
	fill_to_change(e, tw);			/* chunk 2 queued */
	assert_int_equal(handoffs_out(tw), 0);
	assert_non_null(atomic_load(&e->arb.head));
	ts_pump(&e->ts, 0);
	/* Retired with a hand-off out: the writer queues it itself. */
	fill_to_change(e, tw);			/* chunk 3 handed off */
	assert_int_not_equal(handoffs_out(tw), 0);
	spn_tw_destroy(tw);
	ts_pump(&e->ts, 0);
	expect_all(e);
	assert_int_equal(e->arb.stats.handoffs, 1);
	expect_chunk_ids(e, 5);
	assert_int_equal(e->ts.writers_removed, 1);
	assert_int_equal(e->arb.stats.abi_errors, 0);
	expect_smb_free(e);
	env_free(e);
}

/* A writer whose hand-off is still out when it fills its next chunk queues
 * that one (no standby left): the drain lists the hand-off first, so the
 * service sees the writer's chunk ids in order (listed the other way round,
 * Perfetto's traced counted chunks_committed_out_of_order). */
static void test_handoff_before_queue(void **state)
{
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, &one_standby, NULL, NULL);
	struct spn_tw *tw = new_writer(e, 1);

	(void)state;
	park_first_standby(e, tw);
	fill_to_change(e, tw);			/* chunk 1 handed off */
	assert_int_not_equal(handoffs_out(tw), 0);
	assert_int_equal(standby_peek(tw), 0);
	fill_to_change(e, tw);			/* chunk 2 queued */
	assert_int_not_equal(handoffs_out(tw), 0);
	assert_non_null(atomic_load(&e->arb.head));
	ts_pump(&e->ts, 0);
	spn_tw_destroy(tw);
	ts_pump(&e->ts, 0);
	expect_all(e);
	assert_int_equal(e->arb.stats.handoffs, 1);
	expect_chunk_ids(e, 4);
	env_free(e);
}

/*
 * The standby and hand-off rings (arbiter.h): the drain parks as many
 * standby chunks as it listed chunks of the writer (SMB_STANDBY_MIN at
 * least), up to the writer's share of a quarter of the SMB, and refills
 * the ring only once it is down to half of that. The writer then changes
 * chunk that many times with nothing queued and no chunk searched for:
 * every full chunk waits in its hand-off ring until the next drain lists
 * them all, in chunk-id order. Standby chunks left at retirement go back
 * to Free.
 */
static void test_standby_ring(void **state)
{
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, NULL, NULL, NULL);
	struct spn_tw *tw = new_writer(e, 1);
	/* 64 chunks, one writer: a quarter of the SMB is 16 chunks */
	const uint32_t cap = e->arb.total_chunks / SMB_STANDBY_RATIO;
	uint64_t reserved, handoffs, returned;
	uint32_t i, ids;

	(void)state;
	assert_int_equal(e->arb.total_chunks, 64);
	park_first_standby(e, tw);		/* chunk 0 listed */
	assert_int_equal(standby_count(tw), SMB_STANDBY_MIN);
	for (i = 0; i < SMB_STANDBY_MIN + 2; i++)
		fill_to_change(e, tw);		/* 1..4 handed off, 5, 6 queued */
	assert_int_equal(handoffs_out(tw), SMB_STANDBY_MIN);
	ts_pump(&e->ts, 0);			/* lists 1..6: 6 parked */
	assert_int_equal(standby_count(tw), 6);
	reserved = tw->stats.reserved;
	handoffs = e->arb.stats.handoffs;
	for (i = 0; i < 6; i++)
		fill_to_change(e, tw);		/* 7..12 handed off */
	assert_int_equal(handoffs_out(tw), 6);
	assert_int_equal(standby_count(tw), 0);
	assert_null(atomic_load(&e->arb.head)); /* nothing queued */
	assert_int_equal(tw->stats.reserved, reserved); /* no search */
	for (i = 0; i < 6; i++) {
		struct spn_tw_handoff *ho =
			&tw->ho_slot[(atomic_load(&tw->ho_head) + i) % SPN_TW_RING];

		assert_int_equal((uint32_t)ho->meta, 7 + i);
	}
	ts_pump(&e->ts, 0);
	assert_int_equal(e->arb.stats.handoffs, handoffs + 6);
	assert_int_equal(handoffs_out(tw), 0);
	assert_int_equal(standby_count(tw), 6);
	/* More chunks listed than the cap: 6 handed off, the rest queued. */
	for (i = 0; i < cap + 4; i++)
		fill_to_change(e, tw);
	ts_pump(&e->ts, 0);
	assert_int_equal(standby_count(tw), cap);
	assert_int_equal(e->arb.stats.handoffs, handoffs + 12);
	/* 10 taken, 6 left: more than half of the 10 the drain lists, so it
	 * parks none (it would top the ring up to 10 at every drain else). */
	for (i = 0; i < 10; i++)
		fill_to_change(e, tw);
	ts_pump(&e->ts, 0);
	assert_int_equal(standby_count(tw), cap - 10);
	/* 5 more taken, 1 left: now it refills, to the 5 it listed. */
	for (i = 0; i < 5; i++)
		fill_to_change(e, tw);
	ts_pump(&e->ts, 0);
	assert_int_equal(standby_count(tw), 5);
	/* Retired with its standby chunks parked: the drain frees them. */
	spn_tw_flush(tw);
	ids = (uint32_t)tw->next_chunk_id;
	returned = e->arb.stats.standby_returned;
	assert_int_equal(tw->reserve, 0);
	spn_tw_destroy(tw);
	ts_pump(&e->ts, 0);
	expect_all(e);
	expect_chunk_ids(e, ids);
	assert_int_equal(e->arb.stats.standby_returned, returned + 5);
	assert_int_equal(e->arb.stats.abi_errors, 0);
	expect_smb_free(e);
	env_free(e);
}

/* An arbiter destroyed while a writer's announce and retire nodes are both
 * still queued (it came and went between two drains) frees the writer
 * once, after walking past both nodes (AddressSanitizer reported a read of
 * the freed writer when the queue was walked newest first). */
static void test_destroy_undrained(void **state)
{
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, NULL, NULL, NULL);
	struct spn_tw *a = new_writer(e, 1), *b = new_writer(e, 1);

	(void)state;
	assert_int_equal(gen_write(a, 0, 0, 100, 2, NULL, NULL), 0);
	assert_int_equal(gen_write(b, 0, 0, 100, 2, NULL, NULL), 0);
	spn_tw_destroy(a);
	spn_tw_destroy(b);
	assert_non_null(atomic_load(&e->arb.head));
	env_free(e);
}

/* ---- Writer ids, drain limits, flush ids, count limit -------------------- */

static void test_writer_ids(void **state)
{
	struct smb_arbiter_opts o = { .max_writer_id = 4 };
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, &o, NULL, NULL);
	struct spn_tw *tw[4] = { 0 }, *x = NULL;
	int i;

	(void)state;
	for (i = 0; i < 4; i++) {
		tw[i] = new_writer(e, 3);
		assert_int_equal(tw[i]->writer_id, i + 1);
	}
	ts_pump(&e->ts, 0);
	assert_int_equal(e->ts.writers_added, 4);
	for (i = 1; i <= 4; i++)
		assert_int_equal(e->ts.registered[i], 3);
	assert_int_equal(smb_arbiter_create_writer(&e->arb, 3, &x), -EMFILE);
	assert_int_equal(smb_arbiter_create_writer(&e->arb, 0, &x), -EINVAL);
	assert_int_equal(smb_arbiter_create_writer(&e->arb, 65536, &x), -EINVAL);
	/* A retired id is reused only once the drain reported it removed
	 * (UnregisterTraceWriter after the writer's last CommitData). */
	spn_tw_destroy(tw[2]);
	assert_int_equal(smb_arbiter_create_writer(&e->arb, 3, &x), -EMFILE);
	ts_pump(&e->ts, 0);
	assert_int_equal(e->ts.writers_removed, 1);
	assert_int_equal(e->ts.registered[3], 0);
	tw[2] = new_writer(e, 3);
	assert_int_equal(tw[2]->writer_id, 3);
	/* Round robin: the cursor is past 3; 4 is taken, so it wraps to 1. */
	spn_tw_destroy(tw[0]);
	ts_pump(&e->ts, 0);
	tw[0] = new_writer(e, 3);
	assert_int_equal(tw[0]->writer_id, 1);
	for (i = 0; i < 4; i++)
		spn_tw_destroy(tw[i]);
	ts_pump(&e->ts, 0);
	assert_int_equal(e->ts.writers_added, 6);
	assert_int_equal(e->ts.writers_removed, 6);
	env_free(e);
}

/* More chunks than one request takes: several requests, the flush id only
 * on the last; a flush with nothing queued still makes a request. */
static void test_drain_split_and_flush_id(void **state)
{
	struct gen_verify v = { 0 };
	struct smb_arbiter_opts o = { .layout = SPN_SMB_PAGE_DIV14 };
	struct env *e = env_new(4u << 20, 4096, &o, gv_cb, &v);
	struct spn_tw *tw = new_writer(e, 1);
	uint64_t before;
	uint32_t seq = 0;

	(void)state;
	while (e->arb.stats.chunks_committed + tw->stats.chunks < SMB_COMMIT_MAX_MOVES + 500)
		assert_int_equal(gen_write(tw, 0, seq++, 200, 2, NULL, NULL), 0);
	spn_tw_flush(tw);
	e->ts.keep_last = true;
	ts_pump(&e->ts, 77);
	env_ok(e);
	assert_int_equal(e->ts.requests, 2);
	assert_int_equal(e->ts.flush_id, 77);
	assert_true(e->ts.last_req->has_flush_request_id);
	assert_int_equal(v.next_seq[0], seq);
	assert_int_equal(v.bad, 0);
	before = e->ts.requests;
	ts_pump(&e->ts, 78);
	assert_int_equal(e->ts.requests, before + 1);
	assert_int_equal(e->ts.flush_id, 78);
	assert_int_equal(e->ts.last_req->n_chunks_to_move, 0);
	before = e->ts.requests;
	ts_pump(&e->ts, 0);
	assert_int_equal(e->ts.requests, before);
	spn_tw_destroy(tw);
	env_free(e);
}

static void script_tiny(const struct gen_sink *k, const void *arg)
{
	k->varint(k->s, 1, *(const uint32_t *)arg);
}

/* At most 1022 packets per chunk. */
static void test_packets_per_chunk_limit(void **state)
{
	struct smb_arbiter_opts o = { .layout = SPN_SMB_PAGE_DIV1 };
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 16384, &o, NULL, NULL);
	struct spn_tw *tw = new_writer(e, 1);
	uint32_t i;

	(void)state;
	for (i = 0; i < 2000; i++) {
		uint32_t v = i % 100;

		both(e, tw, script_tiny, &v, NULL, NULL);
	}
	spn_tw_flush(tw);
	ts_pump(&e->ts, 0);
	expect_all(e);
	assert_int_equal(e->chunks.n, 2);
	assert_int_equal(e->chunks.v[0].count, SPN_SMB_WRITER_MAX_PACKETS);
	assert_int_equal(e->chunks.v[1].count, 2000 - SPN_SMB_WRITER_MAX_PACKETS);
	spn_tw_destroy(tw);
	env_free(e);
}

/* spn_tw_small_begin/end: small packets written in place while they fit,
 * NULL (and nothing written) when they would cross the chunk, the packet
 * limit is reached or a hand-back is pending; the stream reads back exactly
 * as with begin_packet/end_packet. */
static void test_small_packets(void **state)
{
	struct smb_arbiter_opts o = { .layout = SPN_SMB_PAGE_DIV1 };
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, &o, NULL, NULL);
	struct spn_tw *tw = new_writer(e, 1);
	uint32_t i, small = 0, fallback = 0;

	(void)state;
	for (i = 0; i < 600; i++) {
		uint8_t pkt[40];
		size_t n = 1 + i % 37;

		for (size_t k = 0; k < n; k++)
			pkt[k] = (uint8_t)(i + k);
		if (small_or_long(e, tw, pkt, n))
			small++;
		else
			fallback++;
	}
	/* The I/O thread took the idle writer's chunk: small_begin refuses
	 * and the slow path acknowledges it and takes a new chunk. */
	assert_int_equal(smb_arbiter_reclaim(&e->arb), 0);
	assert_null(spn_tw_small_begin(tw, 3));
	spn_tw_begin_packet(tw);
	spn_tw_append(tw, "abc", 3);
	spn_tw_end_packet(tw);
	rec_add(&e->want, tw->writer_id, (const uint8_t *)"abc", 3, false);
	assert_int_equal(tw->stats.stolen, 1);
	/* A hand-back asked inside a small packet is done at its end. */
	{
		uint8_t *p = spn_tw_small_begin(tw, 2);

		assert_non_null(p);
		assert_int_equal(smb_arbiter_reclaim(&e->arb), 1);
		memcpy(p, "xy", 2);
		spn_tw_small_end(tw, p, p + 2);
		rec_add(&e->want, tw->writer_id, (const uint8_t *)"xy", 2, false);
		assert_int_equal(tw->stats.handbacks, 1);
	}
	spn_tw_flush(tw);
	ts_pump(&e->ts, 0);
	expect_all(e);
	/* 600 packets of 1..37 bytes cross several 4 KiB chunks: both paths ran */
	assert_true(small > 500);
	assert_true(fallback >= 2);
	assert_true(e->chunks.n >= 3);
	assert_int_equal(tw->stats.packets_dropped, 0);
	spn_tw_destroy(tw);
	env_free(e);
}

/* Many live writers: free pages are cut as Div14; few: back to Div1. */
static void test_adaptive_layout(void **state)
{
	struct env *e = env_new(SPN_SMB_DEFAULT_SIZE, 4096, NULL, NULL, NULL);
	struct spn_tw *tw[129];
	size_t small = 30, i;

	(void)state;
	/* 129 writers: more than half of the 64 coarse chunks (and of the
	 * 256 chunks of a 1 KiB layout). */
	for (i = 0; i < 129; i++)
		tw[i] = new_writer(e, 1);
	for (i = 0; i < 129; i++) {
		both(e, tw[i], script_blob, &small, NULL, NULL);
		spn_tw_flush(tw[i]);
	}
	ts_pump(&e->ts, 0);
	expect_all(e);
	assert_int_equal(e->chunks.n, 129);
	for (i = 0; i < e->chunks.n; i++)
		assert_int_equal(e->chunks.v[i].size, 292);
	assert_true(e->arb.stats.pages_fine > 0);
	for (i = 1; i < 129; i++)
		spn_tw_destroy(tw[i]);
	ts_pump(&e->ts, 0);
	/* One writer left: every page freed meanwhile is coarse again. */
	both(e, tw[0], script_blob, &small, NULL, NULL);
	spn_tw_flush(tw[0]);
	ts_pump(&e->ts, 0);
	expect_all(e);
	assert_int_equal(e->chunks.v[e->chunks.n - 1].size, 4088);
	spn_tw_destroy(tw[0]);
	env_free(e);
}

static void test_layouts_and_init(void **state)
{
	struct smb_shm shm;
	struct smb_arbiter arb;
	struct smb_arbiter_opts o = { .layout = SPN_SMB_PAGE_RESERVED6 };

	(void)state;
	assert_int_equal(smb_arbiter_default_layout(4096), SPN_SMB_PAGE_DIV1);
	assert_int_equal(smb_arbiter_default_layout(8192), SPN_SMB_PAGE_DIV2);
	assert_int_equal(smb_arbiter_default_layout(16384), SPN_SMB_PAGE_DIV4);
	assert_int_equal(smb_arbiter_default_layout(32768), SPN_SMB_PAGE_DIV7);
	smb_shm_init(&shm);
	assert_int_equal(smb_shm_create(&shm, SPN_SMB_DEFAULT_SIZE, 4096), 0);
	assert_int_equal(smb_arbiter_init(&arb, &shm.smb, &o), -EINVAL);
	o.layout = 0;
	assert_int_equal(smb_arbiter_init(&arb, &shm.smb, &o), 0);
	assert_int_equal(arb.layout, SPN_SMB_PAGE_DIV1);
	assert_true(arb.adaptive);
	assert_int_equal(arb.total_chunks, 64);
	assert_int_equal(arb.opts.max_writer_id, SPN_SMB_MAX_WRITER_ID);
	smb_arbiter_destroy(&arb);
	o.force_heavy_fence = true;
	assert_int_equal(smb_arbiter_init(&arb, &shm.smb, &o), 0);
	assert_false(arb.membarrier);
	smb_arbiter_destroy(&arb);
	smb_shm_close(&shm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_encoding),
		cmocka_unit_test(test_chunk_ids_and_flags),
		cmocka_unit_test(test_size_sweep),
		cmocka_unit_test(test_cut_sweep),
		cmocka_unit_test(test_patch_entries),
		cmocka_unit_test(test_direct_patch_in_place),
		cmocka_unit_test(test_drop_when_full),
		cmocka_unit_test(test_drop_mid_packet),
		cmocka_unit_test(test_nesting_too_deep),
		cmocka_unit_test(test_patches_in_flight),
		cmocka_unit_test(test_stall_is_bounded),
		cmocka_unit_test(test_flush_hands_back),
		cmocka_unit_test(test_reclaim),
		cmocka_unit_test(test_pressure_reclaims),
		cmocka_unit_test(test_low_water_hurries),
		cmocka_unit_test(test_standby_chunks),
		cmocka_unit_test(test_small_packets_change_chunk),
		cmocka_unit_test(test_reserved_chunks),
		cmocka_unit_test(test_handoff),
		cmocka_unit_test(test_handoff_before_queue),
		cmocka_unit_test(test_standby_ring),
		cmocka_unit_test(test_destroy_undrained),
		cmocka_unit_test(test_writer_ids),
		cmocka_unit_test(test_drain_split_and_flush_id),
		cmocka_unit_test(test_packets_per_chunk_limit),
		cmocka_unit_test(test_small_packets),
		cmocka_unit_test(test_adaptive_layout),
		cmocka_unit_test(test_layouts_and_init),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
