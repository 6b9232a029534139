// SPDX-License-Identifier: Apache-2.0
// Test harness for spindled integration tests (see svc_harness.h).
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zlib.h>

#include "spindle/pb.h"
#include "svc_harness.h"
#include "trace_packet.pb-c.h"

#define TH_RX_CAP (1u << 18)

uint32_t th_layout = SPN_SMB_PAGE_DIV4;

void th_fail(const char *file, int line, const char *what)
{
	fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
	abort();
}

void th_svc_start(struct th_svc *t, unsigned lanes)
{
	th_svc_start_ex(t, lanes, 1);
}

void th_svc_start_ex(struct th_svc *t, unsigned lanes, unsigned control)
{
	struct svc_opts o = { 0 };

	strcpy(t->dir, "/tmp/spn_svc_XXXXXX");
	TH_CHECK(mkdtemp(t->dir) != NULL);
	snprintf(t->psock, sizeof(t->psock), "%s/p.sock", t->dir);
	snprintf(t->csock, sizeof(t->csock), "%s/c.sock", t->dir);
	o.producer_socket = t->psock;
	o.consumer_socket = t->csock;
	o.lanes = lanes;
	o.control = control;
	TH_CHECK(svc_start(&o, &t->svc) == 0);
}

void th_svc_stop(struct th_svc *t)
{
	svc_stop(t->svc);
	unlink(t->psock);
	unlink(t->csock);
	rmdir(t->dir);
}

/* --- raw producer --- */

void th_prod_send(struct th_prod *p, const uint8_t *b, size_t n)
{
	while (n) {
		ssize_t w = send(p->fd, b, n, MSG_NOSIGNAL);

		if (w <= 0) {
			p->gone = true;
			return;
		}
		b += w;
		n -= (size_t)w;
	}
}

static void th_send_frame(struct th_prod *p, IpcFrame *f)
{
	struct ipc_txbuf *tx;

	TH_CHECK(ipc_txbuf_from_frame(f, -1, &tx) == 0);
	th_prod_send(p, tx->data, tx->len);
	free(tx);
}

uint64_t th_prod_invoke(struct th_prod *p, enum th_pmethod method,
			const ProtobufCMessage *msg, bool drop_reply)
{
	IpcFrame f = PERFETTO__PROTOS__IPCFRAME__INIT;
	Perfetto__Protos__IPCFrame__InvokeMethod im =
		PERFETTO__PROTOS__IPCFRAME__INVOKE_METHOD__INIT;
	size_t len = protobuf_c_message_get_packed_size(msg);
	uint8_t *args = malloc(len + 1);

	TH_CHECK(args != NULL);
	protobuf_c_message_pack(msg, args);
	im.has_service_id = im.has_method_id = im.has_drop_reply = true;
	im.service_id = 1;
	im.method_id = method;
	im.drop_reply = drop_reply;
	im.has_args_proto = true;
	im.args_proto.data = args;
	im.args_proto.len = len;
	f.has_request_id = true;
	f.request_id = p->next_id++;
	f.msg_case = PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD;
	f.msg_invoke_method = &im;
	th_send_frame(p, &f);
	free(args);
	return f.request_id;
}

/* Next frame from the service, or NULL when the connection closed. An fd
 * that comes along waits in p->pending_fd. */
