/* The simulated KVM (include/pykvm/kvm_api.h, csrc/kvm/kvm_main.c, csrc/arch/costs.c). */
struct kvm;
struct kvm_vcpu;

#define NR_VCPU_GPRS 16
#define NR_VCPU_SREGS 8

struct kvm_run {
	uint8_t request_interrupt_window;
	uint8_t immediate_exit;
	uint32_t exit_reason;
	union {
		struct { uint64_t hardware_entry_failure_reason; uint32_t cpu; } fail_entry;
		struct { uint8_t direction; uint8_t size; uint16_t port; uint32_t count; uint64_t data_offset; } io;
		struct { uint64_t phys_addr; uint8_t data[8]; uint32_t len; uint8_t is_write; } mmio;
		struct { uint32_t suberror; uint32_t ndata; uint64_t data[16]; } internal;
		struct { uint64_t nr; uint64_t args[6]; uint64_t ret; uint64_t flags; } hypercall;
		...;
	};
	uint8_t pio_data[64];
	...;
};

struct kvm_msr_entry { uint32_t index; uint32_t reserved; uint64_t data; };
struct kvm_cpuid_entry2 {
	uint32_t function; uint32_t index; uint32_t flags;
	uint32_t eax, ebx, ecx, edx;
	...;
};
struct kvm_segment {
	uint64_t base; uint32_t limit; uint16_t selector;
	uint8_t type, present, dpl, db, s, l, g, avl, unusable;
	...;
};
struct desc_ptr { uint16_t size; uint64_t address; };
struct pk_regs { uint64_t gpr[16]; uint64_t rip; uint64_t rflags; };
struct pk_sregs {
	struct kvm_segment seg[8];
	struct desc_ptr gdt, idt;
	uint64_t cr0, cr2, cr3, cr4, efer, apic_base;
};
struct kvm_vcpu_stat {
	uint64_t exits, fastpath_exits, userspace_exits, io_exits, mmio_exits, halt_exits,
		 msr_exits, cpuid_exits, irq_exits, preemptions, migrations;
};

int pk_kvm_load(struct pk_machine *m, const char *vendor, const char *params);
int pk_param_info(const char *module, int i, const char **owner, const char **name,
		  uint32_t *type, uint64_t *upstream, const char **doc);
int pk_param_parse(uint32_t type, const char *val, uint64_t *out);
const char *pk_last_error(void);
const char *pk_kvm_vendor_name(struct pk_machine *m);
int pk_create_vm(struct pk_machine *m, struct kvm **out);
int pk_vm_set_memslot(struct kvm *kvm, uint32_t slot, uint64_t gpa, uint64_t size, void *hva);
int pk_create_vcpu(struct kvm *kvm, int cpu, struct kvm_vcpu **out);
int pk_vcpu_run(struct kvm_vcpu *vcpu, uint64_t max_insns);
int pk_vcpu_run_ex(struct kvm_vcpu *vcpu, uint64_t max_insns, bool stay_in_kernel);
int pk_vcpu_return_to_user(struct kvm_vcpu *vcpu);
int pk_vcpu_run_preempted(struct kvm_vcpu *vcpu, uint64_t max_insns, uint32_t n, bool *preempted);
struct kvm_run *pk_vcpu_run_struct(struct kvm_vcpu *vcpu);
int pk_vcpu_get_msrs(struct kvm_vcpu *vcpu, struct kvm_msr_entry *entries, uint32_t n);
int pk_vcpu_set_msrs(struct kvm_vcpu *vcpu, struct kvm_msr_entry *entries, uint32_t n);
int pk_vcpu_get_regs(struct kvm_vcpu *vcpu, struct pk_regs *regs);
int pk_vcpu_set_regs(struct kvm_vcpu *vcpu, const struct pk_regs *regs);
int pk_vcpu_get_sregs(struct kvm_vcpu *vcpu, struct pk_sregs *sregs);
int pk_vcpu_set_sregs(struct kvm_vcpu *vcpu, const struct pk_sregs *sregs);
int pk_get_supported_cpuid(struct pk_machine *m, struct kvm_cpuid_entry2 *entries, int max);
int pk_vcpu_set_cpuid(struct kvm_vcpu *vcpu, const struct kvm_cpuid_entry2 *entries, int n);
int pk_vcpu_get_stat(struct kvm_vcpu *vcpu, struct kvm_vcpu_stat *stat);
int pk_vcpu_cpu(struct kvm_vcpu *vcpu);
int pk_vcpu_migrate(struct kvm_vcpu *vcpu, int cpu);
int pk_kvm_disable_virtualization_cpu(struct pk_machine *m, uint32_t cpu);
void pk_machine_reset_costs(struct pk_machine *m);
int pk_cpu_read_msr(struct pk_machine *m, uint32_t cpu, uint32_t index, uint64_t *val);
uint64_t pk_host_per_cpu_offset(struct pk_machine *m, uint32_t cpu);

