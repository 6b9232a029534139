// SPDX-License-Identifier: Apache-2.0
// Reading a session out: ReadBuffers replies (packets cut into slices that
// keep every frame under the 128 KiB limit) and write_into_file drains,
// each a batch of the service's packets, the producers' packets of every
// buffer in config order, then the closing service packets; a batch
// deflated into one compressed_packets packet when the config asks for it
// (trace-config.md §4.6).
//
// Control thread only. Lanes keep writing meanwhile: the trace buffer
// reader never blocks them (tbuf.h).
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ctl_int.h"
#include "core/svc_compress.h"
#include "ipc/log.h"
#include "spindle/pb.h"

/* consumer-port.md §4: a reply holds at most this much slice data. */
#define RB_REPLY_LIMIT (131072u - 64u)
#define RB_SLICE_OVERHEAD 16u		/* counted per slice */
#define RB_MAX_SLICE 130560u		/* 128 KiB - 512 */
#define RB_BATCH 32768u			/* packets read per buffer pass */
#define FILE_BATCH (1u << 20)		/* kWriteIntoFileChunkSize */

/* Packs slices into ReadBuffersResponse frames and sends them. */
struct rb_writer {
	struct ipc_reply *reply;	/* the ReadBuffers call */
	uint8_t *buf;			/* encoded ReadBuffersResponse */
	size_t len;			/* bytes used */
	size_t counted;			/* data + 16 per slice, as the limit counts */
	size_t total;			/* reply bytes produced so far */
	int err;			/* first send error */
};

static void rb_flush(struct rb_writer *w, bool has_more)
{
	int rc = ipc_reply_send_raw(w->reply, w->len ? w->buf : NULL, w->len,
				    -1, has_more);

	if (rc < 0 && !w->err)
		w->err = rc;
	w->len = 0;
	w->counted = 0;
}

/* Appends one slice (field 2: {1: data, 2: last}). */
static void rb_slice(struct rb_writer *w, const uint8_t *d, size_t n, bool last)
{
	uint8_t *p, *slot;

	if (w->counted + n + RB_SLICE_OVERHEAD > RB_REPLY_LIMIT)
		rb_flush(w, true);
	p = spn_pb_begin_nested(w->buf + w->len, 2, &slot);
	p = spn_pb_field_bytes(p, 1, d, n);
	if (last)
		p = spn_pb_field_bool(p, 2, true);
	spn_pb_end_nested(slot, p);
	w->total += (size_t)(p - w->buf) - w->len;
	w->len = (size_t)(p - w->buf);
	w->counted += n + RB_SLICE_OVERHEAD;
}

/* Sends every packet of a Trace-framed run as slices. */
static void rb_packets(struct rb_writer *w, const uint8_t *d, size_t len)
{
	const uint8_t *p = d, *end = d + len;
	struct spn_pb_field f;

	while (p < end) {
		int n = spn_pb_next_field(p, end, &f);

		if (n <= 0 || f.id != 1 || f.wt != SPN_PB_LEN)
			break; /* our own framing: cannot happen */
		for (size_t off = 0; off < f.value || f.value == 0;) {
			size_t take = f.value - off;

			if (take > RB_MAX_SLICE)
				take = RB_MAX_SLICE;
			rb_slice(w, f.data + off, take, off + take == f.value);
			off += take;
			if (f.value == 0)
				break;
		}
		p += n;
	}
}

/* A session that must return nothing (consumer-port.md §4). */
static bool ctl_read_blocked(const struct ctl_session *s)
{
	/* A clone is read whatever its triggers, unless it was written
	 * whole into the caller's file (its source wrote into a file). */
	if (s->state == SVC_SESSION_CLONED_READ_ONLY)
		return s->cfg->write_into_file;
	if (s->cfg->write_into_file)
		return true; /* even once its file is closed */
	if (s->cfg->trigger_config && s->cfg->trigger_config->n_triggers &&
	    !s->triggered)
		return true;
	return s->trigger_mode == SVC_TRIGGER_CLONE_SNAPSHOT;
}

