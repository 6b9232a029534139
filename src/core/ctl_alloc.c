// SPDX-License-Identifier: Apache-2.0
// The control plane's worker threads (--control N: thread 0 owns the
// sessions, threads 1..N-1 work for it), the hand-off of a piece of work
// to one of them (ctl_work_submit), and the main such work: allocating a
// session's trace buffers (mmap and prefault, which for a 1 GiB buffer
// takes long enough to stall everything else thread 0 serves). CloneSession
// hands its buffer copies over the same way (ctl_clone.c).
//
// Hand-off argument. Thread 0 prepares a job holding only what the worker
// needs (here: BufferIDs it assigned, plain sizes and policies), posts it
// to a worker and stops touching it. The worker does the work and posts the
// job back; each post ring orders the writes before it with the reads
// after it (the ring's enqueue/dequeue pair is a release/acquire). Thread 0
// then adopts the result if it is still wanted: for buffers, if the
// session still waits for them, and otherwise destroys them and frees
// their ids (a session can end, or be disabled, while they are made).
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ctl_int.h"
#include "ipc/log.h"

/* One allocation, between thread 0 and a worker. */
struct alloc_job {
	struct ctl *ctl;		/* the control plane */
	uint64_t session_id;		/* whose buffers */
	unsigned n;			/* buffers to make */
	uint16_t *ids;			/* their BufferIDs (thread 0 assigned) */
	uint32_t *sizes;		/* their sizes in bytes */
	enum svc_tbuf_policy *pol;	/* their fill policies */
	struct svc_tbuf **tbs;		/* worker: the buffers made */
	int rc;				/* worker: 0 or the first -errno */
};

static void alloc_job_free(struct alloc_job *j)
{
	free(j->ids);
	free(j->sizes);
	free(j->pol);
	free(j->tbs);
	free(j);
}

/* --- handing work to a worker --- */

/* One piece of work on its way to a worker and back. */
struct ctl_work {
	struct ctl *ctl;	/* the control plane */
	ctl_work_fn run;	/* on the worker */
	ctl_work_fn done;	/* then on thread 0 */
	ctl_work_fn lost;	/* on the worker if thread 0 cannot take it back */
	void *arg;		/* theirs */
};

static void work_back_on_ctl(struct ipc_loop *loop, void *arg, uint64_t u)
{
	struct ctl_work *w = arg;
	(void)loop;
	(void)u;

	w->done(w->ctl, w->arg);
	free(w);
}

static void work_on_worker(struct ipc_loop *loop, void *arg, uint64_t u)
{
	struct ctl_work *w = arg;
	(void)loop;
	(void)u;

	w->run(w->ctl, w->arg);
	if (ipc_loop_post_wait(w->ctl->loop, work_back_on_ctl, w, 0,
			       SVC_WAIT_POST_MS) < 0) {
		/* Thread 0 is gone or wedged: nobody will take it back. */
		spn_log_error("ctl", "result of a control worker lost");
		w->lost(w->ctl, w->arg);
		free(w);
	}
}

void ctl_work_submit(struct ctl *ctl, uint64_t key, ctl_work_fn run,
		     ctl_work_fn done, ctl_work_fn lost, void *arg)
{
	struct ctl_work *w = ctl->nworkers ? malloc(sizeof(*w)) : NULL;

	if (w) {
		*w = (struct ctl_work){ ctl, run, done, lost, arg };
		if (ipc_loop_post_wait(ctl->workers[key % ctl->nworkers],
				       work_on_worker, w, 0,
				       SVC_WAIT_POST_MS) == 0)
			return;
		free(w);
	}
	/* No worker (--control 1), or none reachable: do it here. */
	run(ctl, arg);
	done(ctl, arg);
}

/* --- buffer allocation --- */

/* Frees the buffers and ids of a job whose session no longer wants them. */
static void alloc_job_discard(struct alloc_job *j)
{
	for (unsigned i = 0; i < j->n; i++) {
		svc_tbuf_destroy(j->tbs[i]);
		svc_bufid_free(&j->ctl->bufids, j->ids[i]);
	}
	alloc_job_free(j);
}

/* Any thread: makes the buffers (a worker, or thread 0 without workers). */
static void alloc_job_run(struct ctl *ctl, void *arg)
{
	struct alloc_job *j = arg;

	for (unsigned i = 0; i < j->n && j->rc == 0; i++)
		j->rc = svc_tbuf_create(j->sizes[i], j->pol[i],
					ctl->svc->opts.lanes,
					SVC_TBUF_PREFAULT, &j->tbs[i]);
	if (j->rc < 0)
		for (unsigned i = 0; i < j->n; i++) {
			svc_tbuf_destroy(j->tbs[i]);
			j->tbs[i] = NULL;
		}
}

