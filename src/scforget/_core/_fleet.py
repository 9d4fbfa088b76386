"""Fleets of independent training jobs: one after another in this process, or on a Dask cluster.

Reference models, retrain seeds and SISA shards are independent trainings. A job is a picklable
top-level function of keyword arguments that returns plain data (weights as CPU tensors, arrays);
:func:`run_jobs` calls it in this process when ``fleet`` is ``None`` and submits it to the cluster
behind a :class:`distributed.Client` otherwise, so both paths run the same function with the same
seeds. Dask's scheduler does the placement, retries and data movement: a hand-written process pool
would have to re-implement all three and would not reach a cluster.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

FLEET_EXTRA = "pip install 'scforget[fleet]'"


def check_fleet(fleet: Any) -> Any:
    """``fleet`` itself if it is ``None`` or a :class:`distributed.Client`; raise otherwise (before any work)."""
    if fleet is None:
        return None
    try:
        from distributed import Client
    except ImportError as err:  # pragma: no cover - the extra is installed in the test environment
        raise ImportError(f"`fleet` runs jobs on a Dask cluster and needs Dask's scheduler: {FLEET_EXTRA}.") from err
    if not isinstance(fleet, Client):
        raise TypeError(
            f"`fleet` must be a dask.distributed.Client or None, not {type(fleet).__name__}. For this machine: "
            "`scforget.local_fleet(2)`; for a cluster: `distributed.Client('tcp://host:8786')`."
        )
    if fleet.status != "running":
        raise ValueError(f"`fleet` is a Client whose status is {fleet.status!r}; connect it (or pass None) first.")
    return fleet


def run_jobs(
    fn: Callable[..., Any],
    jobs: Sequence[Mapping[str, Any]],
    *,
    fleet: Any = None,
    shared: Mapping[str, Any] | None = None,
) -> list[Any]:
    """``fn(**shared, **job)`` for every job, results in the order of ``jobs``.

    Parameters
    ----------
    fn
        A module-level function (workers import it by name).
    jobs
        Keyword arguments of each call.
    fleet
        ``None`` (run here, one after another) or a :class:`distributed.Client`.
    shared
        Keyword arguments common to every call (e.g. the template model with its AnnData); on a
        cluster they are sent to every worker once, not once per job.
    """
    shared = dict(shared or {})
    if fleet is None:
        return [fn(**shared, **job) for job in jobs]
    # scatter a one-item list: Dask would split a dict or list value into one future per item
    handles = {name: fleet.scatter([value], broadcast=True, hash=False)[0] for name, value in shared.items()}
    futures = [fleet.submit(fn, **handles, **job, pure=False) for job in jobs]
    try:
        return fleet.gather(futures)
    finally:
        for future in [*futures, *handles.values()]:
            future.release()


#: Dask's default environment of worker processes without ``MALLOC_TRIM_THRESHOLD_=65536``, which made
#: each scVI training on a worker 1.9x slower than in a plain process (4.8 s vs 2.5 s, 5 epochs of
#: pbmc3k x 2,000 genes, one thread): glibc then returns freed memory to the system after every
#: minibatch's tensors are released. One thread per job stays (``OMP_NUM_THREADS=1``...).
WORKER_ENVIRON = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}


def local_fleet(n_workers: int = 2) -> Any:
    """A :class:`distributed.Client` on ``n_workers`` local worker processes, one thread each, for ``fleet=``.

    The workers start without Dask's default ``MALLOC_TRIM_THRESHOLD_`` (which made scVI training on
    a worker 1.9x slower). Close the client (or use it in a ``with`` block) to stop the workers.
    Needs ``pip install 'scforget[fleet]'``.

    Parameters
    ----------
    n_workers
        Worker processes; each runs one job at a time on one torch thread.

    Examples
    --------
    >>> with sf.local_fleet(2) as client:
    ...     report = sf.audit(model, members=forget, nonmembers=holdout, attacks=("lira",), fleet=client)
    """
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"`n_workers` must be a whole number of worker processes >= 1; got {n_workers!r}.")
    try:
        import dask
        from distributed import Client
    except ImportError as err:  # pragma: no cover - the extra is installed in the test environment
        raise ImportError(f"`local_fleet` starts a Dask cluster and needs Dask's scheduler: {FLEET_EXTRA}.") from err
    with dask.config.set({"distributed.nanny.pre-spawn-environ": dict(WORKER_ENVIRON)}):
        return Client(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
        )


def local_workers(spec: str) -> int | None:
    """The ``N`` of a ``--fleet local:N`` value (``None`` for a scheduler address); raise on a malformed one."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"`--fleet` must be local:N or a scheduler address such as tcp://host:8786; got {spec!r}.")
    if not spec.startswith("local:"):
        return None
    n = spec.removeprefix("local:")
    if not n.isdigit() or int(n) < 1:
        raise ValueError(f"`--fleet`={spec!r}: write local:N with N >= 1 worker processes, e.g. local:2.")
    return int(n)


@contextlib.contextmanager
def fleet_client(spec: str | None) -> Iterator[Any]:
    """A :class:`distributed.Client` for a command-line ``--fleet`` value, closed on exit.

    ``None`` yields ``None`` (no fleet); ``"local:N"`` starts a local cluster of ``N`` worker
    processes with one thread each; anything else is a scheduler address (``tcp://host:8786``).
    """
    if spec is None:
        yield None
        return
    try:
        from distributed import Client
    except ImportError as err:  # pragma: no cover - the extra is installed in the test environment
        raise ImportError(f"`--fleet` runs jobs on a Dask cluster and needs Dask's scheduler: {FLEET_EXTRA}.") from err
    n = local_workers(spec)
    if n is not None:
        with local_fleet(n) as client:
            yield client
        return
    with Client(spec) as client:
        yield client
