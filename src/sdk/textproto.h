// SPDX-License-Identifier: Apache-2.0
// Protobuf text format for any protobuf-c message: a parser driven by the
// message descriptors (used for `spindle --txt` TraceConfigs) and a printer.
#ifndef SPN_SDK_TEXTPROTO_H
#define SPN_SDK_TEXTPROTO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <protobuf-c/protobuf-c.h>

// Deepest nesting of messages the parser accepts (the top level is 0).
#define SPN_TEXTPROTO_MAX_DEPTH 100

// Accepted grammar (the protobuf text format as Perfetto configs use it):
//   message  := { field [',' | ';'] }
//   field    := name ':' scalar
//             | name ':' '[' [scalar {',' scalar}] ']'        (repeated only)
//             | name [':'] ('{' message '}' | '<' message '>')
//             | name [':'] '[' [msg {',' msg}] ']'             (repeated only)
//   scalar   := ['-'] integer | ['-'] float | ['-'] (inf|infinity|nan)
//             | identifier (enum value name, bool) | string {string}
// Names are matched exactly against the descriptor's field names. Integers
// are decimal, hex (0x) or octal (leading 0); floats may end in f/F; bools
// are true/false/True/False/t/f/1/0; enums are given by value name or by
// number (any int32 number is accepted, so values newer than our .proto
// still pass through). Strings take single or double quotes, adjacent
// strings concatenate, and the C escapes \a \b \f \n \r \t \v \\ \' \" \?
// \xH[H] \o[o[o]] \uXXXX \UXXXXXXXX work (\u as UTF-8, surrogate pairs
// joined). `string` fields may not contain NUL (C strings cannot hold it);
// `bytes` fields take any bytes. `#` starts a comment to the end of line.
// A non-repeated field given twice, two members of one oneof, a missing
// required field, extensions (`[ext]`) and groups are errors.

// Message types that `bytes` fields may carry. A bytes field whose name in
// CamelCase equals a listed type's short name (track_event_config ->
// TrackEventConfig) may then be written as a message, `track_event_config {
// enabled_categories: "*" }`: the parser encodes the sub-message as that
// type into the bytes, and the printer prints bytes that decode (and
// re-encode to the same bytes) as that type as a message. Such a field still
// accepts a string value.
struct spn_textproto_opts {
	const ProtobufCMessageDescriptor *const *payload_types; // the types
	size_t n_payload_types; // number of entries in payload_types
};

// Parses `len` bytes of `text` (need not be NUL-terminated) as a message of
// type `desc`. On success returns 0 and stores in *out a message allocated
// by protobuf_c_message_unpack() with the default allocator; free it with
// protobuf_c_message_free_unpacked(*out, NULL). On bad input returns -EINVAL
// and writes "line:col: message" (1-based line and byte column) into `err`
// (truncated to `errlen`, always NUL-terminated when errlen > 0); -ENOMEM
// when out of memory. `err` may be NULL when errlen is 0. *out is NULL on
// error.
int spn_textproto_parse(const ProtobufCMessageDescriptor *desc,
			const char *text, size_t len, ProtobufCMessage **out,
			char *err, size_t errlen);

// spn_textproto_parse() with options (`opts` may be NULL).
int spn_textproto_parse_ex(const ProtobufCMessageDescriptor *desc,
			   const struct spn_textproto_opts *opts,
			   const char *text, size_t len, ProtobufCMessage **out,
			   char *err, size_t errlen);

// Same as spn_textproto_parse_ex() but returns the protobuf wire encoding
// (fields in the order written, repeated scalars unpacked) in a malloc()ed
// buffer *buf of *buf_len bytes, for callers that only send the bytes on.
// *buf may be NULL when *buf_len is 0. Free with free().
int spn_textproto_parse_to_wire(const ProtobufCMessageDescriptor *desc,
				const struct spn_textproto_opts *opts,
				const char *text, size_t len, uint8_t **buf,
				size_t *buf_len, char *err, size_t errlen);

// Prints `m` in text format to `out`: fields in descriptor (field number)
// order, two-space indentation, one field per line, nested messages as
// `name {` ... `}`. Proto2 presence is respected (has_ flags, NULL
// pointers), proto3 fields without presence are printed when non-zero,
// oneofs only for the active member. Enums print by name (by number when
// the value has no name), floats in their shortest round-tripping form,
// strings and bytes double-quoted with C escapes (valid UTF-8 in strings is
// kept). Unknown fields kept by protobuf-c are printed as `# unknown field
// N: value` comments, so the output always parses back with
// spn_textproto_parse() into the same known fields. Returns 0, or -EIO when
// writing to `out` failed, -EINVAL for a NULL/invalid message.
int spn_textproto_print(const ProtobufCMessage *m, FILE *out);

// spn_textproto_print() with options (`opts` may be NULL); -ENOMEM when a
// payload could not be decoded for lack of memory.
int spn_textproto_print_ex(const ProtobufCMessage *m,
			   const struct spn_textproto_opts *opts, FILE *out);

#endif // SPN_SDK_TEXTPROTO_H