/* Thread 0: the buffers are made (or failed). */
static void alloc_job_done(struct ctl *ctl, void *arg)
{
	struct alloc_job *j = arg;
	struct ctl_session *s = NULL;

	for (struct ctl_session *o = ctl->sessions; o; o = o->next)
		if (o->id == j->session_id && !o->dead && o->allocating)
			s = o;
	if (!s || s->state != SVC_SESSION_CONFIGURED) {
		if (s)
			s->allocating = false;
		alloc_job_discard(j);
		return;
	}
	s->allocating = false;
	if (j->rc < 0) {
		for (unsigned i = 0; i < j->n; i++)
			svc_bufid_free(&ctl->bufids, j->ids[i]);
		ctl_enable_failed(ctl, s, j->rc == -EINVAL
						  ? SVC_GUARD_ERR_BUFFER_SIZES
						  : SVC_GUARD_ERR_BUFFER_OOM);
		alloc_job_free(j);
		return;
	}
	for (unsigned i = 0; i < j->n; i++) {
		struct svc_buf *b = calloc(1, sizeof(*b));

		if (!b) {
			/* Hand the rest back; the made ones go with s. */
			for (unsigned k = i; k < j->n; k++) {
				svc_tbuf_destroy(j->tbs[k]);
				svc_bufid_free(&ctl->bufids, j->ids[k]);
			}
			ctl_enable_failed(ctl, s, SVC_GUARD_ERR_BUFFER_OOM);
			alloc_job_free(j);
			return;
		}
		b->id = j->ids[i];
		b->tb = j->tbs[i];
		b->svc = ctl->svc;
		atomic_init(&b->refs, 1);
		s->bufs[i] = b;
		s->nbufs = i + 1;
	}
	alloc_job_free(j);
	ctl_enable_finish(ctl, s);
}

/* Worker: thread 0 cannot take the buffers back. */
static void alloc_job_lost(struct ctl *ctl, void *arg)
{
	struct alloc_job *j = arg;
	(void)ctl;

	for (unsigned i = 0; i < j->n; i++)
		svc_tbuf_destroy(j->tbs[i]);
	alloc_job_free(j);
}

enum svc_tbuf_policy ctl_buffer_policy(
	const Perfetto__Protos__TraceConfig__BufferConfig *bc)
{
	return bc->fill_policy ==
			       PERFETTO__PROTOS__TRACE_CONFIG__BUFFER_CONFIG__FILL_POLICY__DISCARD
		       ? SVC_TBUF_DISCARD
		       : SVC_TBUF_RING;
}

int ctl_alloc_buffers(struct ctl *ctl, struct ctl_session *s, char *err,
		      size_t errlen)
{
	unsigned n = (unsigned)s->cfg->n_buffers;
	struct alloc_job *j = calloc(1, sizeof(*j));
	int rc;

	s->bufs = calloc(n ? n : 1, sizeof(*s->bufs));
	if (j) {
		j->ids = calloc(n ? n : 1, sizeof(*j->ids));
		j->sizes = calloc(n ? n : 1, sizeof(*j->sizes));
		j->pol = calloc(n ? n : 1, sizeof(*j->pol));
		j->tbs = calloc(n ? n : 1, sizeof(*j->tbs));
	}
	if (!j || !s->bufs || !j->ids || !j->sizes || !j->pol || !j->tbs) {
		if (j)
			alloc_job_free(j);
		snprintf(err, errlen, "%s", SVC_GUARD_ERR_BUFFER_OOM);
		return -ENOMEM;
	}
	j->ctl = ctl;
	j->session_id = s->id;
	j->n = n;
	rc = svc_guard_assign_buffer_ids(&ctl->bufids, s->cfg, j->ids, j->sizes,
					 err, errlen);
	if (rc < 0) {
		alloc_job_free(j);
		return rc;
	}
	for (unsigned i = 0; i < n; i++)
		j->pol[i] = ctl_buffer_policy(s->cfg->buffers[i]);
	s->allocating = true;
	ctl_work_submit(ctl, s->id, alloc_job_run, alloc_job_done,
			alloc_job_lost, j);
	return 0;
}

/* --- worker threads --- */

static void *ctl_worker_main(void *arg)
{
	struct sched_param sp = { .sched_priority = 0 };

	/* Background work: making a buffer may take as long as it must,
	 * but never the CPU the lanes and the producers need. SCHED_IDLE
	 * needs no privilege; if refused, the worker runs at normal
	 * priority. */
	pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
	ipc_loop_run(arg);
	ipc_loop_destroy(arg);
	return NULL;
}

int ctl_workers_start(struct ctl *ctl, unsigned n)
{
	ctl->workers = calloc(n ? n : 1, sizeof(*ctl->workers));
	ctl->worker_threads = calloc(n ? n : 1, sizeof(*ctl->worker_threads));
	if (!ctl->workers || !ctl->worker_threads)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		int rc = ipc_loop_create(&ctl->workers[i], NULL);

		if (rc < 0)
			return rc;
		rc = pthread_create(&ctl->worker_threads[i], NULL,
				    ctl_worker_main, ctl->workers[i]);
		if (rc != 0) {
			ipc_loop_destroy(ctl->workers[i]);
			return -rc;
		}
		ctl->nworkers = i + 1;
		svc_name_thread(ctl->worker_threads[i], "spn-ctl", i + 1);
	}
	return 0;
}

void ctl_workers_stop(struct ctl *ctl)
{
	/* A worker's loop runs its queued jobs before it is destroyed;
	 * their results reach thread 0, which is still running. */
	for (unsigned i = 0; i < ctl->nworkers; i++) {
		ipc_loop_stop(ctl->workers[i]);
		pthread_join(ctl->worker_threads[i], NULL);
	}
	ctl->nworkers = 0;
	free(ctl->workers);
	free(ctl->worker_threads);
	ctl->workers = NULL;
	ctl->worker_threads = NULL;
}
