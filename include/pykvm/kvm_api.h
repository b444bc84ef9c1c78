/* SPDX-License-Identifier: MIT */
/*
 * The userspace face of the simulated KVM: what /dev/kvm ioctls are for the real one.
 * Each call runs as the calling vCPU thread entering the host kernel on its CPU and
 * returning to user mode (csrc/kvm/kvm_main.c).
 */
#ifndef _PYKVM_KVM_API_H
#define _PYKVM_KVM_API_H

#include "asm/kvm_host.h"

/* Load kvm.ko with a plugin's init ops (kvm_x86_vendor_init, its parameters). */
int pk_kvm_load_ops(struct pk_machine *m, const struct kvm_x86_init_ops *init_ops,
		    const char *params);

/* cffi:begin */
struct pk_regs {
	u64 gpr[NR_VCPU_GPRS];			/* x86 encoding order */
	u64 rip;
	u64 rflags;
};

struct pk_sregs {
	struct kvm_segment seg[NR_VCPU_SREGS];	/* VCPU_SREG_* order */
	struct desc_ptr gdt, idt;
	u64 cr0, cr2, cr3, cr4, efer, apic_base;
};

/* cffi:end */

/* The register ioctls, in x86.c as upstream (kvm_arch_vcpu_ioctl_*). */
int kvm_arch_vcpu_ioctl_get_regs(struct kvm_vcpu *vcpu, struct pk_regs *regs);
int kvm_arch_vcpu_ioctl_set_regs(struct kvm_vcpu *vcpu, const struct pk_regs *regs);
int kvm_arch_vcpu_ioctl_get_sregs(struct kvm_vcpu *vcpu, struct pk_sregs *sregs);
int kvm_arch_vcpu_ioctl_set_sregs(struct kvm_vcpu *vcpu, const struct pk_sregs *sregs);

/* cffi:begin */
/* Load kvm.ko with a built-in vendor module: "vmx" or "svm". */
int pk_kvm_load(struct pk_machine *m, const char *vendor, const char *params);
int pk_param_info(const char *module, int i, const char **owner, const char **name,
		  u32 *type, u64 *upstream, const char **doc);
const char *pk_kvm_vendor_name(struct pk_machine *m);
/* The loaded vendor has a hypervisor timer (kernel: kvm_can_use_hv_timer's set_hv_timer). */
int pk_kvm_has_hv_timer(struct pk_machine *m);

int pk_create_vm(struct pk_machine *m, struct kvm **out);
/* kvm_destroy_vm: frees the VM, its vCPUs (their threads exit) and their memory. */
void pk_destroy_vm(struct kvm *kvm);
int pk_vm_set_memslot(struct kvm *kvm, u32 slot, u64 gpa, u64 size, void *hva);
/* KVM_CREATE_VCPU with vCPU id `id` (< 0: the lowest free one), its thread on `cpu`. */
int pk_create_vcpu(struct kvm *kvm, int cpu, int id, struct kvm_vcpu **out);
int pk_vcpu_id(struct kvm_vcpu *vcpu);

int pk_vcpu_run(struct kvm_vcpu *vcpu, u64 max_insns);
int pk_vcpu_run_ex(struct kvm_vcpu *vcpu, u64 max_insns, bool stay_in_kernel);
int pk_vcpu_return_to_user(struct kvm_vcpu *vcpu);
int pk_vcpu_run_preempted(struct kvm_vcpu *vcpu, u64 max_insns, u32 n, bool *preempted);
/* A signal to the vCPU thread from another thread: its run ends at the next tick (EINTR). */
int pk_vcpu_kick(struct kvm_vcpu *vcpu);
/* The same with the preempting task chosen: PK_INJ_PREEMPT or PK_INJ_PREEMPT_KTHREAD. */
int pk_vcpu_run_preempted_by(struct kvm_vcpu *vcpu, u64 max_insns, u32 n, u32 kind,
			     bool *preempted);
/* KVM_RUN in which another task (user process or kworker) preempts at the first resched. */
int pk_vcpu_run_rescheduled(struct kvm_vcpu *vcpu, u64 max_insns, bool kthread,
			    bool *preempted);
/* Another vCPU kicks this one (KVM_HC_KICK_CPU) every `period_ns` (0: stop). */
int pk_vcpu_kick_every(struct kvm_vcpu *vcpu, u64 period_ns);
/* One such kick, `ns` from now. */
int pk_vcpu_kick_after(struct kvm_vcpu *vcpu, u64 ns);
u32 pk_vcpu_halt_poll_ns(struct kvm_vcpu *vcpu);
struct kvm_run *pk_vcpu_run_struct(struct kvm_vcpu *vcpu);
int pk_vcpu_task(struct kvm_vcpu *vcpu);
int pk_vcpu_get_msrs(struct kvm_vcpu *vcpu, struct kvm_msr_entry *entries, u32 n);
int pk_vcpu_set_msrs(struct kvm_vcpu *vcpu, struct kvm_msr_entry *entries, u32 n);
int pk_vcpu_get_regs(struct kvm_vcpu *vcpu, struct pk_regs *regs);
int pk_vcpu_set_regs(struct kvm_vcpu *vcpu, const struct pk_regs *regs);
int pk_vcpu_get_sregs(struct kvm_vcpu *vcpu, struct pk_sregs *sregs);
int pk_vcpu_set_sregs(struct kvm_vcpu *vcpu, const struct pk_sregs *sregs);
int pk_get_supported_cpuid(struct pk_machine *m, struct kvm_cpuid_entry2 *entries, int max);
int pk_vcpu_set_cpuid(struct kvm_vcpu *vcpu, const struct kvm_cpuid_entry2 *entries, int n);
int pk_vcpu_get_stat(struct kvm_vcpu *vcpu, struct kvm_vcpu_stat *stat);
int pk_vcpu_cpu(struct kvm_vcpu *vcpu);
/* Move the vCPU thread to another CPU (it is preempted and scheduled in there). */
int pk_vcpu_migrate(struct kvm_vcpu *vcpu, int cpu);

