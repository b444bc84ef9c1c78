/* SPDX-License-Identifier: MIT */
/*
 * The simulated x86-64 machine (MACHINE.md): physical CPUs, the host kernel around KVM,
 * cost accounting, and "kernel memory" from which KVM allocates everything it owns.
 *
 * The whole machine is one plain C object. Everything KVM allocates lives inside it
 * (kmem), so copying the object snapshots the machine; guest memory is referenced, not
 * copied. Host physical addresses are offsets into this object (see __pa()/pk_hva()),
 * which is how a VMCS, VMCB, MSR bitmap or MSR-load list is found by the "hardware".
 *
 * Kernel memory grows as the kernel's does: the machine reserves address space for as
 * much memory as the host has (csrc/arch/machine.c) and makes it usable as KVM
 * allocates; freed objects are reused and their pages returned (csrc/host/kmem.c). What
 * only counts or caches (cost counters, locks, decode caches, the trace buffer) lives
 * beside the object, not in it: it is not state, and a snapshot does not copy it.
 *
 * Threads (MACHINE.md, ARCHITECTURE.md "Threads and scale"): a pCPU runs one thing at a
 * time. Host code runs on a pCPU only while its runqueue lock is held (pk_cpu_lock(),
 * csrc/host/smp.c); per-CPU state is touched only by the holder; machine-wide state that
 * several CPUs write (the allocator, the task list, the oracle's verdict, host_bugs, the
 * trace) has a lock or is atomic.
 */
#ifndef _PYKVM_MACHINE_H
#define _PYKVM_MACHINE_H

#include "pykvm/types.h"
#include "asm/msr-index.h"

#define PK_MAX_CPUS		8
#define PK_MAX_MEMSLOTS		8
#define PK_MAX_RETURN_NOTIFIERS	4
#define PK_PHYS_BASE		0x100000000ULL	/* host PA of byte 0 of the machine */
/*
 * Tasks (threads) of the host: the kernel's pid_max default (PID_MAX_DEFAULT, 32768),
 * in a two-level table whose chunks never move, so a task found once stays put.
 */
#define PK_PID_MAX		32768
#define PK_TASK_CHUNK_SHIFT	7
#define PK_TASK_CHUNK		(1u << PK_TASK_CHUNK_SHIFT)
#define PK_TASK_CHUNKS		(PK_PID_MAX / PK_TASK_CHUNK)
/* Host points of one run whose IRQ/preemption eligibility is recorded while counting. */
#define PK_INJ_OK_POINTS	1024
#define PK_INJ_OK_WORDS		16	/* PK_INJ_OK_POINTS / 64 */

/* cffi:begin */
/* General-purpose registers, in x86 encoding order (kernel: enum kvm_reg). */
enum {
	VCPU_REGS_RAX, VCPU_REGS_RCX, VCPU_REGS_RDX, VCPU_REGS_RBX,
	VCPU_REGS_RSP, VCPU_REGS_RBP, VCPU_REGS_RSI, VCPU_REGS_RDI,
	VCPU_REGS_R8, VCPU_REGS_R9, VCPU_REGS_R10, VCPU_REGS_R11,
	VCPU_REGS_R12, VCPU_REGS_R13, VCPU_REGS_R14, VCPU_REGS_R15,
	NR_VCPU_GPRS
};

/* Segment registers (kernel: enum kvm_reg / VCPU_SREG_*). */
enum { VCPU_SREG_ES, VCPU_SREG_CS, VCPU_SREG_SS, VCPU_SREG_DS, VCPU_SREG_FS,
       VCPU_SREG_GS, VCPU_SREG_TR, VCPU_SREG_LDTR, NR_VCPU_SREGS };
/* cffi:end */

/* A segment register: selector and hidden part. ar uses the VMX access-rights layout
 * (type 3:0, S 4, DPL 6:5, P 7, AVL 12, L 13, DB 14, G 15, unusable 16). */
/* The unusable bit of pk_segment.ar (same value as asm/vmx.h). */
#define VMX_AR_UNUSABLE_MASK		BIT(16)

struct pk_segment {
	u64 base;
	u32 limit;
	u32 ar;
	u16 selector;
};

struct pk_dtable {
	u64 base;
	u16 limit;
};

