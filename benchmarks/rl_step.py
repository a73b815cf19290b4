"""Speed of the V-STAR RL stage (docs/rl.md): rollouts at one forward-token budget, the
full RL step of every arm, and the CE train step beside it, all in one process.

Same model (the paper's T5, ``ModelSpec(preset="t5_small_rec")``, random weights or a
trained ``--workdir``), same batch of requests (20-item histories from the
leave-one-out training split, ``genrec.batching.BatchIterator``), pre-placed on the
device; per jitted call the median of ``--repeats`` warm calls (``block_until_ready``)
and its compile time (first call minus the median: what a user waits once).

1. Rollouts, ``G`` per request, each arm one jitted ``fn(weights, index, histories, key)``:
   ``beam_search`` (``constrained.decode.decode_batch``, width ``G``, trie
   normalization: the baseline), ``beam_rollouts`` (the same search plus a replay
   for per-level log-probs), ``sample`` (``constrained_sample``), ``ved``
   (``value_guided_decode`` with the value head and its KV cache over the tree,
   ``make_cached_node_fn``, as the RL step runs it; initial beam and iterations from
   ``training.rl_step.ved_iterations``) and ``ved_uncached`` (the same search, each
   node's whole prefix decoded, ``make_node_fn``: what the cache saves). Target
   (shared/performance-targets.md): ``ved`` <= 1.5x ``beam_search``.
2. The RL step (``training.rl_step.make_rl_step``) of each arm of
   ``tpu_configs.common.RL_ARMS``, requests/s and rollouts/s, and the CE train step
   (``make_train_step``, ``LossConfig(kind="ce")``) at ``--ce-batch-size`` in samples/s.

Numbers first (the floor to compare the measured time with). Defaults: L = 4 levels of
256 codes (vocabulary 1,026), G = 16, history 20 items = H = 80 tokens, T5 4+4 layers,
d_model 128, 6 x 64 heads, ReLU FFN 1024 (4.6M parameters). Counting the matmuls and
attention (2 FLOPs a multiply-add; norms, softmaxes and the trie's gathers left out),
one request's history costs 0.40 GFLOP to encode (encoder + the decoder's
cross-attention keys/values) and one decoder position 5.2 MFLOP (0.26 of it the logits).

Forward tokens per request (docs/rl.md, "Budget": one per tree node, a KV-cached decoder)
against the decoder positions each arm computes (static shapes compute every slot):

| arm | budget tokens | decoder positions computed | GFLOP / request |
|---|---|---|---|
| beam_search | 1 + 3 x 16 = 49 | 4 levels x 16 beams = 64 | 0.73 |
| beam_rollouts | 49 | 64 + a 64-position replay = 128 | 1.07 |
| sample | 49 | 64 | 0.73 |
| ved | <= 49 | 1 + 3 x 4 + 5 x 8 = 53 node slots x 1 position (KV cache over the tree) = 53 | 0.67 |
| ved_uncached | <= 49 | 53 node slots x 5 positions (each node's whole prefix) = 265 | 1.78 |

(VED's static shapes compute every slot: the root, 3 initial levels of width 4 above the
free leaves, then ``ceil(36 / 8) = 5`` iterations of 8 slots.) With the cache VED's floor
is 0.92x the beam search's in FLOPs (uncached: 2.4x, 4.1x in decoder positions), but it
still makes 1 + (L - 1) + iterations = 9 sequential model calls to the beam search's 4,
each gathering its nodes' ancestor K/V from the tree's table (``B x 53 x L`` rows of
layers x 2 x heads x head_dim values; the table holds ``B x 49`` rows, 294 MiB at B = 512),
so launches and memory traffic, not arithmetic, decide whether it meets 1.5x.
The RL step adds to its rollouts a reference pass (encode + 16 x 5 teacher-forced
positions: 0.82 GFLOP) and the policy's forward + backward (3 x 0.82): 4.0 GFLOP per
request for grpo_sample / sibling, 4.3 for grpo_beam, 3.9 for vstar (5.0 uncached), against 1.25 GFLOP
per sample for the CE step (3 x (encode + 4 positions)). At 989 TFLOP/s (H100 bf16 dense;
about half that for float32 through TF32) that is a floor of ~250k requests/s (sampling
arms) and ~790k CE samples/s; matmuls this small reach a few % of peak, so launches and
memory bound both steps. The script prints this estimate for whatever model and sizes it
runs, beside XLA's own FLOP count of each compiled program (``cost_analysis``, which counts
a loop body once: VED's ``lax.scan`` levels and iterations make its figure too low).

Every arm's ``valid`` column is the fraction of its ``G`` slots holding a rollout: VED
returns fewer than ``G`` complete SIDs when its tree holds fewer leaves (on the synthetic
catalogue at the defaults, about a third), so compare its time together with it.

Run (GPU):  PYTHONPATH=. python benchmarks/rl_step.py --data data_local/Beauty --batch-size 64,256 --out rl_step.json
Rollouts only (no RL or CE step rows): add ``--rl-arms "" --ce-batch-size 0``.
CPU smoke:  PYTHONPATH=. python benchmarks/rl_step.py --model tiny --batch-size 4 --num-rollouts 4 --repeats 2
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from constrained.decode import build_eval_index, decode_batch
from constrained.sampling import beam_rollouts, constrained_sample
from constrained.ved import beam_search_budget, value_guided_decode, ved_uniforms
from genrec.atomic_files import write_json_atomic
from genrec.batching import BatchIterator
from genrec.models import ModelConfig, build_model, count_params
from genrec.models.value_head import make_cached_node_fn, make_node_fn
from genrec.split import leave_one_out_split
from genrec.vocab import BOS_ID
from tpu_configs.common import RL_ARMS
from training.config import ModelSpec, OptimizerConfig, RLConfig
from training.losses import LossConfig
from training.optim import make_optimizer
from training.rl_step import init_value_head, make_rl_step, rollout_budget, ved_iterations
from training.train_step import (
    init_opt_state,
    make_catalogue,
    make_data_mesh,
    make_train_step,
    replicate,
    shard_batch,
)

MAX_HISTORY = 20
ROLLOUT_ARMS = ("beam_search", "beam_rollouts", "sample", "ved", "ved_uncached")
BASELINE = "beam_search"
# The rollout arm each RLConfig.rollouts kind runs inside the RL step.
STEP_ROLLOUT_ARM = {"beam": "beam_rollouts", "sample": "sample", "ved": "ved"}


# ------------------------------------------------------------------ the floor


def flop_estimate(config: ModelConfig, num_levels: int, history_tokens: int) -> tuple[float, float]:
    """``(encode, decoder position)`` forward FLOPs of one request: the matmuls and attention.

    ``encode``: the history's ``history_tokens`` through the encoder plus the decoder's
    cross-attention keys/values (decoder-only: the history through the decoder). A
    decoder position attends to the history and up to ``num_levels + 1`` prefix tokens
    and ends in the ``vocab_size`` logits.
    """
    d, width, ffn_width = config.d_model, config.attention_width, config.d_ff
    ffn = (3 if config.is_gated_ffn else 2) * d * ffn_width
    own_attention = 4 * d * width  # q, k, v, o projections
    if config.arch == "encoder_decoder":
        encoder_token = own_attention + 2 * width * history_tokens + ffn
        cross_keys_values = config.num_decoder_layers * 2 * d * width
        encode = history_tokens * (config.num_encoder_layers * encoder_token + cross_keys_values)
        layer = own_attention + 2 * d * width + 2 * width * (history_tokens + num_levels + 1) + ffn
    else:
        encode = history_tokens * config.num_decoder_layers * (own_attention + 2 * width * history_tokens + ffn)
        layer = own_attention + 2 * width * (history_tokens + num_levels + 1) + ffn
    position = config.num_decoder_layers * layer + d * config.vocab_size
    return 2.0 * encode, 2.0 * position


def decoder_positions(arm: str, rl: RLConfig, num_levels: int) -> int:
    """Decoder positions one request's rollouts compute (every static slot, the padding included)."""
    G = rl.num_rollouts
    if arm in ("beam_search", "sample"):
        return num_levels * G
    if arm == "beam_rollouts":
        return 2 * num_levels * G
    width, iterations = ved_iterations(rl, num_levels)
    evaluated = beam_search_budget(num_levels, width) + iterations * rl.ved_nodes_per_iteration  # leaves are free
    return evaluated * (num_levels + 1 if arm == "ved_uncached" else 1)


