// SPDX-License-Identifier: Apache-2.0
// Tests of the spindle CLI: its value parsers in-process, its flag errors
// (one line, exit status 2) by running the binary, and end-to-end runs of
// the binary against an in-process spindled (1 and 2 lanes): simple mode,
// text and binary configs, write_into_file, Ctrl-C, detach/attach, and
// --trigger starting and stopping a session another run records.
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "cmd/spindle_cli.h"
#include "core/service.h"
#include "ipc/loop.h"
#include "trace_config.pb-c.h"
#include "trace_packet.pb-c.h"

extern char **environ;

/* Longest a CLI run may take before the test kills it. */
#define RUN_TIMEOUT_MS 20000

/* A service under test and the files of one test. */
struct env {
	char dir[64];		/* mkdtemp dir: sockets and outputs */
	char psock[128];	/* producer socket */
	char csock[128];	/* consumer socket */
	char out[128];		/* trace output path */
	struct svc *svc;	/* the in-process spindled (NULL: none) */
};

/* Result of one run of the binary. */
struct run {
	int status;		/* exit status, or 128 + signal */
	char err[4096];		/* its stderr */
	char outtxt[16384];	/* its stdout */
};

/* ---- helpers ---- */

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static void read_file_into(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");
	size_t n = 0;

	buf[0] = '\0';
	if (!f)
		return;
	n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
}

/* Waits for pid at most RUN_TIMEOUT_MS (then kills it: a failure). */
static int wait_child(pid_t pid)
{
	int st = 0;

	for (unsigned waited = 0;; waited += 10) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			break;
		assert_int_equal(r, 0);
		if (waited >= RUN_TIMEOUT_MS) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			fail_msg("the CLI did not finish in %d ms", RUN_TIMEOUT_MS);
		}
		sleep_ms(10);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Starts the binary with argv (NULL-terminated, argv[0] included), its
 * stdout and stderr into files of dir. */
