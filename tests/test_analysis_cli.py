"""The command line: outputs, bad input, and that it never loads torch."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.fit_curves import main, parse_args
from analysis.synthetic import TRUTH, synthetic_table

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "analysis" / "fit_curves.py"
CURVE_KEYS = {"target_task", "language", "source", "quality", "form", "params", "asymptote", "asymptote_ci",
              "gain_per_doubling_at_max", "extrapolation_error"}
COMPARISON_KEYS = {"target_task", "language", "multilingual_quality", "multilingual_size", "multilingual_score",
                   "english_quality", "english_equivalent_size", "english_equivalent_size_ci", "verdict"}


def smoke_table(path, **options):
    """Like a smoke sweep: three sizes, one seed, two targets in two languages, a few failed rows."""
    table = synthetic_table({"clean": TRUTH}, sizes=(0, 100, 200), seeds=1, languages=("fr", "de"),
                            targets=("genre", "paraphrase"), multilingual={("hq", 100): 55.0}, **options)
    table.loc[table.index[-1], "score"] = float("nan")
    table.to_csv(path, index=False)
    return path


def test_smoke_table_end_to_end_by_path_without_torch(tmp_path):
    results, out = smoke_table(tmp_path / "results.csv"), tmp_path / "analysis"
    # Run the script by its path, as the sweep does, and look at what it imported.
    code = ("import runpy, sys\n"
            f"sys.argv = [{str(SCRIPT)!r}, '--results', {str(results)!r}, '--out', {str(out)!r}]\n"
            "try:\n"
            f"    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
            "except SystemExit as end:\n"
            "    assert end.code == 0, end.code\n"
            "assert 'torch' not in sys.modules, 'the analysis imported torch'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    summary = json.loads((out / "summary.json").read_text())
    assert summary["curves"] and summary["comparisons"]
    assert all(CURVE_KEYS <= set(row) for row in summary["curves"])
    assert all(COMPARISON_KEYS <= set(row) for row in summary["comparisons"])
    assert {row["target_task"] for row in summary["curves"]} == {"genre", "paraphrase"}
    assert {row["language"] for row in summary["curves"]} == {"avg", "de", "fr"}
    assert summary["data"]["nan_rows"] == 1
    report = (out / "report.md").read_text()
    assert "## Verdicts" in report and "cannot be estimated" in report
    assert "Rows with a NaN score, left out: 1" in report
    for target in ("genre", "paraphrase"):
        assert (out / f"{target}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"({target}.png)" in report


def test_command_line_defaults():
    args = parse_args(["--results", "r.csv", "--out", "o"])
    assert args.bootstrap == 1000 and args.seed == 0 and not args.overwrite


@pytest.mark.parametrize("case, argv, message", [
    ("missing file", ["--results", "{tmp}/nope.csv", "--out", "{tmp}/o"], "no results file"),
    ("missing columns", ["--results", "{tmp}/columns.csv", "--out", "{tmp}/o"], "lacks the columns"),
    ("no english rows", ["--results", "{tmp}/baseline.csv", "--out", "{tmp}/o"], "no english rows"),
    ("two inputs", ["--results", "{tmp}/r.csv", "--experiment", "e", "--out", "{tmp}/o"], "not allowed with"),
    ("no tracking uri", ["--experiment", "e", "--out", "{tmp}/o"], "--tracking-uri"),
    ("too few resamples", ["--results", "{tmp}/r.csv", "--out", "{tmp}/o", "--bootstrap", "10"], "at least 100"),
    ("non-empty out", ["--results", "{tmp}/r.csv", "--out", "{tmp}"], "--overwrite"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, case, argv, message):
    table = synthetic_table({"clean": TRUTH}, sizes=(0, 100, 200), seeds=1)
    table.drop(columns=["metric", "seed"]).to_csv(tmp_path / "columns.csv", index=False)
    table[table["source"] == "none"].to_csv(tmp_path / "baseline.csv", index=False)
    table.to_csv(tmp_path / "r.csv", index=False)
    assert main([part.format(tmp=tmp_path) for part in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_overwrite_writes_into_a_non_empty_folder(tmp_path):
    results = smoke_table(tmp_path / "results.csv")
    assert main(["--results", str(results), "--out", str(tmp_path), "--overwrite", "--bootstrap", "100"]) == 0
    assert (tmp_path / "summary.json").exists()
