// SPDX-License-Identifier: Apache-2.0
// spindle-loadgen's report: per-thread (or per-process) and total figures (events emitted and found, loss, ns/event percentiles from the timing samples, events/s, MB/s) as a table, and the same as JSON with the run's configuration, the service's and the producers' CPU time and the trace's own loss counters.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd/spindle_loadgen.h"

/* Rows printed per thread up to this many threads (else per process). */
#define LG_TABLE_THREADS 16u

static const char *const lg_kind_names[] = { "slice", "counter", "annotated", "raw" };

/* Figures of a group of threads. */
struct lg_row {
	uint64_t emitted;	/* events written */
	uint64_t found;		/* found in the trace */
	uint64_t lost;		/* emitted - found (0 when not checked) */
	uint64_t gaps;		/* holes in sequences */
	uint64_t misordered;	/* values out of order */
	uint64_t bytes;		/* bytes in the trace */
	uint64_t busy_ns;	/* time spent emitting */
	uint32_t seqs;		/* sequences */
	double p50, p99, p999;	/* ns per event (timed samples) */
	uint64_t nsamples;	/* samples behind them */
};

static int lg_u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* Value at quantile q of n sorted samples. */
static double lg_pct(const uint32_t *s, size_t n, double q)
{
	size_t i = (size_t)(q * (double)n);

	if (!n)
		return 0;
	return s[i >= n ? n - 1 : i];
}

/* Sums threads [a, b) into *w, with percentiles over their samples. */
static void lg_row_make(const struct lg_run *r, size_t a, size_t b, struct lg_row *w)
{
	const struct lg_shared *sh = r->sh;
	uint32_t *all;
	size_t n = 0;

	memset(w, 0, sizeof(*w));
	for (size_t i = a; i < b; i++) {
		const struct lg_thread *t = &sh->threads[i];

		w->emitted += t->emitted;
		w->found += t->found;
		w->gaps += t->gaps;
		w->misordered += t->misordered;
		w->bytes += t->bytes;
		w->busy_ns += t->busy_ns;
		w->seqs += t->seqs;
		w->nsamples += t->nsamples;
	}
	if (a == 0 && b == r->nthreads && r->checked) {
		/* Events of sequences no thread claimed still count. */
		w->found = r->tot.found;
		w->gaps = r->tot.gaps;
		w->misordered = r->tot.misordered;
		w->bytes = r->tot.bytes;
		w->seqs = (uint32_t)r->tot.sequences;
	}
	if (!r->checked && r->o->kind == LG_RAW)
		w->bytes = w->emitted * r->o->size;
	w->lost = r->checked && w->emitted > w->found ? w->emitted - w->found : 0;
	all = malloc((w->nsamples ? w->nsamples : 1) * sizeof(*all));
	if (!all)
		return;
	for (size_t i = a; i < b; i++) {
		memcpy(all + n, sh->samples + i * sh->sample_cap,
		       sh->threads[i].nsamples * sizeof(*all));
		n += sh->threads[i].nsamples;
	}
	qsort(all, n, sizeof(*all), lg_u32_cmp);
	w->p50 = lg_pct(all, n, 0.50);
	w->p99 = lg_pct(all, n, 0.99);
	w->p999 = lg_pct(all, n, 0.999);
	free(all);
}

static double lg_div(double a, double b)
{
	return b > 0 ? a / b : 0;
}

static void lg_row_print(const struct lg_run *r, FILE *f, const char *label,
			 const struct lg_row *w)
{
	char found[24] = "-", lost[24] = "-", mbs[24] = "-";

	if (r->checked) {
		snprintf(found, sizeof(found), "%llu", (unsigned long long)w->found);
		snprintf(lost, sizeof(lost), "%.3f", lg_div(100.0 * (double)w->lost,
							    (double)w->emitted));
	}
	if (r->checked || r->o->kind == LG_RAW)
		snprintf(mbs, sizeof(mbs), "%.1f", lg_div((double)w->bytes / 1e6, r->wall_s));
	fprintf(f, "%-12s %12llu %12s %8s %7.0f %7.0f %7.0f %7.1f %11.0f %8s\n", label,
		(unsigned long long)w->emitted, found, lost, w->p50, w->p99, w->p999,
		lg_div((double)w->busy_ns, (double)w->emitted),
		lg_div((double)w->emitted, r->wall_s), mbs);
}

