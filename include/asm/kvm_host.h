/* SPDX-License-Identifier: MIT */
/*
 * KVM's x86 data structures and the vendor ops table (kernel:
 * arch/x86/include/asm/kvm_host.h, include/linux/kvm_host.h), trimmed to what the
 * world switch uses. Every object here is allocated in the machine's kernel memory.
 */
#ifndef _ASM_X86_KVM_HOST_H
#define _ASM_X86_KVM_HOST_H

#include "pykvm/host.h"
#include "linux/kvm.h"
#include "pykvm/params.h"

struct kvm_vcpu;
struct kvm;

/* cffi:begin */
#define KVM_MAX_VCPUS			8
/* cffi:end */
#define KVM_MAX_CPUID_ENTRIES		32
#define KVM_MAX_NR_USER_RETURN_MSRS	16

#define EINTR	4
#define EINVAL	22
#define ENOMEM	12
#define EEXIST	17
#define EBUSY	16
#define EIO	5
#define ENOENT	2
#define E2BIG	7

/*
 * General-purpose registers plus RIP (kernel: enum kvm_reg), then the state a vendor
 * reads lazily from its VMCS and caches until the next VM-exit: bits in regs_avail only,
 * no slot in regs[] (kernel: VCPU_EXREG_*).
 */
enum kvm_reg {
	VCPU_REGS_RIP = NR_VCPU_GPRS,
	NR_VCPU_REGS,
	VCPU_EXREG_CR3 = NR_VCPU_REGS,
	VCPU_EXREG_RFLAGS,
	VCPU_EXREG_SEGMENTS,
	VCPU_EXREG_EXIT_INFO_1,
};

enum exit_fastpath_completion {
	EXIT_FASTPATH_NONE,
	EXIT_FASTPATH_REENTER_GUEST,
	EXIT_FASTPATH_EXIT_HANDLED,
	EXIT_FASTPATH_EXIT_USERSPACE,
};
typedef enum exit_fastpath_completion fastpath_t;

enum { OUTSIDE_GUEST_MODE, IN_GUEST_MODE };

/* Interrupt shadow, vendor-neutral (kernel: KVM_X86_SHADOW_INT_*). */
#define KVM_X86_SHADOW_INT_MOV_SS	1
#define KVM_X86_SHADOW_INT_STI		2

/* Return values of the MSR accessors (kernel: KVM_MSR_RET_*). */
#define KVM_MSR_RET_UNSUPPORTED	2

struct msr_data {
	bool host_initiated;
	u32 index;
	u64 data;
};

/* cffi:begin */
struct kvm_segment {
	u64 base;
	u32 limit;
	u16 selector;
	u8 type, present, dpl, db, s, l, g, avl;
	u8 unusable;
	u8 padding;
};
/* cffi:end */

/* cffi:begin */
struct desc_ptr {
	u16 size;
	u64 address;
};
/* cffi:end */

/* Per-CPU user-return state (kernel: struct kvm_user_return_msrs in x86.c). */
struct kvm_user_return_msrs {
	struct user_return_notifier urn;
	bool registered;
	struct kvm_user_return_msr_values {
		u64 host;
		u64 curr;
	} values[KVM_MAX_NR_USER_RETURN_MSRS];
};

struct kvm_queued_exception {
	bool pending;
	u8 vector;
	bool has_error_code;
	u32 error_code;
};

struct kvm_vcpu_arch {
	u64 regs[NR_VCPU_REGS];
	u32 regs_avail;
	u32 regs_dirty;
	u64 cr0, cr2, cr3, cr4;
	u64 efer;
	u64 pat;
	u64 ia32_misc_enable_msr;
	u64 tsc_deadline;			/* the LAPIC's TSC-deadline timer */
	u64 apic_base;
	struct kvm_queued_exception exception;

	struct kvm_cpuid_entry2 cpuid_entries[KVM_MAX_CPUID_ENTRIES];
	int cpuid_nent;
	/* Guest CPUID capabilities the switch depends on (kernel: guest_cpu_cap_has()). */
	bool cap_rdtscp, cap_rdpid, cap_lm, cap_spec_ctrl, cap_ssbd, cap_stibp, cap_ibpb,
	     cap_intel_compatible;

