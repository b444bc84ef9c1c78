// SPDX-License-Identifier: MIT
/*
 * The guest CPUID model (kernel: arch/x86/kvm/cpuid.c, kvm-x86/linux at 1a27afa0511e):
 * what KVM supports (kvm_set_cpu_caps, KVM_GET_SUPPORTED_CPUID), what a guest may use
 * (kvm_vcpu_after_set_cpuid: KVM's support ANDed with the guest's CPUID), the
 * KVM_SET_CPUID2 checks, and the CPUID instruction itself.
 */
#include "x86.h"
#include "lapic.h"
#include "pykvm/printk.h"

/* ---- lookups ---- */

const struct kvm_cpuid_entry2 *kvm_find_cpuid_entry_index(struct kvm_vcpu *vcpu,
							   u32 function, u32 index)
{
	for (int i = 0; i < vcpu->arch.cpuid_nent; i++) {
		const struct kvm_cpuid_entry2 *e = &vcpu->arch.cpuid_entries[i];

		if (e->function != function)
			continue;
		/* An entry whose index is not significant matches any index. */
		if (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == index)
			return e;
	}
	return NULL;
}

/* For leaves whose index is architecturally not significant. */
const struct kvm_cpuid_entry2 *kvm_find_cpuid_entry(struct kvm_vcpu *vcpu, u32 function)
{
	for (int i = 0; i < vcpu->arch.cpuid_nent; i++)
		if (vcpu->arch.cpuid_entries[i].function == function)
			return &vcpu->arch.cpuid_entries[i];
	return NULL;
}

static u32 *cpuid_entry_reg(struct kvm_cpuid_entry2 *e, int reg)
{
	switch (reg) {
	case CPUID_EAX: return &e->eax;
	case CPUID_EBX: return &e->ebx;
	case CPUID_ECX: return &e->ecx;
	default: return &e->edx;
	}
}

#define VENDOR_AMD_EBX		0x68747541	/* "Auth" "enti" "cAMD" */
#define VENDOR_AMD_ECX		0x444d4163
#define VENDOR_AMD_EDX		0x69746e65
#define VENDOR_HYGON_EBX	0x6f677948	/* "Hygo" "nGen" "uine" */
#define VENDOR_INTEL_EBX	0x756e6547	/* "Genu" "ineI" "ntel" */
#define VENDOR_INTEL_ECX	0x6c65746e
#define VENDOR_INTEL_EDX	0x49656e69

bool guest_cpuid_is_amd_compatible(struct kvm_vcpu *vcpu)
{
	const struct kvm_cpuid_entry2 *e = kvm_find_cpuid_entry(vcpu, 0);

	return e && (e->ebx == VENDOR_AMD_EBX || e->ebx == VENDOR_HYGON_EBX);
}

/* ---- what KVM supports ---- */

/*
 * kvm_set_cpu_caps(): KVM's feature words. Upstream masks its list with the host's
 * CPUID; here the host is the simulated CPU model, which is a generic x86-64 (the leaf-1
 * baseline every 64-bit CPU has) plus the features pk_cpu_model names. Upstream calls
 * it from the vendor's hardware_setup (vmx_set_cpu_caps/svm_set_cpu_caps); the vendors
 * here add nothing of their own.
 */
