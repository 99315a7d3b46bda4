"""The analysis stays fast on tables the size of real sweeps (run with -m slow)."""
import time

import pandas as pd
import pytest

from analysis.answer import analyse
from analysis.read_results import prepare
from analysis.synthetic import TRUTH, synthetic_table

LANGUAGES = ("ar", "de", "es", "fa", "fr", "it", "ko", "pt", "ru", "tl", "vi", "zh")


def timed_analysis(table, n_boot=1000):
    """The CPU time of the analysis: it runs in one thread, so on an idle 2-core machine this is its wall time,
    and it does not count the time other jobs on a shared machine take from it."""
    start = time.process_time()
    curves, _, _ = analyse(prepare(table)[0], n_boot=n_boot, seed=0)
    return curves, time.process_time() - start


@pytest.mark.slow
def test_realistic_table_takes_at_most_two_minutes():
    """3 targets x 12 languages (+ avg) x 2 tiers x 6 sizes x 3 seeds, 6 multilingual cells, 1000 resamples."""
    multilingual = {(quality, size): score - offset for quality, offset in (("hq", 0), ("heuristic", 5))
                    for size, score in ((500, 60.0), (2000, 68.0), (8000, 73.0))}
    table = synthetic_table({"clean": TRUTH, "raw": dict(TRUTH, s_inf=68.0, a=28 * 500 ** 0.8)},
                            sizes=(0, 500, 1000, 2000, 4000, 8000, 16000), languages=LANGUAGES,
                            targets=("genre", "paraphrase", "retrieval"), multilingual=multilingual,
                            language_step=1.0, test_examples=48)
    curves, seconds = timed_analysis(table)
    print(f"{len(curves) // 3} curves, 1000 resamples: {seconds:.0f} s")
    assert len(curves) == 3 * 13 * 2 * 3
    assert seconds < 120


@pytest.mark.slow
def test_laptop_sweep_table_takes_at_most_two_minutes():
    """The laptop preset's shape: one seed, 48 test examples per language, English 0 to 8k in two tiers, three
    multilingual sizes; genre in 12 languages, retrieval in 11, paraphrase in 3."""
    multilingual = {("hq", size): 47.0 + size / 1000 for size in (250, 500, 1000)}
    tables = [synthetic_table({"random": TRUTH, "hard": dict(TRUTH, s_inf=70.0)}, sizes=(0, 1000, 2000, 4000, 8000),
                              seeds=1, noise=1.0, languages=languages, targets=(target,), multilingual=multilingual,
                              test_examples=48, rng_seed=i)
              for i, (target, languages) in enumerate((("genre", LANGUAGES), ("retrieval", LANGUAGES[:11]),
                                                       ("paraphrase", ("de", "fr", "tl"))))]
    curves, seconds = timed_analysis(pd.concat(tables, ignore_index=True))
    print(f"{len(curves) // 3} curves, 1000 resamples: {seconds:.0f} s")
    assert len(curves) == (13 + 12 + 4) * 2 * 3
    assert seconds < 120