/*
 * The MSR file. MSRs are sparse by index; the model keeps the ones MACHINE.md names in
 * dense slots. FS_BASE/GS_BASE are the hidden segment bases, TSC is cpu->tsc, PRED_CMD
 * is write-only: none of them has a slot. Any other index is #GP, as on hardware.
 */
#define PK_MSRS(M)					\
	M(EFER,		MSR_EFER)			\
	M(STAR,		MSR_STAR)			\
	M(LSTAR,	MSR_LSTAR)			\
	M(CSTAR,	MSR_CSTAR)			\
	M(SYSCALL_MASK,	MSR_SYSCALL_MASK)		\
	M(KERNEL_GS_BASE, MSR_KERNEL_GS_BASE)		\
	M(TSC_AUX,	MSR_TSC_AUX)			\
	M(SPEC_CTRL,	MSR_IA32_SPEC_CTRL)		\
	M(SYSENTER_CS,	MSR_IA32_SYSENTER_CS)		\
	M(SYSENTER_ESP,	MSR_IA32_SYSENTER_ESP)		\
	M(SYSENTER_EIP,	MSR_IA32_SYSENTER_EIP)		\
	M(PAT,		MSR_IA32_CR_PAT)		\
	M(DEBUGCTL,	MSR_IA32_DEBUGCTLMSR)		\
	M(TSX_CTRL,	MSR_IA32_TSX_CTRL)		\
	M(VIRT_SPEC_CTRL, MSR_AMD64_VIRT_SPEC_CTRL)	\
	M(VM_HSAVE_PA,	MSR_VM_HSAVE_PA)		\
	M(MISC_ENABLE,	MSR_IA32_MISC_ENABLE)		\
	M(TSC_DEADLINE,	MSR_IA32_TSC_DEADLINE)		\
	M(APICBASE,	MSR_IA32_APICBASE)

#define __PK_MSR_ENUM(name, idx) PK_MSR_##name,
enum pk_msr { PK_MSRS(__PK_MSR_ENUM) PK_NR_MSRS };

/*
 * MSRs priced on their own (a profile's [rdmsr.NAME] / [wrmsr.NAME]) that have no slot
 * in the MSR file: their state lives elsewhere (FS/GS base in the segment registers, the
 * TSC counter) or they have none (PRED_CMD, FLUSH_CMD are commands). They number after
 * the slots; any other MSR is accounted as "other".
 */
#define PK_STATELESS_MSRS(M)				\
	M(FS_BASE,	MSR_FS_BASE)			\
	M(GS_BASE,	MSR_GS_BASE)			\
	M(TSC,		MSR_IA32_TSC)			\
	M(PRED_CMD,	MSR_IA32_PRED_CMD)		\
	M(FLUSH_CMD,	MSR_IA32_FLUSH_CMD)
#define PK_PRICED_MSRS(M) PK_MSRS(M) PK_STATELESS_MSRS(M)
enum pk_priced_msr {
	PK_PRICED_MSR_BEFORE = PK_NR_MSRS - 1,
	PK_STATELESS_MSRS(__PK_MSR_ENUM)
	PK_NR_PRICED_MSRS
};
#undef __PK_MSR_ENUM

/* What a CPU model has; decides MSR rules, instruction availability and VMX/SVM features. */
/* cffi:begin */
enum pk_vendor { PK_VENDOR_INTEL, PK_VENDOR_AMD };
struct pk_cpu_model {
	u32 vendor;			/* enum pk_vendor */
	bool has_rdtscp;
	bool has_rdpid;
	bool has_ibrs;			/* SPEC_CTRL.IBRS (and the MSR itself) */
	bool has_stibp;
	bool has_ssbd;
	bool has_ibpb;			/* PRED_CMD.IBPB */
	bool has_rtm;			/* TSX, so TSX_CTRL exists (Intel) */
	bool has_fsgsbase;
	bool has_virt_ssbd;		/* AMD VIRT_SPEC_CTRL */
	bool has_v_spec_ctrl;		/* AMD: VMRUN/#VMEXIT switch SPEC_CTRL via the VMCB */
	bool has_load_efer;		/* VMX "load IA32_EFER" entry/exit controls */
	bool has_eibrs;			/* enhanced IBRS: the host keeps IBRS set */
	bool has_pml;			/* VMX page-modification logging */
	/* Hardware bugs the host kernel mitigates (kernel: X86_BUG_*). */
	bool bug_meltdown;		/* CPU_MELTDOWN: page-table isolation (PTI) */
	bool bug_mds;			/* MDS: VERW before user mode and guest mode */
	bool bug_l1tf;			/* L1TF: L1D flush (FLUSH_CMD) before VM-entry */
};
/* cffi:end */

