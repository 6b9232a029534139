// SPDX-License-Identifier: Apache-2.0
// Text-format protobuf parser: reads the tokens of textproto_lex.c and,
// steered by the protobuf-c descriptors, encodes them straight into wire
// bytes that protobuf-c unpacks.
//
// One pass, one token of lookahead. Each message being parsed writes its
// fields into its own growable buffer; a finished sub-message is appended to
// its parent as tag + length + bytes. Nothing outside [text, text + len) is
// ever read, and every error stops the parse with the first position found.
#include "sdk/textproto_int.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

// Wire types of the protobuf encoding.
enum { TP_WT_VARINT = 0, TP_WT_I64 = 1, TP_WT_LEN = 2, TP_WT_I32 = 5 };

static const char *const tp_type_names[] = {
	[PROTOBUF_C_TYPE_INT32] = "int32",
	[PROTOBUF_C_TYPE_SINT32] = "sint32",
	[PROTOBUF_C_TYPE_SFIXED32] = "sfixed32",
	[PROTOBUF_C_TYPE_INT64] = "int64",
	[PROTOBUF_C_TYPE_SINT64] = "sint64",
	[PROTOBUF_C_TYPE_SFIXED64] = "sfixed64",
	[PROTOBUF_C_TYPE_UINT32] = "uint32",
	[PROTOBUF_C_TYPE_FIXED32] = "fixed32",
	[PROTOBUF_C_TYPE_UINT64] = "uint64",
	[PROTOBUF_C_TYPE_FIXED64] = "fixed64",
	[PROTOBUF_C_TYPE_FLOAT] = "float",
	[PROTOBUF_C_TYPE_DOUBLE] = "double",
	[PROTOBUF_C_TYPE_BOOL] = "bool",
	[PROTOBUF_C_TYPE_ENUM] = "enum",
	[PROTOBUF_C_TYPE_STRING] = "string",
	[PROTOBUF_C_TYPE_BYTES] = "bytes",
	[PROTOBUF_C_TYPE_MESSAGE] = "message",
};

static const char *tp_type_name(ProtobufCType t)
{
	if ((size_t)t < sizeof(tp_type_names) / sizeof(tp_type_names[0]) &&
	    tp_type_names[t])
		return tp_type_names[t];
	return "?";
}

// ---- locale ---------------------------------------------------------------

static pthread_once_t tp_locale_once = PTHREAD_ONCE_INIT;
static locale_t tp_c_locale; // created once, lives as long as the process

