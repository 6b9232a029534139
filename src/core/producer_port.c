// SPDX-License-Identifier: Apache-2.0
// ProducerPort on the lanes (spec/producer-port.md): connection set-up, the
// SMB, trace writer registration and the CommitData path into the trace
// buffers; everything about sessions is handed to the control plane.
//
// Lane thread only (handlers run on the loop owning the connection, and
// the lane_post_* messages run there too). The commit path takes no lock
// and allocates nothing: it copies each chunk once out of the SMB into the
// lane's scratch buffer (which stays in this core's cache), parses only
// that private copy (two chunks side by side), and streams the validated
// copy into the lane's shard (pp_move).
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/svc_int.h"
#include "ipc/log.h"
#include "producer_port.pb-c.h"
#include "smb/chunk_validate.h"

/* --- ProducerIDs: a bit per id, any lane allocates, ctl frees --- */

static int svc_pid_alloc(struct svc *svc)
{
	for (unsigned tries = 0; tries < SVC_MAX_PRODUCERS; tries++) {
		unsigned id = atomic_fetch_add_explicit(&svc->pid_next, 1,
							memory_order_relaxed);
		uint64_t bit, old;

		id = id % SVC_MAX_PRODUCERS + 1;
		bit = 1ull << (id % 64);
		/* Relaxed: the bit only arbitrates ownership of the id; no
		 * data is published through it. */
		old = atomic_fetch_or_explicit(&svc->pid_bits[id / 64], bit,
					       memory_order_relaxed);
		if (!(old & bit))
			return (int)id;
	}
	return -EUSERS;
}

void svc_pid_free(struct svc *svc, uint16_t id)
{
	atomic_fetch_and_explicit(&svc->pid_bits[id / 64],
				  ~(1ull << (id % 64)), memory_order_relaxed);
}

/* --- the producer's lane half --- */

static struct svc_producer *pp_get(struct ipc_request *req)
{
	return ipc_conn_user(ipc_request_conn(req));
}

void svc_producer_on_connect(struct svc *svc, struct ipc_conn *c)
{
	struct svc_lane *lane = svc_lane_of(svc, ipc_conn_loop(c));
	struct svc_producer *p = calloc(1, sizeof(*p));

	if (!p || !lane) {
		free(p);
		spn_log_error("producer", "out of memory: connection closed");
		ipc_conn_close(c, -ENOMEM);
		return;
	}
	p->lane = lane;
	p->conn = c;
	p->cred = *ipc_conn_cred(c);
	ipc_conn_set_user(c, p);
	ipc_conn_set_send_timeout(c, SVC_PRODUCER_SEND_TIMEOUT_MS);
}

/* The storage producer p writes into for buffer_id, or NULL if it may not
 * write there. */
static struct svc_tbuf *pp_allowed(struct svc_producer *p, uint32_t buffer_id)
{
	for (unsigned i = 0; i < p->nallow; i++)
		if (p->allow[i].buffer_id == buffer_id)
			return p->allow[i].tb;
	return NULL;
}

/* Scrapes every chunk a registered writer of p holds (smb-abi.md §9). */
static void pp_scrape(struct svc_producer *p)
{
	struct spn_smb *smb;

	if (!p->shm || !p->writer_buf)
		return;
	smb = &p->shm->smb;
	for (uint32_t page = 0; page < smb->num_pages; page++) {
		for (uint32_t chunk = 0; chunk < SPN_SMB_MAX_CHUNKS_PER_PAGE;
		     chunk++) {
			struct smb_chunk_info info;
			struct svc_tbuf_chunk tc;
			struct svc_tbuf *tb;
			int rc = smb_chunk_scrape_copy(smb, page, chunk,
						       p->lane->scratch,
						       SVC_CHUNK_SCRATCH, &info);

			if (rc < 0 && rc != -ENOMSG)
				continue;
			if (info.nfrags == 0 || info.writer_id == 0)
				continue;
			tb = pp_allowed(p, p->writer_buf[info.writer_id]);
			if (!tb)
				continue;
			tc = (struct svc_tbuf_chunk){
				.producer_id = p->id,
				.writer_id = info.writer_id,
				.chunk_id = info.chunk_id,
				.uid = p->cred.uid,
				.pid = p->cred.pid,
				/* The producer's count and the whole
				 * payload: the buffer itself leaves out the
				 * last fragment of an incomplete chunk
				 * (trace-buffer.md §2.3; the scrape copy's
				 * header already counts one less), and
				 * keeps the size a later commit must match
				 * (§2.2). */
				.nfrags = (uint16_t)(info.count +
						     (info.complete ? 0 : 1)),
				.flags = info.flags,
				.complete = info.complete,
				.payload = p->lane->scratch +
					   SPN_SMB_CHUNK_HEADER_SIZE,
				.len = info.size - SPN_SMB_CHUNK_HEADER_SIZE,
			};
			svc_tbuf_lane_commit(tb, p->lane->idx, &tc);
		}
	}
}

