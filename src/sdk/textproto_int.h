// SPDX-License-Identifier: Apache-2.0
// Internals shared by the text-format lexer, parser and printer
// (src/sdk/textproto*.c only; `tp_` is the module's internal prefix).
#ifndef SPN_SDK_TEXTPROTO_INT_H
#define SPN_SDK_TEXTPROTO_INT_H

#include <locale.h>
#include <stdbool.h>

#include "sdk/textproto.h"

// Nothing here is exported from libspindle.
#pragma GCC visibility push(hidden)

// Longest piece of a token quoted in an error message.
#define TP_QUOTE_MAX 40

enum tp_kind {
	TP_EOF,    // end of input
	TP_IDENT,  // [A-Za-z_][A-Za-z0-9_]*
	TP_INT,    // unsigned integer: decimal, 0x hex or 0-prefixed octal
	TP_FLOAT,  // unsigned number with '.', an exponent or an f suffix
	TP_STRING, // one quoted string, quotes included (escapes not decoded)
	TP_SYM,    // one of { } < > [ ] : , ; -
};

struct tp_tok {
	enum tp_kind kind; // token class
	size_t start;      // offset of its first byte in the text
	size_t end;        // offset one past its last byte
	size_t line;       // 1-based line of its first byte
	size_t col;        // 1-based byte column of its first byte
};

struct tp_buf {
	uint8_t *data; // malloc()ed bytes, NULL while nothing was allocated
	size_t len;    // bytes used
	size_t cap;    // bytes allocated
};

struct tp_parser {
	const char *text;  // the input; not NUL-terminated
	size_t len;        // its length
	size_t pos;        // next byte the lexer looks at
	size_t line;       // line of text[pos], 1-based
	size_t line_start; // offset of the first byte of that line
	struct tp_tok tok; // the current (lookahead) token
	unsigned depth;    // nesting of the message being parsed; top level 0
	const struct spn_textproto_opts *opts; // payload types; may be NULL
	char *err;     // the caller's error buffer (may be NULL)
	size_t errlen; // its size
	bool failed;   // an error was reported; later ones are dropped
};

// Records the first error as "line:col: message" in p->err; returns -EINVAL.
__attribute__((format(printf, 4, 5))) int tp_fail_at(struct tp_parser *p,
						     size_t line, size_t col,
						     const char *fmt, ...);

// tp_fail_at() at the position of token `t`.
#define tp_fail(p, t, ...) tp_fail_at((p), (t)->line, (t)->col, __VA_ARGS__)

// Records "out of memory"; returns -ENOMEM.
int tp_oom(struct tp_parser *p);

// Describes token `t` for "got ..." in error messages ("end of input",
// "a string", or the token quoted).
void tp_describe(const struct tp_parser *p, const struct tp_tok *t, char *out,
		 size_t outlen);

// Appends n bytes to `b`; 0 or -ENOMEM.
int tp_buf_put(struct tp_buf *b, const void *src, size_t n);

// Reads the next token into p->tok; 0, or -EINVAL on a lexical error.
int tp_next(struct tp_parser *p);

// True if the current token is the symbol `c`.
bool tp_is_sym(const struct tp_parser *p, char c);

// True if the current token is the identifier `word` (ignoring ASCII case
// with `nocase`).
bool tp_is_word(const struct tp_parser *p, const char *word, bool nocase);

// Appends the decoded contents of string token `t` to `out`; 0, -EINVAL on
// a bad escape, -ENOMEM.
int tp_unescape(struct tp_parser *p, const struct tp_tok *t,
		struct tp_buf *out);

// Converts integer token s[0..n) (classified TP_INT) to *v; -ERANGE if it
// does not fit 64 bits.
int tp_token_u64(const char *s, size_t n, uint64_t *v);

// The payload type of bytes field `f` in `opts` (see struct
// spn_textproto_opts), or NULL.
const ProtobufCMessageDescriptor *tp_payload_type(
	const struct spn_textproto_opts *opts,
	const ProtobufCFieldDescriptor *f);

// The "C" locale, so numbers read and print with a '.' whatever setlocale()
// the application made; (locale_t)0 if it could not be created (then the
// current locale is used).
locale_t tp_c_locale_get(void);

#pragma GCC visibility pop

#endif // SPN_SDK_TEXTPROTO_INT_H
