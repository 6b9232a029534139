// SPDX-License-Identifier: Apache-2.0
// spindled's threads: the acceptor (both listening sockets), the data-plane
// lanes that own connections, and the control plane; start and clean stop.
//
// Start order: control plane, lanes, then the acceptor, so a connection
// never reaches a thread that is not running. Stop order is the reverse of
// what depends on what: the control plane first disables every session
// (its replies still travel through the running lanes), then the acceptor
// stops accepting, then the lanes close their connections.
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "consumer_port.pb-c.h"
#include "core/svc_int.h"
#include "ipc/log.h"
#include "producer_port.pb-c.h"

#define SVC_DEFAULT_MAX_LANES 16u
#define SVC_DEFAULT_CONTROL 2u

/* A loop's thread: runs it until stopped, then destroys it on the same
 * thread (the ring is single-issuer: only its owner may tear it down;
 * closing connections there runs their disconnect callbacks). */
static void *svc_thread_main(void *arg)
{
	ipc_loop_run(arg);
	ipc_loop_destroy(arg);
	return NULL;
}

struct svc_lane *svc_lane_of(struct svc *svc, struct ipc_loop *loop)
{
	for (unsigned i = 0; i < svc->opts.lanes; i++)
		if (svc->lanes[i].loop == loop)
			return &svc->lanes[i];
	return NULL;
}

/* Acceptor: spreads new connections over the lanes, round robin. */
static struct ipc_loop *svc_pick_lane(void *ctx,
				      const struct ipc_peer_cred *cred)
{
	struct svc *svc = ctx;
	unsigned n = atomic_fetch_add_explicit(&svc->next_lane, 1,
					       memory_order_relaxed);
	(void)cred;
	return svc->lanes[n % svc->opts.lanes].loop;
}

static void svc_p_connect(void *ctx, struct ipc_conn *c)
{
	svc_producer_on_connect(ctx, c);
}

static void svc_p_disconnect(void *ctx, struct ipc_conn *c)
{
	svc_producer_on_disconnect(ctx, c);
}

static void svc_c_connect(void *ctx, struct ipc_conn *c)
{
	(void)ctx;
	ipc_conn_set_send_timeout(c, SVC_CONSUMER_SEND_TIMEOUT_MS);
}

/* A consumer went away: the control plane frees its non-detached session. */
static void svc_c_disconnect(void *ctx, struct ipc_conn *c)
{
	struct svc *svc = ctx;
	struct svc_lane *lane = svc_lane_of(svc, ipc_conn_loop(c));
	struct ctl_msg *m = ctl_msg_new(CTL_C_GONE);

	if (!m || !lane) {
		free(m);
		spn_log_error("svc", "out of memory: consumer disconnect lost");
		return;
	}
	m->lane = lane->idx;
	m->conn_id = ipc_conn_id(c);
	ctl_post(svc, m);
}

static int svc_lanes_start(struct svc *svc)
{
	svc->lanes = calloc(svc->opts.lanes, sizeof(*svc->lanes));
	if (!svc->lanes)
		return -ENOMEM;
	for (unsigned i = 0; i < svc->opts.lanes; i++) {
		struct svc_lane *l = &svc->lanes[i];
		int rc;

		l->svc = svc;
		l->idx = i;
		l->by_id = calloc(SVC_MAX_PRODUCERS + 1, sizeof(*l->by_id));
		l->scratch = malloc(2 * SVC_CHUNK_SCRATCH);
		if (!l->by_id || !l->scratch)
			return -ENOMEM;
		rc = ipc_loop_create(&l->loop, NULL);
		if (rc < 0)
			return rc;
		rc = pthread_create(&l->thread, NULL, svc_thread_main, l->loop);
		if (rc != 0) {
			ipc_loop_destroy(l->loop);
			l->loop = NULL;
			return -rc;
		}
		l->running = true;
		svc_name_thread(l->thread, "spn-lane", i);
	}
	return 0;
}