/*
 * Produces one batch in Trace framing: service prologue, every buffer's
 * packets (up to limit bytes per pass), epilogue when all drained. Calls
 * emit for each run of packets. Returns 1 when everything was drained,
 * 0 when more is left, -errno on failure.
 */
static int ctl_batch_plain(struct ctl_session *s, size_t limit,
			   void (*emit)(void *, const uint8_t *, size_t), void *ctx)
{
	struct svc_pkts_out po = { 0 };
	bool all = true;
	int rc;

	rc = svc_pkts_prologue(&s->pkts, &po, NULL);
	if (rc < 0)
		return rc;
	if (po.len)
		emit(ctx, po.data, po.len);
	svc_pkts_out_free(&po);
	for (unsigned i = 0; i < s->nbufs; i++) {
		struct svc_tbuf_out to = { 0 };
		bool drained = false;

		rc = svc_tbuf_read(s->bufs[i]->tb, s->seqids, &to, limit,
				   &drained);
		if (to.len)
			emit(ctx, to.data, to.len);
		svc_tbuf_out_free(&to);
		if (rc < 0)
			return rc;
		all &= drained;
	}
	rc = svc_pkts_epilogue(&s->pkts, &po, all, ctl_fill_stats_cb, s);
	if (rc >= 0 && po.len)
		emit(ctx, po.data, po.len);
	svc_pkts_out_free(&po);
	if (rc < 0)
		return rc;
	return all ? 1 : 0;
}

/* Gathers a batch for compression: emit of ctl_batch_plain. */
struct batch_acc {
	struct svc_pkts_out raw;	/* the batch's packets, Trace framed */
	bool plain;			/* gathering failed: pass runs on */
	void (*emit)(void *, const uint8_t *, size_t); /* the real emit */
	void *ctx;			/* its context */
};

static void batch_collect(void *ctx, const uint8_t *d, size_t n)
{
	struct batch_acc *a = ctx;

	if (!a->plain && svc_pkts_out_reserve(&a->raw, n) == 0) {
		memcpy(a->raw.data + a->raw.len, d, n);
		a->raw.len += n;
		return;
	}
	if (!a->plain) {
		/* No memory: what was gathered and the rest go out as they
		 * are, in order. */
		a->plain = true;
		if (a->raw.len)
			a->emit(a->ctx, a->raw.data, a->raw.len);
		a->raw.len = 0;
	}
	a->emit(a->ctx, d, n);
}

/*
 * ctl_batch_plain, with the batch replaced by one compressed_packets packet
 * when the session's config asks for deflate. Packets already read out of
 * the buffers are never lost: a batch that cannot be gathered or deflated
 * (memory) goes out uncompressed, with a warning.
 */
static int ctl_batch(struct ctl_session *s, size_t limit,
		     void (*emit)(void *, const uint8_t *, size_t), void *ctx)
{
	struct batch_acc a = { .emit = emit, .ctx = ctx };
	struct svc_pkts_out z = { 0 };
	int rc, zr = 0;

	if (svc_compress_pick(s->cfg, NULL) != SVC_COMPRESS_DEFLATE)
		return ctl_batch_plain(s, limit, emit, ctx);
	rc = ctl_batch_plain(s, limit, batch_collect, &a);
	if (a.raw.len) {
		zr = svc_compress_deflate(a.raw.data, a.raw.len, &z);
		if (zr == 0)
			emit(ctx, z.data, z.len);
		else
			emit(ctx, a.raw.data, a.raw.len);
	}
	if ((a.plain || zr < 0) && !s->plain_warned) {
		s->plain_warned = true;
		spn_log_warn("ctl", "session %llu: read batch sent uncompressed: %s "
			     "(logged once per session)", (unsigned long long)s->id,
			     strerror(a.plain ? ENOMEM : -zr));
	}
	svc_pkts_out_free(&z);
	svc_pkts_out_free(&a.raw);
	return rc;
}

