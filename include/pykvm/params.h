/* SPDX-License-Identifier: MIT */
/*
 * Module parameters (kernel: module_param() / kvm_intel.* / kvm_amd.*): a table of named
 * fields of a module's parameter struct, settable by name before the module loads
 * (strategies from the kernel's history and the historical bugs of WORLD-SWITCH.md).
 *
 * Values are parsed as the kernel parses them (kernel/params.c, lib/kstrtox.c): a bool
 * takes what kstrtobool() takes (first character y/Y/t/T/1 or n/N/f/F/0, or on/off; a bare
 * name means true, as param_set_bool() has it), an unsigned int what kstrtouint(s, 0)
 * takes (decimal, 0x hex, 0 octal; nothing after the number but one newline). Python,
 * the command line and the C loader all go through pk_param_parse(): one parser.
 */
#ifndef _PYKVM_PARAMS_H
#define _PYKVM_PARAMS_H

#include "pykvm/types.h"

/* cffi:begin */
enum pk_param_type {
	PK_PARAM_BOOL = 0,	/* a bool field */
	PK_PARAM_UINT = 1,	/* an unsigned int field */
};

/* Parse `val` (NULL: the bare name) for a parameter of `type`; 0, -EINVAL or -ERANGE. */
int pk_param_parse(u32 type, const char *val, u64 *out);
/* cffi:end */

struct pk_param {
	const char *name;
	u32 offset;			/* of the field in the module's parameter struct */
	u32 type;			/* enum pk_param_type */
	u64 upstream;			/* the value upstream Linux has today */
	const char *doc;
};

#define PK_PARAM(type_, field, up, text) \
	{ .name = #field, .offset = offsetof(type_, field), .type = PK_PARAM_BOOL, \
	  .upstream = (up), .doc = text }
#define PK_PARAM_UINT(type_, field, up, text) \
	{ .name = #field, .offset = offsetof(type_, field), .type = PK_PARAM_UINT, \
	  .upstream = (up), .doc = text }

/* A loaded module's parameters: its name ("kvm", "kvm_intel", "kernel"), table, values. */
struct pk_param_module {
	const char *name;
	const struct pk_param *table;
	int nr;
	void *values;
};

/* Every parameter of a table to its upstream value. */
void pk_params_init(void *values, const struct pk_param *t, int n);

/*
 * Apply "module.name=value" items separated by commas or blanks to the loaded modules.
 * An unqualified name is looked up in every module. -ENOENT names a parameter or module
 * that is not loaded, -EINVAL/-ERANGE a value the parameter's type refuses; the reason
 * is left for pk_last_error().
 */
int pk_params_apply(const struct pk_param_module *mods, int nr_mods, const char *params);

#endif
