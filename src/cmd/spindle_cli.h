// SPDX-License-Identifier: Apache-2.0
// The spindle consumer CLI's shared declarations: parsed options, the
// connection to the ConsumerPort, the trace output and its summary, and the
// entry point of each mode (record, detach/attach, query, clone, trigger).
#ifndef SPN_CMD_SPINDLE_CLI_H
#define SPN_CMD_SPINDLE_CLI_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "consumer_port.pb-c.h"
#include "ipc/client.h"

/* Exit statuses: success, runtime failure, bad usage (as perfetto). */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

/* Simple-mode defaults (perfetto's): 10 s of tracing into 32 MiB. */
#define CLI_DEFAULT_DURATION_MS 10000u
#define CLI_DEFAULT_BUFFER_KB (32u * 1024u)
/* Largest -b: the buffer size in bytes must fit a uint32. */
#define CLI_MAX_BUFFER_KB (UINT32_MAX / 1024u)
/* Largest packet the CLI reassembles from ReadBuffers slices. */
#define CLI_MAX_PACKET_BYTES (256u << 20)
/* Time allowed to connect and for short calls (bind, Detach, Free...). */
#define CLI_CALL_TIMEOUT_MS 10000
/* Most --trigger flags one run takes. */
#define CLI_MAX_TRIGGERS 64
/* How long past duration_ms the CLI waits for the service to end the
 * session before it sends Flush and DisableTracing itself. */
#define CLI_STOP_GRACE_MS 2000u

/* What the command line asks for. */
enum cli_mode {
	CLI_RECORD,		/* trace (config or simple mode) into -o */
	CLI_DETACH,		/* start a session, park it under a key, exit */
	CLI_ATTACH,		/* re-attach by key, wait (or --stop), read */
	CLI_IS_DETACHED,	/* exit 0 if a session is parked under key */
	CLI_QUERY,		/* service state as tables */
	CLI_QUERY_RAW,		/* service state as text proto */
	CLI_CLONE,		/* clone a session by id into -o */
	CLI_TRIGGER,		/* activate triggers as a producer, exit */
};

/* Parsed command line. */
struct cli_opts {
	enum cli_mode mode;		/* selected mode */
	const char *config_path;	/* -c FILE ("-" = stdin) or NULL */
	bool txt;			/* --txt: the config is text format */
	const char *out_path;		/* -o FILE ("-" = stdout) or NULL */
	bool has_duration;		/* -t given */
	uint32_t duration_ms;		/* -t value (0 = until stopped) */
	bool has_buffer;		/* -b given */
	uint32_t buffer_kb;		/* -b value in KiB */
	char **sources;			/* data source names (simple mode) */
	int n_sources;			/* entries in sources */
	const char *key;		/* --detach/--attach/--is_detached */
	bool stop;			/* --stop (with --attach) */
	uint64_t clone_id;		/* --clone session id */
	const char *socket;		/* --consumer-socket or NULL */
	const char *producer_socket;	/* --producer-socket or NULL */
	char *triggers[CLI_MAX_TRIGGERS]; /* --trigger names, in order */
	size_t n_triggers;		/* entries in triggers */
};

/* An open ConsumerPort connection. */
struct cli_conn {
	struct ipc_sync *sync;		/* blocking wrapper and its loop */
	struct ipc_loop *loop;		/* the wrapper's loop (async calls) */
	struct ipc_proxy *port;		/* bound ConsumerPort */
	const char *name;		/* socket name, for messages */
};

/* Counters over the packets of a trace, for the summary line. */
struct cli_summary {
	uint64_t packets;		/* TracePackets seen */
	uint64_t bytes;			/* bytes of the Trace written */
	uint32_t *seqs;			/* open-addressing set of sequence ids */
	size_t seq_cap;			/* slots in seqs (power of 2) */
	size_t n_seqs;			/* distinct sequence ids seen */
	uint64_t gap_marks;		/* previous_packet_dropped after the
					 * first packet of a sequence */
	bool has_stats;			/* a trace_stats packet was seen */
	uint64_t stats_losses;		/* loss counters of the last one */
};

/* Where the trace goes. */
struct cli_out {
	int fd;				/* output fd, -1 when none */
	const char *path;		/* -o path ("-" = stdout) */
	bool is_stdout;			/* fd is standard output */
	uint8_t *buf;			/* write buffer */
	size_t len;			/* bytes pending in buf */
	size_t cap;			/* size of buf */
	uint8_t *pkt;			/* packet being reassembled */
	size_t pkt_len;			/* its bytes so far */
	size_t pkt_cap;			/* its allocation */
	int err;			/* first write error (-errno) */
	struct cli_summary sum;		/* what was written */
};

/* Set by the SIGINT/SIGTERM handler: stop requests so far. */
extern volatile sig_atomic_t cli_interrupted;

/* ---- spindle_parse.c: pure parsers (no I/O) ---- */

/* Parses a duration "N[ms|s|m|h]" (plain N: seconds) into *ms. Returns 0
 * or -EINVAL (syntax, overflow, or more than UINT32_MAX ms). */
int cli_parse_duration(const char *s, uint32_t *ms);

/* Parses a size "N[k|kb|m|mb|g|gb]" (case-insensitive; plain N: KiB)
 * into KiB. Returns 0, -EINVAL (syntax or 0) or -ERANGE (over
 * CLI_MAX_BUFFER_KB). */
int cli_parse_size_kb(const char *s, uint32_t *kb);

/* Parses a decimal uint64 (no sign, no suffix). Returns 0 or -EINVAL. */
int cli_parse_u64(const char *s, uint64_t *v);

