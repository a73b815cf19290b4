"""Training throughput of the one jitted train step (training/train_step.py):
samples per second for each loss kind, batch size, compute dtype and number
of data-parallel devices (and, with ``--models``, T5 numerics: ``default`` our
first T5, ``hf`` Hugging Face T5's, office_t5.py's and beauty_t5.py's default),
all measured in one process on one host.

Batches come from the real data pipeline (genrec.batching over the
leave-one-out training split), pre-built and placed on the devices before
timing, so the figure is the step itself; a second figure includes the host
batching + transfer of a fresh batch each step.

Run (GPU):  PYTHONPATH=. python benchmarks/train_throughput.py --data data_local/Beauty
CPU smoke:  PYTHONPATH=. python benchmarks/train_throughput.py --batch-sizes 32 --kinds ce --steps 3 --dtypes float32
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import jax
from flax import nnx

from genrec.atomic_files import write_json_atomic
from genrec.batching import BatchIterator
from genrec.models import build_model
from genrec.split import leave_one_out_split
from tpu_configs.common import T5_MODEL_VARIANTS
from training.config import ModelSpec, OptimizerConfig
from training.losses import LossConfig
from training.optim import make_optimizer
from training.train_step import (
    init_opt_state,
    make_catalogue,
    make_data_mesh,
    make_train_step,
    replicate,
    shard_batch,
)


def load_data(path):
    if path:
        from genrec.datasets import load_sid_dataset

        return load_sid_dataset(path)
    from genrec.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(num_levels=4, codebook_size=256, num_items=12000, num_users=20000)


def placed_train_state(model_config, loss_config, num_levels, mesh):
    """A fresh model (params seed 0) and AdamW state, replicated over ``mesh``:
    ``(graphdef, state, opt_state, optimizer)``."""
    model = build_model(model_config, rngs=nnx.Rngs(params=0, dropout=1))
    graphdef, state = nnx.split(model)
    params = nnx.split_state(state, nnx.Param, ...)[0]
    optimizer, _ = make_optimizer(OptimizerConfig(), 10_000)
    opt_state = init_opt_state(optimizer, params, loss_config, num_levels)
    return graphdef, replicate(state, mesh), replicate(opt_state, mesh), optimizer


def time_steps(step, graphdef, state, opt_state, batches, catalogue, steps):
    rng = jax.random.key(0)
    state, opt_state, m = step(graphdef, state, opt_state, batches[0], rng, catalogue)  # compile
    jax.block_until_ready(m["loss"])
    times = []
    for i in range(steps):
        start = time.perf_counter()
        state, opt_state, m = step(graphdef, state, opt_state, batches[i % len(batches)], jax.random.fold_in(rng, i),
                                   catalogue)
        jax.block_until_ready(m["loss"])
        times.append(time.perf_counter() - start)
    return statistics.median(times), state, opt_state, float(m["loss"])


def parse_kind(spec: str) -> LossConfig:
    """The loss of one ``--kinds`` entry: ``KIND[@K][+shared]``.

    ``@K`` sets ``neg_k`` (default 100); ``+shared`` sets
    ``share_bos_position=True`` (the pairwise step's BOS position decoded once
    per example instead of once per candidate). beta and eta are fixed: they
    do not change the step's work.
    """
    rest, plus, option = spec.partition("+")
    if plus and option != "shared":
        raise ValueError(f"--kinds entry {spec!r}: the only option after '+' is 'shared'")
    name, _, neg_k = rest.partition("@")
    try:
        return LossConfig(kind=name, beta=0.1, eta=1e-5, neg_k=int(neg_k or 100), share_bos_position=bool(plus))
    except ValueError as err:  # an unknown kind or a bad K: say which entry
        raise ValueError(f"--kinds entry {spec!r}: {err}") from err


def model_spec(preset: str, dtype: str, model: str) -> ModelSpec:
    """The preset with the T5 numerics ``model`` (a key of ``tpu_configs.common.T5_MODEL_VARIANTS``)."""
    if model not in T5_MODEL_VARIANTS:
        raise ValueError(f"--models entry {model!r} is not one of: {', '.join(T5_MODEL_VARIANTS)}")
    return ModelSpec(preset=preset, dtype=dtype, **T5_MODEL_VARIANTS[model])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None)
    parser.add_argument("--preset", default="t5_small_rec")
    parser.add_argument("--kinds", default="ce,apao_pointwise,apao_pairwise",
                        help="comma list of loss kinds; apao_pairwise@K sets neg_k=K (default 100), "
                             "apao_pairwise+shared decodes the BOS position once per example")
    parser.add_argument("--batch-sizes", default="128,1024")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--models", default="default",
                        help="comma list of T5 numerics: default (our first T5), hf (Hugging Face T5's)")
    parser.add_argument("--devices", default=None, help="comma list of device counts (default: 1 and all)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    kinds = args.kinds.split(",")
    models = args.models.split(",")
    try:
        loss_configs = [parse_kind(kind) for kind in kinds]
        for model in models:
            model_spec(args.preset, "float32", model)
    except ValueError as err:
        parser.error(str(err))

    data = load_data(args.data)
    split = leave_one_out_split(data.sequences, max_history=20)
    device_counts = [int(x) for x in args.devices.split(",")] if args.devices else sorted({1, jax.device_count()})
    print(f"jax {jax.__version__} {jax.devices()}; {len(split.train.targets)} training examples", flush=True)
    rows = []
    for (kind, loss_config), model in itertools.product(zip(kinds, loss_configs), models):
        catalogue_host = make_catalogue(data.sid_codes, data.vocab, loss_config)
        for dtype in args.dtypes.split(","):
            model_config = model_spec(args.preset, dtype, model).build(data.vocab.vocab_size,
                                                                       data.vocab.num_levels, 20)
            for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
                for n_dev in device_counts:
                    mesh = make_data_mesh(batch_size, n_dev)
                    graphdef, state, opt_state, optimizer = placed_train_state(
                        model_config, loss_config, data.vocab.num_levels, mesh)
                    catalogue = replicate(catalogue_host, mesh)
                    step = make_train_step(loss_config, optimizer, mesh)
                    it = BatchIterator.from_split(split.train, data.sid_codes, data.vocab, batch_size, seed=0)
                    host_batches = [next(it) for _ in range(4)]
                    batches = [shard_batch(b, mesh) for b in host_batches]
                    cost = step.lower(graphdef, state, opt_state, batches[0], jax.random.key(0),
                                      catalogue).compile().cost_analysis()
                    cost = cost[0] if isinstance(cost, list) else cost
                    gflop_per_sample = float(cost.get("flops", float("nan"))) / batch_size / 1e9
                    sec, state, opt_state, loss = time_steps(step, graphdef, state, opt_state, batches, catalogue,
                                                             args.steps)
                    # With the host pipeline in the loop (batching + transfer each step).
                    rng = jax.random.key(1)
                    t0 = time.perf_counter()
                    n = max(5, args.steps // 3)
                    for i in range(n):
                        state, opt_state, m = step(graphdef, state, opt_state, shard_batch(next(it), mesh),
                                                   jax.random.fold_in(rng, i), catalogue)
                    jax.block_until_ready(m["loss"])
                    sec_e2e = (time.perf_counter() - t0) / n
                    row = {"kind": kind, "model": model, "dtype": dtype, "batch": batch_size, "devices": n_dev,
                           "step_ms": sec * 1e3, "samples_per_s": batch_size / sec,
                           "with_host_pipeline_samples_per_s": batch_size / sec_e2e, "final_loss": loss,
                           "xla_gflop_per_sample": gflop_per_sample}
                    rows.append(row)
                    print(row, flush=True)
                    if args.out:  # after every row, so a run cut by a time limit keeps what it measured
                        write_json_atomic(args.out, {"device": jax.devices()[0].device_kind, "rows": rows}, indent=1)
    print("\n| loss | model | dtype | batch | devices | step ms | samples/s | samples/s incl. host batching |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['model']} | {r['dtype']} | {r['batch']} | {r['devices']} | {r['step_ms']:.2f} | "
              f"{r['samples_per_s']:,.0f} | {r['with_host_pipeline_samples_per_s']:,.0f} |")
    def same(r, kind=None, model=None, devices=None):
        """The row that matches ``r`` but for the given fields (None where there is none)."""
        want = (kind or r["kind"], model or r["model"], r["dtype"], r["batch"], devices or r["devices"])
        return next((x for x in rows if (x["kind"], x["model"], x["dtype"], x["batch"], x["devices"]) == want), None)

    for r in rows:
        ce_row = same(r, kind="ce")
        if r["kind"] != "ce" and ce_row:
            print(f"{r['kind']} / ce step time ({r['model']}, {r['dtype']}, batch {r['batch']}, {r['devices']} dev): "
                  f"{r['step_ms'] / ce_row['step_ms']:.2f}x"
                  f" (XLA FLOP ratio {r['xla_gflop_per_sample'] / ce_row['xla_gflop_per_sample']:.2f}x)")
        ours = same(r, model="default")
        if r["model"] != "default" and ours:
            print(f"{r['kind']} {r['model']} / default step time ({r['dtype']}, batch {r['batch']}, "
                  f"{r['devices']} dev): {r['step_ms'] / ours['step_ms']:.2f}x")
        one = same(r, devices=1)
        if r["devices"] > 1 and one:
            print(f"scaling {r['kind']} {r['model']} {r['dtype']} batch {r['batch']}: {r['devices']} devices = "
                  f"{r['samples_per_s'] / one['samples_per_s']:.2f}x one device")

if __name__ == "__main__":
    main()