def estimated_gflop(part: str, arm: str, rl: RLConfig, config: ModelConfig, num_levels: int,
                    history_tokens: int) -> float:
    """Forward (+ backward) GFLOP per request of a rollout arm, an RL step or the CE step (module docstring)."""
    encode, position = flop_estimate(config, num_levels, history_tokens)
    if part == "ce_step":
        return 3 * (encode + num_levels * position) / 1e9  # forward + backward (2x)
    rollouts = encode + decoder_positions(arm, rl, num_levels) * position
    if part == "rollouts":
        return rollouts / 1e9
    teacher_forced = encode + rl.num_rollouts * (num_levels + 1) * position
    return (rollouts + teacher_forced * (1 + 3 * rl.inner_epochs)) / 1e9  # reference pass + policy fwd/bwd


# ------------------------------------------------------------------ the model


def load_setup(args) -> tuple[nnx.Module, ModelConfig, Any]:
    """``(model, model_config, data)``: a trained ``--workdir`` or a fresh ``--model`` (params seed 0)."""
    if args.workdir:
        from genrec.run_files import load_model_for_inference, load_workdir_data

        model, model_config, vocab, _, _ = load_model_for_inference(args.workdir)
        return model, model_config, load_workdir_data(args.workdir, args.data, vocab)
    if args.data:
        from genrec.datasets import load_sid_dataset

        data = load_sid_dataset(args.data)
    else:
        from genrec.synthetic import make_synthetic_dataset

        data = make_synthetic_dataset(num_levels=4, codebook_size=256, num_items=12000, num_users=20000)
    model_config = ModelSpec(preset=args.model, dtype=args.dtype).build(data.vocab.vocab_size, data.vocab.num_levels,
                                                                        MAX_HISTORY)
    return build_model(model_config, rngs=nnx.Rngs(params=0, dropout=1)), model_config, data


