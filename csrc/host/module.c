// SPDX-License-Identifier: MIT
/* The module loader's list of modules (include/pykvm/module.h). */
#include "pykvm/module.h"

static struct pk_module *modules;

void pk_register_module(struct pk_module *mod)
{
	/* A parameter table ends with an entry without a name (the __param section's end). */
	mod->num_kp = 0;
	while (mod->kp && mod->kp[mod->num_kp].name)
		mod->num_kp++;
	mod->next = modules;
	modules = mod;
}

const struct pk_module *pk_find_module(const char *name)
{
	for (const struct pk_module *mod = modules; mod; mod = mod->next)
		if (!strcmp(mod->name, name) || (mod->alias && !strcmp(mod->alias, name)))
			return mod;
	return NULL;
}
