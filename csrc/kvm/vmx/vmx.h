/* SPDX-License-Identifier: MIT */
/* VMX vCPU state (kernel: arch/x86/kvm/vmx/vmx.h, vmcs.h). */
#ifndef __KVM_X86_VMX_H
#define __KVM_X86_VMX_H

#include "asm/vmx.h"
#include "linux/list.h"
#include "../x86.h"

#define MAX_NR_LOADSTORE_MSRS	8
#define PML_ENTITY_NUM		512	/* GPAs in the page-modification log */

/* Flags for __vmx_vcpu_run (kernel: VMX_RUN_*). */
#define VMX_RUN_VMRESUME	BIT(0)
#define VMX_RUN_SAVE_SPEC_CTRL	BIT(1)

struct vmx_msrs {
	unsigned int nr;
	struct vmx_msr_entry val[MAX_NR_LOADSTORE_MSRS];
};

struct vmx_uret_msr {
	bool load_into_hardware;
	u64 data;
	u64 mask;
};

/* Host state last written to the VMCS, to skip VMWRITEs that would not change it. */
struct vmcs_host_state {
	u64 cr3, cr4, gs_base, fs_base, rsp;
	u16 fs_sel, gs_sel, ldt_sel, ds_sel, es_sel;
};

struct loaded_vmcs {
	struct pk_vmcs_region *vmcs;
	int cpu;				/* where it is active, or -1 (another CPU's IPI clears it) */
	struct list_head loaded_vmcss_on_cpu_link;
	bool launched;
	bool nmi_known_unmasked;
	bool hv_timer_soft_disabled;		/* PREEMPTION_TIMER_VALUE holds -1 */
	struct vmcs_host_state host_state;
	u8 *msr_bitmap;
};

/* kvm_intel.* parameters: strategies from the kernel's history, and forgetful variants. */
struct vmx_params {
	bool lazy_kernel_gs_base;
	bool global_host_idt;
	bool user_return_msrs;
	bool efer_load_controls;
	bool spec_ctrl_in_vmenter;
	bool lightweight_exit;
	bool host_msrs_snapshot;
	bool msr_bitmaps;
	bool forget_kernel_gs_base;
	bool forget_host_fs_base;
	bool forget_host_gs_base;
	bool forget_gdt_reload;
	bool forget_spec_ctrl;
	bool forget_host_tr_base;
	bool forget_host_sysenter_esp;
	bool bug_kgs_saved_after_load_gs_index;
	bool enable_pml;
	bool enable_preemption_timer;
	u32 vmentry_l1d_flush;			/* 0 never, 1 cond, 2 always */
	bool bug_uret_loaded_kept_across_put;
	bool bug_uret_reload_below_loaded_check;
	bool forget_host_cr3_refresh;
	bool forget_host_cr4_refresh;
	bool bug_host_cr3_refresh_in_prepare;
	bool forget_host_ds_es;
	bool forget_ldt_reload;
	bool bug_no_current_save_fsgs;
};

/* kvm_intel.vmentry_l1d_flush (kernel: enum vmx_l1d_flush_state, as the param spells it). */
enum { VMENTER_L1D_FLUSH_NEVER, VMENTER_L1D_FLUSH_COND, VMENTER_L1D_FLUSH_ALWAYS };

/* Module parameters (kvm_intel.*) and hardware-setup results, one per machine. */
struct vmx_global {
	struct vmx_params params;
	u64 host_idt_base;		/* captured once at setup (commit 2342080cd675) */
	bool cpu_has_load_efer;
	bool enable_pml;		/* the parameter, where the CPU has PML */
	u32 l1d_flush;			/* vmentry_l1d_flush where the CPU has L1TF, else never */
	struct pk_vmcs_region *current_vmcs[PK_MAX_CPUS];	/* per-CPU current VMCS */
	struct list_head loaded_vmcss_on_cpu[PK_MAX_CPUS];	/* per CPU: VMCSs active there */
	u8 vmxarea[PK_MAX_CPUS][64];	/* VMXON regions (contents unused by the model) */
};

struct vcpu_vmx {
	struct kvm_vcpu vcpu;
	u32 exit_reason;
	u32 idt_vectoring_info;
	u64 exit_qualification;			/* cached: VCPU_EXREG_EXIT_INFO_1 */
	u64 rflags;				/* cached: VCPU_EXREG_RFLAGS */
	struct {
		u32 bitmask;			/* segments whose AR bytes are cached */
		u32 ar[NR_VCPU_SREGS];
	} segment_cache;			/* valid while VCPU_EXREG_SEGMENTS is */
	u64 hv_deadline_tsc;			/* armed VMX preemption timer, or -1 */
	u64 host_debugctlmsr;
	bool fail;
	bool guest_state_loaded;
	bool guest_uret_msrs_loaded;
	struct vmx_uret_msr guest_uret_msrs[KVM_MAX_NR_USER_RETURN_MSRS];
	u64 host_msrs[KVM_MAX_NR_USER_RETURN_MSRS];	/* before user-return MSRs (2.6.31) */
	u64 msr_host_kernel_gs_base;
	u64 msr_guest_kernel_gs_base;
	u64 spec_ctrl;
	struct {
		struct vmx_msrs guest;
		struct vmx_msrs host;
	} msr_autoload;
	struct loaded_vmcs vmcs01;
	struct loaded_vmcs *loaded_vmcs;

	u8 vmcs01_page[PK_VMCS_SIZE] __attribute__((aligned(4096)));
	u8 msr_bitmap_page[4096] __attribute__((aligned(4096)));
};

static inline struct vcpu_vmx *to_vmx(struct kvm_vcpu *vcpu)
{
	return container_of(vcpu, struct vcpu_vmx, vcpu);
}

static inline struct vmx_global *vmx_global(void)
{
	return this_machine()->vendor_global;
}

static inline const struct vmx_params *vmx_param(void)
{
	return &vmx_global()->params;
}

/* VMREAD/VMWRITE wrappers (kernel: vmcs_readl/vmcs_writel); a VMfail is a host bug. */
static inline u64 vmcs_readl(u32 field)
{
	u64 v = 0;
	if (pk_vmread(field, &v))
		pk_host_bug(this_machine());
	return v;
}
static inline void vmcs_writel(u32 field, u64 v)
{
	if (pk_vmwrite(field, v))
		pk_host_bug(this_machine());
}
#define vmcs_read16(f)	((u16)vmcs_readl(f))
#define vmcs_read32(f)	((u32)vmcs_readl(f))
#define vmcs_read64(f)	vmcs_readl(f)
#define vmcs_write16	vmcs_writel
#define vmcs_write32	vmcs_writel
#define vmcs_write64	vmcs_writel

bool __vmx_vcpu_run(struct vcpu_vmx *vmx, unsigned int flags);
void vmx_spec_ctrl_restore_host(struct vcpu_vmx *vmx, unsigned int flags);
bool vmx_msr_write_intercepted(struct vcpu_vmx *vmx, u32 msr);

void vmx_set_host_fs_gs(struct vmcs_host_state *host, u16 fs_sel, u16 gs_sel,
			u64 fs_base, u64 gs_base);
unsigned int __vmx_vcpu_run_flags(struct vcpu_vmx *vmx);

#endif