void svc_producer_on_disconnect(struct svc *svc, struct ipc_conn *c)
{
	struct svc_producer *p = ipc_conn_user(c);
	struct ctl_msg *m;

	if (!p)
		return;
	ipc_conn_set_user(c, NULL);
	if (p->scrape && !p->cut_off)
		pp_scrape(p);
	for (unsigned i = 0; i < p->nallow; i++)
		svc_buf_unref(p->allow[i].buf);
	free(p->allow);
	free(p->writer_buf);
	if (p->shm) {
		smb_shm_close(p->shm);
		free(p->shm);
	}
	if (p->id) {
		p->lane->by_id[p->id] = NULL;
		m = ctl_msg_new(CTL_P_GONE);
		if (m) {
			m->producer_id = p->id;
			ctl_post(svc, m);
		} else {
			svc_pid_free(svc, p->id);
		}
	}
	free(p);
}

/* --- InitializeConnection (producer-port.md §2) --- */

/* Tries to adopt the producer's SMB; returns it or NULL (fallback). */
static struct smb_shm *pp_adopt_smb(struct svc_producer *p, int fd,
				    uint32_t page_hint)
{
	struct smb_shm *shm = malloc(sizeof(*shm));
	int rc;

	if (!shm) {
		close(fd);
		return NULL;
	}
	smb_shm_init(shm);
	rc = smb_shm_attach(shm, fd, page_hint, SMB_SHM_FROM_PRODUCER);
	if (rc < 0) {
		spn_log_warn("producer", "producer %u: its SMB was refused (%s); "
			     "falling back to a service SMB", p->id, shm->err);
		close(fd);
		free(shm);
		return NULL;
	}
	return shm;
}

static void pp_initialize(struct ipc_request *req, const ProtobufCMessage *a,
			  void *ctx)
{
	const Perfetto__Protos__InitializeConnectionRequest *r = (const void *)a;
	Perfetto__Protos__InitializeConnectionResponse resp =
		PERFETTO__PROTOS__INITIALIZE_CONNECTION_RESPONSE__INIT;
	struct svc_producer *p = pp_get(req);
	struct svc *svc = ctx;
	struct ctl_msg *m;
	int fd = ipc_request_take_fd(req);
	int id;

	if (!p || p->initialized) {
		if (fd >= 0)
			close(fd);
		ipc_request_reject(req);
		return;
	}
	if (atomic_load_explicit(&svc->lockdown, memory_order_relaxed) &&
	    p->cred.uid != svc->uid) {
		if (fd >= 0)
			close(fd);
		spn_log_warn("producer", "uid %u refused: lockdown mode",
			     (unsigned)p->cred.uid);
		ipc_request_reject(req);
		ipc_conn_close_after_flush(ipc_request_conn(req));
		return;
	}
	id = svc_pid_alloc(svc);
	if (id < 0) {
		if (fd >= 0)
			close(fd);
		spn_log_warn("producer", "too many producers: connection refused");
		ipc_request_reject(req);
		ipc_conn_close_after_flush(ipc_request_conn(req));
		return;
	}
	p->id = (uint16_t)id;
	p->initialized = true;
	p->lane->by_id[p->id] = p;
	p->scrape = r->has_smb_scraping_mode &&
		    r->smb_scraping_mode ==
			    PERFETTO__PROTOS__INITIALIZE_CONNECTION_REQUEST__PRODUCER_SMBSCRAPING_MODE__SMB_SCRAPING_ENABLED;
	if (r->producer_provided_shmem) {
		if (fd >= 0)
			p->shm = pp_adopt_smb(p, fd,
					      r->shared_memory_page_size_hint_bytes);
		else
			spn_log_warn("producer", "producer %u: producer_provided_shmem "
				     "without an fd; using a service SMB", p->id);
	} else if (fd >= 0) {
		close(fd);
	}
	atomic_fetch_add_explicit(&svc->cnt.producers_seen, 1,
				  memory_order_relaxed);
	m = ctl_msg_new(CTL_P_INIT);
	if (m) {
		m->producer_id = p->id;
		m->lane = p->lane->idx;
		m->conn_id = ipc_conn_id(p->conn);
		m->cred = p->cred;
		m->name = strdup(r->producer_name ? r->producer_name : "");
		if (r->sdk_version && r->sdk_version[0]) {
			/* Shown by QueryServiceState; bounded by the frame. */
			m->bytes = (uint8_t *)strdup(r->sdk_version);
			m->len = m->bytes ? strlen(r->sdk_version) : 0;
		}
		m->u32a = r->shared_memory_size_hint_bytes;
		m->u32b = r->shared_memory_page_size_hint_bytes;
		m->i32 = p->shm ? (int)p->shm->smb.page_size : 0;
		if (ctl_post(svc, m) < 0)
			spn_log_error("producer", "control plane unreachable");
	}
	resp.has_using_shmem_provided_by_producer = true;
	resp.using_shmem_provided_by_producer = p->shm != NULL;
	resp.has_direct_smb_patching_supported = true;
	resp.direct_smb_patching_supported = true;
	resp.has_use_shmem_emulation = true;
	resp.use_shmem_emulation = false;
	ipc_request_reply(req, &resp.base, -1, false);
}

