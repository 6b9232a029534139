// SPDX-License-Identifier: Apache-2.0
// The spindle CLI's trace output: reassembles ReadBuffers slices into
// packets, writes them as a Trace (each packet as field 1, 0x0A <varint
// len> <bytes>), and keeps the summary counters (packets, bytes, sequences,
// data losses) by scanning each packet's top-level fields, and those of the
// packets inside compressed_packets (trace-config.md §4.6).
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "cmd/spindle_cli.h"
#include "trace_stats.pb-c.h"

/* Write buffer of the output. */
#define CLI_OUT_BUF (1u << 20)

/* TracePacket fields the summary looks at (trace-config.md §4). */
#define PKT_SEQ_ID 10		/* trusted_packet_sequence_id, varint */
#define PKT_TRACE_STATS 35	/* trace_stats, message */
#define PKT_PREV_DROPPED 42	/* previous_packet_dropped, varint */
#define PKT_COMPRESSED 50	/* compressed_packets: a deflated Trace */

/* Reads a varint at *p (< end). Returns 0, or -EBADMSG when truncated or
 * longer than 10 bytes. */
static int cli_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t r = 0;

	for (int shift = 0; shift < 70 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;

		r |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -EBADMSG;
}

/* Walks one field: *field, *wt, and for varints *v, for LEN fields *v the
 * length with *p left at the payload. Advances *p past scalars. */
static int cli_field(const uint8_t **p, const uint8_t *end, uint32_t *field,
		     unsigned *wt, uint64_t *v)
{
	uint64_t key;

	if (cli_varint(p, end, &key) || (key >> 3) == 0 || (key >> 3) > UINT32_MAX)
		return -EBADMSG;
	*field = (uint32_t)(key >> 3);
	*wt = key & 7;
	switch (*wt) {
	case 0:
		return cli_varint(p, end, v);
	case 1:
	case 5:
		*v = *wt == 1 ? 8 : 4;
		if ((uint64_t)(end - *p) < *v)
			return -EBADMSG;
		*p += *v;
		return 0;
	case 2:
		if (cli_varint(p, end, v) || *v > (uint64_t)(end - *p))
			return -EBADMSG;
		return 0;
	default:
		return -EBADMSG;
	}
}

/* Adds id to the sequence set. Returns true when it was new. */
static bool cli_seq_add(struct cli_summary *s, uint32_t id)
{
	size_t mask, i;

	if ((s->n_seqs + 1) * 2 > s->seq_cap) {
		size_t cap = s->seq_cap ? s->seq_cap * 2 : 64;
		uint32_t *n = calloc(cap, sizeof(*n)), *old = s->seqs;
		size_t oldcap = s->seq_cap;

		if (!n)
			return true;	/* out of memory: counts stay approximate */
		s->seqs = n;
		s->seq_cap = cap;
		s->n_seqs = 0;
		for (size_t j = 0; j < oldcap; j++)
			if (old[j])
				cli_seq_add(s, old[j]);
		free(old);
	}
	mask = s->seq_cap - 1;
	for (i = (id * 2654435761u) & mask; s->seqs[i]; i = (i + 1) & mask)
		if (s->seqs[i] == id)
			return false;
	s->seqs[i] = id;
	s->n_seqs++;
	return true;
}

/* Loss counters of a TraceStats that belong to the session: chunks
 * overwritten or discarded before being read, failed patches, ABI
 * violations, writer-side drops and invalid packets. (The top-level
 * chunks_discarded and patches_discarded count for the whole service,
 * every session since it started, so they are left out.) */
static void cli_summary_stats(struct cli_summary *s, const uint8_t *p,
			      size_t len)
{
	Perfetto__Protos__TraceStats *ts =
		perfetto__protos__trace_stats__unpack(NULL, len, p);
	uint64_t n;

	if (!ts)
		return;
	n = ts->invalid_packets;
	for (size_t i = 0; i < ts->n_buffer_stats; i++) {
		const Perfetto__Protos__TraceStats__BufferStats *b =
			ts->buffer_stats[i];

		n += b->chunks_overwritten + b->chunks_discarded +
		     b->patches_failed + b->abi_violations +
		     b->trace_writer_packet_loss;
	}
	s->has_stats = true;
	s->stats_losses = n;
	perfetto__protos__trace_stats__free_unpacked(ts, NULL);
}

/* Inflates a zlib stream d[0..n) into a malloc'd *out. Returns 0, or
 * -EBADMSG / -ENOMEM. */
