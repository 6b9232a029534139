// SPDX-License-Identifier: Apache-2.0
// spindle-example: a small app on libspindle that draws a readable picture in a trace (nested slices per thread, counters, a flow between threads, instants with annotations) whenever a session enables its "track_event" data source.
//
// It connects to the producer socket (--producer-socket, else
// $PERFETTO_PRODUCER_SOCK_NAME, else Perfetto's default path) and keeps
// running until SIGINT / SIGTERM (or --duration): the service may come
// and go and sessions start and stop; events are built only while a
// session has the data source enabled.
//
// The picture: N worker threads run a ~60 Hz frame loop, each frame a
// slice with nested "update" and "render" slices (render holds one "draw"
// per layer), an instant "vsync" with annotations, and, every few frames,
// a job handed to the "io" thread: the worker's "submit" slice and the io
// thread's "write" slice are linked by a flow. Process-wide counter tracks
// show the io queue depth and the bytes "written".
//
// The track_event data source is hosted here on the producer API: its
// descriptor lists the categories, start / stop / clear go to the
// track-event layer, and the layer gets each thread's writer with
// spn_ds_tls().
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "spindle/producer.h"
#include "spindle/track_event.h"

#define EX_MAX_WORKERS 16u
#define EX_QUEUE 64u		/* jobs in flight from workers to the io thread */
#define EX_FRAME_US 16667L	/* ~60 frames per second */
#define EX_LAYERS 3u		/* draws per render */

static struct spn_te_category cat_frame =
	SPN_TE_CATEGORY("frame", "Frame loop of the worker threads");
static struct spn_te_category cat_io = SPN_TE_CATEGORY("io", "Jobs written by the io thread");
static struct spn_te_category cat_stats = SPN_TE_CATEGORY("stats", "Counters");
static struct spn_te_category *const ex_cats[] = { &cat_frame, &cat_io, &cat_stats };

static struct spn_te_track queue_track = SPN_TE_COUNTER_TRACK("io queue", SPN_TE_UNIT_COUNT);
static struct spn_te_track bytes_track =
	SPN_TE_COUNTER_TRACK("bytes written", SPN_TE_UNIT_SIZE_BYTES);

/* The app. */
struct ex {
	struct spn_producer *p;		/* the producer */
	struct spn_te *te;		/* the track-event layer */
	/* the data source, published by the first on_start (release) for
	 * the writer callback (acquire) */
	_Atomic(struct spn_ds *) ds;
	_Atomic bool run;		/* cleared on SIGINT / SIGTERM */
	pthread_mutex_t mu;		/* guards the job queue */
	pthread_cond_t cv;		/* signals the io thread */
	uint64_t q[EX_QUEUE];		/* job ids (flow ids) */
	uint32_t qhead;			/* oldest job */
	uint32_t qlen;			/* jobs queued */
	_Atomic uint64_t next_job;	/* job id counter */
};

static struct ex ex;

/* ---- hosting the data source ---- */

static struct spn_tw *ex_writer(void *ctx, uint32_t inst)
{
	struct ex *e = ctx;
	/* Acquire: pairs with the release store in ex_on_start. */
	struct spn_ds *ds = atomic_load_explicit(&e->ds, memory_order_acquire);
	struct spn_ds_tls *t = ds ? spn_ds_tls(ds, inst) : NULL;

	return t ? t->tw : NULL;
}

static void ex_on_start(struct spn_ds *ds, const struct spn_ds_config *cfg, void *user)
{
	struct ex *e = user;
	int err;

	/* Release: see ex_writer. */
	atomic_store_explicit(&e->ds, ds, memory_order_release);
	err = spn_te_start(e->te, cfg->instance, cfg->track_event_config,
			   cfg->track_event_config_len);
	if (err)
		fprintf(stderr, "spindle-example: track_event config refused: %s\n",
			strerror(-err));
	else
		fprintf(stderr, "spindle-example: tracing started (session %llu)\n",
			(unsigned long long)cfg->tracing_session_id);
}

static bool ex_on_stop(struct spn_ds *ds, const struct spn_ds_stop *stop, void *user)
{
	struct ex *e = user;

	(void)ds;
	spn_te_stop(e->te, stop->instance);
	fprintf(stderr, "spindle-example: tracing stopped\n");
	return false;
}

static void ex_on_clear(struct spn_ds *ds, uint32_t inst, void *user)
{
	struct ex *e = user;

	(void)ds;
	spn_te_clear_incremental_state(e->te, inst);
}