/* --- calls forwarded to the control plane --- */

/* Posts a message carrying `a` packed, plus an optional deferred reply. */
static void pp_forward(struct ipc_request *req, const ProtobufCMessage *a,
		       struct svc *svc, enum ctl_msg_type type, bool defer)
{
	struct svc_producer *p = pp_get(req);
	struct ctl_msg *m;

	if (!p || !p->initialized) {
		ipc_request_reject(req);
		return;
	}
	m = ctl_msg_new(type);
	if (!m) {
		ipc_request_reject(req);
		return;
	}
	m->producer_id = p->id;
	m->lane = p->lane->idx;
	m->conn_id = ipc_conn_id(p->conn);
	if (a) {
		m->len = protobuf_c_message_get_packed_size(a);
		m->bytes = malloc(m->len ? m->len : 1);
		if (!m->bytes) {
			ctl_msg_free(m);
			ipc_request_reject(req);
			return;
		}
		protobuf_c_message_pack(a, m->bytes);
	}
	if (defer)
		ipc_request_defer(req, &m->reply);
	if (ctl_post(svc, m) < 0 && defer) {
		/* ctl_post freed m; the handle copy in it is gone, the
		 * library rejects nothing for us once deferred. */
		spn_log_error("producer", "control plane unreachable");
	}
}

/* Replies with a message of type d with no field set (the responses here
 * hold at most a string or two; the storage is sized for that). */
static void pp_empty_reply(struct ipc_request *req,
			   const ProtobufCMessageDescriptor *d)
{
	_Alignas(max_align_t) unsigned char m[256];

	if (d->sizeof_message > sizeof(m)) {
		ipc_request_reject(req);
		return;
	}
	protobuf_c_message_init(d, m);
	ipc_request_reply(req, (ProtobufCMessage *)m, -1, false);
}

/*
 * The calls the control plane handles and that answer at once with an
 * empty response (the method's own output type): forwarded in arrival
 * order, which is all their ordering needs.
 */
static void pp_forward_and_ack(struct ipc_request *req,
			       const ProtobufCMessage *a, void *ctx,
			       enum ctl_msg_type type)
{
	pp_forward(req, a, ctx, type, false);
	pp_empty_reply(req, ipc_request_method(req)->output);
}

#define PP_FORWARD(fn, type)                                               \
	static void fn(struct ipc_request *req, const ProtobufCMessage *a,  \
		       void *ctx)                                           \
	{                                                                   \
		pp_forward_and_ack(req, a, ctx, type);                      \
	}
PP_FORWARD(pp_register_ds, CTL_P_REG_DS)
PP_FORWARD(pp_update_ds, CTL_P_UPDATE_DS)
PP_FORWARD(pp_unregister_ds, CTL_P_UNREG_DS)
PP_FORWARD(pp_ds_started, CTL_P_DS_STARTED)
PP_FORWARD(pp_ds_stopped, CTL_P_DS_STOPPED)
PP_FORWARD(pp_triggers, CTL_P_TRIGGERS)

