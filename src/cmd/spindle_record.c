// SPDX-License-Identifier: Apache-2.0
// The spindle CLI's session flows (consumer-port.md §2-§7, ipc-wire.md §9):
// record (EnableTracing, whose reply comes when the session ends; Flush then
// DisableTracing on Ctrl-C; then ReadBuffers), --detach, --attach and
// --is_detached, with the one-line progress display on a terminal.
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cmd/spindle_cli.h"
#include "ipc/flush_flags.h"

/* Default flush timeout of a session (consumer-port.md §5). */
#define CLI_DEFAULT_FLUSH_TIMEOUT_MS 5000u
/* Period of the progress display. */
#define CLI_PROGRESS_MS 1000u

/* One session being waited for, as the loop runs. */
struct cli_rec {
	struct cli_conn *c;		/* the connection */
	struct cli_call enable;		/* EnableTracing: replies at the end */
	struct cli_call flush;		/* our Flush when stopping */
	struct cli_call disable;	/* DisableTracing after that flush */
	struct cli_call stats;		/* GetTraceStats for the display */
	bool stopping;			/* Flush sent */
	bool disable_sent;		/* DisableTracing sent */
	bool stats_pending;		/* a GetTraceStats is in flight */
	bool stats_off;			/* the service refuses GetTraceStats */
	bool progress;			/* stderr is a terminal */
	bool progress_shown;		/* a progress line is on screen */
	uint64_t start_ms;		/* when EnableTracing/Attach was sent */
	uint32_t duration_ms;		/* session duration (0: none known) */
	uint64_t stop_at_ms;		/* backstop stop time (0: none) */
	uint64_t next_stats_ms;		/* when to ask for stats next */
	bool have_stats;		/* fields below are valid */
	uint64_t buffered;		/* bytes in the session's buffers */
	uint32_t producers;		/* producers connected */
	uint64_t dropped;		/* chunks overwritten or discarded */
};

static void cli_rec_init(struct cli_rec *r, struct cli_conn *c,
			 uint32_t duration_ms, uint32_t flush_timeout_ms)
{
	memset(r, 0, sizeof(*r));
	r->c = c;
	r->progress = isatty(STDERR_FILENO);
	r->start_ms = cli_now_ms();
	r->next_stats_ms = r->start_ms;
	r->duration_ms = duration_ms;
	/* The service ends a session with a duration by itself (flush,
	 * then disable). If its reply is late past that flush's timeout,
	 * the CLI stops the session as on Ctrl-C. */
	if (duration_ms)
		r->stop_at_ms = r->start_ms + duration_ms +
				(flush_timeout_ms ? flush_timeout_ms :
						    CLI_DEFAULT_FLUSH_TIMEOUT_MS) +
				CLI_STOP_GRACE_MS;
}

/* Sends Flush; DisableTracing follows when it completes (the perfetto
 * CLI's way: DisableTracing itself does not flush). */
static void cli_rec_stop(struct cli_rec *r)
{
	Perfetto__Protos__FlushRequest req = PERFETTO__PROTOS__FLUSH_REQUEST__INIT;

	/* Reason "trace stop", initiator "perfetto CLI", as that CLI sends:
	 * the service then records the final flush's outcome in the trace
	 * stats. */
	req.has_flags = true;
	req.flags = SPN_FLUSH_REASON_TRACE_STOP | SPN_FLUSH_INITIATOR_PERFETTO_CLI;
	r->stopping = true;
	if (cli_invoke(r->c, "Flush", &req.base, -1, &r->flush)) {
		r->flush.done = true;
		r->flush.status = -EIO;
	}
}

static void cli_rec_disable(struct cli_rec *r)
{
	Perfetto__Protos__DisableTracingRequest req =
		PERFETTO__PROTOS__DISABLE_TRACING_REQUEST__INIT;
	int rc;

	r->disable_sent = true;
	if (r->flush.status && r->flush.status != -EIO)
		fprintf(stderr, "%sspindle: warning: final flush: %s\n",
			r->progress_shown ? "\r\033[K" : "",
			cli_status_str(r->flush.status));
	cli_call_free(&r->flush);
	rc = cli_invoke(r->c, "DisableTracing", &req.base, -1, &r->disable);
	if (rc)
		fprintf(stderr, "spindle: DisableTracing: %s\n",
			cli_status_str(rc));
}