	/* PIO in flight between the exit and userspace completing it. */
	struct {
		u16 port;
		u8 size;
		u8 in;
		u32 count;
	} pio;
	u64 mmio_gpa;
	u32 mmio_len;
	bool mmio_read_pending;
	int (*complete_userspace_io)(struct kvm_vcpu *vcpu);
	u64 cui_linear_rip;			/* RIP of the exit being completed */

	int last_vmentry_cpu;
	u64 run_budget;				/* guest instructions before the run's signal */
	bool l1tf_flush_l1d;			/* flush L1D before the next VM-entry (L1TF) */

	u32 mp_state;				/* KVM_MP_STATE_* */
	/*
	 * The in-kernel LAPIC's TSC-deadline timer (kernel: struct kvm_timer in lapic.h;
	 * the deadline is tsc_deadline above), only as a wake-up source of a halted vCPU:
	 * the host hrtimer it runs on while the vCPU is blocked, and the expiries not yet
	 * delivered.
	 */
	struct {
		u32 pending;
		struct pk_hrtimer timer;
	} lapic_timer;
	struct {
		bool pv_unhalted;		/* kicked by another vCPU (KVM_HC_KICK_CPU) */
	} pv;
	struct pk_hrtimer kick_timer;		/* another vCPU's kicks (pk_vcpu_kick_every) */
	u64 kick_period;			/* TSC ticks between them */
};

/* cffi:begin */
struct kvm_vcpu_stat {
	u64 exits;
	u64 fastpath_exits;
	u64 userspace_exits;
	u64 io_exits;
	u64 mmio_exits;
	u64 halt_exits;
	u64 msr_exits;
	u64 cpuid_exits;
	u64 irq_exits;
	u64 preemptions;
	u64 migrations;
	u64 halt_successful_poll;		/* halts that ended while polling */
	u64 halt_attempted_poll;
	u64 halt_wakeup;			/* wake-ups of a vCPU blocked in kvm_vcpu_block */
};
/* cffi:end */

struct kvm_vcpu {
	struct kvm *kvm;
	int vcpu_id;
	int cpu;				/* CPU it is loaded on, or -1 */
	int mode;				/* IN_GUEST_MODE or OUTSIDE_GUEST_MODE */
	int task;				/* the host task that runs it */
	bool preempted;
	bool scheduled_out;
	bool ready;
	bool waiting;				/* in kvm_vcpu_block's rcuwait: wake_up wakes it */
	unsigned int halt_poll_ns;		/* this vCPU's current polling window */
	struct preempt_notifier preempt_notifier;
	struct kvm_vcpu_stat stat;
	struct kvm_vcpu_arch arch;
	struct kvm_run run;
};

#define KVM_IRQCHIP_NONE	0
#define KVM_IRQCHIP_KERNEL	1		/* KVM_CREATE_IRQCHIP: PIC, IOAPIC, LAPIC in kernel */

struct kvm_arch {
	int irqchip_mode;
};

struct kvm {
	struct pk_machine *m;
	struct kvm_arch arch;
	struct pk_memslots memslots;		/* EPT_POINTER / nested_cr3 point here */
	struct kvm_vcpu *vcpus[KVM_MAX_VCPUS];
	int nr_vcpus;
};

/*
 * The vendor ops (kernel: struct kvm_x86_ops). Bare function pointers, vCPU first;
 * the list and its optional members live in asm/kvm-x86-ops.h.
 */
struct kvm_x86_ops {
	const char *name;
	unsigned int vm_size;
	unsigned int vcpu_size;