static void rb_emit(void *ctx, const uint8_t *d, size_t n)
{
	rb_packets(ctx, d, n);
}

/*
 * A ReadBuffers call in progress. It produces about RB_STEP bytes of
 * replies (at most RB_STEP_BATCHES batches: compressed replies are small
 * for what they cost to make, and the control thread serves others too),
 * then waits (without blocking anybody) until the consumer's lane
 * has sent all but RB_LOW_WATER of them, so a slow reader never makes the
 * service buffer a whole trace (consumer-port.md §4: "continues in a
 * later task"). Control thread, except rb_lane_wait on the lane.
 */
struct rb_job {
	struct ctl *ctl;	/* the control plane */
	uint64_t session_id;	/* the session read (looked up each step) */
	unsigned lane;		/* consumer's lane */
	uint64_t conn_id;	/* consumer's connection */
	bool conn_gone;		/* the lane found the connection closed */
	struct rb_writer w;	/* reply packer (holds the reply handle) */
	struct ipc_reply reply;	/* the ReadBuffers call */
};

#define RB_STEP (1u << 20)	/* reply bytes produced per step */
#define RB_STEP_BATCHES (RB_STEP / RB_BATCH) /* and batches read per step */
#define RB_LOW_WATER (256u << 10) /* resume when the lane has this little left */

static void rb_job_step(struct rb_job *job);

static void rb_job_free(struct rb_job *job)
{
	free(job->w.buf);
	free(job);
}

/* ctl: the lane's queue drained (or the connection closed). */
static void rb_continue(struct ipc_loop *loop, void *arg, uint64_t u64)
{
	(void)loop;
	(void)u64;
	rb_job_step(arg);
}

/* Back to ctl from the lane (loop = the lane's). */
static void rb_lane_drained(struct ipc_loop *loop, void *arg, uint64_t u64)
{
	struct rb_job *job = arg;
	(void)u64;

	if (!ipc_conn_lookup(loop, job->conn_id))
		job->conn_gone = true;
	if (ipc_loop_post_wait(job->ctl->loop, rb_continue, job, 0,
			       SVC_WAIT_POST_MS) < 0)
		spn_log_error("ctl", "ReadBuffers: control ring full, read lost");
}

/* On the lane: ask to be told when the consumer has read enough. */
static void rb_lane_wait(struct ipc_loop *loop, void *arg, uint64_t u64)
{
	struct rb_job *job = arg;
	struct ipc_conn *c = ipc_conn_lookup(loop, job->conn_id);
	(void)u64;

	if (!c || ipc_conn_notify_drained(c, RB_LOW_WATER, rb_lane_drained,
					  job, 0) < 0)
		rb_lane_drained(loop, job, 0);
}

static void rb_job_step(struct rb_job *job)
{
	struct ctl_session *s = NULL;
	size_t sent0 = job->w.total;
	unsigned batches = 0;
	int rc = 1;

	for (struct ctl_session *o = job->ctl->sessions; o; o = o->next)
		if (o->id == job->session_id && !o->dead)
			s = o;
	while (s && !job->conn_gone && !job->w.err &&
	       !ctl_lanes_gone(job->ctl) && job->w.total - sent0 < RB_STEP &&
	       batches++ < RB_STEP_BATCHES) {
		rc = ctl_batch(s, RB_BATCH, rb_emit, &job->w);
		if (rc != 0)
			break;
	}
	if (rc < 0)
		spn_log_warn("ctl", "ReadBuffers: %s", strerror(-rc));
	if (rc == 0 && s && !job->conn_gone && !job->w.err &&
	    !ctl_lanes_gone(job->ctl)) {
		/* More to read: send what is packed, wait for the reader. */
		if (job->w.len)
			rb_flush(&job->w, true);
		if (ipc_loop_post_wait(job->ctl->svc->lanes[job->lane].loop,
				       rb_lane_wait, job, 0,
				       SVC_WAIT_POST_MS) == 0)
			return;
	}
	/* Nothing may go through a lane that is being destroyed. */
	if (!ctl_lanes_gone(job->ctl))
		rb_flush(&job->w, false);
	rb_job_free(job);
}

