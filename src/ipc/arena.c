// SPDX-License-Identifier: Apache-2.0
// The per-loop decode arena (ipc_int.h): a bump allocator for protobuf-c
// that requests are unpacked into, reset once per frame. Requests larger
// than what is left fall back to malloc, and free() tells them apart by
// address. Loop thread only.
#include <stdlib.h>

#include "ipc/ipc_int.h"

static void *ipc_arena_alloc(void *data, size_t size)
{
	struct ipc_arena *a = data;
	size_t n = (size + 15u) & ~(size_t)15u;
	void *p;

	if (n < size || n > IPC_ARENA_SIZE - a->used) {
		a->fallbacks++;
		return malloc(size ? size : 1);
	}
	p = a->base + a->used;
	a->used += n;
	return p;
}

static void ipc_arena_release(void *data, void *p)
{
	struct ipc_arena *a = data;
	uint8_t *q = p;

	/* Arena memory goes at the reset; the fallbacks go now. */
	if (q < a->base || q >= a->base + IPC_ARENA_SIZE)
		free(p);
}

ProtobufCAllocator *ipc_arena_get(struct ipc_loop *loop)
{
	struct ipc_arena *a = loop->arena;

	if (!a) {
		a = calloc(1, sizeof(*a));
		if (!a)
			return NULL;
		a->base = malloc(IPC_ARENA_SIZE);
		if (!a->base) {
			free(a);
			return NULL;
		}
		a->alloc.alloc = ipc_arena_alloc;
		a->alloc.free = ipc_arena_release;
		a->alloc.allocator_data = a;
		loop->arena = a;
	}
	return &a->alloc;
}

size_t ipc_arena_mark(struct ipc_loop *loop)
{
	return loop->arena ? loop->arena->used : 0;
}

uint64_t ipc_arena_fallbacks(struct ipc_loop *loop)
{
	return loop->arena ? loop->arena->fallbacks : 0;
}

void ipc_arena_release_to(struct ipc_loop *loop, size_t mark)
{
	if (loop->arena && mark <= loop->arena->used)
		loop->arena->used = mark;
}

void ipc_arena_free(struct ipc_loop *loop)
{
	if (!loop->arena)
		return;
	free(loop->arena->base);
	free(loop->arena);
	loop->arena = NULL;
}