static int ex_setup(struct ex *e, const char *sock)
{
	struct spn_producer_opts po = { .socket = sock, .name = "spindle-example" };
	struct spn_te_opts to = {
		.categories = ex_cats,
		.ncategories = sizeof(ex_cats) / sizeof(ex_cats[0]),
		.writer = ex_writer,
		.ctx = e,
		.process_name = "spindle-example",
	};
	struct spn_ds_callbacks cb = {
		.on_start = ex_on_start, .on_stop = ex_on_stop,
		.on_clear_incremental_state = ex_on_clear, .user = e,
	};
	struct spn_ds_desc d = {
		.name = "track_event", .will_notify_on_start = true,
		.will_notify_on_stop = true, .handles_incremental_state_clear = true,
	};
	struct spn_ds *ds;
	uint8_t *desc = NULL;
	size_t len = 0;
	int err;

	err = spn_te_create(&to, &e->te);
	if (!err)
		err = spn_te_descriptor(e->te, &desc, &len);
	if (err) {
		fprintf(stderr, "spindle-example: track events: %s\n", strerror(-err));
		return err;
	}
	err = spn_producer_create(&po, &e->p);
	if (err) {
		fprintf(stderr, "spindle-example: producer: %s\n", strerror(-err));
		free(desc);
		return err;
	}
	d.track_event_descriptor = desc;
	d.track_event_descriptor_len = len;
	err = spn_data_source_register(e->p, &d, &cb, &ds);
	free(desc);
	if (err)
		fprintf(stderr, "spindle-example: data source: %s\n", strerror(-err));
	return err;
}

/* ---- the picture ---- */

