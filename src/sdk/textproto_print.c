// SPDX-License-Identifier: Apache-2.0
// Text-format protobuf printer for any protobuf-c message; its output parses
// back with spn_textproto_parse() into an equal message.
#include "sdk/textproto_int.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct tp_printer {
	FILE *out;                             // where the text goes
	const struct spn_textproto_opts *opts; // payload types; may be NULL
	int rc;                                // first error (-ENOMEM), else 0
};

static void tp_indent(FILE *out, unsigned depth)
{
	for (unsigned i = 0; i < depth; i++)
		fputs("  ", out);
}

// Size of one element in the C array of a repeated field of type `t`.
static size_t tp_elem_size(ProtobufCType t)
{
	switch (t) {
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return 8;
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_STRING:
		return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(ProtobufCMessage *);
	default: // 32-bit integers, enums (int-sized in protobuf-c) and float
		return 4;
	}
}

// Length of the valid UTF-8 sequence of 2 to 4 bytes at s (n bytes left), or
// 0 if there is none (overlong forms and surrogates are not valid).
static size_t tp_utf8_len(const uint8_t *s, size_t n)
{
	uint8_t c = s[0], lo = 0x80, hi = 0xbf;
	size_t k;
	if (c >= 0xc2 && c <= 0xdf)
		k = 2;
	else if (c >= 0xe0 && c <= 0xef)
		k = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		k = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (n < k || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < k; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return k;
}

// Prints s[0..n) double-quoted with C escapes. With `utf8`, valid UTF-8
// sequences are printed as they are (string fields); otherwise every byte
// outside printable ASCII is escaped (bytes fields).
static void tp_print_quoted(FILE *out, const uint8_t *s, size_t n, bool utf8)
{
	fputc('"', out);
	for (size_t i = 0; i < n;) {
		uint8_t c = s[i];
		size_t k = (utf8 && c >= 0x80) ? tp_utf8_len(s + i, n - i) : 0;
		if (k) {
			fwrite(s + i, 1, k, out);
			i += k;
			continue;
		}
		if (c == '\n')
			fputs("\\n", out);
		else if (c == '\r')
			fputs("\\r", out);
		else if (c == '\t')
			fputs("\\t", out);
		else if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(out, "\\%03o",
				c); // always 3 digits: a digit may follow
		else
			fputc(c, out);
		i++;
	}
	fputc('"', out);
}

// Prints the shortest decimal form that reads back to the same value.
static void tp_print_real(FILE *out, double d, bool single)
{
	if (isnan(d)) {
		fputs("nan", out);
		return;
	}
	if (isinf(d)) {
		fputs(d < 0 ? "-inf" : "inf", out);
		return;
	}
	char buf[48];
	locale_t loc = tp_c_locale_get();
	locale_t old = loc ? uselocale(loc) : (locale_t)0;
	for (int prec = single ? 6 : 15; prec <= (single ? 9 : 17); prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, d);
		if (single ? strtof(buf, NULL) == (float)d
			   : strtod(buf, NULL) == d)
			break;
	}
	if (loc)
		uselocale(old);
	fputs(buf, out);
}

