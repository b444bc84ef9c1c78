// SPDX-License-Identifier: MIT
/*
 * The userspace VMM loop for the simulated KVM: the same port devices as the /dev/kvm
 * loop (include/pykvm/vmm.h), so exit-heavy runs stay in C on both backends.
 */
#include "pykvm/kvm_api.h"
#include "pykvm/vmm.h"

static struct pk_vmm_port_dev *find_dev(struct pk_vmm_devs *devs, u16 port, u8 kind)
{
	if (!devs)
		return NULL;
	for (u32 i = 0; i < devs->nr && i < PK_VMM_MAX_PORT_DEVS; i++)
		if (devs->dev[i].port == port && devs->dev[i].kind == kind)
			return &devs->dev[i];
	return NULL;
}

/* Handle the IO exit in `run` with a registered device; false if none takes it. */
static bool handle_port(struct kvm_run *run, struct pk_vmm_devs *devs)
{
	struct pk_vmm_port_dev *d;
	u8 size = run->io.size;
	u64 v = 0;

	if (run->exit_reason != KVM_EXIT_IO || run->io.count != 1 || size > 8)
		return false;
	if (run->io.direction == KVM_EXIT_IO_OUT) {
		d = find_dev(devs, run->io.port, PK_VMM_DEV_SINK);
		if (!d)
			return false;
		memcpy(&v, run->pio_data, size);
		d->value = v;
	} else {
		d = find_dev(devs, run->io.port, PK_VMM_DEV_CONST);
		if (!d)
			return false;
		memcpy(run->pio_data, &d->value, size);
	}
	d->count++;
	return true;
}

/* KVM_RUN until an exit no device handles, or max_exits handled (0 = no limit). */
int pk_sim_run_loop(struct kvm_vcpu *vcpu, struct pk_vmm_devs *devs, u64 max_exits,
		    u64 max_insns, struct pk_vmm_loop_result *res)
{
	struct kvm_run *run = pk_vcpu_run_struct(vcpu);

	res->handled = 0;
	res->error = 0;
	res->stop = PK_VMM_STOP_EXIT;
	for (;;) {
		int r = pk_vcpu_run(vcpu, max_insns);

		if (r < 0 && r != -EINTR) {
			res->error = -r;
			return r;
		}
		if (!handle_port(run, devs))
			return 0;
		if (++res->handled == max_exits) {
			res->stop = PK_VMM_STOP_BUDGET;
			return 0;
		}
	}
}

u64 pk_sim_run_once(struct kvm_vcpu *vcpu, u64 max_insns, bool stay_in_kernel)
{
	const struct kvm_run *run = pk_vcpu_run_struct(vcpu);
	int r = pk_vcpu_run_ex(vcpu, max_insns, stay_in_kernel);
	u64 reason;

	if (r < 0 && r != -EINTR)	/* no exit: say why (pk_err's text stays for ensure()) */
		return PK_RUN_PACKED_FAILED | ((u64)(u32)-r << 32);
	reason = run->exit_reason < PK_RUN_PACKED_FAILED ? run->exit_reason
							 : PK_RUN_PACKED_REASON_MAX;
	if (reason != KVM_EXIT_IO)
		return reason;
	return reason | ((u64)(run->io.direction & 1) << 8) | ((u64)(run->io.size & 0xf) << 9) |
	       ((u64)run->io.port << 16) | ((u64)run->io.count << 32);
}