void ctl_read_buffers(struct ctl *ctl, struct ctl_session *s,
		      struct ipc_reply *reply)
{
	struct rb_job *job = calloc(1, sizeof(*job));

	if (job)
		job->w.buf = malloc(RB_REPLY_LIMIT + 4096);
	if (!job || !job->w.buf) {
		if (job)
			free(job);
		ipc_reply_reject(reply);
		return;
	}
	job->ctl = ctl;
	job->reply = *reply;
	job->w.reply = &job->reply;
	if (!s || ctl_read_blocked(s)) {
		/* One empty reply, has_more false. */
		rb_flush(&job->w, false);
		rb_job_free(job);
		return;
	}
	job->session_id = s->id;
	job->lane = s->lane;
	job->conn_id = s->conn_id;
	rb_job_step(job);
}

/* --- write_into_file --- */

struct file_writer {
	int fd;		/* the trace file */
	uint64_t bytes;	/* written */
	uint64_t room;	/* a record is written only while file size + its
			 * length stays below this (UINT64_MAX: no limit) */
	bool full;	/* max_file_size_bytes stopped the drain */
	int err;	/* first write error */
};

/* How much of the Trace-framed run d[0..n) fits below fw->room: whole
 * records only (trace-config.md §1.4); sets fw->full at the first that
 * does not. */
static size_t file_fit(struct file_writer *fw, const uint8_t *d, size_t n)
{
	const uint8_t *p = d, *end = d + n;
	struct spn_pb_field f;

	if (fw->room == UINT64_MAX)
		return n;
	while (p < end) {
		int k = spn_pb_next_field(p, end, &f);

		if (k <= 0 || fw->bytes + (uint64_t)(p - d) + (uint64_t)k >=
				      fw->room) {
			fw->full = true;
			break;
		}
		p += k;
	}
	return (size_t)(p - d);
}

static void file_emit(void *ctx, const uint8_t *d, size_t n)
{
	struct file_writer *fw = ctx;

	if (fw->full)
		return;
	n = file_fit(fw, d, n);
	while (n && !fw->err) {
		ssize_t w = write(fw->fd, d, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			fw->err = w < 0 ? -errno : -EIO;
			return;
		}
		d += w;
		n -= (size_t)w;
		fw->bytes += (uint64_t)w;
	}
}

/*
 * Drains the session into its file. Returns 0; 1 when max_file_size_bytes
 * was reached (the file is then closed: nothing more is written, the
 * caller disables the session); or -errno of a failed write or read.
 */
int ctl_write_file(struct ctl *ctl, struct ctl_session *s)
{
	struct file_writer fw = { .fd = s->file_fd, .room = UINT64_MAX };
	int rc;
	(void)ctl;

	if (s->file_fd < 0)
		return 0;
	if (s->max_file_bytes)
		fw.room = s->max_file_bytes > s->file_bytes
				  ? s->max_file_bytes - s->file_bytes
				  : 0;
	if (s->state == SVC_SESSION_DISABLED)
		svc_pkts_mark_stats_due(&s->pkts);
	do {
		rc = ctl_batch(s, FILE_BATCH, file_emit, &fw);
	} while (rc == 0 && !fw.err && !fw.full);
	s->file_bytes += fw.bytes;
	if (fw.err) {
		spn_log_error("ctl", "session %llu: trace file write failed: %s",
			      (unsigned long long)s->id, strerror(-fw.err));
		return fw.err;
	}
	if (fw.full) {
		spn_log_info("ctl", "session %llu: trace file reached "
			     "max_file_size_bytes (%llu bytes written)",
			     (unsigned long long)s->id,
			     (unsigned long long)s->file_bytes);
		close(s->file_fd);
		s->file_fd = -1;
		return 1;
	}
	return rc < 0 ? rc : 0;
}