// Prints one non-message value of field `f` stored at `v`.
static void tp_print_value(FILE *out, const ProtobufCFieldDescriptor *f,
			   const void *v)
{
	switch (f->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
		fprintf(out, "%" PRId32, *(const int32_t *)v);
		break;
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
		fprintf(out, "%" PRIu32, *(const uint32_t *)v);
		break;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
		fprintf(out, "%" PRId64, *(const int64_t *)v);
		break;
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
		fprintf(out, "%" PRIu64, *(const uint64_t *)v);
		break;
	case PROTOBUF_C_TYPE_FLOAT:
		tp_print_real(out, *(const float *)v, true);
		break;
	case PROTOBUF_C_TYPE_DOUBLE:
		tp_print_real(out, *(const double *)v, false);
		break;
	case PROTOBUF_C_TYPE_BOOL:
		fputs(*(const protobuf_c_boolean *)v ? "true" : "false", out);
		break;
	case PROTOBUF_C_TYPE_ENUM: {
		int e = *(const int *)v;
		const ProtobufCEnumValue *ev =
			protobuf_c_enum_descriptor_get_value(f->descriptor, e);
		if (ev)
			fputs(ev->name, out);
		else
			fprintf(out, "%d", e);
		break;
	}
	case PROTOBUF_C_TYPE_STRING: {
		const char *s = *(const char *const *)v;
		tp_print_quoted(out, (const uint8_t *)s, s ? strlen(s) : 0,
				true);
		break;
	}
	case PROTOBUF_C_TYPE_BYTES: {
		const ProtobufCBinaryData *bd = v;
		tp_print_quoted(out, bd->data, bd->len, false);
		break;
	}
	default:
		break;
	}
}

static void tp_print_fields(struct tp_printer *pr, const ProtobufCMessage *m,
			    unsigned depth);

static void tp_print_sub(struct tp_printer *pr, const char *name,
			 const ProtobufCMessage *sub, unsigned depth)
{
	tp_indent(pr->out, depth);
	fprintf(pr->out, "%s {\n", name);
	if (sub)
		tp_print_fields(pr, sub, depth + 1);
	tp_indent(pr->out, depth);
	fputs("}\n", pr->out);
}

// Prints bytes field `f` as a message when it has a payload type and the
// bytes decode as it and re-encode to exactly the same bytes (so nothing is
// lost). Returns true if printed.
static bool tp_print_payload(struct tp_printer *pr,
			     const ProtobufCFieldDescriptor *f,
			     const ProtobufCBinaryData *bd, unsigned depth)
{
	static const uint8_t empty[1];
	const ProtobufCMessageDescriptor *d = tp_payload_type(pr->opts, f);
	if (!d)
		return false;
	ProtobufCMessage *m = protobuf_c_message_unpack(
		d, NULL, bd->len, bd->len ? bd->data : empty);
	if (!m)
		return false; // not that type after all: print the bytes
	size_t n = protobuf_c_message_get_packed_size(m);
	bool same = n == bd->len;
	if (same && n) {
		uint8_t *tmp = malloc(n);
		if (!tmp)
			pr->rc = -ENOMEM;
		same = tmp && protobuf_c_message_pack(m, tmp) == n &&
		       memcmp(tmp, bd->data, n) == 0;
		free(tmp);
	}
	if (same)
		tp_print_sub(pr, f->name, m, depth);
	protobuf_c_message_free_unpacked(m, NULL);
	return same;
}

// Prints one element (value or sub-message) of field `f` stored at `v`.
static void tp_print_field(struct tp_printer *pr,
			   const ProtobufCFieldDescriptor *f, const void *v,
			   unsigned depth)
{
	if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
		tp_print_sub(pr, f->name, *(const ProtobufCMessage *const *)v,
			     depth);
		return;
	}
	if (f->type == PROTOBUF_C_TYPE_BYTES &&
	    tp_print_payload(pr, f, v, depth))
		return;
	tp_indent(pr->out, depth);
	fprintf(pr->out, "%s: ", f->name);
	tp_print_value(pr->out, f, v);
	fputc('\n', pr->out);
}

