// SPDX-License-Identifier: MIT
/*
 * A userspace VMM's inner loop on the host's real /dev/kvm: KVM_RUN, and port I/O to
 * devices registered here is answered without going back to Python (the shape of
 * kvmtool's kvm_cpu__start() loop / the selftests' vcpu_run()).
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/ioctl.h>

#include "pykvm/vmm.h"

/*
 * The real struct kvm_run (include/uapi/linux/kvm.h), as far as this loop reads it.
 * Declared here rather than taken from <linux/kvm.h>: include/linux/kvm.h is the
 * simulated KVM's trimmed copy and shadows the system header on our include path.
 * The layout is ABI; the asserts pin the offsets CONFORMANCE.md lists.
 */
#define KVMIO			0xAE
#define KVM_RUN			_IO(KVMIO, 0x80)
#define KVM_EXIT_IO		2
#define KVM_EXIT_IO_IN		0
#define KVM_EXIT_IO_OUT		1

struct vmm_kvm_run {
	uint8_t request_interrupt_window;
	uint8_t immediate_exit;
	uint8_t padding1[6];
	uint32_t exit_reason;
	uint8_t ready_for_interrupt_injection;
	uint8_t if_flag;
	uint16_t flags;
	uint64_t cr8;
	uint64_t apic_base;
	union {
		struct {
			uint8_t direction;
			uint8_t size;
			uint16_t port;
			uint32_t count;
			uint64_t data_offset;	/* from the start of struct kvm_run */
		} io;
		char padding[256];
	};
};

_Static_assert(__builtin_offsetof(struct vmm_kvm_run, exit_reason) == 8, "kvm_run ABI");
_Static_assert(__builtin_offsetof(struct vmm_kvm_run, io.direction) == 32, "kvm_run ABI");
_Static_assert(__builtin_offsetof(struct vmm_kvm_run, io.port) == 34, "kvm_run ABI");
_Static_assert(__builtin_offsetof(struct vmm_kvm_run, io.count) == 36, "kvm_run ABI");
_Static_assert(__builtin_offsetof(struct vmm_kvm_run, io.data_offset) == 40, "kvm_run ABI");

static struct pk_vmm_port_dev *find_port_dev(struct pk_vmm_devs *devs, uint16_t port)
{
	uint32_t i, nr;

	if (!devs)
		return NULL;
	nr = devs->nr < PK_VMM_MAX_PORT_DEVS ? devs->nr : PK_VMM_MAX_PORT_DEVS;
	for (i = 0; i < nr; i++)
		if (devs->dev[i].port == port)
			return &devs->dev[i];
	return NULL;
}

/* Returns true if a device took the exit (data answered in place for an IN). */
static bool handle_io(struct vmm_kvm_run *run, struct pk_vmm_devs *devs)
{
	struct pk_vmm_port_dev *dev = find_port_dev(devs, run->io.port);
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	uint32_t size = run->io.size, count = run->io.count, i;
	uint64_t val = 0;

	if (!dev || (size != 1 && size != 2 && size != 4))
		return false;

	switch (dev->kind) {
	case PK_VMM_DEV_SINK:
		if (run->io.direction != KVM_EXIT_IO_OUT)
			return false;
		for (i = 0; i < count; i++)
			memcpy(&val, data + (size_t)i * size, size);	/* x86: little-endian */
		dev->value = val;
		dev->count += count;
		return true;
	case PK_VMM_DEV_CONST:
		if (run->io.direction != KVM_EXIT_IO_IN)
			return false;
		for (i = 0; i < count; i++)
			memcpy(data + (size_t)i * size, &dev->value, size);
		dev->count += count;
		return true;
	default:
		return false;
	}
}

int pk_vmm_kvm_run(int vcpu_fd)
{
	return ioctl(vcpu_fd, KVM_RUN, 0) < 0 ? -errno : 0;
}

int pk_vmm_run_loop(int vcpu_fd, void *run_page, struct pk_vmm_devs *devs, uint64_t max_exits,
		    struct pk_vmm_loop_result *res)
{
	struct vmm_kvm_run *run = run_page;

	res->handled = 0;
	res->error = 0;
	res->stop = PK_VMM_STOP_EXIT;
	for (;;) {
		if (ioctl(vcpu_fd, KVM_RUN, 0) < 0) {
			res->error = errno;
			return -res->error;
		}
		if (run->exit_reason != KVM_EXIT_IO || !handle_io(run, devs))
			return 0;
		/*
		 * Budget checked after handling, never before entering: a stop leaves no
		 * exit half-done in kvm_run, so the next KVM_RUN (from C or Python) simply
		 * resumes the guest.
		 */
		if (++res->handled == max_exits) {
			res->stop = PK_VMM_STOP_BUDGET;
			return 0;
		}
	}
}
