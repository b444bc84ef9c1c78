/* SPDX-License-Identifier: MIT */
/*
 * The userspace VMM around the host's real /dev/kvm (pykvm/devkvm/): a KVM_RUN loop that
 * handles port I/O to devices registered in C without returning to Python, for
 * exit-heavy runs. Implemented in csrc/vmm/kvm_run_loop.c.
 *
 * Only pk_vmm_* names here: the simulated KVM's headers (include/linux/kvm.h) share the
 * cffi translation unit, so the real ABI stays private to the .c file.
 */
#ifndef _PYKVM_VMM_H
#define _PYKVM_VMM_H

#include <stdint.h>

/* cffi:begin */

#define PK_VMM_MAX_PORT_DEVS	16

/* Device kinds */
#define PK_VMM_DEV_SINK		1	/* OUT: counted, last value kept; IN: not handled */
#define PK_VMM_DEV_CONST	2	/* IN: returns `value`, counted; OUT: not handled */

/* Why pk_vmm_run_loop() stopped */
#define PK_VMM_STOP_EXIT	0	/* kvm_run holds an exit the caller must handle */
#define PK_VMM_STOP_BUDGET	1	/* max_exits port exits handled; nothing pending */

struct pk_vmm_port_dev {
	uint16_t port;
	uint8_t kind;
	uint64_t value;		/* CONST: what IN returns; SINK: the last value written */
	uint64_t count;		/* accesses handled (a string I/O counts each element) */
};

struct pk_vmm_devs {
	uint32_t nr;
	struct pk_vmm_port_dev dev[PK_VMM_MAX_PORT_DEVS];
};

struct pk_vmm_loop_result {
	uint64_t handled;	/* port exits handled in C during this call */
	int32_t error;		/* errno of a failed KVM_RUN, else 0 */
	uint32_t stop;		/* PK_VMM_STOP_* */
};

/*
 * pk_vmm_run_loop - KVM_RUN until an exit the registered devices do not handle
 * @vcpu_fd:   a vCPU fd from KVM_CREATE_VCPU
 * @run:       its mmap'd struct kvm_run
 * @devs:      port devices (may be NULL: then every exit returns)
 * @max_exits: stop after this many handled port exits (0 = no limit)
 * @res:       filled in on every return
 *
 * Returns 0, with res->stop saying why, or -errno if KVM_RUN failed (-EINTR included:
 * the caller decides whether a signal matters).
 */
int pk_vmm_run_loop(int vcpu_fd, void *run, struct pk_vmm_devs *devs, uint64_t max_exits,
		    struct pk_vmm_loop_result *res);

/* One KVM_RUN, nothing else: 0 or -errno (the C side of the round-trip benchmark). */
int pk_vmm_kvm_run(int vcpu_fd);
/* cffi:end */

#endif
