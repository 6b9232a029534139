// SPDX-License-Identifier: Apache-2.0
// Protobuf wire encoding for the hot path: varints, fixed-width fields,
// length-delimited fields and nested messages with a 4-byte back-filled size.
//
// Every writer takes a cursor and returns the cursor after what it wrote.
// None of them checks bounds: the caller reserves room first, using the
// SPN_PB_MAX_* figures below (the trace writer does so once per field
// against its chunk end and takes its slow path when the chunk is full).
// Nothing here allocates, locks or makes a syscall.
#ifndef SPINDLE_PB_H
#define SPINDLE_PB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Wire types (the low 3 bits of a field key). */
enum spn_pb_wire_type {
	SPN_PB_VARINT = 0,	/* int32/64, uint32/64, bool, enum */
	SPN_PB_FIXED64 = 1,	/* fixed64, sfixed64, double */
	SPN_PB_LEN = 2,		/* string, bytes, nested message */
	SPN_PB_FIXED32 = 5,	/* fixed32, sfixed32, float */
};

#define SPN_PB_MAX_VARINT 10	/* bytes of the longest varint (uint64) */
#define SPN_PB_MAX_KEY 5	/* bytes of the longest key (field < 2^29) */
#define SPN_PB_NESTED_SIZE 4	/* bytes reserved for a back-filled size */
/* Largest size a 4-byte redundant varint can hold (2^28 - 1). */
#define SPN_PB_MAX_NESTED_SIZE 0x0FFFFFFFu

/* Bytes the varint encoding of v takes (1..10). */
static inline size_t spn_pb_varint_len(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* Writes v as a base-128 varint. */
static inline uint8_t *spn_pb_put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

/* Writes the key of field number `field` with wire type `wt`. */
static inline uint8_t *spn_pb_put_key(uint8_t *p, uint32_t field,
				      enum spn_pb_wire_type wt)
{
	return spn_pb_put_varint(p, ((uint64_t)field << 3) | (uint64_t)wt);
}

/*
 * Writes v (< 2^28) as a redundant 4-byte varint: the form of a size that
 * is reserved before the payload is known and back-filled afterwards
 * (smb-abi.md §6.1). 5 encodes as 85 80 80 00.
 */
static inline void spn_pb_put_varint4(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)((v & 0x7F) | 0x80);
	p[1] = (uint8_t)(((v >> 7) & 0x7F) | 0x80);
	p[2] = (uint8_t)(((v >> 14) & 0x7F) | 0x80);
	p[3] = (uint8_t)((v >> 21) & 0x7F);
}

/* uint32/64, enum and non-negative int fields. */
static inline uint8_t *spn_pb_field_varint(uint8_t *p, uint32_t field,
					   uint64_t v)
{
	p = spn_pb_put_key(p, field, SPN_PB_VARINT);
	return spn_pb_put_varint(p, v);
}

/* int32/int64 fields: two's complement, so a negative value takes 10 bytes. */
static inline uint8_t *spn_pb_field_int(uint8_t *p, uint32_t field, int64_t v)
{
	return spn_pb_field_varint(p, field, (uint64_t)v);
}

/* sint32/sint64 fields (zig-zag). */
static inline uint8_t *spn_pb_field_sint(uint8_t *p, uint32_t field, int64_t v)
{
	uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);

	return spn_pb_field_varint(p, field, z);
}

static inline uint8_t *spn_pb_field_bool(uint8_t *p, uint32_t field, bool v)
{
	return spn_pb_field_varint(p, field, v ? 1 : 0);
}

/* Little-endian fixed-width values, whatever the host order. */
static inline uint8_t *spn_pb_put_fixed64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		*p++ = (uint8_t)(v >> (8 * i));
	return p;
}

static inline uint8_t *spn_pb_put_fixed32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		*p++ = (uint8_t)(v >> (8 * i));
	return p;
}

static inline uint8_t *spn_pb_field_fixed64(uint8_t *p, uint32_t field,
					    uint64_t v)
{
	p = spn_pb_put_key(p, field, SPN_PB_FIXED64);
	return spn_pb_put_fixed64(p, v);
}

static inline uint8_t *spn_pb_field_fixed32(uint8_t *p, uint32_t field,
					    uint32_t v)
{
	p = spn_pb_put_key(p, field, SPN_PB_FIXED32);
	return spn_pb_put_fixed32(p, v);
}

static inline uint8_t *spn_pb_field_double(uint8_t *p, uint32_t field,
					   double v)
{
	uint64_t bits;

	memcpy(&bits, &v, sizeof(bits));
	return spn_pb_field_fixed64(p, field, bits);
}

static inline uint8_t *spn_pb_field_float(uint8_t *p, uint32_t field, float v)
{
	uint32_t bits;

	memcpy(&bits, &v, sizeof(bits));
	return spn_pb_field_fixed32(p, field, bits);
}