/* Sync: answered by ctl after every earlier message of this lane. */
static void pp_sync(struct ipc_request *req, const ProtobufCMessage *a,
		    void *ctx)
{
	(void)a;
	pp_forward(req, NULL, ctx, CTL_P_SYNC, true);
}

/* GetAsyncCommand: the stream is kept by ctl, which sends the commands. */
static void pp_get_async(struct ipc_request *req, const ProtobufCMessage *a,
			 void *ctx)
{
	(void)a;
	pp_forward(req, NULL, ctx, CTL_P_ASYNC, true);
}

/* --- trace writers (producer-port.md §4) --- */

static void pp_register_writer(struct ipc_request *req,
			       const ProtobufCMessage *a, void *ctx)
{
	const Perfetto__Protos__RegisterTraceWriterRequest *r = (const void *)a;
	struct svc_producer *p = pp_get(req);
	(void)ctx;

	if (p && r->trace_writer_id >= 1 &&
	    r->trace_writer_id <= SPN_SMB_MAX_WRITER_ID &&
	    r->target_buffer <= UINT16_MAX) {
		if (!p->writer_buf)
			p->writer_buf = calloc(SPN_SMB_MAX_WRITER_ID + 1,
					       sizeof(*p->writer_buf));
		if (p->writer_buf)
			p->writer_buf[r->trace_writer_id] =
				(uint16_t)r->target_buffer;
	}
	pp_empty_reply(req, &perfetto__protos__register_trace_writer_response__descriptor);
}

static void pp_unregister_writer(struct ipc_request *req,
				 const ProtobufCMessage *a, void *ctx)
{
	const Perfetto__Protos__UnregisterTraceWriterRequest *r = (const void *)a;
	struct svc_producer *p = pp_get(req);
	(void)ctx;

	if (p && p->writer_buf && r->trace_writer_id >= 1 &&
	    r->trace_writer_id <= SPN_SMB_MAX_WRITER_ID)
		p->writer_buf[r->trace_writer_id] = 0;
	pp_empty_reply(req, &perfetto__protos__unregister_trace_writer_response__descriptor);
}

/* --- CommitData (producer-port.md §5) --- */

static void pp_discard(struct svc *svc)
{
	atomic_fetch_add_explicit(&svc->cnt.chunks_discarded, 1,
				  memory_order_relaxed);
}

/* Logs once and cuts off a producer that broke the SMB ABI: nothing more
 * of it is stored, and pp_commit() closes its connection when done with it
 * (closing may free p at once). */
static void pp_abi_violation(struct svc_producer *p, const char *why)
{
	if (p->cut_off)
		return;
	p->cut_off = true;
	spn_log_warn("producer", "producer %u (pid %d) broke the SMB ABI (%s): "
		     "disconnected", p->id, (int)p->cred.pid, why);
}

/* Stores the well-formed leading fragments of a chunk whose rest is bad
 * (payload: the validated copy). */
static void pp_store_prefix(struct svc_producer *p, struct svc_tbuf *tb,
			    const struct smb_chunk_info *info,
			    const uint8_t *payload)
{
	struct svc_tbuf_chunk tc = {
		.producer_id = p->id,
		.writer_id = info->writer_id,
		.chunk_id = info->chunk_id,
		.uid = p->cred.uid,
		.pid = p->cred.pid,
		.nfrags = info->nfrags,
		.flags = (uint8_t)(info->flags & ~(SVC_CHUNK_LAST_CONT |
						   SVC_CHUNK_NEEDS_PATCH)),
		.complete = true,
		.payload = payload,
		.len = info->used,
	};

	svc_tbuf_lane_commit(tb, p->lane->idx, &tc);
}

/* Buffers one CommitData stored deferred records in (svc_tbuf_chunk.defer):
 * pp_commit() publishes them once at its end. A request naming more
 * buffers than this stores the rest undeferred. */
#define PP_DEFER_MAX 4u
struct pp_defer {
	struct svc_tbuf *tb[PP_DEFER_MAX]; /* buffers with deferred records */
	unsigned n;			   /* entries used */
};

/* Whether chunks for tb may be deferred in this request (adds tb). */
static bool pp_defer_add(struct pp_defer *d, struct svc_tbuf *tb)
{
	for (unsigned i = 0; i < d->n; i++)
		if (d->tb[i] == tb)
			return true;
	if (d->n == PP_DEFER_MAX)
		return false;
	d->tb[d->n++] = tb;
	return true;
}

