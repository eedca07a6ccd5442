"""Connecting to Ray: a local cluster by default, a running one by address; usage telemetry off.

    with ray_cluster(address) as ray:      # None: $RAY_ADDRESS, else a local cluster (no dashboard)
        ray.data.read_datasource(...)

A Ray session that is already initialised in this process (a test's, a notebook's) is used as it is.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType

from mel.errors import MelError


class RayMissing(MelError):
    pass


def import_ray() -> ModuleType:
    """The `ray` module with Ray Data, or one line saying how to install it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before ray is imported: no telemetry
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayMissing("--engine ray needs Ray Data: pip install 'mel[ray]'") from None
    return ray


@contextlib.contextmanager
def ray_cluster(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[ModuleType]:
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    options: dict = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": True}
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=num_cpus, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise MelError(f"cannot start or reach {where} ({str(exc).splitlines()[0]})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def unwrap_error(exc: BaseException) -> BaseException:
    """The MelError a Ray task raised (Ray wraps it in its own exceptions), else `exc` itself."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        cause = getattr(current, "cause", None)  # RayTaskError: the task's own exception
        if isinstance(cause, BaseException):
            todo.append(cause)
            continue
        if isinstance(current, MelError):
            return current
        for nested in (current.__cause__, current.__context__):
            if isinstance(nested, BaseException):
                todo.append(nested)
    return exc