static pid_t spawn_cli(const char *dir, char **argv)
{
	posix_spawn_file_actions_t fa;
	char o[160], e[160];
	pid_t pid;

	snprintf(o, sizeof(o), "%s/stdout.txt", dir);
	snprintf(e, sizeof(e), "%s/stderr.txt", dir);
	assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, o,
					 O_WRONLY | O_CREAT | O_TRUNC, 0644);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, e,
					 O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_int_equal(posix_spawn(&pid, SPINDLE_BIN, &fa, NULL, argv,
				     environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	return pid;
}

static void collect(const char *dir, struct run *r, int status)
{
	char p[160];

	r->status = status;
	snprintf(p, sizeof(p), "%s/stderr.txt", dir);
	read_file_into(p, r->err, sizeof(r->err));
	snprintf(p, sizeof(p), "%s/stdout.txt", dir);
	read_file_into(p, r->outtxt, sizeof(r->outtxt));
}

/* Runs the binary to completion: run_cli(env-dir, &r, "-t", "1s", NULL). */
static void run_cli(const char *dir, struct run *r, ...)
{
	char *argv[32] = { (char *)"spindle" };
	va_list ap;
	int n = 1;

	va_start(ap, r);
	while (n < 31 && (argv[n] = va_arg(ap, char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	collect(dir, r, wait_child(spawn_cli(dir, argv)));
}

/* Counts newlines. */
static int lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* Reads a whole trace file and decodes it. */
static Perfetto__Protos__Trace *load_trace(const char *path, size_t *size)
{
	struct stat st;
	uint8_t *buf;
	FILE *f;
	Perfetto__Protos__Trace *t;

	assert_int_equal(stat(path, &st), 0);
	*size = (size_t)st.st_size;
	buf = malloc(*size ? *size : 1);
	assert_non_null(buf);
	f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fread(buf, 1, *size, f), *size);
	fclose(f);
	t = perfetto__protos__trace__unpack(NULL, *size, buf);
	free(buf);
	assert_non_null(t);
	return t;
}

/* Index of the first packet carrying `what`, or -1. */
static int find_packet(const Perfetto__Protos__Trace *t,
		       Perfetto__Protos__TracePacket__DataCase what)
{
	for (size_t i = 0; i < t->n_packet; i++)
		if (t->packet[i]->data_case == what)
			return (int)i;
	return -1;
}

/* Checks a trace holds the service's packets and that the summary line
 * agrees with it; returns the trace (free it). */
static Perfetto__Protos__Trace *check_trace(const struct env *e,
					    const struct run *r)
{
	unsigned long long pk = 0, by = 0, losses = 0;
	size_t size, seqs = 0;
	Perfetto__Protos__Trace *t = load_trace(e->out, &size);
	const char *line = strstr(r->err, "spindle: ");
	char path[160] = "";

	assert_true(find_packet(t, PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_CONFIG) >= 0);
	assert_true(find_packet(t, PERFETTO__PROTOS__TRACE_PACKET__DATA_CLOCK_SNAPSHOT) >= 0);
	assert_true(find_packet(t, PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_STATS) >= 0);
	assert_non_null(line);
	assert_int_equal(sscanf(line,
				"spindle: %llu packets, %llu bytes (%*[^)]), %zu "
				"sequences, %llu data losses, written to %159s",
				&pk, &by, &seqs, &losses, path),
			 5);
	assert_int_equal(pk, t->n_packet);
	assert_int_equal(by, size);
	assert_int_equal(seqs, 1);	/* no producer: the service's only */
	assert_int_equal(losses, 0);
	assert_string_equal(path, e->out);
	return t;
}

/* ---- fixtures ---- */

static int env_setup(void **state, unsigned lanes)
{
	struct env *e = calloc(1, sizeof(*e));
	struct svc_opts so = { 0 };

	if (!e)
		return -1;
	strcpy(e->dir, "/tmp/spn_cli_XXXXXX");
	if (!mkdtemp(e->dir))
		return -1;
	snprintf(e->psock, sizeof(e->psock), "%s/p.sock", e->dir);
	snprintf(e->csock, sizeof(e->csock), "%s/c.sock", e->dir);
	snprintf(e->out, sizeof(e->out), "%s/out.pftrace", e->dir);
	so.producer_socket = e->psock;
	so.consumer_socket = e->csock;
	so.lanes = lanes;
	so.control = 1;
	if (lanes && svc_start(&so, &e->svc))
		return -1;
	*state = e;
	return 0;
}

static int setup_lanes1(void **state) { return env_setup(state, 1); }
static int setup_lanes2(void **state) { return env_setup(state, 2); }
static int setup_nosvc(void **state) { return env_setup(state, 0); }

static int env_teardown(void **state)
{
	struct env *e = *state;
	const char *names[] = { "stdout.txt", "stderr.txt", "out.pftrace",
				"cfg.txt", "cfg.pb" };
	char p[200];

	if (e->svc)
		svc_stop(e->svc);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", e->dir, names[i]);
		unlink(p);
	}
	rmdir(e->dir);
	free(e);
	return 0;
}

/* ---- parsers ---- */

static void test_parse_duration(void **state)
{
	static const struct {
		const char *s;
		uint32_t ms;
	} ok[] = {
		{ "10s", 10000 }, { "500ms", 500 }, { "2m", 120000 },
		{ "1h", 3600000 }, { "7", 7000 }, { "0", 0 }, { "0ms", 0 },
		{ "4294967295ms", UINT32_MAX }, { "4294967s", 4294967000u },
	};
	static const char *bad[] = {
		"", "s", "10x", "-1s", "1.5s", "10 s", "10S", "4294967296ms",
		"4294968s", "99999999999999999999999s", "71583m", "1194h",
		"10sec",
	};
	uint32_t ms;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ms = 12345;
		assert_int_equal(cli_parse_duration(ok[i].s, &ms), 0);
		assert_int_equal(ms, ok[i].ms);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(cli_parse_duration(bad[i], &ms), -EINVAL);
}

static void test_parse_size(void **state)
{
	static const struct {
		const char *s;
		uint32_t kb;
	} ok[] = {
		{ "32mb", 32768 }, { "32MB", 32768 }, { "64m", 65536 },
		{ "1gb", 1048576 }, { "3G", 3145728 }, { "100kb", 100 },
		{ "100k", 100 }, { "100", 100 }, { "4194303", 4194303 },
		{ "4095mb", 4193280 },
	};
	static const char *bad[] = { "", "mb", "0", "0mb", "-1mb", "1.5mb",
				     "12tb", "32 mb", "32mbb", "kb" };
	static const char *range[] = { "4gb", "4096mb", "4194304",
				       "99999999999gb" };
	uint32_t kb;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		kb = 7;
		assert_int_equal(cli_parse_size_kb(ok[i].s, &kb), 0);
		assert_int_equal(kb, ok[i].kb);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(cli_parse_size_kb(bad[i], &kb), -EINVAL);
	for (size_t i = 0; i < sizeof(range) / sizeof(range[0]); i++)
		assert_int_equal(cli_parse_size_kb(range[i], &kb), -ERANGE);
}

static void test_parse_u64_and_bytes(void **state)
{
	uint64_t v;
	char b[32];

	(void)state;
	assert_int_equal(cli_parse_u64("18446744073709551615", &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(cli_parse_u64("18446744073709551616", &v), -EINVAL);
	assert_int_equal(cli_parse_u64("", &v), -EINVAL);
	assert_int_equal(cli_parse_u64("12a", &v), -EINVAL);
	assert_int_equal(cli_parse_u64("-1", &v), -EINVAL);
	assert_string_equal(cli_human_bytes(0, b, sizeof(b)), "0 B");
	assert_string_equal(cli_human_bytes(1023, b, sizeof(b)), "1023 B");
	assert_string_equal(cli_human_bytes(1536, b, sizeof(b)), "1.5 KiB");
	assert_string_equal(cli_human_bytes(5u << 20, b, sizeof(b)), "5.0 MiB");
}

/* ---- flag errors ---- */

static void test_bad_flags(void **state)
{
	static const char *cases[][6] = {
		{ "--foo" }, { "-x" }, { "-t" }, { "-t", "10x" },
		{ "-t", "-5s" }, { "-b", "0" }, { "-b", "5tb" },
		{ "-b", "8gb" }, { "--query=1" }, { "--clone=abc" },
		{ "--clone" }, { "--detach=" }, { "--stop" },
		{ "--txt", "-o", "x" }, { "--query", "--query-raw" },
		{ "--detach=a", "--attach=b" }, { "--query", "-o", "x" },
		{ "-c", "x", "-t", "1s", "-o", "y" },
		{ "-c", "x", "-o", "y", "track_event" },
		{ "--query", "track_event" }, { "--clone=3" },
		{ "--is_detached=k", "-o", "x" }, { "-o", "x", "" },
		{ "--attach=k", "-t", "1s" },
		{ "--trigger" }, { "--trigger", "" }, { "--trigger", "a", "-o", "x" },
		{ "--trigger", "a", "--query" }, { "--trigger", "a", "-t", "1s" },
		{ "--trigger", "a", "--consumer-socket", "x" },
		{ "--query", "--trigger", "a" }, { "--trigger", "a", "track_event" },
	};
	struct env *e = *state;
	struct run r;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *argv[10] = { (char *)"spindle" };
		int n = 1;

		for (int j = 0; j < 6 && cases[i][j]; j++)
			argv[n++] = (char *)cases[i][j];
		argv[n] = NULL;
		collect(e->dir, &r, wait_child(spawn_cli(e->dir, argv)));
		if (r.status != 2 || lines(r.err) != 1 ||
		    strncmp(r.err, "spindle: ", 9))
			fail_msg("case %zu (%s ...): status %d, stderr '%s'", i,
				 cases[i][0], r.status, r.err);
	}
}

static void test_help_version(void **state)
{
	struct env *e = *state;
	struct run r;

	run_cli(e->dir, &r, "--help", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.outtxt, "usage: spindle"));
	run_cli(e->dir, &r, "--version", NULL);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.outtxt, "spindle "));
}