	int (*enable_virtualization_cpu)(void);
	void (*disable_virtualization_cpu)(void);
	int (*vm_init)(struct kvm *kvm);
	int (*vcpu_create)(struct kvm_vcpu *vcpu);
	void (*vcpu_free)(struct kvm_vcpu *vcpu);
	void (*vcpu_reset)(struct kvm_vcpu *vcpu, bool init_event);
	void (*prepare_switch_to_guest)(struct kvm_vcpu *vcpu);
	void (*vcpu_load)(struct kvm_vcpu *vcpu, int cpu);
	void (*vcpu_put)(struct kvm_vcpu *vcpu);
	int (*get_msr)(struct kvm_vcpu *vcpu, struct msr_data *msr);
	int (*set_msr)(struct kvm_vcpu *vcpu, struct msr_data *msr);
	void (*get_segment)(struct kvm_vcpu *vcpu, struct kvm_segment *var, int seg);
	void (*set_segment)(struct kvm_vcpu *vcpu, struct kvm_segment *var, int seg);
	void (*get_idt)(struct kvm_vcpu *vcpu, struct desc_ptr *dt);
	void (*set_idt)(struct kvm_vcpu *vcpu, struct desc_ptr *dt);
	void (*get_gdt)(struct kvm_vcpu *vcpu, struct desc_ptr *dt);
	void (*set_gdt)(struct kvm_vcpu *vcpu, struct desc_ptr *dt);
	void (*set_cr0)(struct kvm_vcpu *vcpu, u64 cr0);
	void (*set_cr4)(struct kvm_vcpu *vcpu, u64 cr4);
	int (*set_efer)(struct kvm_vcpu *vcpu, u64 efer);
	u64 (*get_rflags)(struct kvm_vcpu *vcpu);
	void (*set_rflags)(struct kvm_vcpu *vcpu, u64 rflags);
	void (*cache_reg)(struct kvm_vcpu *vcpu, int reg);
	int (*vcpu_pre_run)(struct kvm_vcpu *vcpu);
	fastpath_t (*vcpu_run)(struct kvm_vcpu *vcpu, u64 run_flags);
	int (*handle_exit)(struct kvm_vcpu *vcpu, fastpath_t exit_fastpath);
	int (*skip_emulated_instruction)(struct kvm_vcpu *vcpu);
	void (*inject_exception)(struct kvm_vcpu *vcpu);
	void (*handle_exit_irqoff)(struct kvm_vcpu *vcpu);
	void (*get_exit_info)(struct kvm_vcpu *vcpu, u32 *reason, u64 *info1, u64 *info2);
	void (*vcpu_after_set_cpuid)(struct kvm_vcpu *vcpu);
	int (*get_cpl)(struct kvm_vcpu *vcpu);
	void (*get_cs_db_l_bits)(struct kvm_vcpu *vcpu, int *db, int *l);
	u32 (*get_interrupt_shadow)(struct kvm_vcpu *vcpu);
	void (*set_interrupt_shadow)(struct kvm_vcpu *vcpu, int mask);
	/* Arm the hypervisor timer for a TSC deadline (VMX preemption timer); NULL: none. */
	int (*set_hv_timer)(struct kvm_vcpu *vcpu, u64 guest_deadline_tsc);
};

/* Setup-time hooks (kernel: struct kvm_x86_init_ops). */
struct kvm_x86_init_ops {
	int (*hardware_setup)(void);
	void (*hardware_unsetup)(void);
	const struct kvm_x86_ops *runtime_ops;
	unsigned int global_size;		/* the vendor module's globals (in kmem) */
	/* The module whose parameters live at params_offset in the globals (its
	 * pk_module's name, "kvm_intel"; NULL: none). */
	const char *module;
	unsigned int params_offset;
};

/* kvm.* parameters (x86.c's, then kvm_main.c's halt polling). */
struct kvm_params {
	bool uret_irqs_off;
	bool lazy_fpu;
	bool forget_star, forget_lstar, forget_syscall_mask, forget_efer,
	     forget_tsc_aux, forget_tsx_ctrl;
	bool bug_uret_curr_stale;
	unsigned int halt_poll_ns;
};

/* x86.c's file-scope and per-CPU state, one per machine (allocated in kmem). */
struct kvm_x86_global {
	struct kvm_x86_ops ops;			/* kvm_x86_ops, after registration */
	u32 kvm_uret_msrs_list[KVM_MAX_NR_USER_RETURN_MSRS];
	int kvm_nr_uret_msrs;
	struct kvm_user_return_msrs user_return_msrs[PK_MAX_CPUS];	/* per CPU */
	struct kvm_vcpu *last_vcpu[PK_MAX_CPUS];			/* per CPU, for IBPB */
	bool virtualization_enabled[PK_MAX_CPUS];			/* per CPU */
	u64 host_efer;
	u64 host_arch_capabilities;
	struct kvm_params params;
};

