// SPDX-License-Identifier: Apache-2.0
// Compressed reads (trace-config.md §4.6): the choice of compression from a
// TraceConfig, and one read batch deflated with zlib into a
// compressed_packets packet (svc_compress.h).
#include "core/svc_compress.h"

#include <errno.h>
#include <string.h>
#include <zlib.h>

#include "core/mem_hooks.h"
#include "spindle/pb.h"

enum svc_compression svc_compress_pick(const Perfetto__Protos__TraceConfig *cfg,
				       bool *zstd_only)
{
	const Perfetto__Protos__TraceConfig__CompressionConfig *c = cfg->compression;
	bool deflate = (c && c->deflate) ||
		       (cfg->has_compression_type &&
			cfg->compression_type ==
				PERFETTO__PROTOS__TRACE_CONFIG__COMPRESSION_TYPE__COMPRESSION_TYPE_DEFLATE);

	if (zstd_only)
		*zstd_only = !deflate && c && c->zstd;
	return deflate ? SVC_COMPRESS_DEFLATE : SVC_COMPRESS_NONE;
}

/* zlib's allocator, through the service's hooks (so tests can fail it). */
static voidpf svc_zalloc(voidpf opaque, uInt items, uInt size)
{
	(void)opaque;
	return svc_mem_calloc(items, size);
}

static void svc_zfree(voidpf opaque, voidpf p)
{
	(void)opaque;
	svc_mem_free(p);
}

/* Runs zs over its whole input into its whole output with Z_FINISH.
 * Returns the compressed length, or -ENOMEM / -EIO. */
static long svc_deflate_all(z_stream *zs)
{
	int zr = deflate(zs, Z_FINISH);

	/* The output holds deflateBound() bytes, so one call finishes. */
	if (zr == Z_STREAM_END)
		return (long)zs->total_out;
	return zr == Z_MEM_ERROR ? -ENOMEM : -EIO;
}

int svc_compress_deflate(const uint8_t *in, size_t n, struct svc_pkts_out *out)
{
	/* Room before the data for both headers: record key + length, field
	 * 50's two-byte key + length. Filled once the length is known. */
	enum { HDR_MAX = 1 + SPN_PB_MAX_VARINT + 2 + SPN_PB_MAX_VARINT };
	z_stream zs;
	uint8_t hdr[HDR_MAX], *p, *dst;
	size_t bound, hlen;
	long clen;
	int zr;

	if (n == 0)
		return -EINVAL;
	if (n > SVC_DEFLATE_MAX_IN)
		return -EFBIG;
	memset(&zs, 0, sizeof(zs));
	zs.zalloc = svc_zalloc;
	zs.zfree = svc_zfree;
	zr = deflateInit(&zs, SVC_DEFLATE_LEVEL);
	if (zr != Z_OK)
		return zr == Z_MEM_ERROR ? -ENOMEM : -EIO;
	bound = deflateBound(&zs, (uLong)n);
	if (svc_pkts_out_reserve(out, HDR_MAX + bound) < 0) {
		deflateEnd(&zs);
		return -ENOMEM;
	}
	/* Deflate past the header room, then close the gap. */
	dst = out->data + out->len;
	zs.next_in = (Bytef *)(uintptr_t)in;
	zs.avail_in = (uInt)n;
	zs.next_out = dst + HDR_MAX;
	zs.avail_out = (uInt)bound;
	clen = svc_deflate_all(&zs);
	deflateEnd(&zs);
	if (clen < 0)
		return (int)clen;
	p = spn_pb_put_key(hdr, 1, SPN_PB_LEN);
	p = spn_pb_put_varint(p, spn_pb_bytes_field_len(SVC_COMPRESSED_PACKETS_FIELD,
							 (size_t)clen));
	p = spn_pb_put_key(p, SVC_COMPRESSED_PACKETS_FIELD, SPN_PB_LEN);
	p = spn_pb_put_varint(p, (uint64_t)clen);
	hlen = (size_t)(p - hdr);
	memcpy(dst, hdr, hlen);
	memmove(dst + hlen, dst + HDR_MAX, (size_t)clen);
	out->len += hlen + (size_t)clen;
	return 0;
}
