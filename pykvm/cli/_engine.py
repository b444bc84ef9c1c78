"""--engine, --workers, --scheduler: where a command's tasks run (pykvm.engine), shared by
check, study and sweep."""
import os

from ..engine import ENGINES


def add_arguments(parser, default="local", what="tasks"):
    parser.add_argument("--engine", choices=ENGINES, default=default,
                        help=f"where the {what} run: local (this process) or dask (a local "
                             f"Dask cluster of --workers processes started and stopped by "
                             f"the command, or the cluster at --scheduler) (default: "
                             f"%(default)s)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help=f"processes of the local Dask cluster (default: the cores, "
                             f"{os.cpu_count() or 1})")
    parser.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                        help="an existing Dask cluster's scheduler (implies --engine dask); "
                             "e.g. --scheduler tcp://10.0.0.5:8786")


def open_engine(args):
    """The engine the arguments name (close it, or use it in a with block)."""
    from .. import engine
    from . import UsageError
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    name = "dask" if args.scheduler else args.engine
    if name == "local" and args.workers not in (None, 1):
        raise UsageError("--workers needs --engine dask")
    if name == "dask" and not args.debug:
        # Dask logs every start and stop of its scheduler, nannies and workers at INFO:
        # a command says only what went wrong (--debug shows the rest).
        import logging

        import distributed  # noqa: F401  (sets its loggers' levels on import)
        logging.getLogger("distributed").setLevel(logging.WARNING)
    return engine.get(name, scheduler=args.scheduler, workers=args.workers)
