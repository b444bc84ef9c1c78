// SPDX-License-Identifier: MIT
/*
 * Module parameters as the kernel parses them (kernel/params.c: param_set_bool,
 * param_set_uint; lib/kstrtox.c: kstrtobool, kstrtouint). See include/pykvm/params.h.
 */
#include <errno.h>

#include "pykvm/params.h"
#include "pykvm/printk.h"

/* lib/kstrtox.c: only the first character counts, or the first two for on/off. */
static int kstrtobool(const char *s, bool *res)
{
	switch (s[0]) {
	case 'y': case 'Y': case 't': case 'T': case '1':
		*res = true;
		return 0;
	case 'n': case 'N': case 'f': case 'F': case '0':
		*res = false;
		return 0;
	case 'o': case 'O':
		switch (s[1]) {
		case 'n': case 'N':
			*res = true;
			return 0;
		case 'f': case 'F':
			*res = false;
			return 0;
		}
		break;
	}
	return -EINVAL;
}

/* lib/kstrtox.c: kstrtouint(s, 0, res): radix from the prefix, one trailing newline. */
static bool isxdigit_ascii(char c)
{
	return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

static int kstrtouint(const char *s, u64 *res)
{
	unsigned int base = 10;
	u64 v = 0;
	int digits = 0;

	if (*s == '+')
		s++;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && isxdigit_ascii(s[2])) {
		base = 16;
		s += 2;
	} else if (s[0] == '0') {
		base = 8;
	}
	for (;; s++, digits++) {
		unsigned int d;

		if (*s >= '0' && *s <= '9')
			d = *s - '0';
		else if ((*s | 0x20) >= 'a' && (*s | 0x20) <= 'f')
			d = (*s | 0x20) - 'a' + 10;
		else
			break;
		if (d >= base)
			return -EINVAL;
		v = v * base + d;
		if (v > 0xffffffffu)
			return -ERANGE;
	}
	if (!digits)
		return -EINVAL;
	if (*s == '\n')
		s++;
	if (*s)
		return -EINVAL;
	*res = v;
	return 0;
}

int pk_param_parse(u32 type, const char *val, u64 *out)
{
	bool b;
	int r;

	switch (type) {
	case PK_PARAM_BOOL:
		/* param_set_bool(): "No equals means 'set'". */
		r = kstrtobool(val ? val : "1", &b);
		if (r)
			return pk_err(r, "'%s' is not a bool (y/n, 1/0, true/false, on/off)", val);
		*out = b;
		return 0;
	case PK_PARAM_UINT:
		if (!val)
			return pk_err(-EINVAL, "an unsigned int needs a value");
		r = kstrtouint(val, out);
		if (r == -ERANGE)
			return pk_err(r, "'%s' does not fit an unsigned int", val);
		if (r)
			return pk_err(r, "'%s' is not an unsigned int", val);
		return 0;
	}
	return pk_err(-EINVAL, "unknown parameter type %u", type);
}

void pk_params_init(void *values, const struct pk_param *t, int n)
{
	for (int i = 0; i < n; i++) {
		void *field = (u8 *)values + t[i].offset;

		if (t[i].type == PK_PARAM_UINT)
			*(unsigned int *)field = (unsigned int)t[i].upstream;
		else
			*(bool *)field = t[i].upstream;
	}
}

static const struct pk_param *find_param(const struct pk_param_module *mod, const char *name,
					 size_t len)
{
	for (int i = 0; i < mod->nr; i++)
		if (strlen(mod->table[i].name) == len && !strncmp(mod->table[i].name, name, len))
			return &mod->table[i];
	return NULL;
}

/* One "module.name[=value]" item. */
static int apply_one(const struct pk_param_module *mods, int nr_mods, char *item)
{
	char *eq = strchr(item, '='), *name = item, *dot;
	const struct pk_param_module *mod = NULL;
	const struct pk_param *p = NULL;
	u64 v;
	int r;

	if (eq)
		*eq = 0;
	dot = strchr(name, '.');
	if (dot) {
		for (int i = 0; i < nr_mods && !mod; i++)
			if (strlen(mods[i].name) == (size_t)(dot - name) &&
			    !strncmp(mods[i].name, name, dot - name))
				mod = &mods[i];
		if (!mod)
			return pk_err(-ENOENT, "module '%.*s' is not loaded here", (int)(dot - name),
				      name);
		name = dot + 1;
		p = find_param(mod, name, strlen(name));
	} else {
		for (int i = 0; i < nr_mods && !p; i++) {
			p = find_param(&mods[i], name, strlen(name));
			mod = &mods[i];
		}
	}
	if (!p)
		return pk_err(-ENOENT, "no parameter '%s'%s%s", name, dot ? " in " : "",
			      dot ? mod->name : "");
	r = pk_param_parse(p->type, eq ? eq + 1 : NULL, &v);
	if (r)
		return pk_err(r, "%s.%s: '%s' is not a%s", mod->name, p->name, eq ? eq + 1 : "",
			      p->type == PK_PARAM_UINT ? "n unsigned int" :
			      " bool (y/n, 1/0, true/false, on/off)");
	if (p->type == PK_PARAM_UINT)
		*(unsigned int *)((u8 *)mod->values + p->offset) = (unsigned int)v;
	else
		*(bool *)((u8 *)mod->values + p->offset) = v;
	return 0;
}

int pk_params_apply(const struct pk_param_module *mods, int nr_mods, const char *params)
{
	char buf[2048], *save = NULL;

	if (!params || !*params)
		return 0;
	if (strlen(params) >= sizeof(buf))
		return pk_err(-E2BIG, "parameter string longer than %zu bytes", sizeof(buf) - 1);
	strcpy(buf, params);
	for (char *tok = strtok_r(buf, ", \t\n", &save); tok; tok = strtok_r(NULL, ", \t\n", &save)) {
		int r = apply_one(mods, nr_mods, tok);

		if (r)
			return r;
	}
	return 0;
}
