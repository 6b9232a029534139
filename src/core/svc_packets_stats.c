// SPDX-License-Identifier: Apache-2.0
// The TraceStats builder of svc_packets.h: plain counters in, a
// Perfetto__Protos__TraceStats out (consumer-port.md §7), for GetTraceStats
// and the trace_stats packet alike.
#include "core/svc_packets.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "core/mem_hooks.h"

const int64_t svc_pkts_hist_def[SVC_PKTS_HIST_BOUNDS] = {
	8, 32, 128, 512, 1024, 2048, 4096, 8192, 12288, 16384,
};

/* Copies one buffer's counters into a BufferStats with every field set. */
static void svc_stats_fill_buffer(Perfetto__Protos__TraceStats__BufferStats *m,
				  const struct svc_stats_buffer *b)
{
#define SVC_STATS_SET(f)        \
	do {                    \
		m->has_##f = 1; \
		m->f = b->f;    \
	} while (0)
	perfetto__protos__trace_stats__buffer_stats__init(m);
	SVC_STATS_SET(buffer_size);
	SVC_STATS_SET(bytes_written);
	SVC_STATS_SET(bytes_overwritten);
	SVC_STATS_SET(bytes_read);
	SVC_STATS_SET(padding_bytes_written);
	SVC_STATS_SET(padding_bytes_cleared);
	SVC_STATS_SET(chunks_written);
	SVC_STATS_SET(chunks_rewritten);
	SVC_STATS_SET(chunks_overwritten);
	SVC_STATS_SET(chunks_discarded);
	SVC_STATS_SET(chunks_read);
	SVC_STATS_SET(chunks_committed_out_of_order);
	SVC_STATS_SET(write_wrap_count);
	SVC_STATS_SET(patches_succeeded);
	SVC_STATS_SET(patches_failed);
	SVC_STATS_SET(readaheads_succeeded);
	SVC_STATS_SET(readaheads_failed);
	SVC_STATS_SET(abi_violations);
	SVC_STATS_SET(trace_writer_packet_loss);
	if (b->chunks_relocated)
		SVC_STATS_SET(chunks_relocated);
#undef SVC_STATS_SET
}

/* The writer histograms (fields 17 and 18). Returns 0 or -ENOMEM. */
static int svc_stats_fill_writers(struct svc_trace_stats *ts,
				  const struct svc_stats_input *in)
{
	size_t nw = in->n_writers;

	memcpy(ts->hist_def, svc_pkts_hist_def, sizeof(ts->hist_def));
	ts->msg.n_chunk_payload_histogram_def = SVC_PKTS_HIST_BOUNDS;
	ts->msg.chunk_payload_histogram_def = ts->hist_def;
	if (nw == 0)
		return 0;
	if (nw > SIZE_MAX / (SVC_PKTS_HIST_BUCKETS * sizeof(uint64_t)))
		return -ENOMEM;
	ts->writers = svc_mem_calloc(nw, sizeof(*ts->writers));
	ts->writer_ptrs = svc_mem_calloc(nw, sizeof(*ts->writer_ptrs));
	ts->hist_counts = svc_mem_calloc(nw * SVC_PKTS_HIST_BUCKETS,
					 sizeof(*ts->hist_counts));
	ts->hist_sums = svc_mem_calloc(nw * SVC_PKTS_HIST_BUCKETS,
				       sizeof(*ts->hist_sums));
	if (!ts->writers || !ts->writer_ptrs || !ts->hist_counts ||
	    !ts->hist_sums)
		return -ENOMEM;
	for (size_t i = 0; i < nw; i++) {
		Perfetto__Protos__TraceStats__WriterStats *w = &ts->writers[i];
		uint64_t *c = ts->hist_counts + i * SVC_PKTS_HIST_BUCKETS;
		int64_t *s = ts->hist_sums + i * SVC_PKTS_HIST_BUCKETS;

		perfetto__protos__trace_stats__writer_stats__init(w);
		w->has_sequence_id = 1;
		w->sequence_id = in->writers[i].sequence_id;
		w->has_buffer = 1;
		w->buffer = in->writers[i].buffer;
		memcpy(c, in->writers[i].counts, sizeof(in->writers[i].counts));
		memcpy(s, in->writers[i].sums, sizeof(in->writers[i].sums));
		w->n_chunk_payload_histogram_counts = SVC_PKTS_HIST_BUCKETS;
		w->chunk_payload_histogram_counts = c;
		w->n_chunk_payload_histogram_sum = SVC_PKTS_HIST_BUCKETS;
		w->chunk_payload_histogram_sum = s;
		ts->writer_ptrs[i] = w;
	}
	ts->msg.n_writer_stats = nw;
	ts->msg.writer_stats = ts->writer_ptrs;
	return 0;
}