void kvm_set_cpu_caps(void)
{
	const struct pk_cpu_model *cm = &this_machine()->model;
	u32 *caps = kvm_global()->kvm_cpu_caps;
	bool intel = cm->vendor == PK_VENDOR_INTEL;

	memset(caps, 0, sizeof(kvm_global()->kvm_cpu_caps));
	caps[CPUID_1_EDX] = feature_bit(X86_FEATURE_FPU) | feature_bit(X86_FEATURE_VME) |
			    feature_bit(X86_FEATURE_DE) | feature_bit(X86_FEATURE_PSE) |
			    feature_bit(X86_FEATURE_TSC) | feature_bit(X86_FEATURE_MSR) |
			    feature_bit(X86_FEATURE_PAE) | feature_bit(X86_FEATURE_MCE) |
			    feature_bit(X86_FEATURE_CX8) | feature_bit(X86_FEATURE_APIC) |
			    feature_bit(X86_FEATURE_SEP) | feature_bit(X86_FEATURE_MTRR) |
			    feature_bit(X86_FEATURE_PGE) | feature_bit(X86_FEATURE_MCA) |
			    feature_bit(X86_FEATURE_CMOV) | feature_bit(X86_FEATURE_PAT) |
			    feature_bit(X86_FEATURE_PSE36) | feature_bit(X86_FEATURE_CLFLUSH) |
			    feature_bit(X86_FEATURE_MMX) | feature_bit(X86_FEATURE_FXSR) |
			    feature_bit(X86_FEATURE_XMM) | feature_bit(X86_FEATURE_XMM2);
	/* X2APIC, TSC_DEADLINE_TIMER and HYPERVISOR are EMULATED_F: always offered. */
	caps[CPUID_1_ECX] = feature_bit(X86_FEATURE_XMM3) | feature_bit(X86_FEATURE_CX16) |
			    feature_bit(X86_FEATURE_X2APIC) |
			    feature_bit(X86_FEATURE_TSC_DEADLINE_TIMER) |
			    feature_bit(X86_FEATURE_HYPERVISOR);
	if (cm->has_fsgsbase)
		caps[CPUID_7_0_EBX] |= feature_bit(X86_FEATURE_FSGSBASE);
	if (cm->has_rtm)
		caps[CPUID_7_0_EBX] |= feature_bit(X86_FEATURE_RTM);
	if (cm->has_rdpid)
		caps[CPUID_7_ECX] |= feature_bit(X86_FEATURE_RDPID);
	/*
	 * Speculation controls (kvm-x86/linux arch/x86/kvm/cpuid.c 1a27afa0511e,
	 * kvm_initialize_cpu_caps). The CPU model's has_* flags stand for the kernel's
	 * synthetic X86_FEATURE_IBPB/IBRS/STIBP/SSBD, which init_speculation_control()
	 * sets from either vendor's CPUID bits; the raw bits are the vendor's own leaf.
	 * KVM then offers each control in BOTH vendors' leaves: F() keeps the raw bits,
	 * kvm_cpu_cap_set() adds the other vendor's.
	 */
	if (intel) {
		/* F(SPEC_CTRL), F(SPEC_CTRL_SSBD), F(INTEL_STIBP) of CPUID_7_EDX. */
		if (cm->has_ibrs && cm->has_ibpb)
			caps[CPUID_7_EDX] |= feature_bit(X86_FEATURE_SPEC_CTRL);
		if (cm->has_stibp)
			caps[CPUID_7_EDX] |= feature_bit(X86_FEATURE_INTEL_STIBP);
		if (cm->has_ssbd)
			caps[CPUID_7_EDX] |= feature_bit(X86_FEATURE_SPEC_CTRL_SSBD);
	} else {
		/* F(AMD_IBPB), F(AMD_IBRS), F(AMD_SSBD), F(AMD_STIBP) of CPUID_8000_0008_EBX. */
		if (cm->has_ibpb)
			caps[CPUID_8000_0008_EBX] |= feature_bit(X86_FEATURE_AMD_IBPB);
		if (cm->has_ibrs)
			caps[CPUID_8000_0008_EBX] |= feature_bit(X86_FEATURE_AMD_IBRS);
		if (cm->has_stibp)
			caps[CPUID_8000_0008_EBX] |= feature_bit(X86_FEATURE_AMD_STIBP);
		if (cm->has_ssbd)
			caps[CPUID_8000_0008_EBX] |= feature_bit(X86_FEATURE_AMD_SSBD);
		/*
		 * SPEC_CTRL needs AMD_IBPB_RET as well as AMD_IBPB and AMD_IBRS; no
		 * model CPU has IBPB_RET, so an AMD guest sees SPEC_CTRL only in 8000_0008.
		 */
		if (cm->has_stibp)		/* boot_cpu_has(X86_FEATURE_STIBP) */
			caps[CPUID_7_EDX] |= feature_bit(X86_FEATURE_INTEL_STIBP);
		if (cm->has_ssbd)		/* boot_cpu_has(X86_FEATURE_AMD_SSBD) */
			caps[CPUID_7_EDX] |= feature_bit(X86_FEATURE_SPEC_CTRL_SSBD);
	}
	if (cm->has_ibpb)			/* boot_cpu_has(X86_FEATURE_IBPB) */
		caps[CPUID_8000_0008_EBX] |= feature_bit(X86_FEATURE_AMD_IBPB);
	if (cm->has_ibrs)			/* boot_cpu_has(X86_FEATURE_IBRS) */
		caps[CPUID_8000_0008_EBX] |= feature_bit(X86_FEATURE_AMD_IBRS);
	if (cm->has_stibp)			/* boot_cpu_has(X86_FEATURE_STIBP) */
		caps[CPUID_8000_0008_EBX] |= feature_bit(X86_FEATURE_AMD_STIBP);
	if (intel && cm->has_ssbd)		/* boot_cpu_has(X86_FEATURE_SPEC_CTRL_SSBD) */
		caps[CPUID_8000_0008_EBX] |= feature_bit(X86_FEATURE_AMD_SSBD);
	caps[CPUID_8000_0001_ECX] = feature_bit(X86_FEATURE_LAHF_LM);
	caps[CPUID_8000_0001_EDX] = feature_bit(X86_FEATURE_SYSCALL) | feature_bit(X86_FEATURE_NX) |
				    feature_bit(X86_FEATURE_LM) |
				    (cm->has_rdtscp ? feature_bit(X86_FEATURE_RDTSCP) : 0);
	/* AMD repeats the leaf-1 EDX features in 0x80000001 (ALIASED_1_EDX_F); Intel does not. */
	if (!intel)
		caps[CPUID_8000_0001_EDX] |= caps[CPUID_1_EDX] & 0x0183f3ff;
}