static int cli_inflate(const uint8_t *d, size_t n, uint8_t **out, size_t *out_len)
{
	z_stream zs;
	size_t cap = n * 4 + 4096;
	uint8_t *b = NULL, *nb;
	int zr;

	memset(&zs, 0, sizeof(zs));
	if (n > UINT_MAX || inflateInit(&zs) != Z_OK)
		return -ENOMEM;
	zs.next_in = (Bytef *)(uintptr_t)d;
	zs.avail_in = (uInt)n;
	do {
		if (!b || zs.total_out == cap) {
			if (b)
				cap *= 2;
			if (cap > UINT_MAX || !(nb = realloc(b, cap))) {
				zr = Z_MEM_ERROR;
				break;
			}
			b = nb;
		}
		zs.next_out = b + zs.total_out;
		zs.avail_out = (uInt)(cap - zs.total_out);
		zr = inflate(&zs, Z_NO_FLUSH);
	} while (zr == Z_OK);
	*out_len = zs.total_out;
	inflateEnd(&zs);
	if (zr != Z_STREAM_END || zs.avail_in) {
		free(b);
		return zr == Z_MEM_ERROR ? -ENOMEM : -EBADMSG;
	}
	*out = b;
	return 0;
}

static void cli_summary_scan(struct cli_summary *s, const uint8_t *p, size_t len,
			     bool outer);

/* Counts the packets of a compressed_packets payload as if they had come
 * one by one (a compressed packet inside is counted as one: the service
 * never nests them). Returns false when it does not inflate. */
static bool cli_summary_compressed(struct cli_summary *s, const uint8_t *d, size_t n)
{
	const uint8_t *p, *end;
	uint8_t *raw;
	size_t len;

	if (cli_inflate(d, n, &raw, &len))
		return false;
	for (p = raw, end = raw + len; p < end;) {
		uint32_t field;
		unsigned wt;
		uint64_t v;

		if (cli_field(&p, end, &field, &wt, &v) || field != 1 || wt != 2)
			break;	/* what came before is counted */
		cli_summary_scan(s, p, (size_t)v, false);
		p += v;
	}
	free(raw);
	return true;
}

/* Counts one packet (outer: as read, so compressed_packets is opened). */
static void cli_summary_scan(struct cli_summary *s, const uint8_t *p, size_t len,
			     bool outer)
{
	const uint8_t *end = p + len;
	uint64_t seq = 0, dropped = 0;

	while (p < end) {
		uint32_t field;
		unsigned wt;
		uint64_t v;

		if (cli_field(&p, end, &field, &wt, &v)) {
			s->packets++;	/* the packet is counted, its fields not */
			return;
		}
		if (wt == 0 && field == PKT_SEQ_ID)
			seq = v;
		else if (wt == 0 && field == PKT_PREV_DROPPED)
			dropped = v;
		else if (wt == 2 && field == PKT_TRACE_STATS)
			cli_summary_stats(s, p, (size_t)v);
		else if (wt == 2 && field == PKT_COMPRESSED && outer &&
			 cli_summary_compressed(s, p, (size_t)v))
			return;	/* its packets are counted instead */
		if (wt == 2)
			p += v;
	}
	s->packets++;
	if (seq && seq <= UINT32_MAX) {
		bool first = cli_seq_add(s, (uint32_t)seq);

		/* The first packet of a sequence may be flagged without a
		 * loss (trace-buffer.md §4.1); later flags are gaps. */
		if (dropped && !first)
			s->gap_marks++;
	}
}

void cli_summary_packet(struct cli_summary *s, const uint8_t *p, size_t len)
{
	cli_summary_scan(s, p, len, true);
}

void cli_summary_free(struct cli_summary *s)
{
	free(s->seqs);
	memset(s, 0, sizeof(*s));
}

void cli_summary_print(const struct cli_summary *s, const char *path)
{
	char hb[32];
	uint64_t losses = s->has_stats ? s->stats_losses : s->gap_marks;

	fprintf(stderr,
		"spindle: %llu packets, %llu bytes (%s), %zu sequences, "
		"%llu data losses, written to %s\n",
		(unsigned long long)s->packets, (unsigned long long)s->bytes,
		cli_human_bytes(s->bytes, hb, sizeof(hb)), s->n_seqs,
		(unsigned long long)losses,
		strcmp(path, "-") ? path : "<stdout>");
}