static void svc_lanes_stop(struct svc *svc)
{
	if (!svc->lanes)
		return;
	for (unsigned i = 0; i < svc->opts.lanes; i++) {
		struct svc_lane *l = &svc->lanes[i];

		if (!l->running)
			continue;
		/* The thread closes its connections on the way out: their
		 * disconnect callbacks release SMBs and buffer references. */
		ipc_loop_stop(l->loop);
		pthread_join(l->thread, NULL);
	}
	for (unsigned i = 0; i < svc->opts.lanes; i++) {
		struct svc_lane *l = &svc->lanes[i];

		free(l->by_id);
		free(l->scratch);
	}
	free(svc->lanes);
	svc->lanes = NULL;
}

/* Runs on the acceptor thread: listen on both sockets. */
struct svc_listen_job {
	struct svc *svc;	/* the service */
	int rc;			/* result */
	atomic_bool done;	/* set by the acceptor thread */
};

static void svc_listen_on_loop(struct ipc_loop *loop, void *arg, uint64_t u64)
{
	struct svc_listen_job *job = arg;
	struct svc *svc = job->svc;
	int rc;
	(void)u64;

	rc = ipc_host_listen(svc->phost, loop, svc->opts.producer_socket,
			     &svc->plisten);
	if (rc == 0)
		rc = ipc_host_listen(svc->chost, loop,
				     svc->opts.consumer_socket, &svc->clisten);
	/* Perfetto's modes: any local user may produce, consumers are
	 * limited to the service's user and group. Abstract names have no
	 * file. */
	if (rc == 0 && svc->opts.producer_socket[0] != '@')
		chmod(svc->opts.producer_socket, 0666);
	if (rc == 0 && svc->opts.consumer_socket[0] != '@')
		chmod(svc->opts.consumer_socket, 0660);
	job->rc = rc;
	/* Release: pairs with the acquire load in svc_acceptor_start. */
	atomic_store_explicit(&job->done, true, memory_order_release);
}

/* Names a thread "<prefix><n>" for top, perf and gdb (best effort). */
void svc_name_thread(pthread_t t, const char *prefix, unsigned n)
{
	char name[16];

	snprintf(name, sizeof(name), "%s%u", prefix, n);
	pthread_setname_np(t, name);
}

static int svc_acceptor_start(struct svc *svc)
{
	struct svc_listen_job job = { .svc = svc };
	int rc = ipc_loop_create(&svc->acceptor, NULL);

	if (rc < 0)
		return rc;
	rc = pthread_create(&svc->acceptor_thread, NULL, svc_thread_main,
			    svc->acceptor);
	if (rc != 0) {
		ipc_loop_destroy(svc->acceptor);
		svc->acceptor = NULL;
		return -rc;
	}
	svc_name_thread(svc->acceptor_thread, "spn-accept", 0);
	rc = ipc_loop_post_wait(svc->acceptor, svc_listen_on_loop, &job, 0,
				SVC_WAIT_POST_MS);
	if (rc < 0)
		return rc;
	/* Acquire: pairs with the release store in svc_listen_on_loop. */
	while (!atomic_load_explicit(&job.done, memory_order_acquire))
		usleep(200);
	return job.rc;
}

static void svc_close_listeners(struct ipc_loop *loop, void *arg, uint64_t u)
{
	struct svc_listen_job *job = arg;
	struct svc *svc = job->svc;
	(void)loop;
	(void)u;
	if (svc->plisten)
		ipc_listener_close(svc->plisten);
	if (svc->clisten)
		ipc_listener_close(svc->clisten);
	svc->plisten = svc->clisten = NULL;
	/* Release: pairs with the acquire load in svc_acceptor_stop. */
	atomic_store_explicit(&job->done, true, memory_order_release);
}

/* Closes the listeners on the acceptor thread, then stops it. The loop is
 * stopped only after the post returned: a loop must not be destroyed
 * while another thread is still inside ipc_loop_post on it. */
static void svc_acceptor_stop(struct svc *svc)
{
	struct svc_listen_job job = { .svc = svc };

	if (!svc->acceptor)
		return;
	if (ipc_loop_post_wait(svc->acceptor, svc_close_listeners, &job, 0,
			       SVC_WAIT_POST_MS) == 0) {
		/* Acquire: pairs with the release store in
		 * svc_close_listeners. */
		while (!atomic_load_explicit(&job.done, memory_order_acquire))
			usleep(200);
	}
	ipc_loop_stop(svc->acceptor);
	pthread_join(svc->acceptor_thread, NULL);
	svc->acceptor = NULL;
}

