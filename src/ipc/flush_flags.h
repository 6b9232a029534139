// SPDX-License-Identifier: Apache-2.0
// FlushFlags (spec/constants.md §7): the uint64 a consumer's FlushRequest and the service's Flush command to producers carry, four bits each for the reason, the initiator and the clone target.
#ifndef SPN_IPC_FLUSH_FLAGS_H
#define SPN_IPC_FLUSH_FLAGS_H

/* Reason, bits 0-3. */
#define SPN_FLUSH_REASON_MASK 0xFu
#define SPN_FLUSH_REASON_PERIODIC 1u
#define SPN_FLUSH_REASON_TRACE_STOP 2u	/* a final flush */
#define SPN_FLUSH_REASON_TRACE_CLONE 3u

/* Initiator, bits 4-7. */
#define SPN_FLUSH_INITIATOR_TRACED (1u << 4)
#define SPN_FLUSH_INITIATOR_PERFETTO_CLI (2u << 4)

/* Clone target, bits 8-11. */
#define SPN_FLUSH_CLONE_TARGET_BUGREPORT (1u << 8)

#endif