/* Takes the figures of a GetTraceStats reply. */
static void cli_rec_take_stats(struct cli_rec *r)
{
	const Perfetto__Protos__GetTraceStatsResponse *m =
		(const Perfetto__Protos__GetTraceStatsResponse *)r->stats.msg;
	const Perfetto__Protos__TraceStats *ts = m ? m->trace_stats : NULL;

	r->stats_pending = false;
	if (r->stats.status || !ts) {
		r->stats_off = r->stats.status != 0;
		cli_call_free(&r->stats);
		return;
	}
	r->buffered = 0;
	r->dropped = 0;	/* the session's buffers only, not service-wide */
	for (size_t i = 0; i < ts->n_buffer_stats; i++) {
		const Perfetto__Protos__TraceStats__BufferStats *b =
			ts->buffer_stats[i];
		uint64_t gone = b->bytes_read + b->bytes_overwritten;
		uint64_t in = b->bytes_written > gone ? b->bytes_written - gone : 0;

		if (b->has_buffer_size && in > b->buffer_size)
			in = b->buffer_size;
		r->buffered += in;
		r->dropped += b->chunks_overwritten + b->chunks_discarded;
	}
	r->producers = ts->producers_connected;
	r->have_stats = true;
	cli_call_free(&r->stats);
}

/* Redraws the progress line (terminal only). */
static void cli_rec_draw(struct cli_rec *r, uint64_t now)
{
	double el = (double)(now - r->start_ms) / 1000.0;
	char line[160], hb[32];
	int n;

	if (r->duration_ms)
		n = snprintf(line, sizeof(line), "spindle: %.1fs / %.1fs", el,
			     r->duration_ms / 1000.0);
	else
		n = snprintf(line, sizeof(line), "spindle: %.1fs", el);
	if (r->have_stats && n > 0 && (size_t)n < sizeof(line))
		n += snprintf(line + n, sizeof(line) - (size_t)n,
			      " | %s in buffers | %u producer%s | %llu "
			      "dropped chunks",
			      cli_human_bytes(r->buffered, hb, sizeof(hb)),
			      r->producers, r->producers == 1 ? "" : "s",
			      (unsigned long long)r->dropped);
	if (r->stopping && n > 0 && (size_t)n < sizeof(line))
		snprintf(line + n, sizeof(line) - (size_t)n, " | stopping");
	fprintf(stderr, "\r\033[K%s", line);
	fflush(stderr);
	r->progress_shown = true;
}

/* The progress display's part of a loop turn. */
static void cli_rec_progress(struct cli_rec *r, uint64_t now)
{
	Perfetto__Protos__GetTraceStatsRequest req =
		PERFETTO__PROTOS__GET_TRACE_STATS_REQUEST__INIT;

	if (!r->progress)
		return;
	if (r->stats_pending && r->stats.done) {
		cli_rec_take_stats(r);
		cli_rec_draw(r, now);
	}
	if (now < r->next_stats_ms)
		return;
	r->next_stats_ms = now + CLI_PROGRESS_MS;
	if (!r->stats_pending && !r->stats_off) {
		if (cli_invoke(r->c, "GetTraceStats", &req.base, -1, &r->stats))
			r->stats_off = true;
		else
			r->stats_pending = true;
	}
	if (!r->stats_pending)
		cli_rec_draw(r, now);	/* else when the stats come */
}

/* Forgets the calls still in flight: their replies must not land in *r
 * once it is gone. */
static void cli_rec_cancel(struct cli_rec *r)
{
	struct ipc_client *cl = ipc_sync_client(r->c->sync);
	struct cli_call *calls[] = { &r->flush, &r->disable, &r->stats };

	for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
		if (calls[i]->id && !calls[i]->done)
			ipc_client_cancel(cl, calls[i]->id);
		cli_call_free(calls[i]);
	}
	if (r->progress_shown)
		fprintf(stderr, "\r\033[K");
	r->progress_shown = false;
}