static IpcFrame *th_recv(struct th_prod *p)
{
	for (;;) {
		const uint8_t *payload;
		uint32_t plen;
		ssize_t n = ipc_frame_scan(p->rx, p->rx_len, &payload, &plen);
		char cbuf[CMSG_SPACE(sizeof(int))];
		struct iovec iov;
		struct msghdr mh = { 0 };
		ssize_t got;

		if (n > 0) {
			IpcFrame *f = NULL;

			TH_CHECK(ipc_frame_unpack(payload, plen, &f) == 0);
			memmove(p->rx, p->rx + n, p->rx_len - (size_t)n);
			p->rx_len -= (size_t)n;
			return f;
		}
		TH_CHECK(n == IPC_FRAME_NEED_MORE);
		iov.iov_base = p->rx + p->rx_len;
		iov.iov_len = TH_RX_CAP - p->rx_len;
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		got = recvmsg(p->fd, &mh, MSG_CMSG_CLOEXEC);
		if (got <= 0) {
			p->gone = true;
			return NULL;
		}
		/* One pending-fd slot, as the spec's receiver model: the fd
		 * may arrive with bytes of an earlier frame. */
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c;
		     c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_type == SCM_RIGHTS) {
				if (p->pending_fd >= 0)
					close(p->pending_fd);
				memcpy(&p->pending_fd, CMSG_DATA(c), sizeof(int));
			}
		p->rx_len += (size_t)got;
	}
}

/* Sends InvokeMethod with an fd attached (SCM_RIGHTS on its first byte). */
static uint64_t th_invoke_fd(struct th_prod *p, enum th_pmethod method,
			     const ProtobufCMessage *msg, int fd)
{
	IpcFrame f = PERFETTO__PROTOS__IPCFRAME__INIT;
	Perfetto__Protos__IPCFrame__InvokeMethod im =
		PERFETTO__PROTOS__IPCFRAME__INVOKE_METHOD__INIT;
	size_t len = protobuf_c_message_get_packed_size(msg);
	uint8_t *args = malloc(len + 1);
	struct ipc_txbuf *tx;
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov;
	struct msghdr mh = { 0 };
	struct cmsghdr *cm;

	TH_CHECK(args != NULL);
	protobuf_c_message_pack(msg, args);
	im.has_service_id = im.has_method_id = im.has_drop_reply = true;
	im.service_id = 1;
	im.method_id = method;
	im.has_args_proto = true;
	im.args_proto.data = args;
	im.args_proto.len = len;
	f.has_request_id = true;
	f.request_id = p->next_id++;
	f.msg_case = PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD;
	f.msg_invoke_method = &im;
	TH_CHECK(ipc_txbuf_from_frame(&f, -1, &tx) == 0);
	iov.iov_base = tx->data;
	iov.iov_len = tx->len;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	TH_CHECK(sendmsg(p->fd, &mh, MSG_NOSIGNAL) == (ssize_t)tx->len);
	free(tx);
	free(args);
	return f.request_id;
}

/* Waits for the reply to request id; returns the frame (caller frees). */
/* Keeps a command frame met while waiting for something else. */
static void th_stash(struct th_prod *p, IpcFrame *f)
{
	TH_CHECK(p->nstash < TH_STASH);
	p->stash[p->nstash++] = f;
}

IpcFrame *th_prod_wait_reply(struct th_prod *p, uint64_t id)
{
	for (;;) {
		IpcFrame *f = th_recv(p);

		if (!f || f->request_id == id)
			return f;
		if (f->request_id == p->async_id)
			th_stash(p, f);
		else
			ipc_frame_free(f);
	}
}

void th_prod_register(struct th_prod *p, const char *ds_name,
		      const struct th_prod_opts *o)
{
	Perfetto__Protos__RegisterDataSourceRequest reg =
		PERFETTO__PROTOS__REGISTER_DATA_SOURCE_REQUEST__INIT;
	Perfetto__Protos__DataSourceDescriptor d =
		PERFETTO__PROTOS__DATA_SOURCE_DESCRIPTOR__INIT;
	IpcFrame *f;

	d.name = (char *)ds_name;
	if (o && o->notify_start) {
		d.has_will_notify_on_start = true;
		d.will_notify_on_start = true;
	}
	if (o && o->notify_stop) {
		d.has_will_notify_on_stop = true;
		d.will_notify_on_stop = true;
	}
	if (o && o->clear_incr) {
		d.has_handles_incremental_state_clear = true;
		d.handles_incremental_state_clear = true;
	}
	reg.data_source_descriptor = &d;
	f = th_prod_wait_reply(p, th_prod_invoke(p, TH_REG_DS, &reg.base, false));
	TH_CHECK(f != NULL);
	ipc_frame_free(f);
}

