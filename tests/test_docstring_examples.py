"""The docstring examples of the trainers and collators run as written."""

from __future__ import annotations

import doctest

import pytest

import trl_ranking


@pytest.mark.parametrize(
    "obj",
    [
        trl_ranking.DataCollatorForRanking,
        trl_ranking.DataCollatorForJointPreference,
        trl_ranking.PROTrainer,
        trl_ranking.DOVETrainer,
    ],
    ids=lambda obj: obj.__name__,
)
def test_docstring_example_runs(obj, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the trainer examples write a tiny model and outputs to the working directory
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    tests = finder.find(obj, obj.__name__, globs={})
    assert tests and tests[0].examples, f"{obj.__name__} has no docstring example"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {obj.__name__} failed"
