// SPDX-License-Identifier: Apache-2.0
// The frame codec: length-prefix scanning, IPCFrame unpacking and the
// encoding of frames into send buffers.
#include "ipc/frame.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "spindle/pb.h"

static uint32_t ipc_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void ipc_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

ssize_t ipc_frame_scan(const uint8_t *buf, size_t len,
		       const uint8_t **payload, uint32_t *payload_len)
{
	uint32_t n;

	if (len < SPN_IPC_FRAME_HEADER_SIZE)
		return IPC_FRAME_NEED_MORE;
	n = ipc_get_le32(buf);
	if (n > SPN_IPC_MAX_FRAME_PAYLOAD)
		return -EMSGSIZE;
	if (len - SPN_IPC_FRAME_HEADER_SIZE < n)
		return IPC_FRAME_NEED_MORE;
	*payload = buf + SPN_IPC_FRAME_HEADER_SIZE;
	*payload_len = n;
	return (ssize_t)(SPN_IPC_FRAME_HEADER_SIZE + n);
}

size_t ipc_frame_wanted(const uint8_t *buf, size_t len)
{
	if (len < SPN_IPC_FRAME_HEADER_SIZE)
		return SPN_IPC_FRAME_HEADER_SIZE;
	return SPN_IPC_FRAME_HEADER_SIZE + (size_t)ipc_get_le32(buf);
}

int ipc_frame_unpack(const uint8_t *payload, size_t len, IpcFrame **out)
{
	if (!out)
		return -EINVAL;
	*out = perfetto__protos__ipcframe__unpack(NULL, len, payload);
	return *out ? 0 : -EBADMSG;
}

void ipc_frame_free(IpcFrame *f)
{
	if (f)
		perfetto__protos__ipcframe__free_unpacked(f, NULL);
}

/*
 * Allocates a txbuf of len bytes with a close-on-exec copy of fd (if any).
 * Returns NULL with a negative errno in *err on failure: the result, not
 * the error code, says whether a buffer exists.
 */
static struct ipc_txbuf *ipc_txbuf_alloc(size_t len, int fd, int *err)
{
	struct ipc_txbuf *b;

	b = malloc(sizeof(*b) + len);
	if (!b) {
		*err = -ENOMEM;
		return NULL;
	}
	b->next = NULL;
	b->len = (uint32_t)len;
	b->sent = 0;
	b->fd = -1;
	if (fd >= 0) {
		b->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (b->fd < 0) {
			*err = errno ? -errno : -EBADF;
			free(b);
			return NULL;
		}
	}
	return b;
}

int ipc_txbuf_from_frame(const IpcFrame *f, int fd, struct ipc_txbuf **out)
{
	size_t n = perfetto__protos__ipcframe__get_packed_size(f);
	struct ipc_txbuf *b;
	int err;

	if (n > SPN_IPC_MAX_FRAME_PAYLOAD)
		return -EMSGSIZE;
	b = ipc_txbuf_alloc(SPN_IPC_FRAME_HEADER_SIZE + n, fd, &err);
	if (!b)
		return err;
	ipc_put_le32(b->data, (uint32_t)n);
	perfetto__protos__ipcframe__pack(f, b->data + SPN_IPC_FRAME_HEADER_SIZE);
	*out = b;
	return 0;
}

/* IPCFrame field numbers used by the hand-laid reply envelope. */
enum {
	IPC_F_REQUEST_ID = 2,		/* IPCFrame.request_id */
	IPC_F_INVOKE_REPLY = 6,		/* IPCFrame.msg_invoke_method_reply */
	IPC_F_REPLY_SUCCESS = 1,	/* InvokeMethodReply.success */
	IPC_F_REPLY_HAS_MORE = 2,	/* InvokeMethodReply.has_more */
	IPC_F_REPLY_PROTO = 3,		/* InvokeMethodReply.reply_proto */
};

int ipc_txbuf_reply(const struct ipc_reply_desc *d, const ProtobufCMessage *msg,
		    const uint8_t *raw, size_t raw_len, int fd,
		    struct ipc_txbuf **out)
{
	size_t body_len, inner, payload;
	struct ipc_txbuf *b;
	uint8_t *p, *slot;
	bool with_proto = d->success && !d->dispatch_error;
	int err;

	body_len = msg ? protobuf_c_message_get_packed_size(msg) : raw_len;
	if (body_len > SPN_IPC_MAX_FRAME_PAYLOAD)
		return -EMSGSIZE;
	if (d->dispatch_error)
		inner = 2;			/* success:false */
	else
		inner = (d->success ? 2 : 0) + 2;	/* success, has_more */
	if (with_proto)
		inner += spn_pb_bytes_field_len(IPC_F_REPLY_PROTO, body_len);
	payload = 1 + spn_pb_varint_len(d->request_id) + 1 +
		  SPN_PB_NESTED_SIZE + inner;
	if (payload > SPN_IPC_MAX_FRAME_PAYLOAD)
		return -EMSGSIZE;
	b = ipc_txbuf_alloc(SPN_IPC_FRAME_HEADER_SIZE + payload, fd, &err);
	if (!b)
		return err;
	ipc_put_le32(b->data, (uint32_t)payload);
	p = b->data + SPN_IPC_FRAME_HEADER_SIZE;
	p = spn_pb_field_varint(p, IPC_F_REQUEST_ID, d->request_id);
	p = spn_pb_begin_nested(p, IPC_F_INVOKE_REPLY, &slot);
	if (d->dispatch_error) {
		p = spn_pb_field_bool(p, IPC_F_REPLY_SUCCESS, false);
	} else {
		if (d->success)
			p = spn_pb_field_bool(p, IPC_F_REPLY_SUCCESS, true);
		/* A rejection ends the stream (spec §6). */
		p = spn_pb_field_bool(p, IPC_F_REPLY_HAS_MORE,
				      d->success && d->has_more);
	}
	if (with_proto) {
		p = spn_pb_put_key(p, IPC_F_REPLY_PROTO, SPN_PB_LEN);
		p = spn_pb_put_varint(p, body_len);
		if (msg)
			protobuf_c_message_pack(msg, p);
		else if (body_len)
			memcpy(p, raw, body_len);
		p += body_len;
	}
	spn_pb_end_nested(slot, p);
	assert(p == b->data + b->len);
	*out = b;
	return 0;
}

void ipc_txbuf_free(struct ipc_txbuf *b)
{
	if (!b)
		return;
	if (b->fd >= 0)
		close(b->fd);
	free(b);
}