/* A chunk of a CommitData on its way from the SMB into its buffer. */
struct pp_chunk {
	const Perfetto__Protos__CommitDataRequest__ChunksToMove *mv; /* entry */
	struct smb_chunk_taken t;	/* the chunk taken for reading */
	struct smb_chunk_info info;	/* what copying and checking found */
	struct smb_chunk_copy cp;	/* its copy in lane scratch; cp.rc:
					 * the copy-out, then check result */
};

/* Takes c->mv's chunk for reading (smb_chunk_commit_take); false when the
 * entry names no Complete chunk of this SMB (ignored) or asks for SMB
 * emulation. */
static bool pp_take(struct svc *svc, struct svc_producer *p, struct pp_chunk *c)
{
	int rc = -EAGAIN;

	if (c->mv->has_data) {
		/* SMB emulation is never offered on AF_UNIX: refuse it. */
		pp_discard(svc);
		return false;
	}
	for (int tries = 0; rc == -EAGAIN && tries < 4; tries++)
		rc = smb_chunk_commit_take(&p->shm->smb, c->mv->page, c->mv->chunk,
					   &c->t, &c->info);
	return rc == 0;
}

/* Copies taken chunk c once out of the SMB into scratch (header, then
 * payload) and frees it. */
static void pp_copy_out(struct svc_producer *p, struct pp_chunk *c,
			uint8_t *scratch)
{
	uint8_t *dst = scratch + SPN_SMB_CHUNK_HEADER_SIZE;

	c->cp = (struct smb_chunk_copy){
		.hdr = scratch,
		.payload = dst,
		.len = c->t.size - SPN_SMB_CHUNK_HEADER_SIZE,
		.info = &c->info,
		.rc = smb_chunk_commit_copy_out(&p->shm->smb, &c->t, scratch, dst,
						SVC_CHUNK_SCRATCH -
							SPN_SMB_CHUNK_HEADER_SIZE,
						&c->info),
	};
}

/* Stores checked copy c in its buffer (§5.2 checks), or cuts p off when
 * the chunk broke the ABI. */
static void pp_store(struct svc *svc, struct svc_producer *p,
		     const struct pp_chunk *c, struct pp_defer *d)
{
	const struct smb_chunk_info *info = &c->info;
	struct svc_tbuf *tb = pp_allowed(p, c->mv->target_buffer);
	struct svc_tbuf_chunk tc;

	if (c->cp.rc == -ENOSPC || info->end == SMB_CHUNK_BAD_HEADER ||
	    info->end == SMB_CHUNK_BAD_FRAGMENT) {
		/* DESIGN.md §4: a producer that breaks the ABI is cut off;
		 * only the well-formed fragments before the fault are kept,
		 * so its damage stays inside its own sequence. */
		if (info->end == SMB_CHUNK_BAD_FRAGMENT && info->nfrags && tb)
			pp_store_prefix(p, tb, info, c->cp.payload);
		pp_discard(svc);
		pp_abi_violation(p, info->why ? info->why : "chunk too large");
		return;
	}
	if (!tb || (p->writer_buf && p->writer_buf[info->writer_id] &&
		   p->writer_buf[info->writer_id] != c->mv->target_buffer)) {
		pp_discard(svc);
		return;
	}
	tc = (struct svc_tbuf_chunk){
		.producer_id = p->id,
		.writer_id = info->writer_id,
		.chunk_id = info->chunk_id,
		.uid = p->cred.uid,
		.pid = p->cred.pid,
		.nfrags = info->count,
		.flags = info->flags,
		.complete = true,
		.payload = c->cp.payload,
		.len = info->size - SPN_SMB_CHUNK_HEADER_SIZE,
		.defer = pp_defer_add(d, tb),
	};
	svc_tbuf_lane_commit(tb, p->lane->idx, &tc);
}

/* Checks copied chunk c alone (when copy-out worked) and stores it. */
static void pp_check_store(struct svc *svc, struct svc_producer *p,
			   struct pp_chunk *c, struct pp_defer *d)
{
	if (c->cp.rc == 0)
		c->cp.rc = smb_chunk_check(c->cp.hdr, c->cp.payload, c->cp.len,
					   &c->info);
	pp_store(svc, p, c, d);
}