/* Formats n bytes as "12.3 MiB" into buf. Returns buf. */
const char *cli_human_bytes(uint64_t n, char *buf, size_t len);

/* ---- spindle_config.c ---- */

/* Builds the session's TraceConfig: from -c (text or binary) or the
 * simple-mode flags (a config with activate_triggers too: main then
 * activates them instead of tracing). Returns 0 and *out (free with
 * perfetto__protos__trace_config__free_unpacked(*out, NULL)) or prints a
 * one-line error and returns CLI_EXIT_FAIL / CLI_EXIT_USAGE. */
int cli_load_config(const struct cli_opts *o,
		    Perfetto__Protos__TraceConfig **out);

/* ---- spindle_conn.c ---- */

/* Connects to the consumer socket and binds ConsumerPort. Prints the
 * error and returns CLI_EXIT_FAIL on failure, else 0. */
int cli_connect(const struct cli_opts *o, struct cli_conn *c, char *namebuf,
		size_t namelen);
void cli_disconnect(struct cli_conn *c);

/* Runs the connection's loop until *done, a stop request (returns
 * -EINTR) or timeout_ms (< 0: none; returns -ETIMEDOUT). */
int cli_wait(struct cli_conn *c, const bool *done, int timeout_ms);

/* One unary call made with cli_invoke / cli_call. */
struct cli_call {
	bool done;			/* the final reply (or failure) came */
	int status;			/* 0 or an ipc_client_reply status */
	ProtobufCMessage *msg;		/* the reply, owned (cli_call_free) */
	uint64_t id;			/* request id, for cancelling */
};

/* Sends a unary call (with fd when >= 0); the reply lands in *call as
 * the loop runs. Returns 0 or an ipc_client_invoke error. */
int cli_invoke(struct cli_conn *c, const char *method,
	       const ProtobufCMessage *req, int fd, struct cli_call *call);
/* cli_invoke, then cli_wait for the reply. Returns 0, the reply's
 * status, an invoke error, -EINTR or -ETIMEDOUT (call cancelled). */
int cli_call(struct cli_conn *c, const char *method,
	     const ProtobufCMessage *req, int fd, struct cli_call *call,
	     int timeout_ms);
void cli_call_free(struct cli_call *call);

/* Installs the SIGINT/SIGTERM handler (a second signal exits at once)
 * and ignores SIGPIPE. */
void cli_signals_install(void);

/* Monotonic milliseconds. */
uint64_t cli_now_ms(void);

/* Text of an ipc status for messages ("rejected by the service"...). */
const char *cli_status_str(int status);

/* ---- spindle_out.c ---- */

/* Opens -o (creating/truncating; "-" = stdout). Prints the error and
 * returns CLI_EXIT_FAIL on failure. */
int cli_out_open(struct cli_out *out, const char *path);
/* Adds one slice of a packet; writes the packet on `last`. 0 or -errno. */
int cli_out_slice(struct cli_out *out, const uint8_t *data, size_t len,
		  bool last);
/* Flushes and closes (unless stdout). Returns 0 or the first -errno. */
int cli_out_close(struct cli_out *out);
/* Removes the -o file when it stayed empty (nothing was traced). */
void cli_out_drop_empty(const struct cli_out *out);
/* Reads the trace back from out->path (a write_into_file trace) into
 * out->sum. Returns 0, -EBADMSG (not a Trace) or -errno. */
int cli_out_scan_file(struct cli_out *out, const char *path);
/* Scans one complete TracePacket into the summary; a compressed_packets
 * packet counts as the packets it inflates to. */
void cli_summary_packet(struct cli_summary *s, const uint8_t *p, size_t len);
void cli_summary_free(struct cli_summary *s);
/* Prints "spindle: N packets, ..." to stderr. */
void cli_summary_print(const struct cli_summary *s, const char *path);

/* ---- spindle_read.c ---- */

/* ReadBuffers into out, then FreeBuffers. Returns 0 or CLI_EXIT_FAIL
 * (error printed). */
int cli_read_buffers(struct cli_conn *c, struct cli_out *out);

/* Closes the output and prints the summary (scan: read the file back
 * first, as the service wrote it). Frees the summary. Returns 0 or
 * CLI_EXIT_FAIL (error printed). */
int cli_out_finish(struct cli_out *out, bool scan);

/* --clone=ID. Returns the exit status. */
int cli_clone(const struct cli_opts *o, struct cli_conn *c);

/* ---- spindle_record.c ---- */

/* Record, --detach, --attach, --is_detached. Return the exit status. */
int cli_record(const struct cli_opts *o, struct cli_conn *c,
	       Perfetto__Protos__TraceConfig *cfg);
int cli_detach(const struct cli_opts *o, struct cli_conn *c,
	       Perfetto__Protos__TraceConfig *cfg);
int cli_attach(const struct cli_opts *o, struct cli_conn *c);
int cli_is_detached(const struct cli_opts *o, struct cli_conn *c);

/* ---- spindle_trigger.c ---- */

/* Activates triggers `names` through the producer socket (--producer-socket,
 * else PERFETTO_PRODUCER_SOCK_NAME, else Perfetto's default) and waits until
 * the service processed them. Returns the exit status (errors printed). */
int cli_trigger(const struct cli_opts *o, char *const *names, size_t n);

/* ---- spindle_query.c ---- */

/* --query / --query-raw. Returns the exit status. */
int cli_query(const struct cli_opts *o, struct cli_conn *c);

#endif