/* Sleeps `us` microseconds (work being "done"). */
static void ex_work(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Hands a job to the io thread; returns false when its queue is full. */
static bool ex_submit(struct ex *e, uint64_t job)
{
	uint32_t depth;

	pthread_mutex_lock(&e->mu);
	if (e->qlen == EX_QUEUE) {
		pthread_mutex_unlock(&e->mu);
		return false;
	}
	e->q[(e->qhead + e->qlen++) % EX_QUEUE] = job;
	depth = e->qlen;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
	SPN_TRACE_COUNTER_ON(cat_stats, &queue_track, (int64_t)depth);
	return true;
}

/* One worker's frame loop. */
static void *ex_worker(void *arg)
{
	unsigned idx = (unsigned)(uintptr_t)arg;
	unsigned seed = idx * 2654435761u + 1;
	char name[16];
	uint64_t frame = 0;

	snprintf(name, sizeof(name), "worker-%u", idx);
	pthread_setname_np(pthread_self(), name);
	spn_te_set_thread_name(name);
	while (atomic_load(&ex.run)) {
		long update_us = 2000 + (long)(rand_r(&seed) % 3000);
		bool late = rand_r(&seed) % 10 == 0;

		SPN_TRACE_BEGIN(cat_frame, "frame", SPN_ARG("frame", frame),
				SPN_ARG("worker", idx));
		SPN_TRACE_BEGIN(cat_frame, "update", SPN_ARG("entities", 100 + rand_r(&seed) % 50));
		ex_work(update_us);
		SPN_TRACE_END(cat_frame);
		SPN_TRACE_BEGIN(cat_frame, "render");
		for (unsigned l = 0; l < EX_LAYERS; l++) {
			static const char *const layers[EX_LAYERS] = { "sky", "world", "ui" };

			SPN_TRACE_BEGIN(cat_frame, "draw", SPN_ARG("layer", layers[l]),
					SPN_ARG("triangles", 1000u * (l + 1)));
			ex_work(500 + (long)(rand_r(&seed) % 700));
			SPN_TRACE_END(cat_frame);
		}
		SPN_TRACE_END(cat_frame);
		if (frame % 4 == (uint64_t)idx % 4) {
			uint64_t job = atomic_fetch_add(&ex.next_job, 1) + 1;

			SPN_TRACE_BEGIN(cat_io, "submit", SPN_ARG("job", job), SPN_FLOW_LOCAL(job));
			if (!ex_submit(&ex, job))
				SPN_TRACE_INSTANT(cat_io, "queue full", SPN_ARG("job", job));
			SPN_TRACE_END(cat_io);
		}
		SPN_TRACE_END(cat_frame);
		SPN_TRACE_INSTANT(cat_frame, "vsync", SPN_ARG("late", late),
				  SPN_ARG("frame", frame), SPN_ARG("fps", 60.0));
		ex_work(late ? EX_FRAME_US : EX_FRAME_US / 2);
		frame++;
	}
	return NULL;
}

/* The io thread: takes jobs, "writes" them. */
static void *ex_io(void *arg)
{
	uint64_t total = 0;

	(void)arg;
	pthread_setname_np(pthread_self(), "io");
	spn_te_set_thread_name("io");
	for (;;) {
		uint64_t job;
		uint32_t depth;
		struct timespec until;

		pthread_mutex_lock(&ex.mu);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 100 * 1000 * 1000;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		while (ex.qlen == 0 && atomic_load(&ex.run))
			if (pthread_cond_timedwait(&ex.cv, &ex.mu, &until) != 0)
				break;
		if (ex.qlen == 0) {
			pthread_mutex_unlock(&ex.mu);
			if (!atomic_load(&ex.run))
				return NULL;
			continue;
		}
		job = ex.q[ex.qhead];
		ex.qhead = (ex.qhead + 1) % EX_QUEUE;
		depth = --ex.qlen;
		pthread_mutex_unlock(&ex.mu);
		SPN_TRACE_COUNTER_ON(cat_stats, &queue_track, (int64_t)depth);
		SPN_TRACE_BEGIN(cat_io, "write", SPN_ARG("job", job), SPN_FLOW_LOCAL_END(job),
				SPN_ARG("path", "/tmp/spindle-example.dat"));
		ex_work(1000 + (long)(job % 5) * 400);
		total += 4096u * (1 + job % 8);
		SPN_TRACE_END(cat_io);
		SPN_TRACE_COUNTER_ON(cat_stats, &bytes_track, (int64_t)total);
	}
}

/* ---- main ---- */

static void ex_on_signal(int sig)
{
	(void)sig;
	atomic_store(&ex.run, false);
}

static void ex_usage(FILE *f)
{
	fprintf(f, "usage: spindle-example [options]\n"
		   "Emits track events (category frame, io, stats) while a session enables\n"
		   "the \"track_event\" data source.\n"
		   "  --producer-socket PATH  producer socket (default: "
		   "$PERFETTO_PRODUCER_SOCK_NAME, then Perfetto's paths)\n"
		   "  --threads N             worker threads, 1..%u (default 3)\n"
		   "  --duration SECONDS      exit after this long (default: until SIGINT/SIGTERM)\n"
		   "  --help                  this text\n",
		EX_MAX_WORKERS);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "producer-socket", required_argument, NULL, 's' },
		{ "threads", required_argument, NULL, 't' },
		{ "duration", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock = NULL;
	unsigned nworkers = 3, duration = 0;
	pthread_t workers[EX_MAX_WORKERS], io;
	struct sigaction sa;
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			sock = optarg;
			break;
		case 't':
			nworkers = (unsigned)strtoul(optarg, &end, 10);
			if (*end || nworkers < 1 || nworkers > EX_MAX_WORKERS) {
				fprintf(stderr, "spindle-example: --threads: 1..%u\n",
					EX_MAX_WORKERS);
				return 2;
			}
			break;
		case 'd':
			duration = (unsigned)strtoul(optarg, &end, 10);
			if (*end) {
				fprintf(stderr, "spindle-example: --duration: seconds\n");
				return 2;
			}
			break;
		case 'h':
			ex_usage(stdout);
			return 0;
		default:
			ex_usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		ex_usage(stderr);
		return 2;
	}
	atomic_store(&ex.run, true);
	pthread_mutex_init(&ex.mu, NULL);
	pthread_cond_init(&ex.cv, NULL);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = ex_on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (ex_setup(&ex, sock) != 0)
		return 1;
	pthread_create(&io, NULL, ex_io, NULL);
	for (unsigned i = 0; i < nworkers; i++)
		pthread_create(&workers[i], NULL, ex_worker, (void *)(uintptr_t)i);
	for (unsigned s = 0; atomic_load(&ex.run) && (!duration || s < duration * 10); s++)
		ex_work(100000);
	atomic_store(&ex.run, false);
	for (unsigned i = 0; i < nworkers; i++)
		pthread_join(workers[i], NULL);
	pthread_cond_signal(&ex.cv);
	pthread_join(io, NULL);
	/* Stops the instances (on_stop -> spn_te_stop) before the layer goes. */
	spn_producer_destroy(ex.p);
	spn_te_destroy(ex.te);
	return 0;
}