// Whether non-repeated field `f` (member at `v`) is set, the way
// protobuf_c_message_pack() decides whether to encode it.
static bool tp_present(const ProtobufCMessage *m,
		       const ProtobufCFieldDescriptor *f, const void *v)
{
	const void *q = (const char *)m + f->quantifier_offset;
	bool pointer = f->type == PROTOBUF_C_TYPE_STRING ||
		       f->type == PROTOBUF_C_TYPE_MESSAGE;
	const void *ptr = pointer ? *(const void *const *)v : NULL;
	if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
		if (*(const uint32_t *)q != f->id)
			return false;
		return !pointer || (ptr && ptr != f->default_value);
	}
	switch (f->label) {
	case PROTOBUF_C_LABEL_REQUIRED:
		return !pointer || ptr;
	case PROTOBUF_C_LABEL_OPTIONAL:
		if (pointer)
			return ptr && ptr != f->default_value;
		return *(const protobuf_c_boolean *)q;
	default: // proto3 without presence: set when not zero
		break;
	}
	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING:
		return ptr && *(const char *)ptr;
	case PROTOBUF_C_TYPE_MESSAGE:
		return ptr;
	case PROTOBUF_C_TYPE_BYTES:
		return ((const ProtobufCBinaryData *)v)->len != 0;
	case PROTOBUF_C_TYPE_FLOAT:
		return *(const float *)v != 0;
	case PROTOBUF_C_TYPE_DOUBLE:
		return *(const double *)v != 0;
	case PROTOBUF_C_TYPE_BOOL:
		return *(const protobuf_c_boolean *)v;
	default:
		return tp_elem_size(f->type) == 8 ? *(const uint64_t *)v != 0
						  : *(const uint32_t *)v != 0;
	}
}

// Prints an unknown field kept by protobuf-c as a comment line.
static void tp_print_unknown(FILE *out, const ProtobufCMessageUnknownField *u,
			     unsigned depth)
{
	uint64_t v = 0;
	size_t i = 0;
	tp_indent(out, depth);
	fprintf(out, "# unknown field %" PRIu32 ": ", u->tag);
	switch (u->wire_type) {
	case PROTOBUF_C_WIRE_TYPE_VARINT:
	case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED:
		// The varint value, or for length-delimited data its length prefix.
		for (unsigned shift = 0; i < u->len && shift < 64; shift += 7) {
			v |= (uint64_t)(u->data[i] & 0x7f) << shift;
			if (!(u->data[i++] & 0x80))
				break;
		}
		if (u->wire_type == PROTOBUF_C_WIRE_TYPE_VARINT)
			fprintf(out, "%" PRIu64, v);
		else
			tp_print_quoted(out, u->data + i, u->len - i, false);
		break;
	case PROTOBUF_C_WIRE_TYPE_32BIT:
	case PROTOBUF_C_WIRE_TYPE_64BIT:
		for (i = u->len; i > 0; i--)
			v = v << 8 | u->data[i - 1];
		fprintf(out, "0x%0*" PRIx64, (int)(u->len * 2), v);
		break;
	default:
		fprintf(out, "(wire type %d, %zu bytes)", (int)u->wire_type,
			u->len);
		break;
	}
	fputc('\n', out);
}

static void tp_print_fields(struct tp_printer *pr, const ProtobufCMessage *m,
			    unsigned depth)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const void *v = (const char *)m + f->offset;
		if (f->label != PROTOBUF_C_LABEL_REPEATED) {
			if (tp_present(m, f, v))
				tp_print_field(pr, f, v, depth);
			continue;
		}
		size_t n = *(const size_t *)((const char *)m +
					     f->quantifier_offset);
		const char *arr = *(const char *const *)v;
		for (size_t k = 0; arr && k < n; k++)
			tp_print_field(pr, f, arr + k * tp_elem_size(f->type),
				       depth);
	}
	for (unsigned i = 0; i < m->n_unknown_fields; i++)
		tp_print_unknown(pr->out, &m->unknown_fields[i], depth);
}

int spn_textproto_print_ex(const ProtobufCMessage *m,
			   const struct spn_textproto_opts *opts, FILE *out)
{
	struct tp_printer pr = {.out = out, .opts = opts, .rc = 0};
	if (!m || !out || !m->descriptor ||
	    m->descriptor->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
		return -EINVAL;
	tp_print_fields(&pr, m, 0);
	if (ferror(out))
		return -EIO;
	return pr.rc;
}

int spn_textproto_print(const ProtobufCMessage *m, FILE *out)
{
	return spn_textproto_print_ex(m, NULL, out);
}
