"""A Train run inside a Tune function trainable, its reports forwarded to Tune by the function's own thread.

Ray's `TuneReportCallback` (ray 2.60) hands each report to the Tune actor's main thread through a queue between
actors, and that thread puts it on the session's one-slot result queue itself. When the driver is slow to ask for
the next result (an MLflow server that is away, a busy laptop), the Train run's last report waits in that queue
while `fit()` returns; the function's end then fills the result slot, and the main thread, taking the last report,
blocks forever putting it into the slot only it empties: the trial hangs, and the sweep with it (reproduced by
`tests/test_tune_reports.py`). Here `fit()` runs on a helper thread, a callback passes each report through a Ray
queue, and the function's thread gives each to `ray.tune.report`, Tune's ordinary path, which waits until Tune
has taken it; the function returns only after the last one.
"""
from __future__ import annotations

import threading

import ray.tune
from ray.train.v2.api.callback import UserCallback
from ray.util.queue import Empty, Queue

POLL_S = 0.2


class ForwardReports(UserCallback):
    """Runs in the Train controller: rank 0's metrics of each report, with the checkpoint's path (already in
    storage), onto the queue. The queue holds one report, so the controller waits while Tune is behind."""

    def __init__(self, reports: Queue):
        self.reports = reports

    def after_report(self, run_context, metrics, checkpoint):
        item = dict(metrics[0])
        if checkpoint:
            item["checkpoint_path"] = checkpoint.path
        self.reports.put(item)


def fit_reporting_to_tune(make_trainer) -> None:
    """Run `make_trainer(callbacks).fit()` and report each of its reports to Tune, in order, the last one before
    returning; an error of `fit()` is raised here, as `fit()` raises it."""
    reports = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = make_trainer([ForwardReports(reports)])
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as error:   # noqa: BLE001 - raised again on the function's thread
            failure.append(error)

    runner = threading.Thread(target=fit, name="train-run", daemon=True)
    runner.start()
    # Every put is done before fit() returns (the controller waits on the full queue), so once the runner has
    # ended, an empty queue means every report was forwarded.
    while runner.is_alive() or not reports.empty():
        try:
            metrics = reports.get(timeout=POLL_S)
        except Empty:
            continue
        ray.tune.report(metrics)
    if failure:
        raise failure[0]
