// SPDX-License-Identifier: Apache-2.0
// Test harness for spindled integration tests: an in-process service on
// sockets in a temp dir, a raw-bytes producer (frames built by hand, so a
// test can send anything, hostile or not) and a consumer on Spindle's IPC
// client. Every call checks what it does and aborts on failure (cmocka
// reports the test as failed; the benchmarks that use it stop).
#ifndef SPN_TESTS_SVC_HARNESS_H
#define SPN_TESTS_SVC_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "consumer_port.pb-c.h"
#include "core/service.h"
#include "ipc/client.h"
#include "ipc/frame.h"
#include "producer_port.pb-c.h"
#include "spindle/smb_abi.h"

/* Prints where and what failed, then aborts. */
__attribute__((noreturn)) void th_fail(const char *file, int line,
				       const char *what);
#define TH_CHECK(cond)                                           \
	do {                                                     \
		if (!(cond))                                     \
			th_fail(__FILE__, __LINE__, #cond);      \
	} while (0)

/* ProducerPort method ids (ipc-wire.md §5). */
enum th_pmethod {
	TH_INIT = 1, TH_REG_DS = 2, TH_UNREG_DS = 3, TH_COMMIT = 4,
	TH_GET_ASYNC = 5, TH_REG_WRITER = 6, TH_UNREG_WRITER = 7,
	TH_DS_STARTED = 8, TH_DS_STOPPED = 9, TH_TRIGGERS = 10, TH_SYNC = 11,
};

/* A service under test. */
struct th_svc {
	char dir[64];		/* temp dir with the sockets */
	char psock[128];	/* producer socket */
	char csock[128];	/* consumer socket */
	struct svc *svc;	/* the service */
};

void th_svc_start(struct th_svc *t, unsigned lanes);	/* --control 1 */
void th_svc_start_ex(struct th_svc *t, unsigned lanes, unsigned control);
void th_svc_stop(struct th_svc *t);

#define TH_STASH 64	/* commands kept while waiting for a reply */

/* A raw producer connection. */
struct th_prod {
	int fd;			/* the socket */
	uint8_t *rx;		/* receive buffer (256 KiB) */
	size_t rx_len;		/* bytes in rx */
	uint64_t next_id;	/* next request id */
	uint64_t async_id;	/* request id of GetAsyncCommand */
	uint8_t *smb_base;	/* the SMB mapping, once set up */
	size_t smb_size;	/* its size */
	struct spn_smb smb;	/* ABI view of it */
	uint32_t target_buffer;	/* from the last setup_data_source */
	uint64_t instance;	/* from the last setup_data_source */
	uint64_t last_id;	/* instance of the last start/stop, or flush id */
	bool gone;		/* the service closed the connection */
	int pending_fd;		/* fd received, not yet taken by a frame */
	IpcFrame *stash[TH_STASH]; /* commands met while waiting for a reply */
	unsigned nstash;	/* entries in stash */
};

/* Options of th_prod_connect_ex. */
struct th_prod_opts {
	int provided_fd;		/* producer-provided SMB fd, or -1 */
	bool provided_flag;		/* set producer_provided_shmem */
	uint32_t page_hint;		/* shared_memory_page_size_hint_bytes */
	uint32_t size_hint;		/* shared_memory_size_hint_bytes */
	bool notify_start;		/* descriptor: will_notify_on_start */
	bool notify_stop;		/* descriptor: will_notify_on_stop */
	bool no_register;		/* don't register ds_name */
	bool clear_incr;		/* descriptor: handles_incremental_state_clear */
};

/* Connects, binds, initializes (name), opens the command stream and
 * registers data source ds_name. */
void th_prod_connect(struct th_prod *p, const struct th_svc *t,
		     const char *name, const char *ds_name);
/* The same with options; returns the InitializeConnectionResponse's
 * using_shmem_provided_by_producer, or -1 if the call was rejected. */
int th_prod_connect_ex(struct th_prod *p, const struct th_svc *t,
		       const char *name, const char *ds_name,
		       const struct th_prod_opts *o);
/* Registers one more data source; waits for the reply. */
void th_prod_register(struct th_prod *p, const char *ds_name,
		      const struct th_prod_opts *o);
/* Waits for the frame answering request id (NULL: connection closed);
 * free it with ipc_frame_free. Other frames are skipped. */
IpcFrame *th_prod_wait_reply(struct th_prod *p, uint64_t id);
/* Last command's instance id and cmd payload ids (stop/flush). */
uint64_t th_prod_last_id(const struct th_prod *p);
void th_prod_close(struct th_prod *p);
/* Sends InvokeMethod(method, msg); drop_reply as Perfetto's client does. */
uint64_t th_prod_invoke(struct th_prod *p, enum th_pmethod method,
			const ProtobufCMessage *msg, bool drop_reply);
/* Sends raw bytes. */
void th_prod_send(struct th_prod *p, const uint8_t *b, size_t n);
/* Waits for the next command; returns its cmd_case (maps the SMB on
 * setup_tracing, notes buffer and instance on setup_data_source). Returns
 * -1 when the service closed the connection. */
int th_prod_wait_cmd(struct th_prod *p);
/* Sync fence: every earlier frame has been processed. false when the
 * connection is gone. */
bool th_prod_fence(struct th_prod *p);

/* Page layout th_prod_write() partitions pages with (default Div4). */
extern uint32_t th_layout;

/*
 * Writes n packets (each a TracePacket with timestamp = first_ts + i,
 * and for_testing padding of pad bytes) into chunks of writer `writer`
 * starting at *chunk_id, completes them and commits them in one
 * CommitData to target_buffer. Uses pages [page0, page0 + pages). Returns
 * the packets written.
 */
unsigned th_prod_write(struct th_prod *p, uint16_t writer,
		       uint32_t *chunk_id, uint64_t first_ts, unsigned n,
		       unsigned pad, uint32_t page0, uint32_t pages);

/* A consumer. */
struct th_cons {
	struct ipc_sync *sync;	/* blocking client */
	struct ipc_proxy *port;	/* ConsumerPort */
	bool enable_done;	/* EnableTracing answered */
	int enable_status;	/* its status */
	char enable_error[256];	/* EnableTracingResponse.error */
	uint8_t *pkt;		/* packet being reassembled */
	size_t pkt_len;		/* its bytes */
	/* what ReadBuffers returned */
	size_t packets;		/* whole packets */
	size_t track_events;	/* packets with a track_event */
	uint64_t *ts;		/* timestamps of producer packets, read order */
	uint32_t *seq;		/* their trusted_packet_sequence_id */
	size_t nts;		/* entries in ts/seq */
	size_t dropped_marks;	/* packets with previous_packet_dropped */
	size_t compressed;	/* compressed_packets packets (their packets
				 * are counted above, as if read one by one) */
	size_t inflated_bytes;	/* bytes they inflated to */
	size_t top_packets;	/* packets ReadBuffers returned (a compressed
				 * one counts once here) */
	size_t read_bytes;	/* their bytes */
};

void th_cons_connect(struct th_cons *c, const struct th_svc *t);
void th_cons_close(struct th_cons *c);
/* EnableTracing (async) of a config with one buffer of size_kb and data
 * source ds_name. */
void th_cons_enable(struct th_cons *c, uint32_t size_kb, const char *ds_name);
/* A TraceConfig of one buffer of size_kb and data source ds_name, its
 * storage inline; set more of cfg before enabling it. */
struct th_cfg {
	Perfetto__Protos__TraceConfig cfg;		  /* the config */
	Perfetto__Protos__TraceConfig__BufferConfig buf; /* its buffer */
	Perfetto__Protos__TraceConfig__BufferConfig *bufs[1]; /* { &buf } */
	Perfetto__Protos__TraceConfig__DataSource ds;	  /* its data source */
	Perfetto__Protos__TraceConfig__DataSource *dss[1]; /* { &ds } */
	Perfetto__Protos__DataSourceConfig dsc;		  /* ds's config */
};

void th_cfg_init(struct th_cfg *t, uint32_t size_kb, const char *ds_name);
/* EnableTracing (async) of any config. */
void th_cons_enable_cfg(struct th_cons *c,
			const Perfetto__Protos__TraceConfig *cfg);
/* The same with an fd sent along (write_into_file), or -1. */
void th_cons_enable_cfg_fd(struct th_cons *c,
			   const Perfetto__Protos__TraceConfig *cfg, int fd);
/* Runs the consumer's loop until EnableTracing is answered (or ms). */
void th_cons_wait_enable(struct th_cons *c, int ms);
/* Unary call with an empty request; returns the status. */
int th_cons_call(struct th_cons *c, const char *method,
		 const ProtobufCMessageDescriptor *d);
/* ReadBuffers into the counters above. */
void th_cons_read(struct th_cons *c);
/* Counts the packets of a Trace-framed file d[0..n) into the counters
 * above, as th_cons_read would. */
void th_cons_count_trace(struct th_cons *c, const uint8_t *d, size_t n);

#endif
