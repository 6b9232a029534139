// SPDX-License-Identifier: Apache-2.0
// commit_bench: producer processes fill real SMBs and commit them through
// real sockets into an in-process spindled; reports MB/s moved into the
// trace buffers, chunks/s, service CPU seconds per GB and, from the same
// run, the machine's memcpy bandwidth for chunk-sized copies (the ratio is
// the headline; memcpy is measured right before and right after each
// run, and the run's ratios use the mean of the two). Runs for lanes = 1
// and 2.
//
// Producers work like the SDK: they commit as chunks fill, without waiting
// for replies, 8 chunks (32 KiB) per CommitData by default. The SDK's I/O
// thread instead sends all that writers queued since its last send (up to
// 4096 moves) each time it runs: when woken by a push onto an empty queue,
// then once per commit period (1 ms) while there is more. A producer here
// is one thread; --batch 0 models that I/O thread as one that runs again as
// soon as the service has taken its previous CommitData (one in flight:
// batches grow when the service is behind and shrink when it keeps up).
// The real SDK's 1 ms period under flat-out load would let the 256 KiB SMB
// fill long before each send, which measures the SDK, not the service.
// Producers wait only when their 256 KiB SMB has no free chunk left ("SMB
// full": in the SDK's default mode that would be a drop, so a service that
// keeps up shows 0 there). "svc CPU" is the service process's CPU time
// over wall time (100% = one core busy); the producers are separate
// processes and not counted. On a machine whose cores the producers keep
// busy, MB/s is bounded by what they can make, so the lane's capacity is
// also given: MB moved per service CPU second, and that over the memcpy
// bandwidth (lane_capacity_ratio).
//
// usage: commit_bench [--seconds S] [--producers P] [--rate MB/s]
//                     [--batch N] [--prebuilt]
// (--rate caps each producer, to see whether a service with CPU to spare
// still lets an SMB fill up; such a run first times 10,000 wake-ups of a
// thread blocked on a pipe, as a lane waits for a CommitData, and prints
// how many took longer than a producer at that rate needs to fill the
// SMB's room: a lane that wakes that late lets the SMB fill whatever it
// does once it runs, and on a VM that tail is the host's; --prebuilt
// makes each producer copy the payload of its first chunk into every
// later one instead of encoding ~19 packets per chunk again: the fastest
// producer there can be, to load a lane as far as one core of producers
// can. Where even that leaves the lane idle part of the time (svc CPU
// under 100%), MB/s is the producer's limit and the lane capacity is the
// lane's. The service still takes, copies, validates and stores every
// chunk; the JSON then goes to bench/results/commit_bench_prebuilt.json.)
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"
#include "spindle/pb.h"
#include "svc_harness.h"
#include "trace_stats.pb-c.h"

#define BUF_KB (64u * 1024u)	/* 64 MiB ring buffer */
#define PAD 200u		/* packet padding: ~210-byte packets */
#define MAX_MOVES 4096u	/* chunks per CommitData at most (the SDK's
				 * bound, SMB_COMMIT_MAX_MOVES) */

/* What one producer process reports through its pipe. */
struct prod_report {
	uint64_t chunks;	/* chunks committed */
	uint64_t packets;	/* packets written */
	uint64_t bytes;		/* chunk bytes committed */
	uint64_t full;		/* times no chunk was free (a drop in the SDK's
				 * default mode; here the producer waits) */
	uint64_t full_ns;	/* time spent waiting for a free chunk */
	uint64_t ns;		/* time spent producing */
	uint64_t commits;	/* CommitData requests sent */
};

/* CommitData requests this producer process sent. */
static uint64_t commits_sent;

static double cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/*
 * CPU seconds of this process's lane threads (named spn-lane<N>) so far,
 * from /proc/self/task/<tid>/stat (utime + stime). A lane thread lives for
 * one run, so a run reads this before it stops the service.
 */
static double lane_cpu_seconds(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	double s = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		char path[300], buf[1024], *p;
		unsigned long ut, st;
		FILE *f;
		size_t n;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = 0;
		/* "tid (comm) state ..." : utime and stime are fields 14, 15. */
		p = strrchr(buf, ')');
		if (!strstr(buf, "(spn-lane") || !p ||
		    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
			   "%lu %lu", &ut, &st) != 2)
			continue;
		s += (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
	}
	closedir(d);
	return s;
}

