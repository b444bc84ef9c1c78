/* The machine (csrc/arch/machine.c). */
struct pk_cpu_model {
	uint32_t vendor;
	bool has_rdtscp;
	bool has_rdpid;
	bool has_ibrs;
	bool has_stibp;
	bool has_ssbd;
	bool has_ibpb;
	bool has_rtm;
	bool has_fsgsbase;
	bool has_virt_ssbd;
	bool has_v_spec_ctrl;
	bool has_load_efer;
	bool has_eibrs;
};
struct pk_machine;
struct pk_machine *pk_machine_create(uint32_t nr_cpus, const struct pk_cpu_model *model);
void pk_machine_destroy(struct pk_machine *m);
int pk_machine_set_cpu(struct pk_machine *m, uint32_t cpu);