static void test_no_service(void **state)
{
	struct env *e = *state;
	struct run r;

	run_cli(e->dir, &r, "--consumer-socket", e->csock, "-t", "100ms", "-o",
		e->out, NULL);
	assert_int_equal(r.status, 1);
	assert_int_equal(lines(r.err), 1);
	assert_non_null(strstr(r.err, "cannot connect"));
	/* Nothing was written; a config error also comes before any I/O. */
	run_cli(e->dir, &r, "--consumer-socket", e->csock, "-c",
		"/nonexistent/cfg", "-o", e->out, NULL);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.err, "cannot open config"));
}

/* ---- end to end ---- */

static void test_simple_mode(void **state)
{
	struct env *e = *state;
	Perfetto__Protos__Trace *t;
	struct run r;
	int i;

	run_cli(e->dir, &r, "--consumer-socket", e->csock, "-t", "500ms", "-b",
		"1mb", "-o", e->out, "track_event", NULL);
	if (r.status)
		fail_msg("status %d: %s", r.status, r.err);
	assert_int_equal(lines(r.err), 1);	/* only the summary */
	t = check_trace(e, &r);
	/* The echoed config is what simple mode built. */
	i = find_packet(t, PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_CONFIG);
	{
		const Perfetto__Protos__TraceConfig *c =
			t->packet[i]->trace_config;

		assert_int_equal(c->duration_ms, 500);
		assert_int_equal(c->n_buffers, 1);
		assert_int_equal(c->buffers[0]->size_kb, 1024);
		assert_int_equal(c->n_data_sources, 1);
		assert_string_equal(c->data_sources[0]->config->name,
				    "track_event");
	}
	perfetto__protos__trace__free_unpacked(t, NULL);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	fclose(f);
}

