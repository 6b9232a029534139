// SPDX-License-Identifier: Apache-2.0
// Tests of the text-format parser and printer (src/sdk/textproto*.c) on
// test-only protos covering every field type, and on real TraceConfigs.
#include <errno.h>
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "sdk/textproto.h"
#include "sdk/trace_config_text.h"
#include "textproto_test.pb-c.h"
#include "textproto_test3.pb-c.h"
#include "trace_packet.pb-c.h"

#define ALL_DESC (&spn__tptest__all__descriptor)

// ---- helpers --------------------------------------------------------------

static ProtobufCMessage *parse_opts(const ProtobufCMessageDescriptor *d,
				    const struct spn_textproto_opts *opts,
				    const char *text)
{
	char err[512] = "unset";
	ProtobufCMessage *m = NULL;
	int rc = spn_textproto_parse_ex(d, opts, text, strlen(text), &m, err,
					sizeof(err));
	if (rc != 0)
		fail_msg("parse failed (%d): %s\n--- input:\n%s", rc, err,
			 text);
	assert_non_null(m);
	assert_string_equal(err, "");
	return m;
}

static ProtobufCMessage *parse(const ProtobufCMessageDescriptor *d,
			       const char *text)
{
	return parse_opts(d, NULL, text);
}

static Spn__Tptest__All *parse_all(const char *text)
{
	return (Spn__Tptest__All *)parse(ALL_DESC, text);
}

static void free_msg(void *m)
{
	protobuf_c_message_free_unpacked(m, NULL);
}

// Parses `text` expecting failure with exactly the message `want`.
static void expect_error_opts(const ProtobufCMessageDescriptor *d,
			      const struct spn_textproto_opts *opts,
			      const char *text, const char *want)
{
	char err[512];
	ProtobufCMessage *m = (ProtobufCMessage *)1;
	int rc = spn_textproto_parse_ex(d, opts, text, strlen(text), &m, err,
					sizeof(err));
	if (rc != -EINVAL || strcmp(err, want) != 0)
		fail_msg("input:\n%s\nwant -EINVAL \"%s\"\ngot  %d \"%s\"",
			 text, want, rc, err);
	assert_null(m);
}

static void expect_error(const ProtobufCMessageDescriptor *d, const char *text,
			 const char *want)
{
	expect_error_opts(d, NULL, text, want);
}

// Prints `m` to a string (caller frees).
static char *print_opts(const ProtobufCMessage *m,
			const struct spn_textproto_opts *opts)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);
	assert_non_null(f);
	assert_int_equal(spn_textproto_print_ex(m, opts, f), 0);
	assert_int_equal(fclose(f), 0);
	return buf;
}

static char *print(const ProtobufCMessage *m)
{
	return print_opts(m, NULL);
}

// protobuf-c's canonical encoding of `m` (caller frees), length in *n.
static uint8_t *pack(const ProtobufCMessage *m, size_t *n)
{
	*n = protobuf_c_message_get_packed_size(m);
	uint8_t *b = malloc(*n ? *n : 1);
	assert_non_null(b);
	assert_int_equal(protobuf_c_message_pack(m, b), *n);
	return b;
}

// print(m) parses back to a message with the same encoding, and printing
// that gives the same text.
static void check_round_trip(const ProtobufCMessage *m,
			     const struct spn_textproto_opts *opts)
{
	char *text = print_opts(m, opts);
	ProtobufCMessage *back = parse_opts(m->descriptor, opts, text);
	size_t n1, n2;
	uint8_t *b1 = pack(m, &n1), *b2 = pack(back, &n2);
	if (n1 != n2 || memcmp(b1, b2, n1) != 0)
		fail_msg("round trip changed the message; text:\n%s", text);
	char *text2 = print_opts(back, opts);
	assert_string_equal(text, text2);
	free(text2);
	free(b1);
	free(b2);
	free_msg(back);
	free(text);
}

// ---- values of every type -------------------------------------------------

static void test_scalars(void **state)
{
	(void)state;
	Spn__Tptest__All *m = parse_all("f_int32: -2147483648\n"
					"f_int64: 9223372036854775807\n"
					"f_uint32: 0xFFFFFFFF\n"
					"f_uint64: 18446744073709551615\n"
					"f_sint32: -5\n"
					"f_sint64: -9223372036854775808\n"
					"f_fixed32: 017\n"
					"f_fixed64: 0x10\n"
					"f_sfixed32: -1\n"
					"f_sfixed64: - 42\n"
					"f_float: 1.5f\n"
					"f_double: -2.5e-3\n"
					"f_bool: t\n"
					"f_string: 'it' \"'s\"\n"
					"f_bytes: \"\\x00\\xff\\001\"\n"
					"f_color: BLUE\n"
					"f_mode: 2\n"
					"f_inner { a: 1 s: \"in\" }\n"
					"big_number: 7\n");
	assert_true(m->has_f_int32);
	assert_int_equal(m->f_int32, INT32_MIN);
	assert_true(m->f_int64 == INT64_MAX);
	assert_int_equal(m->f_uint32, UINT32_MAX);
	assert_true(m->f_uint64 == UINT64_MAX);
	assert_int_equal(m->f_sint32, -5);
	assert_true(m->f_sint64 == INT64_MIN);
	assert_int_equal(m->f_fixed32, 15);
	assert_int_equal(m->f_fixed64, 16);
	assert_int_equal(m->f_sfixed32, -1);
	assert_int_equal(m->f_sfixed64, -42);
	assert_true(m->has_f_float && m->f_float == 1.5f);
	assert_true(m->has_f_double && m->f_double == -2.5e-3);
	assert_true(m->has_f_bool && m->f_bool);
	assert_string_equal(m->f_string, "it's");
	assert_true(m->has_f_bytes);
	assert_int_equal(m->f_bytes.len, 3);
	assert_memory_equal(m->f_bytes.data, "\x00\xff\x01", 3);
	assert_int_equal(m->f_color, SPN__TPTEST__COLOR__BLUE);
	assert_int_equal(m->f_mode, SPN__TPTEST__ALL__MODE__SLOW);
	assert_non_null(m->f_inner);
	assert_int_equal(m->f_inner->a, 1);
	assert_string_equal(m->f_inner->s, "in");
	assert_int_equal(m->big_number, 7);
	// Not given: no presence.
	assert_false(m->has_d_int32);
	assert_int_equal(m->choice_case, SPN__TPTEST__ALL__CHOICE__NOT_SET);
	free_msg(m);

	// Empty input (or only comments and blanks) is an empty message.
	m = parse_all("  # nothing here\n\n");
	assert_false(m->has_f_int32);
	assert_null(m->f_inner);
	free_msg(m);
}

