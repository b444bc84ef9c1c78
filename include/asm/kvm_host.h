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

/*
 * Limits as upstream (arch/x86/include/asm/kvm_host.h): KVM_MAX_VCPUS is
 * CONFIG_KVM_MAX_NR_VCPUS (1024 by default, 4096 with MAXSMP); vCPU ids may be up to
 * KVM_VCPU_ID_RATIO times larger, because an x86 vCPU id is an APIC ID and APIC IDs
 * encode topology. KVM_SET_CPUID2 takes at most KVM_MAX_CPUID_ENTRIES (cpuid.h).
 */
/* cffi:begin */
#define KVM_MAX_VCPUS			1024
/* cffi:end */
#define KVM_VCPU_ID_RATIO		4
#define KVM_MAX_VCPU_IDS		(KVM_MAX_VCPUS * KVM_VCPU_ID_RATIO)
#define KVM_MAX_CPUID_ENTRIES		256
#define KVM_MAX_NR_USER_RETURN_MSRS	16
#define KVM_MAX_MCE_BANKS		32	/* 0x400..0x47f: 0x480 starts the VMX MSRs */
/* Supported by KVM on every vendor; the vendor adds its own (kvm_caps.supported_mce_cap). */
#define KVM_MCE_CAP_SUPPORTED		(MCG_CTL_P | MCG_SER_P)
/* MAX_IO_MSRS (x86.c): KVM_GET/SET_MSRS refuse this many entries or more with E2BIG. */
#define MAX_IO_MSRS			256

#define EINTR	4
#define EINVAL	22
#define ENOMEM	12
#define EEXIST	17
#define EBUSY	16
#define EIO	5
#define ENOENT	2
#define E2BIG	7
#define ENXIO	6
#define EFAULT	14
#define ENOTTY	25
#define EAGAIN	11
#define EOPNOTSUPP	95

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

/*
 * Return values of the MSR accessors (kernel: KVM_MSR_RET_*): 0 success, 1 an invalid
 * access (#GP), UNSUPPORTED an MSR KVM does not know, FILTERED denied by the VM's MSR
 * filter. They decide the reason of a userspace MSR exit (kvm_msr_reason()).
 */
#define KVM_MSR_RET_UNSUPPORTED	2
#define KVM_MSR_RET_FILTERED	3

/* vcpu->requests bits (kernel: KVM_REQ_*). */
#define KVM_REQ_RECALC_INTERCEPTS	0	/* MSR intercepts must follow a new MSR filter */
#define KVM_REQ_MIGRATE_TIMER		1	/* the vCPU moved: its hrtimer-based timer too */

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

/*
 * The CPUID words KVM tracks as features (kernel: the NR_KVM_CPU_CAPS words of
 * reverse_cpuid.h); X86_FEATURE_* in csrc/kvm/cpuid.h index them as word * 32 + bit.
 */
enum kvm_cpuid_word {
	CPUID_1_EDX,
	CPUID_1_ECX,
	CPUID_7_0_EBX,
	CPUID_7_ECX,
	CPUID_7_EDX,
	CPUID_8000_0001_ECX,
	CPUID_8000_0001_EDX,
	CPUID_8000_0008_EBX,
	CPUID_7_1_EAX,
	NR_KVM_CPU_CAPS,
};

struct kvm_lapic;

struct kvm_vcpu_arch {
	u64 regs[NR_VCPU_REGS];
	u32 regs_avail;
	u32 regs_dirty;
	u64 cr0, cr2, cr3, cr4;
	u64 efer;
	u64 pat;
	u64 ia32_misc_enable_msr;
	u64 apic_base;
	struct kvm_queued_exception exception;

	struct kvm_cpuid_entry2 *cpuid_entries;	/* cpuid_nent of them, in kmem */
	int cpuid_nent;
	u64 cr4_guest_rsvd_bits;		/* CR4 bits the guest's CPUID does not allow */
	u64 reserved_gpa_bits;			/* bits above the guest's MAXPHYADDR */
	/* Guest CPUID capabilities the switch depends on (kernel: guest_cpu_cap_has()). */
	bool cap_rdtscp, cap_rdpid, cap_lm, cap_spec_ctrl, cap_ssbd, cap_stibp, cap_ibpb,
	     cap_intel_compatible;
	/* What the guest may use: KVM's support ANDed with its CPUID (guest_cpu_cap_has()). */
	u32 cpu_caps[NR_KVM_CPU_CAPS];