/*
 * Cost accounting: every host-side operation, by kind and by world-switch path.
 *
 * Instructions are counted where the host executes them (csrc/arch/cpu.c and the VMX/SVM
 * hardware). MOV_FROM_CR / MOV_TO_CR are reads and writes of CR0/CR2/CR3/CR4 (writes
 * serialize, reads do not). A write to PRED_CMD (IBPB) or FLUSH_CMD (L1D flush) is a
 * WRMSR priced per MSR (PK_PRICED_MSRS). VERW is the CPU-buffer clear of the MDS
 * mitigation; XSAVES/XRSTORS the FPU state swap of KVM_RUN.
 *
 * The SW_* entries are kernel software between those instructions, one per pass through
 * a piece of upstream code (named after it; cost from the profile, mostly estimates):
 *   SW_SYSCALL_ENTRY	entry_SYSCALL_64 .. do_syscall_64 .. kvm_vcpu_ioctl dispatch
 *   SW_SYSCALL_EXIT	syscall_exit_to_user_mode .. SYSRET (the exit work checks)
 *   SW_VCPU_IOCTL	kvm_vcpu_ioctl + kvm_arch_vcpu_ioctl_run bookkeeping (vcpu->mutex,
 *			sigset, kvm_run sync, post_kvm_run_save), vcpu_load/put excluded
 *   SW_VCPU_LOAD	vcpu_load + kvm_arch_vcpu_load (notifier, TSC/steal-time checks)
 *   SW_VCPU_PUT	vcpu_put + kvm_arch_vcpu_put (steal time, last_host_tsc)
 *   SW_ENTER_GUEST	one vcpu_enter_guest pass outside the vendor's vcpu_run: requests,
 *			preemption/IRQ toggles, guest mode, guest timing, after-exit work
 *   SW_RUN_LOOP	one more pass of vcpu_run's loop after an exit handled in the kernel
 *   SW_HANDLE_EXIT	the vendor's handle_exit dispatch and the handler's bookkeeping
 *   SW_FASTPATH	a fast-path exit: handle_fastpath_set_msr_irqoff and the checks
 *			before re-entering (kvm_vcpu_exit_request)
 *   SW_EMULATE		x86_emulate_instruction: decode and emulate one instruction (MMIO)
 *   SW_USER_RETURN	fire_user_return_notifiers + kvm_on_user_return's walk
 * Software entries are accounted without an event-injection point: they are not
 * instructions, and the checker places events between instructions.
 */
#define PK_OPS(O)							\
	O(RDMSR) O(WRMSR) O(VMREAD) O(VMWRITE) O(VMPTRLD) O(VMCLEAR)	\
	O(VMLAUNCH) O(VMRESUME) O(VMEXIT) O(VMRUN) O(VMLOAD) O(VMSAVE)	\
	O(CLGI) O(STGI) O(SWAPGS) O(RDFSBASE) O(RDGSBASE) O(WRFSBASE)	\
	O(WRGSBASE) O(LIDT) O(SIDT) O(LGDT) O(LLDT) O(LTR) O(MOV_SREG)	\
	O(MOV_FROM_CR) O(MOV_TO_CR) O(LFENCE) O(RSB_FILL) O(VERW)	\
	O(XSAVES) O(XRSTORS) O(GUEST_INSN)				\
	O(SW_SYSCALL_ENTRY) O(SW_SYSCALL_EXIT) O(SW_VCPU_IOCTL)		\
	O(SW_VCPU_LOAD) O(SW_VCPU_PUT) O(SW_ENTER_GUEST) O(SW_RUN_LOOP)	\
	O(SW_HANDLE_EXIT) O(SW_FASTPATH) O(SW_EMULATE) O(SW_USER_RETURN)
#define __PK_OP_ENUM(name) PK_OP_##name,
enum pk_op { PK_OPS(__PK_OP_ENUM) PK_NR_OPS };
#undef __PK_OP_ENUM