def copied(tree: Any) -> Any:
    """Fresh device buffers (a donating step must not consume the buffers another arm reads)."""
    return jax.tree.map(lambda leaf: leaf.copy(), tree)


# ------------------------------------------------------------------ timing


def time_calls(call: Callable[[int], Any], repeats: int) -> tuple[float, float]:
    """``(median seconds of a warm call, compile seconds)``: ``call(i)`` returns arrays to wait on.

    The first call (trace + compile + run) is the warm-up, timed too: compile = first - median.
    """
    start = time.perf_counter()
    jax.block_until_ready(call(0))
    first = time.perf_counter() - start
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call(i + 1))
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return median, max(first - median, 0.0)


def xla_gflop(jitted, *example_args) -> float:
    """XLA's FLOP count of the compiled program (already compiled: no second compile)."""
    cost = jitted.lower(*example_args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float((cost or {}).get("flops", float("nan"))) / 1e9


# ------------------------------------------------------------------ rollouts


def make_rollout_fn(arm: str, graphdef: nnx.GraphDef, value_graphdef: nnx.GraphDef, rl: RLConfig, num_levels: int):
    """The jitted ``fn(weights, index, history_tokens, history_mask, key) -> (sid_codes [B, G, L],
    valid [B, G], tokens_used [B])`` of one rollout arm; ``weights = {"model": nnx.split(model)[1],
    "value": ValueHead state}``."""
    G = rl.num_rollouts
    budget = rollout_budget(rl, num_levels)

    def fn(weights, index, history_tokens, history_mask, key):
        batch = history_tokens.shape[0]
        beam_tokens = jnp.full((batch,), beam_search_budget(num_levels, G), jnp.int32)
        if arm == "beam_search":
            out = decode_batch(graphdef, weights["model"], index, history_tokens, history_mask, num_beams=G,
                               normalization="trie")
            return out.sid_codes, out.valid, beam_tokens
        model = nnx.merge(graphdef, weights["model"])
        shared = model.encode(history_tokens, history_mask)
        if arm == "beam_rollouts":
            out = beam_rollouts(index, model.decode_step, shared, model.init_beam_cache(shared, G), num_rollouts=G,
                                start_token=BOS_ID, normalization="trie")
            return out.sid_codes, out.valid, beam_tokens
        if arm == "sample":
            out = constrained_sample(index, model.decode_step, shared, model.init_beam_cache(shared, G), key,
                                     num_samples=G, start_token=BOS_ID, temperature=rl.temperature, top_k=rl.top_k,
                                     top_p=rl.top_p, normalization="trie")
            return out.sid_codes, out.valid, jnp.full((batch,), budget, jnp.int32)
        head = nnx.merge(value_graphdef, weights["value"])
        width, iterations = ved_iterations(rl, num_levels)
        uniforms = ved_uniforms(key, num_iterations=iterations, num_requests=batch,
                                nodes_per_iteration=rl.ved_nodes_per_iteration)
        cached = arm == "ved"
        make = make_cached_node_fn if cached else make_node_fn
        out = value_guided_decode(index, make(model, head, shared, index.meta.token_offsets), uniforms,
                                  num_outputs=G, budget=budget, init_beam_width=width, lam=rl.ved_lambda,
                                  beta=rl.ved_beta, cached=cached)
        return out.sid_codes, out.valid, out.tokens_used

    return jax.jit(fn)


def rollout_rows(model, model_config, rl, device_index, host_batch, repeats, history_tokens) -> list[dict]:
    num_levels = device_index.meta.num_levels
    graphdef, state = nnx.split(model)
    value_graphdef, value_params = init_value_head(model_config, rl, seed=0)
    weights = {"model": state, "value": value_params}
    tokens, mask = jax.device_put((host_batch["history_tokens"], host_batch["history_mask"]))
    base_key = jax.random.key(0)
    keys = [jax.random.fold_in(base_key, i) for i in range(repeats + 1)]
    batch, G = tokens.shape[0], rl.num_rollouts
    rows = []
    for arm in ROLLOUT_ARMS:
        fn = make_rollout_fn(arm, graphdef, value_graphdef, rl, num_levels)
        outputs = []

        def call(i, fn=fn, outputs=outputs):
            outputs[:] = [fn(weights, device_index, tokens, mask, keys[i])]
            return outputs[0]

        sec, compile_s = time_calls(call, repeats)
        sid_codes, valid, tokens_used = jax.device_get(outputs[0])
        rows.append({
            "part": "rollouts", "arm": arm, "batch": batch, "num_rollouts": G,
            "budget_tokens": rollout_budget(rl, num_levels), "tokens_used": float(np.mean(tokens_used)),
            "ms": sec * 1e3, "compile_s": compile_s, "requests_per_s": batch / sec, "rollouts_per_s": batch * G / sec,
            "valid_fraction": float(np.mean(valid)),
            "est_gflop_per_request": estimated_gflop("rollouts", arm, rl, model_config, num_levels, history_tokens),
            "xla_gflop_per_request": xla_gflop(fn, weights, device_index, tokens, mask, keys[0]) / batch,
        })
        print(rows[-1], flush=True)
    base = next(r["ms"] for r in rows if r["arm"] == BASELINE)
    for row in rows:
        row["x_beam_search"] = row["ms"] / base
    return rows


# ------------------------------------------------------------------ steps


def rl_step_row(arm_name, rl, model, model_config, eval_index, host_batch, repeats, history_tokens) -> dict:
    """Times ``make_rl_step`` of one arm, its arguments built as training/rl.py builds them."""
    mesh = make_data_mesh(rl.batch_size, 1)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = copied(params)
    reference_params = copied(params)
    value_graphdef, value_params = init_value_head(model_config, rl, seed=0)
    optimizer, _ = make_optimizer(rl.optimizer, rl.num_steps)
    trainable = {"policy": params, "value": value_params}
    opt_state = optimizer.init(trainable)
    device_index = replicate(eval_index.to_device(), mesh)
    num_levels = device_index.meta.num_levels
    trainable, opt_state, reference_params, rest = replicate((trainable, opt_state, reference_params, rest), mesh)
    batch = shard_batch(host_batch, mesh)
    step = make_rl_step(rl, optimizer, mesh)
    base_key = jax.random.key(0)
    keys = [jax.random.fold_in(base_key, i) for i in range(repeats + 1)]
    carry = {"trainable": trainable, "opt_state": opt_state}
    metrics = {}

    def call(i):
        carry["trainable"], carry["opt_state"], m = step(graphdef, value_graphdef, carry["trainable"],
                                                         carry["opt_state"], reference_params, rest, batch, keys[i],
                                                         device_index)
        metrics.update(m)
        return m["loss"]

    sec, compile_s = time_calls(call, repeats)
    gflop = xla_gflop(step, graphdef, value_graphdef, carry["trainable"], carry["opt_state"], reference_params, rest,
                      batch, keys[0], device_index)
    size = rl.batch_size
    return {
        "part": "rl_step", "arm": arm_name, "rollouts": rl.rollouts, "batch": size, "num_rollouts": rl.num_rollouts,
        "ms": sec * 1e3, "compile_s": compile_s, "requests_per_s": size / sec,
        "rollouts_per_s": size * rl.num_rollouts / sec, "loss": float(metrics["loss"]),
        "tokens_used": float(metrics["tokens_used"]),
        "rollouts_in_catalogue": float(metrics["rollouts_in_catalogue"]),
        "valid_fraction": float(metrics["valid_fraction"]),
        "unique_items_per_group": float(metrics["unique_items_per_group"]),
        "est_gflop_per_request": estimated_gflop("rl_step", STEP_ROLLOUT_ARM[rl.rollouts], rl, model_config,
                                                 num_levels, history_tokens),
        "xla_gflop_per_request": gflop / size,
    }


def ce_step_row(model, model_config, data, split, batch_size, repeats, history_tokens) -> dict:
    """Times the CE train step (training/train_step.py) on the same weights, samples/s."""
    loss_config = LossConfig(kind="ce")
    num_levels = data.vocab.num_levels
    mesh = make_data_mesh(batch_size, 1)
    graphdef, state = nnx.split(model)
    state = copied(state)
    params = nnx.split_state(state, nnx.Param, ...)[0]
    optimizer, _ = make_optimizer(OptimizerConfig(), 10_000)
    opt_state = init_opt_state(optimizer, params, loss_config, num_levels)
    state, opt_state = replicate((state, opt_state), mesh)
    catalogue = replicate(make_catalogue(data.sid_codes, data.vocab, loss_config), mesh)
    step = make_train_step(loss_config, optimizer, mesh)
    iterator = BatchIterator.from_split(split.train, data.sid_codes, data.vocab, batch_size, seed=0)
    batch = shard_batch(next(iterator), mesh)
    base_key = jax.random.key(0)
    keys = [jax.random.fold_in(base_key, i) for i in range(repeats + 1)]
    carry = {"state": state, "opt_state": opt_state}
    metrics = {}

    def call(i):
        carry["state"], carry["opt_state"], m = step(graphdef, carry["state"], carry["opt_state"], batch, keys[i],
                                                     catalogue)
        metrics.update(m)
        return m["loss"]

    sec, compile_s = time_calls(call, repeats)
    gflop = xla_gflop(step, graphdef, carry["state"], carry["opt_state"], batch, keys[0], catalogue)
    return {
        "part": "ce_step", "arm": "ce", "batch": batch_size, "ms": sec * 1e3, "compile_s": compile_s,
        "requests_per_s": batch_size / sec, "loss": float(metrics["loss"]),
        "est_gflop_per_request": estimated_gflop("ce_step", "ce", RLConfig(), model_config, num_levels,
                                                 history_tokens),
        "xla_gflop_per_request": gflop / batch_size,
    }


# ------------------------------------------------------------------ report


def print_tables(rows: list[dict]) -> None:
    """The two Markdown tables (rollouts; steps) and the VED verdict."""
    rollouts = [r for r in rows if r["part"] == "rollouts"]
    steps = [r for r in rows if r["part"] != "rollouts"]
    if rollouts:
        print("\n| rollouts | batch | G | budget tokens | tokens used | ms | x beam search | compile s | requests/s | "
              "rollouts/s | valid | est. GFLOP/req | XLA GFLOP/req |")
        print("|---" * 13 + "|")
        for r in rollouts:
            cells = [r["arm"], r["batch"], r["num_rollouts"], r["budget_tokens"], f"{r['tokens_used']:.1f}",
                     f"{r['ms']:.3f}", f"{r['x_beam_search']:.2f}", f"{r['compile_s']:.1f}",
                     f"{r['requests_per_s']:,.0f}", f"{r['rollouts_per_s']:,.0f}", f"{r['valid_fraction']:.3f}",
                     f"{r['est_gflop_per_request']:.3f}", f"{r['xla_gflop_per_request']:.3f}"]
            print("| " + " | ".join(str(c) for c in cells) + " |")
    if steps:
        ce = next((r for r in steps if r["part"] == "ce_step"), None)
        print("\n| step | batch | G | ms | compile s | requests/s (CE: samples/s) | rollouts/s | valid | "
              "time/request vs CE | est. GFLOP/req | XLA GFLOP/req |")
        print("|---" * 11 + "|")
        for r in steps:
            cells = [r["arm"], r["batch"], r.get("num_rollouts", "-"), f"{r['ms']:.2f}", f"{r['compile_s']:.1f}",
                     f"{r['requests_per_s']:,.0f}",
                     f"{r['rollouts_per_s']:,.0f}" if "rollouts_per_s" in r else "-",
                     f"{r['valid_fraction']:.3f}" if "valid_fraction" in r else "-",
                     f"{ce['requests_per_s'] / r['requests_per_s']:.1f}x" if ce else "-",
                     f"{r['est_gflop_per_request']:.2f}", f"{r['xla_gflop_per_request']:.2f}"]
            print("| " + " | ".join(str(c) for c in cells) + " |")
    for r in rollouts:
        if r["arm"] in ("ved", "ved_uncached"):
            verdict = "meets" if r["x_beam_search"] <= 1.5 else "misses"
            print(f"{r['arm']} / beam search at batch {r['batch']}, G {r['num_rollouts']}: {r['x_beam_search']:.2f}x "
                  f"({verdict} the <= 1.5x target)")

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="dataset dir (default: a synthetic 12k-item, 4x256 catalogue)")
    parser.add_argument("--workdir", default=None, help="a trained run's weights (genrec train --workdir), "
                                                        "instead of a fresh --model")
    parser.add_argument("--model", default="t5_small_rec", choices=["t5_small_rec", "llama_small_rec", "tiny"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="compute dtype of a fresh --model (a --workdir keeps its own)")
    parser.add_argument("--batch-size", default="64", help="comma list of requests per call, e.g. 64,256")
    parser.add_argument("--num-rollouts", type=int, default=16, help="G, rollouts per request")
    parser.add_argument("--budget", type=int, default=None,
                        help="forward tokens per request (default: one width-G beam search, 1 + (L-1)G)")
    parser.add_argument("--rl-arms", default=",".join(RL_ARMS), help="comma list of tpu_configs RL_ARMS to step")
    parser.add_argument("--ce-batch-size", type=int, default=1024, help="CE train step batch (0: skip it)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None, help="JSON file of every row (rewritten after each)")
    args = parser.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_size.split(",")]
    arms = [a for a in args.rl_arms.split(",") if a]
    unknown = [a for a in arms if a not in RL_ARMS]
    if unknown:
        parser.error(f"--rl-arms {','.join(unknown)}: not an arm of tpu_configs/common.py RL_ARMS "
                     f"({', '.join(RL_ARMS)})")

    model, model_config, data = load_setup(args)
    num_levels = data.vocab.num_levels
    history_tokens = MAX_HISTORY * num_levels
    split = leave_one_out_split(data.sequences, max_history=MAX_HISTORY)
    eval_index, _ = build_eval_index(data.sid_codes, data.vocab)
    device_index = eval_index.to_device()
    print(f"jax {jax.__version__} {jax.devices()}; {model_config.arch} {count_params(model):,} params "
          f"({model_config.dtype}); {device_index.meta.num_items} SIDs; {len(split.train.targets)} training examples",
          flush=True)
    settings = {"device": jax.devices()[0].device_kind, "params": count_params(model), "num_levels": num_levels,
                "history_tokens": history_tokens, "workdir": args.workdir,
                "model": None if args.workdir else args.model, "dtype": str(model_config.dtype),
                "num_rollouts": args.num_rollouts, "budget": args.budget, "repeats": args.repeats}
    rows: list[dict] = []

    def save():
        if args.out:  # after every row, so a run cut by a time limit keeps what it measured
            write_json_atomic(args.out, {**settings, "rows": rows}, indent=1)

    for batch_size in batch_sizes:
        # The same requests for every arm and both parts: the first batch of the training split.
        host_batch = next(BatchIterator.from_split(split.train, data.sid_codes, data.vocab, batch_size, seed=0))
        rl = RLConfig(num_rollouts=args.num_rollouts, budget=args.budget, batch_size=batch_size)
        rows += rollout_rows(model, model_config, rl, device_index, host_batch, args.repeats, history_tokens)
        save()
        for arm in arms:
            arm_rl = dataclasses.replace(RL_ARMS[arm], num_rollouts=args.num_rollouts, budget=args.budget,
                                         batch_size=batch_size)
            rows.append(rl_step_row(arm, arm_rl, model, model_config, eval_index, host_batch, args.repeats,
                                    history_tokens))
            print(rows[-1], flush=True)
            save()
    if args.ce_batch_size:
        rows.append(ce_step_row(model, model_config, data, split, args.ce_batch_size, args.repeats, history_tokens))
        print(rows[-1], flush=True)
        save()
    print_tables(rows)


if __name__ == "__main__":
    main()