	/* The in-kernel local APIC (lapic.c), or NULL without an in-kernel irqchip. */
	struct kvm_lapic *apic;
	u32 mp_state;				/* KVM_MP_STATE_* */

	/* Machine-check banks (x86.c set_msr_mce/get_msr_mce, KVM_X86_SETUP_MCE). */
	u64 mcg_cap;
	u64 mcg_status;
	u64 mcg_ctl;
	u64 mce_banks[KVM_MAX_MCE_BANKS * 4];	/* CTL, STATUS, ADDR, MISC per bank */
	u64 mci_ctl2_banks[KVM_MAX_MCE_BANKS];
	u64 msr_hwcr;				/* AMD HWCR: McStatusWrEn lets STATUS take data */

	u64 msr_ia32_power_ctl;
	u64 microcode_version;
	u64 msr_platform_info;

	/* PIO in flight between the exit and userspace completing it. */
	struct {
		u16 port;
		u8 size;
		u8 in;
		u32 count;
	} pio;
	u64 mmio_gpa;
	u64 mmio_data;				/* the read's value, from userspace or the LAPIC */
	u32 mmio_len;
	bool mmio_read_pending;
	int (*complete_userspace_io)(struct kvm_vcpu *vcpu);
	u64 cui_linear_rip;			/* RIP of the exit being completed */

	int last_vmentry_cpu;
	u64 run_budget;				/* guest instructions before the run's signal */
	bool l1tf_flush_l1d;			/* flush L1D before the next VM-entry (L1TF) */

	struct {
		bool pv_unhalted;		/* kicked by another vCPU (KVM_HC_KICK_CPU) */
	} pv;
	/*
	 * Not KVM's: the model's stand-in for another vCPU, on a pCPU not simulated, that
	 * sends this one KVM_HC_KICK_CPU (pk_vcpu_kick_every/after).
	 */
	struct pk_hrtimer kick_timer;
	u64 kick_period;			/* TSC ticks between kicks (0: one kick) */
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
	u64 requests;				/* KVM_REQ_* bits, handled before VM-entry */
	struct mutex *mutex;			/* vcpu->mutex: one ioctl at a time (beside kmem) */
	int vcpu_id;				/* what userspace named it (its APIC ID) */
	int vcpu_idx;				/* its index in kvm->vcpus */
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

/* A VM's MSR filter (kernel: struct kvm_x86_msr_filter, x86.c). */
struct msr_bitmap_range {
	u32 flags;
	u32 nmsrs;
	u32 base;
	u8 bitmap[KVM_MSR_FILTER_MAX_BITMAP_SIZE];
};

struct kvm_x86_msr_filter {
	u8 count;
	bool default_allow;
	struct msr_bitmap_range ranges[KVM_MSR_FILTER_MAX_RANGES];
};

enum kvm_irqchip_mode {
	KVM_IRQCHIP_NONE,
	KVM_IRQCHIP_KERNEL,			/* KVM_CREATE_IRQCHIP */
	KVM_IRQCHIP_SPLIT,			/* KVM_CAP_SPLIT_IRQCHIP: only the LAPIC in KVM */
};

struct kvm_arch {
	enum kvm_irqchip_mode irqchip_mode;
	u32 bsp_vcpu_id;
	u32 user_space_msr_mask;		/* KVM_MSR_EXIT_REASON_* that exit to userspace */
	bool guest_can_read_msr_platform_info;
	/*
	 * The filter in force, or NULL. Filters are built in the buffer not in force and
	 * then swapped in (kernel: RCU replace), both allocated on the first
	 * KVM_X86_SET_MSR_FILTER.
	 */
	struct kvm_x86_msr_filter *msr_filter;
	struct kvm_x86_msr_filter *msr_filter_buf[2];
};

struct kvm {
	struct pk_machine *m;
	struct mutex *lock;			/* kvm->lock: vCPU creation (beside kmem) */
	struct mutex *slots_lock;		/* kvm->slots_lock: memslot updates */
	struct kvm_arch arch;
	struct pk_memslots memslots;		/* EPT_POINTER / nested_cr3 point here */
	struct kvm_vcpu *vcpus[KVM_MAX_VCPUS];	/* kernel: the vcpu_array xarray */
	u64 vcpu_ids[KVM_MAX_VCPU_IDS / 64];	/* ids taken (kvm_get_vcpu_by_id's answer) */
	int nr_vcpus;				/* online_vcpus */
	int created_vcpus;
	int max_vcpus;
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
	bool (*is_valid_cr0)(struct kvm_vcpu *vcpu, u64 cr0);
	bool (*is_valid_cr4)(struct kvm_vcpu *vcpu, u64 cr4);
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
	/* Re-derive which MSRs pass through, after an MSR filter or CPUID change. */
	void (*recalc_intercepts)(struct kvm_vcpu *vcpu);
	/* Finish an emulated RDMSR/WRMSR: #GP if err, else skip the instruction. */
	int (*complete_emulated_msr)(struct kvm_vcpu *vcpu, int err);
	/* Whether the vendor emulates an MSR of KVM's emulated list (NULL kvm: any VM). */
	bool (*has_emulated_msr)(struct kvm *kvm, u32 index);
	int (*get_cpl)(struct kvm_vcpu *vcpu);
	void (*get_cs_db_l_bits)(struct kvm_vcpu *vcpu, int *db, int *l);
	u32 (*get_interrupt_shadow)(struct kvm_vcpu *vcpu);
	void (*set_interrupt_shadow)(struct kvm_vcpu *vcpu, int mask);
	/*
	 * The hypervisor timer for a TSC deadline (VMX preemption timer); NULL: none.
	 * *expired if the deadline has already passed.
	 */
	int (*set_hv_timer)(struct kvm_vcpu *vcpu, u64 guest_deadline_tsc, bool *expired);
	void (*cancel_hv_timer)(struct kvm_vcpu *vcpu);
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
	bool ignore_msrs;
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
	u64 efer_reserved_bits;			/* EFER bits no guest may set (x86.c) */
	u64 host_arch_capabilities;
	struct kvm_params params;