static void test_text_config(void **state)
{
	struct env *e = *state;
	Perfetto__Protos__Trace *t;
	char cfg[160];
	struct run r;
	int i;

	snprintf(cfg, sizeof(cfg), "%s/cfg.txt", e->dir);
	write_text(cfg, "# a text config\n"
			"buffers { size_kb: 2048 fill_policy: DISCARD }\n"
			"data_sources { config { name: \"track_event\"\n"
			"  track_event_config { enabled_categories: \"*\" } } }\n"
			"duration_ms: 300\n"
			"unique_session_name: \"cli_text\"\n");
	run_cli(e->dir, &r, "--consumer-socket", e->csock, "-c", cfg, "--txt",
		"-o", e->out, NULL);
	if (r.status)
		fail_msg("status %d: %s", r.status, r.err);
	t = check_trace(e, &r);
	i = find_packet(t, PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_CONFIG);
	assert_int_equal(t->packet[i]->trace_config->duration_ms, 300);
	assert_string_equal(t->packet[i]->trace_config->unique_session_name,
			    "cli_text");
	assert_int_equal(t->packet[i]->trace_config->buffers[0]->fill_policy,
			 PERFETTO__PROTOS__TRACE_CONFIG__BUFFER_CONFIG__FILL_POLICY__DISCARD);
	perfetto__protos__trace__free_unpacked(t, NULL);

	/* A syntax error names the file, line and column: exit 1. */
	write_text(cfg, "buffers { size_kb: 1024 }\nduration_ms: x\n");
	run_cli(e->dir, &r, "--consumer-socket", e->csock, "-c", cfg, "--txt",
		"-o", e->out, NULL);
	assert_int_equal(r.status, 1);
	assert_int_equal(lines(r.err), 1);
	assert_non_null(strstr(r.err, "cfg.txt:2:"));
	/* Text without --txt is not a binary config. */
	run_cli(e->dir, &r, "--consumer-socket", e->csock, "-c", cfg, "-o",
		e->out, NULL);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.err, "--txt"));
}

static void test_binary_config(void **state)
{
	Perfetto__Protos__TraceConfig c = PERFETTO__PROTOS__TRACE_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__BufferConfig b =
		PERFETTO__PROTOS__TRACE_CONFIG__BUFFER_CONFIG__INIT;
	Perfetto__Protos__TraceConfig__BufferConfig *bp = &b;
	struct env *e = *state;
	Perfetto__Protos__Trace *t;
	uint8_t buf[256];
	char cfg[160];
	struct run r;
	size_t n;
	FILE *f;
	int i;

	b.has_size_kb = true;
	b.size_kb = 512;
	c.n_buffers = 1;
	c.buffers = &bp;
	c.has_duration_ms = true;
	c.duration_ms = 200;
	n = perfetto__protos__trace_config__pack(&c, buf);
	snprintf(cfg, sizeof(cfg), "%s/cfg.pb", e->dir);
	f = fopen(cfg, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, n, f), n);
	fclose(f);
	run_cli(e->dir, &r, "--consumer-socket", e->csock, "-c", cfg, "-o",
		e->out, NULL);
	if (r.status)
		fail_msg("status %d: %s", r.status, r.err);
	t = check_trace(e, &r);
	i = find_packet(t, PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_CONFIG);
	assert_int_equal(t->packet[i]->trace_config->duration_ms, 200);
	assert_int_equal(t->packet[i]->trace_config->buffers[0]->size_kb, 512);
	perfetto__protos__trace__free_unpacked(t, NULL);
}

