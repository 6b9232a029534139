// SPDX-License-Identifier: Apache-2.0
// The track-event tests' trace_processor stand-in (see sdk_te_import.h): reader rules of track-event.md §3, §4, §5, §7.3 and §8 applied packet by packet.
#include "sdk_te_import.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace_packet.pb-c.h"

#define IMP_NSEQ 32768

__attribute__((format(printf, 2, 3)))
static void imp_err(struct imp *im, const char *fmt, ...)
{
	va_list ap;

	if (im->errors++ == 0) {
		va_start(ap, fmt);
		vsnprintf(im->first_error, sizeof(im->first_error), fmt, ap);
		va_end(ap);
	}
}

void imp_init(struct imp *im)
{
	memset(im, 0, sizeof(*im));
	im->seq = calloc(IMP_NSEQ, sizeof(*im->seq));
	if (!im->seq)
		abort();
}

static void tab_clear(struct imp_tab *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->s[i]);
	t->n = 0;
}

void imp_fini(struct imp *im)
{
	for (size_t i = 0; i < IMP_NSEQ; i++) {
		for (int k = 0; k < 4; k++) {
			tab_clear(&im->seq[i].tab[k]);
			free(im->seq[i].tab[k].iid);
			free(im->seq[i].tab[k].s);
		}
	}
	free(im->seq);
	free(im->ev);
	free(im->tr);
	memset(im, 0, sizeof(*im));
}

static const char *tab_get(const struct imp_tab *t, uint64_t iid)
{
	for (size_t i = t->n; i-- > 0;)
		if (t->iid[i] == iid)
			return t->s[i];
	return NULL;
}

/* Defines iid -> s in table k of seq (the rules of §7.2). */
static void tab_put(struct imp *im, struct imp_seq *sq, int k, bool has_iid, uint64_t iid,
		    const char *s, size_t len)
{
	struct imp_tab *t = &sq->tab[k];
	const char *old;

	if (!has_iid || iid == 0) {
		imp_err(im, "interned entry (kind %d) without an iid", k);
		return;
	}
	old = tab_get(t, iid);
	if (old) {
		if (strlen(old) != len || memcmp(old, s, len) != 0)
			imp_err(im, "iid %llu (kind %d) rebound from \"%s\" to \"%.*s\"",
				(unsigned long long)iid, k, old, (int)len, s);
		else
			im->redundant++;
		return;
	}
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 16;
		t->iid = realloc(t->iid, t->cap * sizeof(*t->iid));
		t->s = realloc(t->s, t->cap * sizeof(*t->s));
		if (!t->iid || !t->s)
			abort();
	}
	t->iid[t->n] = iid;
	t->s[t->n] = strndup(s, len);
	t->n++;
	im->interned[k]++;
}

static struct imp_track *imp_track_get(struct imp *im, uint64_t uuid)
{
	for (size_t i = 0; i < im->ntr; i++)
		if (im->tr[i].uuid == uuid)
			return &im->tr[i];
	if (im->ntr == im->trcap) {
		im->trcap = im->trcap ? im->trcap * 2 : 16;
		im->tr = realloc(im->tr, im->trcap * sizeof(*im->tr));
		if (!im->tr)
			abort();
	}
	memset(&im->tr[im->ntr], 0, sizeof(*im->tr));
	im->tr[im->ntr].uuid = uuid;
	return &im->tr[im->ntr++];
}

const struct imp_track *imp_track(const struct imp *im, uint64_t uuid)
{
	for (size_t i = 0; i < im->ntr; i++)
		if (im->tr[i].uuid == uuid && im->tr[i].ndesc)
			return &im->tr[i];
	return NULL;
}

const struct imp_arg *imp_arg(const struct imp_ev *ev, const char *name)
{
	for (int i = 0; i < ev->nargs; i++)
		if (strcmp(ev->args[i].name, name) == 0)
			return &ev->args[i];
	return NULL;
}