/* string/bytes fields, and nested messages already encoded elsewhere. */
static inline uint8_t *spn_pb_field_bytes(uint8_t *p, uint32_t field,
					  const void *data, size_t len)
{
	p = spn_pb_put_key(p, field, SPN_PB_LEN);
	p = spn_pb_put_varint(p, len);
	memcpy(p, data, len);
	return p + len;
}

static inline uint8_t *spn_pb_field_string(uint8_t *p, uint32_t field,
					   const char *s)
{
	return spn_pb_field_bytes(p, field, s, strlen(s));
}

/* Bytes a string/bytes field of `len` payload bytes takes. */
static inline size_t spn_pb_bytes_field_len(uint32_t field, size_t len)
{
	return spn_pb_varint_len((uint64_t)field << 3) + spn_pb_varint_len(len) +
	       len;
}

/*
 * Opens a nested message: writes the key and reserves the 4-byte size.
 * *size_slot receives where the size goes; close it with spn_pb_end_nested()
 * once the payload is written (the payload starts right after the slot).
 */
static inline uint8_t *spn_pb_begin_nested(uint8_t *p, uint32_t field,
					   uint8_t **size_slot)
{
	p = spn_pb_put_key(p, field, SPN_PB_LEN);
	*size_slot = p;
	return p + SPN_PB_NESTED_SIZE;
}

/* Back-fills the size of the nested message whose payload ends at `end`. */
static inline void spn_pb_end_nested(uint8_t *size_slot, const uint8_t *end)
{
	spn_pb_put_varint4(size_slot,
			   (uint32_t)(end - (size_slot + SPN_PB_NESTED_SIZE)));
}

/* Results of the bounded readers below (picohttpparser style). */
#define SPN_PB_NEED_MORE (-1)	/* the input ends inside the item */
#define SPN_PB_INVALID (-2)	/* the item can't be valid whatever follows */

/*
 * Reads a varint from [p, end). Returns the bytes consumed (1..10) and sets
 * *v, SPN_PB_NEED_MORE when the input ends first, or SPN_PB_INVALID when
 * the varint runs past 10 bytes.
 */
static inline int spn_pb_get_varint(const uint8_t *p, const uint8_t *end,
				    uint64_t *v)
{
	uint64_t r = 0;

	for (int i = 0; i < SPN_PB_MAX_VARINT; i++) {
		if (p + i >= end)
			return SPN_PB_NEED_MORE;
		r |= (uint64_t)(p[i] & 0x7F) << (7 * i);
		if (!(p[i] & 0x80)) {
			*v = r;
			return i + 1;
		}
	}
	return SPN_PB_INVALID;
}

/* One field seen by spn_pb_next_field(). */
struct spn_pb_field {
	uint32_t id;		/* field number (>= 1) */
	enum spn_pb_wire_type wt; /* wire type */
	uint64_t value;		/* varint or fixed value; length for LEN */
	const uint8_t *data;	/* LEN fields: the payload, inside the input */
};

/*
 * Parses the field at [p, end) into *f. Returns the bytes consumed (the
 * whole field, payload included), SPN_PB_NEED_MORE when the input ends
 * inside the field, or SPN_PB_INVALID for a field number 0, a group or an
 * unknown wire type. A LEN payload is never followed past `end`.
 */
static inline int spn_pb_next_field(const uint8_t *p, const uint8_t *end,
				    struct spn_pb_field *f)
{
	const uint8_t *q = p;
	uint64_t key;
	int n = spn_pb_get_varint(q, end, &key);

	if (n < 0)
		return n;
	q += n;
	if ((key >> 3) == 0 || (key >> 3) > 0x1FFFFFFF)
		return SPN_PB_INVALID;
	f->id = (uint32_t)(key >> 3);
	f->wt = (enum spn_pb_wire_type)(key & 7);
	f->data = NULL;
	switch (f->wt) {
	case SPN_PB_VARINT:
		n = spn_pb_get_varint(q, end, &f->value);
		if (n < 0)
			return n;
		q += n;
		break;
	case SPN_PB_FIXED64:
	case SPN_PB_FIXED32: {
		size_t w = f->wt == SPN_PB_FIXED64 ? 8 : 4;

		if ((size_t)(end - q) < w)
			return SPN_PB_NEED_MORE;
		f->value = 0;
		for (size_t i = 0; i < w; i++)
			f->value |= (uint64_t)q[i] << (8 * i);
		q += w;
		break;
	}
	case SPN_PB_LEN:
		n = spn_pb_get_varint(q, end, &f->value);
		if (n < 0)
			return n;
		q += n;
		if (f->value > (uint64_t)(end - q))
			return SPN_PB_NEED_MORE;
		f->data = q;
		q += f->value;
		break;
	default:
		return SPN_PB_INVALID;
	}
	if (q - p > INT32_MAX)
		return SPN_PB_INVALID;
	return (int)(q - p);
}

#ifdef __cplusplus
}
#endif
#endif
