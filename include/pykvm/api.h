/* SPDX-License-Identifier: MIT */
/*
 * Everything the Python binding may call. pykvm/_build.py gives cffi the parts of this
 * header and the headers it includes that sit between cffi:begin and cffi:end markers.
 */
#ifndef _PYKVM_API_H
#define _PYKVM_API_H

#include "pykvm/host.h"
#include "pykvm/printk.h"

/* cffi:begin */
struct pk_machine;
struct kvm;
struct kvm_vcpu;
struct pk_machine *pk_machine_create(u32 nr_cpus, const struct pk_cpu_model *model);
void pk_machine_destroy(struct pk_machine *m);
int pk_machine_set_cpu(struct pk_machine *m, u32 cpu);
/* cffi:end */

#include "pykvm/exec.h"
#include "pykvm/kvm_api.h"
#include "pykvm/check.h"
#include "pykvm/vmm.h"

#endif