void lg_report_table(const struct lg_run *r, FILE *f)
{
	const struct lg_opts *o = r->o;
	bool per_thread = o->per_thread || r->nthreads <= LG_TABLE_THREADS;
	struct lg_row w;
	char label[32], rate[48] = "flat out";

	if (o->rate)
		snprintf(rate, sizeof(rate), "%llu/s per thread", (unsigned long long)o->rate);
	fprintf(f, "spindle-loadgen: %u producer%s x %u thread%s, %s %s, %s, %.1f s%s\n",
		o->producers, o->producers == 1 ? "" : "s", o->threads,
		o->threads == 1 ? "" : "s", lg_kind_names[o->kind],
		o->kind == LG_RAW ? "packets" : "events", rate, r->wall_s,
		o->join ? " (joined a session)" : "");
	fprintf(f, "%-12s %12s %12s %8s %7s %7s %7s %7s %11s %8s\n", per_thread ? "thread" : "process",
		"emitted", "found", "loss%", "p50ns", "p99ns", "p999ns", "meanns", "events/s",
		"MB/s");
	for (size_t i = 0; per_thread && i < r->nthreads; i++) {
		snprintf(label, sizeof(label), "%u.%u", r->sh->threads[i].proc,
			 r->sh->threads[i].idx);
		lg_row_make(r, i, i + 1, &w);
		lg_row_print(r, f, label, &w);
	}
	for (unsigned p = 0; !per_thread && p < o->producers; p++) {
		snprintf(label, sizeof(label), "%u", p);
		lg_row_make(r, (size_t)p * o->threads, (size_t)(p + 1) * o->threads, &w);
		lg_row_print(r, f, label, &w);
	}
	lg_row_make(r, 0, r->nthreads, &w);
	lg_row_print(r, f, "total", &w);
	fprintf(f, "timing: %llu samples, the timer itself costs %.0f ns (included)\n",
		(unsigned long long)w.nsamples, r->timer_ns);
	if (r->checked)
		fprintf(f, "trace: %llu packets, %llu sequences, %llu lost, %llu gaps, "
			   "%llu out of order, %llu loss marks, %llu chunks overwritten, "
			   "%llu discarded, %llu bad packets\n",
			(unsigned long long)r->tot.packets, (unsigned long long)r->tot.sequences,
			(unsigned long long)w.lost, (unsigned long long)r->tot.gaps,
			(unsigned long long)r->tot.misordered,
			(unsigned long long)r->tot.loss_marks,
			(unsigned long long)r->tot.ts.chunks_overwritten,
			(unsigned long long)r->tot.ts.chunks_discarded,
			(unsigned long long)r->tot.bad_packets);
	fprintf(f, "producers: %llu packets dropped in the SDK (SMB full), %llu commits, "
		   "%.2f CPU s\n",
		(unsigned long long)r->sdk_dropped, (unsigned long long)r->commits, r->prod_cpu_s);
	if (r->has_svc_cpu)
		fprintf(f, "service: %.2f CPU s (%.0f%% of one core) while the run lasted, the read not included\n", r->svc_cpu_s,
			lg_div(100.0 * r->svc_cpu_s, r->wall_s));
}

uint64_t lg_report_lost(const struct lg_run *r)
{
	struct lg_row w;

	lg_row_make(r, 0, r->nthreads, &w);
	return w.lost + r->tot.misordered;
}

/* The figures of a row as JSON members. */
static void lg_row_json(const struct lg_run *r, FILE *f, const struct lg_row *w)
{
	fprintf(f, "\"emitted\": %llu, ", (unsigned long long)w->emitted);
	if (r->checked)
		fprintf(f, "\"found\": %llu, \"lost\": %llu, \"loss_pct\": %.4f, "
			   "\"gaps\": %llu, \"out_of_order\": %llu, \"sequences\": %u, ",
			(unsigned long long)w->found, (unsigned long long)w->lost,
			lg_div(100.0 * (double)w->lost, (double)w->emitted),
			(unsigned long long)w->gaps, (unsigned long long)w->misordered, w->seqs);
	else
		fprintf(f, "\"found\": null, \"lost\": null, \"loss_pct\": null, ");
	fprintf(f, "\"ns_p50\": %.0f, \"ns_p99\": %.0f, \"ns_p999\": %.0f, \"ns_mean\": %.1f, "
		   "\"samples\": %llu, \"events_per_s\": %.0f, ",
		w->p50, w->p99, w->p999, lg_div((double)w->busy_ns, (double)w->emitted),
		(unsigned long long)w->nsamples, lg_div((double)w->emitted, r->wall_s));
	if (r->checked || r->o->kind == LG_RAW)
		fprintf(f, "\"bytes\": %llu, \"mb_per_s\": %.2f", (unsigned long long)w->bytes,
			lg_div((double)w->bytes / 1e6, r->wall_s));
	else
		fprintf(f, "\"bytes\": null, \"mb_per_s\": null");
}