/*
 * Moves the chunks of entries mv[0] and, if mv[1], mv[1] from the SMB into
 * their buffers (§5.1 step 2, §5.2), in entry order. Each chunk is copied
 * once out of the SMB into one half of the lane's scratch buffer, which
 * stays in this core's cache, and checked there; svc_tbuf_lane_commit()
 * then streams the checked copy into the buffer without pulling the ring's
 * cold lines into the cache. Two chunks are checked side by side
 * (smb_chunk_check_two): each fragment walk is a serial chain of loads,
 * and two run in about the time of one.
 */
static void pp_move(struct svc *svc, struct svc_producer *p,
		    const Perfetto__Protos__CommitDataRequest__ChunksToMove *mv0,
		    const Perfetto__Protos__CommitDataRequest__ChunksToMove *mv1,
		    struct pp_defer *d)
{
	struct pp_chunk c[2] = { { .mv = mv0 }, { .mv = mv1 } };
	bool took0 = pp_take(svc, p, &c[0]);
	bool took1 = mv1 && pp_take(svc, p, &c[1]);

	if (took0)
		pp_copy_out(p, &c[0], p->lane->scratch);
	if (took1)
		pp_copy_out(p, &c[1], p->lane->scratch + SVC_CHUNK_SCRATCH);
	if (took0 && took1 && c[0].cp.rc == 0 && c[1].cp.rc == 0) {
		smb_chunk_check_two(&c[0].cp, &c[1].cp);
		pp_store(svc, p, &c[0], d);
		if (!p->cut_off)
			pp_store(svc, p, &c[1], d);
		return;
	}
	if (took0)
		pp_check_store(svc, p, &c[0], d);
	/* Entries after an ABI violation are not stored (the producer is
	 * being disconnected); a chunk taken already was freed. */
	if (took1 && !p->cut_off)
		pp_check_store(svc, p, &c[1], d);
}

/* Applies one ChunkToPatch entry (§5.1 step 3). */
static void pp_patch(struct svc *svc, struct svc_producer *p,
		     const Perfetto__Protos__CommitDataRequest__ChunkToPatch *cp)
{
	struct svc_tbuf_patch patches[64];
	struct svc_tbuf *tb = pp_allowed(p, cp->target_buffer);
	size_t n = 0;

	if (!tb || cp->writer_id == 0 || cp->writer_id > SPN_SMB_MAX_WRITER_ID ||
	    cp->n_patches > SVC_TBUF_MAX_PATCHES) {
		atomic_fetch_add_explicit(&svc->cnt.patches_discarded,
					  cp->n_patches ? cp->n_patches : 1,
					  memory_order_relaxed);
		return;
	}
	for (size_t i = 0; i < cp->n_patches; i++) {
		const Perfetto__Protos__CommitDataRequest__ChunkToPatch__Patch *pt =
			cp->patches[i];
		bool last = i + 1 == cp->n_patches;

		if (!pt->has_data || pt->data.len != 4) {
			atomic_fetch_add_explicit(&svc->cnt.patches_discarded, 1,
						  memory_order_relaxed);
		} else {
			patches[n].offset = pt->offset;
			memcpy(patches[n].data, pt->data.data, 4);
			n++;
		}
		/* Batches of 64; has_more holds the chunk until the last. */
		if (n == 64 || (last && n)) {
			svc_tbuf_lane_patch(tb, p->lane->idx, p->id,
					    (uint16_t)cp->writer_id, cp->chunk_id,
					    patches, n,
					    last ? cp->has_more_patches : true);
			n = 0;
		}
	}
}

static void pp_commit(struct ipc_request *req, const ProtobufCMessage *a,
		      void *ctx)
{
	const Perfetto__Protos__CommitDataRequest *r = (const void *)a;
	struct svc_producer *p = pp_get(req);
	struct pp_defer d = { .n = 0 };
	struct svc *svc = ctx;

	if (!p || !p->shm || p->cut_off) {
		/* §5.1 step 1: nothing set up yet, ignore the request. */
		ipc_request_reject(req);
		return;
	}
	for (size_t i = 0; i < r->n_chunks_to_move && !p->cut_off; i += 2)
		pp_move(svc, p, r->chunks_to_move[i],
			i + 1 < r->n_chunks_to_move ? r->chunks_to_move[i + 1] :
						      NULL, &d);
	for (size_t i = 0; i < r->n_chunks_to_patch; i++)
		pp_patch(svc, p, r->chunks_to_patch[i]);
	/* The moved chunks become readable here, before the flush ack can
	 * tell the control plane that they are in. */
	for (unsigned i = 0; i < d.n; i++)
		svc_tbuf_lane_publish(d.tb[i], p->lane->idx);
	if (r->has_flush_request_id && r->flush_request_id) {
		struct ctl_msg *m = ctl_msg_new(CTL_P_FLUSH_ACK);

		if (m) {
			m->producer_id = p->id;
			m->u64 = r->flush_request_id;
			ctl_post(svc, m);
		}
	}
	pp_empty_reply(req, &perfetto__protos__commit_data_response__descriptor);
	/* Last: with nothing left to send, closing runs
	 * svc_producer_on_disconnect(), which frees p. */
	if (p->cut_off)
		ipc_conn_close_after_flush(p->conn);
}

