// SPDX-License-Identifier: Apache-2.0
// spindle-loadgen: P producer processes x T threads writing events through libspindle at a set rate or flat out; it records the trace itself as a consumer (or joins a session someone else runs), checks every event came through in order, and reports per thread and in total (table and JSON). Here: flags, the shared region, fork, the run's phases, the exit status.
//
// Exit status: 0 all good; 1 a failure, or events lost or out of order
// (record mode), or packets dropped in the SDK (join mode); 2 bad usage.
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif

#include "cmd/spindle_cli.h"
#include "cmd/spindle_loadgen.h"

/* Time the producer processes get to connect and start their threads. */
#define LG_READY_TIMEOUT_MS 30000u
/* Time past the duration the threads get to finish. */
#define LG_DONE_GRACE_MS 60000u
/* Period of the parent's polls. */
#define LG_POLL_MS 10

static volatile sig_atomic_t lg_interrupted;

uint64_t lg_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t lg_ticks(void)
{
#if defined(__x86_64__)
	_mm_lfence();
	return __rdtsc();
#else
	return lg_now_ns();
#endif
}

void lg_futex_wait(_Atomic uint32_t *w, uint32_t val)
{
	/* Shared (not FUTEX_PRIVATE): the word is in memory of several
	 * processes. Spurious returns are fine: callers loop. */
	syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, val, NULL, NULL, 0);
}