static void tp_locale_init(void)
{
	tp_c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

locale_t tp_c_locale_get(void)
{
	pthread_once(&tp_locale_once, tp_locale_init);
	return tp_c_locale;
}

// ---- payload types of bytes fields ---------------------------------------

// True if `type` is `field` in CamelCase: the first letter and every letter
// after '_' upper-cased, the '_' dropped (track_event_config ->
// TrackEventConfig).
static bool tp_camel_equal(const char *field, const char *type)
{
	bool up = true;
	for (; *field; field++) {
		char c = *field;
		if (c == '_') {
			up = true;
			continue;
		}
		if (up && c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		up = false;
		if (*type++ != c)
			return false;
	}
	return *type == '\0';
}

const ProtobufCMessageDescriptor *tp_payload_type(
	const struct spn_textproto_opts *opts,
	const ProtobufCFieldDescriptor *f)
{
	if (!opts || f->type != PROTOBUF_C_TYPE_BYTES)
		return NULL;
	for (size_t i = 0; i < opts->n_payload_types; i++) {
		const ProtobufCMessageDescriptor *t = opts->payload_types[i];
		if (t && tp_camel_equal(f->name, t->short_name))
			return t;
	}
	return NULL;
}

// ---- output buffer --------------------------------------------------------

static int tp_put_varint(struct tp_buf *b, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;
	while (v >= 0x80) {
		tmp[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	tmp[n++] = (uint8_t)v;
	return tp_buf_put(b, tmp, n);
}

static int tp_put_fixed(struct tp_buf *b, uint64_t v, size_t n)
{
	uint8_t tmp[8];
	for (size_t i = 0; i < n; i++)
		tmp[i] = (uint8_t)(v >> (8 * i));
	return tp_buf_put(b, tmp, n);
}

static int tp_put_tag(struct tp_buf *b, uint32_t id, unsigned wt)
{
	return tp_put_varint(b, ((uint64_t)id << 3) | wt);
}

// Appends field `id` as a length-delimited record holding `src`.
static int tp_put_len(struct tp_buf *b, uint32_t id, const void *src, size_t n)
{
	int rc = tp_put_tag(b, id, TP_WT_LEN);
	if (!rc)
		rc = tp_put_varint(b, n);
	if (!rc)
		rc = tp_buf_put(b, src, n);
	return rc;
}

// ---- scalar values --------------------------------------------------------

static int tp_expected(struct tp_parser *p, const ProtobufCFieldDescriptor *f,
		       const char *what)
{
	char got[TP_QUOTE_MAX + 16];
	tp_describe(p, &p->tok, got, sizeof(got));
	return tp_fail(p, &p->tok, "field '%s' (%s) expects %s, got %s",
		       f->name, tp_type_name(f->type), what, got);
}

// Reads an optionally negative integer into *bits (two's complement). The
// value must lie in [-(max + 1), max] when `is_signed`, else in [0, max].
static int tp_read_int(struct tp_parser *p, const ProtobufCFieldDescriptor *f,
		       bool is_signed, uint64_t max, uint64_t *bits)
{
	struct tp_tok first = p->tok;
	bool neg = tp_is_sym(p, '-');
	int rc;
	if (neg && (rc = tp_next(p)))
		return rc;
	if (p->tok.kind != TP_INT)
		return tp_expected(p, f, "an integer");
	uint64_t v;
	const char *s = p->text + p->tok.start;
	size_t n = p->tok.end - p->tok.start;
	if (neg && !is_signed)
		return tp_fail(p, &first, "field '%s' (%s) cannot be negative",
			       f->name, tp_type_name(f->type));
	if (tp_token_u64(s, n, &v) || v > max + (uint64_t)neg)
		return tp_fail(
			p, &first,
			"integer %s%.*s out of range for field '%s' (%s)",
			neg ? "-" : "",
			(int)(n > TP_QUOTE_MAX ? TP_QUOTE_MAX : n), s, f->name,
			tp_type_name(f->type));
	*bits = neg ? 0 - v : v;
	return tp_next(p);
}

// Converts the current TP_INT/TP_FLOAT token with strtof/strtod in the C
// locale; *overflow is set when a finite literal does not fit.
static int tp_convert_real(struct tp_parser *p, bool single, double *out,
			   bool *overflow)
{
	const char *s = p->text + p->tok.start;
	size_t n = p->tok.end - p->tok.start;
	if (p->tok.kind == TP_INT && n > 1 && s[0] == '0' &&
	    (s[1] | 0x20) != 'x') {
		uint64_t v; // octal: strtod would read it as decimal
		if (tp_token_u64(s, n, &v))
			v = UINT64_MAX;
		*out = single ? (double)(float)v : (double)v;
		*overflow = false;
		return 0;
	}
	if (p->tok.kind == TP_FLOAT && (s[n - 1] | 0x20) == 'f')
		n--; // the f suffix
	char small[64], *copy = n < sizeof(small) ? small : malloc(n + 1);
	if (!copy)
		return tp_oom(p);
	memcpy(copy, s, n);
	copy[n] = '\0';
	locale_t loc = tp_c_locale_get();
	errno = 0;
	if (single)
		*out = loc ? strtof_l(copy, NULL, loc) : strtof(copy, NULL);
	else
		*out = loc ? strtod_l(copy, NULL, loc) : strtod(copy, NULL);
	*overflow = errno == ERANGE && isinf(*out);
	if (copy != small)
		free(copy);
	return 0;
}

// Reads a float or double value: ['-'] number | ['-'] inf | infinity | nan.
static int tp_read_real(struct tp_parser *p, const ProtobufCFieldDescriptor *f,
			double *out)
{
	struct tp_tok first = p->tok;
	bool neg = tp_is_sym(p, '-'), overflow = false;
	bool single = f->type == PROTOBUF_C_TYPE_FLOAT;
	int rc;
	if (neg && (rc = tp_next(p)))
		return rc;
	if (p->tok.kind == TP_INT || p->tok.kind == TP_FLOAT) {
		if ((rc = tp_convert_real(p, single, out, &overflow)))
			return rc;
	} else if (tp_is_word(p, "inf", true) ||
		   tp_is_word(p, "infinity", true)) {
		*out = INFINITY;
	} else if (tp_is_word(p, "nan", true)) {
		*out = NAN;
	} else {
		return tp_expected(p, f, "a number");
	}
	if (overflow)
		return tp_fail(p, &first,
			       "value out of range for field '%s' (%s)",
			       f->name, tp_type_name(f->type));
	if (neg)
		*out = -*out;
	return tp_next(p);
}

static int tp_read_bool(struct tp_parser *p, const ProtobufCFieldDescriptor *f,
			uint64_t *out)
{
	if (tp_is_word(p, "true", false) || tp_is_word(p, "True", false) ||
	    tp_is_word(p, "t", false)) {
		*out = 1;
	} else if (tp_is_word(p, "false", false) ||
		   tp_is_word(p, "False", false) || tp_is_word(p, "f", false)) {
		*out = 0;
	} else if (p->tok.kind == TP_INT) {
		if (tp_token_u64(p->text + p->tok.start,
				 p->tok.end - p->tok.start, out) ||
		    *out > 1)
			return tp_expected(p, f, "true, false, 1 or 0");
	} else {
		return tp_expected(p, f, "true, false, 1 or 0");
	}
	return tp_next(p);
}

// Looks up enum value name s[0..n) in `ed` (binary search on values_by_name).
static const ProtobufCEnumValue *tp_enum_by_name(
	const ProtobufCEnumDescriptor *ed, const char *s, size_t n)
{
	unsigned lo = 0, hi = ed->n_value_names;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		const char *name = ed->values_by_name[mid].name;
		int c = strncmp(s, name, n);
		if (c == 0 && name[n] != '\0')
			c = -1;
		if (c == 0)
			return &ed->values[ed->values_by_name[mid].index];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

static int tp_read_enum(struct tp_parser *p, const ProtobufCFieldDescriptor *f,
			uint64_t *bits)
{
	const ProtobufCEnumDescriptor *ed = f->descriptor;
	if (p->tok.kind == TP_INT || tp_is_sym(p, '-'))
		return tp_read_int(p, f, true, INT32_MAX, bits);
	if (p->tok.kind != TP_IDENT)
		return tp_expected(p, f, "an enum value name or number");
	size_t n = p->tok.end - p->tok.start;
	const ProtobufCEnumValue *ev =
		tp_enum_by_name(ed, p->text + p->tok.start, n);
	if (!ev)
		return tp_fail(p, &p->tok,
			       "unknown value '%.*s' for field '%s' (enum %s)",
			       (int)(n > TP_QUOTE_MAX ? TP_QUOTE_MAX : n),
			       p->text + p->tok.start, f->name, ed->name);
	*bits = (uint64_t)(int64_t)ev->value;
	return tp_next(p);
}

// Reads one or more adjacent string tokens into a string or bytes field.
static int tp_read_string(struct tp_parser *p,
			  const ProtobufCFieldDescriptor *f, struct tp_buf *b)
{
	struct tp_tok first = p->tok;
	struct tp_buf s = {0};
	int rc = 0;
	if (p->tok.kind != TP_STRING)
		return tp_expected(p, f, "a quoted string");
	while (!rc && p->tok.kind == TP_STRING) {
		rc = tp_unescape(p, &p->tok, &s);
		if (!rc)
			rc = tp_next(p);
	}
	if (!rc && f->type == PROTOBUF_C_TYPE_STRING && s.len &&
	    memchr(s.data, '\0', s.len))
		rc = tp_fail(p, &first,
			     "field '%s' (string) cannot hold a NUL byte; "
			     "use a bytes field",
			     f->name);
	if (!rc && tp_put_len(b, f->id, s.data, s.len))
		rc = tp_oom(p);
	free(s.data);
	return rc;
}

// Encodes a zigzag value for sint32/sint64.
static uint64_t tp_zigzag(int64_t v, bool wide)
{
	if (!wide) {
		uint32_t u = (uint32_t)(int32_t)v << 1;
		return v < 0 ? (uint32_t)~u : u;
	}
	uint64_t u = (uint64_t)v << 1;
	return v < 0 ? ~u : u;
}

// Parses one scalar value of field `f` and appends it, tag included.
static int tp_scalar(struct tp_parser *p, const ProtobufCFieldDescriptor *f,
		     struct tp_buf *b)
{
	uint64_t v = 0;
	double d = 0;
	int rc, wt = TP_WT_VARINT;
	switch (f->type) {
	case PROTOBUF_C_TYPE_STRING:
	case PROTOBUF_C_TYPE_BYTES:
		return tp_read_string(p, f, b);
	case PROTOBUF_C_TYPE_INT32:
		rc = tp_read_int(p, f, true, INT32_MAX, &v);
		break;
	case PROTOBUF_C_TYPE_SINT32:
		rc = tp_read_int(p, f, true, INT32_MAX, &v);
		v = tp_zigzag((int64_t)v, false);
		break;
	case PROTOBUF_C_TYPE_SFIXED32:
		rc = tp_read_int(p, f, true, INT32_MAX, &v);
		wt = TP_WT_I32;
		break;
	case PROTOBUF_C_TYPE_INT64:
		rc = tp_read_int(p, f, true, INT64_MAX, &v);
		break;
	case PROTOBUF_C_TYPE_SINT64:
		rc = tp_read_int(p, f, true, INT64_MAX, &v);
		v = tp_zigzag((int64_t)v, true);
		break;
	case PROTOBUF_C_TYPE_SFIXED64:
		rc = tp_read_int(p, f, true, INT64_MAX, &v);
		wt = TP_WT_I64;
		break;
	case PROTOBUF_C_TYPE_UINT32:
		rc = tp_read_int(p, f, false, UINT32_MAX, &v);
		break;
	case PROTOBUF_C_TYPE_FIXED32:
		rc = tp_read_int(p, f, false, UINT32_MAX, &v);
		wt = TP_WT_I32;
		break;
	case PROTOBUF_C_TYPE_UINT64:
		rc = tp_read_int(p, f, false, UINT64_MAX, &v);
		break;
	case PROTOBUF_C_TYPE_FIXED64:
		rc = tp_read_int(p, f, false, UINT64_MAX, &v);
		wt = TP_WT_I64;
		break;
	case PROTOBUF_C_TYPE_FLOAT: {
		rc = tp_read_real(p, f, &d);
		float fl =
			(float)d; // exact: d was read with strtof or is inf/nan
		uint32_t u;
		memcpy(&u, &fl, sizeof(u));
		v = u;
		wt = TP_WT_I32;
		break;
	}
	case PROTOBUF_C_TYPE_DOUBLE:
		rc = tp_read_real(p, f, &d);
		memcpy(&v, &d, sizeof(v));
		wt = TP_WT_I64;
		break;
	case PROTOBUF_C_TYPE_BOOL:
		rc = tp_read_bool(p, f, &v);
		break;
	case PROTOBUF_C_TYPE_ENUM:
		rc = tp_read_enum(p, f, &v);
		break;
	default:
		return tp_fail(p, &p->tok,
			       "field '%s' has a type this parser cannot "
			       "handle (%d)",
			       f->name, (int)f->type);
	}
	if (rc)
		return rc;
	rc = tp_put_tag(b, f->id, (unsigned)wt);
	if (!rc)
		rc = wt == TP_WT_VARINT
			     ? tp_put_varint(b, v)
			     : tp_put_fixed(b, v, wt == TP_WT_I32 ? 4 : 8);
	return rc ? tp_oom(p) : 0;
}

// ---- messages -------------------------------------------------------------

static int tp_parse_message(struct tp_parser *p,
			    const ProtobufCMessageDescriptor *d,
			    struct tp_buf *b, char close,
			    const struct tp_tok *open, const char *name);

// Looks up field name s[0..n) in `d` (binary search on fields_sorted_by_name).
static const ProtobufCFieldDescriptor *tp_field_by_name(
	const ProtobufCMessageDescriptor *d, const char *s, size_t n)
{
	unsigned lo = 0, hi = d->n_fields;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		const ProtobufCFieldDescriptor *f =
			&d->fields[d->fields_sorted_by_name[mid]];
		int c = strncmp(s, f->name, n);
		if (c == 0 && f->name[n] != '\0')
			c = -1;
		if (c == 0)
			return f;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

// Parses `{ ... }` or `< ... >` (the current token opens it) as a message of
// type `d` and appends it as field `f`.
static int tp_submessage(struct tp_parser *p, const ProtobufCFieldDescriptor *f,
			 const ProtobufCMessageDescriptor *d, struct tp_buf *b)
{
	struct tp_tok open = p->tok;
	char close = tp_is_sym(p, '{') ? '}' : '>';
	if (p->depth >= SPN_TEXTPROTO_MAX_DEPTH)
		return tp_fail(p, &open,
			       "messages nested deeper than %d levels",
			       SPN_TEXTPROTO_MAX_DEPTH);
	int rc = tp_next(p);
	if (rc)
		return rc;
	struct tp_buf sub = {0};
	p->depth++;
	rc = tp_parse_message(p, d, &sub, close, &open, f->name);
	p->depth--;
	if (!rc && tp_put_len(b, f->id, sub.data, sub.len))
		rc = tp_oom(p);
	free(sub.data);
	return rc;
}

// Parses one value of field `f`: a scalar, or a message in braces (also for
// a bytes field with a payload type).
static int tp_element(struct tp_parser *p, const ProtobufCFieldDescriptor *f,
		      struct tp_buf *b)
{
	bool opens = tp_is_sym(p, '{') || tp_is_sym(p, '<');
	if (opens && f->type == PROTOBUF_C_TYPE_MESSAGE)
		return tp_submessage(p, f, f->descriptor, b);
	if (opens && f->type == PROTOBUF_C_TYPE_BYTES) {
		const ProtobufCMessageDescriptor *d =
			tp_payload_type(p->opts, f);
		if (d)
			return tp_submessage(p, f, d, b);
		return tp_fail(p, &p->tok,
			       "field '%s' is bytes and no message type is "
			       "known for it; give its value as a string",
			       f->name);
	}
	if (f->type != PROTOBUF_C_TYPE_MESSAGE)
		return tp_scalar(p, f, b);
	char got[TP_QUOTE_MAX + 16];
	tp_describe(p, &p->tok, got, sizeof(got));
	return tp_fail(p, &p->tok,
		       "expected '{' or '<' to open message field '%s', "
		       "got %s",
		       f->name, got);
}

// Parses `[ elem, elem, ... ]` (the current token is '[') for field `f`.
static int tp_list(struct tp_parser *p, const ProtobufCFieldDescriptor *f,
		   struct tp_buf *b)
{
	struct tp_tok open = p->tok;
	if (f->label != PROTOBUF_C_LABEL_REPEATED)
		return tp_fail(p, &open,
			       "field '%s' is not repeated; the list syntax "
			       "'[...]' needs a repeated field",
			       f->name);
	int rc = tp_next(p);
	if (!rc && tp_is_sym(p, ']'))
		return tp_next(p);
	while (!rc) {
		if ((rc = tp_element(p, f, b)))
			break;
		if (tp_is_sym(p, ',')) {
			rc = tp_next(p);
			continue;
		}
		if (tp_is_sym(p, ']'))
			return tp_next(p);
		char got[TP_QUOTE_MAX + 16];
		tp_describe(p, &p->tok, got, sizeof(got));
		rc = tp_fail(p, &p->tok,
			     "expected ',' or ']' in the list of field '%s' "
			     "opened at %zu:%zu, got %s",
			     f->name, open.line, open.col, got);
	}
	return rc;
}

// Rejects a second value for a non-repeated field or a second oneof member.
static int tp_check_once(struct tp_parser *p,
			 const ProtobufCMessageDescriptor *d,
			 const ProtobufCFieldDescriptor *f, const uint8_t *seen,
			 const struct tp_tok *name)
{
	if (f->label == PROTOBUF_C_LABEL_REPEATED)
		return 0;
	if (seen[f - d->fields])
		return tp_fail(p, name,
			       "field '%s' is set twice but is not repeated",
			       f->name);
	if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
		return 0;
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *g = &d->fields[i];
		if (seen[i] && (g->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    g->quantifier_offset == f->quantifier_offset)
			return tp_fail(p, name,
				       "fields '%s' and '%s' belong to the "
				       "same oneof; "
				       "only one may be set",
				       g->name, f->name);
	}
	return 0;
}

// Parses one `name: value`, `name { ... }` or `name: [ ... ]` entry.
static int tp_field(struct tp_parser *p, const ProtobufCMessageDescriptor *d,
		    struct tp_buf *b, uint8_t *seen)
{
	struct tp_tok name = p->tok;
	char got[TP_QUOTE_MAX + 16];
	size_t n = name.end - name.start;
	if (tp_is_sym(p, '['))
		return tp_fail(p, &name,
			       "extension and Any fields ('[...]') are not "
			       "supported");
	if (name.kind != TP_IDENT) {
		tp_describe(p, &name, got, sizeof(got));
		return tp_fail(p, &name, "expected a field name, got %s", got);
	}
	const ProtobufCFieldDescriptor *f =
		tp_field_by_name(d, p->text + name.start, n);
	if (!f)
		return tp_fail(p, &name, "unknown field '%.*s' in message %s",
			       (int)(n > TP_QUOTE_MAX ? TP_QUOTE_MAX : n),
			       p->text + name.start, d->name);
	int rc = tp_check_once(p, d, f, seen, &name);
	if (rc || (rc = tp_next(p)))
		return rc;
	seen[f - d->fields] = 1;
	bool colon = tp_is_sym(p, ':');
	if (colon && (rc = tp_next(p)))
		return rc;
	if (!colon && f->type != PROTOBUF_C_TYPE_MESSAGE &&
	    !tp_is_sym(p, '{') && !tp_is_sym(p, '<')) {
		tp_describe(p, &p->tok, got, sizeof(got));
		return tp_fail(p, &p->tok,
			       "expected ':' after field '%s', got %s", f->name,
			       got);
	}
	rc = tp_is_sym(p, '[') ? tp_list(p, f, b) : tp_element(p, f, b);
	if (!rc && (tp_is_sym(p, ',') || tp_is_sym(p, ';')))
		rc = tp_next(p);
	return rc;
}

static int tp_check_required(struct tp_parser *p,
			     const ProtobufCMessageDescriptor *d,
			     const uint8_t *seen)
{
	for (unsigned i = 0; i < d->n_fields; i++)
		if (d->fields[i].label == PROTOBUF_C_LABEL_REQUIRED && !seen[i])
			return tp_fail(
				p, &p->tok,
				"missing required field '%s' in message %s",
				d->fields[i].name, d->name);
	return 0;
}

// Parses fields until `close` ('}' or '>'), or the end of input when `close`
// is 0 (top level), and consumes the closing token. `open`/`name` say where
// the message began, for errors.
static int tp_parse_message(struct tp_parser *p,
			    const ProtobufCMessageDescriptor *d,
			    struct tp_buf *b, char close,
			    const struct tp_tok *open, const char *name)
{
	uint8_t *seen = calloc(d->n_fields ? d->n_fields : 1, 1);
	int rc = 0;
	if (!seen)
		return tp_oom(p);
	for (;;) {
		if (p->tok.kind == TP_EOF) {
			if (close)
				rc = tp_fail(p, &p->tok,
					     "unexpected end of input: missing "
					     "'%c' to "
					     "close '%s' opened at %zu:%zu",
					     close, name, open->line,
					     open->col);
			break;
		}
		if (tp_is_sym(p, '}') || tp_is_sym(p, '>')) {
			char c = p->text[p->tok.start];
			if (c == close)
				break;
			if (close)
				rc = tp_fail(
					p, &p->tok,
					"expected '%c' to close '%s' opened at "
					"%zu:%zu, got '%c'",
					close, name, open->line, open->col, c);
			else
				rc = tp_fail(
					p, &p->tok,
					"unexpected '%c': no message is open",
					c);
			break;
		}
		if ((rc = tp_field(p, d, b, seen)))
			break;
	}
	if (!rc)
		rc = tp_check_required(p, d, seen);
	if (!rc && close)
		rc = tp_next(p);
	free(seen);
	return rc;
}

// ---- API ------------------------------------------------------------------

int spn_textproto_parse_to_wire(const ProtobufCMessageDescriptor *desc,
				const struct spn_textproto_opts *opts,
				const char *text, size_t len, uint8_t **buf,
				size_t *buf_len, char *err, size_t errlen)
{
	struct tp_parser p = {.text = text,
			      .len = len,
			      .line = 1,
			      .opts = opts,
			      .err = err,
			      .errlen = err ? errlen : 0};
	struct tp_buf b = {0};
	if (p.errlen)
		err[0] = '\0';
	if (!desc || desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC ||
	    (!text && len) || !buf || !buf_len) {
		if (p.errlen)
			snprintf(err, p.errlen, "invalid arguments");
		return -EINVAL;
	}
	int rc = tp_next(&p);
	if (!rc)
		rc = tp_parse_message(&p, desc, &b, 0, NULL, NULL);
	if (rc) {
		free(b.data);
		return rc;
	}
	*buf = b.data;
	*buf_len = b.len;
	return 0;
}

int spn_textproto_parse_ex(const ProtobufCMessageDescriptor *desc,
			   const struct spn_textproto_opts *opts,
			   const char *text, size_t len, ProtobufCMessage **out,
			   char *err, size_t errlen)
{
	uint8_t *buf = NULL;
	size_t n = 0;
	if (!out) {
		if (err && errlen)
			snprintf(err, errlen, "invalid arguments");
		return -EINVAL;
	}
	*out = NULL;
	int rc = spn_textproto_parse_to_wire(desc, opts, text, len, &buf, &n,
					     err, errlen);
	if (rc)
		return rc;
	static const uint8_t empty[1];
	*out = protobuf_c_message_unpack(desc, NULL, n, buf ? buf : empty);
	free(buf);
	if (!*out) {
		// The bytes were built from the descriptor, so only allocation fails.
		if (err && errlen)
			snprintf(err, errlen, "out of memory decoding %s",
				 desc->name);
		return -ENOMEM;
	}
	return 0;
}

int spn_textproto_parse(const ProtobufCMessageDescriptor *desc,
			const char *text, size_t len, ProtobufCMessage **out,
			char *err, size_t errlen)
{
	return spn_textproto_parse_ex(desc, NULL, text, len, out, err, errlen);
}
