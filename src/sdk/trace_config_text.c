// SPDX-License-Identifier: Apache-2.0
// TraceConfig text format: binds the generic textproto parser and printer to
// perfetto.protos.TraceConfig and the payload types of its bytes fields.
#include "sdk/trace_config_text.h"

// Message types a DataSourceConfig bytes field may be written as, matched by
// name (track_event_config -> TrackEventConfig). Add a type here when its
// .proto joins proto/.
static const ProtobufCMessageDescriptor *const spn_tc_payload_types[] = {
	&perfetto__protos__track_event_config__descriptor,
};

const struct spn_textproto_opts spn_trace_config_text_opts = {
	.payload_types = spn_tc_payload_types,
	.n_payload_types =
		sizeof(spn_tc_payload_types) / sizeof(spn_tc_payload_types[0]),
};

int spn_trace_config_parse_text(const char *text, size_t len,
				Perfetto__Protos__TraceConfig **out, char *err,
				size_t errlen)
{
	ProtobufCMessage *m = NULL;
	int rc = spn_textproto_parse_ex(
		&perfetto__protos__trace_config__descriptor,
		&spn_trace_config_text_opts, text, len, &m, err, errlen);
	if (out)
		*out = (Perfetto__Protos__TraceConfig *)m;
	else if (m)
		protobuf_c_message_free_unpacked(m, NULL);
	return rc;
}

int spn_trace_config_print_text(const Perfetto__Protos__TraceConfig *cfg,
				FILE *out)
{
	return spn_textproto_print_ex(cfg ? &cfg->base : NULL,
				      &spn_trace_config_text_opts, out);
}