/*
 * SYSCALL: the vCPU thread's (or any task's) kernel entry and exit to user mode, with
 * the entry/exit mitigations; IOCTL: KVM's vCPU ioctl around the switch (and
 * KVM_GET/SET_MSRS); OTHER: the scheduler and other tasks.
 */
#define PK_PATHS(P)							\
	P(OTHER) P(HARDWARE) P(SYSCALL) P(IOCTL) P(VCPU_LOAD)		\
	P(PREPARE_SWITCH) P(VCPU_RUN) P(FASTPATH) P(HANDLE_EXIT)	\
	P(VCPU_PUT) P(USER_RETURN) P(GUEST)
#define __PK_PATH_ENUM(name) PK_PATH_##name,
enum pk_path { PK_PATHS(__PK_PATH_ENUM) PK_NR_PATHS };
#undef __PK_PATH_ENUM

/* One pCPU's counters (struct pk_machine.costs[cpu]): counted, not state. */
struct pk_costs {
	u32 path;				/* enum pk_path this CPU executes now */
	u64 ops[PK_NR_PATHS][PK_NR_OPS];
	u64 msr_ops[PK_NR_PATHS][2][PK_NR_PRICED_MSRS + 1];	/* [.][0=rd,1=wr][msr], +1: other */
	u64 cycles[PK_NR_PATHS];
};

/* Cycle cost of each operation (a profile, COSTS.md); per-MSR overrides when non-zero. */
struct pk_profile {
	u32 op[PK_NR_OPS];
	u32 rdmsr[PK_NR_PRICED_MSRS];
	u32 wrmsr[PK_NR_PRICED_MSRS];
};

/* Guest memory: slots of user memory referenced by the VM (kernel: kvm_memory_slot). */
struct pk_memslot {
	u64 gpa;
	u64 size;
	u8 *hva;
};
struct pk_memslots {
	u32 nr;
	struct pk_memslot slot[PK_MAX_MEMSLOTS];
};

/*
 * What the guest did that may leave guest mode: filled by the interpreter, asked about
 * through pk_virt_intercept(), and turned into a VMX exit reason or SVM exit code by the
 * virtualization hardware.
 */
enum pk_gexit {
	PK_GEXIT_NONE,
	PK_GEXIT_HLT,
	PK_GEXIT_CPUID,
	PK_GEXIT_IO,
	PK_GEXIT_RDMSR,
	PK_GEXIT_WRMSR,
	PK_GEXIT_VMCALL,	/* Intel's hypercall instruction */
	PK_GEXIT_VMMCALL,	/* AMD's */
	PK_GEXIT_RDTSCP,
	PK_GEXIT_RDPID,
	PK_GEXIT_MMIO,		/* access outside every memory slot (EPT misconfig / NPF) */
	PK_GEXIT_TRIPLE_FAULT,
	PK_GEXIT_EXTINT,	/* host timer tick: the instruction budget ran out */
	PK_NR_GEXITS
};

/*
 * No implicit padding (checked in exec.c): events are built as compound literals, which
 * zero every member they do not name but may leave padding as the stack had it, and the
 * checker hashes struct pk_cpu byte by byte -- stack garbage there made equal states
 * differ, and the state count vary from process to process.
 */
struct pk_guest_event {
	u32 kind;		/* enum pk_gexit */
	u8 insn_len;		/* length of the instruction that caused it */
	/* IO: port, size (1, 2 or 4), in */
	u8 size;
	u16 port;
	bool in;
	/* MMIO: gpa, len, write, data (the value written) */
	bool write;
	u8 len;
	u8 reserved;		/* a member, so that initializers zero it */
	/* RDMSR / WRMSR: ECX */
	u32 msr;
	u64 gpa;
	u64 data;
};

/* Answer of the virtualization hardware about one guest event. */
enum pk_icpt { PK_ICPT_NATIVE, PK_ICPT_EXIT, PK_ICPT_UD };

/*
 * PK_MODE_BARE runs guest code with no hypervisor around it (the interpreter's own tests
 * and the differential test against unicorn): see pk_virt_intercept().
 */
enum pk_cpu_mode { PK_MODE_HOST, PK_MODE_VMX_GUEST, PK_MODE_SVM_GUEST, PK_MODE_BARE };