/*
 * KVM_GET_SUPPORTED_CPUID (kernel: kvm_dev_ioctl_get_cpuid, __do_cpuid_func): the leaves
 * below, each feature word taken from kvm_cpu_caps. KVM's paravirtual leaves
 * (0x40000000...) are not offered: the model has no kvmclock or PV features.
 * -E2BIG if `max` entries do not fit them all.
 */
int kvm_get_supported_cpuid(struct kvm_cpuid_entry2 *e, int max)
{
	static const struct { u32 function, index, flags; } leaves[] = {
		{ 0, 0, 0 }, { 1, 0, 0 }, { 7, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX },
		{ 0x80000000, 0, 0 }, { 0x80000001, 0, 0 }, { 0x80000008, 0, 0 },
	};
	const struct pk_cpu_model *cm = &this_machine()->model;
	const u32 *caps = kvm_global()->kvm_cpu_caps;
	bool intel = cm->vendor == PK_VENDOR_INTEL;
	/* A family/model/stepping of the vendor's era: Skylake-SP, Zen 3. */
	u32 signature = intel ? 0x00050654 : 0x00a00f11;
	int n = ARRAY_SIZE(leaves);

	if (max < n)
		return -E2BIG;
	memset(e, 0, sizeof(*e) * n);
	for (int i = 0; i < n; i++) {
		e[i].function = leaves[i].function;
		e[i].index = leaves[i].index;
		e[i].flags = leaves[i].flags;
		for (int w = 0; w < NR_KVM_CPU_CAPS; w++)
			if (reverse_cpuid[w].function == e[i].function &&
			    reverse_cpuid[w].index == e[i].index)
				*cpuid_entry_reg(&e[i], reverse_cpuid[w].reg) = caps[w];
		switch (e[i].function) {
		case 0:
			e[i].eax = 7;		/* highest basic leaf */
			if (intel) {
				e[i].ebx = VENDOR_INTEL_EBX;
				e[i].ecx = VENDOR_INTEL_ECX;
				e[i].edx = VENDOR_INTEL_EDX;
			} else {
				e[i].ebx = VENDOR_AMD_EBX;
				e[i].ecx = VENDOR_AMD_ECX;
				e[i].edx = VENDOR_AMD_EDX;
			}
			break;
		case 1:
			e[i].eax = signature;
			e[i].ebx = 8 << 8;	/* CLFLUSH line size, in 8-byte units */
			break;
		case 0x80000000:
			e[i].eax = 0x80000008;	/* highest extended leaf */
			break;
		case 0x80000001:
			if (!intel)
				e[i].eax = signature;
			break;
		case 0x80000008:
			e[i].eax = 0x3030;	/* 48-bit physical and virtual addresses */
			break;
		}
	}
	return n;
}

/* ---- the guest's CPUID ---- */

/*
 * Bits KVM keeps in step with vCPU state (kernel: kvm_update_cpuid_runtime). Of them
 * the model has CPUID.1:EDX.APIC, which follows IA32_APIC_BASE.EN; OSXSAVE and OSPKE
 * follow CR4 bits the model does not have.
 */