/*
 * Capabilities, MSR lists, MSR filters, the in-kernel irqchip, machine checks, ONE_REG
 * and MP state: the /dev/kvm, VM and vCPU ioctls of the same names. A list call takes
 * the room in *n and leaves the list's length there (-E2BIG if it did not fit).
 */
int pk_check_extension(struct pk_machine *m, long ext);
int pk_vm_check_extension(struct kvm *kvm, long ext);
int pk_get_msr_index_list(struct pk_machine *m, u32 *indices, u32 *n);
int pk_get_msr_feature_index_list(struct pk_machine *m, u32 *indices, u32 *n);
int pk_get_feature_msrs(struct pk_machine *m, struct kvm_msr_entry *entries, u32 n);
int pk_get_mce_cap_supported(struct pk_machine *m, u64 *cap);
int pk_vm_enable_cap(struct kvm *kvm, const struct kvm_enable_cap *cap);
int pk_vm_create_irqchip(struct kvm *kvm);
int pk_vm_set_msr_filter(struct kvm *kvm, const struct kvm_msr_filter *filter);
int pk_vcpu_setup_mce(struct kvm_vcpu *vcpu, u64 mcg_cap);
int pk_vcpu_get_one_reg(struct kvm_vcpu *vcpu, u64 id, u64 *val);
int pk_vcpu_set_one_reg(struct kvm_vcpu *vcpu, u64 id, u64 val);
int pk_vcpu_get_reg_list(struct kvm_vcpu *vcpu, u64 *n, u64 *regs);
int pk_vcpu_get_mp_state(struct kvm_vcpu *vcpu, struct kvm_mp_state *mp_state);
int pk_vcpu_set_mp_state(struct kvm_vcpu *vcpu, const struct kvm_mp_state *mp_state);
int pk_vcpu_get_cpuid(struct kvm_vcpu *vcpu, struct kvm_cpuid_entry2 *entries, int *n);

/* Cost counters and profile. */
struct pk_profile *pk_machine_profile(struct pk_machine *m);
void pk_machine_reset_costs(struct pk_machine *m);
/* Kernel memory in bytes: allocated, high-water mark, made usable, reserved. */
void pk_machine_kmem(const struct pk_machine *m, u64 *in_use, u64 *used, u64 *committed,
		     u64 *reserved);

/* Live CPU state, for checks (what a host task or the hardware sees now). */
int pk_cpu_read_msr(struct pk_machine *m, u32 cpu, u32 index, u64 *val);
int pk_host_per_cpu_offset(struct pk_machine *m, u32 cpu, u64 *offset);

int pk_kvm_disable_virtualization_cpu(struct pk_machine *m, u32 cpu);

/* csrc/arch/costs.c */
int pk_nr_ops(void);
int pk_nr_paths(void);
int pk_nr_msrs(void);			/* MSR-file slots */
int pk_nr_priced_msrs(void);		/* the slots, then priced MSRs without a slot */
const char *pk_op_name(int op);
const char *pk_path_name(int p);
const char *pk_msr_name(int s);
u32 pk_msr_index(int s);
u64 pk_cost_ops(const struct pk_machine *m, int path, int op);
u64 pk_cost_msr_ops(const struct pk_machine *m, int path, int write, int msr);
u64 pk_cost_cycles(const struct pk_machine *m, int path);
int pk_profile_set(struct pk_machine *m, int kind, int idx, u32 cycles);
u64 pk_machine_host_bugs(const struct pk_machine *m);
const char *pk_version(void);

/* csrc/vmm/sim_run_loop.c */
struct pk_vmm_devs;
struct pk_vmm_loop_result;
int pk_sim_run_loop(struct kvm_vcpu *vcpu, struct pk_vmm_devs *devs, u64 max_exits,
		    u64 max_insns, struct pk_vmm_loop_result *res);
/*
 * One KVM_RUN (pk_vcpu_run_ex) and the exit read back in the same call, packed in one
 * integer for the Python binding (one crossing instead of a field access each):
 *   bits 7:0 exit_reason (255: larger, read kvm_run), and for KVM_EXIT_IO bit 8 the
 *   direction, bits 12:9 the size, bits 31:16 the port, bits 63:32 the count.
 * A KVM_RUN that failed without an exit (an error other than -EINTR) gives
 * PK_RUN_PACKED_FAILED in bits 7:0 and the positive errno in bits 63:32.
 */
#define PK_RUN_PACKED_FAILED		254
#define PK_RUN_PACKED_REASON_MAX	255
u64 pk_sim_run_once(struct kvm_vcpu *vcpu, u64 max_insns, bool stay_in_kernel);
/* cffi:end */

#endif