/* One physical CPU: the live architectural state both host and guest use. */
struct pk_cpu {
	struct pk_machine *m;
	u32 id;
	u32 mode;				/* enum pk_cpu_mode */

	u64 regs[NR_VCPU_GPRS];
	u64 rip;
	u64 rflags;
	u64 cr0, cr2, cr3, cr4;
	struct pk_segment seg[NR_VCPU_SREGS];
	struct pk_dtable gdtr, idtr;
	u64 msr[PK_NR_MSRS];
	u64 tsc;

	bool gif;				/* SVM global interrupt flag */
	u8 nmi_held;				/* an NMI latched while GIF = 0 */

	bool vmxon;
	u64 current_vmcs;			/* PA of the current VMCS, or -1 */

	/* Guest mode only: translation root (the VM's slots) and the exit being taken. */
	const struct pk_memslots *npt;
	u64 insn_budget;			/* guest instructions until the next host tick */
	struct pk_guest_event ev;
	/* MMIO read completion: the value for the access at mmio_gpa on re-execution. */
	bool mmio_fill_valid;
	u64 mmio_fill_gpa;
	u64 mmio_fill_data;

	struct pk_memslots bare_slots;		/* the memory of bare mode (PK_MODE_BARE) */
	void *icache;				/* interpreter decode cache: not state */
	struct pk_costs *costs;			/* this CPU's counters (beside the machine) */
};

/* Host kernel model (MACHINE.md section 5): only what reads or writes switched state. */
struct pk_task {
	u32 id;
	u32 cpu;
	bool alive;
	bool is_vcpu_thread;
	int next_free;				/* free list of task ids (pid reuse), -1: end */
	struct preempt_notifier *preempt_notifiers;	/* task->preempt_notifiers */
	bool is_kthread;			/* no user mode, no mm of its own (PF_KTHREAD) */
	bool is_idle;				/* this CPU's idle task (swapper/N) */
	u32 state;				/* TASK_RUNNING or TASK_INTERRUPTIBLE */
	bool on_rq;				/* waiting in its CPU's runqueue */
	int rq_next;				/* the next task waiting there, or -1 */
	u64 fsbase, gsbase;			/* user FS/GS base (thread.fsbase/gsbase) */
	u16 fsindex, gsindex, ds, es;
	u16 ldt;				/* its mm's LDT selector (modify_ldt), or 0 */
	u64 cr3;				/* its mm, with the PCID it has now */
	bool notsc;				/* TIF_NOTSC (prctl PR_SET_TSC): CR4.TSD while it runs */
	bool tif_user_return_notify;
	bool signal_pending;
	bool signal_sent;			/* by another thread: taken at the next tick */
	u64 timer_budget;			/* guest instructions until its timer signal */
	/*
	 * The oracle's reference, not kernel state: the user FS/GS bases as the task itself
	 * last set them (arch_prctl, or WRFSBASE/WRGSBASE in user mode, which the kernel
	 * sees only at the next context switch), and its DS/ES (the context switch saves
	 * whatever the CPU holds: a selector lost in the kernel stays lost).
	 */
	u64 user_fsbase, user_gsbase;
	u16 user_ds, user_es;
};

struct user_return_notifier {
	void (*on_user_return)(struct user_return_notifier *urn);
	bool registered;
};

/*
 * A host high-resolution timer (kernel: struct hrtimer): it fires on its CPU when that
 * CPU's clock (the TSC, PK_TSC_KHZ) reaches `expires`.
 */
struct pk_hrtimer {
	u64 expires;				/* TSC value */
	void (*function)(struct pk_hrtimer *timer);
	int cpu;
	bool armed;
	struct pk_hrtimer *next;		/* in its CPU's list of armed timers */
};

struct preempt_notifier {
	void (*sched_in)(struct preempt_notifier *pn, int cpu);
	void (*sched_out)(struct preempt_notifier *pn);
	int task;				/* the task it is registered with, or -1 */
	struct preempt_notifier *next;		/* in that task's list */
};