static void imp_descriptor(struct imp *im, const Perfetto__Protos__TrackDescriptor *d,
			   bool has_ts, uint64_t ts)
{
	struct imp_track *t, n = { 0 };

	if (!d->has_uuid) {
		imp_err(im, "track descriptor without uuid");
		return;
	}
	n.uuid = d->uuid;
	n.has_parent = d->has_parent_uuid;
	n.parent = d->parent_uuid;
	n.counter = d->counter != NULL;
	n.thread = d->thread != NULL;
	n.process = d->process != NULL;
	if (d->static_or_dynamic_name_case ==
	    PERFETTO__PROTOS__TRACK_DESCRIPTOR__STATIC_OR_DYNAMIC_NAME_NAME)
		snprintf(n.name, sizeof(n.name), "%s", d->name);
	if (d->counter) {
		n.unit = d->counter->has_unit ? (int)d->counter->unit : 0;
		n.mult = d->counter->has_unit_multiplier ? d->counter->unit_multiplier : 0;
	}
	if (d->thread) {
		if (!d->thread->has_pid || !d->thread->has_tid)
			imp_err(im, "thread descriptor without pid or tid");
		n.pid = d->thread->pid;
		n.tid = d->thread->tid;
		if (d->thread->thread_name)
			snprintf(n.tname, sizeof(n.tname), "%s", d->thread->thread_name);
	}
	if (d->process) {
		if (!d->process->has_pid)
			imp_err(im, "process descriptor without pid");
		n.pid = d->process->pid;
		n.ncmdline = (int)d->process->n_cmdline;
		if (d->process->process_name)
			snprintf(n.pname, sizeof(n.pname), "%s", d->process->process_name);
	}
	if (n.counter && (n.thread || n.process))
		imp_err(im, "counter track %llu also carries thread/process",
			(unsigned long long)n.uuid);
	if (n.has_parent && !imp_track(im, n.parent))
		imp_err(im, "track %llu described before its parent %llu",
			(unsigned long long)n.uuid, (unsigned long long)n.parent);
	t = imp_track_get(im, d->uuid);
	if (t->ndesc) {
		if (t->has_parent != n.has_parent || t->parent != n.parent ||
		    t->counter != n.counter || t->thread != n.thread || t->process != n.process ||
		    t->pid != n.pid || t->tid != n.tid || t->unit != n.unit || t->mult != n.mult)
			imp_err(im, "track %llu re-described with a different structure",
				(unsigned long long)n.uuid);
		n.ndesc = t->ndesc;
		n.ts = t->ts;
	}
	n.ndesc++;
	if (!n.ts && has_ts)
		n.ts = ts;
	*t = n;
}

static void imp_resolve_arg(struct imp *im, const struct imp_seq *sq,
			    const Perfetto__Protos__DebugAnnotation *a, struct imp_arg *o)
{
	const char *nm = NULL;

	memset(o, 0, sizeof(*o));
	if (a->name_field_case == PERFETTO__PROTOS__DEBUG_ANNOTATION__NAME_FIELD_NAME_IID) {
		nm = tab_get(&sq->tab[3], a->name_iid);
		if (!nm)
			imp_err(im, "unknown annotation name iid %llu",
				(unsigned long long)a->name_iid);
	} else if (a->name_field_case == PERFETTO__PROTOS__DEBUG_ANNOTATION__NAME_FIELD_NAME) {
		nm = a->name;
	} else {
		imp_err(im, "annotation without a name");
	}
	snprintf(o->name, sizeof(o->name), "%s", nm ? nm : "");
	o->kind = (int)a->value_case;
	switch (a->value_case) {
	case PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_BOOL_VALUE:
		o->b = a->bool_value;
		break;
	case PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_UINT_VALUE:
		o->u = a->uint_value;
		break;
	case PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_INT_VALUE:
		o->i = a->int_value;
		break;
	case PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_DOUBLE_VALUE:
		o->d = a->double_value;
		break;
	case PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_STRING_VALUE:
		snprintf(o->s, sizeof(o->s), "%s", a->string_value);
		break;
	case PERFETTO__PROTOS__DEBUG_ANNOTATION__VALUE_POINTER_VALUE:
		o->u = a->pointer_value;
		break;
	default:
		imp_err(im, "annotation \"%s\" with value case %d", o->name, (int)a->value_case);
	}
}