static int svc_hosts_create(struct svc *svc)
{
	static const struct ipc_host_ops pops = {
		.on_connect = svc_p_connect,
		.on_disconnect = svc_p_disconnect,
		.pick_loop = svc_pick_lane,
	};
	static const struct ipc_host_ops cops = {
		.on_connect = svc_c_connect,
		.on_disconnect = svc_c_disconnect,
		.pick_loop = svc_pick_lane,
	};
	int rc = ipc_host_create(&svc->phost, &pops, svc);

	if (rc == 0)
		rc = ipc_host_create(&svc->chost, &cops, svc);
	if (rc == 0)
		rc = svc_producer_port_register(svc, svc->phost);
	if (rc == 0)
		rc = svc_consumer_port_register(svc, svc->chost);
	return rc;
}

static void svc_free(struct svc *svc)
{
	if (svc->ctl)
		ctl_destroy(svc->ctl);
	if (svc->phost)
		ipc_host_destroy(svc->phost);
	if (svc->chost)
		ipc_host_destroy(svc->chost);
	free((char *)svc->opts.producer_socket);
	free((char *)svc->opts.consumer_socket);
	free(svc);
}

static unsigned svc_default_lanes(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	return n > (long)SVC_DEFAULT_MAX_LANES ? SVC_DEFAULT_MAX_LANES
					       : (unsigned)n;
}

int svc_start(const struct svc_opts *opts, struct svc **out)
{
	struct svc *svc;
	int rc;

	if (!opts || !opts->producer_socket || !opts->consumer_socket)
		return -EINVAL;
	if (opts->lanes > SVC_TBUF_MAX_LANES)
		return -EINVAL;
	spn_log_init();
	svc = calloc(1, sizeof(*svc));
	if (!svc)
		return -ENOMEM;
	svc->opts = *opts;
	svc->opts.producer_socket = strdup(opts->producer_socket);
	svc->opts.consumer_socket = strdup(opts->consumer_socket);
	if (!svc->opts.lanes)
		svc->opts.lanes = svc_default_lanes();
	if (!svc->opts.control)
		svc->opts.control = SVC_DEFAULT_CONTROL;
	svc->uid = getuid();
	/* svc_pid_alloc maps counter n to id n % max + 1: the first producer
	 * is 1, as in the reference. */
	atomic_init(&svc->pid_next, 0);
	if (!svc->opts.producer_socket || !svc->opts.consumer_socket) {
		svc_free(svc);
		return -ENOMEM;
	}
	rc = svc_hosts_create(svc);
	if (rc == 0)
		rc = ctl_create(svc, &svc->ctl);
	if (rc == 0)
		rc = ctl_start(svc->ctl);
	if (rc == 0)
		rc = svc_lanes_start(svc);
	if (rc == 0)
		rc = svc_acceptor_start(svc);
	if (rc < 0) {
		spn_log_error("svc", "start failed: %s", strerror(-rc));
		svc_acceptor_stop(svc);
		if (svc->ctl)
			ctl_stop(svc->ctl);
		svc_lanes_stop(svc);
		svc_free(svc);
		return rc;
	}
	spn_log_info("svc", "listening: producers %s, consumers %s, %u lanes, "
		     "%u control threads", svc->opts.producer_socket,
		     svc->opts.consumer_socket, svc->opts.lanes,
		     svc->opts.control);
	*out = svc;
	return 0;
}

void svc_stop(struct svc *svc)
{
	if (!svc)
		return;
	ctl_shutdown_sessions(svc->ctl);
	svc_acceptor_stop(svc);
	ctl_detach_lanes(svc->ctl);
	svc_lanes_stop(svc);
	ctl_stop(svc->ctl);
	svc_free(svc);
}

unsigned svc_lane_count(const struct svc *svc)
{
	return svc->opts.lanes;
}

unsigned svc_control_count(const struct svc *svc)
{
	return svc->opts.control;
}
