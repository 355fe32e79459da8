"""Run the prover's tasks (prover.tasks) on Ray: a local instance by default, or a cluster.

Ray's `memory` is admission control only (it is not enforced), so the tasks are sized from the
measured prover memory per circuit row: each declares `memory` = 30 KB × 2^logrows and
`num_cpus`, and gets RAYON_NUM_THREADS = its CPUs (ezkl's thread pool; Ray sets only
OMP_NUM_THREADS). Locally, `workers` tasks run at once: by default as many as 80 % of the
machine's memory holds, at most one per CPU.
"""

from __future__ import annotations

import logging
import os

from zkfp.errors import ZkfpError

CLUSTER_CPUS_PER_TASK = 2
OBJECT_STORE_BYTES = 200 << 20  # tasks exchange paths, not data


class RayRunner:
    def __init__(self, address: str | None, workers: int | None, logrows: int, bar):
        from circuits.pipeline import PROVE_BYTES_PER_ROW, _machine_memory

        self.address, self.bar = address, bar
        self.task_memory = PROVE_BYTES_PER_ROW << logrows
        cpus = os.cpu_count() or 1
        if address is None:
            fit = int(0.8 * _machine_memory() // self.task_memory)
            if workers is not None and workers > max(1, fit):
                raise ZkfpError(f"{workers} workers need {workers * self.task_memory / 1e9:.1f} GB at 2^{logrows} rows "
                                f"per chunk; this machine's memory holds {max(1, fit)}")
            self.workers = workers or max(1, min(cpus, fit))
            self.cpus = cpus
            self.cpus_per_task = max(1, cpus // self.workers)
        else:
            self.workers, self.cpus, self.cpus_per_task = workers, None, CLUSTER_CPUS_PER_TASK
        self._started = False

    def __enter__(self) -> "RayRunner":
        import ray

        if not ray.is_initialized():
            if self.address is not None:
                ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False)
            else:
                ray.init(num_cpus=self.cpus_per_task * self.workers, include_dashboard=False,
                         object_store_memory=OBJECT_STORE_BYTES, logging_level=logging.ERROR, log_to_driver=False)
            self._started = True
        return self

    def __exit__(self, *exc) -> bool:
        if self._started:
            import ray

            ray.shutdown()
        return False

    def _options(self, tasks: int) -> dict:
        """Ray options of each of `tasks` tasks run together: locally, fewer tasks than workers
        share the CPUs (a lone encoder proof gets them all)."""
        from circuits.srs import cache_dir

        cpus = self.cpus_per_task
        if self.address is None:
            cpus = max(1, self.cpus_per_task * self.workers // min(tasks, self.workers))
        return {"num_cpus": cpus, "memory": self.task_memory, "max_retries": 2,
                "runtime_env": {"env_vars": {"RAYON_NUM_THREADS": str(cpus), "ZKFP_CACHE": str(cache_dir())}}}

    def _run(self, calls: list[tuple[str, object, tuple]], what: str, already: int = 0) -> dict[str, dict]:
        """Submit (label, function, args) tasks; wait for all, counting them on the progress bar;
        returns each task's cost by label."""
        import ray

        self.bar.stage(f"{what} ({self.workers or 'cluster'} at once)", total=already + len(calls))
        for _ in range(already):
            self.bar.advance()
        remote, options = {}, self._options(len(calls))
        for label, fn, args in calls:
            # max_calls=1: a fresh worker per task, so its memory is returned and its peak is its own
            remote[ray.remote(max_calls=1)(fn).options(**options).remote(*args)] = label
        pending, costs = list(remote), {}
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                costs[remote[done[0]]] = ray.get(done[0])
            except ray.exceptions.RayError as exc:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise ZkfpError(f"{what}: {remote[done[0]]} failed: {_cause(exc)}") from None
            self.bar.advance()
        return costs

    def setup(self, plan, info) -> dict[str, dict]:
        """Compile every distinct circuit of the plan and derive its keys (cached: a re-run or a
        second model of the same shape skips this)."""
        from prover.tasks import setup_circuit

        calls = [(key, setup_circuit, (part.to_json(), plan.logrows, str(info.path), info.sha256))
                 for key, part in plan.parts.items()]
        return self._run(calls, f"setup (logrows {plan.logrows}, {len(calls)} circuits)")

    def prove(self, chunks, logrows: int, info, work, what: str, already: int = 0) -> dict[str, dict]:
        from prover.tasks import prove_chunk

        calls = [(c.name, prove_chunk, (c.name, c.part.to_json(), logrows, str(info.path),
                                                   str(work / "inputs" / f"{c.name}.json"), str(work)))
                 for c in chunks]
        return self._run(calls, what, already)


def _cause(exc: Exception) -> str:
    """The task's own error, without Ray's wrapping and remote traceback."""
    cause = getattr(exc, "cause", None)
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(exc).splitlines()[0]
