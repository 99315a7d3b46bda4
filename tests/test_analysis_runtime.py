"""The bootstrap stays fast on a table the size of a real sweep (run with -m slow)."""
import time

import pytest

from analysis.answer import analyse
from analysis.read_results import prepare
from analysis.synthetic import TRUTH, synthetic_table

LANGUAGES = ("ar", "de", "es", "fa", "fr", "it", "ko", "pt", "ru", "tl", "vi", "zh")


@pytest.mark.slow
def test_realistic_table_takes_at_most_two_minutes():
    """3 targets x 12 languages (+ avg) x 2 tiers x 6 sizes x 3 seeds, 6 multilingual cells, 1000 resamples."""
    multilingual = {(quality, size): score - offset for quality, offset in (("hq", 0), ("heuristic", 5))
                    for size, score in ((500, 60.0), (2000, 68.0), (8000, 73.0))}
    table = synthetic_table({"clean": TRUTH, "raw": dict(TRUTH, s_inf=68.0, a=28 * 500 ** 0.8)},
                            sizes=(0, 500, 1000, 2000, 4000, 8000, 16000), languages=LANGUAGES,
                            targets=("genre", "paraphrase", "retrieval"), multilingual=multilingual,
                            language_step=1.0)
    start = time.perf_counter()
    curves, _, _ = analyse(prepare(table)[0], n_boot=1000, seed=0)
    seconds = time.perf_counter() - start
    print(f"{len(curves) // 3} curves, 1000 resamples: {seconds:.0f} s")
    assert len(curves) == 3 * 13 * 2 * 3
    assert seconds < 120