/* Host kernel parameters ("kernel.*"): versions of the host around KVM. */
struct pk_host_params {
	bool paranoid_entry_rdpid;		/* NMI entry finds per-cpu data via RDPID */
	bool vmm_32bit_gs;			/* vCPU threads hold a user GS selector */
	bool paranoid_entry_fsgsbase;		/* NMI/#MC entry sets GS from the CPU number */
	bool ret_uses_percpu;			/* RETs touch per-cpu data (call depth tracking) */
	bool vmm_ldt;				/* vCPU threads' mm has an LDT */
	bool kernel_ibrs;			/* legacy IBRS in the kernel (where the CPU needs it) */
	bool pti;				/* page-table isolation (where the CPU has Meltdown) */
	bool mds;				/* VERW buffer clears (where the CPU has MDS) */
};

struct pk_host {
	struct pk_host_params params;
	u64 idt_base;				/* one global host IDT */
	u64 per_cpu_offset[PK_MAX_CPUS];	/* GS_BASE in kernel mode */
	u64 gdt_base[PK_MAX_CPUS];		/* fixmap GDT of each CPU */
	u64 tss_base[PK_MAX_CPUS];
	u64 entry_stack[PK_MAX_CPUS];		/* SYSENTER_ESP per CPU */
	u64 spec_ctrl;				/* x86_spec_ctrl_base: the user-mode value */
	u64 efer, pat, cr0, cr4;
	u64 star, lstar, cstar, syscall_mask, sysenter_eip;
	u16 kernel_cs, kernel_ds, tss_sel;

	struct pk_task *task_chunk[PK_TASK_CHUNKS];	/* PK_TASK_CHUNK tasks each, in kmem */
	u32 nr_tasks;				/* ids handed out so far (the highest + 1) */
	u32 nr_live_tasks;
	int free_task;				/* an exited task's id to reuse, or -1 */
	int current[PK_MAX_CPUS];		/* task running on each CPU */
	bool in_user[PK_MAX_CPUS];
	struct user_return_notifier *return_notifiers[PK_MAX_CPUS][PK_MAX_RETURN_NOTIFIERS];
	u32 preempt_count[PK_MAX_CPUS];
	bool irqs_enabled[PK_MAX_CPUS];
	/* cpu_tlbstate: the CR3 the kernel has loaded (mm + PCID), and the CR4 shadow. */
	u64 loaded_cr3[PK_MAX_CPUS];
	u64 cr4_shadow[PK_MAX_CPUS];
	u64 poking_cr3;				/* text_poke's temporary mm */
	/*
	 * Between guest_state_enter_irqoff() and guest_state_exit_irqoff(): the noinstr
	 * code around VM-entry, where the host knowingly runs with guest values
	 * (SPEC_CTRL until its restore; on SVM, the guest's TR between the VMLOADs).
	 */
	bool guest_ctx[PK_MAX_CPUS];

	/*
	 * The scheduler, only as far as KVM meets it (csrc/host/sched.c): per CPU the idle
	 * task and a kernel worker thread (created on first use, -1 until then), the
	 * runnable tasks waiting for the CPU, TIF_NEED_RESCHED, and the armed host timers.
	 */
	int idle_task[PK_MAX_CPUS];
	int kworker[PK_MAX_CPUS];
	int rq_head[PK_MAX_CPUS], rq_tail[PK_MAX_CPUS];	/* runnable tasks waiting, FIFO */
	u32 rq_nr[PK_MAX_CPUS];
	bool need_resched[PK_MAX_CPUS];
	struct pk_hrtimer *hrtimers[PK_MAX_CPUS];	/* armed timers per CPU, a list */
};

