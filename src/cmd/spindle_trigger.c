// SPDX-License-Identifier: Apache-2.0
// spindle --trigger (and configs with activate_triggers): activates triggers as a producer on the PRODUCER socket (InitializeConnection, ActivateTriggers), then waits for a Sync on the same connection, so the service has acted on them before the CLI exits 0.
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cmd/spindle_cli.h"
#include "ipc/sockname.h"
#include "producer_port.pb-c.h"

/* The producer name the CLI connects with: the one Perfetto's command
 * line uses, so TriggerConfig.producer_name_regex filters written for it
 * match us too. */
#define CLI_TRIGGER_PRODUCER_NAME "perfetto_cmd_producer"
#define CLI_TRIGGER_SDK_VERSION "spindle-cli 0.1.0"

/* Prints "spindle: triggers activated: a, b". */
static void cli_trigger_report(const char *verb, char *const *names, size_t n)
{
	fprintf(stderr, "spindle: %s:", verb);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, "%s %s", i ? "," : "", names[i]);
	fputc('\n', stderr);
}

/* InitializeConnection, ActivateTriggers, Sync on a bound ProducerPort.
 * Returns the exit status (errors printed). */
static int cli_trigger_calls(struct ipc_sync *s, struct ipc_proxy *port, const char *sock,
			     char *const *names, size_t n)
{
	Perfetto__Protos__InitializeConnectionRequest init =
		PERFETTO__PROTOS__INITIALIZE_CONNECTION_REQUEST__INIT;
	Perfetto__Protos__ActivateTriggersRequest act =
		PERFETTO__PROTOS__ACTIVATE_TRIGGERS_REQUEST__INIT;
	Perfetto__Protos__SyncRequest sync = PERFETTO__PROTOS__SYNC_REQUEST__INIT;
	int rc;

	init.producer_name = CLI_TRIGGER_PRODUCER_NAME;
	init.sdk_version = CLI_TRIGGER_SDK_VERSION;
	rc = ipc_sync_call(s, port, "InitializeConnection", &init.base, -1, NULL, NULL,
			   CLI_CALL_TIMEOUT_MS);
	if (rc) {
		fprintf(stderr, "spindle: InitializeConnection on %s: %s\n", sock,
			cli_status_str(rc));
		return CLI_EXIT_FAIL;
	}
	act.n_trigger_names = n;
	act.trigger_names = (char **)names;
	rc = ipc_client_invoke(port, "ActivateTriggers", &act.base, -1, IPC_INVOKE_DROP_REPLY,
			       NULL, NULL, NULL);
	if (rc) {
		fprintf(stderr, "spindle: ActivateTriggers on %s: %s\n", sock,
			cli_status_str(rc));
		return CLI_EXIT_FAIL;
	}
	/* The reply to Sync comes after the service processed everything
	 * this connection sent before it. A service that rejects Sync has
	 * still read the triggers first (the spec counts a rejection as the
	 * fence); one without the method cannot confirm them. */
	rc = ipc_sync_call(s, port, "Sync", &sync.base, -1, NULL, NULL, CLI_CALL_TIMEOUT_MS);
	if (rc == -EOPNOTSUPP) {
		cli_trigger_report("triggers sent (this service cannot confirm them)",
				   names, n);
		return CLI_EXIT_OK;
	}
	if (rc && rc != -EREMOTEIO) {
		fprintf(stderr, "spindle: triggers sent to %s, but not confirmed: %s\n",
			sock, cli_status_str(rc));
		return CLI_EXIT_FAIL;
	}
	cli_trigger_report("triggers activated", names, n);
	return CLI_EXIT_OK;
}

int cli_trigger(const struct cli_opts *o, char *const *names, size_t n)
{
	char namebuf[4096];
	const char *sock = o->producer_socket ?
				   o->producer_socket :
				   ipc_default_socket(true, namebuf, sizeof(namebuf));
	struct ipc_proxy *port;
	struct ipc_sync *s;
	int rc;

	for (size_t i = 0; i < n; i++) {
		if (!names[i] || !names[i][0]) {
			fputs("spindle: empty trigger name\n", stderr);
			return CLI_EXIT_FAIL;
		}
	}
	rc = ipc_sync_connect(sock, CLI_CALL_TIMEOUT_MS, &s);
	if (rc) {
		fprintf(stderr,
			"spindle: cannot connect to the tracing service's producer "
			"socket %s: %s\n",
			sock, cli_status_str(rc));
		return CLI_EXIT_FAIL;
	}
	rc = ipc_sync_bind(s, &perfetto__protos__producer_port__descriptor, &port,
			   CLI_CALL_TIMEOUT_MS);
	if (rc) {
		fprintf(stderr, "spindle: %s does not offer ProducerPort: %s\n", sock,
			cli_status_str(rc));
		ipc_sync_close(s);
		return CLI_EXIT_FAIL;
	}
	rc = cli_trigger_calls(s, port, sock, names, n);
	ipc_sync_close(s);
	return rc;
}
