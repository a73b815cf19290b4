"""benchmarks/xla_flags_train.py: the ``--variant`` grammar and the summary's medians and ratios."""

import pytest
from benchmark_scripts import load_script

flags = load_script("xla_flags_train")


def test_variants_default_and_parsed_keep_the_baseline_first():
    assert next(iter(flags.parse_variants(None))) == "baseline"
    parsed = flags.parse_variants(["a=--xla_x=1 --xla_y=A,B", "b="])
    assert parsed == {"baseline": "", "a": "--xla_x=1 --xla_y=A,B", "b": ""}
    with pytest.raises(ValueError, match="NAME=XLA_FLAGS"):
        flags.parse_variants(["no_equals_sign"])


def test_summary_is_median_over_rounds_against_the_baseline_median():
    rows = flags.summarise({"baseline": [30.0, 34.0, 32.0], "fast": [24.0, 25.0], "broken": []})
    by_name = {row["variant"]: row for row in rows}
    assert by_name["baseline"]["step_ms"] == 32.0 and by_name["baseline"]["vs_baseline"] == 1.0
    assert by_name["fast"]["step_ms"] == 24.5 and by_name["fast"]["vs_baseline"] == pytest.approx(24.5 / 32.0)
    assert by_name["broken"]["step_ms"] is None and by_name["broken"]["vs_baseline"] is None
    assert by_name["fast"]["rounds"] == 2