static void test_write_into_file(void **state)
{
	struct env *e = *state;
	Perfetto__Protos__Trace *t;
	char cfg[160];
	struct run r;

	snprintf(cfg, sizeof(cfg), "%s/cfg.txt", e->dir);
	write_text(cfg, "buffers { size_kb: 1024 }\n"
			"duration_ms: 300\n"
			"write_into_file: true\n"
			"file_write_period_ms: 100\n");
	run_cli(e->dir, &r, "--consumer-socket", e->csock, "-c", cfg, "--txt",
		"-o", e->out, NULL);
	if (r.status)
		fail_msg("status %d: %s", r.status, r.err);
	t = check_trace(e, &r);
	perfetto__protos__trace__free_unpacked(t, NULL);
}

/* Inflates every compressed_packets packet of t (each must be one) and
 * returns the packets inside, in one Trace (free it). */
static Perfetto__Protos__Trace *inflate_all(const Perfetto__Protos__Trace *t)
{
	size_t cap = 1 << 20, len = 0;
	uint8_t *raw = malloc(cap);
	Perfetto__Protos__Trace *in;

	assert_non_null(raw);
	assert_true(t->n_packet > 0);
	for (size_t i = 0; i < t->n_packet; i++) {
		const Perfetto__Protos__TracePacket *p = t->packet[i];
		uLongf n;

		assert_int_equal(p->data_case,
				 PERFETTO__PROTOS__TRACE_PACKET__DATA_COMPRESSED_PACKETS);
		for (;;) {
			n = (uLongf)(cap - len);
			if (uncompress(raw + len, &n, p->compressed_packets.data,
				       p->compressed_packets.len) == Z_OK)
				break;
			cap *= 2;
			raw = realloc(raw, cap);
			assert_non_null(raw);
		}
		len += n;
	}
	in = perfetto__protos__trace__unpack(NULL, len, raw);
	free(raw);
	assert_non_null(in);
	return in;
}

/* A config asking for deflate: the trace holds compressed_packets packets
 * only, through ReadBuffers and through write_into_file, and the summary
 * counts the packets inside them. */
static void test_compressed(void **state)
{
	static const char *const file_cfg[] = { "", "write_into_file: true\n" };
	struct env *e = *state;
	char cfg[160];
	struct run r;

	snprintf(cfg, sizeof(cfg), "%s/cfg.txt", e->dir);
	for (int k = 0; k < 2; k++) {
		Perfetto__Protos__Trace *t, *in;
		unsigned long long pk = 0;
		size_t size;
		char text[512];

		snprintf(text, sizeof(text),
			 "buffers { size_kb: 1024 }\n"
			 "duration_ms: 300\n"
			 "compression_type: COMPRESSION_TYPE_DEFLATE\n%s",
			 file_cfg[k]);
		write_text(cfg, text);
		run_cli(e->dir, &r, "--consumer-socket", e->csock, "-c", cfg, "--txt",
			"-o", e->out, NULL);
		if (r.status)
			fail_msg("status %d: %s", r.status, r.err);
		t = load_trace(e->out, &size);
		in = inflate_all(t);
		assert_true(find_packet(in, PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_CONFIG) >= 0);
		assert_true(find_packet(in, PERFETTO__PROTOS__TRACE_PACKET__DATA_CLOCK_SNAPSHOT) >= 0);
		assert_true(find_packet(in, PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_STATS) >= 0);
		assert_non_null(strstr(r.err, "spindle: "));
		assert_int_equal(sscanf(strstr(r.err, "spindle: "), "spindle: %llu packets",
					&pk), 1);
		assert_int_equal(pk, in->n_packet);
		assert_true(in->n_packet > t->n_packet);
		perfetto__protos__trace__free_unpacked(in, NULL);
		perfetto__protos__trace__free_unpacked(t, NULL);
	}
}

