// SPDX-License-Identifier: Apache-2.0
// ConsumerPort on the lanes: every call is packed, its reply deferred and
// the whole of it handed to the control plane (DESIGN.md §2: sessions,
// guardrails and reads never run on a lane). Lane thread only.
#include <errno.h>
#include <stdlib.h>

#include "consumer_port.pb-c.h"
#include "core/svc_int.h"
#include "ipc/log.h"

/* Forwards one call: packed request, fd, identity and reply handle. */
static void cp_forward(struct ipc_request *req, const ProtobufCMessage *a,
		       struct svc *svc, uint32_t method)
{
	struct ipc_conn *c = ipc_request_conn(req);
	struct svc_lane *lane = svc_lane_of(svc, ipc_conn_loop(c));
	struct ctl_msg *m = ctl_msg_new(CTL_C_CALL);

	if (!m || !lane) {
		free(m);
		ipc_request_reject(req);
		return;
	}
	m->method = method;
	m->lane = lane->idx;
	m->conn_id = ipc_conn_id(c);
	m->cred = *ipc_conn_cred(c);
	m->len = protobuf_c_message_get_packed_size(a);
	m->bytes = malloc(m->len ? m->len : 1);
	if (!m->bytes) {
		ctl_msg_free(m);
		ipc_request_reject(req);
		return;
	}
	protobuf_c_message_pack(a, m->bytes);
	m->fd = ipc_request_take_fd(req);
	ipc_request_defer(req, &m->reply);
	if (ctl_post(svc, m) < 0)
		spn_log_error("consumer", "control plane unreachable");
}

/* One handler per method id, as the host's table needs a function each. */
#define CP_HANDLER(id)                                                       \
	static void cp_m##id(struct ipc_request *req,                        \
			     const ProtobufCMessage *a, void *ctx)           \
	{                                                                    \
		cp_forward(req, a, ctx, id);                                 \
	}
CP_HANDLER(1) CP_HANDLER(2) CP_HANDLER(3) CP_HANDLER(4) CP_HANDLER(5)
CP_HANDLER(6) CP_HANDLER(7) CP_HANDLER(8) CP_HANDLER(9) CP_HANDLER(10)
CP_HANDLER(11) CP_HANDLER(12) CP_HANDLER(13) CP_HANDLER(14) CP_HANDLER(15)

int svc_consumer_port_register(struct svc *svc, struct ipc_host *h)
{
	static const ipc_method_fn handlers[] = {
		cp_m1,	cp_m2,	cp_m3,	cp_m4,	cp_m5,
		cp_m6,	cp_m7,	cp_m8,	cp_m9,	cp_m10,
		cp_m11, cp_m12, cp_m13, cp_m14, cp_m15,
	};
	const ProtobufCServiceDescriptor *d =
		&perfetto__protos__consumer_port__descriptor;
	int rc;

	if (d->n_methods != sizeof(handlers) / sizeof(handlers[0]))
		return -EPROTO;
	rc = ipc_host_add_service(h, d, handlers, svc);
	return rc < 0 ? rc : 0;
}