/* Encodes one packet (timestamp + for_testing padding) at buf. */
static size_t bench_packet(uint8_t *buf, uint64_t ts)
{
	uint8_t *q = spn_pb_field_varint(buf, 8, ts);

	q = spn_pb_put_key(q, 900, SPN_PB_LEN);
	q = spn_pb_put_varint(q, PAD);
	memset(q, 0x5A, PAD);
	return (size_t)(q + PAD - buf);
}

/* Sends the pending ChunksToMove entries in one CommitData (no reply). */
static void bench_commit(struct th_prod *p,
			 Perfetto__Protos__CommitDataRequest__ChunksToMove **mvp,
			 unsigned *nmv)
{
	Perfetto__Protos__CommitDataRequest req =
		PERFETTO__PROTOS__COMMIT_DATA_REQUEST__INIT;

	if (!*nmv)
		return;
	req.n_chunks_to_move = *nmv;
	req.chunks_to_move = mvp;
	th_prod_invoke(p, TH_COMMIT, &req.base, true);
	commits_sent++;
	*nmv = 0;
}

/*
 * Takes the next free chunk of the SMB (one 4 KiB chunk per page, the
 * layout Perfetto's client library uses), scanning from *page. Returns the
 * chunk header, or NULL when every chunk is still waiting for the service.
 */
static struct spn_smb_chunk_header *bench_take(struct th_prod *p,
					       uint32_t *page,
					       uint32_t chunk_id)
{
	const uint32_t n = p->smb.num_pages;

	for (uint32_t k = 0; k < n; k++) {
		uint32_t pg = (*page + k) % n;
		struct spn_smb_chunk_header *h;

		(void)spn_smb_try_partition(&p->smb, pg, SPN_SMB_PAGE_DIV1);
		if (spn_smb_try_acquire_write(&p->smb, pg, SPN_SMB_PAGE_DIV1,
					      0, 1, chunk_id, 0, &h) == 0) {
			*page = pg;
			return h;
		}
	}
	return NULL;
}

/* Producer rate limit in MB/s (0: as fast as it can); set before fork. */
static double rate_mbps;
/* Chunks per CommitData (0: all filled since the last send, once the
 * service took that one); set before fork. */
static unsigned batch_fixed = 8;
/* Producers copy the first chunk's payload into every later chunk instead
 * of encoding its packets again (--prebuilt); set before fork. */
static bool prebuilt;

/* True once the service has taken (or freed) chunk 0 of `page`, the last
 * chunk of the CommitData sent before. */
static bool bench_taken(struct th_prod *p, uint32_t page)
{
	/* Relaxed: only a hint for when to send; nothing is read through it. */
	uint32_t w = spn_smb_page_load(&p->smb, page, memory_order_relaxed);

	return spn_smb_word_state(w, 0) != SPN_SMB_COMPLETE;
}