int th_prod_connect_ex(struct th_prod *p, const struct th_svc *t,
		       const char *name, const char *ds_name,
		       const struct th_prod_opts *o)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	IpcFrame bind = PERFETTO__PROTOS__IPCFRAME__INIT;
	Perfetto__Protos__IPCFrame__BindService bs =
		PERFETTO__PROTOS__IPCFRAME__BIND_SERVICE__INIT;
	Perfetto__Protos__InitializeConnectionRequest init =
		PERFETTO__PROTOS__INITIALIZE_CONNECTION_REQUEST__INIT;
	Perfetto__Protos__GetAsyncCommandRequest ga =
		PERFETTO__PROTOS__GET_ASYNC_COMMAND_REQUEST__INIT;
	uint64_t init_id;
	IpcFrame *f;
	int used = -1;

	memset(p, 0, sizeof(*p));
	p->rx = malloc(TH_RX_CAP);
	TH_CHECK(p->rx != NULL);
	p->pending_fd = -1;
	p->next_id = 1;
	p->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	strcpy(sa.sun_path, t->psock);
	TH_CHECK(connect(p->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	bs.service_name = "ProducerPort";
	bind.has_request_id = true;
	bind.request_id = p->next_id++;
	bind.msg_case = PERFETTO__PROTOS__IPCFRAME__MSG_MSG_BIND_SERVICE;
	bind.msg_bind_service = &bs;
	th_send_frame(p, &bind);
	init.producer_name = (char *)name;
	init.has_smb_scraping_mode = true;
	init.smb_scraping_mode =
		PERFETTO__PROTOS__INITIALIZE_CONNECTION_REQUEST__PRODUCER_SMBSCRAPING_MODE__SMB_SCRAPING_ENABLED;
	if (o && o->page_hint) {
		init.has_shared_memory_page_size_hint_bytes = true;
		init.shared_memory_page_size_hint_bytes = o->page_hint;
	}
	if (o && o->size_hint) {
		init.has_shared_memory_size_hint_bytes = true;
		init.shared_memory_size_hint_bytes = o->size_hint;
	}
	if (o && (o->provided_flag || o->provided_fd >= 0)) {
		init.has_producer_provided_shmem = true;
		init.producer_provided_shmem = o->provided_flag;
	}
	if (o && o->provided_fd >= 0)
		init_id = th_invoke_fd(p, TH_INIT, &init.base, o->provided_fd);
	else
		init_id = th_prod_invoke(p, TH_INIT, &init.base, false);
	/* The stream right behind, without waiting (ipc-wire.md §9). */
	p->async_id = th_prod_invoke(p, TH_GET_ASYNC, &ga.base, false);
	f = th_prod_wait_reply(p, init_id);
	TH_CHECK(f != NULL);
	if (f->msg_case == PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD_REPLY &&
	    f->msg_invoke_method_reply->success) {
		Perfetto__Protos__InitializeConnectionResponse *r =
			perfetto__protos__initialize_connection_response__unpack(
				NULL, f->msg_invoke_method_reply->reply_proto.len,
				f->msg_invoke_method_reply->reply_proto.data);

		TH_CHECK(r != NULL);
		used = r->using_shmem_provided_by_producer;
		perfetto__protos__initialize_connection_response__free_unpacked(
			r, NULL);
	}
	ipc_frame_free(f);
	if (used >= 0 && ds_name && !(o && o->no_register))
		th_prod_register(p, ds_name, o);
	return used;
}

void th_prod_connect(struct th_prod *p, const struct th_svc *t,
		     const char *name, const char *ds_name)
{
	TH_CHECK(th_prod_connect_ex(p, t, name, ds_name, NULL) >= 0);
}

uint64_t th_prod_last_id(const struct th_prod *p)
{
	return p->last_id;
}

void th_prod_close(struct th_prod *p)
{
	if (p->smb_base)
		munmap(p->smb_base, p->smb_size);
	close(p->fd);
	if (p->pending_fd >= 0)
		close(p->pending_fd);
	while (p->nstash)
		ipc_frame_free(p->stash[--p->nstash]);
	free(p->rx);
	p->fd = -1;
}

static void th_map_smb(struct th_prod *p, int fd, uint32_t page_kb)
{
	struct stat st;

	TH_CHECK(fd >= 0);
	TH_CHECK(fstat(fd, &st) == 0);
	p->smb_size = (size_t)st.st_size;
	p->smb_base = mmap(NULL, p->smb_size, PROT_READ | PROT_WRITE,
			   MAP_SHARED, fd, 0);
	TH_CHECK(p->smb_base != MAP_FAILED);
	close(fd);
	TH_CHECK(spn_smb_init(&p->smb, p->smb_base, p->smb_size,
				      page_kb * 1024) == 0);
}

int th_prod_wait_cmd(struct th_prod *p)
{
	for (;;) {
		IpcFrame *f;
		Perfetto__Protos__GetAsyncCommandResponse *c;
		int kind;

		if (p->nstash) {
			f = p->stash[0];
			memmove(p->stash, p->stash + 1,
				--p->nstash * sizeof(p->stash[0]));
		} else {
			f = th_recv(p);
		}

		if (!f)
			return -1;
		if (f->request_id != p->async_id ||
		    f->msg_case !=
			    PERFETTO__PROTOS__IPCFRAME__MSG_MSG_INVOKE_METHOD_REPLY) {
			ipc_frame_free(f);
			continue;
		}
		c = perfetto__protos__get_async_command_response__unpack(
			NULL, f->msg_invoke_method_reply->reply_proto.len,
			f->msg_invoke_method_reply->reply_proto.data);
		TH_CHECK(c != NULL);
		kind = c->cmd_case;
		if (kind == PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_TRACING &&
		    c->setup_tracing->has_shared_buffer_page_size_kb) {
			th_map_smb(p, p->pending_fd,
				   c->setup_tracing->shared_buffer_page_size_kb);
			p->pending_fd = -1;
		}
		if (kind == PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE)
			p->last_id = c->start_data_source->new_instance_id;
		if (kind == PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_STOP_DATA_SOURCE)
			p->last_id = c->stop_data_source->instance_id;
		if (kind == PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_FLUSH)
			p->last_id = c->flush->request_id;
		if (kind == PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_SETUP_DATA_SOURCE) {
			p->target_buffer = c->setup_data_source->config->target_buffer;
			p->instance = c->setup_data_source->new_instance_id;
		}
		perfetto__protos__get_async_command_response__free_unpacked(c,
									    NULL);
		ipc_frame_free(f);
		return kind;
	}
}

bool th_prod_fence(struct th_prod *p)
{
	Perfetto__Protos__SyncRequest s = PERFETTO__PROTOS__SYNC_REQUEST__INIT;
	uint64_t id = th_prod_invoke(p, TH_SYNC, &s.base, false);
	IpcFrame *f = th_prod_wait_reply(p, id);

	if (!f)
		return false;
	ipc_frame_free(f);
	return true;
}

/* Encodes one test packet (timestamp + padding in for_testing). */
static size_t th_packet(uint8_t *buf, uint64_t ts, unsigned pad)
{
	uint8_t *q = spn_pb_field_varint(buf, 8, ts);

	if (pad) {
		q = spn_pb_put_key(q, 900, SPN_PB_LEN);
		q = spn_pb_put_varint(q, pad);
		memset(q, 0x5A, pad);
		q += pad;
	}
	return (size_t)(q - buf);
}

unsigned th_prod_write(struct th_prod *p, uint16_t writer,
		       uint32_t *chunk_id, uint64_t first_ts, unsigned n,
		       unsigned pad, uint32_t page0, uint32_t pages)
{
	const uint32_t layout = th_layout;
	const uint32_t nchunks = spn_smb_layout_chunks(layout);
	Perfetto__Protos__CommitDataRequest req =
		PERFETTO__PROTOS__COMMIT_DATA_REQUEST__INIT;
	Perfetto__Protos__CommitDataRequest__ChunksToMove mv[256];
	Perfetto__Protos__CommitDataRequest__ChunksToMove *mvp[256];
	uint32_t csize = p->smb.chunk_size[layout];
	unsigned written = 0, nmv = 0;
	uint8_t pkt[4096];
	int rc;

	for (uint32_t pg = page0; pg < page0 + pages && written < n; pg++) {
		spn_smb_try_partition(&p->smb, pg, layout);
		for (uint32_t ch = 0; ch < nchunks && written < n && nmv < 256;
		     ch++) {
			struct spn_smb_chunk_header *h;
			uint8_t *w, *end;
			unsigned cnt = 0;

			if (spn_smb_try_acquire_write(&p->smb, pg, layout, ch,
						      writer, *chunk_id, 0,
						      &h) != 0)
				continue;
			w = spn_smb_chunk_payload(h);
			end = (uint8_t *)h + csize;
			while (written < n) {
				size_t len = th_packet(pkt, first_ts + written,
						       pad);

				if ((size_t)(end - w) < len + 4)
					break;
				spn_pb_put_varint4(w, (uint32_t)len);
				memcpy(w + 4, pkt, len);
				w += 4 + len;
				written++;
				cnt++;
			}
			spn_smb_chunk_set_packets(h, spn_smb_packets(cnt, 0));
			/* -EAGAIN: the service changed another chunk of the
			 * page meanwhile (a free), retry. Anything else only
			 * when a test scribbles over the SMB. */
			while ((rc = spn_smb_try_complete(&p->smb, pg, layout,
							  ch)) == -EAGAIN)
				;
			if (rc != 0)
				continue;
			perfetto__protos__commit_data_request__chunks_to_move__init(
				&mv[nmv]);
			mv[nmv].has_page = mv[nmv].has_chunk = true;
			mv[nmv].has_target_buffer = true;
			mv[nmv].page = pg;
			mv[nmv].chunk = ch;
			mv[nmv].target_buffer = p->target_buffer;
			mvp[nmv] = &mv[nmv];
			nmv++;
			(*chunk_id)++;
		}
	}
	req.n_chunks_to_move = nmv;
	req.chunks_to_move = mvp;
	th_prod_invoke(p, TH_COMMIT, &req.base, true);
	return written;
}

/* --- consumer --- */

void th_cons_connect(struct th_cons *c, const struct th_svc *t)
{
	memset(c, 0, sizeof(*c));
	TH_CHECK(ipc_sync_connect(t->csock, 5000, &c->sync) == 0);
	TH_CHECK(ipc_sync_bind(c->sync,
				       &perfetto__protos__consumer_port__descriptor,
				       &c->port, 5000) == 0);
}

void th_cons_close(struct th_cons *c)
{
	ipc_sync_close(c->sync);
	free(c->pkt);
	free(c->ts);
	free(c->seq);
}

static void th_on_enable(void *arg, struct ipc_client_reply *rep)
{
	struct th_cons *c = arg;

	c->enable_done = true;
	c->enable_status = rep->status;
	if (rep->status == 0) {
		const Perfetto__Protos__EnableTracingResponse *e =
			(const void *)rep->msg;

		snprintf(c->enable_error, sizeof(c->enable_error), "%s",
			 e->error ? e->error : "");
	}
}

void th_cons_enable_cfg_fd(struct th_cons *c,
			   const Perfetto__Protos__TraceConfig *cfg, int fd)
{
	Perfetto__Protos__EnableTracingRequest req =
		PERFETTO__PROTOS__ENABLE_TRACING_REQUEST__INIT;

	req.trace_config = (Perfetto__Protos__TraceConfig *)cfg;
	c->enable_done = false;
	TH_CHECK(ipc_client_invoke(c->port, "EnableTracing", &req.base, fd, 0,
				   th_on_enable, c, NULL) == 0);
	ipc_loop_run_once(ipc_sync_loop(c->sync), 0);
}

void th_cons_enable_cfg(struct th_cons *c,
			const Perfetto__Protos__TraceConfig *cfg)
{
	th_cons_enable_cfg_fd(c, cfg, -1);
}

void th_cfg_init(struct th_cfg *t, uint32_t size_kb, const char *ds_name)
{
	perfetto__protos__trace_config__init(&t->cfg);
	perfetto__protos__trace_config__buffer_config__init(&t->buf);
	perfetto__protos__trace_config__data_source__init(&t->ds);
	perfetto__protos__data_source_config__init(&t->dsc);
	t->buf.has_size_kb = true;
	t->buf.size_kb = size_kb;
	t->bufs[0] = &t->buf;
	t->dsc.name = (char *)ds_name;
	t->ds.config = &t->dsc;
	t->dss[0] = &t->ds;
	t->cfg.n_buffers = 1;
	t->cfg.buffers = t->bufs;
	t->cfg.n_data_sources = 1;
	t->cfg.data_sources = t->dss;
}

void th_cons_enable(struct th_cons *c, uint32_t size_kb, const char *ds_name)
{
	struct th_cfg t;

	th_cfg_init(&t, size_kb, ds_name);
	th_cons_enable_cfg(c, &t.cfg);
}

void th_cons_wait_enable(struct th_cons *c, int ms)
{
	for (int i = 0; i < ms / 10 && !c->enable_done; i++)
		ipc_loop_run_once(ipc_sync_loop(c->sync), 10);
}

int th_cons_call(struct th_cons *c, const char *method,
		 const ProtobufCMessageDescriptor *d)
{
	_Alignas(max_align_t) unsigned char req[256];

	TH_CHECK(d->sizeof_message <= sizeof(req));
	protobuf_c_message_init(d, req);
	return ipc_sync_call(c->sync, c->port, method, (ProtobufCMessage *)req,
			     -1, NULL, NULL, 10000);
}

/* Inflates a compressed_packets payload (zlib stream) into *out. */
static void th_inflate(const uint8_t *d, size_t n, uint8_t **out, size_t *out_len)
{
	z_stream zs;
	size_t cap = n * 4 + 4096;
	int zr;

	memset(&zs, 0, sizeof(zs));
	TH_CHECK(inflateInit(&zs) == Z_OK);
	*out = malloc(cap);
	TH_CHECK(*out != NULL);
	zs.next_in = (Bytef *)(uintptr_t)d;
	zs.avail_in = (uInt)n;
	do {
		if (zs.total_out == cap) {
			cap *= 2;
			*out = realloc(*out, cap);
			TH_CHECK(*out != NULL);
		}
		zs.next_out = *out + zs.total_out;
		zs.avail_out = (uInt)(cap - zs.total_out);
		zr = inflate(&zs, Z_NO_FLUSH);
	} while (zr == Z_OK);
	TH_CHECK(zr == Z_STREAM_END && zs.avail_in == 0);
	*out_len = zs.total_out;
	inflateEnd(&zs);
}

static void th_count_packet(struct th_cons *c, const uint8_t *d, size_t n);

/* The packets of an inflated Trace stream, counted as if read one by one. */
static void th_count_compressed(struct th_cons *c, const uint8_t *d, size_t n)
{
	uint8_t *raw;
	const uint8_t *p, *end;
	size_t len;
	struct spn_pb_field f;

	th_inflate(d, n, &raw, &len);
	c->compressed++;
	c->inflated_bytes += len;
	for (p = raw, end = raw + len; p < end;) {
		int k = spn_pb_next_field(p, end, &f);

		TH_CHECK(k > 0 && f.id == 1 && f.wt == SPN_PB_LEN);
		th_count_packet(c, f.data, f.value);
		p += k;
	}
	free(raw);
}

static void th_count_packet(struct th_cons *c, const uint8_t *d, size_t n)
{
	Perfetto__Protos__TracePacket *p =
		perfetto__protos__trace_packet__unpack(NULL, n, d);

	TH_CHECK(p != NULL);
	if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_COMPRESSED_PACKETS) {
		/* Alone on its packet: no trusted fields (trace-config.md §4.6). */
		TH_CHECK(p->optional_trusted_uid_case == 0 &&
			 p->optional_trusted_packet_sequence_id_case == 0);
		th_count_compressed(c, p->compressed_packets.data,
				    p->compressed_packets.len);
		perfetto__protos__trace_packet__free_unpacked(p, NULL);
		return;
	}
	c->packets++;
	if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACK_EVENT)
		c->track_events++;
	if (p->previous_packet_dropped)
		c->dropped_marks++;
	if (p->optional_trusted_packet_sequence_id_case ==
		    PERFETTO__PROTOS__TRACE_PACKET__OPTIONAL_TRUSTED_PACKET_SEQUENCE_ID_TRUSTED_PACKET_SEQUENCE_ID &&
	    p->trusted_packet_sequence_id > 1 && p->has_timestamp) {
		c->ts = realloc(c->ts, (c->nts + 1) * sizeof(*c->ts));
		c->seq = realloc(c->seq, (c->nts + 1) * sizeof(*c->seq));
		c->ts[c->nts] = p->timestamp;
		c->seq[c->nts] = p->trusted_packet_sequence_id;
		c->nts++;
	}
	perfetto__protos__trace_packet__free_unpacked(p, NULL);
}

