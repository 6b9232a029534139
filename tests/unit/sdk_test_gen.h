// SPDX-License-Identifier: Apache-2.0
// Deterministic test packets for the SDK writer tests: one pseudo-random script of protobuf operations drives either a trace writer or a flat reference encoder, so a packet read back can be checked byte for byte.
//
// A packet starts with varint fields 1 = stream, 2 = seq, 3 = target size,
// 4 = max nesting depth; the rest follows from those four values, so the
// checker regenerates the expected bytes from the packet alone. Random
// fields use numbers 5..24 (never 42, previous_packet_dropped, which the
// writer may put in front of a packet after a loss).
#ifndef SPN_SDK_TEST_GEN_H
#define SPN_SDK_TEST_GEN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spindle/pb.h"
#include "spindle/trace_writer.h"

/* Where the operations of a script go. */
struct gen_sink {
	void (*varint)(void *s, uint32_t field, uint64_t v);
	void (*fixed64)(void *s, uint32_t field, uint64_t v);
	void (*fixed32)(void *s, uint32_t field, uint32_t v);
	void (*bytes)(void *s, uint32_t field, const void *d, size_t n);
	void (*begin)(void *s, uint32_t field);
	void (*end)(void *s);
	void (*hook)(void *hook_ctx); /* after each operation, may be NULL */
	void *s;		      /* sink state */
	void *hook_ctx;		      /* for hook */
};

/* ---- Flat reference encoder (pb.h into a growing buffer) ---------------- */

struct gen_flat {
	uint8_t *buf;		/* bytes */
	size_t len, cap;	/* used and allocated */
	size_t slots[64];	/* open nested size slots (offsets) */
	int depth;		/* open nested messages */
};

static inline uint8_t *gen_flat_room(struct gen_flat *f, size_t n)
{
	if (f->len + n > f->cap) {
		size_t ncap = f->cap ? f->cap : 1024;

		while (ncap < f->len + n)
			ncap *= 2;
		f->buf = realloc(f->buf, ncap);
		if (!f->buf)
			abort();
		f->cap = ncap;
	}
	return f->buf + f->len;
}

static inline void gen_flat_varint(void *s, uint32_t field, uint64_t v)
{
	struct gen_flat *f = s;
	uint8_t *p = gen_flat_room(f, 16);

	f->len += (size_t)(spn_pb_field_varint(p, field, v) - p);
}

static inline void gen_flat_fixed64(void *s, uint32_t field, uint64_t v)
{
	struct gen_flat *f = s;
	uint8_t *p = gen_flat_room(f, 16);

	f->len += (size_t)(spn_pb_field_fixed64(p, field, v) - p);
}

static inline void gen_flat_fixed32(void *s, uint32_t field, uint32_t v)
{
	struct gen_flat *f = s;
	uint8_t *p = gen_flat_room(f, 16);

	f->len += (size_t)(spn_pb_field_fixed32(p, field, v) - p);
}

static inline void gen_flat_bytes(void *s, uint32_t field, const void *d, size_t n)
{
	struct gen_flat *f = s;
	uint8_t *p = gen_flat_room(f, 16 + n);

	f->len += (size_t)(spn_pb_field_bytes(p, field, d, n) - p);
}

static inline void gen_flat_begin(void *s, uint32_t field)
{
	struct gen_flat *f = s;
	uint8_t *p = gen_flat_room(f, 16), *slot;
	uint8_t *q = spn_pb_begin_nested(p, field, &slot);

	f->slots[f->depth++] = (size_t)(slot - f->buf);
	f->len += (size_t)(q - p);
}

static inline void gen_flat_end(void *s)
{
	struct gen_flat *f = s;

	if (f->depth == 0)
		return;
	f->depth--;
	spn_pb_end_nested(f->buf + f->slots[f->depth], f->buf + f->len);
}

static inline struct gen_sink gen_flat_sink(struct gen_flat *f)
{
	struct gen_sink k = {
		gen_flat_varint, gen_flat_fixed64, gen_flat_fixed32,
		gen_flat_bytes, gen_flat_begin, gen_flat_end, NULL, f, NULL,
	};
	return k;
}

/* ---- Trace writer sink -------------------------------------------------- */

static inline void gen_tw_varint(void *s, uint32_t field, uint64_t v)
{
	spn_tw_varint(s, field, v);
}

static inline void gen_tw_fixed64(void *s, uint32_t field, uint64_t v)
{
	spn_tw_fixed64(s, field, v);
}

static inline void gen_tw_fixed32(void *s, uint32_t field, uint32_t v)
{
	spn_tw_fixed32(s, field, v);
}

static inline void gen_tw_bytes(void *s, uint32_t field, const void *d, size_t n)
{
	spn_tw_bytes(s, field, d, n);
}

static inline void gen_tw_begin(void *s, uint32_t field)
{
	spn_tw_begin_nested(s, field);
}

static inline void gen_tw_end(void *s)
{
	spn_tw_end_nested(s);
}

static inline struct gen_sink gen_tw_sink(struct spn_tw *tw)
{
	struct gen_sink k = {
		gen_tw_varint, gen_tw_fixed64, gen_tw_fixed32,
		gen_tw_bytes, gen_tw_begin, gen_tw_end, NULL, tw, NULL,
	};
	return k;
}

/* ---- The script --------------------------------------------------------- */

