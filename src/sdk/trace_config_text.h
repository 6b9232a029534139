// SPDX-License-Identifier: Apache-2.0
// TraceConfig in protobuf text format (`spindle --txt`, --query-raw output):
// the generic textproto module plus the message types of the
// DataSourceConfig bytes fields that our protos define.
#ifndef SPN_SDK_TRACE_CONFIG_TEXT_H
#define SPN_SDK_TRACE_CONFIG_TEXT_H

#include "sdk/textproto.h"
#include "trace_config.pb-c.h"

// Payload types for TraceConfig text: DataSourceConfig.track_event_config is
// `bytes` in proto/data_source_config.proto (passed through untouched), and
// may be written as `track_event_config { enabled_categories: "*" }`.
extern const struct spn_textproto_opts spn_trace_config_text_opts;

// Parses a text-format TraceConfig; see spn_textproto_parse() for results
// and errors. Free *out with perfetto__protos__trace_config__free_unpacked(
// *out, NULL).
int spn_trace_config_parse_text(const char *text, size_t len,
				Perfetto__Protos__TraceConfig **out, char *err,
				size_t errlen);

// Prints `cfg` in text format (track_event_config as a message when it
// decodes as one); see spn_textproto_print_ex().
int spn_trace_config_print_text(const Perfetto__Protos__TraceConfig *cfg,
				FILE *out);

#endif // SPN_SDK_TRACE_CONFIG_TEXT_H