struct pk_machine {
	u32 nr_cpus;
	struct pk_cpu_model model;
	struct pk_profile profile;
	struct pk_costs *costs;			/* per CPU, beside the machine: not state */
	struct pk_locks *locks;			/* beside the machine (csrc/host/smp.c) */
	struct pk_host host;
	struct pk_cpu cpu[PK_MAX_CPUS];
	u64 host_bugs;				/* faults of non-_safe host MSR accesses (a kernel WARN) */
	struct pk_oracle *oracle;		/* checks at observation points, or NULL */
	/*
	 * An event injected before the countdown-th host instruction on inject_cpu (the
	 * checker's interleavings: csrc/host/events.c), and a count of such points.
	 */
	struct pk_inject {
		u32 armed;
		u32 countdown;
		u32 kind;			/* enum pk_inject_kind */
		u32 cpu;
		u32 points;			/* points passed while counting */
		bool counting;
		bool fired;
		bool patient;			/* wait from the point on until the event can fire */
		bool dead;			/* a CPU was taken down mid-path: end of branch */
		bool other_ran;			/* PK_INJ_PREEMPT_VM ran the other VM's vCPU */
		/* Armed by name: the nth point of (path, op, msr); ~0 matches any path. */
		bool by_name;
		u32 name_path, name_op, name_msr, name_nth;
		u32 refused;			/* reached where the kernel would not take it */
		/* While counting: the points where IRQs were on / the thread preemptible. */
		u64 irq_ok[PK_INJ_OK_WORDS], preempt_ok[PK_INJ_OK_WORDS];
		/* The thread whose run it is placed in: another thread's run on the same
		 * pCPU never takes it (csrc/host/events.c). */
		const void *owner;
	} inject;
	/* PK_INJ_PREEMPT_VM: the preempting task and its userspace's KVM_RUN (csrc/check). */
	int inject_other_task;			/* -1: none */
	void (*inject_other_run)(struct pk_machine *m, void *arg);
	void *inject_other_arg;
	struct pk_point_log *point_log;		/* names of the points counted, or NULL: not state */
	struct pk_attr *attr;			/* attribution by last write, or NULL: not state */
	const char *attr_site;			/* the kernel function at the current host point */
	void (*virt_disable_ipi)(struct pk_machine *m, u32 cpu);	/* KVM's handler */
	struct pk_trace *trace;			/* tracepoint buffer, or NULL: not state */
	struct pk_oracle_state {		/* storage behind `oracle` (struct pk_oracle) */
		u64 words[16];
	} oracle_storage;
	void (*nmi_handler)(struct pk_cpu *cpu);	/* host NMI handler (host kernel model) */

	/* The modules loaded into the host kernel (kvm.ko + one vendor module). */
	void *kvm_global;			/* struct kvm_x86_global, in kmem */
	void *vendor_global;			/* the vendor module's own globals, in kmem */
	const struct kvm_x86_ops *kvm_x86_ops;
	const struct kvm_x86_init_ops *vendor_init_ops;

	/*
	 * Kernel memory (csrc/host/kmem.c): pages handed out from the bottom of kmem[] up to
	 * kmem_used (what a snapshot copies); freed runs of pages and freed small objects go
	 * to free lists (offsets + 1 into kmem[], 0: empty) and are reused first.
	 */
	size_t kmem_used;			/* high-water mark, a multiple of the page size */
	size_t kmem_committed;			/* made accessible (csrc/arch/machine.c) */
	size_t kmem_reserved;			/* address space reserved for kmem[] */
	size_t kmem_in_use;			/* bytes allocated and not freed */
	u64 kmem_free_pages;			/* first free run of pages (address order) */
	u64 kmem_free_objs[8];			/* free small objects, by size class 16..2048 */
	u8 kmem[] __attribute__((aligned(4096)));
};

/* The CPU the running host code executes on (kernel: smp_processor_id()). */
extern __thread struct pk_cpu *pk_this_cpu __attribute__((tls_model("initial-exec")));

static inline struct pk_cpu *this_cpu(void) { return pk_this_cpu; }
static inline struct pk_machine *this_machine(void) { return pk_this_cpu->m; }
void pk_percpu_read(struct pk_cpu *cpu);	/* csrc/check/oracle.c: a per-cpu access via GS */
/*
 * Reads the CPU number from per-cpu data, as Linux does: an observation point. Kernel
 * code here relies on the per-cpu base in GS, on its page tables (CR3) and on the
 * descriptor tables interrupts would be delivered through.
 */
static inline int smp_processor_id(void)
{
	struct pk_cpu *c = pk_this_cpu;
	struct pk_machine *m = c->m;
	const struct pk_host *h = &m->host;
	u32 id = c->id;

	if (unlikely(m->oracle != NULL) && c->mode == PK_MODE_HOST && !h->in_user[id] &&
	    unlikely(((c->seg[VCPU_SREG_GS].base ^ h->per_cpu_offset[id]) |
		      (c->cr3 ^ h->loaded_cr3[id]) |
		      (c->seg[VCPU_SREG_TR].base ^ h->tss_base[id]) |
		      (c->gdtr.base ^ h->gdt_base[id]) | (c->idtr.base ^ h->idt_base)) != 0))
		pk_percpu_read(c);
	return (int)id;
}