static void test_integer_forms(void **state)
{
	(void)state;
	Spn__Tptest__All *m = parse_all(
		"f_int32: 0x7fffffff f_int64: -0x8000000000000000 f_uint32: 0 "
		"f_uint64: 0xffffffffffffffff f_sint32: 2147483647 f_fixed32: "
		"00 "
		"f_sfixed32: -2147483648 f_sfixed64: 0777 f_sint64: -0");
	assert_int_equal(m->f_int32, INT32_MAX);
	assert_true(m->f_int64 == INT64_MIN);
	assert_true(m->has_f_uint32 && m->f_uint32 == 0);
	assert_true(m->f_uint64 == UINT64_MAX);
	assert_int_equal(m->f_sint32, INT32_MAX);
	assert_true(m->has_f_fixed32 && m->f_fixed32 == 0);
	assert_int_equal(m->f_sfixed32, INT32_MIN);
	assert_int_equal(m->f_sfixed64, 0777);
	assert_true(m->has_f_sint64 && m->f_sint64 == 0);
	free_msg(m);

	expect_error(
		ALL_DESC, "f_int32: 2147483648",
		"1:10: integer 2147483648 out of range for field 'f_int32' "
		"(int32)");
	expect_error(
		ALL_DESC, "f_int32: -2147483649",
		"1:10: integer -2147483649 out of range for field 'f_int32' "
		"(int32)");
	expect_error(
		ALL_DESC, "f_sfixed32: 0x80000000",
		"1:13: integer 0x80000000 out of range for field 'f_sfixed32' "
		"(sfixed32)");
	expect_error(
		ALL_DESC, "f_uint32: 4294967296",
		"1:11: integer 4294967296 out of range for field 'f_uint32' "
		"(uint32)");
	expect_error(
		ALL_DESC, "f_fixed32: 0x100000000",
		"1:12: integer 0x100000000 out of range for field 'f_fixed32' "
		"(fixed32)");
	expect_error(
		ALL_DESC, "f_uint64: 18446744073709551616",
		"1:11: integer 18446744073709551616 out of range for field "
		"'f_uint64' (uint64)");
	expect_error(ALL_DESC, "f_int64:\n  -9223372036854775809",
		     "2:3: integer -9223372036854775809 out of range for field "
		     "'f_int64' (int64)");
	expect_error(ALL_DESC, "f_sint64: 9223372036854775808",
		     "1:11: integer 9223372036854775808 out of range for field "
		     "'f_sint64' (sint64)");
	expect_error(ALL_DESC, "f_uint32: -1",
		     "1:11: field 'f_uint32' (uint32) cannot be negative");
	expect_error(ALL_DESC, "f_fixed64: -0",
		     "1:12: field 'f_fixed64' (fixed64) cannot be negative");
	expect_error(ALL_DESC, "f_int32: 08", "1:10: invalid number '08'");
	expect_error(ALL_DESC, "f_int32: 12abc",
		     "1:10: invalid number '12abc'");
	expect_error(ALL_DESC, "f_int32: 0x", "1:10: invalid number '0x'");
	expect_error(
		ALL_DESC, "f_int32: 1.5",
		"1:10: field 'f_int32' (int32) expects an integer, got '1.5'");
	expect_error(
		ALL_DESC, "f_int32: 1e3",
		"1:10: field 'f_int32' (int32) expects an integer, got '1e3'");
	expect_error(ALL_DESC, "f_int64: \"5\"",
		     "1:10: field 'f_int64' (int64) expects an integer, got a "
		     "string");
	expect_error(ALL_DESC, "f_uint64: true",
		     "1:11: field 'f_uint64' (uint64) expects an integer, got "
		     "'true'");
	expect_error(
		ALL_DESC, "f_int32: - - 1",
		"1:12: field 'f_int32' (int32) expects an integer, got '-'");
	expect_error(
		ALL_DESC, "f_int32:",
		"1:9: field 'f_int32' (int32) expects an integer, got end of "
		"input");
}

static void test_floats(void **state)
{
	(void)state;
	Spn__Tptest__All *m =
		parse_all("r_double: [inf, -inf, Infinity, -INFINITY, nan, "
			  "-nan, .5, 1e10, "
			  "5, "
			  "0x10, 010, 1.5F, 2.f, 1E+2, 7e-1, -0, "
			  "1.7976931348623157e308]\n"
			  "r_float: [3.4028235e38, 1e-50, 0.1, -1]\n"
			  "f_float: inf f_double: -0.0");
	assert_int_equal(m->n_r_double, 17);
	assert_true(isinf(m->r_double[0]) && m->r_double[0] > 0);
	assert_true(isinf(m->r_double[1]) && m->r_double[1] < 0);
	assert_true(isinf(m->r_double[2]) && m->r_double[2] > 0);
	assert_true(isinf(m->r_double[3]) && m->r_double[3] < 0);
	assert_true(isnan(m->r_double[4]));
	assert_true(isnan(m->r_double[5]));
	double want[] = {0.5, 1e10, 5, 16, 8, 1.5, 2, 100, 0.7, 0, DBL_MAX};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		assert_true(m->r_double[6 + i] == want[i]);
	assert_true(signbit(m->r_double[15])); // -0 stays negative zero
	assert_int_equal(m->n_r_float, 4);
	assert_true(m->r_float[0] == FLT_MAX);
	assert_true(m->r_float[1] == 0.0f); // underflow rounds to zero
	assert_true(m->r_float[2] == 0.1f); // read as a float, not via double
	assert_true(m->r_float[3] == -1.0f);
	assert_true(isinf(m->f_float));
	assert_true(m->f_double == 0 && signbit(m->f_double));
	free_msg(m);

	expect_error(ALL_DESC, "f_float: 1e39",
		     "1:10: value out of range for field 'f_float' (float)");
	expect_error(ALL_DESC, "f_double: -1e400",
		     "1:11: value out of range for field 'f_double' (double)");
	expect_error(ALL_DESC, "f_double: \"1\"",
		     "1:11: field 'f_double' (double) expects a number, got a "
		     "string");
	expect_error(ALL_DESC, "f_float: infinite",
		     "1:10: field 'f_float' (float) expects a number, got "
		     "'infinite'");
	expect_error(ALL_DESC, "f_double: 1.2.3",
		     "1:11: invalid number '1.2.3'");
	expect_error(ALL_DESC, "f_double: 1e+", "1:11: invalid number '1e+'");
}

static void test_bools(void **state)
{
	(void)state;
	Spn__Tptest__All *m = parse_all(
		"r_bool: [true, True, t, 1, false, False, f, 0, 0x1]");
	protobuf_c_boolean want[] = {1, 1, 1, 1, 0, 0, 0, 0, 1};
	assert_int_equal(m->n_r_bool, 9);
	for (size_t i = 0; i < 9; i++)
		assert_int_equal(m->r_bool[i], want[i]);
	free_msg(m);

	expect_error(
		ALL_DESC, "f_bool: 2",
		"1:9: field 'f_bool' (bool) expects true, false, 1 or 0, got "
		"'2'");
	expect_error(
		ALL_DESC, "f_bool: TRUE",
		"1:9: field 'f_bool' (bool) expects true, false, 1 or 0, got "
		"'TRUE'");
	expect_error(
		ALL_DESC, "f_bool: \"true\"",
		"1:9: field 'f_bool' (bool) expects true, false, 1 or 0, got "
		"a string");
}

static void test_enums(void **state)
{
	(void)state;
	Spn__Tptest__All *m =
		parse_all("f_color: RED f_mode: FAST\n"
			  "r_color: [BLUE, -3, 2, COLOR_UNSPECIFIED, 99]\n");
	assert_int_equal(m->f_color, SPN__TPTEST__COLOR__RED);
	assert_int_equal(m->f_mode, SPN__TPTEST__ALL__MODE__FAST);
	assert_int_equal(m->n_r_color, 5);
	assert_int_equal(m->r_color[0], SPN__TPTEST__COLOR__BLUE);
	assert_int_equal(m->r_color[1], SPN__TPTEST__COLOR__BLUE);
	assert_int_equal(m->r_color[2], SPN__TPTEST__COLOR__GREEN);
	assert_int_equal(m->r_color[3], SPN__TPTEST__COLOR__COLOR_UNSPECIFIED);
	assert_int_equal(m->r_color[4], 99); // a number newer than the .proto
	free_msg(m);

	expect_error(ALL_DESC, "f_color: RED\nf_mode: PURPLE",
		     "2:9: unknown value 'PURPLE' for field 'f_mode' (enum "
		     "spn.tptest.All.Mode)");
	expect_error(ALL_DESC, "f_color: red",
		     "1:10: unknown value 'red' for field 'f_color' (enum "
		     "spn.tptest.Color)");
	expect_error(
		ALL_DESC, "f_color: \"RED\"",
		"1:10: field 'f_color' (enum) expects an enum value name or "
		"number, got a string");
	expect_error(
		ALL_DESC, "f_color: 2147483648",
		"1:10: integer 2147483648 out of range for field 'f_color' "
		"(enum)");
}