void kvm_update_cpuid_runtime(struct kvm_vcpu *vcpu)
{
	struct kvm_cpuid_entry2 *best = (struct kvm_cpuid_entry2 *)kvm_find_cpuid_entry(vcpu, 1);
	bool apic = vcpu->arch.apic_base & MSR_IA32_APICBASE_ENABLE;

	if (!best)
		return;
	if (apic)
		best->edx |= feature_bit(X86_FEATURE_APIC);
	else
		best->edx &= ~feature_bit(X86_FEATURE_APIC);
	if (apic && kvm_cpu_cap_has(X86_FEATURE_APIC) && (best->edx & feature_bit(X86_FEATURE_APIC)))
		vcpu->arch.cpu_caps[CPUID_1_EDX] |= feature_bit(X86_FEATURE_APIC);
	else
		vcpu->arch.cpu_caps[CPUID_1_EDX] &= ~feature_bit(X86_FEATURE_APIC);
}

int cpuid_query_maxphyaddr(struct kvm_vcpu *vcpu)
{
	const struct kvm_cpuid_entry2 *best = kvm_find_cpuid_entry(vcpu, 0x80000000);

	if (!best || best->eax < 0x80000008)
		return 36;
	best = kvm_find_cpuid_entry(vcpu, 0x80000008);
	return best ? (int)(best->eax & 0xff) : 36;
}

/* Physical-address bits the guest's CPUID says do not exist. */
u64 kvm_vcpu_reserved_gpa_bits_raw(struct kvm_vcpu *vcpu)
{
	int maxphyaddr = cpuid_query_maxphyaddr(vcpu);

	return maxphyaddr >= 64 ? 0 : ~0ULL << maxphyaddr;
}

/*
 * kvm_vcpu_after_set_cpuid(): the guest may use a feature if KVM supports it and the
 * guest's CPUID has it ("A vCPU has a feature if it's supported by KVM and is enabled in
 * guest CPUID"). The switch's own booleans are derived from those words.
 */
static void kvm_vcpu_after_set_cpuid(struct kvm_vcpu *vcpu)
{
	struct kvm_vcpu_arch *a = &vcpu->arch;
	const u32 *caps = kvm_global()->kvm_cpu_caps;
	struct kvm_lapic *apic = a->apic;
	const struct kvm_cpuid_entry2 *best;

	memset(a->cpu_caps, 0, sizeof(a->cpu_caps));
	for (int w = 0; w < NR_KVM_CPU_CAPS; w++) {
		struct kvm_cpuid_entry2 *e = (struct kvm_cpuid_entry2 *)
			kvm_find_cpuid_entry_index(vcpu, reverse_cpuid[w].function,
						   reverse_cpuid[w].index);
		if (e)
			a->cpu_caps[w] = caps[w] & *cpuid_entry_reg(e, reverse_cpuid[w].reg);
	}
	kvm_update_cpuid_runtime(vcpu);

	a->cap_intel_compatible = guest_cpuid_is_intel_compatible(vcpu);
	a->cap_lm = guest_cpu_cap_has(vcpu, X86_FEATURE_LM);
	a->cap_rdtscp = guest_cpu_cap_has(vcpu, X86_FEATURE_RDTSCP);
	a->cap_rdpid = guest_cpu_cap_has(vcpu, X86_FEATURE_RDPID);
	a->cap_spec_ctrl = guest_cpu_cap_has(vcpu, X86_FEATURE_SPEC_CTRL) ||
			   guest_cpu_cap_has(vcpu, X86_FEATURE_AMD_IBRS);
	a->cap_ibpb = guest_cpu_cap_has(vcpu, X86_FEATURE_SPEC_CTRL) ||
		      guest_cpu_cap_has(vcpu, X86_FEATURE_AMD_IBPB);
	a->cap_stibp = guest_cpu_cap_has(vcpu, X86_FEATURE_INTEL_STIBP) ||
		       guest_cpu_cap_has(vcpu, X86_FEATURE_AMD_STIBP);
	a->cap_ssbd = guest_cpu_cap_has(vcpu, X86_FEATURE_SPEC_CTRL_SSBD) ||
		      guest_cpu_cap_has(vcpu, X86_FEATURE_AMD_SSBD);

	best = kvm_find_cpuid_entry(vcpu, 1);
	if (best && apic) {
		if (best->ecx & feature_bit(X86_FEATURE_TSC_DEADLINE_TIMER))
			apic->lapic_timer.timer_mode_mask = 3 << 17;
		else
			apic->lapic_timer.timer_mode_mask = 1 << 17;
		kvm_apic_set_version(vcpu);
	}

	/* What KVM_SET_SREGS, set_cr4 and kvm_apic_set_base check against. */
	a->reserved_gpa_bits = kvm_vcpu_reserved_gpa_bits_raw(vcpu);
	a->cr4_guest_rsvd_bits = __cr4_reserved_bits(vcpu);

	/* Invoke the vendor callback only after the above state is updated. */
	kvm_x86_call(vcpu_after_set_cpuid)(vcpu);
	kvm_make_request(KVM_REQ_RECALC_INTERCEPTS, vcpu);
}

