// SPDX-License-Identifier: Apache-2.0
// A small trace_processor stand-in for the track-event tests: decodes TracePackets with the generated protobuf-c code and applies the reader rules of track-event.md (incremental state, interning, defaults, clock 64 snapshots, descriptors before counters), resolving each TrackEvent and flagging whatever TP would drop, skip or mis-import.
#ifndef SPN_SDK_TE_IMPORT_H
#define SPN_SDK_TE_IMPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IMP_MAX_ARGS 16
#define IMP_MAX_FLOWS 8
#define IMP_STR 128

/* One resolved debug annotation. */
struct imp_arg {
	char name[IMP_STR];	/* resolved name */
	int kind;		/* DebugAnnotation value case */
	int64_t i;		/* int_value */
	uint64_t u;		/* uint_value / pointer_value */
	double d;		/* double_value */
	bool b;			/* bool_value */
	char s[IMP_STR];	/* string_value */
};

/* One resolved TrackEvent. */
struct imp_ev {
	uint16_t wid;		/* sequence */
	uint64_t ts;		/* converted to BOOTTIME ns */
	int type;		/* TrackEvent.Type */
	uint64_t track;		/* effective track uuid */
	bool has_cat;		/* a category was given */
	char cat[IMP_STR];	/* resolved category */
	bool has_name;		/* a name was given */
	char name[IMP_STR];	/* resolved name */
	int nargs;		/* annotations */
	struct imp_arg args[IMP_MAX_ARGS];
	int nflows, ntflows;	/* flow ids, terminating flow ids */
	uint64_t flows[IMP_MAX_FLOWS], tflows[IMP_MAX_FLOWS];
	bool has_value, is_double; /* counter value */
	int64_t vi;
	double vd;
	uint32_t flags;		/* sequence_flags of its packet */
	bool explicit_clock;	/* the packet named its clock */
	uint32_t clock;		/* the clock its timestamp was on */
};

/* A described track (merged over every descriptor of its uuid). */
struct imp_track {
	uint64_t uuid, parent;
	bool has_parent;
	char name[IMP_STR];
	bool counter, thread, process;
	int unit;
	int64_t mult;
	int32_t pid;
	int64_t tid;
	char tname[IMP_STR];	/* thread_name */
	char pname[IMP_STR];	/* process_name */
	int ncmdline;		/* cmdline entries */
	int ndesc;		/* descriptors seen */
	uint64_t ts;		/* timestamp of the first descriptor (0: none) */
};

/* One interned table of a sequence (iid -> string). */
struct imp_tab {
	uint64_t *iid;
	char **s;
	size_t n, cap;
};

/* Reader state of one sequence. */
struct imp_seq {
	bool valid;		/* incremental state valid */
	uint64_t packets;	/* packets seen */
	uint64_t clears;	/* SEQ_INCREMENTAL_STATE_CLEARED packets */
	uint64_t firsts;	/* first_packet_on_sequence packets */
	uint32_t def_clock;	/* defaults timestamp_clock_id (0: none) */
	bool has_def_track;
	uint64_t def_track;	/* defaults track uuid */
	bool has_snap;		/* clock 64 defined by a snapshot */
	bool c64_inc;		/* clock 64 is incremental */
	uint64_t snap64, snapboot; /* its last pairing with BOOTTIME */
	uint64_t c64;		/* running clock 64 value (incremental) */
	struct imp_tab tab[4];	/* 1 categories, 2 names, 3 annotation names */
};

struct imp {
	struct imp_seq *seq;	/* by writer id (0..32767) */
	struct imp_ev *ev;	/* resolved events, file order */
	size_t nev, evcap;
	struct imp_track *tr;	/* described tracks */
	size_t ntr, trcap;
	uint64_t packets;	/* packets seen */
	uint64_t skipped;	/* NEEDS packets skipped while state invalid */
	uint64_t interned_skipped; /* interned_data ignored (state invalid) */
	uint64_t interned[4];	/* interned entries defined, per kind */
	uint64_t redundant;	/* entries defined again, same iid and string */
	uint64_t snapshots;	/* clock_snapshot packets */
	uint64_t descriptors;	/* track_descriptor packets */
	uint64_t losses;	/* packets saying previous_packet_dropped */
	uint64_t errors;	/* anything TP would reject or mis-import */
	char first_error[256];	/* the first of them */
};

void imp_init(struct imp *im);
void imp_fini(struct imp *im);
/* Feeds one packet of sequence wid (file order). */
void imp_packet(struct imp *im, uint16_t wid, const uint8_t *data, size_t len);
/* The track of uuid, or NULL. */
const struct imp_track *imp_track(const struct imp *im, uint64_t uuid);
/* The annotation `name` of ev, or NULL. */
const struct imp_arg *imp_arg(const struct imp_ev *ev, const char *name);

#endif
