// SPDX-License-Identifier: Apache-2.0
// The spindle CLI's connection to the ConsumerPort (socket name, bind),
// its wait loop that honours Ctrl-C, and its signal handling.
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd/spindle_cli.h"
#include "ipc/sockname.h"

volatile sig_atomic_t cli_interrupted;

uint64_t cli_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* First signal: ask the main flow to stop cleanly. Second: give up now
 * (the service frees a session whose consumer goes away). */
static void cli_on_signal(int sig)
{
	static const char msg[] =
		"\nspindle: interrupted again, exiting without the trace\n";

	(void)sig;
	if (cli_interrupted) {
		ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);

		(void)n;
		_exit(CLI_EXIT_FAIL);
	}
	cli_interrupted = 1;
}

void cli_signals_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	/* No SA_RESTART: the loop's io_uring wait returns -EINTR so the
	 * flag is seen at once. */
	sa.sa_handler = cli_on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

const char *cli_status_str(int status)
{
	switch (status) {
	case -EREMOTEIO:
		return "rejected by the service";
	case -EOPNOTSUPP:
		return "not offered by this service";
	case -ECONNRESET:
		return "the service closed the connection";
	case -ETIMEDOUT:
		return "no answer from the service";
	case -EPROTO:
		return "protocol error";
	case -EBADMSG:
		return "undecodable reply";
	case -EINTR:
		return "interrupted";
	default:
		return strerror(status < 0 ? -status : status);
	}
}

int cli_connect(const struct cli_opts *o, struct cli_conn *c, char *namebuf,
		size_t namelen)
{
	int rc;

	memset(c, 0, sizeof(*c));
	c->name = o->socket ? o->socket :
			      ipc_default_socket(false, namebuf, namelen);
	rc = ipc_sync_connect(c->name, CLI_CALL_TIMEOUT_MS, &c->sync);
	if (rc) {
		fprintf(stderr,
			"spindle: cannot connect to the tracing service at "
			"%s: %s\n",
			c->name, cli_status_str(rc));
		return CLI_EXIT_FAIL;
	}
	c->loop = ipc_sync_loop(c->sync);
	rc = ipc_sync_bind(c->sync, &perfetto__protos__consumer_port__descriptor,
			   &c->port, CLI_CALL_TIMEOUT_MS);
	if (rc) {
		fprintf(stderr, "spindle: %s does not offer ConsumerPort: %s\n",
			c->name, cli_status_str(rc));
		cli_disconnect(c);
		return CLI_EXIT_FAIL;
	}
	return 0;
}

void cli_disconnect(struct cli_conn *c)
{
	if (c->sync)
		ipc_sync_close(c->sync);
	c->sync = NULL;
	c->loop = NULL;
	c->port = NULL;
}

int cli_wait(struct cli_conn *c, const bool *done, int timeout_ms)
{
	uint64_t deadline = cli_now_ms() + (uint64_t)(timeout_ms < 0 ? 0 :
								      timeout_ms);

	while (!*done) {
		int wait = 1000, rc;

		if (cli_interrupted)
			return -EINTR;
		if (timeout_ms >= 0) {
			uint64_t now = cli_now_ms();

			if (now >= deadline)
				return -ETIMEDOUT;
			if (deadline - now < (uint64_t)wait)
				wait = (int)(deadline - now);
		}
		rc = ipc_loop_run_once(c->loop, wait);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Reply callback of cli_invoke: keeps the final reply of a unary call. */
static void cli_call_cb(void *arg, struct ipc_client_reply *r)
{
	struct cli_call *call = arg;

	if (r->status == 0 && r->has_more)
		return;
	call->done = true;
	call->status = r->status;
	if (r->status == 0)
		call->msg = ipc_client_reply_take_msg(r);
}

int cli_invoke(struct cli_conn *c, const char *method,
	       const ProtobufCMessage *req, int fd, struct cli_call *call)
{
	memset(call, 0, sizeof(*call));
	return ipc_client_invoke(c->port, method, req, fd, 0, cli_call_cb, call,
				 &call->id);
}

int cli_call(struct cli_conn *c, const char *method,
	     const ProtobufCMessage *req, int fd, struct cli_call *call,
	     int timeout_ms)
{
	int rc = cli_invoke(c, method, req, fd, call);

	if (rc)
		return rc;
	rc = cli_wait(c, &call->done, timeout_ms);
	if (rc) {
		ipc_client_cancel(ipc_sync_client(c->sync), call->id);
		return rc;
	}
	return call->status;
}

void cli_call_free(struct cli_call *call)
{
	if (call->msg)
		protobuf_c_message_free_unpacked(call->msg, NULL);
	call->msg = NULL;
}
