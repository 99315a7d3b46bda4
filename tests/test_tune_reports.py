"""A Train run's reports reach Tune when the driver is slow (trainables/tune_reports.py), in a real Ray runtime.

With Ray's TuneReportCallback this trial hung for good once the driver took longer over a result than the Train run
took to end after its last report; the test runs the experiment in a child process with a time limit, so a hang is
a failure, not a stuck test run."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

EXPERIMENT = textwrap.dedent("""
    import json, sys, time
    import ray
    from ray import tune
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from trainables.tune_reports import fit_reporting_to_tune

    def loop(config):
        for i in range(3):
            ray.train.report({"i": i})
        if config["fail"]:
            raise ValueError("the loop failed on purpose")

    def trial(config):
        fit_reporting_to_tune(lambda callbacks: TorchTrainer(
            loop, train_loop_config=config, scaling_config=ScalingConfig(num_workers=1),
            run_config=RunConfig(name=f"run-{config['fail']}", storage_path=config["storage"],
                                 callbacks=callbacks)))

    class SlowDriver(tune.Callback):   # an MLflow server that is away, a busy laptop
        def on_trial_result(self, iteration, trials, trial, result, **info):
            time.sleep(3)

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    grid = tune.Tuner(tune.with_resources(trial, {"cpu": 0, "memory": 1 << 20}),
                      param_space={"fail": tune.grid_search([False, True]), "storage": sys.argv[1] + "/train"},
                      run_config=tune.RunConfig(storage_path=sys.argv[1] + "/tune", callbacks=[SlowDriver()],
                                                verbose=0)).fit()
    print(json.dumps({str(r.config["fail"]): [r.metrics.get("i"), repr(r.error)] for r in grid}))
""")


def test_every_report_reaches_a_slow_driver_and_an_error_still_fails_the_trial(tmp_path):
    done = subprocess.run([sys.executable, "-c", EXPERIMENT, str(tmp_path)], capture_output=True, text=True,
                          timeout=240, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["False"] == [2, "None"]                    # the last report arrived, and the trial ended
    assert outcome["True"][0] == 2 and "the loop failed on purpose" in outcome["True"][1]