static void test_strings(void **state)
{
	(void)state;
	Spn__Tptest__All *m = parse_all(
		"r_string: \"\\a\\b\\f\\n\\r\\t\\v\\\\\\'\\\"\\?\"\n"
		"r_string: '\\x41\\x4g\\101\\60\\7'\n"
		"r_string: \"\\u00e9\\U0001F600\\ud83d\\ude00\\u20AC\"\n"
		"r_string: \"a\" 'b'\n"
		"  # a comment between the parts\n"
		"  \"c\"\n"
		"r_string: 'say \"hi\"' r_string: \"\" r_string: "
		"\"caf\xc3\xa9\"\n"
		"r_bytes: \"\\0\\000\\x00\\377\" r_bytes: ''\n");
	assert_int_equal(m->n_r_string, 7);
	assert_string_equal(m->r_string[0], "\a\b\f\n\r\t\v\\'\"?");
	assert_string_equal(m->r_string[1], "A\x04g"
					    "A0\x07");
	assert_string_equal(
		m->r_string[2],
		"\xc3\xa9\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xe2\x82\xac");
	assert_string_equal(m->r_string[3], "abc");
	assert_string_equal(m->r_string[4], "say \"hi\"");
	assert_string_equal(m->r_string[5], "");
	assert_string_equal(m->r_string[6], "caf\xc3\xa9");
	assert_int_equal(m->n_r_bytes, 2);
	assert_int_equal(m->r_bytes[0].len, 4);
	assert_memory_equal(m->r_bytes[0].data, "\0\0\0\xff", 4);
	assert_int_equal(m->r_bytes[1].len, 0);
	free_msg(m);

	expect_error(ALL_DESC, "f_string: \"ab\\qc\"",
		     "1:14: unknown escape sequence '\\q'");
	expect_error(ALL_DESC, "f_string:\n 'ok' \"\\xzz\"",
		     "2:8: '\\x' needs one or two hex digits");
	expect_error(ALL_DESC, "f_string: \"\\400\"",
		     "1:12: octal escape out of range (max \\377)");
	expect_error(ALL_DESC, "f_string: \"\\u12\"",
		     "1:12: invalid Unicode escape (needs 4 hex digits, a code "
		     "point <= 10FFFF and no lone surrogate)");
	expect_error(ALL_DESC, "f_string: \"x\\ud800y\"",
		     "1:13: invalid Unicode escape (needs 4 hex digits, a code "
		     "point <= 10FFFF and no lone surrogate)");
	expect_error(ALL_DESC, "f_string: \"\\udc00\"",
		     "1:12: invalid Unicode escape (needs 4 hex digits, a code "
		     "point <= 10FFFF and no lone surrogate)");
	expect_error(ALL_DESC, "f_string: \"\\U00110000\"",
		     "1:12: invalid Unicode escape (needs 8 hex digits, a code "
		     "point <= 10FFFF and no lone surrogate)");
	expect_error(
		ALL_DESC, "f_string: \"a\\0b\"",
		"1:11: field 'f_string' (string) cannot hold a NUL byte; use "
		"a bytes field");
	expect_error(ALL_DESC, "f_string: \"abc\nf_int32: 1",
		     "1:11: unterminated string (strings cannot span lines)");
	expect_error(ALL_DESC, "f_int32: 1\nf_string: 'abc",
		     "2:11: unterminated string");
	expect_error(ALL_DESC, "f_string: 'abc\\", "1:11: unterminated string");
	expect_error(ALL_DESC, "f_string: \"a\\\nb\"",
		     "1:11: unterminated string (strings cannot span lines)");
	expect_error(ALL_DESC, "f_string: 'a\"", "1:11: unterminated string");
	expect_error(
		ALL_DESC, "f_string: abc",
		"1:11: field 'f_string' (string) expects a quoted string, got "
		"'abc'");
	expect_error(
		ALL_DESC, "f_bytes: 5",
		"1:10: field 'f_bytes' (bytes) expects a quoted string, got "
		"'5'");
}

// ---- structure: nesting, repetition, separators, oneof ----------------------

static void test_nested_and_repeated(void **state)
{
	(void)state;
	Spn__Tptest__All *m =
		parse_all("r_int32: 1\n"
			  "r_int32: [2, 3]\n"
			  "r_int32: []\n"
			  "r_int32: [ -4 ]\n"
			  "r_int64: [-1, 0x7fffffffffffffff]\n"
			  "r_uint32: 5 r_sint64: [-6] r_fixed32: [7, 8]\n"
			  "r_inner { a: 1 }\n"
			  "r_inner < a: 2 >\n"
			  "r_inner: { a: 3 }\n"
			  "r_inner [ { a: 4 }, < a: 5 > ]\n"
			  "r_inner: [{ a: 6 }]\n"
			  "r_inner: []\n"
			  "r_inner {}\n"
			  "f_inner {\n"
			  "  child { child: < a: 9 > }\n"
			  "  kids { a: 1 } kids { a: 2 s: \"x\" }\n"
			  "}\n");
	int32_t want32[] = {1, 2, 3, -4};
	assert_int_equal(m->n_r_int32, 4);
	assert_memory_equal(m->r_int32, want32, sizeof(want32));
	assert_int_equal(m->n_r_int64, 2);
	assert_true(m->r_int64[0] == -1 && m->r_int64[1] == INT64_MAX);
	assert_int_equal(m->n_r_uint32, 1);
	assert_int_equal(m->r_uint32[0], 5);
	assert_int_equal(m->r_sint64[0], -6);
	assert_int_equal(m->n_r_fixed32, 2);
	assert_int_equal(m->r_fixed32[1], 8);
	assert_int_equal(m->n_r_inner, 7);
	for (int i = 0; i < 6; i++) {
		assert_true(m->r_inner[i]->has_a);
		assert_int_equal(m->r_inner[i]->a, i + 1);
	}
	assert_false(m->r_inner[6]->has_a);
	Spn__Tptest__Inner *in = m->f_inner;
	assert_non_null(in);
	assert_false(in->has_a);
	assert_non_null(in->child);
	assert_non_null(in->child->child);
	assert_int_equal(in->child->child->a, 9);
	assert_int_equal(in->n_kids, 2);
	assert_int_equal(in->kids[1]->a, 2);
	assert_string_equal(in->kids[1]->s, "x");
	free_msg(m);
}

static void test_separators_and_comments(void **state)
{
	(void)state;
	Spn__Tptest__All *m = parse_all(
		"# leading comment\r\n"
		"f_int32: 1, f_uint32: 2; f_bool: true # trailing comment\n"
		"\t\tf_string: \"#not a comment\"   ;\n"
		"f_inner { a: 3; s: 'x', }, r_int32: [1,2] ; r_int32: 3\n"
		"#last line without newline");
	assert_int_equal(m->f_int32, 1);
	assert_int_equal(m->f_uint32, 2);
	assert_true(m->f_bool);
	assert_string_equal(m->f_string, "#not a comment");
	assert_int_equal(m->f_inner->a, 3);
	assert_string_equal(m->f_inner->s, "x");
	assert_int_equal(m->n_r_int32, 3);
	free_msg(m);
}

static void test_oneof(void **state)
{
	(void)state;
	Spn__Tptest__All *m = parse_all("o_num: 5");
	assert_int_equal(m->choice_case, SPN__TPTEST__ALL__CHOICE_O_NUM);
	assert_int_equal(m->o_num, 5);
	free_msg(m);
	m = parse_all("o_msg { a: 1 }");
	assert_int_equal(m->choice_case, SPN__TPTEST__ALL__CHOICE_O_MSG);
	assert_int_equal(m->o_msg->a, 1);
	free_msg(m);
	m = parse_all("o_str: \"s\"");
	assert_int_equal(m->choice_case, SPN__TPTEST__ALL__CHOICE_O_STR);
	assert_string_equal(m->o_str, "s");
	free_msg(m);

	expect_error(
		ALL_DESC, "o_num: 5\no_str: \"x\"",
		"2:1: fields 'o_num' and 'o_str' belong to the same oneof; "
		"only one may be set");
	expect_error(
		ALL_DESC, "o_msg {}\nf_int32: 1 o_num: 1",
		"2:12: fields 'o_msg' and 'o_num' belong to the same oneof; "
		"only one may be set");
}

static void test_required(void **state)
{
	(void)state;
	const ProtobufCMessageDescriptor *d =
		&spn__tptest__with_required__descriptor;
	Spn__Tptest__WithRequired *m =
		(Spn__Tptest__WithRequired *)parse(d, "id: 1 next { id: 2 }");
	assert_int_equal(m->id, 1);
	assert_int_equal(m->next->id, 2);
	free_msg(m);

	expect_error(d, "note: \"x\"",
		     "1:10: missing required field 'id' in message "
		     "spn.tptest.WithRequired");
	expect_error(d, "id: 1\nnext {\n  note: \"y\"\n}\n",
		     "4:1: missing required field 'id' in message "
		     "spn.tptest.WithRequired");
}

// ---- errors -----------------------------------------------------------------

