/* The guest interpreter in bare mode (csrc/arch/exec_bare.c, include/pykvm/exec.h). */
struct pk_bare_state {
	uint64_t regs[16];
	uint64_t rip;
	uint64_t rflags;
	uint64_t cr0, cr2, cr3, cr4;
	uint64_t seg_base[8];
	uint32_t seg_limit[8];
	uint32_t seg_ar[8];
	uint16_t seg_sel[8];
	uint64_t gdt_base, idt_base;
	uint16_t gdt_limit, idt_limit;
	uint64_t tsc;
	uint64_t insn_budget;
};
struct pk_bare_event {
	uint32_t kind;
	uint8_t insn_len;
	uint16_t port;
	uint8_t size;
	bool in;
	uint32_t msr;
	uint64_t gpa;
	uint8_t len;
	bool write;
	uint64_t data;
};
int pk_bare_map(struct pk_machine *m, uint32_t cpu, uint64_t gpa, uint64_t size, void *hva);
void pk_bare_unmap_all(struct pk_machine *m, uint32_t cpu);
void pk_bare_long_mode(struct pk_machine *m, uint32_t cpu);
void pk_bare_get_state(struct pk_machine *m, uint32_t cpu, struct pk_bare_state *st);
void pk_bare_set_state(struct pk_machine *m, uint32_t cpu, const struct pk_bare_state *st);
int pk_bare_get_msr(struct pk_machine *m, uint32_t cpu, uint32_t index, uint64_t *val);
int pk_bare_set_msr(struct pk_machine *m, uint32_t cpu, uint32_t index, uint64_t val);
uint32_t pk_bare_run(struct pk_machine *m, uint32_t cpu, uint64_t budget);
void pk_bare_event(struct pk_machine *m, uint32_t cpu, struct pk_bare_event *ev);
void pk_bare_mmio_fill(struct pk_machine *m, uint32_t cpu, uint64_t gpa, uint64_t data);
bool pk_bare_deliver_exception(struct pk_machine *m, uint32_t cpu, uint8_t vector,
			       bool has_error, uint32_t error);
uint64_t pk_bare_icache_ptr(struct pk_machine *m, uint32_t cpu);
void pk_bare_set_icache_ptr(struct pk_machine *m, uint32_t cpu, uint64_t ptr);
uint64_t pk_bare_retired(struct pk_machine *m);