static void test_ctrl_c(void **state)
{
	char *argv[] = { (char *)"spindle", (char *)"--consumer-socket",
			 NULL, (char *)"-t", (char *)"0", (char *)"-o", NULL,
			 (char *)"track_event", NULL };
	struct env *e = *state;
	Perfetto__Protos__Trace *t;
	struct run r;
	pid_t pid;
	int i;

	argv[2] = e->csock;
	argv[6] = e->out;
	pid = spawn_cli(e->dir, argv);
	sleep_ms(400);
	kill(pid, SIGINT);
	collect(e->dir, &r, wait_child(pid));
	if (r.status)
		fail_msg("status %d: %s", r.status, r.err);
	t = check_trace(e, &r);
	i = find_packet(t, PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_CONFIG);
	assert_int_equal(t->packet[i]->trace_config->duration_ms, 0);
	perfetto__protos__trace__free_unpacked(t, NULL);
}

static void test_detach_attach(void **state)
{
	struct env *e = *state;
	Perfetto__Protos__Trace *t;
	struct run r;

	run_cli(e->dir, &r, "--consumer-socket", e->csock, "-t", "20s",
		"--detach=cli_key", "track_event", NULL);
	if (r.status)
		fail_msg("detach: status %d: %s", r.status, r.err);
	run_cli(e->dir, &r, "--consumer-socket", e->csock,
		"--is_detached=cli_key", NULL);
	assert_int_equal(r.status, 0);
	run_cli(e->dir, &r, "--consumer-socket", e->csock,
		"--is_detached=other_key", NULL);
	assert_int_equal(r.status, 2);
	/* --is_detached left it detached. */
	run_cli(e->dir, &r, "--consumer-socket", e->csock,
		"--is_detached=cli_key", NULL);
	assert_int_equal(r.status, 0);
	run_cli(e->dir, &r, "--consumer-socket", e->csock, "--attach=cli_key",
		"--stop", "-o", e->out, NULL);
	if (r.status)
		fail_msg("attach: status %d: %s", r.status, r.err);
	t = check_trace(e, &r);
	perfetto__protos__trace__free_unpacked(t, NULL);
	run_cli(e->dir, &r, "--consumer-socket", e->csock,
		"--is_detached=cli_key", NULL);
	assert_int_equal(r.status, 2);
	run_cli(e->dir, &r, "--consumer-socket", e->csock, "--attach=cli_key",
		"-o", e->out, NULL);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.err, "cli_key"));
	/* Without --stop, --attach waits for the session's own end. */
	run_cli(e->dir, &r, "--consumer-socket", e->csock, "-t", "800ms",
		"--detach=cli_key2", NULL);
	assert_int_equal(r.status, 0);
	run_cli(e->dir, &r, "--consumer-socket", e->csock,
		"--attach=cli_key2", "-o", e->out, NULL);
	if (r.status)
		fail_msg("attach: status %d: %s", r.status, r.err);
	t = check_trace(e, &r);
	assert_int_equal(t->packet[find_packet(t, PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACE_CONFIG)]
				 ->trace_config->duration_ms,
			 800);
	perfetto__protos__trace__free_unpacked(t, NULL);
	/* Attaching to a session that needs -o without it: usage error,
	 * and the session stays detached. */
	run_cli(e->dir, &r, "--consumer-socket", e->csock, "-t", "20s",
		"--detach=cli_key3", NULL);
	assert_int_equal(r.status, 0);
	run_cli(e->dir, &r, "--consumer-socket", e->csock,
		"--attach=cli_key3", NULL);
	assert_int_equal(r.status, 2);
	run_cli(e->dir, &r, "--consumer-socket", e->csock,
		"--is_detached=cli_key3", NULL);
	assert_int_equal(r.status, 0);
}

static void test_query(void **state)
{
	struct env *e = *state;
	struct run r;

	/* spindled may not offer QueryServiceState yet: then a clear
	 * one-line error and status 1; once it does, the tables. */
	run_cli(e->dir, &r, "--consumer-socket", e->csock, "--query", NULL);
	if (r.status == 0) {
		assert_non_null(strstr(r.outtxt, "PRODUCERS"));
		assert_non_null(strstr(r.outtxt, "DATA SOURCES"));
	} else {
		assert_int_equal(r.status, 1);
		assert_int_equal(lines(r.err), 1);
		assert_non_null(strstr(r.err, "QueryServiceState"));
	}
}

