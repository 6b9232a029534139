// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the proto tests: reading test data, counting unknown
// fields through a decoded message tree, and comparing encodings field by
// field at the wire level.
#ifndef SPN_TESTS_PROTO_TEST_UTIL_H
#define SPN_TESTS_PROTO_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "data_source_config.pb-c.h"
#include "testdata.h"

#define SESSION1 SPN_TESTDATA_DIR "/perfetto_v14/session1"


/*
 * Total number of unknown fields in m and every sub-message reachable from
 * it. Zero means our .proto files declare every field present on the wire
 * (payloads we keep as bytes are not looked into).
 */
static inline size_t count_unknown(const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	size_t total = m->n_unknown_fields;

	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const char *base = (const char *)m;

		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(base + f->quantifier_offset);
			ProtobufCMessage *const *v =
				*(ProtobufCMessage *const *const *)(base + f->offset);

			for (size_t k = 0; k < n; k++)
				total += count_unknown(v[k]);
			continue;
		}
		if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)(base + f->quantifier_offset) != f->id)
			continue;
		const ProtobufCMessage *sub =
			*(const ProtobufCMessage *const *)(base + f->offset);
		if (sub != NULL)
			total += count_unknown(sub);
	}
	return total;
}

static inline void assert_str(const char *got, const char *want)
{
	assert_non_null(got);
	assert_string_equal(got, want);
}

/* ---- wire-level view, to compare encodings field by field ---- */

/* One field occurrence of a serialized message. */
struct wire_field {
	uint32_t number;    /* field number */
	uint8_t wire_type;  /* 0 varint, 1 fixed64, 2 LEN, 5 fixed32 */
	uint64_t value;     /* varint/fixed value, or LEN payload length */
	const uint8_t *ptr; /* LEN payload (NULL for other wire types) */
	size_t index;       /* position in the message, for a stable sort */
};

static inline int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t r = 0;

	for (int shift = 0; shift < 64; shift += 7) {
		if (*p >= end)
			return -1;
		uint8_t b = *(*p)++;
		r |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -1;
}

/* Splits buf into at most cap fields; returns the count or -1 if malformed. */
static inline int wire_split(const uint8_t *buf, size_t len, struct wire_field *out,
		      int cap)
{
	const uint8_t *p = buf, *end = buf + len;
	int n = 0;

	while (p < end) {
		uint64_t key, v;
		struct wire_field *f = &out[n];

		if (n == cap || read_varint(&p, end, &key) < 0 || key >> 3 == 0 ||
		    key >> 3 > 536870911)
			return -1;
		f->number = (uint32_t)(key >> 3);
		f->wire_type = key & 7;
		f->ptr = NULL;
		f->index = (size_t)n;
		switch (f->wire_type) {
		case 0:
			if (read_varint(&p, end, &v) < 0)
				return -1;
			f->value = v;
			break;
		case 1:
		case 5: {
			size_t w = f->wire_type == 1 ? 8 : 4;

			if ((size_t)(end - p) < w)
				return -1;
			v = 0;
			for (size_t i = 0; i < w; i++)
				v |= (uint64_t)p[i] << (8 * i);
			f->value = v;
			p += w;
			break;
		}
		case 2:
			if (read_varint(&p, end, &v) < 0 ||
			    v > (uint64_t)(end - p))
				return -1;
			f->value = v;
			f->ptr = p;
			p += v;
			break;
		default:
			return -1;
		}
		n++;
	}
	return n;
}

static inline int wire_cmp(const void *a, const void *b)
{
	const struct wire_field *x = a, *y = b;

	if (x->number != y->number)
		return x->number < y->number ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

/*
 * Asserts a and b carry the same fields: for every field number the same
 * sequence of values, each LEN payload byte-identical. Field order across
 * numbers and the width of tags/lengths may differ.
 */
static inline void assert_wire_equivalent(const uint8_t *a, size_t alen,
				   const uint8_t *b, size_t blen)
{
	enum { CAP = 512 };
	struct wire_field *fa = calloc(CAP, sizeof(*fa));
	struct wire_field *fb = calloc(CAP, sizeof(*fb));
	int na, nb;

	assert_non_null(fa);
	assert_non_null(fb);
	na = wire_split(a, alen, fa, CAP);
	nb = wire_split(b, blen, fb, CAP);
	assert_true(na >= 0);
	assert_int_equal(na, nb);
	qsort(fa, (size_t)na, sizeof(*fa), wire_cmp);
	qsort(fb, (size_t)nb, sizeof(*fb), wire_cmp);
	for (int i = 0; i < na; i++) {
		assert_int_equal(fa[i].number, fb[i].number);
		assert_int_equal(fa[i].wire_type, fb[i].wire_type);
		assert_int_equal(fa[i].value, fb[i].value);
		if (fa[i].ptr != NULL)
			assert_memory_equal(fa[i].ptr, fb[i].ptr, fa[i].value);
	}
	free(fa);
	free(fb);
}

/* Packs m into a new malloc'd buffer; *len receives its size. */
static inline uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *out = malloc(n ? n : 1);

	assert_non_null(out);
	assert_int_equal(protobuf_c_message_pack(m, out), n);
	*len = n;
	return out;
}

static inline void append(struct blob *b, const void *data, size_t n)
{
	uint8_t *p = realloc(b->data, b->len + n + 1);

	assert_non_null(p);
	memcpy(p + b->len, data, n);
	b->data = p;
	b->len += n;
}

/* The DataSourceConfig traced sent in session1 (SetupDataSource). */
static inline void check_config(const Perfetto__Protos__DataSourceConfig *c)
{
	assert_non_null(c);
	assert_str(c->name, "track_event");
	assert_int_equal(c->target_buffer, 1);
	assert_int_equal(c->trace_duration_ms, 1500);
	assert_int_equal(c->tracing_session_id, 1);
	assert_int_equal(c->stop_timeout_ms, 5000);
	assert_true(c->has_enable_extra_guardrails);
	assert_false(c->enable_extra_guardrails);
}


#endif
