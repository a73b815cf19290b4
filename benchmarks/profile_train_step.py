"""Where one train step spends its device time, kernel by kernel.

``benchmarks/train_step_ablation.py`` says how much each suspect costs as a
whole (on an H200 the float32 CE step's forward pass alone took half the
step, at ~1.1 TB/s and ~11 TFLOP/s: neither bandwidth- nor FLOP-bound).
This script names the kernels: it runs a few steps of one ablation variant
under ``jax.profiler.trace``, reads the Chrome-trace JSON that the profiler
writes beside its xplane file, and prints, for each thread of each device
in the trace (CUDA streams, XLA ops, XLA modules), the busy time per step
and the events that take most of it.

  GPU:  PYTHONPATH=. python3 benchmarks/profile_train_step.py --data data_local/Beauty --out $OUT/profile.json
  CPU smoke: PYTHONPATH=. python3 benchmarks/profile_train_step.py --preset tiny --batch-size 8 --steps 2

Compare "busy ms / step" of the stream threads with the host-timed step: a
large gap means the GPU waits (launches, host work); otherwise the top
events are where the time goes. The trace itself (``--trace-dir``) opens in
Perfetto (ui.perfetto.dev) or TensorBoard's profile plugin.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax

# The ablation sits beside this script; benchmarks/ is not a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step_ablation import VARIANTS, parse_loss_arg, prepare, run_steps, step_inputs  # noqa: E402

from genrec.atomic_files import write_json_atomic  # noqa: E402


def thread_tables(trace: dict[str, Any], *, process_prefix: str, steps: int, top: int = 25) -> list[dict]:
    """Per thread of every process whose name starts with ``process_prefix``:
    its busy time per step and its ``top`` event names by total duration.

    Args:
      trace: a Chrome-trace dict (``{"traceEvents": [...]}``); complete
        events (``ph == "X"``) carry ``dur`` in microseconds, metadata events
        (``ph == "M"``) name processes and threads.
      process_prefix: e.g. ``"/device:GPU"`` (or ``"/host:CPU"`` for the
        CPU backend, whose ops run on host threads).
      steps: the number of traced steps, to turn totals into per-step times.

    Returns:
      One dict per thread with any complete event, busiest first:
      ``process``, ``thread``, ``events``, ``busy_ms_per_step`` (sum of event
      durations, nested events counted once each) and ``top``: a list of
      ``{"name", "count", "ms_per_step", "share"}``, ``share`` of the thread's
      busy time.
    """
    events = trace.get("traceEvents", [])
    processes = {e["pid"]: e["args"]["name"] for e in events
                 if e.get("ph") == "M" and e.get("name") == "process_name"}
    threads = {(e["pid"], e.get("tid")): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    durations: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
    counts: dict[tuple, collections.Counter] = collections.defaultdict(collections.Counter)
    for e in events:
        if e.get("ph") != "X" or not str(processes.get(e.get("pid"), "")).startswith(process_prefix):
            continue
        key = (e["pid"], e.get("tid"))
        durations[key][e.get("name", "?")] += float(e.get("dur", 0.0))
        counts[key][e.get("name", "?")] += 1
    tables = []
    for key, by_name in durations.items():
        busy_us = sum(by_name.values())
        tables.append({
            "process": processes[key[0]],
            "thread": threads.get(key, str(key[1])),
            "events": sum(counts[key].values()),
            "busy_ms_per_step": busy_us / 1e3 / steps,
            "top": [{"name": name, "count": counts[key][name], "ms_per_step": us / 1e3 / steps,
                     "share": us / busy_us if busy_us else 0.0}
                    for name, us in by_name.most_common(top)],
        })
    tables.sort(key=lambda t: -t["busy_ms_per_step"])
    return tables


def load_trace(trace_dir: Path) -> dict[str, Any]:
    """The newest ``*.trace.json.gz`` that ``jax.profiler.trace`` wrote under ``trace_dir``."""
    found = sorted(trace_dir.rglob("*.trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}: did jax.profiler write a trace?")
    with gzip.open(found[-1], "rt") as f:
        return json.load(f)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="dataset folder (default: built-in synthetic data)")
    parser.add_argument("--preset", default="t5_small_rec")
    parser.add_argument("--dtype", default="float32", help="compute dtype (the ablation's baseline dtype)")
    parser.add_argument("--loss", default="ce",
                        help="the step's loss, as a train_throughput.py --kinds entry (KIND[@K][+shared])")
    parser.add_argument("--variant", default="baseline", choices=VARIANTS,
                        help="which step of benchmarks/train_step_ablation.py to trace")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=5, help="traced steps (after 3 untraced warm-up steps)")
    parser.add_argument("--top", type=int, default=25, help="events listed per thread")
    parser.add_argument("--trace-dir", default=None, help="keep the raw trace here (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="write the tables as JSON here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.top < 1:
        parser.error("--steps, --batch-size and --top must be positive")

    loss_config = parse_loss_arg(parser, args.loss)  # before the data load: a typo fails at once
    data, mesh, catalogue, batches = step_inputs(args.data, args.batch_size, loss_config)
    platform = jax.devices()[0].platform
    print(f"jax {jax.__version__} {jax.devices()[0].device_kind}; {args.loss} step ({args.variant}), "
          f"batch {args.batch_size}, dtype {args.dtype}", flush=True)
    prepared = prepare(args.variant, base_dtype=args.dtype, preset=args.preset, data=data,
                       loss_config=loss_config, mesh=mesh, batches=batches, catalogue=catalogue)
    run_steps(prepared, batches, catalogue, 3, record=False)

    with tempfile.TemporaryDirectory() as tmp:
        trace_dir = Path(args.trace_dir or tmp)
        start = time.perf_counter()
        with jax.profiler.trace(str(trace_dir)):
            run_steps(prepared, batches, catalogue, args.steps)
        traced_s = time.perf_counter() - start
        trace = load_trace(trace_dir)
    host_ms = statistics.median(prepared.times) * 1e3
    prefix = "/device:GPU" if platform == "gpu" else f"/host:{platform.upper()}"
    tables = thread_tables(trace, process_prefix=prefix, steps=args.steps, top=args.top)
    print(f"\nhost-timed step (median of {args.steps}, traced): {host_ms:.2f} ms; "
          f"whole traced loop {traced_s * 1e3 / args.steps:.2f} ms/step")
    if not tables:
        print(f"no complete events under processes named {prefix!r}")
    for t in tables:
        print(f"\n### {t['process']} / {t['thread']}: {t['busy_ms_per_step']:.2f} busy ms / step, "
              f"{t['events'] / args.steps:.0f} events / step\n")
        print("| event | count / step | ms / step | share |")
        print("|---|---|---|---|")
        for row in t["top"]:
            print(f"| `{row['name'][:90]}` | {row['count'] / args.steps:g} | {row['ms_per_step']:.3f} | "
                  f"{row['share']:.1%} |")
    if args.out:
        write_json_atomic(args.out, {"device": jax.devices()[0].device_kind, "loss": args.loss,
                                     "variant": args.variant, "dtype": args.dtype, "batch": args.batch_size,
                                     "steps": args.steps, "host_step_ms": host_ms, "threads": tables}, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