/* Addresses are 48 or 57 bits wide in the canonical checks (kernel: kvm_check_cpuid). */
static int kvm_check_cpuid(struct kvm_vcpu *vcpu)
{
	const struct kvm_cpuid_entry2 *best = kvm_find_cpuid_entry(vcpu, 0x80000008);

	if (best) {
		int vaddr_bits = (best->eax & 0xff00) >> 8;

		if (vaddr_bits != 48 && vaddr_bits != 57 && vaddr_bits != 0)
			return pk_err(-EINVAL, "KVM_SET_CPUID2: CPUID.0x80000008 gives %d "
				      "virtual-address bits (48 or 57 only)", vaddr_bits);
	}
	return 0;
}

/*
 * After KVM_RUN the vCPU model may not change; a VMM may repeat the same CPUID (QEMU
 * does on vCPU hotplug). The incoming table is the vCPU's already (swapped in by
 * kvm_set_cpuid) and gets KVM's runtime bits before it is compared with the old one,
 * `e2` (kernel: kvm_cpuid_check_equal).
 */
static int kvm_cpuid_check_equal(struct kvm_vcpu *vcpu, const struct kvm_cpuid_entry2 *e2,
				 int nent)
{
	kvm_update_cpuid_runtime(vcpu);
	if (nent != vcpu->arch.cpuid_nent)
		return pk_err(-EINVAL, "KVM_SET_CPUID2 after KVM_RUN must repeat the vCPU's "
			      "CPUID exactly: %d entries, not %d", nent, vcpu->arch.cpuid_nent);
	for (int i = 0; i < nent; i++) {
		const struct kvm_cpuid_entry2 *orig = &vcpu->arch.cpuid_entries[i];

		if (e2[i].function != orig->function || e2[i].index != orig->index ||
		    e2[i].flags != orig->flags || e2[i].eax != orig->eax ||
		    e2[i].ebx != orig->ebx || e2[i].ecx != orig->ecx || e2[i].edx != orig->edx)
			return pk_err(-EINVAL, "KVM_SET_CPUID2 after KVM_RUN must repeat the "
				      "vCPU's CPUID exactly: entry %d (leaf %#x.%u) differs", i,
				      orig->function, orig->index);
	}
	return 0;
}

#define SWAP(a, b)	do { __typeof__(a) __t = (a); (a) = (b); (b) = __t; } while (0)

/*
 * kernel: kvm_set_cpuid(). `*e2` (kernel memory) becomes the vCPU's table and on success
 * the old one is handed back in its place for the caller to free; on failure nothing
 * changed and `*e2` is still the caller's.
 */
static int kvm_set_cpuid(struct kvm_vcpu *vcpu, struct kvm_cpuid_entry2 **e2, int *nent)
{
	u32 vcpu_caps[NR_KVM_CPU_CAPS];
	int r;

	SWAP(vcpu->arch.cpuid_entries, *e2);
	SWAP(vcpu->arch.cpuid_nent, *nent);
	memcpy(vcpu_caps, vcpu->arch.cpu_caps, sizeof(vcpu_caps));
	if (kvm_vcpu_has_run(vcpu)) {
		r = kvm_cpuid_check_equal(vcpu, *e2, *nent);
		if (r)
			goto err;
		return 0;
	}
	r = kvm_check_cpuid(vcpu);
	if (r)
		goto err;
	kvm_vcpu_after_set_cpuid(vcpu);
	return 0;
err:
	memcpy(vcpu->arch.cpu_caps, vcpu_caps, sizeof(vcpu_caps));
	SWAP(vcpu->arch.cpuid_entries, *e2);
	SWAP(vcpu->arch.cpuid_nent, *nent);
	return r;
}

