/* SPDX-License-Identifier: MIT */
/*
 * Concurrency of the simulated host: a Machine is driven the way a VMM drives KVM, one
 * thread per vCPU (ARCHITECTURE.md "Threads and scale"), so its C code runs on several
 * threads at once. The rules (csrc/host/smp.c):
 *
 * - A pCPU runs one thing at a time. Host code runs on pCPU n only while its runqueue
 *   lock is held (pk_cpu_lock). Threads waiting for a pCPU get it in the order they
 *   asked (a ticket lock: the runqueue is FIFO), and keep it until they return to user
 *   mode, as a task keeps its CPU until it blocks or its time slice (the run's instruction
 *   budget) ends. Everything per CPU -- its registers, its decode cache, the host's
 *   per-cpu data, KVM's per-cpu state -- is touched only by the holder.
 * - A thread that holds a pCPU may take it again (a task the model runs inline there,
 *   such as another VM's vCPU thread whose KVM_RUN an injected preemption places on it):
 *   the lock counts, and is let go with the last unlock.
 * - A thread holds at most one pCPU as its own. Work on another pCPU goes through
 *   smp_call_function_single(), the IPI: run there at once if that pCPU is free, else
 *   queued and run by its holder at the next point it takes interrupts between two
 *   operations (when it gets or gives up the pCPU, or while it waits for one); the caller
 *   waits, taking the IPIs queued for its own pCPU meanwhile, so two CPUs calling each
 *   other cannot deadlock.
 * - Sleeping locks of the kernel (struct mutex: vcpu->mutex, kvm->lock, kvm_lock) are
 *   taken before any pCPU, never while holding one. The allocator's, the task list's and
 *   the oracle's locks are leaves.
 *
 * Locks live beside the machine (struct pk_locks, or malloc'd for a VM or vCPU), never in
 * its memory: a snapshot of the machine copies state, not locks.
 */
#ifndef _PYKVM_SMP_H
#define _PYKVM_SMP_H

#include "pykvm/machine.h"

/* A sleeping lock (kernel: struct mutex), allocated beside the object it guards. */
struct mutex;
struct mutex *mutex_create(void);
void mutex_destroy(struct mutex *lock);
void mutex_lock(struct mutex *lock);
void mutex_unlock(struct mutex *lock);

int pk_locks_init(struct pk_machine *m);
void pk_locks_free(struct pk_machine *m);

/* The runqueue of pCPU `cpu`: wait for it (FIFO) and make it this thread's CPU. */
void pk_cpu_lock(struct pk_machine *m, u32 cpu);
void pk_cpu_unlock(struct pk_machine *m, u32 cpu);
/* Whether this thread holds pCPU `cpu` of `m`. */
bool pk_cpu_held(const struct pk_machine *m, u32 cpu);

/* Run func(info) on pCPU `cpu` of this_machine() and wait for it (kernel/smp.c, wait=1). */
int smp_call_function_single(int cpu, void (*func)(void *info), void *info);
/* The same from a thread that holds no CPU yet (an ioctl's start), its work on `path`. */
int pk_smp_call_from_user(struct pk_machine *m, int cpu, void (*func)(void *info), void *info,
			  u32 path);

/* Machine-wide leaf locks and the kvm_lock mutex (kvm_main.c's VM list lock). */
void pk_kmem_lock(struct pk_machine *m);
void pk_kmem_unlock(struct pk_machine *m);
void pk_tasklist_lock(struct pk_machine *m);
void pk_tasklist_unlock(struct pk_machine *m);
void pk_oracle_lock(struct pk_machine *m);
void pk_oracle_unlock(struct pk_machine *m);
struct mutex *pk_kvm_lock(struct pk_machine *m);

#endif