/* Runs the loop until the EnableTracing reply: the session has ended.
 * Returns 0 or CLI_EXIT_FAIL (loop failure, printed). */
static int cli_rec_wait(struct cli_rec *r)
{
	while (!r->enable.done) {
		uint64_t now = cli_now_ms(), wait = CLI_PROGRESS_MS;
		int rc;

		if (!r->stopping && (cli_interrupted ||
				     (r->stop_at_ms && now >= r->stop_at_ms)))
			cli_rec_stop(r);
		if (r->stopping && r->flush.done && !r->disable_sent)
			cli_rec_disable(r);
		cli_rec_progress(r, now);
		if (r->stop_at_ms && !r->stopping && r->stop_at_ms - now < wait)
			wait = r->stop_at_ms - now;
		rc = ipc_loop_run_once(r->c->loop, (int)wait);
		if (rc < 0) {
			cli_rec_cancel(r);
			fprintf(stderr, "spindle: event loop failed: %s\n",
				strerror(-rc));
			return CLI_EXIT_FAIL;
		}
	}
	cli_rec_cancel(r);
	return 0;
}

/*
 * Waits for the end of the session, then gets the trace: read back the
 * file the service wrote (wif) or ReadBuffers into out. Returns the exit
 * status.
 */
static int cli_rec_finish(struct cli_rec *r, struct cli_out *out, bool wif)
{
	const Perfetto__Protos__EnableTracingResponse *resp;
	bool failed = false;
	int rc = cli_rec_wait(r);

	if (!rc && r->enable.status) {
		fprintf(stderr, "spindle: EnableTracing: %s\n",
			cli_status_str(r->enable.status));
		rc = CLI_EXIT_FAIL;
	}
	if (rc) {
		cli_call_free(&r->enable);
		cli_out_close(out);
		cli_summary_free(&out->sum);
		return rc;
	}
	resp = (const Perfetto__Protos__EnableTracingResponse *)r->enable.msg;
	if (resp->error && *resp->error) {
		fprintf(stderr, "spindle: tracing failed: %s\n", resp->error);
		failed = true;
	}
	cli_call_free(&r->enable);
	if (!wif && cli_read_buffers(r->c, out))
		failed = true;
	if (failed && (wif || !out->sum.packets)) {
		cli_out_close(out);
		cli_summary_free(&out->sum);
		cli_out_drop_empty(out);
		return CLI_EXIT_FAIL;
	}
	rc = cli_out_finish(out, wif);
	return failed ? CLI_EXIT_FAIL : rc;
}

/* Output rules of a config: write_into_file with output_path needs no -o
 * (and takes none); otherwise -o is required (unless detaching without
 * write_into_file: the trace is read at --attach). */
static int cli_check_output(const struct cli_opts *o,
			    const Perfetto__Protos__TraceConfig *cfg)
{
	bool has_path = cfg->output_path && *cfg->output_path;

	if (cfg->write_into_file && has_path && o->out_path) {
		fprintf(stderr, "spindle: -o cannot be used with a config "
				"that sets output_path\n");
		return CLI_EXIT_USAGE;
	}
	if (o->mode == CLI_DETACH && !cfg->write_into_file && o->out_path) {
		fprintf(stderr, "spindle: -o with --detach needs a "
				"write_into_file config (read the trace with "
				"--attach=KEY -o FILE)\n");
		return CLI_EXIT_USAGE;
	}
	if (!o->out_path && !(cfg->write_into_file && has_path) &&
	    !(o->mode == CLI_DETACH && !cfg->write_into_file)) {
		fprintf(stderr, "spindle: an output file is required (-o FILE, "
				"or - for stdout)\n");
		return CLI_EXIT_USAGE;
	}
	return 0;
}

/* Opens what the session writes to: -o, or a stand-in naming the
 * service-created output_path for the summary. */
