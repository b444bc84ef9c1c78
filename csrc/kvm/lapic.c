// SPDX-License-Identifier: MIT
/*
 * The local APIC's KVM side (kernel: arch/x86/kvm/lapic.c), as far as pykvm has one:
 * there is no in-kernel APIC, but IA32_APIC_BASE is still checked and kept as upstream
 * does it, for KVM_SET_MSRS, guest WRMSR and KVM_SET_SREGS alike.
 */
#include "x86.h"

#define MSR_IA32_APICBASE_BSP		BIT_ULL(8)
#define X2APIC_ENABLE			BIT_ULL(10)
#define MSR_IA32_APICBASE_ENABLE	BIT_ULL(11)

/* kernel: enum lapic_mode and kvm_apic_mode(). */
enum lapic_mode {
	LAPIC_MODE_DISABLED = 0,
	LAPIC_MODE_INVALID = X2APIC_ENABLE,
	LAPIC_MODE_XAPIC = MSR_IA32_APICBASE_ENABLE,
	LAPIC_MODE_X2APIC = MSR_IA32_APICBASE_ENABLE | X2APIC_ENABLE,
};

static enum lapic_mode kvm_apic_mode(u64 apic_base)
{
	return apic_base & (MSR_IA32_APICBASE_ENABLE | X2APIC_ENABLE);
}

/*
 * kernel: kvm_apic_set_base() (lapic.c, "KVM: x86: Pass new value and host_initiated to
 * kvm_apic_set_base()", Nov 2024). Reserved: the address bits above MAXPHYADDR, bits
 * 7:0 and 9, and x2APIC enable when the guest's CPUID has no x2APIC; x2APIC without
 * xAPIC enable is an invalid mode. The guest may not go from x2APIC straight to xAPIC,
 * nor from disabled straight to x2APIC (SDM 10.12.5); userspace may.
 */
int kvm_apic_set_base(struct kvm_vcpu *vcpu, u64 value, bool host_initiated)
{
	enum lapic_mode old_mode = kvm_apic_mode(vcpu->arch.apic_base);
	enum lapic_mode new_mode = kvm_apic_mode(value);
	u64 reserved_bits = vcpu->arch.reserved_gpa_bits | 0x2ff |
			    (vcpu->arch.cap_x2apic ? 0 : X2APIC_ENABLE);

	if ((value & reserved_bits) || new_mode == LAPIC_MODE_INVALID)
		return 1;
	if (!host_initiated) {
		if (old_mode == LAPIC_MODE_X2APIC && new_mode == LAPIC_MODE_XAPIC)
			return 1;
		if (old_mode == LAPIC_MODE_DISABLED && new_mode == LAPIC_MODE_X2APIC)
			return 1;
	}
	vcpu->arch.apic_base = value;
	return 0;
}