	/* kernel: kvm_caps.supported_mce_cap and kvm_cpu_caps[] (cpuid.c) */
	u64 supported_mce_cap;
	u32 kvm_cpu_caps[NR_KVM_CPU_CAPS];
	/* The MSR lists of KVM_GET_MSR_INDEX_LIST and _FEATURE_ (kvm_init_msr_lists). */
	u32 msrs_to_save[32];
	u32 num_msrs_to_save;
	u32 emulated_msrs[16];
	u32 num_emulated_msrs;
	u32 msr_based_features[8];
	u32 num_msr_based_features;
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
bool kvm_msr_allowed(struct kvm_vcpu *vcpu, u32 index, u32 type);
int kvm_complete_insn_gp(struct kvm_vcpu *vcpu, int err);

/*
 * Requests are atomic bit operations as upstream's (set_bit, test_bit/clear_bit): another
 * thread may make one (KVM_X86_SET_MSR_FILTER for every vCPU) while the vCPU checks its own.
 */
static inline void kvm_make_request(int req, struct kvm_vcpu *vcpu)
{
	__atomic_fetch_or(&vcpu->requests, BIT_ULL(req), __ATOMIC_RELEASE);
}

static inline bool kvm_request_pending(struct kvm_vcpu *vcpu)
{
	return __atomic_load_n(&vcpu->requests, __ATOMIC_RELAXED) != 0;
}

static inline bool kvm_check_request(int req, struct kvm_vcpu *vcpu)
{
	if (!(__atomic_load_n(&vcpu->requests, __ATOMIC_ACQUIRE) & BIT_ULL(req)))
		return false;
	__atomic_fetch_and(&vcpu->requests, ~BIT_ULL(req), __ATOMIC_RELAXED);
	return true;
}

static inline bool lapic_in_kernel(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.apic != NULL;
}

static inline bool irqchip_in_kernel(struct kvm *kvm)
{
	return kvm->arch.irqchip_mode != KVM_IRQCHIP_NONE;
}

/* A vCPU that has entered the guest once may no longer change its model. */
static inline bool kvm_vcpu_has_run(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.last_vmentry_cpu != -1;
}

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

/* ---- x86.c and lapic.c, for kvm_main.c's halting (kernel: linux/kvm_host.h) ---- */
bool kvm_arch_vcpu_runnable(struct kvm_vcpu *vcpu);
bool kvm_cpu_has_pending_timer(struct kvm_vcpu *vcpu);
void kvm_pv_kick_timer_fn(struct pk_hrtimer *timer);
void __kvm_migrate_timers(struct kvm_vcpu *vcpu);

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
void kvm_arch_vcpu_destroy(struct kvm_vcpu *vcpu);

#endif