int pk_nr_ops(void);
int pk_nr_paths(void);
int pk_nr_msrs(void);
const char *pk_op_name(int op);
const char *pk_path_name(int p);
const char *pk_msr_name(int s);
uint32_t pk_msr_index(int s);
uint64_t pk_cost_ops(const struct pk_machine *m, int path, int op);
uint64_t pk_cost_msr_ops(const struct pk_machine *m, int path, int write, int slot);
uint64_t pk_cost_cycles(const struct pk_machine *m, int path);
int pk_profile_set(struct pk_machine *m, int kind, int idx, uint32_t cycles);
uint64_t pk_machine_host_bugs(const struct pk_machine *m);
const char *pk_version(void);
int pk_sim_run_loop(struct kvm_vcpu *vcpu, struct pk_vmm_devs *devs, uint64_t max_exits,
		    uint64_t max_insns, struct pk_vmm_loop_result *res);

/* The oracle (include/pykvm/oracle.h). */
struct pk_violation { uint32_t obs; uint32_t cpu; uint32_t reg; uint32_t task; uint64_t expected; uint64_t actual; };
void pk_oracle_enable(struct pk_machine *m, bool on);
int pk_oracle_result(struct pk_machine *m, struct pk_violation *first, uint64_t *count);
void pk_oracle_reset(struct pk_machine *m);
int pk_host_run_other(struct pk_machine *m, uint32_t cpu);

/* The checker (include/pykvm/check.h) and tracepoints (include/pykvm/events.h). */
struct pk_step { uint8_t kind; uint8_t vcpu; uint8_t cpu; uint8_t inject; uint32_t at; };
struct pk_check_cfg {
	struct kvm_vcpu *vcpus[4];
	uint32_t nr_vcpus;
	uint8_t *gmem;
	uint64_t gmem_size;
	uint64_t gmem_dirty_lo, gmem_dirty_hi;
	uint64_t table_gpa[4];
	uint32_t regs[16];
	uint32_t nr_regs;
	uint32_t violation_port;
	uint32_t sync_port;
	uint64_t run_budget;
	uint32_t step_mask;
	uint32_t inject_mask;
};
struct pk_check_result {
	uint64_t events;
	uint64_t exits;
	uint64_t states;
	uint32_t depth_done;
	uint32_t violated;
	struct pk_violation violation;
	uint32_t nr_steps;
	struct pk_step steps[64];
	uint64_t walks;
};
struct pk_checker;
struct pk_checker *pk_checker_new(struct pk_machine *m, const struct pk_check_cfg *cfg);
void pk_checker_free(struct pk_checker *c);
void pk_checker_reset(struct pk_checker *c);
int pk_checker_replay(struct pk_checker *c, const struct pk_step *steps, uint32_t n,
		      struct pk_violation *v, bool trace);
int pk_checker_explore(struct pk_checker *c, uint32_t bound, uint64_t max_states, uint64_t walks,
		       uint32_t walk_len, uint64_t seed, double seconds, struct pk_check_result *res);
struct pk_trace_rec { uint32_t kind; uint32_t cpu; uint64_t a, b; };
struct pk_trace { uint32_t n; uint32_t dropped; struct pk_trace_rec rec[65536]; };
void pk_machine_set_trace(struct pk_machine *m, struct pk_trace *t);
