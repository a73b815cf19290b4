"""Where the CE train step's time goes: the one jitted step of
training/train_step.py in several variants, timed in one process, each as a
ratio to the baseline step.

The H100 CE step in float32 (36 ms at batch 1024, docs/benchmarks.md) runs
at a few percent of the card's arithmetic peak and is 31% slower than on an
H200, which has the same FLOPs and 1.43x the memory bandwidth. Each variant
removes one suspect:

  baseline    the step as the GPU configs train it (preset dtype and dropout,
              threefry keys, JAX's default matmul precision)
  no_dropout  dropout rate 0: what drawing and applying the masks costs
  rbg         the step's key made with ``impl="rbg"`` (XLA's RngBitGenerator)
              instead of threefry: the same Bernoulli masks' law, other bits
  f32_dots    ``jax.default_matmul_precision("float32")``: full-precision
              matmuls instead of the TF32 default of recent GPUs (slower if
              the step were bound by matmul arithmetic)
  bfloat16    bfloat16 compute (half the bytes of every activation)
  grad        the baseline's loss and gradients only, no optimizer update
  forward     the baseline's loss only (no backward pass, no update)
  fused_qkv   ``ModelConfig.fuse_qkv_projections``: each attention input's
              projections as one matmul (same parameters and math; fewer,
              wider kernels, which the H100 profile suggested)

XLA's cost analysis of each compiled step gives its FLOPs and bytes
accessed; dividing by the measured time gives the achieved TFLOP/s and GB/s,
to set beside the card's peaks (H100 SXM: ~3,350 GB/s; H200: ~4,800).

Timing: the variants run interleaved in rounds (each round times ``--steps``
steps of every variant), medians over all rounds, so drift of the host or
the card hits every variant alike.

Any loss kind's step can be the baseline: ``--loss apao_pairwise`` (the
grammar of ``train_throughput.py --kinds``: ``KIND[@K][+shared]``) ablates
the pairwise step the same way.

Run (GPU):  PYTHONPATH=. python benchmarks/train_step_ablation.py --data data_local/Beauty
CPU smoke:  PYTHONPATH=. python benchmarks/train_step_ablation.py --batch-size 16 --steps 2 --rounds 1
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

# train_throughput.py sits beside this script; benchmarks/ is not a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import load_data, parse_kind, placed_train_state  # noqa: E402

from genrec.atomic_files import write_json_atomic  # noqa: E402
from genrec.batching import BatchIterator  # noqa: E402
from genrec.split import leave_one_out_split  # noqa: E402
from training.config import ModelSpec  # noqa: E402
from training.losses import LossConfig  # noqa: E402
from training.train_step import make_catalogue, make_data_mesh, make_train_step, replicate, shard_batch, step_loss_fn  # noqa: E402  # noqa: E402

VARIANTS = ("baseline", "no_dropout", "rbg", "f32_dots", "bfloat16", "grad", "forward", "fused_qkv")


def make_partial_step(loss_config: LossConfig, part: str):
    """A jitted function with the train step's signature that runs only the
    loss (``part="forward"``) or the loss and its gradients (``"grad"``) and
    returns the state unchanged; the gradients' norm is returned so that XLA
    cannot drop the backward pass."""

    def partial_step(graphdef, state, opt_state, batch, rng, catalogue):
        params, rest = nnx.split_state(state, nnx.Param, ...)
        loss_fn = step_loss_fn(graphdef, rest, batch, rng, catalogue, loss_config)
        if part == "forward":
            loss, _ = loss_fn(params)
            return state, opt_state, {"loss": loss}
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
        return state, opt_state, {"loss": loss, "grad_norm": grad_norm}

    return jax.jit(partial_step)


@dataclasses.dataclass
class Prepared:
    """One variant, compiled and ready to step."""

    name: str
    step: object
    graphdef: object
    state: object
    opt_state: object
    key: jax.Array
    precision: str | None
    gflop: float
    gbytes: float
    times: list = dataclasses.field(default_factory=list)
    last_loss: float = float("nan")

    def context(self):
        return jax.default_matmul_precision(self.precision) if self.precision else contextlib.nullcontext()


def prepare(name: str, *, base_dtype: str, preset: str, data, loss_config: LossConfig, mesh, batches,
            catalogue) -> Prepared:
    """Build, place and compile the step of variant ``name``."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    dtype = "bfloat16" if name == "bfloat16" else base_dtype
    model_config = ModelSpec(preset=preset, dtype=dtype).build(data.vocab.vocab_size, data.vocab.num_levels, 20)
    if name == "no_dropout":
        model_config = dataclasses.replace(model_config, dropout_rate=0.0)
    if name == "fused_qkv":
        model_config = dataclasses.replace(model_config, fuse_qkv_projections=True)
    graphdef, state, opt_state, optimizer = placed_train_state(model_config, loss_config, data.vocab.num_levels, mesh)
    key = jax.random.key(0, impl="rbg") if name == "rbg" else jax.random.key(0)
    step = (make_partial_step(loss_config, name) if name in ("grad", "forward")
            else make_train_step(loss_config, optimizer, mesh))
    prepared = Prepared(name, step, graphdef, state, opt_state, key,
                        "float32" if name == "f32_dots" else None, float("nan"), float("nan"))
    with prepared.context():
        compiled = prepared.step.lower(graphdef, state, opt_state, batches[0], key, catalogue).compile()
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, list) else cost) or {}
    prepared.gflop = float(cost.get("flops", float("nan"))) / 1e9
    prepared.gbytes = float(cost.get("bytes accessed", float("nan"))) / 1e9
    run_steps(prepared, batches, catalogue, 1, record=False)  # first call: compile + warm the caches
    return prepared


