"""pass@k: the unbiased estimator against brute force over k-subsets, its edge cases, and the CLI's files."""

import csv
import itertools
import json
import math
import subprocess
import sys

import pytest

from paddlemix_r1.eval import pass_at_k, pass_at_k_of_records
from paddlemix_r1.eval.passk import main


def brute_force(n, c, k):
    """The fraction of the k-subsets of n samples (c correct) that hold a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_equals_brute_force_over_all_k_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12)
            assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


def test_monotone_in_k_and_in_c():
    for n in (1, 5, 16, 256):
        for c in range(n + 1):
            values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
            assert all(a <= b + 1e-12 for a, b in zip(values, values[1:]))
        assert all(pass_at_k(n, c, 1) <= pass_at_k(n, c + 1, 1) for c in range(n))


def test_edge_cases_and_large_n_are_stable():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 = c / n
    assert pass_at_k(256, 1, 256) == 1.0
    # C(1000, 500) overflows a float; the product form does not
    assert pass_at_k(1000, 1, 500) == pytest.approx(0.5)
    assert 0.0 < pass_at_k(1000, 2, 1) < 1.0


@pytest.mark.parametrize("args, message", [
    ((4, 2, 5), r"k must be in \[1, n=4\]: pass@5 needs at least 5 samples"),
    ((4, 2, 0), r"k must be in \[1, n=4\]"),
    ((4, 5, 1), r"c must be in \[0, n=4\]"),
    ((4, -1, 1), r"c must be in \[0, n=4\]"),
    ((0, 0, 1), "n must be >= 1"),
])
def test_refuses_impossible_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        pass_at_k(*args)
    with pytest.raises(TypeError, match="must be an int"):
        pass_at_k(4.0, 2, 1)


def record(correct, dataset="set"):
    return {"id": "x", "dataset": dataset, "samples": [{"correct": c} for c in correct], "error": None}


def test_dataset_pass_at_k_is_the_mean_over_prompts_and_counts_errors_as_failed():
    records = [record([True, False, False, False]), record([False] * 4), record([True] * 4),
               {"id": "y", "dataset": "set", "samples": [], "error": "image: FileNotFoundError"}]
    r = pass_at_k_of_records(records, task="math")
    assert r.prompts == 4 and r.errors == 1 and r.samples_per_prompt == 4 and r.dataset == "set"
    assert r.values == {1: pytest.approx((0.25 + 0 + 1) / 4), 2: pytest.approx((0.5 + 0 + 1) / 4),
                        4: pytest.approx((1 + 0 + 1) / 4)}
    with pytest.raises(ValueError, match=r"pass@k for k=\[8\] needs at least 8 samples per prompt, but some prompts "
                                         r"have only 4: evaluate with --num_samples >= 8"):
        pass_at_k_of_records(records, [1, 8])
    with pytest.raises(ValueError, match="boolean 'correct'"):
        pass_at_k_of_records([{"samples": [{"score": 1.0}]}])


def test_cli_writes_csv_json_and_plot(tmp_path, capsys):
    results = tmp_path / "open_math_r1.jsonl"
    results.write_text("".join(json.dumps(record([i % 3 == 0] + [False] * 7, "math_test")) + "\n" for i in range(6)))
    (tmp_path / "open_math_r1.summary.json").write_text(json.dumps({"task": "math", "dataset": "math_test"}))
    assert main([str(results), "--k_values", "1,2,8", "--output_dir", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "pass_at_k.csv")))
    assert [(r["task"], r["dataset"], r["k"]) for r in rows] == [("math", "math_test", k) for k in ("1", "2", "8")]
    assert float(rows[0]["pass_at_k"]) == pytest.approx(2 / 6 / 8) and float(rows[2]["pass_at_k"]) == pytest.approx(2 / 6)
    data = json.loads((tmp_path / "out" / "pass_at_k.json").read_text())
    assert data[0]["values"] == {"1": pytest.approx(2 / 48), "2": pytest.approx(2 / 6 * 0.25), "8": pytest.approx(2 / 6)}
    assert (tmp_path / "out" / "pass_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "math / math_test: 6 prompts x 8 samples" in capsys.readouterr().out
    with pytest.raises(ValueError, match="needs at least 16 samples"):
        main([str(results), "--k_values", "16", "--output_dir", str(tmp_path / "out")])


def test_script_help():
    out = subprocess.run([sys.executable, "eval/pass_at_k.py", "--help"], capture_output=True, text=True, check=True)
    assert "--k_values" in out.stdout and "--output_dir" in out.stdout
