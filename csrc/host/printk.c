// SPDX-License-Identifier: MIT
/* The calling thread's last error reason (include/pykvm/printk.h). */
#include <stdarg.h>
#include <stdio.h>

#include "pykvm/printk.h"

static __thread char last_error[256];
static __thread char taken[256];

int pk_err(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	return err;
}

const char *pk_last_error(void)
{
	memcpy(taken, last_error, sizeof(taken));
	last_error[0] = 0;
	return taken;
}
