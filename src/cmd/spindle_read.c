// SPDX-License-Identifier: Apache-2.0
// The spindle CLI's read side: ReadBuffers into the output file and
// FreeBuffers (consumer-port.md §3-4), and --clone=ID (§12).
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cmd/spindle_cli.h"

/* Appends each slice of a ReadBuffers reply to the output. */
static void cli_read_cb(void *arg, struct ipc_client_reply *r)
{
	const Perfetto__Protos__ReadBuffersResponse *m;
	struct cli_out *out = arg;

	if (r->status)
		return;
	m = (const Perfetto__Protos__ReadBuffersResponse *)r->msg;
	for (size_t i = 0; i < m->n_slices; i++) {
		const Perfetto__Protos__ReadBuffersResponse__Slice *sl =
			m->slices[i];

		if (cli_out_slice(out, sl->has_data ? sl->data.data : NULL,
				  sl->has_data ? sl->data.len : 0,
				  sl->last_slice_for_packet))
			return;
	}
}

/* Frees the session's buffers; a failure only warns (the session is freed
 * anyway when the connection closes). */
static void cli_free_buffers(struct cli_conn *c)
{
	Perfetto__Protos__FreeBuffersRequest req =
		PERFETTO__PROTOS__FREE_BUFFERS_REQUEST__INIT;
	int rc = ipc_sync_call(c->sync, c->port, "FreeBuffers", &req.base, -1,
			       NULL, NULL, CLI_CALL_TIMEOUT_MS);

	if (rc)
		fprintf(stderr, "spindle: warning: FreeBuffers: %s\n",
			cli_status_str(rc));
}

int cli_read_buffers(struct cli_conn *c, struct cli_out *out)
{
	Perfetto__Protos__ReadBuffersRequest req =
		PERFETTO__PROTOS__READ_BUFFERS_REQUEST__INIT;
	int rc;

	/* No time limit: a large trace takes a while; a dead service
	 * ends the stream with -ECONNRESET. */
	rc = ipc_sync_stream(c->sync, c->port, "ReadBuffers", &req.base, -1,
			     cli_read_cb, out, -1);
	if (rc) {
		fprintf(stderr, "spindle: ReadBuffers failed: %s\n",
			cli_status_str(rc));
		return CLI_EXIT_FAIL;
	}
	if (out->err) {
		fprintf(stderr, "spindle: cannot write %s: %s\n", out->path,
			strerror(-out->err));
		return CLI_EXIT_FAIL;
	}
	if (out->pkt_len)
		fprintf(stderr, "spindle: warning: the read ended inside a "
				"packet (%zu bytes dropped)\n",
			out->pkt_len);
	cli_free_buffers(c);
	return 0;
}

int cli_out_finish(struct cli_out *out, bool scan)
{
	int rc = cli_out_close(out);

	if (rc) {
		fprintf(stderr, "spindle: cannot write %s: %s\n", out->path,
			strerror(-rc));
		rc = CLI_EXIT_FAIL;
	} else if (scan && out->is_stdout) {
		fprintf(stderr, "spindle: the service wrote the trace to "
				"<stdout>\n");
	} else if (scan && (rc = cli_out_scan_file(out, out->path))) {
		fprintf(stderr, "spindle: warning: cannot read back %s: %s\n",
			out->path, strerror(-rc));
		rc = 0;
	} else {
		cli_summary_print(&out->sum, out->path);
	}
	cli_summary_free(&out->sum);
	return rc;
}

int cli_clone(const struct cli_opts *o, struct cli_conn *c)
{
	Perfetto__Protos__CloneSessionRequest req =
		PERFETTO__PROTOS__CLONE_SESSION_REQUEST__INIT;
	const Perfetto__Protos__CloneSessionResponse *resp;
	struct cli_call call;
	struct cli_out out;
	int rc;

	if (cli_out_open(&out, o->out_path))
		return CLI_EXIT_FAIL;
	req.selector_case =
		PERFETTO__PROTOS__CLONE_SESSION_REQUEST__SELECTOR_SESSION_ID;
	req.session_id = o->clone_id;
	/* The fd is used only if the source writes into a file. */
	rc = cli_call(c, "CloneSession", &req.base, out.fd, &call, -1);
	if (rc) {
		fprintf(stderr, "spindle: CloneSession: %s%s\n",
			cli_status_str(rc),
			rc == -EREMOTEIO ?
				" (this service may not offer it)" : "");
		goto fail;
	}
	resp = (const Perfetto__Protos__CloneSessionResponse *)call.msg;
	if (!resp->success) {
		fprintf(stderr, "spindle: cannot clone session %llu: %s\n",
			(unsigned long long)o->clone_id,
			resp->error && *resp->error ? resp->error : "failed");
		goto fail;
	}
	if (resp->was_write_into_file) {
		/* The service wrote the source file's copy and the clone into
		 * our fd: nothing to read, only the clone to free (§12). */
		cli_call_free(&call);
		cli_free_buffers(c);
		return cli_out_finish(&out, true);
	}
	cli_call_free(&call);
	if (cli_read_buffers(c, &out))
		goto fail;
	return cli_out_finish(&out, false);
fail:
	cli_call_free(&call);
	cli_out_close(&out);
	cli_summary_free(&out.sum);
	cli_out_drop_empty(&out);
	return CLI_EXIT_FAIL;
}