static void imp_event(struct imp *im, uint16_t wid, const struct imp_seq *sq,
		      const Perfetto__Protos__TrackEvent *e, uint64_t ts, uint32_t flags,
		      bool explicit_clock, uint32_t clock)
{
	struct imp_ev v = { 0 };

	v.wid = wid;
	v.ts = ts;
	v.flags = flags;
	v.explicit_clock = explicit_clock;
	v.clock = clock;
	if (!e->has_type || e->type == 0) {
		imp_err(im, "track event without a type");
		return;
	}
	v.type = (int)e->type;
	v.track = e->has_track_uuid ? e->track_uuid : sq->has_def_track ? sq->def_track : 0;
	if (e->n_category_iids + e->n_categories > 1)
		imp_err(im, "more than one category");
	if (e->n_category_iids) {
		const char *c = tab_get(&sq->tab[1], e->category_iids[0]);

		if (!c)
			imp_err(im, "unknown category iid %llu",
				(unsigned long long)e->category_iids[0]);
		v.has_cat = true;
		snprintf(v.cat, sizeof(v.cat), "%s", c ? c : "");
	} else if (e->n_categories) {
		v.has_cat = true;
		snprintf(v.cat, sizeof(v.cat), "%s", e->categories[0]);
	}
	if (e->name_field_case == PERFETTO__PROTOS__TRACK_EVENT__NAME_FIELD_NAME_IID) {
		const char *n = tab_get(&sq->tab[2], e->name_iid);

		if (!n)
			imp_err(im, "unknown name iid %llu", (unsigned long long)e->name_iid);
		v.has_name = true;
		snprintf(v.name, sizeof(v.name), "%s", n ? n : "");
	} else if (e->name_field_case == PERFETTO__PROTOS__TRACK_EVENT__NAME_FIELD_NAME) {
		v.has_name = true;
		snprintf(v.name, sizeof(v.name), "%s", e->name);
	}
	if (v.type == 2 && (v.has_name || v.has_cat))
		imp_err(im, "SLICE_END with a name or category");
	if (e->n_debug_annotations > IMP_MAX_ARGS)
		imp_err(im, "too many annotations");
	for (size_t i = 0; i < e->n_debug_annotations && i < IMP_MAX_ARGS; i++)
		imp_resolve_arg(im, sq, e->debug_annotations[i], &v.args[v.nargs++]);
	for (size_t i = 0; i < e->n_flow_ids && i < IMP_MAX_FLOWS; i++)
		v.flows[v.nflows++] = e->flow_ids[i];
	for (size_t i = 0; i < e->n_terminating_flow_ids && i < IMP_MAX_FLOWS; i++)
		v.tflows[v.ntflows++] = e->terminating_flow_ids[i];
	if (e->counter_value_field_case ==
	    PERFETTO__PROTOS__TRACK_EVENT__COUNTER_VALUE_FIELD_COUNTER_VALUE) {
		v.has_value = true;
		v.vi = e->counter_value;
	} else if (e->counter_value_field_case ==
		   PERFETTO__PROTOS__TRACK_EVENT__COUNTER_VALUE_FIELD_DOUBLE_COUNTER_VALUE) {
		v.has_value = v.is_double = true;
		v.vd = e->double_counter_value;
	}
	if (v.type == 4) {
		const struct imp_track *t = imp_track(im, v.track);

		if (!v.has_value)
			imp_err(im, "counter without a value");
		if (!t || !t->counter)
			imp_err(im, "counter on track %llu, not described as a counter earlier",
				(unsigned long long)v.track);
	} else {
		const struct imp_track *t = imp_track(im, v.track);

		if (v.has_value)
			imp_err(im, "counter value on a non-counter event");
		if (t && t->counter)
			imp_err(im, "slice event on counter track %llu", (unsigned long long)v.track);
	}
	if (im->nev == im->evcap) {
		im->evcap = im->evcap ? im->evcap * 2 : 64;
		im->ev = realloc(im->ev, im->evcap * sizeof(*im->ev));
		if (!im->ev)
			abort();
	}
	im->ev[im->nev++] = v;
}

/* Converts a packet timestamp; returns false when it cannot be. */
static bool imp_time(struct imp *im, struct imp_seq *sq, uint32_t clock, uint64_t ts,
		     uint64_t *out)
{
	if (clock == 0 || clock == 6) {
		*out = ts;
		return true;
	}
	if (clock != 64 || !sq->has_snap) {
		imp_err(im, "timestamp on clock %u with no snapshot path", clock);
		return false;
	}
	if (sq->c64_inc) {
		sq->c64 += ts;
		ts = sq->c64;
	}
	*out = sq->snapboot + (ts - sq->snap64);
	return true;
}