def run_steps(p: Prepared, batches, catalogue, steps: int, *, record: bool = True) -> None:
    """``steps`` steps of one variant, each timed to its result on the host."""
    with p.context():
        for _ in range(steps):
            i = len(p.times)
            start = time.perf_counter()
            p.state, p.opt_state, metrics = p.step(p.graphdef, p.state, p.opt_state, batches[i % len(batches)],
                                                   jax.random.fold_in(p.key, i), catalogue)
            jax.block_until_ready(metrics["loss"])
            if record:
                p.times.append(time.perf_counter() - start)
    p.last_loss = float(metrics["loss"])


def summarize(prepared: list[Prepared], batch_size: int) -> list[dict]:
    """One row per variant: median step time, ratio to the first variant, achieved rates."""
    base_ms = statistics.median(prepared[0].times) * 1e3
    rows = []
    for p in prepared:
        ms = statistics.median(p.times) * 1e3
        rows.append({"variant": p.name, "step_ms": ms, "vs_baseline": ms / base_ms,
                     "samples_per_s": batch_size / (ms / 1e3), "gflop_per_step": p.gflop,
                     "gbytes_per_step": p.gbytes, "tflop_per_s": p.gflop / ms,
                     "gbytes_per_s": p.gbytes / (ms / 1e3), "final_loss": p.last_loss, "steps_timed": len(p.times)})
    return rows


def parse_loss_arg(parser: argparse.ArgumentParser, loss: str) -> LossConfig:
    """``--loss`` (a ``train_throughput.py --kinds`` entry) as a ``LossConfig``;
    a bad kind is a usage error naming the flag."""
    try:
        return parse_kind(loss)
    except ValueError as err:
        parser.error(f"--loss: {err}")


def step_inputs(data_path: str | None, batch_size: int, loss_config: LossConfig = LossConfig(kind="ce")):
    """What every variant's step is fed, on one device: ``(data, mesh,
    catalogue, batches)``, with 4 training batches of ``batch_size`` (the
    first 4 of the seed-0 order) placed on the device."""
    data = load_data(data_path)
    split = leave_one_out_split(data.sequences, max_history=20)
    mesh = make_data_mesh(batch_size, 1)
    catalogue = replicate(make_catalogue(data.sid_codes, data.vocab, loss_config), mesh)
    it = BatchIterator.from_split(split.train, data.sid_codes, data.vocab, batch_size, seed=0)
    batches = [shard_batch(next(it), mesh) for _ in range(4)]
    return data, mesh, catalogue, batches


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="dataset folder (default: built-in synthetic data)")
    parser.add_argument("--preset", default="t5_small_rec")
    parser.add_argument("--dtype", default="float32", help="the baseline's compute dtype")
    parser.add_argument("--loss", default="ce",
                        help="the step's loss, as a train_throughput.py --kinds entry (KIND[@K][+shared])")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma list, the first is the baseline of the ratios")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or not names:
        parser.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if args.steps < 1 or args.rounds < 1 or args.batch_size < 1:
        parser.error("--steps, --rounds and --batch-size must be positive")

    loss_config = parse_loss_arg(parser, args.loss)  # before the data load: a typo fails at once
    data, mesh, catalogue, batches = step_inputs(args.data, args.batch_size, loss_config)
    print(f"jax {jax.__version__} {jax.devices()[0].device_kind}; {args.loss} step, batch {args.batch_size}, "
          f"baseline dtype {args.dtype}", flush=True)
    prepared = [prepare(n, base_dtype=args.dtype, preset=args.preset, data=data, loss_config=loss_config,
                        mesh=mesh, batches=batches, catalogue=catalogue) for n in names]
    for r in range(args.rounds):
        for p in prepared:
            run_steps(p, batches, catalogue, args.steps)
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    rows = summarize(prepared, args.batch_size)
    print("\n| variant | step ms | vs baseline | samples/s | GFLOP/step | GB/step | TFLOP/s | GB/s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['variant']} | {row['step_ms']:.2f} | {row['vs_baseline']:.2f}x | {row['samples_per_s']:,.0f} | "
              f"{row['gflop_per_step']:.1f} | {row['gbytes_per_step']:.2f} | {row['tflop_per_s']:.1f} | "
              f"{row['gbytes_per_s']:,.0f} |")
    if args.out:
        write_json_atomic(args.out, {"device": jax.devices()[0].device_kind, "loss": args.loss,
                                     "batch": args.batch_size, "baseline_dtype": args.dtype, "rows": rows},
                          indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