static inline struct kvm_x86_global *kvm_global(void)
{
	return this_machine()->kvm_global;
}
#define kvm_x86_call(func) (kvm_global()->ops.func)

#define KVM_X86_OP(func)
#define KVM_X86_OP_OPTIONAL(func)
#include "asm/kvm-x86-ops.h"

/* ---- x86.c, used by the vendors ---- */
int kvm_x86_vendor_init(struct pk_machine *m, const struct kvm_x86_init_ops *ops,
			const char *params);
/* ---- kvm_main.c ---- */
int kvm_init(struct pk_machine *m);
int kvm_add_user_return_msr(u32 msr);
int kvm_find_user_return_msr(u32 msr);
int kvm_set_user_return_msr(unsigned int slot, u64 value, u64 mask);
bool kvm_is_supported_user_return_msr(u32 msr);
void kvm_user_return_msr_cpu_online(void);
void drop_user_return_notifiers(void);
int kvm_get_msr_common(struct kvm_vcpu *vcpu, struct msr_data *msr);
int kvm_set_msr_common(struct kvm_vcpu *vcpu, struct msr_data *msr);
int kvm_emulate_rdmsr(struct kvm_vcpu *vcpu);
int kvm_emulate_wrmsr(struct kvm_vcpu *vcpu);
int kvm_emulate_cpuid(struct kvm_vcpu *vcpu);
int kvm_emulate_halt(struct kvm_vcpu *vcpu);
int kvm_emulate_hypercall(struct kvm_vcpu *vcpu);
int kvm_fast_pio(struct kvm_vcpu *vcpu, int size, unsigned short port, int in);
int kvm_handle_mmio(struct kvm_vcpu *vcpu, const struct pk_guest_event *ev);
int kvm_skip_emulated_instruction(struct kvm_vcpu *vcpu);
void kvm_inject_gp(struct kvm_vcpu *vcpu, u32 error_code);
void kvm_queue_exception(struct kvm_vcpu *vcpu, u8 vector);
fastpath_t handle_fastpath_set_msr_irqoff(struct kvm_vcpu *vcpu);
int kvm_handle_unexpected_exit(struct kvm_vcpu *vcpu, u64 exit_reason);
int kvm_handle_triple_fault(struct kvm_vcpu *vcpu);
int kvm_handle_external_interrupt(struct kvm_vcpu *vcpu);
u64 kvm_host_spec_ctrl(void);	/* the host's SPEC_CTRL (x86_spec_ctrl_current) */
int kvm_get_msr(struct kvm_vcpu *vcpu, u32 index, u64 *data, bool host_initiated);
int kvm_set_msr(struct kvm_vcpu *vcpu, u32 index, u64 data, bool host_initiated);

static inline u64 kvm_register_read(struct kvm_vcpu *vcpu, int reg)
{
	if (!(vcpu->arch.regs_avail & BIT(reg)))
		kvm_x86_call(cache_reg)(vcpu, reg);
	return vcpu->arch.regs[reg];
}
static inline void kvm_register_write(struct kvm_vcpu *vcpu, int reg, u64 val)
{
	vcpu->arch.regs[reg] = val;
	vcpu->arch.regs_avail |= BIT(reg);
	vcpu->arch.regs_dirty |= BIT(reg);
}
static inline u64 kvm_rip_read(struct kvm_vcpu *vcpu) { return kvm_register_read(vcpu, VCPU_REGS_RIP); }
static inline void kvm_rip_write(struct kvm_vcpu *vcpu, u64 v) { kvm_register_write(vcpu, VCPU_REGS_RIP, v); }
static inline u64 kvm_rsp_read(struct kvm_vcpu *vcpu) { return kvm_register_read(vcpu, VCPU_REGS_RSP); }
static inline u64 kvm_rax_read(struct kvm_vcpu *vcpu) { return vcpu->arch.regs[VCPU_REGS_RAX]; }
static inline u64 kvm_rcx_read(struct kvm_vcpu *vcpu) { return vcpu->arch.regs[VCPU_REGS_RCX]; }
static inline u64 kvm_read_edx_eax(struct kvm_vcpu *vcpu)
{
	return (vcpu->arch.regs[VCPU_REGS_RAX] & 0xffffffffULL) |
	       ((vcpu->arch.regs[VCPU_REGS_RDX] & 0xffffffffULL) << 32);
}
static inline bool is_long_mode(struct kvm_vcpu *vcpu) { return vcpu->arch.efer & EFER_LMA; }
static inline bool is_paging(struct kvm_vcpu *vcpu) { return vcpu->arch.cr0 & X86_CR0_PG; }

