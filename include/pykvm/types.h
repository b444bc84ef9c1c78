/* SPDX-License-Identifier: MIT */
/* Kernel-style integer types and helpers used across csrc/. */
#ifndef _PYKVM_TYPES_H
#define _PYKVM_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* cffi:begin */
typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int8_t s8;
typedef int16_t s16;
typedef int32_t s32;
typedef int64_t s64;
/* cffi:end */

#define BIT(n)		(1U << (n))
#define BIT_ULL(n)	(1ULL << (n))
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
#define likely(x)	__builtin_expect(!!(x), 1)
#define unlikely(x)	__builtin_expect(!!(x), 0)
#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))
/* A plain load or store another thread may race with (kernel: READ_ONCE/WRITE_ONCE). */
#define READ_ONCE(x)		__atomic_load_n(&(x), __ATOMIC_RELAXED)
#define WRITE_ONCE(x, v)	__atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

/* A 64-bit address is canonical when bits 63:47 all equal bit 47 (4-level paging). */
static inline bool is_noncanonical_address(u64 la)
{
	return (u64)((s64)(la << 16) >> 16) != la;
}

#endif
