"""dynmec_jax.experiments.report: the bookkeeping of a workdir's times heals itself."""

import json

import pytest

from dynmec_jax.experiments import report

STAGES = ["allocators", "sweeps"]
ZERO = {"invocations": 0, "wall_time_s": 0.0, "peak_rss_mb": 0.0,
        "stage_wall_time_s": {"allocators": 0.0, "sweeps": 0.0}}


def test_missing_timings_start_from_zero(tmp_path):
    assert report.read_timings(tmp_path / "timings.json", STAGES) == ZERO


@pytest.mark.parametrize("body", ['{"invocations": 1, "wall_', "", "\xff\xfe", "[1, 2]",
                                  '{"invocations": "1", "wall_time_s": 1, "peak_rss_mb": 1, '
                                  '"stage_wall_time_s": {}}',
                                  '{"invocations": 1, "wall_time_s": null, "peak_rss_mb": 1, '
                                  '"stage_wall_time_s": {}}'])
def test_corrupt_timings_are_rebuilt_with_a_warning_not_fatal(tmp_path, body):
    path = tmp_path / "timings.json"
    path.write_bytes(body.encode("latin-1"))
    with pytest.warns(UserWarning, match="timings.json is corrupt"):
        assert report.read_timings(path, STAGES) == ZERO


def test_good_timings_are_read_back(tmp_path):
    path = tmp_path / "timings.json"
    good = {"invocations": 2, "wall_time_s": 3.5, "peak_rss_mb": 100.0,
            "stage_wall_time_s": {"allocators": 1.0}}
    path.write_text(json.dumps(good))
    assert report.read_timings(path, STAGES) == good