void imp_packet(struct imp *im, uint16_t wid, const uint8_t *data, size_t len)
{
	Perfetto__Protos__TracePacket *p =
		perfetto__protos__trace_packet__unpack(NULL, len, data);
	struct imp_seq *sq = &im->seq[wid % IMP_NSEQ];
	uint32_t flags, clock;
	uint64_t ts = 0;

	im->packets++;
	if (!p) {
		imp_err(im, "packet of %zu bytes on sequence %u does not decode", len, wid);
		return;
	}
	sq->packets++;
	if (p->optional_trusted_packet_sequence_id_case || p->optional_trusted_uid_case ||
	    p->has_trusted_pid || p->has_machine_id)
		imp_err(im, "a producer packet carries a field reserved for the service");
	if (p->has_first_packet_on_sequence && p->first_packet_on_sequence) {
		sq->firsts++;
		if (sq->packets != 1)
			imp_err(im, "first_packet_on_sequence on packet %llu of sequence %u",
				(unsigned long long)sq->packets, wid);
	}
	flags = p->has_sequence_flags ? p->sequence_flags : 0;
	if (p->has_incremental_state_cleared && p->incremental_state_cleared)
		flags |= 1;
	if (p->has_previous_packet_dropped && p->previous_packet_dropped)
		im->losses++;
	if (flags & 1) {
		sq->valid = true;
		sq->clears++;
		for (int k = 0; k < 4; k++)
			tab_clear(&sq->tab[k]);
		sq->def_clock = 0;
		sq->has_def_track = false;
		sq->has_snap = false;
	} else if (p->has_previous_packet_dropped && p->previous_packet_dropped) {
		sq->valid = false;
	}
	if (p->trace_packet_defaults && sq->valid) {
		Perfetto__Protos__TracePacketDefaults *d = p->trace_packet_defaults;

		sq->def_clock = d->has_timestamp_clock_id ? d->timestamp_clock_id : 0;
		sq->has_def_track = d->track_event_defaults && d->track_event_defaults->has_track_uuid;
		sq->def_track = sq->has_def_track ? d->track_event_defaults->track_uuid : 0;
	}
	if (p->interned_data) {
		Perfetto__Protos__InternedData *d = p->interned_data;

		if (!sq->valid) {
			im->interned_skipped++;
		} else {
			for (size_t i = 0; i < d->n_event_categories; i++)
				tab_put(im, sq, 1, d->event_categories[i]->has_iid,
					d->event_categories[i]->iid, d->event_categories[i]->name,
					strlen(d->event_categories[i]->name ? d->event_categories[i]->name : ""));
			for (size_t i = 0; i < d->n_event_names; i++)
				tab_put(im, sq, 2, d->event_names[i]->has_iid, d->event_names[i]->iid,
					d->event_names[i]->name,
					strlen(d->event_names[i]->name ? d->event_names[i]->name : ""));
			for (size_t i = 0; i < d->n_debug_annotation_names; i++)
				tab_put(im, sq, 3, d->debug_annotation_names[i]->has_iid,
					d->debug_annotation_names[i]->iid,
					d->debug_annotation_names[i]->name,
					strlen(d->debug_annotation_names[i]->name
						       ? d->debug_annotation_names[i]->name : ""));
		}
	}
	if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_CLOCK_SNAPSHOT) {
		Perfetto__Protos__ClockSnapshot *cs = p->clock_snapshot;
		bool has6 = false, has64 = false, inc = false;
		uint64_t v6 = 0, v64 = 0;

		im->snapshots++;
		for (size_t i = 0; i < cs->n_clocks; i++) {
			if (cs->clocks[i]->clock_id == 6) {
				has6 = true;
				v6 = cs->clocks[i]->timestamp;
			} else if (cs->clocks[i]->clock_id == 64) {
				has64 = true;
				v64 = cs->clocks[i]->timestamp;
				inc = cs->clocks[i]->has_is_incremental && cs->clocks[i]->is_incremental;
			}
		}
		if (has64 && !has6)
			imp_err(im, "clock 64 snapshot without BOOTTIME");
		if (has64 && sq->has_snap && v6 < sq->snapboot)
			imp_err(im, "snapshots go back in time");
		if (has64 && has6) {
			sq->has_snap = true;
			sq->snap64 = v64;
			sq->snapboot = v6;
			sq->c64_inc = inc;
			sq->c64 = v64;
		}
		goto out;
	}
	if ((flags & 2) && !sq->valid) {
		im->skipped++;
		goto out;
	}
	clock = p->has_timestamp_clock_id ? p->timestamp_clock_id : sq->def_clock;
	if (p->has_timestamp && !imp_time(im, sq, clock, p->timestamp, &ts))
		goto out;
	if (((p->has_timestamp && clock == 64) || p->interned_data) && !(flags & 2))
		imp_err(im, "packet depends on incremental state without NEEDS");
	if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACK_DESCRIPTOR) {
		im->descriptors++;
		imp_descriptor(im, p->track_descriptor, p->has_timestamp, ts);
	} else if (p->data_case == PERFETTO__PROTOS__TRACE_PACKET__DATA_TRACK_EVENT) {
		if (!p->has_timestamp)
			imp_err(im, "track event without a timestamp");
		imp_event(im, wid, sq, p->track_event, ts, flags, p->has_timestamp_clock_id, clock);
	}
out:
	perfetto__protos__trace_packet__free_unpacked(p, NULL);
}