/* --- messages from the control plane, run on the lane --- */

struct lane_job {
	struct svc *svc;	/* the service */
	uint16_t id;		/* producer */
	uint16_t buffer_id;	/* REVOKE, RETARGET */
	struct smb_shm *shm;	/* SMB */
	struct svc_buf *buf;	/* ALLOW */
	struct svc_tbuf *tb;	/* ALLOW, RETARGET: the storage to write into */
	uint64_t token;		/* SCRAPE */
	struct ctl_msg *ack;	/* RETARGET: posted back when applied */
};

static struct svc_producer *lane_job_producer(struct ipc_loop *loop,
					      struct lane_job *j)
{
	struct svc_lane *lane = svc_lane_of(j->svc, loop);

	return lane ? lane->by_id[j->id] : NULL;
}

static void lane_do_smb(struct ipc_loop *loop, void *arg, uint64_t u)
{
	struct lane_job *j = arg;
	struct svc_producer *p = lane_job_producer(loop, j);
	(void)u;

	if (p && !p->shm) {
		p->shm = j->shm;
	} else {
		smb_shm_close(j->shm);
		free(j->shm);
	}
	free(j);
}

static void lane_do_allow(struct ipc_loop *loop, void *arg, uint64_t u)
{
	struct lane_job *j = arg;
	struct svc_producer *p = lane_job_producer(loop, j);
	(void)u;

	if (!p || pp_allowed(p, j->buf->id)) {
		svc_buf_unref(j->buf);
		free(j);
		return;
	}
	if (p->nallow == p->cap_allow) {
		unsigned cap = p->cap_allow ? 2 * p->cap_allow : 4;
		struct svc_allow *v = realloc(p->allow, cap * sizeof(*v));

		if (!v) {
			svc_buf_unref(j->buf);
			free(j);
			return;
		}
		p->allow = v;
		p->cap_allow = cap;
	}
	p->allow[p->nallow++] = (struct svc_allow){ j->buf->id, j->buf, j->tb };
	free(j);
}

static void lane_do_revoke(struct ipc_loop *loop, void *arg, uint64_t u)
{
	struct lane_job *j = arg;
	struct svc_producer *p = lane_job_producer(loop, j);
	(void)u;

	for (unsigned i = 0; p && i < p->nallow; i++) {
		if (p->allow[i].buffer_id != j->buffer_id)
			continue;
		svc_buf_unref(p->allow[i].buf);
		p->allow[i] = p->allow[--p->nallow];
		break;
	}
	free(j);
}

static void lane_do_retarget(struct ipc_loop *loop, void *arg, uint64_t u)
{
	struct lane_job *j = arg;
	struct svc_producer *p = lane_job_producer(loop, j);
	(void)u;

	for (unsigned i = 0; p && i < p->nallow; i++)
		if (p->allow[i].buffer_id == j->buffer_id)
			p->allow[i].tb = j->tb;
	/* The post ring orders this lane's last use of the old storage
	 * before ctl's handling of the ack. */
	ctl_post(j->svc, j->ack);
	free(j);
}

static void lane_do_scrape(struct ipc_loop *loop, void *arg, uint64_t u)
{
	struct lane_job *j = arg;
	struct svc_producer *p = lane_job_producer(loop, j);
	struct ctl_msg *m = ctl_msg_new(CTL_SCRAPED);
	(void)u;

	if (p && p->scrape)
		pp_scrape(p);
	if (m) {
		m->producer_id = j->id;
		m->u64 = j->token;
		ctl_post(j->svc, m);
	}
	free(j);
}

