"""Structured logs for the library, quiet unless the application asks.

pykvm logs with structlog, wrapped around the standard library's logger of the same name
("pykvm", "pykvm.devkvm", ...), so a library import configures nothing: the events go
where the application's `logging` configuration sends them (by default, warnings and
worse to stderr). The `pykvm` command sets the level (`--debug`).
"""
import logging

import structlog


def get_logger(name="pykvm"):
    """A structlog logger over logging.getLogger(name)."""
    return structlog.wrap_logger(
        logging.getLogger(name), wrapper_class=structlog.stdlib.BoundLogger,
        processors=[structlog.stdlib.filter_by_level,
                    structlog.processors.KeyValueRenderer(key_order=["event"])])
