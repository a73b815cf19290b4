"""The CE train step under XLA flag variants, each against the baseline in the same call.

Why: on an H100 the float32 CE step at batch 1024 leaves the GPU idle about a
quarter of the step between its ~1,100 kernels (docs/benchmarks.md, "The same
on an H100, and the kernel profile"); CUDA graphs (XLA command buffers) over
more of the step could close those gaps without touching the model.

Each variant runs ``benchmarks/train_throughput.py`` (CE, one device) in a
process of its own with ``XLA_FLAGS`` set, rounds interleaved so drift hits
every variant alike; a variant that fails (XLA aborts on a flag this jaxlib
does not know) is reported as failed.
Prints one row per variant: median step ms over rounds and its ratio to the
baseline's median.

Run (GPU):  PYTHONPATH=. python benchmarks/xla_flags_train.py --data data_local/Beauty --out $OUT/xla_flags.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# name -> XLA_FLAGS. Command buffers (CUDA graphs): more op kinds captured, and graphs of any size.
VARIANTS = {
    "baseline": "",
    "graphs_min1": "--xla_gpu_graph_min_graph_size=1",
    "graphs_all": "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL "
                  "--xla_gpu_graph_min_graph_size=1",
    "cublaslt": "--xla_gpu_enable_cublaslt=true",
}


def parse_variants(specs: list[str] | None) -> dict[str, str]:
    """``NAME=FLAGS`` entries (``--variant``), else the defaults; the baseline is always first."""
    if not specs:
        return dict(VARIANTS)
    variants = {"baseline": ""}
    for spec in specs:
        name, sep, flags = spec.partition("=")
        if not sep or not name:
            raise ValueError(f"--variant {spec!r}: expected NAME=XLA_FLAGS")
        variants[name] = flags
    return variants


def summarise(times: dict[str, list[float]]) -> list[dict]:
    """Rows of median step ms per variant and its ratio to the baseline's median (None where a variant has
    no successful round)."""
    base = statistics.median(times["baseline"]) if times.get("baseline") else None
    rows = []
    for name, values in times.items():
        median = statistics.median(values) if values else None
        rows.append({"variant": name, "rounds": len(values), "step_ms": median,
                     "vs_baseline": median / base if median is not None and base else None})
    return rows


def run_variant(flags: str, args: argparse.Namespace) -> float | None:
    """Median step ms of one train_throughput.py process with these XLA flags; None if it failed."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        command = [sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "--kinds", "ce",
                   "--dtypes", args.dtype, "--batch-sizes", str(args.batch_size), "--devices", "1",
                   "--steps", str(args.steps), "--out", str(out)]
        if args.data:
            command += ["--data", args.data]
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip(),
                   PYTHONPATH=str(REPO))
        proc = subprocess.run(command, capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not out.exists():
            print(f"  failed (rc {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-300:]}", flush=True)
            return None
        return json.loads(out.read_text())["rows"][0]["step_ms"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None)
    parser.add_argument("--variant", action="append", help="NAME=XLA_FLAGS (repeatable; default: the built-in set)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    try:
        variants = parse_variants(args.variant)
    except ValueError as err:
        parser.error(str(err))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(args.rounds):
        for name, flags in variants.items():
            print(f"round {round_index + 1}: {name} {flags}", flush=True)
            step_ms = run_variant(flags, args)
            if step_ms is not None:
                times[name].append(step_ms)
                print(f"  {step_ms:.2f} ms", flush=True)
    rows = summarise(times)
    print("\n| variant | XLA_FLAGS | rounds | step ms (median) | vs baseline |\n|---|---|---|---|---|")
    for row in rows:
        step = f"{row['step_ms']:.2f}" if row["step_ms"] is not None else "failed"
        ratio = f"{row['vs_baseline']:.2f}x" if row["vs_baseline"] is not None else "-"
        print(f"| {row['variant']} | `{variants[row['variant']] or '(none)'}` | {row['rounds']} | {step} | {ratio} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"variants": variants, "times_ms": times, "rows": rows,
                                              "dtype": args.dtype, "batch_size": args.batch_size}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