static void lane_do_close(struct ipc_loop *loop, void *arg, uint64_t conn_id)
{
	struct ipc_conn *c = ipc_conn_lookup(loop, conn_id);
	(void)arg;

	if (c)
		ipc_conn_close_after_flush(c);
}

/*
 * Posts a copy of job *tmpl to run fn on `lane`. Returns 0, or -errno with
 * nothing posted: what the job refers to is then still the caller's.
 * Control thread only (ctl_lanes_gone is read there).
 */
static int lane_post(struct svc *svc, unsigned lane, ipc_post_fn fn,
		     const struct lane_job *tmpl)
{
	struct lane_job *j;
	int rc;

	if (ctl_lanes_gone(svc->ctl))
		return -ESHUTDOWN;
	j = malloc(sizeof(*j));
	if (!j)
		return -ENOMEM;
	*j = *tmpl;
	j->svc = svc;
	rc = ipc_loop_post_wait(svc->lanes[lane].loop, fn, j, 0,
				SVC_WAIT_POST_MS);
	if (rc < 0) {
		spn_log_error("svc", "lane %u unreachable: %s", lane,
			      strerror(-rc));
		free(j);
	}
	return rc;
}

int lane_post_smb(struct svc *svc, unsigned lane, uint16_t id,
		  struct smb_shm *shm)
{
	int rc = lane_post(svc, lane, lane_do_smb,
			   &(struct lane_job){ .id = id, .shm = shm });

	if (rc < 0) {
		smb_shm_close(shm);
		free(shm);
	}
	return rc;
}

int lane_post_allow(struct svc *svc, unsigned lane, uint16_t id,
		    struct svc_buf *b)
{
	int rc;

	svc_buf_ref(b); /* the producer's reference, dropped on revoke */
	/* b->tb is read here, on ctl: a later swap reaches the lane as a
	 * retarget posted after this message. */
	rc = lane_post(svc, lane, lane_do_allow,
		       &(struct lane_job){ .id = id, .buf = b, .tb = b->tb });
	if (rc < 0)
		svc_buf_unref(b);
	return rc;
}

int lane_post_revoke(struct svc *svc, unsigned lane, uint16_t id,
		     uint16_t buffer_id)
{
	return lane_post(svc, lane, lane_do_revoke,
			 &(struct lane_job){ .id = id, .buffer_id = buffer_id });
}

int lane_post_retarget(struct svc *svc, unsigned lane, uint16_t id,
		       uint16_t buffer_id, struct svc_tbuf *tb, uint64_t token)
{
	struct ctl_msg *ack = ctl_msg_new(CTL_BUF_RETARGETED);
	int rc;

	/* Made here so that the lane cannot fail to answer. */
	if (!ack)
		return -ENOMEM;
	ack->producer_id = id;
	ack->u64 = token;
	rc = lane_post(svc, lane, lane_do_retarget,
		       &(struct lane_job){ .id = id, .buffer_id = buffer_id,
					   .tb = tb, .ack = ack });
	if (rc < 0)
		ctl_msg_free(ack);
	return rc;
}

int lane_post_scrape(struct svc *svc, unsigned lane, uint16_t id,
		     uint64_t token)
{
	return lane_post(svc, lane, lane_do_scrape,
			 &(struct lane_job){ .id = id, .token = token });
}

int lane_post_close(struct svc *svc, unsigned lane, uint64_t conn_id)
{
	int rc;

	if (ctl_lanes_gone(svc->ctl))
		return -ESHUTDOWN;
	rc = ipc_loop_post_wait(svc->lanes[lane].loop, lane_do_close, NULL,
				    conn_id, SVC_WAIT_POST_MS);

	return rc;
}

int svc_producer_port_register(struct svc *svc, struct ipc_host *h)
{
	/* In the declaration order of ProducerPort (method ids 1..12). */
	static const ipc_method_fn handlers[] = {
		pp_initialize,	     pp_register_ds,	  pp_unregister_ds,
		pp_commit,	     pp_get_async,	  pp_register_writer,
		pp_unregister_writer, pp_ds_started,	  pp_ds_stopped,
		pp_triggers,	     pp_sync,		  pp_update_ds,
	};
	const ProtobufCServiceDescriptor *d =
		&perfetto__protos__producer_port__descriptor;
	int rc;

	if (d->n_methods != sizeof(handlers) / sizeof(handlers[0]))
		return -EPROTO;
	rc = ipc_host_add_service(h, d, handlers, svc);
	return rc < 0 ? rc : 0;
}
