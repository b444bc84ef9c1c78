/* The host /dev/kvm run loop (csrc/vmm/kvm_run_loop.c, include/pykvm/vmm.h). */
#define PK_VMM_MAX_PORT_DEVS 16
#define PK_VMM_DEV_SINK ...
#define PK_VMM_DEV_CONST ...
#define PK_VMM_STOP_EXIT ...
#define PK_VMM_STOP_BUDGET ...
struct pk_vmm_port_dev {
	uint16_t port;
	uint8_t kind;
	uint64_t value;
	uint64_t count;
};
struct pk_vmm_devs {
	uint32_t nr;
	struct pk_vmm_port_dev dev[16];
};
struct pk_vmm_loop_result {
	uint64_t handled;
	int32_t error;
	uint32_t stop;
};
int pk_vmm_run_loop(int vcpu_fd, void *run, struct pk_vmm_devs *devs, uint64_t max_exits,
		    struct pk_vmm_loop_result *res);
int pk_vmm_kvm_run(int vcpu_fd);