static void th_on_packet(struct th_cons *c)
{
	c->top_packets++;
	c->read_bytes += c->pkt_len;
	th_count_packet(c, c->pkt, c->pkt_len);
	c->pkt_len = 0;
}

void th_cons_count_trace(struct th_cons *c, const uint8_t *d, size_t n)
{
	const uint8_t *p = d, *end = d + n;
	struct spn_pb_field f;

	while (p < end) {
		int k = spn_pb_next_field(p, end, &f);

		TH_CHECK(k > 0 && f.id == 1 && f.wt == SPN_PB_LEN);
		c->top_packets++;
		c->read_bytes += f.value;
		th_count_packet(c, f.data, f.value);
		p += k;
	}
}

static void th_on_read(void *arg, struct ipc_client_reply *rep)
{
	struct th_cons *c = arg;
	const Perfetto__Protos__ReadBuffersResponse *rb = (const void *)rep->msg;

	if (rep->status != 0)
		return;
	for (size_t i = 0; i < rb->n_slices; i++) {
		const Perfetto__Protos__ReadBuffersResponse__Slice *s =
			rb->slices[i];

		c->pkt = realloc(c->pkt, c->pkt_len + s->data.len + 1);
		memcpy(c->pkt + c->pkt_len, s->data.data, s->data.len);
		c->pkt_len += s->data.len;
		if (s->last_slice_for_packet)
			th_on_packet(c);
	}
}

void th_cons_read(struct th_cons *c)
{
	Perfetto__Protos__ReadBuffersRequest req =
		PERFETTO__PROTOS__READ_BUFFERS_REQUEST__INIT;

	TH_CHECK(ipc_sync_stream(c->sync, c->port, "ReadBuffers",
					 &req.base, -1, th_on_read, c, 10000) == 0);
}
