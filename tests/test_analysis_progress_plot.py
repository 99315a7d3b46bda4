"""analysis/progress_plot.py: the curves so far, from a real results table written by the sweep's own writer."""
from PIL import Image

from analysis.progress_plot import plot_progress
from sweeps.results_table import ResultsTable, result_rows

NAMES = {"genre": "accuracy", "retrieval": "top1_accuracy"}


def trial_rows(trial_id, cell, seed, genre, objective=50.0):
    config = {"cell": cell, "seed": seed, "lr_intermediate": 1e-4, "lr_target": 2e-4, "targets": list(NAMES)}
    metrics = {"score.genre.fr": genre, "score.genre.de": genre + 2, "score.genre.avg": genre + 1,
               "score.retrieval.fr": 90.0, "score.retrieval.avg": 90.0, "objective": objective, "trial_complete": 1}
    return result_rows(trial_id, "search", config, metrics, NAMES)


def test_one_png_per_target_once_an_english_trial_has_scores(tmp_path):
    results = tmp_path / "results.csv"
    assert plot_progress(results, tmp_path / "out") == []              # no table yet
    table = ResultsTable(results)
    table.record(trial_rows("b", "none", 0, 40.0))
    assert plot_progress(results, tmp_path / "out") == []              # the baseline alone: no curve yet
    table.record(trial_rows("e1", "english:en_paraphrase:random:1000", 0, 42.0))
    table.record(trial_rows("e2", "english:en_paraphrase:random:1000", 1, 44.0))
    table.record(trial_rows("m", "multilingual:multi_paraphrase:random:250", 0, 45.0))
    table.record(result_rows("f", "search", {"cell": "english:en_paraphrase:hard:1000", "seed": 0,
                                             "lr_intermediate": 1e-4, "lr_target": 2e-4, "targets": list(NAMES)},
                             {}, NAMES))                                   # a failed trial: NaN rows, left out
    paths = plot_progress(results, tmp_path / "out")
    assert sorted(p.name for p in paths) == ["genre.png", "retrieval.png"]
    for path in paths:
        with Image.open(path) as image:
            low, high = image.convert("L").getextrema()
            assert image.size == (560, 336) and low < 100 < high   # drawn: dark lines and text on white