/* FilterStats (field 11). Returns 0 or -ENOMEM. */
static int svc_stats_fill_filter(struct svc_trace_stats *ts,
				 const struct svc_stats_filter *f)
{
	Perfetto__Protos__TraceStats__FilterStats *m = &ts->filter;

	perfetto__protos__trace_stats__filter_stats__init(m);
	m->has_input_packets = 1;
	m->input_packets = f->input_packets;
	m->has_input_bytes = 1;
	m->input_bytes = f->input_bytes;
	m->has_output_bytes = 1;
	m->output_bytes = f->output_bytes;
	m->has_errors = 1;
	m->errors = f->errors;
	m->has_time_taken_ns = 1;
	m->time_taken_ns = f->time_taken_ns;
	if (f->n_discarded > 0) {
		ts->filter_discarded = svc_mem_calloc(f->n_discarded,
						      sizeof(uint64_t));
		if (ts->filter_discarded == NULL)
			return -ENOMEM;
		memcpy(ts->filter_discarded, f->bytes_discarded_per_buffer,
		       f->n_discarded * sizeof(uint64_t));
		m->n_bytes_discarded_per_buffer = f->n_discarded;
		m->bytes_discarded_per_buffer = ts->filter_discarded;
	}
	ts->msg.filter_stats = m;
	return 0;
}

int svc_trace_stats_build(struct svc_trace_stats *ts,
			  const struct svc_stats_input *in)
{
	Perfetto__Protos__TraceStats *m;
	int rc;

	if (ts == NULL)
		return -EINVAL;
	memset(ts, 0, sizeof(*ts));
	perfetto__protos__trace_stats__init(&ts->msg);
	if (in == NULL || (in->buffers == NULL && in->n_buffers > 0) ||
	    (in->writers == NULL && in->n_writers > 0) ||
	    in->final_flush_outcome > 2 ||
	    (in->filter && in->filter->bytes_discarded_per_buffer == NULL &&
	     in->filter->n_discarded > 0))
		return -EINVAL;
	m = &ts->msg;
	if (in->n_buffers > 0) {
		ts->bufs = svc_mem_calloc(in->n_buffers, sizeof(*ts->bufs));
		ts->buf_ptrs = svc_mem_calloc(in->n_buffers,
					      sizeof(*ts->buf_ptrs));
		if (!ts->bufs || !ts->buf_ptrs)
			goto oom;
		for (size_t i = 0; i < in->n_buffers; i++) {
			svc_stats_fill_buffer(&ts->bufs[i], &in->buffers[i]);
			ts->buf_ptrs[i] = &ts->bufs[i];
		}
		m->n_buffer_stats = in->n_buffers;
		m->buffer_stats = ts->buf_ptrs;
	}
#define SVC_STATS_SET(f)         \
	do {                     \
		m->has_##f = 1;  \
		m->f = in->f;    \
	} while (0)
	SVC_STATS_SET(producers_connected);
	SVC_STATS_SET(producers_seen);
	SVC_STATS_SET(data_sources_registered);
	SVC_STATS_SET(data_sources_seen);
	SVC_STATS_SET(tracing_sessions);
	SVC_STATS_SET(total_buffers);
	SVC_STATS_SET(chunks_discarded);
	SVC_STATS_SET(patches_discarded);
	SVC_STATS_SET(invalid_packets);
	SVC_STATS_SET(flushes_requested);
	SVC_STATS_SET(flushes_succeeded);
	SVC_STATS_SET(flushes_failed);
#undef SVC_STATS_SET
	if (in->final_flush_outcome != 0) {
		m->has_final_flush_outcome = 1;
		m->final_flush_outcome =
			(Perfetto__Protos__TraceStats__FinalFlushOutcome)
				in->final_flush_outcome;
	}
	if (in->filter != NULL) {
		rc = svc_stats_fill_filter(ts, in->filter);
		if (rc < 0)
			goto oom;
	}
	if (in->histograms) {
		rc = svc_stats_fill_writers(ts, in);
		if (rc < 0)
			goto oom;
	}
	return 0;
oom:
	svc_trace_stats_release(ts);
	return -ENOMEM;
}

void svc_trace_stats_release(struct svc_trace_stats *ts)
{
	if (ts == NULL)
		return;
	svc_mem_free(ts->bufs);
	svc_mem_free(ts->buf_ptrs);
	svc_mem_free(ts->writers);
	svc_mem_free(ts->writer_ptrs);
	svc_mem_free(ts->hist_counts);
	svc_mem_free(ts->hist_sums);
	svc_mem_free(ts->filter_discarded);
	memset(ts, 0, sizeof(*ts));
	perfetto__protos__trace_stats__init(&ts->msg);
}