/* Sleeps until `bytes` are due at rate_mbps since t0. */
static void bench_pace(uint64_t t0, uint64_t bytes)
{
	uint64_t due = t0 + (uint64_t)(bytes / rate_mbps * 1e3);
	struct timespec ts = { .tv_sec = (time_t)(due / 1000000000ull),
			       .tv_nsec = (long)(due % 1000000000ull) };

	if (bench_now_ns() < due)
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

/*
 * A producer process, shaped like the SDK: waits for the go byte, then for
 * `secs` fills chunks with ~210-byte packets and commits them as they fill
 * (CommitData without reply; see the top for how many per request), at
 * rate_mbps if set, never waiting for the
 * service unless the SMB (default size, 256 KiB) has no free chunk left;
 * each such moment would be a drop in the SDK's default mode and is
 * counted, with the time spent waiting for the service to free a chunk.
 */
static void producer_main(const struct th_svc *t, int go_fd, int out_fd,
			  double secs)
{
	static Perfetto__Protos__CommitDataRequest__ChunksToMove mv[MAX_MOVES];
	static Perfetto__Protos__CommitDataRequest__ChunksToMove *mvp[MAX_MOVES];
	struct prod_report r = { 0 };
	struct th_prod p;
	uint32_t chunk_id = 0, page = 0, sent_page = 0;
	bool in_flight = false;
	uint64_t t0, end, now;
	unsigned nmv = 0;
	uint8_t pkt[PAD + 32];
	static uint8_t img[65536];	/* --prebuilt: the first chunk's payload */
	size_t img_len = 0;		/* its length (0: not yet built) */
	unsigned img_cnt = 0;		/* its packets */
	char go;

	if (read(go_fd, &go, 1) != 1)
		_exit(1);
	th_prod_connect(&p, t, "bench", "bench.ds");
	while (th_prod_wait_cmd(&p) !=
	       PERFETTO__PROTOS__GET_ASYNC_COMMAND_RESPONSE__CMD_START_DATA_SOURCE)
		;
	const uint32_t csize = p.smb.chunk_size[SPN_SMB_PAGE_DIV1];

	t0 = now = bench_now_ns();
	end = t0 + (uint64_t)(secs * 1e9);
	while (now < end && !p.gone) {
		struct spn_smb_chunk_header *h = bench_take(&p, &page,
							    chunk_id);
		uint8_t *w, *e;
		unsigned cnt = 0;

		if (!h) {
			uint64_t w0 = now;

			/* SMB full: flush what is pending, wait for a
			 * chunk to come back. */
			if (nmv) {
				sent_page = mv[nmv - 1].page;
				in_flight = true;
			}
			bench_commit(&p, mvp, &nmv);
			r.full++;
			while (!(h = bench_take(&p, &page, chunk_id)) &&
			       bench_now_ns() < end)
				sched_yield();
			now = bench_now_ns();
			r.full_ns += now - w0;
			if (!h)
				break;
		}
		w = spn_smb_chunk_payload(h);
		e = (uint8_t *)h + csize;
		if (prebuilt && img_len) {
			memcpy(w, img, img_len);
			cnt = img_cnt;
			r.packets += cnt;
		} else {
			for (;;) {
				size_t len = bench_packet(pkt, r.packets);

				if ((size_t)(e - w) < len + 4)
					break;
				spn_pb_put_varint4(w, (uint32_t)len);
				memcpy(w + 4, pkt, len);
				w += 4 + len;
				r.packets++;
				cnt++;
			}
			if (prebuilt) {	/* the first chunk: keep its payload */
				img_len = (size_t)(w - spn_smb_chunk_payload(h));
				memcpy(img, spn_smb_chunk_payload(h), img_len);
				img_cnt = cnt;
			}
		}
		spn_smb_chunk_set_packets(h, spn_smb_packets(cnt, 0));
		if (spn_smb_try_complete(&p.smb, page, SPN_SMB_PAGE_DIV1, 0) != 0)
			_exit(1);
		perfetto__protos__commit_data_request__chunks_to_move__init(
			&mv[nmv]);
		mv[nmv].has_page = mv[nmv].has_chunk = true;
		mv[nmv].has_target_buffer = true;
		mv[nmv].page = page;
		mv[nmv].chunk = 0;
		mv[nmv].target_buffer = p.target_buffer;
		mvp[nmv] = &mv[nmv];
		nmv++;
		chunk_id++;
		page++;
		r.chunks++;
		r.bytes += csize;
		if (in_flight && !batch_fixed)
			in_flight = !bench_taken(&p, sent_page);
		if (batch_fixed ? nmv >= batch_fixed :
				  !in_flight || nmv == MAX_MOVES) {
			sent_page = page - 1;
			in_flight = true;
			bench_commit(&p, mvp, &nmv);
			if (rate_mbps > 0)
				bench_pace(t0, r.bytes);
		}
		now = bench_now_ns();
	}
	bench_commit(&p, mvp, &nmv);
	r.ns = now - t0;
	r.commits = commits_sent;
	/* Everything committed has been moved once the fence returns. */
	th_prod_fence(&p);
	th_prod_close(&p);
	if (write(out_fd, &r, sizeof(r)) != sizeof(r))
		_exit(1);
	_exit(0);
}

/* memcpy of chunk-sized blocks into a 64 MiB ring, MB/s. */
static double memcpy_mbps(size_t chunk)
{
	size_t ring = (size_t)BUF_KB * 1024;
	uint8_t *src = malloc(262144), *dst = malloc(ring);
	uint64_t t0, bytes = 0;
	size_t off = 0, soff = 0;

	memset(src, 1, 262144);
	memset(dst, 0, ring);
	t0 = bench_now_ns();
	while (bench_now_ns() - t0 < 500000000ull) {
		for (int i = 0; i < 256; i++) {
			memcpy(dst + off, src + soff, chunk);
			off = (off + chunk) % (ring - chunk);
			soff = (soff + chunk) % (262144 - chunk);
			bytes += chunk;
		}
	}
	double mbps = bytes / 1e6 / ((bench_now_ns() - t0) / 1e9);

	free(src);
	free(dst);
	return mbps;
}

struct result {
	unsigned lanes;		/* lanes of the run */
	double mbps;		/* MB/s moved into trace buffers */
	double chunks_per_s;	/* chunks/s */
	double cpu_per_gb;	/* service CPU seconds per GB */
	uint64_t stored;	/* bytes_written of the buffer (service view) */
	uint64_t lost;		/* chunks_discarded + abi violations */
	uint64_t full;		/* producer found the SMB full (would drop) */
	double wait_pct;	/* share of producer time spent waiting for it */
	double cpu_pct;		/* service CPU over wall time (100 = a core) */
	double lane_cpu_per_gb;	/* the lane threads' share of cpu_per_gb */
	double capacity_mbps;	/* MB moved per service CPU second */
	double lane_capacity_mbps; /* MB moved per lane-thread CPU second */
	double per_commit;	/* chunks per CommitData */
	double memcpy_mbps;	/* memcpy MB/s around the run (see main) */
};

static struct result run(unsigned lanes, unsigned nprod, double secs)
{
	struct th_svc t = { 0 };
	struct svc_opts o = { 0 };
	struct th_cons c;
	struct result res = { .lanes = lanes };
	struct prod_report total = { 0 };
	int go[2], out[2];
	pid_t pids[64];
	double cpu0, cpu1, lane0, lane1;
	uint64_t t0, t1;

	strcpy(t.dir, "/tmp/spn_bench_XXXXXX");
	if (!mkdtemp(t.dir) || pipe(go) || pipe(out))
		exit(1);
	snprintf(t.psock, sizeof(t.psock), "%s/p.sock", t.dir);
	snprintf(t.csock, sizeof(t.csock), "%s/c.sock", t.dir);
	/* Fork before any thread exists in this process. */
	for (unsigned i = 0; i < nprod; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			producer_main(&t, go[0], out[1], secs);
	}
	o.producer_socket = t.psock;
	o.consumer_socket = t.csock;
	o.lanes = lanes;
	o.control = 1;
	if (svc_start(&o, &t.svc) < 0)
		exit(1);
	th_cons_connect(&c, &t);
	th_cons_enable(&c, BUF_KB, "bench.ds");
	cpu0 = cpu_seconds();
	lane0 = lane_cpu_seconds();
	t0 = bench_now_ns();
	for (unsigned i = 0; i < nprod; i++)
		if (write(go[1], "g", 1) != 1)
			exit(1);
	for (unsigned i = 0; i < nprod; i++) {
		struct prod_report r;

		if (read(out[0], &r, sizeof(r)) == sizeof(r)) {
			total.chunks += r.chunks;
			total.packets += r.packets;
			total.bytes += r.bytes;
			total.full += r.full;
			total.full_ns += r.full_ns;
			total.ns += r.ns;
			total.commits += r.commits;
		}
		waitpid(pids[i], NULL, 0);
	}
	t1 = bench_now_ns();
	cpu1 = cpu_seconds();
	lane1 = lane_cpu_seconds();
	{
		Perfetto__Protos__GetTraceStatsRequest req =
			PERFETTO__PROTOS__GET_TRACE_STATS_REQUEST__INIT;
		ProtobufCMessage *rep = NULL;

		if (ipc_sync_call(c.sync, c.port, "GetTraceStats", &req.base,
				  -1, &rep, NULL, 5000) == 0) {
			Perfetto__Protos__GetTraceStatsResponse *g = (void *)rep;

			if (g->trace_stats && g->trace_stats->n_buffer_stats) {
				res.stored = g->trace_stats->buffer_stats[0]
						     ->bytes_written;
				res.lost = g->trace_stats->chunks_discarded +
					   g->trace_stats->buffer_stats[0]
						   ->abi_violations;
			}
			protobuf_c_message_free_unpacked(rep, NULL);
		}
	}
	th_cons_call(&c, "FreeBuffers",
		     &perfetto__protos__free_buffers_request__descriptor);
	th_cons_close(&c);
	th_svc_stop(&t);
	close(go[0]);
	close(go[1]);
	close(out[0]);
	close(out[1]);
	res.mbps = total.bytes / 1e6 / ((t1 - t0) / 1e9);
	res.chunks_per_s = total.chunks / ((t1 - t0) / 1e9);
	res.cpu_per_gb = total.bytes ? (cpu1 - cpu0) / (total.bytes / 1e9) : 0;
	res.cpu_pct = 100.0 * (cpu1 - cpu0) / ((t1 - t0) / 1e9);
	res.lane_cpu_per_gb = total.bytes ? (lane1 - lane0) / (total.bytes / 1e9) : 0;
	res.capacity_mbps = cpu1 > cpu0 ? total.bytes / 1e6 / (cpu1 - cpu0) : 0;
	res.lane_capacity_mbps = lane1 > lane0 ? total.bytes / 1e6 / (lane1 - lane0) : 0;
	res.full = total.full;
	res.per_commit = total.commits ? (double)total.chunks / total.commits : 0;
	res.wait_pct = total.ns ? 100.0 * total.full_ns / total.ns : 0;
	return res;
}

/* ---- wake-up latency of this machine (rate-limited runs) ---- */

#define WAKE_SAMPLES 10000u	/* wake-ups timed */
#define WAKE_GAP_NS 50000u	/* between two of them: about a commit's */

/* The wake-up probe: a thread blocked in read() on a pipe, woken by writes
 * of their send time, as a lane sleeping in io_uring is woken by a
 * CommitData. */
struct wake_probe {
	int fd[2];		/* the pipe */
	uint32_t *lat;		/* wake-up latency of each sample, ns */
};

static void *wake_reader(void *arg)
{
	struct wake_probe *w = arg;
	uint64_t sent, ns;

	for (unsigned i = 0; i < WAKE_SAMPLES; i++) {
		if (read(w->fd[0], &sent, sizeof(sent)) != sizeof(sent))
			break;
		ns = bench_now_ns() - sent;
		w->lat[i] = ns < UINT32_MAX ? (uint32_t)ns : UINT32_MAX;
	}
	return NULL;
}

/* What the wake-up probe found. */
struct wake_result {
	double med_us, p999_us, max_us;	/* latency percentiles */
	double slack_us;		/* time a producer at rate_mbps takes
					 * to fill the default SMB's room past
					 * one CommitData in flight */
	double over_slack_pct;		/* wake-ups that took longer than that */
};

/*
 * Times WAKE_SAMPLES wake-ups of a blocked thread (a pipe write to its
 * read(), WAKE_GAP_NS apart, the writer spinning between them so that
 * only the reader sleeps). A lane that takes longer than the SMB's slack
 * to wake lets a producer at the run's rate find the SMB full, whatever
 * the lane does once it runs; on a VM this tail is the host's (its
 * vCPUs stalled for milliseconds), so the "SMB full" column is read
 * beside it. Returns -1 when the probe could not run.
 */
static int wake_latency(struct wake_result *out)
{
	struct wake_probe w = { .lat = calloc(WAKE_SAMPLES, sizeof(uint32_t)) };
	/* The producers' chunks: Div1 of the default 4 KiB pages. */
	double room = (double)SPN_SMB_DEFAULT_SIZE -
		      (double)batch_fixed * spn_smb_chunk_size_for(SPN_SMB_DEFAULT_PAGE_SIZE,
								   SPN_SMB_PAGE_DIV1);
	unsigned over = 0;
	pthread_t th;

	if (!w.lat || pipe(w.fd) < 0) {
		free(w.lat);
		return -1;
	}
	if (pthread_create(&th, NULL, wake_reader, &w) != 0) {
		close(w.fd[0]);
		close(w.fd[1]);
		free(w.lat);
		return -1;
	}
	for (unsigned i = 0; i < WAKE_SAMPLES; i++) {
		uint64_t t0 = bench_now_ns(), now;

		while ((now = bench_now_ns()) - t0 < WAKE_GAP_NS)
			;
		if (write(w.fd[1], &now, sizeof(now)) != sizeof(now))
			break;
	}
	close(w.fd[1]);
	pthread_join(th, NULL);
	close(w.fd[0]);
	qsort(w.lat, WAKE_SAMPLES, sizeof(uint32_t), bench_cmp_u32);
	out->med_us = (double)w.lat[WAKE_SAMPLES / 2] / 1e3;
	out->p999_us = (double)w.lat[WAKE_SAMPLES * 999 / 1000] / 1e3;
	out->max_us = (double)w.lat[WAKE_SAMPLES - 1] / 1e3;
	out->slack_us = room > 0 ? room / rate_mbps : 0; /* bytes / (MB/s) = us */
	for (unsigned i = 0; i < WAKE_SAMPLES; i++)
		over += w.lat[i] > out->slack_us * 1e3;
	out->over_slack_pct = 100.0 * over / WAKE_SAMPLES;
	free(w.lat);
	return 0;
}

int main(int argc, char **argv)
{
	double secs = 2.0;
	unsigned nprod = 2;
	struct result res[2];
	struct bench_json j;
	struct wake_result wake = { 0 };
	bool have_wake = false;
	char wake_json[160];
	double mc;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			secs = atof(argv[++i]);
		else if (!strcmp(argv[i], "--producers") && i + 1 < argc)
			nprod = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--rate") && i + 1 < argc)
			rate_mbps = atof(argv[++i]);
		else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
			batch_fixed = (unsigned)atoi(argv[++i]);
		else if (!strcmp(argv[i], "--prebuilt"))
			prebuilt = true;
		else {
			fprintf(stderr, "usage: commit_bench [--seconds S] "
					"[--producers P] [--rate MB/s per "
					"producer] [--batch N] [--prebuilt]\n");
			return 2;
		}
	}
	if (nprod < 1 || nprod > 64 || secs <= 0 || rate_mbps < 0 ||
	    batch_fixed > MAX_MOVES) {
		fprintf(stderr, "commit_bench: bad arguments\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	mc = memcpy_mbps(4096); /* Div1 chunks of 4 KiB pages */
	bench_json_open(&j, SPN_BENCH_RESULTS_DIR,
			prebuilt ? "commit_bench_prebuilt" : "commit_bench");
	printf("commit_bench: %u producer processes x %.1f s (%s), %ld cores; "
	       "memcpy of 4 KiB chunks: %.0f MB/s\n",
	       nprod, secs, rate_mbps > 0 ? "rate-limited" : "flat out",
	       bench_cores(), mc);
	if (rate_mbps > 0)
		printf("each producer at most %.0f MB/s\n", rate_mbps);
	if (prebuilt)
		printf("producers copy a prebuilt chunk payload\n");
	if (batch_fixed)
		printf("%u chunks per CommitData\n", batch_fixed);
	else
		printf("CommitData: all chunks filled since the last one, once "
		       "the service took that\n");
	if (rate_mbps > 0 && wake_latency(&wake) == 0) {
		have_wake = true;
		printf("wake-up of a blocked thread (%u, pipe): median %.1f us, "
		       "p99.9 %.1f us, max %.1f us; %.2f%% take longer than "
		       "the %.0f us a producer at this rate needs to fill the "
		       "SMB's room past one CommitData in flight (each such "
		       "lane wake-up can show as an \"SMB full\")\n",
		       WAKE_SAMPLES, wake.med_us, wake.p999_us, wake.max_us,
		       wake.over_slack_pct, wake.slack_us);
	}
	/* The probe's figures, the same in every JSON row. */
	wake_json[0] = '\0';
	if (have_wake)
		snprintf(wake_json, sizeof(wake_json),
			 ", \"wake_median_us\": %.1f, \"wake_p999_us\": %.1f, "
			 "\"wake_max_us\": %.1f, \"wake_over_slack_pct\": %.3f",
			 wake.med_us, wake.p999_us, wake.max_us,
			 wake.over_slack_pct);
	printf("%-6s %10s %12s %10s %14s %8s %10s %8s %10s %6s\n", "lanes",
	       "MB/s", "chunks/s", "vs memcpy", "svc CPU s/GB", "svc CPU",
	       "stored MB", "SMB full", "prod wait", "lost");
	for (unsigned lanes = 1; lanes <= 2; lanes++) {
		/* memcpy right before and right after each run: this host's
		 * memory speed drifts over seconds, and a ratio of figures
		 * taken apart would carry that drift. The run's ratios use
		 * the mean of the two; `mc` holds the last figure taken (at
		 * the start, or after the previous run), which is "before". */
		double mc_before = mc;
		struct result r = run(lanes, nprod, secs);

		mc = memcpy_mbps(4096);
		r.memcpy_mbps = (mc_before + mc) / 2;
		res[lanes - 1] = r;
		printf("%-6u %10.1f %12.0f %9.1f%% %14.3f %7.0f%% %10.1f %8llu "
		       "%9.1f%% %6llu\n",
		       r.lanes, r.mbps, r.chunks_per_s, 100.0 * r.mbps / r.memcpy_mbps,
		       r.cpu_per_gb, r.cpu_pct, r.stored / 1e6,
		       (unsigned long long)r.full, r.wait_pct,
		       (unsigned long long)r.lost);
		bench_json_result(&j,
				  "\"lanes\": %u, \"producers\": %u, "
				  "\"producer_rate_mb_per_s\": %.0f, "
				  "\"fixed_batch\": %u, \"prebuilt\": %s, "
				  "\"mb_per_s\": %.1f, \"chunks_per_s\": %.0f, "
				  "\"memcpy_mb_per_s\": %.0f, \"ratio\": %.4f, "
				  "\"service_cpu_s_per_gb\": %.4f, "
				  "\"service_cpu_pct\": %.1f, "
				  "\"stored_bytes\": %llu, \"lost_chunks\": %llu, "
				  "\"smb_full_events\": %llu, "
				  "\"producer_wait_pct\": %.2f, "
				  "\"capacity_mb_per_service_cpu_s\": %.1f, "
				  "\"lane_capacity_ratio\": %.4f, "
				  "\"lane_thread_cpu_s_per_gb\": %.4f, "
				  "\"lane_thread_mb_per_cpu_s\": %.1f, "
				  "\"chunks_per_commit\": %.1f%s",
				  r.lanes, nprod, rate_mbps, batch_fixed,
				  prebuilt ? "true" : "false", r.mbps,
				  r.chunks_per_s, r.memcpy_mbps,
				  r.mbps / r.memcpy_mbps, r.cpu_per_gb, r.cpu_pct,
				  (unsigned long long)r.stored,
				  (unsigned long long)r.lost,
				  (unsigned long long)r.full, r.wait_pct,
				  r.capacity_mbps, r.capacity_mbps / r.memcpy_mbps,
				  r.lane_cpu_per_gb, r.lane_capacity_mbps,
				  r.per_commit, wake_json);
	}
	printf("\nlane capacity (MB moved per CPU second, same run):\n");
	printf("%-6s %18s %12s %18s %16s %14s %12s\n", "lanes", "per svc CPU s",
	       "vs memcpy", "per lane-thread s", "lane CPU s/GB",
	       "chunks/commit", "memcpy MB/s");
	for (unsigned lanes = 1; lanes <= 2; lanes++) {
		const struct result *r = &res[lanes - 1];

		printf("%-6u %18.1f %11.1f%% %18.1f %16.3f %14.1f %12.0f\n", r->lanes,
		       r->capacity_mbps, 100.0 * r->capacity_mbps / r->memcpy_mbps,
		       r->lane_capacity_mbps, r->lane_cpu_per_gb,
		       r->per_commit, r->memcpy_mbps);
	}
	printf("ratio (MB/s vs memcpy): lanes 1 %.3f, lanes 2 %.3f; "
	       "lane_capacity_ratio: lanes 1 %.3f, lanes 2 %.3f\n",
	       res[0].mbps / res[0].memcpy_mbps, res[1].mbps / res[1].memcpy_mbps,
	       res[0].capacity_mbps / res[0].memcpy_mbps,
	       res[1].capacity_mbps / res[1].memcpy_mbps);
	return bench_json_close(&j) < 0;
}