int cli_out_open(struct cli_out *out, const char *path)
{
	memset(out, 0, sizeof(*out));
	out->path = path;
	out->is_stdout = !strcmp(path, "-");
	out->fd = out->is_stdout ?
			  STDOUT_FILENO :
			  open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			       0644);
	if (out->fd < 0) {
		fprintf(stderr, "spindle: cannot open output %s: %s\n", path,
			strerror(errno));
		return CLI_EXIT_FAIL;
	}
	return 0;
}

/* Writes all of [p, p+len) to the fd. */
static int cli_write_fd(struct cli_out *out, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = write(out->fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int cli_out_flush(struct cli_out *out)
{
	int rc = cli_write_fd(out, out->buf, out->len);

	out->len = 0;
	return rc;
}

/* Appends bytes through the write buffer. */
static int cli_out_put(struct cli_out *out, const uint8_t *p, size_t len)
{
	if (!out->buf) {
		out->buf = malloc(CLI_OUT_BUF);
		if (!out->buf)
			return -ENOMEM;
		out->cap = CLI_OUT_BUF;
	}
	if (out->len + len > out->cap) {
		int rc = cli_out_flush(out);

		if (rc)
			return rc;
		if (len > out->cap)
			return cli_write_fd(out, p, len);
	}
	memcpy(out->buf + out->len, p, len);
	out->len += len;
	return 0;
}

/* Writes one whole packet as Trace.packet and counts it. */
static int cli_out_packet(struct cli_out *out, const uint8_t *p, size_t len)
{
	uint8_t hdr[11], *h = hdr;
	uint64_t v = len;
	int rc;

	*h++ = 0x0A;	/* field 1, wire type 2 */
	while (v >= 0x80) {
		*h++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*h++ = (uint8_t)v;
	rc = cli_out_put(out, hdr, (size_t)(h - hdr));
	if (!rc)
		rc = cli_out_put(out, p, len);
	if (rc)
		return rc;
	out->sum.bytes += (uint64_t)(h - hdr) + len;
	cli_summary_packet(&out->sum, p, len);
	return 0;
}

int cli_out_slice(struct cli_out *out, const uint8_t *data, size_t len,
		  bool last)
{
	int rc;

	if (out->err)
		return out->err;
	if (!out->pkt_len && last) {
		rc = cli_out_packet(out, data, len);	/* the common case */
		goto done;
	}
	if (out->pkt_len + len > CLI_MAX_PACKET_BYTES) {
		rc = -EFBIG;
		goto done;
	}
	if (out->pkt_len + len > out->pkt_cap) {
		size_t cap = out->pkt_cap ? out->pkt_cap : 65536;
		uint8_t *n;

		while (cap < out->pkt_len + len)
			cap *= 2;
		n = realloc(out->pkt, cap);
		if (!n) {
			rc = -ENOMEM;
			goto done;
		}
		out->pkt = n;
		out->pkt_cap = cap;
	}
	if (len)
		memcpy(out->pkt + out->pkt_len, data, len);
	out->pkt_len += len;
	rc = 0;
	if (last) {
		rc = cli_out_packet(out, out->pkt, out->pkt_len);
		out->pkt_len = 0;
	}
done:
	if (rc)
		out->err = rc;
	return rc;
}

int cli_out_close(struct cli_out *out)
{
	int rc = out->err;

	if (out->fd >= 0 && out->len && !rc)
		rc = cli_out_flush(out);
	if (out->fd >= 0 && !out->is_stdout && close(out->fd) && !rc)
		rc = -errno;
	out->fd = -1;
	free(out->buf);
	free(out->pkt);
	out->buf = out->pkt = NULL;
	out->len = out->pkt_len = out->cap = out->pkt_cap = 0;
	return rc;
}

void cli_out_drop_empty(const struct cli_out *out)
{
	struct stat st;

	if (out->path && !out->is_stdout && !stat(out->path, &st) &&
	    S_ISREG(st.st_mode) && st.st_size == 0)
		unlink(out->path);
}

int cli_out_scan_file(struct cli_out *out, const char *path)
{
	const uint8_t *p, *end, *base;
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	out->sum.bytes = (uint64_t)st.st_size;
	if (!st.st_size) {
		close(fd);
		return 0;
	}
	base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (base == MAP_FAILED)
		return -errno;
	end = base + st.st_size;
	for (p = base; p < end && !rc;) {
		uint32_t field;
		unsigned wt;
		uint64_t v;

		rc = cli_field(&p, end, &field, &wt, &v);
		if (!rc && wt == 2) {
			if (field == 1)
				cli_summary_packet(&out->sum, p, (size_t)v);
			p += v;
		}
	}
	munmap((void *)base, (size_t)st.st_size);
	return rc;
}