static int cli_open_output(const struct cli_opts *o,
			   const Perfetto__Protos__TraceConfig *cfg,
			   struct cli_out *out)
{
	if (o->out_path)
		return cli_out_open(out, o->out_path);
	memset(out, 0, sizeof(*out));
	out->fd = -1;
	out->path = cfg->write_into_file ? cfg->output_path : NULL;
	return 0;
}

/* Sends EnableTracing (with the output fd for write_into_file without
 * output_path). Returns 0 or CLI_EXIT_FAIL (printed). */
static int cli_enable(struct cli_rec *r, Perfetto__Protos__TraceConfig *cfg,
		      const struct cli_out *out)
{
	Perfetto__Protos__EnableTracingRequest req =
		PERFETTO__PROTOS__ENABLE_TRACING_REQUEST__INIT;
	int fd = cfg->write_into_file && out->fd >= 0 ? out->fd : -1;
	int rc;

	req.trace_config = cfg;
	rc = cli_invoke(r->c, "EnableTracing", &req.base, fd, &r->enable);
	if (rc) {
		fprintf(stderr, "spindle: EnableTracing: %s\n",
			cli_status_str(rc));
		return CLI_EXIT_FAIL;
	}
	return 0;
}

int cli_record(const struct cli_opts *o, struct cli_conn *c,
	       Perfetto__Protos__TraceConfig *cfg)
{
	struct cli_out out;
	struct cli_rec r;
	int rc = cli_check_output(o, cfg);

	if (rc)
		return rc;
	if (cli_open_output(o, cfg, &out))
		return CLI_EXIT_FAIL;
	cli_signals_install();
	cli_rec_init(&r, c, cfg->duration_ms, cfg->flush_timeout_ms);
	if (cli_enable(&r, cfg, &out)) {
		cli_out_close(&out);
		cli_out_drop_empty(&out);
		return CLI_EXIT_FAIL;
	}
	return cli_rec_finish(&r, &out, cfg->write_into_file);
}

/* Detach(key) or Attach(key), blocking. Returns the call status. */
static int cli_key_call(struct cli_conn *c, const char *method,
			const char *key, ProtobufCMessage **reply)
{
	Perfetto__Protos__DetachRequest dreq =
		PERFETTO__PROTOS__DETACH_REQUEST__INIT;
	Perfetto__Protos__AttachRequest areq =
		PERFETTO__PROTOS__ATTACH_REQUEST__INIT;
	bool attach = !strcmp(method, "Attach");

	dreq.key = areq.key = (char *)key;
	return ipc_sync_call(c->sync, c->port, method,
			     attach ? &areq.base : &dreq.base, -1, reply, NULL,
			     CLI_CALL_TIMEOUT_MS);
}

int cli_detach(const struct cli_opts *o, struct cli_conn *c,
	       Perfetto__Protos__TraceConfig *cfg)
{
	const Perfetto__Protos__EnableTracingResponse *resp;
	struct cli_out out;
	struct cli_rec r;
	int rc = cli_check_output(o, cfg);

	if (rc)
		return rc;
	if (cli_open_output(o, cfg, &out))
		return CLI_EXIT_FAIL;
	cli_rec_init(&r, c, 0, 0);
	rc = cli_enable(&r, cfg, &out);
	if (!rc)
		rc = cli_key_call(c, "Detach", o->key, NULL);
	resp = (const Perfetto__Protos__EnableTracingResponse *)r.enable.msg;
	if (resp && resp->error && *resp->error)
		fprintf(stderr, "spindle: tracing failed: %s\n", resp->error);
	else if (rc && rc != CLI_EXIT_FAIL)
		fprintf(stderr, "spindle: Detach: %s\n", cli_status_str(rc));
	if (r.enable.id && !r.enable.done)
		ipc_client_cancel(ipc_sync_client(c->sync), r.enable.id);
	cli_call_free(&r.enable);
	cli_out_close(&out);
	if (rc) {
		cli_out_drop_empty(&out);
		return CLI_EXIT_FAIL;
	}
	fprintf(stderr, "spindle: session detached as '%s' (--attach=%s)\n",
		o->key, o->key);
	if (!cfg->write_into_file)
		fprintf(stderr, "spindle: it does not write into a file: its "
				"trace is lost unless --attach=%s -o FILE "
				"reads it before it ends\n",
			o->key);
	return CLI_EXIT_OK;
}