static inline uint64_t gen_rng(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* Largest bytes field a script writes. */
#define GEN_MAX_BYTES 2000u

/*
 * Writes the operations of packet (stream, seq) into k: about `target`
 * bytes (it stops at the first operation that reaches it), nested at most
 * `max_depth` deep (< 64). Not the packet start/end: only its fields.
 */
static inline void gen_fields(const struct gen_sink *k, uint32_t stream, uint32_t seq,
			      uint32_t target, uint32_t max_depth)
{
	uint64_t x = (uint64_t)stream << 40 ^ (uint64_t)seq << 16 ^ target ^
		     (uint64_t)max_depth << 60;
	uint8_t data[GEN_MAX_BYTES];
	size_t size = 0;
	uint32_t depth = 0;

#define GEN_OP(call)                              \
	do {                                      \
		call;                             \
		if (k->hook)                      \
			k->hook(k->hook_ctx);     \
	} while (0)
	GEN_OP(k->varint(k->s, 1, stream));
	GEN_OP(k->varint(k->s, 2, seq));
	GEN_OP(k->varint(k->s, 3, target));
	GEN_OP(k->varint(k->s, 4, max_depth));
	size = 4 + spn_pb_varint_len(stream) + spn_pb_varint_len(seq) +
	       spn_pb_varint_len(target) + spn_pb_varint_len(max_depth);
	while (size < target) {
		uint64_t r = gen_rng(&x);
		uint32_t field = 5 + (uint32_t)(r >> 8) % 20;
		uint64_t v = gen_rng(&x);

		switch (r % 8) {
		case 0:
		case 1:
			v >>= (r >> 32) % 64;
			GEN_OP(k->varint(k->s, field, v));
			size += spn_pb_varint_len((uint64_t)field << 3) + spn_pb_varint_len(v);
			break;
		case 2:
			GEN_OP(k->fixed64(k->s, field, v));
			size += spn_pb_varint_len((uint64_t)field << 3) + 8;
			break;
		case 3:
			GEN_OP(k->fixed32(k->s, field, (uint32_t)v));
			size += spn_pb_varint_len((uint64_t)field << 3) + 4;
			break;
		case 4:
		case 5: {
			size_t left = target - size, n;

			n = (size_t)(v % (left < GEN_MAX_BYTES ? left + 1 : GEN_MAX_BYTES));
			for (size_t i = 0; i < n; i++)
				data[i] = (uint8_t)(v + i * 131u + (i >> 8));
			GEN_OP(k->bytes(k->s, field, data, n));
			size += spn_pb_bytes_field_len(field, n);
			break;
		}
		case 6:
			if (depth < max_depth) {
				GEN_OP(k->begin(k->s, field));
				depth++;
				size += spn_pb_varint_len((uint64_t)field << 3) + 4;
			}
			break;
		default:
			if (depth > 0) {
				GEN_OP(k->end(k->s));
				depth--;
			}
			break;
		}
	}
	while (depth > 0) {
		GEN_OP(k->end(k->s));
		depth--;
	}
#undef GEN_OP
}

/* Writes packet (stream, seq, target, max_depth) through a trace writer
 * (begin, fields, end). Returns what spn_tw_begin_packet() returned. */
static inline int gen_write(struct spn_tw *tw, uint32_t stream, uint32_t seq,
			    uint32_t target, uint32_t max_depth,
			    void (*hook)(void *), void *hook_ctx)
{
	struct gen_sink k = gen_tw_sink(tw);
	int r;

	k.hook = hook;
	k.hook_ctx = hook_ctx;
	r = spn_tw_begin_packet(tw);
	gen_fields(&k, stream, seq, target, max_depth);
	spn_tw_end_packet(tw);
	return r;
}

/* What gen_check() found in a packet read back. */
struct gen_found {
	uint32_t stream, seq, target, depth; /* its identity */
	uint32_t lost;	/* previous_packet_dropped value in front (0: none) */
};

/* Reads a varint field with number `field` at *p. */
static inline bool gen_read_varint(const uint8_t **p, const uint8_t *end,
				   uint32_t field, uint64_t *v)
{
	struct spn_pb_field f;
	int n = spn_pb_next_field(*p, end, &f);

	if (n <= 0 || f.id != field || f.wt != SPN_PB_VARINT)
		return false;
	*v = f.value;
	*p += n;
	return true;
}

/*
 * Checks a packet read back: an optional previous_packet_dropped field,
 * then exactly the bytes the script of its (stream, seq, target, depth)
 * makes. Returns true when it matches.
 */
static inline bool gen_check(const uint8_t *data, size_t len, struct gen_found *out)
{
	const uint8_t *p = data, *end = data + len;
	struct gen_flat f = { 0 };
	struct gen_sink k = gen_flat_sink(&f);
	uint64_t v[4], lost = 0;
	bool ok;

	memset(out, 0, sizeof(*out));
	{
		const uint8_t *q = p;

		if (gen_read_varint(&q, end, SPN_TW_FIELD_PREVIOUS_PACKET_DROPPED, &lost))
			p = q;
	}
	{
		const uint8_t *q = p;

		for (uint32_t i = 0; i < 4; i++)
			if (!gen_read_varint(&q, end, i + 1, &v[i]))
				return false;
	}
	out->stream = (uint32_t)v[0];
	out->seq = (uint32_t)v[1];
	out->target = (uint32_t)v[2];
	out->depth = (uint32_t)v[3];
	out->lost = (uint32_t)lost;
	if (out->depth >= 64)
		return false;
	gen_fields(&k, out->stream, out->seq, out->target, out->depth);
	ok = f.len == (size_t)(end - p) && memcmp(f.buf, p, f.len) == 0;
	free(f.buf);
	return ok;
}

#endif
