"""benchmarks/profile_train_step.py: the trace tables add up, and a traced
step runs on the CPU (the GPU's kernels are read the same way)."""

import json

import pytest

from tests.benchmark_scripts import load_script

profile = load_script("profile_train_step")


def _trace():
    meta = [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "pid": 1, "tid": 7, "name": "thread_name", "args": {"name": "Stream #7"}},
        {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/host:CPU"}},
    ]
    kernels = [{"ph": "X", "pid": 1, "tid": 7, "name": name, "ts": i, "dur": dur}
               for i, (name, dur) in enumerate([("gemm", 300.0), ("fusion", 100.0), ("gemm", 500.0),
                                                 ("fusion", 100.0)])]
    host = [{"ph": "X", "pid": 2, "tid": 1, "name": "python", "ts": 0, "dur": 9e6}]
    return {"traceEvents": meta + kernels + host}


def test_thread_tables_sum_each_threads_events_per_step():
    tables = profile.thread_tables(_trace(), process_prefix="/device:GPU", steps=2)
    assert len(tables) == 1  # the host process is not a GPU
    (table,) = tables
    assert (table["process"], table["thread"], table["events"]) == ("/device:GPU:0", "Stream #7", 4)
    assert table["busy_ms_per_step"] == pytest.approx(0.5)  # 1,000 us over 2 steps
    assert [row["name"] for row in table["top"]] == ["gemm", "fusion"]
    assert table["top"][0]["ms_per_step"] == pytest.approx(0.4)
    assert table["top"][0]["count"] == 2
    assert sum(row["share"] for row in table["top"]) == pytest.approx(1.0)


def test_profiled_cpu_step_reports_its_ops(tmp_path):
    out = tmp_path / "profile.json"
    assert profile.main(["--preset", "tiny", "--batch-size", "8", "--steps", "2", "--top", "3",
                         "--trace-dir", str(tmp_path / "trace"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["host_step_ms"] > 0 and result["steps"] == 2
    assert result["threads"], "the CPU trace has no complete events"
    for table in result["threads"]:
        assert table["process"].startswith("/host:CPU")
        assert 0 < len(table["top"]) <= 3
    assert list((tmp_path / "trace").rglob("*.trace.json.gz"))