int lg_report_json(const struct lg_run *r, const char *path)
{
	const struct lg_opts *o = r->o;
	bool is_stdout = !strcmp(path, "-");
	FILE *f = is_stdout ? stdout : fopen(path, "w");
	struct lg_row w;
	int rc = 0;

	if (!f)
		return -errno;
	fprintf(f, "{\n  \"tool\": \"spindle-loadgen\",\n  \"cores\": %ld,\n  \"unix_time\": %ld,\n",
		sysconf(_SC_NPROCESSORS_ONLN), (long)time(NULL));
	fprintf(f, "  \"config\": {\"producers\": %u, \"threads\": %u, \"kind\": \"%s\", "
		   "\"size\": %u, \"rate_per_thread\": %llu, \"flat_out\": %s, "
		   "\"duration_s\": %.3f, \"smb_kb\": %u, \"page_kb\": %u, \"buffer_kb\": %u, "
		   "\"join\": %s},\n",
		o->producers, o->threads, lg_kind_names[o->kind], o->kind == LG_RAW ? o->size : 0,
		(unsigned long long)o->rate, o->rate ? "false" : "true", o->duration_ms / 1000.0,
		o->smb_kb, o->page_kb, o->join ? 0 : o->buffer_kb, o->join ? "true" : "false");
	lg_row_make(r, 0, r->nthreads, &w);
	fprintf(f, "  \"total\": {");
	lg_row_json(r, f, &w);
	fprintf(f, ", \"all_found_in_order\": %s, \"timer_ns\": %.1f, \"sdk_dropped\": %llu, "
		   "\"commits\": %llu, \"producer_cpu_s\": %.3f",
		r->checked ? (w.lost == 0 && w.misordered == 0 ? "true" : "false") : "null",
		r->timer_ns, (unsigned long long)r->sdk_dropped, (unsigned long long)r->commits,
		r->prod_cpu_s);
	if (r->has_svc_cpu)
		fprintf(f, ", \"service_cpu_s\": %.3f, \"service_cpu_pct\": %.1f", r->svc_cpu_s,
			lg_div(100.0 * r->svc_cpu_s, r->wall_s));
	else
		fprintf(f, ", \"service_cpu_s\": null, \"service_cpu_pct\": null");
	if (r->checked)
		fprintf(f, ", \"packets\": %llu, \"unattributed\": %llu, \"loss_marks\": %llu, "
			   "\"bad_packets\": %llu, \"chunks_overwritten\": %llu, "
			   "\"chunks_discarded\": %llu, \"abi_violations\": %llu",
			(unsigned long long)r->tot.packets, (unsigned long long)r->tot.unattributed,
			(unsigned long long)r->tot.loss_marks, (unsigned long long)r->tot.bad_packets,
			(unsigned long long)r->tot.ts.chunks_overwritten,
			(unsigned long long)r->tot.ts.chunks_discarded,
			(unsigned long long)r->tot.ts.abi_violations);
	fprintf(f, "},\n  \"threads\": [");
	for (size_t i = 0; i < r->nthreads; i++) {
		const struct lg_thread *t = &r->sh->threads[i];

		lg_row_make(r, i, i + 1, &w);
		fprintf(f, "%s\n    {\"process\": %u, \"thread\": %u, \"tid\": %d, ", i ? "," : "",
			t->proc, t->idx, t->tid);
		lg_row_json(r, f, &w);
		fputc('}', f);
	}
	fprintf(f, "\n  ]\n}\n");
	if (ferror(f))
		rc = -EIO;
	if (!is_stdout && fclose(f) != 0)
		rc = -EIO;
	return rc;
}
