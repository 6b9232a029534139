// SPDX-License-Identifier: Apache-2.0
// Compressed reads (trace-config.md §4.6): which compression a session's
// TraceConfig selects, and the deflate of one read batch (ReadBuffers reply
// or write_into_file drain) into the single compressed_packets packet that
// replaces it. Any thread; no state kept between calls.
#ifndef SPN_CORE_SVC_COMPRESS_H
#define SPN_CORE_SVC_COMPRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/svc_packets.h"
#include "trace_config.pb-c.h"

/* TracePacket.compressed_packets: a deflated (zlib wrapper) Trace stream. */
#define SVC_COMPRESSED_PACKETS_FIELD 50u
/* zlib level the reference service uses (constants.md §6). */
#define SVC_DEFLATE_LEVEL 6
/* Largest batch deflated in one packet; bigger batches go out as they are
 * (a read batch is a few MiB at most: this only bounds zlib's 32-bit
 * counters). */
#define SVC_DEFLATE_MAX_IN (1u << 30)

/* The compression of a session's reads. */
enum svc_compression {
	SVC_COMPRESS_NONE = 0,	/* packets go out as they are */
	SVC_COMPRESS_DEFLATE,	/* one compressed_packets packet per batch */
};

/*
 * The compression cfg asks for, among those this service has: deflate when
 * compression.deflate (field 47) is set or compression_type (field 24) is
 * COMPRESSION_TYPE_DEFLATE. compression.zstd alone selects nothing (no zstd
 * here: "the highest-numbered one the service supports", §4.6); *zstd_only
 * (may be NULL) tells the caller so, for its log line.
 */
enum svc_compression svc_compress_pick(const Perfetto__Protos__TraceConfig *cfg,
				       bool *zstd_only);

/*
 * Deflates the Trace-framed packets in[0..n) (each 0x0A <len> <packet>) at
 * SVC_DEFLATE_LEVEL with the zlib wrapper and appends one Trace record to
 * out: 0x0A <len> { 0x92 0x03 <len> <zlib stream> }, a packet whose only
 * field is compressed_packets. Memory through svc_mem_*. Returns 0;
 * -EINVAL for n == 0; -EFBIG above SVC_DEFLATE_MAX_IN; -ENOMEM; -EIO when
 * zlib fails. On failure out holds what it held before.
 */
int svc_compress_deflate(const uint8_t *in, size_t n, struct svc_pkts_out *out);

#endif