/* ---- triggers ---- */

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Sessions the service holds (QueryServiceState, sessions only). */
static void on_qss_sessions(void *arg, struct ipc_client_reply *r)
{
	const Perfetto__Protos__QueryServiceStateResponse *resp = (const void *)r->msg;
	size_t *n = arg;

	if (r->status == 0 && resp->service_state)
		*n += resp->service_state->n_tracing_sessions;
}

static size_t count_sessions(const struct env *e)
{
	Perfetto__Protos__QueryServiceStateRequest req =
		PERFETTO__PROTOS__QUERY_SERVICE_STATE_REQUEST__INIT;
	struct ipc_proxy *port;
	struct ipc_sync *s;
	size_t n = 0;

	req.has_sessions_only = req.sessions_only = true;
	assert_int_equal(ipc_sync_connect(e->csock, 5000, &s), 0);
	assert_int_equal(ipc_sync_bind(s, &perfetto__protos__consumer_port__descriptor,
				       &port, 5000),
			 0);
	assert_int_equal(ipc_sync_stream(s, port, "QueryServiceState", &req.base, -1,
					  on_qss_sessions, &n, 5000),
			 0);
	ipc_sync_close(s);
	return n;
}

/* Waits until the service holds n sessions. */
static void wait_sessions(const struct env *e, size_t n)
{
	for (int i = 0; i < 1000 && count_sessions(e) != n; i++)
		sleep_ms(5);
	assert_int_equal(count_sessions(e), n);
}

/* The trigger packets of a trace: "name/producer" joined by spaces. */
static void trace_triggers(const Perfetto__Protos__Trace *t, char *buf, size_t len)
{
	buf[0] = '\0';
	for (size_t i = 0; i < t->n_packet; i++) {
		const Perfetto__Protos__TracePacket *p = t->packet[i];
		size_t used = strlen(buf);

		if (p->data_case != PERFETTO__PROTOS__TRACE_PACKET__DATA_TRIGGER)
			continue;
		snprintf(buf + used, len - used, "%s%s/%s", used ? " " : "",
			 p->trigger->trigger_name, p->trigger->producer_name);
	}
}

/*
 * A recorder (`spindle -c cfg --txt -o out` in the background, its output
 * files in a subdir) on a config waiting for a trigger; `spindle
 * --trigger` then ends (STOP_TRACING) or starts (START_TRACING, the
 * trigger's stop_delay_ms then being the duration) its session, long
 * before the 20 s trigger timeout.
 */
static void run_triggered(struct env *e, const char *mode, char **trigger_argv,
			  const char *expect)
{
	char cfg[160], bg[160], text[512], trig[256];
	char *argv[] = { (char *)"spindle", (char *)"--consumer-socket", e->csock,
			 (char *)"-c", cfg, (char *)"--txt", (char *)"-o", e->out, NULL };
	Perfetto__Protos__Trace *t;
	struct run r, rt;
	uint64_t t0;
	pid_t pid;

	snprintf(cfg, sizeof(cfg), "%s/cfg.txt", e->dir);
	snprintf(bg, sizeof(bg), "%s/bg", e->dir);
	assert_int_equal(mkdir(bg, 0700), 0);
	snprintf(text, sizeof(text),
		 "buffers { size_kb: 1024 }\n"
		 "data_sources { config { name: \"track_event\" } }\n"
		 "trigger_config { trigger_mode: %s trigger_timeout_ms: 20000\n"
		 "  triggers { name: \"cli_trig\" stop_delay_ms: 200 } }\n",
		 mode);
	write_text(cfg, text);
	pid = spawn_cli(bg, argv);
	wait_sessions(e, 1);
	t0 = mono_ms();
	collect(e->dir, &rt, wait_child(spawn_cli(e->dir, trigger_argv)));
	if (rt.status)
		fail_msg("--trigger: status %d: %s", rt.status, rt.err);
	assert_int_equal(lines(rt.err), 1);
	assert_non_null(strstr(rt.err, "triggers activated: "));
	collect(bg, &r, wait_child(pid));
	if (r.status)
		fail_msg("recorder: status %d: %s", r.status, r.err);
	assert_true(mono_ms() - t0 < 10000);
	t = check_trace(e, &r);
	trace_triggers(t, trig, sizeof(trig));
	assert_string_equal(trig, expect);
	perfetto__protos__trace__free_unpacked(t, NULL);
	snprintf(text, sizeof(text), "%s/stdout.txt", bg);
	unlink(text);
	snprintf(text, sizeof(text), "%s/stderr.txt", bg);
	unlink(text);
	rmdir(bg);
}