/* kernel: is_64_bit_mode() (x86.h): long mode and a 64-bit code segment (CS.L). */
static inline bool is_64_bit_mode(struct kvm_vcpu *vcpu)
{
	int cs_db, cs_l;

	if (!is_long_mode(vcpu))
		return false;
	kvm_x86_call(get_cs_db_l_bits)(vcpu, &cs_db, &cs_l);
	return cs_l;
}

/* kernel: kvm_get_linear_rip(): CS base + RIP, the CS base being 0 in 64-bit mode. */
static inline u64 kvm_get_linear_rip(struct kvm_vcpu *vcpu)
{
	struct kvm_segment cs;

	if (is_64_bit_mode(vcpu))
		return kvm_rip_read(vcpu);
	kvm_x86_call(get_segment)(vcpu, &cs, VCPU_SREG_CS);
	return (u32)(cs.base + kvm_rip_read(vcpu));
}

static inline bool kvm_register_is_available(struct kvm_vcpu *vcpu, int reg)
{
	return vcpu->arch.regs_avail & BIT(reg);
}

static inline void kvm_register_mark_available(struct kvm_vcpu *vcpu, int reg)
{
	vcpu->arch.regs_avail |= BIT(reg);
}

/* kernel: kvm_read_cr3(): the guest's CR3, which the guest writes without exiting (EPT/NPT). */
static inline u64 kvm_read_cr3(struct kvm_vcpu *vcpu)
{
	if (!kvm_register_is_available(vcpu, VCPU_EXREG_CR3))
		kvm_x86_call(cache_reg)(vcpu, VCPU_EXREG_CR3);
	return vcpu->arch.cr3;
}

/* kernel: kvm_can_use_hv_timer() (lapic.c): the vendor has a hypervisor timer. */
static inline bool kvm_can_use_hv_timer(struct kvm_vcpu *vcpu)
{
	return kvm_x86_call(set_hv_timer) != NULL;
}

/* ---- lapic.c (the TSC-deadline timer only; kept in x86.c) ---- */
static inline bool lapic_in_kernel(struct kvm_vcpu *vcpu)
{
	return vcpu->kvm->arch.irqchip_mode != KVM_IRQCHIP_NONE;
}
void kvm_set_lapic_tscdeadline_msr(struct kvm_vcpu *vcpu, u64 data);
bool kvm_cpu_has_pending_timer(struct kvm_vcpu *vcpu);
bool kvm_arch_vcpu_runnable(struct kvm_vcpu *vcpu);
void kvm_pv_kick_timer_fn(struct pk_hrtimer *timer);
int kvm_arch_vm_ioctl_create_irqchip(struct kvm *kvm);

/* ---- kvm_main.c ---- */
void kvm_vcpu_halt(struct kvm_vcpu *vcpu);
bool kvm_vcpu_block(struct kvm_vcpu *vcpu);
bool kvm_vcpu_wake_up(struct kvm_vcpu *vcpu);
void kvm_vcpu_kick(struct kvm_vcpu *vcpu);
void vcpu_load(struct kvm_vcpu *vcpu);
void vcpu_put(struct kvm_vcpu *vcpu);
int kvm_arch_vcpu_ioctl_run(struct kvm_vcpu *vcpu);
void kvm_arch_vcpu_load(struct kvm_vcpu *vcpu, int cpu);
void kvm_arch_vcpu_put(struct kvm_vcpu *vcpu);

#endif
