/* SPDX-License-Identifier: MIT */
/*
 * Module parameters (kernel: module_param() / kvm_intel.* / kvm_amd.*): a table of named
 * bool fields of a module's parameter struct, settable by name before the module loads
 * (strategies from the kernel's history and the historical bugs of WORLD-SWITCH.md).
 */
#ifndef _PYKVM_PARAMS_H
#define _PYKVM_PARAMS_H

#include "pykvm/types.h"

struct pk_param {
	const char *name;
	u32 offset;			/* of a bool in the module's parameter struct */
	bool upstream;			/* the value upstream Linux has today */
	const char *doc;
};

#define PK_PARAM(type, field, up, text) \
	{ .name = #field, .offset = offsetof(type, field), .upstream = up, .doc = text }

/* Every parameter to its upstream value. */
static inline void pk_params_init(void *p, const struct pk_param *t, int n)
{
	for (int i = 0; i < n; i++)
		*(bool *)((u8 *)p + t[i].offset) = t[i].upstream;
}

/* 0, or -1 if the table has no parameter `name`. */
static inline int pk_param_set(void *p, const struct pk_param *t, int n, const char *name, bool v)
{
	for (int i = 0; i < n; i++) {
		if (!strcmp(t[i].name, name)) {
			*(bool *)((u8 *)p + t[i].offset) = v;
			return 0;
		}
	}
	return -1;
}

#endif