static void test_trigger_stop(void **state)
{
	struct env *e = *state;
	char *argv[] = { (char *)"spindle", (char *)"--producer-socket", e->psock,
			 (char *)"--trigger", (char *)"cli_other", (char *)"--trigger",
			 (char *)"cli_trig", NULL };

	run_triggered(e, "STOP_TRACING", argv, "cli_trig/perfetto_cmd_producer");
}

/* The socket from PERFETTO_PRODUCER_SOCK_NAME, as Perfetto's tools do. */
static void test_trigger_start_env(void **state)
{
	struct env *e = *state;
	char *argv[] = { (char *)"spindle", (char *)"--trigger", (char *)"cli_trig", NULL };

	setenv("PERFETTO_PRODUCER_SOCK_NAME", e->psock, 1);
	run_triggered(e, "START_TRACING", argv, "cli_trig/perfetto_cmd_producer");
	unsetenv("PERFETTO_PRODUCER_SOCK_NAME");
}

/* A -c config with activate_triggers does the same (no session, no -o). */
static void test_trigger_config(void **state)
{
	struct env *e = *state;
	char tcfg[160];
	char *argv[] = { (char *)"spindle", (char *)"--producer-socket", e->psock,
			 (char *)"-c", tcfg, (char *)"--txt", NULL };

	snprintf(tcfg, sizeof(tcfg), "%s/cfg.pb", e->dir); /* removed by teardown */
	write_text(tcfg, "activate_triggers: \"cli_trig\"\n");
	run_triggered(e, "STOP_TRACING", argv, "cli_trig/perfetto_cmd_producer");
}

static void test_trigger_no_service(void **state)
{
	struct env *e = *state;
	struct run r;

	run_cli(e->dir, &r, "--producer-socket", e->psock, "--trigger", "x", NULL);
	assert_int_equal(r.status, 1);
	assert_int_equal(lines(r.err), 1);
	assert_non_null(strstr(r.err, "cannot connect"));
	assert_non_null(strstr(r.err, "producer socket"));
	assert_non_null(strstr(r.err, e->psock));
	/* A socket in a directory that does not exist. */
	run_cli(e->dir, &r, "--producer-socket", "/nonexistent/dir/p.sock", "--trigger",
		"x", NULL);
	assert_int_equal(r.status, 1);
	assert_non_null(strstr(r.err, "/nonexistent/dir/p.sock"));
}

#define E2E(fn) \
	cmocka_unit_test_setup_teardown(fn, setup_lanes1, env_teardown), \
	cmocka_unit_test_setup_teardown(fn, setup_lanes2, env_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_parse_u64_and_bytes),
		cmocka_unit_test_setup_teardown(test_bad_flags, setup_nosvc,
						env_teardown),
		cmocka_unit_test_setup_teardown(test_help_version, setup_nosvc,
						env_teardown),
		cmocka_unit_test_setup_teardown(test_no_service, setup_nosvc,
						env_teardown),
		E2E(test_simple_mode),
		E2E(test_text_config),
		E2E(test_binary_config),
		E2E(test_write_into_file),
		E2E(test_compressed),
		E2E(test_ctrl_c),
		E2E(test_detach_attach),
		cmocka_unit_test_setup_teardown(test_query, setup_lanes1,
						env_teardown),
		E2E(test_trigger_stop),
		cmocka_unit_test_setup_teardown(test_trigger_start_env, setup_lanes1,
						env_teardown),
		cmocka_unit_test_setup_teardown(test_trigger_config, setup_lanes2,
						env_teardown),
		cmocka_unit_test_setup_teardown(test_trigger_no_service, setup_nosvc,
						env_teardown),
	};
	struct ipc_loop *probe;
	int rc = ipc_loop_create(&probe, NULL);

	if (rc == -ENOSYS || rc == -EPERM) {
		fprintf(stderr, "io_uring unavailable: skipped\n");
		return 77;
	}
	if (rc == 0)
		ipc_loop_destroy(probe);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