/*
 * KVM_SET_CPUID2 (kernel: kvm_vcpu_ioctl_set_cpuid2): at most KVM_MAX_CPUID_ENTRIES
 * entries (E2BIG), copied into kernel memory (vmemdup_array_user), then kvm_set_cpuid.
 */
int kvm_vcpu_ioctl_set_cpuid2(struct kvm_vcpu *vcpu, const struct kvm_cpuid_entry2 *entries, int n)
{
	struct pk_machine *m = vcpu->kvm->m;
	struct kvm_cpuid_entry2 *e2 = NULL;
	int nent = n, r;

	if (n < 0 || n > KVM_MAX_CPUID_ENTRIES)
		return pk_err(-E2BIG, "KVM_SET_CPUID2: %d entries, at most KVM_MAX_CPUID_ENTRIES "
			      "(%d)", n, KVM_MAX_CPUID_ENTRIES);
	if (n) {
		e2 = pk_kzalloc(m, n * sizeof(*e2), 64);
		if (!e2)
			return pk_err(-ENOMEM, "KVM_SET_CPUID2: no kernel memory for %d entries", n);
		memcpy(e2, entries, n * sizeof(*e2));
	}
	vcpu_load(vcpu);
	r = kvm_set_cpuid(vcpu, &e2, &nent);
	vcpu_put(vcpu);
	/* The old table on success, the refused one on failure: either way not the vCPU's. */
	pk_kfree(m, e2, nent * sizeof(*e2), 64);
	return r;
}

/* KVM_GET_CPUID2: the entries as set, with KVM's runtime bits. *n: in, room; out, count. */
int kvm_vcpu_ioctl_get_cpuid2(struct kvm_vcpu *vcpu, struct kvm_cpuid_entry2 *entries, int *n)
{
	if (*n < vcpu->arch.cpuid_nent) {
		*n = vcpu->arch.cpuid_nent;
		return -E2BIG;
	}
	kvm_update_cpuid_runtime(vcpu);
	memcpy(entries, vcpu->arch.cpuid_entries,
	       sizeof(*entries) * vcpu->arch.cpuid_nent);
	*n = vcpu->arch.cpuid_nent;
	return 0;
}

/*
 * A leaf past the highest one of its class: Intel CPUs answer with the highest basic
 * leaf, AMD ones with zeros (kernel: get_out_of_range_cpuid_entry).
 */
static const struct kvm_cpuid_entry2 *get_out_of_range_cpuid_entry(struct kvm_vcpu *vcpu,
								   u32 *fn_ptr, u32 index)
{
	const struct kvm_cpuid_entry2 *basic, *class;
	u32 function = *fn_ptr;

	basic = kvm_find_cpuid_entry(vcpu, 0);
	if (!basic)
		return NULL;
	if (guest_cpuid_is_amd_compatible(vcpu))
		return NULL;
	if (function >= 0x40000000 && function <= 0x4fffffff)
		class = kvm_find_cpuid_entry(vcpu, function & 0xffffff00);
	else if (function >= 0xc0000000)
		class = kvm_find_cpuid_entry(vcpu, 0xc0000000);
	else
		class = kvm_find_cpuid_entry(vcpu, function & 0x80000000);
	if (class && function <= class->eax)
		return NULL;
	*fn_ptr = basic->eax;
	return kvm_find_cpuid_entry_index(vcpu, basic->eax, index);
}

int kvm_emulate_cpuid(struct kvm_vcpu *vcpu)
{
	u32 fn = (u32)kvm_rax_read(vcpu), idx = (u32)kvm_rcx_read(vcpu);
	const struct kvm_cpuid_entry2 *e = kvm_find_cpuid_entry_index(vcpu, fn, idx);

	vcpu->stat.cpuid_exits++;
	if (!e)
		e = get_out_of_range_cpuid_entry(vcpu, &fn, idx);
	kvm_register_write(vcpu, VCPU_REGS_RAX, e ? e->eax : 0);
	kvm_register_write(vcpu, VCPU_REGS_RBX, e ? e->ebx : 0);
	kvm_register_write(vcpu, VCPU_REGS_RCX, e ? e->ecx : 0);
	kvm_register_write(vcpu, VCPU_REGS_RDX, e ? e->edx : 0);
	return kvm_skip_emulated_instruction(vcpu);
}
