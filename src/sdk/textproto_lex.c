// SPDX-License-Identifier: Apache-2.0
// Lexer of the text-format parser: tokens with line:column, number syntax,
// string literals and their escapes, and error reporting.
#include "sdk/textproto_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

// ---- errors ---------------------------------------------------------------

int tp_fail_at(struct tp_parser *p, size_t line, size_t col, const char *fmt,
	       ...)
{
	if (p->failed)
		return -EINVAL;
	p->failed = true;
	if (p->errlen == 0)
		return -EINVAL;
	int n = snprintf(p->err, p->errlen, "%zu:%zu: ", line, col);
	if (n >= 0 && (size_t)n < p->errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

int tp_oom(struct tp_parser *p)
{
	if (!p->failed && p->errlen > 0)
		snprintf(p->err, p->errlen, "out of memory");
	p->failed = true;
	return -ENOMEM;
}

// Describes token `t` for "got ..." in error messages.
void tp_describe(const struct tp_parser *p, const struct tp_tok *t, char *out,
		 size_t outlen)
{
	size_t n = t->end - t->start;
	switch (t->kind) {
	case TP_EOF:
		snprintf(out, outlen, "end of input");
		break;
	case TP_STRING:
		snprintf(out, outlen, "a string");
		break;
	default:
		snprintf(out, outlen, "'%.*s'%s",
			 (int)(n > TP_QUOTE_MAX ? TP_QUOTE_MAX : n),
			 p->text + t->start, n > TP_QUOTE_MAX ? "..." : "");
		break;
	}
}

// ---- output buffer --------------------------------------------------------

int tp_buf_put(struct tp_buf *b, const void *src, size_t n)
{
	if (n > SIZE_MAX - b->len)
		return -ENOMEM;
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->len + n)
			cap = cap > SIZE_MAX / 2 ? b->len + n : cap * 2;
		uint8_t *d = realloc(b->data, cap);
		if (!d)
			return -ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	if (n)
		memcpy(b->data + b->len, src, n);
	b->len += n;
	return 0;
}

// ---- lexer ----------------------------------------------------------------

static bool tp_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool tp_is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int tp_hex_value(char c)
{
	if (tp_is_digit(c))
		return c - '0';
	if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
		return (c | 0x20) - 'a' + 10;
	return -1;
}

static void tp_skip_space(struct tp_parser *p)
{
	while (p->pos < p->len) {
		char c = p->text[p->pos];
		if (c == '\n') {
			p->pos++;
			p->line++;
			p->line_start = p->pos;
		} else if (c == ' ' || c == '\t' || c == '\r' || c == '\v' ||
			   c == '\f') {
			p->pos++;
		} else if (c == '#') {
			while (p->pos < p->len && p->text[p->pos] != '\n')
				p->pos++;
		} else {
			break;
		}
	}
}

// Classifies the number token s[0..n): TP_INT, TP_FLOAT, or -1 if malformed.
static int tp_classify_number(const char *s, size_t n)
{
	size_t i = 0, mant = 0;
	bool flt = false;
	if (n >= 2 && s[0] == '0' && (s[1] | 0x20) == 'x') {
		for (i = 2; i < n; i++)
			if (tp_hex_value(s[i]) < 0)
				return -1;
		return n > 2 ? TP_INT : -1;
	}
	for (; i < n && tp_is_digit(s[i]); i++)
		mant++;
	if (i < n && s[i] == '.') {
		flt = true;
		for (i++; i < n && tp_is_digit(s[i]); i++)
			mant++;
	}
	if (mant == 0)
		return -1;
	if (i < n && (s[i] | 0x20) == 'e') {
		size_t exp = 0;
		flt = true;
		if (++i < n && (s[i] == '+' || s[i] == '-'))
			i++;
		for (; i < n && tp_is_digit(s[i]); i++)
			exp++;
		if (exp == 0)
			return -1;
	}
	if (i < n && (s[i] | 0x20) == 'f') {
		flt = true;
		i++;
	}
	if (i != n)
		return -1;
	if (!flt && n > 1 && s[0] == '0')
		for (i = 1; i < n; i++)
			if (s[i] > '7')
				return -1;
	return flt ? TP_FLOAT : TP_INT;
}

static int tp_lex_number(struct tp_parser *p)
{
	struct tp_tok *t = &p->tok;
	const char *s = p->text;
	size_t i = p->pos;
	bool hex = s[i] == '0' && i + 1 < p->len && (s[i + 1] | 0x20) == 'x';
	while (i < p->len) {
		char c = s[i];
		if (tp_is_alpha(c) || tp_is_digit(c) || c == '.')
			i++;
		else if ((c == '+' || c == '-') && !hex &&
			 (s[i - 1] | 0x20) == 'e')
			i++;
		else
			break;
	}
	p->pos = t->end = i;
	int kind = tp_classify_number(s + t->start, i - t->start);
	if (kind < 0) {
		size_t n = i - t->start;
		return tp_fail(p, t, "invalid number '%.*s'%s",
			       (int)(n > TP_QUOTE_MAX ? TP_QUOTE_MAX : n),
			       s + t->start, n > TP_QUOTE_MAX ? "..." : "");
	}
	t->kind = (enum tp_kind)kind;
	return 0;
}

// Finds the end of a quoted string; escapes are checked when it is decoded.
static int tp_lex_string(struct tp_parser *p)
{
	struct tp_tok *t = &p->tok;
	char quote = p->text[p->pos];
	size_t i = p->pos + 1;
	for (;;) {
		if (i >= p->len)
			return tp_fail(p, t, "unterminated string");
		char c = p->text[i];
		if (c == quote)
			break;
		if (c == '\n')
			return tp_fail(p, t,
				       "unterminated string (strings cannot "
				       "span lines)");
		i += (c == '\\' && i + 1 < p->len && p->text[i + 1] != '\n')
			     ? 2
			     : 1;
	}
	p->pos = t->end = i + 1;
	t->kind = TP_STRING;
	return 0;
}

// Reads the next token into p->tok.
int tp_next(struct tp_parser *p)
{
	struct tp_tok *t = &p->tok;
	tp_skip_space(p);
	t->start = t->end = p->pos;
	t->line = p->line;
	t->col = p->pos - p->line_start + 1;
	if (p->pos >= p->len) {
		t->kind = TP_EOF;
		return 0;
	}
	char c = p->text[p->pos];
	if (tp_is_alpha(c)) {
		while (p->pos < p->len && (tp_is_alpha(p->text[p->pos]) ||
					   tp_is_digit(p->text[p->pos])))
			p->pos++;
		t->kind = TP_IDENT;
		t->end = p->pos;
		return 0;
	}
	if (tp_is_digit(c) || (c == '.' && p->pos + 1 < p->len &&
			       tp_is_digit(p->text[p->pos + 1])))
		return tp_lex_number(p);
	if (c == '"' || c == '\'')
		return tp_lex_string(p);
	if (c != '\0' && strchr("{}<>[]:,;-", c)) {
		t->kind = TP_SYM;
		t->end = ++p->pos;
		return 0;
	}
	if (c > ' ' && c < 0x7f)
		return tp_fail(p, t, "unexpected character '%c'", c);
	return tp_fail(p, t, "unexpected byte 0x%02x", (unsigned char)c);
}

bool tp_is_sym(const struct tp_parser *p, char c)
{
	return p->tok.kind == TP_SYM && p->text[p->tok.start] == c;
}

// True if the current token is the identifier `word`, compared as given or,
// with `nocase`, ignoring ASCII case.
bool tp_is_word(const struct tp_parser *p, const char *word, bool nocase)
{
	size_t n = p->tok.end - p->tok.start;
	if (p->tok.kind != TP_IDENT || strlen(word) != n)
		return false;
	const char *s = p->text + p->tok.start;
	return nocase ? strncasecmp(s, word, n) == 0 : memcmp(s, word, n) == 0;
}

// ---- string literals ------------------------------------------------------

static int tp_put_utf8(struct tp_buf *b, uint32_t cp)
{
	uint8_t u[4];
	size_t n;
	if (cp < 0x80) {
		u[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (uint8_t)(0xc0 | (cp >> 6));
		u[1] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (uint8_t)(0xe0 | (cp >> 12));
		u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		u[0] = (uint8_t)(0xf0 | (cp >> 18));
		u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 4;
	}
	return tp_buf_put(b, u, n);
}

// Reads exactly `n` hex digits at s[*i], below `end`; -1 if there are fewer.
static int64_t tp_hex_digits(const char *s, size_t *i, size_t end, unsigned n)
{
	int64_t v = 0;
	for (unsigned k = 0; k < n; k++, (*i)++) {
		int h = *i < end ? tp_hex_value(s[*i]) : -1;
		if (h < 0)
			return -1;
		v = v * 16 + h;
	}
	return v;
}

// Decodes \u / \U at s[i - 1] ('u' or 'U' already read, *i after it) to a
// code point; joins a \uD8xx\uDCxx surrogate pair. -1 when invalid.
static int64_t tp_unicode_escape(const char *s, size_t *i, size_t end, char u)
{
	int64_t cp = tp_hex_digits(s, i, end, u == 'u' ? 4 : 8);
	if (cp < 0 || cp > 0x10ffff || (cp >= 0xdc00 && cp <= 0xdfff))
		return -1;
	if (cp >= 0xd800 && cp <= 0xdbff) {
		size_t j = *i + 2;
		if (*i + 1 >= end || s[*i] != '\\' || s[*i + 1] != 'u')
			return -1;
		int64_t lo = tp_hex_digits(s, &j, end, 4);
		if (lo < 0xdc00 || lo > 0xdfff)
			return -1;
		*i = j;
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
	}
	return cp;
}

// Decodes one escape; s[*i] is the character after the backslash.
static int tp_escape(struct tp_parser *p, const struct tp_tok *t, size_t *i,
		     size_t end, struct tp_buf *out)
{
	const char *s = p->text;
	size_t col = t->col + (*i - 1 - t->start);
	char c = s[(*i)++];
	static const char simple_from[] = "abfnrtv\\'\"?";
	static const char simple_to[] = "\a\b\f\n\r\t\v\\'\"?";
	const char *hit = c ? strchr(simple_from, c) : NULL;
	if (hit)
		return tp_buf_put(out, &simple_to[hit - simple_from], 1);
	if (c >= '0' && c <= '7') {
		unsigned v = (unsigned)(c - '0');
		for (int k = 0;
		     k < 2 && *i < end && s[*i] >= '0' && s[*i] <= '7'; k++)
			v = v * 8 + (unsigned)(s[(*i)++] - '0');
		if (v > 0xff)
			return tp_fail_at(
				p, t->line, col,
				"octal escape out of range (max \\377)");
		uint8_t byte = (uint8_t)v;
		return tp_buf_put(out, &byte, 1);
	}
	if (c == 'x' || c == 'X') {
		int v = -1, h;
		for (int k = 0;
		     k < 2 && *i < end && (h = tp_hex_value(s[*i])) >= 0;
		     k++, (*i)++)
			v = (v < 0 ? 0 : v * 16) + h;
		if (v < 0)
			return tp_fail_at(p, t->line, col,
					  "'\\x' needs one or two hex digits");
		uint8_t byte = (uint8_t)v;
		return tp_buf_put(out, &byte, 1);
	}
	if (c == 'u' || c == 'U') {
		int64_t cp = tp_unicode_escape(s, i, end, c);
		if (cp < 0)
			return tp_fail_at(
				p, t->line, col,
				"invalid Unicode escape (needs %s hex digits, "
				"a "
				"code "
				"point <= 10FFFF and no lone surrogate)",
				c == 'u' ? "4" : "8");
		return tp_put_utf8(out, (uint32_t)cp);
	}
	if (c > ' ' && c < 0x7f)
		return tp_fail_at(p, t->line, col,
				  "unknown escape sequence '\\%c'", c);
	return tp_fail_at(p, t->line, col, "unknown escape sequence");
}

// Appends the decoded contents of string token `t` to `out`.
int tp_unescape(struct tp_parser *p, const struct tp_tok *t, struct tp_buf *out)
{
	const char *s = p->text;
	size_t i = t->start + 1, end = t->end - 1;
	while (i < end) {
		size_t run = i;
		while (i < end && s[i] != '\\')
			i++;
		int rc = tp_buf_put(out, s + run, i - run);
		if (rc)
			return rc == -ENOMEM ? tp_oom(p) : rc;
		if (i < end) {
			i++; // the lexer guarantees a character follows the backslash
			rc = tp_escape(p, t, &i, end, out);
			if (rc)
				return rc == -ENOMEM ? tp_oom(p) : rc;
		}
	}
	return 0;
}

// Converts integer token s[0..n) (already classified TP_INT) to *v.
int tp_token_u64(const char *s, size_t n, uint64_t *v)
{
	unsigned base = 10;
	size_t i = 0;
	if (n >= 2 && s[0] == '0' && (s[1] | 0x20) == 'x') {
		base = 16;
		i = 2;
	} else if (n > 1 && s[0] == '0') {
		base = 8;
	}
	uint64_t acc = 0;
	for (; i < n; i++) {
		unsigned d = (unsigned)tp_hex_value(s[i]);
		if (acc > (UINT64_MAX - d) / base)
			return -ERANGE;
		acc = acc * base + d;
	}
	*v = acc;
	return 0;
}