static void test_errors(void **state)
{
	(void)state;
	static const struct {
		const char *text; // input
		const char *want; // the exact error
	} cases[] = {
		{"f_int32: 1\nnope: 2",
		 "2:1: unknown field 'nope' in message spn.tptest.All"},
		{"f_inner {\n  a: 1\n  zz: 1\n}",
		 "3:3: unknown field 'zz' in message spn.tptest.Inner"},
		{"F_INT32: 1",
		 "1:1: unknown field 'F_INT32' in message spn.tptest.All"},
		{"f_int3: 1",
		 "1:1: unknown field 'f_int3' in message spn.tptest.All"},
		{"f_int32x: 1",
		 "1:1: unknown field 'f_int32x' in message spn.tptest.All"},
		{"f_inner: 5",
		 "1:10: expected '{' or '<' to open message field "
		 "'f_inner', got '5'"},
		{"f_inner \"x\"", "1:9: expected '{' or '<' to open message "
				  "field 'f_inner', got a "
				  "string"},
		{"f_inner {\n  a: 1\n",
		 "3:1: unexpected end of input: missing '}' "
		 "to close 'f_inner' opened "
		 "at 1:9"},
		{"f_inner {\n  child <\n    a: 1\n  }\n}",
		 "4:3: expected '>' to close 'child' opened at 2:9, got '}'"},
		{"f_int32: 1 }", "1:12: unexpected '}': no message is open"},
		{"f_int32: 1 >", "1:12: unexpected '>': no message is open"},
		{"f_int32 5",
		 "1:9: expected ':' after field 'f_int32', got '5'"},
		{"f_int32",
		 "1:8: expected ':' after field 'f_int32', got end of input"},
		{"f_string \"x\"",
		 "1:10: expected ':' after field 'f_string', got a "
		 "string"},
		{"f_int32: 1\nf_int32: 2",
		 "2:1: field 'f_int32' is set twice but is not repeated"},
		{"f_inner {}\nf_inner {}",
		 "2:1: field 'f_inner' is set twice but is not repeated"},
		{"f_int32: [1]",
		 "1:10: field 'f_int32' is not repeated; the list "
		 "syntax '[...]' needs "
		 "a repeated field"},
		{"f_inner [{}]",
		 "1:9: field 'f_inner' is not repeated; the list "
		 "syntax '[...]' needs "
		 "a repeated field"},
		{"r_int32: [1, 2",
		 "1:15: expected ',' or ']' in the list of field "
		 "'r_int32' opened at "
		 "1:10, got end of input"},
		{"r_int32: [1 2]",
		 "1:13: expected ',' or ']' in the list of field "
		 "'r_int32' opened at "
		 "1:10, got '2'"},
		{"r_int32: [1, ]",
		 "1:14: field 'r_int32' (int32) expects an integer, got ']'"},
		{"r_inner: [{}, 5]",
		 "1:15: expected '{' or '<' to open message "
		 "field 'r_inner', got '5'"},
		{"[spn.ext]: 1",
		 "1:1: extension and Any fields ('[...]') are not supported"},
		{"f_int32: 1 @", "1:12: unexpected character '@'"},
		{"f_int32: 1\n\x01", "2:1: unexpected byte 0x01"},
		{"f_string: \"ok\"\n\xc3\xa9: 1", "2:1: unexpected byte 0xc3"},
		{"5: 1", "1:1: expected a field name, got '5'"},
		{": 1", "1:1: expected a field name, got ':'"},
		{"f_int32: 1 , , f_uint32: 2",
		 "1:14: expected a field name, got ','"},
		{"f_int32:: 1",
		 "1:9: field 'f_int32' (int32) expects an integer, got "
		 "':'"},
		{"other_bytes { x: 1 }",
		 "1:13: field 'other_bytes' is bytes and "
		 "no message type is known for "
		 "it; give its value as a string"},
		{"f_int32: 1\r\nnope: 1",
		 "2:1: unknown field 'nope' in message "
		 "spn.tptest.All"},
		{"\tf_int32:\t\t\"1\"",
		 "1:12: field 'f_int32' (int32) expects an "
		 "integer, got a string"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_error(ALL_DESC, cases[i].text, cases[i].want);
}

static void test_depth_limit(void **state)
{
	(void)state;
	// f_inner is depth 1; each `child {` one more.
	size_t cap = 64 + 10 * (SPN_TEXTPROTO_MAX_DEPTH + 2);
	char *ok = malloc(cap), *bad = malloc(cap);
	assert_non_null(ok);
	assert_non_null(bad);
	strcpy(ok, "f_inner {");
	for (int i = 1; i < SPN_TEXTPROTO_MAX_DEPTH; i++)
		strcat(ok, "child {");
	for (int i = 0; i < SPN_TEXTPROTO_MAX_DEPTH; i++)
		strcat(ok, "}");
	free_msg(parse(ALL_DESC, ok));

	strcpy(bad, "f_inner {");
	for (int i = 0; i < SPN_TEXTPROTO_MAX_DEPTH; i++)
		strcat(bad, "child {");
	size_t col = strlen(bad); // the last '{' is the one too deep
	char want[128];
	snprintf(want, sizeof(want),
		 "1:%zu: messages nested deeper than %d levels", col,
		 SPN_TEXTPROTO_MAX_DEPTH);
	expect_error(ALL_DESC, bad, want);
	free(ok);
	free(bad);
}

static void test_error_buffer_and_args(void **state)
{
	(void)state;
	const char *text = "nope: 1";
	char small[8];
	ProtobufCMessage *m = NULL;
	assert_int_equal(spn_textproto_parse(ALL_DESC, text, strlen(text), &m,
					     small, sizeof(small)),
			 -EINVAL);
	assert_string_equal(small, "1:1: un"); // truncated, NUL-terminated
	assert_int_equal(
		spn_textproto_parse(ALL_DESC, text, strlen(text), &m, NULL, 0),
		-EINVAL);
	assert_null(m);

	char err[64];
	assert_int_equal(spn_textproto_parse(NULL, "", 0, &m, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "invalid arguments");
	assert_int_equal(
		spn_textproto_parse(ALL_DESC, NULL, 3, &m, err, sizeof(err)),
		-EINVAL);
	assert_int_equal(
		spn_textproto_parse(ALL_DESC, "", 0, NULL, err, sizeof(err)),
		-EINVAL);
	// A NULL text of length 0 is an empty message.
	assert_int_equal(
		spn_textproto_parse(ALL_DESC, NULL, 0, &m, err, sizeof(err)),
		0);
	free_msg(m);

	// Only `len` bytes are read: what follows is not part of the input.
	const char *longer = "f_int32: 12 nope: 1";
	assert_int_equal(
		spn_textproto_parse(ALL_DESC, longer, 11, &m, err, sizeof(err)),
		0);
	assert_int_equal(((Spn__Tptest__All *)m)->f_int32, 12);
	free_msg(m);

	assert_int_equal(spn_textproto_print(NULL, stdout), -EINVAL);
}

// Every prefix of a valid text, and many one-byte corruptions of it, placed
// right before an inaccessible page: each parse ends with 0 or -EINVAL and
// a "line:col: " message, and never reads past the input.
static void test_prefixes_and_corruptions(void **state)
{
	(void)state;
	static const char text[] =
		"f_int32: -5 f_double: 1.5e3 f_string: \"a\\x41\\u00e9\" 'b'\n"
		"f_inner < child { a: 0x10 } kids: [ {s: \"k\"}, <a: 017> ] >\n"
		"r_color: [RED, 2] f_bool: t # comment\n"
		"o_msg { a: 1 } r_bytes: '\\377' f_float: -inf\n";
	long page = sysconf(_SC_PAGESIZE);
	size_t n = sizeof(text) - 1;
	assert_true((size_t)page > n);
	uint8_t *map = mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(map != MAP_FAILED);
	assert_int_equal(mprotect(map + page, (size_t)page, PROT_NONE), 0);
	char err[256];
	ProtobufCMessage *m;

	for (size_t k = 0; k <= n; k++) {
		char *at = (char *)map + page - k;
		memcpy(at, text, k);
		int rc = spn_textproto_parse(ALL_DESC, at, k, &m, err,
					     sizeof(err));
		assert_true(rc == 0 || rc == -EINVAL);
		if (rc == 0)
			free_msg(m);
		else
			assert_non_null(strstr(err, ": "));
	}

	char *at = (char *)map + page - n;
	static const char bytes[] = "\"'\\{}<>[]:,;-#\n x0.9e";
	uint32_t seed = 12345;
	int ok = 0;
	for (int iter = 0; iter < 4000; iter++) {
		memcpy(at, text, n);
		seed = seed * 1103515245 + 12345;
		at[(seed >> 8) % n] = bytes[(seed >> 20) % (sizeof(bytes) - 1)];
		int rc = spn_textproto_parse(ALL_DESC, at, n, &m, err,
					     sizeof(err));
		assert_true(rc == 0 || rc == -EINVAL);
		if (rc == 0) {
			ok++;
			check_round_trip(m, NULL);
			free_msg(m);
		}
	}
	assert_true(ok > 0);
	munmap(map, 2 * (size_t)page);
}

// ---- bytes fields carrying messages -----------------------------------------

static const ProtobufCMessageDescriptor *const payload_types[] = {
	&spn__tptest__inner__descriptor, // for the bytes field `inner`
	&spn__tptest__payload__descriptor,
};
static const struct spn_textproto_opts test_opts = {payload_types, 2};

static void test_payload_types(void **state)
{
	(void)state;
	Spn__Tptest__All *m = (Spn__Tptest__All *)parse_opts(
		ALL_DESC, &test_opts,
		"payload { x: 5 names: [\"a\", \"b\"] }\n"
		"inner: [< a: 1 >, \"\\x08\\x02\"]\n"
		"inner { child { s: \"c\" } }\n"
		"other_bytes: \"raw\"\n");
	assert_true(m->has_payload);
	Spn__Tptest__Payload *pl = spn__tptest__payload__unpack(
		NULL, m->payload.len, m->payload.data);
	assert_non_null(pl);
	assert_int_equal(pl->x, 5);
	assert_int_equal(pl->n_names, 2);
	assert_string_equal(pl->names[1], "b");
	spn__tptest__payload__free_unpacked(pl, NULL);
	assert_int_equal(m->n_inner, 3);
	assert_int_equal(m->inner[0].len, 2);
	assert_memory_equal(m->inner[0].data, "\x08\x01", 2);
	assert_memory_equal(m->inner[1].data, "\x08\x02", 2);
	assert_int_equal(m->inner[2].len, 5);
	assert_memory_equal(m->inner[2].data,
			    "\x1a\x03\x12\x01"
			    "c",
			    5);

	// With the types the printer shows the payloads as messages; without, as
	// bytes. Both forms parse back to the same bytes.
	char *with = print_opts(&m->base, &test_opts);
	assert_string_equal(with, "payload {\n"
				  "  x: 5\n"
				  "  names: \"a\"\n"
				  "  names: \"b\"\n"
				  "}\n"
				  "inner {\n"
				  "  a: 1\n"
				  "}\n"
				  "inner {\n"
				  "  a: 2\n"
				  "}\n"
				  "inner {\n"
				  "  child {\n"
				  "    s: \"c\"\n"
				  "  }\n"
				  "}\n"
				  "other_bytes: \"raw\"\n");
	char *without = print(&m->base);
	assert_string_equal(without,
			    "payload: \"\\010\\005\\022\\001a\\022\\001b\"\n"
			    "inner: \"\\010\\001\"\n"
			    "inner: \"\\010\\002\"\n"
			    "inner: \"\\032\\003\\022\\001c\"\n"
			    "other_bytes: \"raw\"\n");
	check_round_trip(&m->base, &test_opts);
	check_round_trip(&m->base, NULL);
	free(with);
	free(without);
	free_msg(m);

	// Bytes that are not a Payload, or would not re-encode identically
	// (non-minimal varint), stay bytes.
	m = (Spn__Tptest__All *)parse_opts(ALL_DESC, &test_opts,
					   "payload: \"\\xff\"\n"
					   "inner: \"\\x08\\x81\\x00\"\n"
					   "inner {}\n");
	char *text = print_opts(&m->base, &test_opts);
	assert_string_equal(text, "payload: \"\\377\"\n"
				  "inner: \"\\010\\201\\000\"\n"
				  "inner {\n"
				  "}\n");
	check_round_trip(&m->base, &test_opts);
	free(text);
	free_msg(m);

	expect_error_opts(
		ALL_DESC, &test_opts, "payload { y: 1 }",
		"1:11: unknown field 'y' in message spn.tptest.Payload");
	expect_error_opts(ALL_DESC, &test_opts, "payload { x: 1 ",
			  "1:16: unexpected end of input: missing '}' to close "
			  "'payload' opened at 1:9");
}

// ---- printer ----------------------------------------------------------------

static void test_print_golden(void **state)
{
	(void)state;
	Spn__Tptest__All *m = parse_all(
		"big_number: 536870911 r_inner: [{}, {a: -1}] f_inner { s: 'q' "
		"} "
		"f_mode: 1 f_color: -3 f_bytes: \"\\x00\\\"\\xc3\\xa9\\x7f a\" "
		"f_string: \"tab\\there\\nnl \\\"q\\\" back\\\\ caf\\xc3\\xa9 "
		"bad\\xc3 "
		"\\x01\" f_bool: false f_double: 0.1 f_float: 0.1 f_sfixed64: "
		"-9 "
		"f_sfixed32: -8 f_fixed64: 7 f_fixed32: 6 f_sint64: -5 "
		"f_sint32: "
		"-4 "
		"f_uint64: 3 f_uint32: 2 f_int64: -1 f_int32: 0 "
		"r_double: [1e100, -inf, nan, 2.5, 1e-7] r_float: "
		"[3.4028235e38, "
		"1.17549435e-38, 16777216] "
		"r_color: [5, GREEN] o_str: \"one\" d_int32: 7");
	char *text = print(&m->base);
	assert_string_equal(text,
			    "f_int32: 0\n"
			    "f_int64: -1\n"
			    "f_uint32: 2\n"
			    "f_uint64: 3\n"
			    "f_sint32: -4\n"
			    "f_sint64: -5\n"
			    "f_fixed32: 6\n"
			    "f_fixed64: 7\n"
			    "f_sfixed32: -8\n"
			    "f_sfixed64: -9\n"
			    "f_float: 0.1\n"
			    "f_double: 0.1\n"
			    "f_bool: false\n"
			    "f_string: \"tab\\there\\nnl \\\"q\\\" back\\\\ "
			    "caf\xc3\xa9 bad\\303 \\001\"\n"
			    "f_bytes: \"\\000\\\"\\303\\251\\177 a\"\n"
			    "f_color: BLUE\n"
			    "f_mode: FAST\n"
			    "f_inner {\n"
			    "  s: \"q\"\n"
			    "}\n"
			    "r_double: 1e+100\n"
			    "r_double: -inf\n"
			    "r_double: nan\n"
			    "r_double: 2.5\n"
			    "r_double: 1e-07\n"
			    "r_float: 3.4028235e+38\n"
			    "r_float: 1.1754944e-38\n"
			    "r_float: 16777216\n"
			    "r_color: 5\n"
			    "r_color: GREEN\n"
			    "r_inner {\n"
			    "}\n"
			    "r_inner {\n"
			    "  a: -1\n"
			    "}\n"
			    "o_str: \"one\"\n"
			    "d_int32: 7\n"
			    "big_number: 536870911\n");
	check_round_trip(&m->base, NULL);
	free(text);
	free_msg(m);
}

static void test_print_presence_and_unknown(void **state)
{
	(void)state;
	// A freshly initialised proto2 message prints nothing: has_ flags are
	// false and d_string points at its default.
	Spn__Tptest__All all = SPN__TPTEST__ALL__INIT;
	char *text = print(&all.base);
	assert_string_equal(text, "");
	free(text);
	all.has_f_int32 = 1; // present with value 0
	all.f_uint32 = 5;    // not present: has_f_uint32 is false
	all.d_string = "set";
	all.choice_case = SPN__TPTEST__ALL__CHOICE_O_NUM;
	all.o_num = 0;
	text = print(&all.base);
	assert_string_equal(text, "f_int32: 0\no_num: 0\nd_string: \"set\"\n");
	free(text);

	// proto3: fields without presence print only when not zero.
	Spn__Tptest3__Plain p3 = SPN__TPTEST3__PLAIN__INIT;
	text = print(&p3.base);
	assert_string_equal(text, "");
	free(text);
	Spn__Tptest3__Plain sub = SPN__TPTEST3__PLAIN__INIT;
	uint64_t list[] = {0, 9};
	p3.n = -1;
	p3.s = "x";
	p3.b.len = 1;
	p3.b.data = (uint8_t *)"\x01";
	p3.d = 0.5;
	p3.flag = 1;
	p3.kind = SPN__TPTEST3__PLAIN__KIND__KIND_A;
	p3.sub = &sub;
	p3.n_list = 2;
	p3.list = list;
	text = print(&p3.base);
	assert_string_equal(
		text, "n: -1\ns: \"x\"\nb: \"\\001\"\nd: 0.5\nflag: true\n"
		      "kind: KIND_A\nsub {\n}\nlist: 0\nlist: 9\n");
	check_round_trip(&p3.base, NULL);
	free(text);

	// Unknown fields kept by protobuf-c print as comments.
	static const uint8_t wire[] = {
		0x08, 0x01,                         // f_int32: 1
		0x98, 0x06, 0x96, 0x01,             // 99: 150 (varint)
		0x92, 0x06, 0x03, 'a',  0x00, 'b',  // 98: "a\0b"
		0x8d, 0x06, 0x01, 0x02, 0x03, 0x04, // 97: fixed32
		0x81, 0x06, 1,    2,    3,    4,    5, 6, 7, 8, // 96: fixed64
	};
	Spn__Tptest__All *m =
		spn__tptest__all__unpack(NULL, sizeof(wire), wire);
	assert_non_null(m);
	text = print(&m->base);
	assert_string_equal(text, "f_int32: 1\n"
				  "# unknown field 99: 150\n"
				  "# unknown field 98: \"a\\000b\"\n"
				  "# unknown field 97: 0x04030201\n"
				  "# unknown field 96: 0x0807060504030201\n");
	ProtobufCMessage *back = parse(ALL_DESC, text);
	assert_int_equal(((Spn__Tptest__All *)back)->f_int32, 1);
	assert_int_equal(back->n_unknown_fields, 0);
	free_msg(back);
	free(text);
	free_msg(m);
}

static void test_print_write_error(void **state)
{
	(void)state;
	FILE *f = fopen("/dev/full", "w");
	if (!f)
		skip();
	setvbuf(f, NULL, _IONBF, 0);
	Spn__Tptest__All all = SPN__TPTEST__ALL__INIT;
	all.has_f_int32 = 1;
	assert_int_equal(spn_textproto_print(&all.base, f), -EIO);
	fclose(f);
}

// Messages built in C with edge values survive print -> parse unchanged.
static void test_round_trip_built(void **state)
{
	(void)state;
	Spn__Tptest__All m = SPN__TPTEST__ALL__INIT;
	Spn__Tptest__Inner in = SPN__TPTEST__INNER__INIT,
			   kid = SPN__TPTEST__INNER__INIT;
	Spn__Tptest__Inner *kids[] = {&kid, &kid};
	uint8_t allbytes[256];
	for (int i = 0; i < 256; i++)
		allbytes[i] = (uint8_t)i;
	char str[256];
	for (int i = 1; i < 256; i++) // every byte but NUL, invalid UTF-8 too
		str[i - 1] = (char)i;
	str[255] = '\0';
	double dbl[] = {-0.0,    DBL_MIN, DBL_MAX,  4.9e-324,
			1.0 / 3, -1e-300, INFINITY, 123456789012345678.0};
	float flt[] = {-0.0f,    FLT_MIN, FLT_MAX,  1.4e-45f,
		       1.0f / 3, 0.1f,    -INFINITY};
	int64_t i64[] = {INT64_MIN, -1, 0, INT64_MAX};
	char *strs[] = {"", str, "\xf0\x9f\x98\x80 ok"};
	ProtobufCBinaryData bins[] = {{0, NULL}, {256, allbytes}};

	m.has_f_int32 = 1, m.f_int32 = INT32_MIN;
	m.has_f_int64 = 1, m.f_int64 = INT64_MIN;
	m.has_f_uint64 = 1, m.f_uint64 = UINT64_MAX;
	m.has_f_sint32 = 1, m.f_sint32 = INT32_MIN;
	m.has_f_sint64 = 1, m.f_sint64 = INT64_MAX;
	m.has_f_fixed64 = 1, m.f_fixed64 = UINT64_MAX;
	m.has_f_sfixed64 = 1, m.f_sfixed64 = INT64_MIN;
	m.has_f_float = 1, m.f_float = -FLT_MAX;
	m.has_f_double = 1, m.f_double = 2.2250738585072009e-308;
	m.has_f_bool = 1, m.f_bool = 1;
	m.f_string = str;
	m.has_f_bytes = 1, m.f_bytes = bins[1];
	m.has_f_color = 1, m.f_color = SPN__TPTEST__COLOR__BLUE;
	in.has_a = 1, in.a = 3, in.s = "inner", in.child = &kid;
	in.n_kids = 2, in.kids = kids;
	m.f_inner = &in;
	m.n_r_double = sizeof(dbl) / sizeof(dbl[0]), m.r_double = dbl;
	m.n_r_float = sizeof(flt) / sizeof(flt[0]), m.r_float = flt;
	m.n_r_int64 = 4, m.r_int64 = i64;
	m.n_r_sint64 = 4, m.r_sint64 = i64;
	m.n_r_string = 3, m.r_string = strs;
	m.n_r_bytes = 2, m.r_bytes = bins;
	m.choice_case = SPN__TPTEST__ALL__CHOICE_O_MSG, m.o_msg = &kid;
	m.has_big_number = 1, m.big_number = UINT32_MAX;
	check_round_trip(&m.base, NULL);
}

// ---- TraceConfig --------------------------------------------------------

static const char realistic_config[] =
	"# A Perfetto-style config, as `spindle --txt -c` reads it.\n"
	"buffers {\n"
	"  size_kb: 1024\n"
	"  fill_policy: RING_BUFFER\n"
	"}\n"
	"buffers: {\n"
	"  size_kb: 4096\n"
	"  fill_policy: DISCARD\n"
	"  name: \"big\"\n"
	"}\n"
	"data_sources {\n"
	"  config {\n"
	"    name: \"track_event\"\n"
	"    target_buffer: 1\n"
	"    track_event_config {\n"
	"      enabled_categories: \"*\"\n"
	"      disabled_categories: [\"slow\", \"debug\"]\n"
	"      enabled_tags: \"x\"\n"
	"      timestamp_unit_multiplier: 1000\n"
	"    }\n"
	"  }\n"
	"  producer_name_filter: \"com.example.app\"\n"
	"  producer_name_regex_filter: \"com\\\\.example\\\\..*\"\n"
	"}\n"
	"data_sources {\n"
	"  config {\n"
	"    name: \"linux.ftrace\"\n"
	"    ftrace_config: \"\\n\\x12sched/sched_switch\"\n"
	"    legacy_config: \"legacy\"\n"
	"    buffer_exhausted_policy: BUFFER_EXHAUSTED_STALL_THEN_DROP\n"
	"    priority_boost { policy: POLICY_SCHED_OTHER priority: 5 }\n"
	"  }\n"
	"}\n"
	"duration_ms: 1500\n"
	"write_into_file: true\n"
	"file_write_period_ms: 2500\n"
	"max_file_size_bytes: 10000000000\n"
	"flush_period_ms: 30000\n"
	"lockdown_mode: LOCKDOWN_SET\n"
	"producers { producer_name: \"com.example.app\" shm_size_kb: 8192 "
	"page_size_kb: 16 }\n"
	"guardrail_overrides { max_tracing_buffer_size_kb: 262144 }\n"
	"trigger_config {\n"
	"  trigger_mode: START_TRACING\n"
	"  trigger_timeout_ms: 10000\n"
	"  triggers { name: \"t1\" producer_name_regex: \".*\" stop_delay_ms: "
	"500 "
	"}\n"
	"  triggers { name: \"t2\" max_per_24_h: 3 skip_probability: 0.25 }\n"
	"}\n"
	"activate_triggers: [\"a\", \"b\"]\n"
	"builtin_data_sources {\n"
	"  disable_clock_snapshotting: true\n"
	"  primary_trace_clock: BUILTIN_CLOCK_MONOTONIC\n"
	"  snapshot_interval_ms: 5000\n"
	"}\n"
	"incremental_state_config { clear_period_ms: 2000 }\n"
	"unique_session_name: \"session-1\"\n"
	"statsd_metadata: \"\\x08\\x01\"\n"
	"trace_uuid_msb: -81985529216486896\n"
	"trace_uuid_lsb: 0x7edcba9876543210\n"
	"bugreport_score: 10\n"
	"statsd_logging: STATSD_LOGGING_DISABLED\n"
	"trace_filter {\n"
	"  bytecode: \"\\x0b\\x01\"\n"
	"  string_filter_chain {\n"
	"    rules { policy: SFP_MATCH_REDACT_GROUPS regex_pattern: \"a(b)\" "
	"semantic_type: [1, 2] }\n"
	"  }\n"
	"}\n"
	"cmd_trace_start_delay { min_delay_ms: 1 max_delay_ms: 2 }\n"
	"session_semaphores { name: \"sem\" max_other_session_count: 0 }\n"
	"priority_boost { policy: POLICY_SCHED_FIFO priority: 10 }\n"
	"write_flush_mode: WRITE_FLUSH_ENABLED\n"
	"fflush_post_write: FFLUSH_ENABLED\n"
	"compression { deflate {} }\n"
	"trace_attributes {\n"
	"  attribute { key: \"k1\" long_value: -7 }\n"
	"  attribute { key: \"k2\" string_value: \"v\" }\n"
	"}\n";

static void test_trace_config_realistic(void **state)
{
	(void)state;
	char err[256];
	Perfetto__Protos__TraceConfig *c = NULL;
	int rc = spn_trace_config_parse_text(realistic_config,
					     strlen(realistic_config), &c, err,
					     sizeof(err));
	if (rc)
		fail_msg("%s", err);
	assert_int_equal(c->n_buffers, 2);
	assert_int_equal(c->buffers[0]->size_kb, 1024);
	assert_int_equal(
		c->buffers[0]->fill_policy,
		PERFETTO__PROTOS__TRACE_CONFIG__BUFFER_CONFIG__FILL_POLICY__RING_BUFFER);
	assert_int_equal(c->buffers[1]->size_kb, 4096);
	assert_int_equal(
		c->buffers[1]->fill_policy,
		PERFETTO__PROTOS__TRACE_CONFIG__BUFFER_CONFIG__FILL_POLICY__DISCARD);
	assert_string_equal(c->buffers[1]->name, "big");

	assert_int_equal(c->n_data_sources, 2);
	Perfetto__Protos__TraceConfig__DataSource *ds = c->data_sources[0];
	assert_string_equal(ds->config->name, "track_event");
	assert_int_equal(ds->config->target_buffer, 1);
	assert_true(ds->config->has_track_event_config);
	Perfetto__Protos__TrackEventConfig *te =
		perfetto__protos__track_event_config__unpack(
			NULL, ds->config->track_event_config.len,
			ds->config->track_event_config.data);
	assert_non_null(te);
	assert_int_equal(te->n_enabled_categories, 1);
	assert_string_equal(te->enabled_categories[0], "*");
	assert_int_equal(te->n_disabled_categories, 2);
	assert_string_equal(te->disabled_categories[1], "debug");
	assert_string_equal(te->enabled_tags[0], "x");
	assert_int_equal(te->timestamp_unit_multiplier, 1000);
	perfetto__protos__track_event_config__free_unpacked(te, NULL);
	assert_int_equal(ds->n_producer_name_filter, 1);
	assert_string_equal(ds->producer_name_filter[0], "com.example.app");
	assert_string_equal(ds->producer_name_regex_filter[0],
			    "com\\.example\\..*");
	ds = c->data_sources[1];
	assert_string_equal(ds->config->name, "linux.ftrace");
	assert_int_equal(ds->config->ftrace_config.len, 20);
	assert_memory_equal(ds->config->ftrace_config.data,
			    "\n\x12sched/sched_switch", 20);
	assert_string_equal(ds->config->legacy_config, "legacy");
	assert_int_equal(
		ds->config->buffer_exhausted_policy,
		PERFETTO__PROTOS__DATA_SOURCE_CONFIG__BUFFER_EXHAUSTED_POLICY__BUFFER_EXHAUSTED_STALL_THEN_DROP);
	assert_int_equal(ds->config->priority_boost->priority, 5);

	assert_int_equal(c->duration_ms, 1500);
	assert_true(c->has_write_into_file && c->write_into_file);
	assert_int_equal(c->file_write_period_ms, 2500);
	assert_true(c->max_file_size_bytes == 10000000000ull);
	assert_int_equal(c->flush_period_ms, 30000);
	assert_int_equal(
		c->lockdown_mode,
		PERFETTO__PROTOS__TRACE_CONFIG__LOCKDOWN_MODE_OPERATION__LOCKDOWN_SET);
	assert_int_equal(c->n_producers, 1);
	assert_int_equal(c->producers[0]->shm_size_kb, 8192);
	assert_int_equal(c->producers[0]->page_size_kb, 16);
	assert_int_equal(c->guardrail_overrides->max_tracing_buffer_size_kb,
			 262144);
	Perfetto__Protos__TraceConfig__TriggerConfig *tc = c->trigger_config;
	assert_int_equal(
		tc->trigger_mode,
		PERFETTO__PROTOS__TRACE_CONFIG__TRIGGER_CONFIG__TRIGGER_MODE__START_TRACING);
	assert_int_equal(tc->trigger_timeout_ms, 10000);
	assert_int_equal(tc->n_triggers, 2);
	assert_string_equal(tc->triggers[0]->name, "t1");
	assert_string_equal(tc->triggers[0]->producer_name_regex, ".*");
	assert_int_equal(tc->triggers[0]->stop_delay_ms, 500);
	assert_int_equal(tc->triggers[1]->max_per_24_h, 3);
	assert_true(tc->triggers[1]->skip_probability == 0.25);
	assert_int_equal(c->n_activate_triggers, 2);
	assert_string_equal(c->activate_triggers[1], "b");
	assert_true(c->builtin_data_sources->disable_clock_snapshotting);
	assert_int_equal(
		c->builtin_data_sources->primary_trace_clock,
		PERFETTO__PROTOS__BUILTIN_CLOCK__BUILTIN_CLOCK_MONOTONIC);
	assert_int_equal(c->builtin_data_sources->snapshot_interval_ms, 5000);
	assert_int_equal(c->incremental_state_config->clear_period_ms, 2000);
	assert_string_equal(c->unique_session_name, "session-1");
	assert_int_equal(c->statsd_metadata.len, 2);
	assert_true(c->trace_uuid_msb == -81985529216486896ll);
	assert_true(c->trace_uuid_lsb == 0x7edcba9876543210ll);
	assert_int_equal(c->bugreport_score, 10);
	assert_int_equal(
		c->statsd_logging,
		PERFETTO__PROTOS__TRACE_CONFIG__STATSD_LOGGING__STATSD_LOGGING_DISABLED);
	assert_int_equal(c->trace_filter->bytecode.len, 2);
	Perfetto__Protos__TraceConfig__TraceFilter__StringFilterRule *rule =
		c->trace_filter->string_filter_chain->rules[0];
	assert_int_equal(
		rule->policy,
		PERFETTO__PROTOS__TRACE_CONFIG__TRACE_FILTER__STRING_FILTER_POLICY__SFP_MATCH_REDACT_GROUPS);
	assert_string_equal(rule->regex_pattern, "a(b)");
	assert_int_equal(rule->n_semantic_type, 2);
	assert_int_equal(c->cmd_trace_start_delay->max_delay_ms, 2);
	assert_int_equal(c->n_session_semaphores, 1);
	assert_true(c->session_semaphores[0]->has_max_other_session_count);
	assert_int_equal(
		c->priority_boost->policy,
		PERFETTO__PROTOS__PRIORITY_BOOST_CONFIG__BOOST_POLICY__POLICY_SCHED_FIFO);
	assert_int_equal(
		c->write_flush_mode,
		PERFETTO__PROTOS__TRACE_CONFIG__WRITE_FLUSH_MODE__WRITE_FLUSH_ENABLED);
	assert_int_equal(
		c->fflush_post_write,
		PERFETTO__PROTOS__TRACE_CONFIG__FFLUSH_MODE__FFLUSH_ENABLED);
	assert_non_null(c->compression->deflate);
	assert_null(c->compression->zstd);
	Perfetto__Protos__TraceAttributes *ta = c->trace_attributes;
	assert_int_equal(ta->n_attribute, 2);
	assert_int_equal(
		ta->attribute[0]->value_case,
		PERFETTO__PROTOS__TRACE_ATTRIBUTES__ATTRIBUTE__VALUE_LONG_VALUE);
	assert_true(ta->attribute[0]->long_value == -7);
	assert_string_equal(ta->attribute[1]->string_value, "v");

	check_round_trip(&c->base, &spn_trace_config_text_opts);
	check_round_trip(&c->base, NULL);
	perfetto__protos__trace_config__free_unpacked(c, NULL);
}

static void test_trace_config_brief_example(void **state)
{
	(void)state;
	static const char text[] =
		"buffers { size_kb: 1024 fill_policy: RING_BUFFER } "
		"data_sources { "
		"config { name: \"track_event\" track_event_config { "
		"enabled_categories: "
		"\"*\" } } } duration_ms: 1500";
	char err[256];
	Perfetto__Protos__TraceConfig *c = NULL;
	assert_int_equal(spn_trace_config_parse_text(text, strlen(text), &c,
						     err, sizeof(err)),
			 0);
	// The expected encoding, written out by hand from the field numbers.
	static const uint8_t want[] =
		{
			0x0a, 0x05, 0x08, 0x80, 0x08, 0x20, 0x01, // buffers
			0x12, 0x15, 0x0a, 0x13, // data_sources.config
			0x0a, 0x0b, 't',  'r',  'a',  'c',  'k',
			'_',  'e',  'v',  'e',  'n',  't',  0x8a,
			0x07, 0x03, 0x12, 0x01, '*', // 113: categories
			0x18, 0xdc, 0x0b,            // duration_ms
		};
	size_t n;
	uint8_t *got = pack(&c->base, &n);
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(got, want, n);
	free(got);

	// The wire variant gives the same bytes directly.
	uint8_t *wire = NULL;
	assert_int_equal(spn_textproto_parse_to_wire(
				 &perfetto__protos__trace_config__descriptor,
				 &spn_trace_config_text_opts, text,
				 strlen(text), &wire, &n, err, sizeof(err)),
			 0);
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(wire, want, n);
	free(wire);

	char *printed = NULL;
	size_t plen = 0;
	FILE *f = open_memstream(&printed, &plen);
	assert_int_equal(spn_trace_config_print_text(c, f), 0);
	fclose(f);
	assert_string_equal(printed, "buffers {\n"
				     "  size_kb: 1024\n"
				     "  fill_policy: RING_BUFFER\n"
				     "}\n"
				     "data_sources {\n"
				     "  config {\n"
				     "    name: \"track_event\"\n"
				     "    track_event_config {\n"
				     "      enabled_categories: \"*\"\n"
				     "    }\n"
				     "  }\n"
				     "}\n"
				     "duration_ms: 1500\n");
	free(printed);
	perfetto__protos__trace_config__free_unpacked(c, NULL);
}

static void test_trace_config_errors(void **state)
{
	(void)state;
	const ProtobufCMessageDescriptor *d =
		&perfetto__protos__trace_config__descriptor;
	const struct spn_textproto_opts *o = &spn_trace_config_text_opts;
	expect_error_opts(
		d, o, "buffers {\n  size_kb: 1024\n  fill_policy: RING\n}",
		"3:16: unknown value 'RING' for field 'fill_policy' (enum "
		"perfetto.protos.TraceConfig.BufferConfig.FillPolicy)");
	expect_error_opts(d, o, "duration_ms: 1500\nbufers { size_kb: 1 }",
			  "2:1: unknown field 'bufers' in message "
			  "perfetto.protos.TraceConfig");
	expect_error_opts(
		d, o,
		"data_sources {\n  config {\n    name: \"x\"\n"
		"    track_event_config {\n      enabled_categories: *\n",
		"5:27: unexpected character '*'");
	expect_error_opts(
		d, o,
		"data_sources {\n  config {\n    track_event_config {\n"
		"      enabled_categoris: \"*\"\n    }\n  }\n}\n",
		"4:7: unknown field 'enabled_categoris' in message "
		"perfetto.protos.TrackEventConfig");
	expect_error_opts(
		d, o, "duration_ms: -1",
		"1:14: field 'duration_ms' (uint32) cannot be negative");
	expect_error_opts(d, o, "duration_ms: 4294967296",
			  "1:14: integer 4294967296 out of range for field "
			  "'duration_ms' (uint32)");
	expect_error_opts(
		d, o, "write_into_file: yes",
		"1:18: field 'write_into_file' (bool) expects true, false, "
		"1 or 0, got 'yes'");
	expect_error_opts(
		d, o, "data_sources {\n  config {\n    name: \"x\n  }\n}",
		"3:11: unterminated string (strings cannot span lines)");
	expect_error_opts(d, o, "buffers {\n  size_kb: 1024\n",
			  "3:1: unexpected end of input: missing '}' to close "
			  "'buffers' opened at 1:9");
	expect_error_opts(
		d, o,
		"trace_attributes { attribute { long_value: 1 "
		"string_value: \"x\" } }",
		"1:46: fields 'long_value' and 'string_value' belong to "
		"the same oneof; only one may be set");
	// Without the payload types the track_event_config message is refused.
	expect_error(
		d, "data_sources { config { track_event_config { } } }",
		"1:44: field 'track_event_config' is bytes and no message type "
		"is known for it; give its value as a string");
}

// The full decode of a real Perfetto v14 trace (trace.txt, 47k lines, in
// the protobuf text format) parses to the same message as the binary trace.
static char *read_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open %s", path);
	char *buf = NULL;
	size_t cap = 0;
	*n = 0;
	for (;;) {
		if (*n == cap) {
			cap = cap ? cap * 2 : 1 << 16;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		size_t got = fread(buf + *n, 1, cap - *n, f);
		if (got == 0)
			break;
		*n += got;
	}
	fclose(f);
	return buf;
}

static void test_real_trace_text(void **state)
{
	(void)state;
	size_t tn, bn;
	char *text = read_file(
		SPN_TESTDATA_DIR "/perfetto_v14/session1/trace.txt", &tn);
	uint8_t *bin = (uint8_t *)read_file(
		SPN_TESTDATA_DIR "/perfetto_v14/session1/trace.pftrace", &bn);
	// v14 wrote previous_packet_dropped as a bool; our proto has the newer
	// uint32 (same varint on the wire), and text format does not let `true`
	// stand for an integer.
	static const char from[] = "previous_packet_dropped: true";
	static const char to[] = "previous_packet_dropped: 1   ";
	char *at = memmem(text, tn, from, sizeof(from) - 1);
	assert_non_null(at);
	memcpy(at, to, sizeof(to) - 1);

	char err[256];
	ProtobufCMessage *parsed = NULL;
	int rc = spn_textproto_parse_ex(&perfetto__protos__trace__descriptor,
					&spn_trace_config_text_opts, text, tn,
					&parsed, err, sizeof(err));
	if (rc)
		fail_msg("trace.txt: %s", err);
	ProtobufCMessage *decoded = protobuf_c_message_unpack(
		&perfetto__protos__trace__descriptor, NULL, bn, bin);
	assert_non_null(decoded);
	assert_int_equal(((Perfetto__Protos__Trace *)parsed)->n_packet, 4050);
	size_t n1, n2;
	uint8_t *b1 = pack(parsed, &n1), *b2 = pack(decoded, &n2);
	assert_int_equal(n1, n2);
	assert_memory_equal(b1, b2, n1);
	free(b1);
	free(b2);
	check_round_trip(decoded, &spn_trace_config_text_opts);
	free_msg(parsed);
	free_msg(decoded);
	free(text);
	free(bin);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scalars),
		cmocka_unit_test(test_integer_forms),
		cmocka_unit_test(test_floats),
		cmocka_unit_test(test_bools),
		cmocka_unit_test(test_enums),
		cmocka_unit_test(test_strings),
		cmocka_unit_test(test_nested_and_repeated),
		cmocka_unit_test(test_separators_and_comments),
		cmocka_unit_test(test_oneof),
		cmocka_unit_test(test_required),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_depth_limit),
		cmocka_unit_test(test_error_buffer_and_args),
		cmocka_unit_test(test_prefixes_and_corruptions),
		cmocka_unit_test(test_payload_types),
		cmocka_unit_test(test_print_golden),
		cmocka_unit_test(test_print_presence_and_unknown),
		cmocka_unit_test(test_print_write_error),
		cmocka_unit_test(test_round_trip_built),
		cmocka_unit_test(test_trace_config_realistic),
		cmocka_unit_test(test_trace_config_brief_example),
		cmocka_unit_test(test_trace_config_errors),
		cmocka_unit_test(test_real_trace_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
