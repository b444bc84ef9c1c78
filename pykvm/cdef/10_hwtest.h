/* TEST ONLY: hardware entry points for tests/test_hw_*.py (include/pykvm/hwtest.h). */
struct pk_hwtest_seg {
	uint64_t base;
	uint32_t limit;
	uint32_t ar;
	uint16_t selector;
};

struct pk_hwtest_dt {
	uint64_t base;
	uint16_t limit;
};

struct pk_hwtest_cpu {
	uint64_t regs[16];
	uint64_t rip, rflags, cr0, cr2, cr3, cr4;
	struct pk_hwtest_seg seg[8];
	struct pk_hwtest_dt gdtr, idtr;
	uint64_t msr[32];
	uint64_t tsc;
	uint64_t current_vmcs;
	uint64_t insn_budget;
	uint32_t mode;
	uint8_t gif;
	uint8_t nmi_held;
	uint8_t vmxon;
};

struct pk_hwtest_event {
	uint32_t kind;
	uint32_t msr;
	uint16_t port;
	uint8_t size;
	uint8_t in;
	uint8_t insn_len;
	uint8_t write;
	uint64_t gpa;
};

int pk_hwtest_const(const char *name, int64_t *value);

int pk_hwtest_get_cpu(struct pk_machine *m, uint32_t cpu, struct pk_hwtest_cpu *out);
int pk_hwtest_set_cpu(struct pk_machine *m, uint32_t cpu, const struct pk_hwtest_cpu *in);

int pk_hwtest_msr_read(struct pk_machine *m, uint32_t cpu, uint32_t index, uint64_t *val);
int pk_hwtest_msr_write(struct pk_machine *m, uint32_t cpu, uint32_t index, uint64_t val);

int pk_hwtest_insn(struct pk_machine *m, uint32_t cpu, int insn, uint64_t a, uint64_t b,
		   uint64_t *out);

uint64_t pk_hwtest_alloc(struct pk_machine *m, uint64_t size, uint64_t align);
int pk_hwtest_phys_read(struct pk_machine *m, uint64_t pa, void *buf, uint64_t len);
int pk_hwtest_phys_write(struct pk_machine *m, uint64_t pa, const void *buf, uint64_t len);
uint64_t pk_hwtest_memslot(struct pk_machine *m, uint64_t gpa, uint8_t *hva, uint64_t size);

int pk_hwtest_intercept(struct pk_machine *m, uint32_t cpu, uint64_t vmcb_pa,
			const struct pk_hwtest_event *ev);
int pk_hwtest_last_event(struct pk_machine *m, uint32_t cpu, struct pk_hwtest_event *out);

void pk_hwtest_count_nmis(struct pk_machine *m);
void pk_hwtest_nmi(struct pk_machine *m, uint32_t cpu);
uint64_t pk_hwtest_nmis(uint32_t cpu);
uint64_t pk_hwtest_nmi_gsbase(uint32_t cpu);

uint64_t pk_hwtest_host_bugs(struct pk_machine *m);

uint64_t pk_hwtest_ops(struct pk_machine *m, uint32_t path, uint32_t op);
uint64_t pk_hwtest_msr_ops(struct pk_machine *m, uint32_t path, uint32_t dir, uint32_t slot);
uint64_t pk_hwtest_cycles(struct pk_machine *m, uint32_t path);
void pk_hwtest_reset_costs(struct pk_machine *m);
void pk_hwtest_set_path(struct pk_machine *m, uint32_t path);
void pk_hwtest_set_op_cost(struct pk_machine *m, uint32_t op, uint32_t cycles);
void pk_hwtest_set_msr_cost(struct pk_machine *m, uint32_t dir, uint32_t slot, uint32_t cycles);