void lg_futex_wake(_Atomic uint32_t *w)
{
	syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

void lg_abort(struct lg_shared *sh)
{
	atomic_store(&sh->go, LG_GO_ABORT);
	lg_futex_wake(&sh->go);
	atomic_store(&sh->quit, 1);
	lg_futex_wake(&sh->quit);
}

static void lg_on_signal(int sig)
{
	(void)sig;
	lg_interrupted = 1;
}

/* ---- flags ---- */

static void lg_usage(FILE *f)
{
	fprintf(f,
		"usage: spindle-loadgen [options]\n"
		"P producer processes x T threads write events through libspindle; the\n"
		"trace is recorded (or a running session joined) and checked for loss.\n"
		"  --producers P          producer processes, 1..%u (default 1)\n"
		"  --threads T            threads per process, 1..%u (default 1)\n"
		"  --kind K               slice | counter | annotated | raw (default slice)\n"
		"  --size S               raw packet bytes, %u..%u (default 64)\n"
		"  --rate N/s|max         events per second per thread (default max)\n"
		"  --duration D           emitting time, e.g. 500ms, 3s (default 3s)\n"
		"  --smb-kb N             SMB size hint in KiB, 4..32768 (default: service's)\n"
		"  --page-kb N            SMB page size hint: 4, 8, 16 or 32 (default: service's)\n"
		"  --buffer SIZE          trace buffer, e.g. 256mb (default 128mb)\n"
		"  --stall-us N           a writer finding the SMB full waits up to N us for a\n"
		"                         free chunk (default 0: the event is dropped)\n"
		"  --service-pid PID      report this process's CPU time (spindled)\n"
		"  --producer-socket P    producer socket (default: Perfetto's rules)\n"
		"  --consumer-socket P    consumer socket (default: Perfetto's rules)\n"
		"  --join                 don't record: produce for a session started by others\n"
		"  --json FILE            write the report as JSON (\"-\": stdout)\n"
		"  -o, --out FILE         keep the recorded trace\n"
		"  --per-thread           a table row per thread (default up to 16 threads)\n"
		"  --help                 this text\n"
		"Exit status: 0 ok, 1 failure or events lost, 2 bad usage.\n",
		LG_MAX_PRODUCERS, LG_MAX_THREADS, LG_RAW_MIN_SIZE, LG_RAW_MAX_SIZE);
}

/* Prints a one-line error about a flag and returns LG_EXIT_USAGE. */
static int lg_bad(const char *flag, const char *what)
{
	fprintf(stderr, "spindle-loadgen: %s: %s\n", flag, what);
	return LG_EXIT_USAGE;
}

/* A decimal number in [lo, hi]. */
static bool lg_num(const char *s, uint64_t lo, uint64_t hi, uint64_t *v)
{
	return cli_parse_u64(s, v) == 0 && *v >= lo && *v <= hi;
}

/* "max", or N with an optional k / m multiplier and an optional "/s". */
static bool lg_rate(const char *s, uint64_t *v)
{
	char buf[32];
	uint64_t mul = 1;
	size_t n;

	if (!strcasecmp(s, "max")) {
		*v = 0;
		return true;
	}
	n = strlen(s);
	if (n >= sizeof(buf))
		return false;
	memcpy(buf, s, n + 1);
	if (n > 2 && !strcmp(buf + n - 2, "/s"))
		buf[n -= 2] = '\0';
	if (n > 1 && (buf[n - 1] == 'k' || buf[n - 1] == 'K'))
		mul = 1000;
	else if (n > 1 && (buf[n - 1] == 'm' || buf[n - 1] == 'M'))
		mul = 1000000;
	if (mul != 1)
		buf[n - 1] = '\0';
	if (cli_parse_u64(buf, v) || *v == 0 || *v > 1000000000u / mul)
		return false;
	*v *= mul;
	return true;
}

static int lg_parse(int argc, char **argv, struct lg_opts *o)
{
	static const struct option longopts[] = {
		{ "producers", required_argument, NULL, 'P' },
		{ "threads", required_argument, NULL, 'T' },
		{ "kind", required_argument, NULL, 'k' },
		{ "size", required_argument, NULL, 'S' },
		{ "rate", required_argument, NULL, 'r' },
		{ "duration", required_argument, NULL, 'd' },
		{ "smb-kb", required_argument, NULL, 'm' },
		{ "page-kb", required_argument, NULL, 'g' },
		{ "buffer", required_argument, NULL, 'b' },
		{ "stall-us", required_argument, NULL, 's' },
		{ "service-pid", required_argument, NULL, 'p' },
		{ "producer-socket", required_argument, NULL, 'x' },
		{ "consumer-socket", required_argument, NULL, 'c' },
		{ "join", no_argument, NULL, 'j' },
		{ "json", required_argument, NULL, 'J' },
		{ "out", required_argument, NULL, 'o' },
		{ "per-thread", no_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool has_size = false;
	uint64_t v;
	int c;

	*o = (struct lg_opts){ .producers = 1, .threads = 1, .kind = LG_SLICE, .size = 64,
			       .duration_ms = 3000, .buffer_kb = 128u * 1024u };
	opterr = 0;
	while ((c = getopt_long(argc, argv, "o:", longopts, NULL)) != -1) {
		switch (c) {
		case 'P':
			if (!lg_num(optarg, 1, LG_MAX_PRODUCERS, &v))
				return lg_bad("--producers", "expected 1..64");
			o->producers = (unsigned)v;
			break;
		case 'T':
			if (!lg_num(optarg, 1, LG_MAX_THREADS, &v))
				return lg_bad("--threads", "expected 1..4096");
			o->threads = (unsigned)v;
			break;
		case 'k':
			if (!strcmp(optarg, "slice"))
				o->kind = LG_SLICE;
			else if (!strcmp(optarg, "counter"))
				o->kind = LG_COUNTER;
			else if (!strcmp(optarg, "annotated"))
				o->kind = LG_ANNOTATED;
			else if (!strcmp(optarg, "raw"))
				o->kind = LG_RAW;
			else
				return lg_bad("--kind", "expected slice, counter, annotated or raw");
			break;
		case 'S':
			if (!lg_num(optarg, LG_RAW_MIN_SIZE, LG_RAW_MAX_SIZE, &v))
				return lg_bad("--size", "expected 36..1048576 bytes");
			o->size = (uint32_t)v;
			has_size = true;
			break;
		case 'r':
			if (!lg_rate(optarg, &o->rate))
				return lg_bad("--rate", "expected N/s (1..1e9, k/m allowed) or max");
			break;
		case 'd':
			if (cli_parse_duration(optarg, &o->duration_ms) || !o->duration_ms ||
			    o->duration_ms > 3600000u)
				return lg_bad("--duration", "expected 1ms..1h, e.g. 500ms or 3s");
			break;
		case 'm':
			if (!lg_num(optarg, 4, 32768, &v) || v % 4)
				return lg_bad("--smb-kb", "expected a multiple of 4 in 4..32768");
			o->smb_kb = (uint32_t)v;
			break;
		case 'g':
			if (!lg_num(optarg, 4, 32, &v) || (v & (v - 1)) || v < 4)
				return lg_bad("--page-kb", "expected 4, 8, 16 or 32");
			o->page_kb = (uint32_t)v;
			break;
		case 'b':
			if (cli_parse_size_kb(optarg, &o->buffer_kb) || o->buffer_kb < 64)
				return lg_bad("--buffer", "expected a size of 64kb..4gb, e.g. 256mb");
			break;
		case 's':
			if (!lg_num(optarg, 0, 10000000, &v))
				return lg_bad("--stall-us", "expected 0..10000000 microseconds");
			o->stall_us = (uint32_t)v;
			break;
		case 'p':
			if (!lg_num(optarg, 1, INT_MAX, &v))
				return lg_bad("--service-pid", "expected a process id");
			o->service_pid = (pid_t)v;
			break;
		case 'x':
			o->psock = optarg;
			break;
		case 'c':
			o->csock = optarg;
			break;
		case 'j':
			o->join = true;
			break;
		case 'J':
			o->json_path = optarg;
			break;
		case 'o':
			o->trace_path = optarg;
			break;
		case 't':
			o->per_thread = true;
			break;
		case 'h':
			lg_usage(stdout);
			exit(LG_EXIT_OK);
		default:
			return lg_bad(argv[optind - 1], "unknown option or missing value "
							"(see --help)");
		}
	}
	if (optind != argc)
		return lg_bad(argv[optind], "unexpected argument (see --help)");
	if (o->producers * o->threads > LG_MAX_THREADS_TOTAL)
		return lg_bad("--producers x --threads", "at most 8192 threads in all");
	if (has_size && o->kind != LG_RAW)
		return lg_bad("--size", "applies to --kind raw only");
	if (o->join && o->trace_path)
		return lg_bad("--out", "needs a recording (not --join)");
	return 0;
}

/* ---- the run ---- */

/* utime + stime of pid in seconds, or -1. */
static double lg_cpu_s(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut, st;
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* Fields after the command name (which may hold anything): state is
	 * field 3, utime 14, stime 15. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			 &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Timer ticks per ns, and the cost of one timed empty interval in ns. */
static void lg_calibrate(struct lg_shared *sh, double *pair_ns)
{
	uint64_t t0 = lg_now_ns(), c0 = lg_ticks(), best = UINT64_MAX;
	struct timespec ts = { 0, 20000000 };

	nanosleep(&ts, NULL);
	sh->ticks_per_ns = (double)(lg_ticks() - c0) / (double)(lg_now_ns() - t0);
	for (int i = 0; i < 10000; i++) {
		uint64_t a = lg_ticks(), b = lg_ticks();

		if (b - a < best)
			best = b - a;
	}
	*pair_ns = (double)best / sh->ticks_per_ns;
}

/* Forks the producer processes (before any thread exists). Returns the
 * number started. */
static unsigned lg_fork(const struct lg_opts *o, struct lg_shared *sh, pid_t *pids)
{
	fflush(stdout);
	fflush(stderr);
	for (unsigned i = 0; i < o->producers; i++) {
		pid_t pid = fork();

		if (pid < 0) {
			fprintf(stderr, "spindle-loadgen: fork: %s\n", strerror(errno));
			return i;
		}
		if (pid == 0) {
			signal(SIGINT, SIG_IGN);	/* the parent decides */
			signal(SIGTERM, SIG_DFL);
			_exit(lg_child_main(o, sh, i));
		}
		pids[i] = pid;
	}
	return o->producers;
}

/* Waits until *ctr reaches want: -ETIMEDOUT after ms, -ECANCELED on abort,
 * interrupt or a dead child (or a consumer error). */
static int lg_wait_count(struct lg_shared *sh, _Atomic uint32_t *ctr, uint32_t want,
			 uint32_t ms, struct lg_cons *c)
{
	uint64_t deadline = lg_now_ns() + (uint64_t)ms * 1000000u;
	int status;

	while (atomic_load_explicit(ctr, memory_order_acquire) < want) {
		if (lg_interrupted || atomic_load(&sh->go) == LG_GO_ABORT)
			return -ECANCELED;
		if (waitpid(-1, &status, WNOHANG) > 0) {
			fprintf(stderr, "spindle-loadgen: a producer process died\n");
			return -ECANCELED;
		}
		if (lg_now_ns() >= deadline)
			return -ETIMEDOUT;
		if (c) {
			if (lg_cons_pump(c, LG_POLL_MS))
				return -ECANCELED;
		} else {
			struct timespec ts = { 0, LG_POLL_MS * 1000000L };

			nanosleep(&ts, NULL);
		}
	}
	return 0;
}

/* The phases: ready, (session), started, go, done, (stop, read). */
static int lg_run(struct lg_run *r, struct lg_cons **cp)
{
	const struct lg_opts *o = r->o;
	struct lg_shared *sh = r->sh;
	struct lg_check *chk = NULL;
	double cpu0 = -1, cpu1;
	int rc;

	rc = lg_wait_count(sh, &sh->ready, o->producers, LG_READY_TIMEOUT_MS, NULL);
	for (unsigned i = 0; !rc && i < o->producers; i++)
		if (sh->procs[i].err)
			rc = -ECANCELED;	/* the child said why */
	if (rc == -ETIMEDOUT)
		fprintf(stderr, "spindle-loadgen: the producer processes did not start\n");
	if (rc)
		return rc;
	if (!o->join && (rc = lg_cons_start(o, cp)) != 0)
		return rc;
	if (o->join)
		fprintf(stderr, "spindle-loadgen: waiting for a session to enable %s\n",
			o->kind == LG_RAW ? LG_RAW_DS_NAME : "track_event");
	rc = lg_wait_count(sh, &sh->started, o->producers,
			   o->join ? LG_JOIN_WAIT_MS : LG_START_TIMEOUT_MS, *cp);
	if (rc == -ETIMEDOUT)
		fprintf(stderr, "spindle-loadgen: the data source did not start in every "
				"producer (is the service at the producer socket?)\n");
	if (rc)
		return rc;
	if (o->service_pid)
		cpu0 = lg_cpu_s(o->service_pid);
	sh->go_ns = lg_now_ns() + 5000000u;
	/* Release: go_ns before go; pairs with the threads' acquire. */
	atomic_store_explicit(&sh->go, LG_GO_RUN, memory_order_release);
	lg_futex_wake(&sh->go);
	rc = lg_wait_count(sh, &sh->done, (uint32_t)r->nthreads,
			   o->duration_ms + LG_DONE_GRACE_MS, *cp);
	if (rc == -ETIMEDOUT)
		fprintf(stderr, "spindle-loadgen: the threads did not finish\n");
	if (rc)
		return rc;
	r->wall_s = o->duration_ms / 1000.0;
	if (!o->join)
		rc = lg_cons_stop(*cp);
	/* The service's work for the run: ingest (and the final flush),
	 * not the read that follows. */
	cpu1 = o->service_pid ? lg_cpu_s(o->service_pid) : -1;
	if (cpu0 >= 0 && cpu1 >= 0) {
		r->has_svc_cpu = true;
		r->svc_cpu_s = cpu1 - cpu0;
	}
	if (!o->join && !rc) {
		rc = lg_check_create(o->kind, o->trace_path, &chk);
		if (!rc)
			rc = lg_cons_read(*cp, chk);
		if (!rc && (rc = lg_check_finish(chk, sh, r->nthreads)) != 0)
			fprintf(stderr, "spindle-loadgen: cannot write %s\n", o->trace_path);
		if (!rc) {
			lg_check_totals(chk, &r->tot);
			r->checked = true;
		}
		lg_check_free(chk);
	}
	return rc;
}

/* Ends the children and collects their figures and CPU time. Returns
 * false when one failed. */
static bool lg_reap(struct lg_run *r, const pid_t *pids, unsigned n)
{
	bool ok = true;

	for (unsigned i = 0; i < n; i++) {
		struct rusage ru;
		int status;

		if (wait4(pids[i], &status, 0, &ru) != pids[i])
			continue;	/* already reaped while waiting */
		r->prod_cpu_s += (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
				 (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			ok = false;
		r->sdk_dropped += r->sh->procs[i].sdk_dropped;
		r->commits += r->sh->procs[i].commits;
	}
	return ok;
}

int main(int argc, char **argv)
{
	struct lg_opts o;
	struct lg_run r = { .o = &o };
	struct lg_cons *cons = NULL;
	struct sigaction sa;
	pid_t pids[LG_MAX_PRODUCERS];
	size_t size;
	unsigned n;
	bool ok;
	int rc;

	rc = lg_parse(argc, argv, &o);
	if (rc)
		return rc;
	if (o.service_pid && lg_cpu_s(o.service_pid) < 0)
		return lg_bad("--service-pid", "no such process");
	r.nthreads = (size_t)o.producers * o.threads;
	size = sizeof(struct lg_shared) + r.nthreads * sizeof(struct lg_thread);
	{
		uint32_t cap = LG_SAMPLES_TOTAL / (uint32_t)r.nthreads;

		cap = cap > LG_SAMPLES_PER_THREAD ? LG_SAMPLES_PER_THREAD : cap & ~1u;
		r.sh = mmap(NULL, size + (size_t)cap * r.nthreads * sizeof(uint32_t),
			    PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (r.sh == MAP_FAILED) {
			fprintf(stderr, "spindle-loadgen: mmap: %s\n", strerror(errno));
			return LG_EXIT_FAIL;
		}
		r.sh->sample_cap = cap;
	}
	r.sh->threads = (struct lg_thread *)(r.sh + 1);
	r.sh->samples = (uint32_t *)((uint8_t *)r.sh + size);
	lg_calibrate(r.sh, &r.timer_ns);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = lg_on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	n = lg_fork(&o, r.sh, pids);
	rc = n == o.producers ? lg_run(&r, &cons) : -ECHILD;
	if (rc == -ECANCELED && lg_interrupted)
		fprintf(stderr, "spindle-loadgen: interrupted\n");
	if (rc)
		lg_abort(r.sh);
	atomic_store(&r.sh->quit, 1);
	lg_futex_wake(&r.sh->quit);
	ok = lg_reap(&r, pids, n);
	lg_cons_close(cons);
	if (rc)
		return LG_EXIT_FAIL;
	if (!ok)
		fprintf(stderr, "spindle-loadgen: a producer process failed\n");
	lg_report_table(&r, stdout);
	if (o.json_path && (rc = lg_report_json(&r, o.json_path)) != 0)
		fprintf(stderr, "spindle-loadgen: cannot write %s: %s\n", o.json_path,
			strerror(-rc));
	if (!ok || rc)
		return LG_EXIT_FAIL;
	if (r.checked ? lg_report_lost(&r) != 0 : r.sdk_dropped != 0) {
		fprintf(stderr, "spindle-loadgen: events were lost\n");
		return LG_EXIT_FAIL;
	}
	return LG_EXIT_OK;
}
