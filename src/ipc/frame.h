// SPDX-License-Identifier: Apache-2.0
// The frame codec of the IPC wire protocol (spec/ipc-wire.md §2-3): the
// 4-byte little-endian length prefix, the IPCFrame envelope, and encoded
// frames ready to send (struct ipc_txbuf).
//
// The scanner is a pure function over bytes, picohttpparser style: it
// reports "consumed N", "need more" or "invalid" and never reads past the
// length it was given. Nothing here touches a socket or a loop.
#ifndef SPN_IPC_FRAME_H
#define SPN_IPC_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <protobuf-c/protobuf-c.h>

#include "ipc_frame.pb-c.h"

/* Limits of spec/constants.md §1 (all wire-visible). */
#define SPN_IPC_FRAME_HEADER_SIZE 4u	/* uint32 LE payload length */
#define SPN_IPC_BUFFER_SIZE 131072u	/* kIPCBufferSize: header + payload */
/* Largest payload a receiver accepts (and we ever emit): 131068 B. */
#define SPN_IPC_MAX_FRAME_PAYLOAD \
	(SPN_IPC_BUFFER_SIZE - SPN_IPC_FRAME_HEADER_SIZE)

typedef Perfetto__Protos__IPCFrame IpcFrame;

/* ipc_frame_scan() result for an incomplete frame (distinct from "invalid",
 * which is a negative errno, and from "consumed", which is > 0). */
#define IPC_FRAME_NEED_MORE 0

/*
 * Looks for one complete frame at the start of buf[0..len).
 * Returns the bytes the frame takes (header + payload, >= 4) and sets
 * *payload / *payload_len (payload_len 0 is a zero-length frame, which the
 * caller skips); IPC_FRAME_NEED_MORE when the header or payload is
 * incomplete; -EMSGSIZE when the header announces more than
 * SPN_IPC_MAX_FRAME_PAYLOAD (the peer is broken: close the connection).
 * Reads only buf[0..len).
 */
ssize_t ipc_frame_scan(const uint8_t *buf, size_t len,
		       const uint8_t **payload, uint32_t *payload_len);

/*
 * Total size (header + payload) of the frame whose header starts buf, or
 * SPN_IPC_FRAME_HEADER_SIZE while fewer than 4 bytes are known. The result
 * may exceed SPN_IPC_BUFFER_SIZE; ipc_frame_scan() rejects such frames.
 */
size_t ipc_frame_wanted(const uint8_t *buf, size_t len);

/*
 * Decodes a payload into a newly allocated IPCFrame (free it with
 * ipc_frame_free). Returns 0, -EBADMSG when the bytes are not a valid
 * IPCFrame, -EINVAL for a NULL out.
 */
int ipc_frame_unpack(const uint8_t *payload, size_t len, IpcFrame **out);

/* Frees a frame from ipc_frame_unpack (NULL is fine). */
void ipc_frame_free(IpcFrame *f);

/* An encoded frame (header + payload) queued for sending on a connection,
 * with at most one file descriptor that rides on its first byte. */
struct ipc_txbuf {
	struct ipc_txbuf *next;	/* next in the connection's send queue */
	uint32_t len;		/* bytes in data (header included) */
	uint32_t sent;		/* bytes of data already sent */
	int fd;			/* owned fd to attach, -1 for none */
	uint8_t data[];		/* header + payload */
};

/*
 * Allocates a txbuf holding f encoded with its length header. When fd >= 0
 * a close-on-exec duplicate of it is attached (the caller keeps its own).
 * Returns 0; -EMSGSIZE when the payload would exceed
 * SPN_IPC_MAX_FRAME_PAYLOAD; -ENOMEM; -errno of the dup (e.g. -EBADF).
 */
int ipc_txbuf_from_frame(const IpcFrame *f, int fd, struct ipc_txbuf **out);

/* What an InvokeMethodReply frame says (spec §3.4). */
struct ipc_reply_desc {
	uint64_t request_id;	/* echoed from the request */
	bool success;		/* the method resolved; reply_proto is valid */
	bool has_more;		/* more replies follow (only with success) */
	bool dispatch_error;	/* early rejection: success:false only */
};

/*
 * Builds an InvokeMethodReply frame the way the reference host lays it out
 * (spec §3.4): request_id, then the reply message with a 4-byte padded
 * length holding success (only when true), has_more (always) and, on
 * success, reply_proto. With dispatch_error set it holds only
 * success:false. reply_proto is msg packed straight into the txbuf (one
 * copy), or, when msg is NULL, raw[0..raw_len) (may be empty). fd as in
 * ipc_txbuf_from_frame. Returns 0, -EMSGSIZE, -ENOMEM or the dup's -errno.
 */
int ipc_txbuf_reply(const struct ipc_reply_desc *d, const ProtobufCMessage *msg,
		    const uint8_t *raw, size_t raw_len, int fd,
		    struct ipc_txbuf **out);

/* Frees a txbuf, closing its fd if still attached (NULL is fine). */
void ipc_txbuf_free(struct ipc_txbuf *b);

#endif
