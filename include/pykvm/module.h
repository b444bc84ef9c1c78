/* SPDX-License-Identifier: MIT */
/*
 * Loadable modules of the host kernel (kernel/module/): a module has a name, its
 * module_param()s and an init function. module_init() registers a module with the loader
 * when pykvm's C library is loaded (a constructor stands in for the module's ELF section),
 * so KVM's common code finds a vendor module by name and never names it: kvm_intel and
 * kvm_amd register themselves, as vmx/main.c and svm.c do with module_init().
 *
 * Unlike a real host, one library holds every module, and "loading" one means running its
 * init for one simulated machine: each Machine loads kvm and one vendor module.
 */
#ifndef _PYKVM_MODULE_H
#define _PYKVM_MODULE_H

#include "pykvm/params.h"

struct pk_machine;

struct pk_module {
	const char *name;		/* "kvm_intel" */
	const char *alias;		/* pykvm's name for a vendor module ("vmx"), or NULL */
	const struct pk_param *kp;	/* its module_param()s, ending with an empty entry */
	int num_kp;			/* counted when the module registers */
	/* module_init(): load into a machine with "module.name=value" parameters; NULL for
	 * parameters that belong to no loadable module ("kvm" is loaded by its users). */
	int (*init)(struct pk_machine *m, const char *params);
	struct pk_module *next;
};

void pk_register_module(struct pk_module *mod);
/* A registered module by name or alias, or NULL. */
const struct pk_module *pk_find_module(const char *name);

#define module_init(mod)							\
	static void __attribute__((constructor)) __pk_register_##mod(void)	\
	{									\
		pk_register_module(&(mod));					\
	}

#endif
