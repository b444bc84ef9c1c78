/* SPDX-License-Identifier: MIT */
/*
 * The reason behind an error code. The kernel says why an ioctl returned -EINVAL with a
 * line in its log (pr_err, pr_warn_ratelimited); pykvm keeps the last such line of the
 * calling thread, and the Python binding puts it in the exception it raises.
 */
#ifndef _PYKVM_PRINTK_H
#define _PYKVM_PRINTK_H

#include "pykvm/types.h"

/* Record why the current call fails; returns `err` so callers can `return pk_err(...)`. */
int pk_err(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* cffi:begin */
/* The reason recorded by the calling thread's last failing call, or "" (then cleared). */
const char *pk_last_error(void);
/* cffi:end */

#endif