/* Host physical addresses: offsets into the machine object. */
static inline u64 pk_pa(const struct pk_machine *m, const void *p)
{
	return PK_PHYS_BASE + (u64)((const u8 *)p - (const u8 *)m);
}
#define __pa(p) pk_pa(this_machine(), (p))
/* NULL unless [pa, pa + len) lies inside the machine. */
static inline void *pk_hva(struct pk_machine *m, u64 pa, u64 len)
{
	u64 off = pa - PK_PHYS_BASE;
	u64 end = offsetof(struct pk_machine, kmem) + m->kmem_used;

	if (pa < PK_PHYS_BASE || off > end || len > end - off)
		return NULL;
	return (u8 *)m + off;
}

/* Kernel memory (csrc/host/kmem.c): zeroed, `align` <= 4096; NULL when exhausted. */
void *pk_kzalloc(struct pk_machine *m, size_t size, size_t align);
/* Free what pk_kzalloc returned, with the size and alignment it was asked for. */
void pk_kfree(struct pk_machine *m, void *p, size_t size, size_t align);
/* Make kmem[] usable up to `bytes` (csrc/arch/machine.c): 0, or -ENOMEM. */
int pk_machine_grow(struct pk_machine *m, size_t bytes);

/* A task by id (the id must be one pk_host_create_task returned). */
static inline struct pk_task *pk_task(struct pk_machine *m, int id)
{
	return &m->host.task_chunk[(u32)id >> PK_TASK_CHUNK_SHIFT][(u32)id & (PK_TASK_CHUNK - 1)];
}

/* Counted faults of the host's own accesses (a WARN); any CPU may count one. */
static inline void pk_host_bug(struct pk_machine *m)
{
	__atomic_fetch_add(&m->host_bugs, 1, __ATOMIC_RELAXED);
}

/* Cost accounting */
/* Before a host instruction `op` (PK_NR_OPS: a window between stores); csrc/host/events.c */
void pk_inject_point(struct pk_cpu *cpu, u32 op, u32 msr);

/*
 * Armed by a thread that holds inject.cpu; the fields are written before `armed` is set
 * (release). The check here is a relaxed load, so it costs a plain load and lets the
 * compiler keep what it has in registers; pk_inject_point() starts with an acquire fence
 * before it reads the injection's fields.
 */
static inline bool pk_inject_armed(const struct pk_machine *m)
{
	return __atomic_load_n(&m->inject.armed, __ATOMIC_RELAXED);
}

/*
 * Whether host instructions on this machine are event-injection points or attributed
 * now. The attribution recorder (csrc/check) is set only while nothing runs.
 */
static inline bool pk_point_armed(const struct pk_machine *m)
{
	return unlikely(pk_inject_armed(m) | (m->attr != NULL));
}

/* The counters of one operation `op` on this CPU's current path. */
static inline void pk_count_op(struct pk_cpu *cpu, enum pk_op op)
{
	struct pk_costs *c = cpu->costs;
	u32 path = c->path;

	c->ops[path][op]++;
	c->cycles[path] += cpu->m->profile.op[op];
}

static inline void pk_account(struct pk_cpu *cpu, enum pk_op op)
{
	if (pk_point_armed(cpu->m))
		pk_inject_point(cpu, op, 0);
	pk_count_op(cpu, op);
}
/*
 * A piece of kernel software (a PK_OP_SW_* entry) on this CPU: costed like an operation
 * but not an event-injection point (the checker places events between instructions).
 */
static inline void pk_sw(enum pk_op op)
{
	struct pk_cpu *cpu = pk_this_cpu;
	struct pk_costs *c = cpu->costs;

	c->ops[c->path][op]++;
	c->cycles[c->path] += cpu->m->profile.op[op];
}

/* Enter a path on this CPU; returns the previous one for pk_path_leave(). */
static inline u32 pk_path_enter(struct pk_machine *m, enum pk_path p)
{
	struct pk_costs *c = pk_this_cpu->costs;
	u32 old = c->path;

	(void)m;
	c->path = p;
	return old;
}
static inline void pk_path_leave(struct pk_machine *m, u32 old)
{
	(void)m;
	pk_this_cpu->costs->path = old;
}

#endif