/* After a successful Attach: wait for the end (or --stop), then get the
 * trace. Returns the exit status. */
static int cli_attached(const struct cli_opts *o, struct cli_conn *c,
			const Perfetto__Protos__TraceConfig *cfg)
{
	Perfetto__Protos__EnableTracingRequest req =
		PERFETTO__PROTOS__ENABLE_TRACING_REQUEST__INIT;
	bool wif = cfg && cfg->write_into_file;
	struct cli_out out;
	struct cli_rec r;
	int rc;

	if (wif && o->out_path)
		fprintf(stderr, "spindle: warning: -o ignored: the service "
				"writes this session into its own file\n");
	memset(&out, 0, sizeof(out));
	out.fd = -1;
	if (wif)
		out.path = cfg->output_path && *cfg->output_path ?
				   cfg->output_path : NULL;
	else if (cli_out_open(&out, o->out_path))
		return CLI_EXIT_FAIL;
	cli_signals_install();
	cli_rec_init(&r, c, 0, 0);
	req.has_attach_notification_only = true;
	req.attach_notification_only = true;
	rc = cli_invoke(c, "EnableTracing", &req.base, -1, &r.enable);
	if (rc) {
		fprintf(stderr, "spindle: EnableTracing: %s\n",
			cli_status_str(rc));
		cli_out_close(&out);
		return CLI_EXIT_FAIL;
	}
	if (o->stop)
		cli_rec_stop(&r);
	if (wif && !out.path) {
		/* The file was passed by fd at --detach: nothing to scan. */
		rc = cli_rec_wait(&r);
		if (!rc && r.enable.status)
			rc = CLI_EXIT_FAIL;
		cli_call_free(&r.enable);
		if (!rc)
			fprintf(stderr, "spindle: session '%s' ended; the "
					"service wrote its trace into the "
					"file given at --detach\n",
				o->key);
		return rc;
	}
	return cli_rec_finish(&r, &out, wif);
}

int cli_attach(const struct cli_opts *o, struct cli_conn *c)
{
	const Perfetto__Protos__AttachResponse *resp;
	ProtobufCMessage *reply = NULL;
	int rc = cli_key_call(c, "Attach", o->key, &reply);

	if (rc) {
		fprintf(stderr, "spindle: cannot attach to '%s': %s\n", o->key,
			rc == -EREMOTEIO ? "no detached session with this key" :
					   cli_status_str(rc));
		return CLI_EXIT_FAIL;
	}
	resp = (const Perfetto__Protos__AttachResponse *)reply;
	if (!(resp->trace_config && resp->trace_config->write_into_file) &&
	    !o->out_path) {
		/* Park it again rather than lose it with this connection. */
		cli_key_call(c, "Detach", o->key, NULL);
		protobuf_c_message_free_unpacked(reply, NULL);
		fprintf(stderr, "spindle: session '%s' does not write into a "
				"file: -o FILE is required\n",
			o->key);
		return CLI_EXIT_USAGE;
	}
	rc = cli_attached(o, c, resp->trace_config);
	protobuf_c_message_free_unpacked(reply, NULL);
	return rc;
}

int cli_is_detached(const struct cli_opts *o, struct cli_conn *c)
{
	int rc = cli_key_call(c, "Attach", o->key, NULL);

	if (rc == -EREMOTEIO)
		return CLI_EXIT_USAGE;	/* perfetto: 2 = not detached */
	if (rc) {
		fprintf(stderr, "spindle: Attach: %s\n", cli_status_str(rc));
		return CLI_EXIT_FAIL;
	}
	rc = cli_key_call(c, "Detach", o->key, NULL);
	if (rc) {
		fprintf(stderr, "spindle: cannot detach '%s' again: %s\n",
			o->key, cli_status_str(rc));
		return CLI_EXIT_FAIL;
	}
	return CLI_EXIT_OK;
}
