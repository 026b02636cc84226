"""Ray as a backend: the bench's jobs as Ray tasks, on one machine or a cluster.

Ray is an optional dependency (``pip install -e ".[ray]"``); this module imports it only
inside its functions, so importing the library never needs it. :func:`require_ray` turns a
missing Ray into one line saying how to install it.

:func:`run_on_ray` runs a list of calls (for the bench: :func:`growenv.harness.bench.run_job`
on each pending job) as Ray tasks of one CPU each, with one torch thread (as the local worker
processes), and hands each result to a callback in the driver as it completes (``ray.wait``),
which appends it to the bench's store: only the driver writes, so a job's rows are stored once
even when Ray retried it after its worker died (``max_retries``). :func:`ray_session` starts
a local Ray (``address=None``) or joins a running cluster, and shuts down only what it
started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from growenv.errors import UserError

__all__ = [
    "INSTALL_HINT",
    "MAX_RETRIES",
    "ray_session",
    "require_ray",
    "run_on_ray",
    "usable_cpus",
]

INSTALL_HINT = 'pip install -e ".[ray]"'
"""How to install the optional Ray dependency (the pinned ``ray[tune]``)."""

MAX_RETRIES = 3
"""Times Ray re-runs a task whose worker process died (a killed worker, a lost node)."""

_WAIT_SECONDS = 0.5  # ray.wait's timeout: the driver's signal handlers run between waits


def require_ray(what: str = "--backend ray") -> Any:
    """The ``ray`` module, or a one-line :class:`UserError` saying how to install it.

    Parameters
    ----------
    what
        The feature that needs Ray (starts the message).
    """
    try:
        import ray
    except ImportError:
        raise UserError(
            f"{what}: needs Ray, which is not installed; install it with {INSTALL_HINT}"
        ) from None
    return ray


@contextlib.contextmanager
def ray_session(
    address: str | None = None, num_cpus: int | None = None, what: str = "--address"
) -> Iterator[Any]:
    """A connected Ray for the block; yields the ``ray`` module.

    Parameters
    ----------
    address
        ``None``: start a local Ray with ``num_cpus`` CPUs (or use the one this process is
        connected to already). Otherwise a running cluster's address (``HOST:PORT`` of
        ``ray start --head``, or ``"auto"`` on a node of the cluster) to join.
    num_cpus
        CPUs of a local Ray (``None``: all of this machine's). Ignored when joining.
    what
        The argument named by a failed connection's message.

    Raises
    ------
    UserError
        Ray is not installed, or no cluster answers at ``address``.

    Only a Ray started or joined here is shut down at the end (and the SIGINT and SIGTERM
    handlers that ``ray.init`` replaced are restored).
    """
    ray = require_ray("--backend ray" if what == "--address" else what)
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if address is None:
        options["num_cpus"] = num_cpus
    else:
        options["address"] = address
    if address is not None:
        _check_reachable(address, what)
    handlers = _signal_handlers()  # ray.init installs its own SIGTERM handler: undone after
    try:
        ray.init(**options)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as err:
        first = next((s for s in str(err).splitlines() if s.strip()), type(err).__name__)
        raise UserError(
            f"{what}: cannot reach a Ray cluster at {address!r} ({first}); start one with "
            "`ray start --head` and pass the address it prints"
        ) from err
    try:
        yield ray
    finally:
        ray.shutdown()
        _restore(handlers)


def _signal_handlers() -> dict[int, Any]:
    """This thread's SIGINT and SIGTERM handlers (empty off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}


def _restore(handlers: dict[int, Any]) -> None:
    for signum, handler in handlers.items():
        if handler is not None:
            signal.signal(signum, handler)


def _check_reachable(address: str, what: str, timeout: float = 5.0) -> None:
    """Refuse a ``HOST:PORT`` where nothing listens, at once (``ray.init`` would retry for
    minutes); other forms (``auto``, ``ray://...``) are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or "/" in host or not port.isdigit():
        return  # auto, ray://..., or a form that Ray reports itself
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise UserError(
            f"{what}: cannot reach a Ray cluster at {address!r} ({err.strerror or err}); start "
            "one with `ray start --head` and pass the address it prints"
        ) from None


def _call(fn: Callable[..., Any], args: tuple[Any, ...], threads: int) -> Any:
    """Run ``fn(*args)`` in a Ray worker with ``threads`` torch threads (restored after)."""
    from growenv.threads import using_threads

    with using_threads(threads):
        return fn(*args)


def run_on_ray(
    fn: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    on_done: Callable[[int, Any], None],
    threads: int = 1,
    max_retries: int = MAX_RETRIES,
    name: str = "growenv",
) -> None:
    """Run ``fn(*calls[i])`` for every ``i`` as Ray tasks; call ``on_done(i, result)`` in this
    process as each completes (in completion order).

    Needs a connected Ray (:func:`ray_session`). Each task asks for one CPU and runs torch on
    ``threads`` threads; its worker process is titled ``ray::<name>`` while it runs. A task
    whose worker dies is re-run up to ``max_retries`` times; an exception raised by ``fn`` is
    not retried but re-raised here (the first one to complete). On any exception here,
    :class:`KeyboardInterrupt` included, the tasks still queued or running are cancelled
    (their results are not wanted) before it propagates.
    """
    import ray

    task = ray.remote(num_cpus=1, max_retries=max_retries)(_call).options(name=name)
    pending = {task.remote(fn, tuple(args), threads): i for i, args in enumerate(calls)}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=_WAIT_SECONDS)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as err:  # fn's own error, as raised
                    cause = getattr(err, "cause", None)
                    raise (cause if isinstance(cause, Exception) else err) from None
                on_done(i, result)
    except BaseException:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise


def usable_cpus() -> int:
    """CPUs this process may use (its affinity where the OS tells it): a local Ray's default."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
