"""Shared pieces of the tpu_configs/ bases: the APAO paper's training recipe, its
loss variants, the platforms (every GPU/TPU difference) and the parser of a
base's argument.

A base is one dataset and architecture (``office_t5.py``, ``beauty_t5.py``,
``office_llama.py``); a variant is chosen by the argument after the file name,
comma-separated ``key=value`` pairs, e.g.
``genrec train --config tpu_configs/office_t5.py:loss=apao,dtype=bfloat16``.
Every key has a default (its first choice), so ``tpu_configs/office_t5.py``
alone is the CE run. Each base's docstring lists its measured variants.
"""

from __future__ import annotations

from typing import NamedTuple

from training.config import DataConfig, EvalConfig, ModelSpec, OptimizerConfig, RLConfig, TrainConfig
from training.losses import LossConfig


class Platform(NamedTuple):
    """Where a run trains: the devices its batch is split over (None: every visible
    one; a GPU run sees one) and its default compute dtype (parameters and
    optimizer state stay float32)."""

    num_devices: int | None
    dtype: str


# Every GPU/TPU difference of the configs. The TPU layouts are untested on a TPU:
# tests/test_tpu_configs.py runs them on fake CPU devices (docs/training.md).
PLATFORMS = {
    "gpu": Platform(num_devices=None, dtype="float32"),
    # 1-D mesh ("data",) over the 4 JAX devices (megacore chips) of a v4-8: 256 examples a chip.
    "tpu_v4_8": Platform(num_devices=4, dtype="bfloat16"),
    # 1-D mesh over the 8 v5e chips (16 GB HBM each): 128 examples a chip; 4.6M parameters stay replicated.
    "tpu_v5e_8": Platform(num_devices=8, dtype="bfloat16"),
}
DTYPES = ("auto", "float32", "bfloat16")  # auto: the platform's


def parse_arg(arg: str, choices: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """A config argument ``"key=value,key=value"`` -> a value for every key of
    ``choices``: the argument's, else the key's first choice (its default).

    Raises:
      ValueError: (one line) a piece is not ``key=value``, a key is not one of
        ``choices`` (the message lists the valid keys) or is given twice, or a
        value is not one of the key's choices (the message lists them).
    """
    values = {key: options[0] for key, options in choices.items()}
    given: set[str] = set()
    for piece in (piece.strip() for piece in arg.split(",")):
        if not piece:
            continue
        key, sep, value = (part.strip() for part in piece.partition("="))
        if not sep:
            raise ValueError(f"config argument {piece!r} is not key=value (e.g. loss=apao,dtype=bfloat16)")
        if key not in choices:
            raise ValueError(f"unknown config argument key {key!r}; valid keys: {', '.join(choices)}")
        if value not in choices[key]:
            raise ValueError(f"config argument {key}={value!r} is not one of: {', '.join(choices[key])}")
        if key in given:  # loss=ce,loss=apao: which one was meant?
            raise ValueError(f"config argument key {key!r} is given twice in {arg!r}")
        given.add(key)
        values[key] = value
    return values


def paper_losses(*, beta: float, eta: float, msl_tau: float | None = None,
                 pairwise_beta: float | None = None) -> dict[str, LossConfig]:
    """The loss variants of one dataset and architecture by name (the methods of
    docs/results.md), CE first (the default):

    - ``ce``: token cross-entropy;
    - ``apao``: APAO pointwise, CE + beta * sum_m w_m L_m over the SID prefixes
      with adaptive worst-prefix weights (docs/losses.md), at ``beta``, ``eta``;
    - ``apao_running``: ``apao`` with the weights carried from step to step;
    - ``msl`` (given ``msl_tau``): softmax over the target prefix's valid trie children;
    - ``apao_pairwise`` (given ``pairwise_beta``): the pairwise prefix loss over 100
      uniform negatives per example, each candidate decoded in full, at ``eta``.
    """
    losses = {
        "ce": LossConfig(kind="ce"),
        "apao": LossConfig(kind="apao_pointwise", beta=beta, eta=eta),
        "apao_running": LossConfig(kind="apao_pointwise", beta=beta, eta=eta, running_weights=True),
    }
    if msl_tau is not None:
        losses["msl"] = LossConfig(kind="msl", msl_tau=msl_tau)
    if pairwise_beta is not None:
        losses["apao_pairwise"] = LossConfig(kind="apao_pairwise", beta=pairwise_beta, eta=eta, neg_k=100)
    return losses


# Model variants of the T5 bases (``model=``); a base names its default (``paper_config``'s
# ``default_model``). ``default``: our first T5 (the name predates ``hf`` becoming Office's and
# Beauty's default). ``hf``: Hugging Face T5's numerics,
# which the published T5 figures come from (docs/models.md, "Hugging Face T5 options"): dropout at the
# preset's 0.1 also on the attention probabilities and the FFN hidden layer, unscaled attention logits,
# and HF's init (q std (d_model * head_dim) ** -0.5 carries the scale). The Llama base has only ``default``.
T5_MODEL_VARIANTS: dict[str, dict[str, float | str]] = {
    "default": {},
    "hf": {"attention_dropout": 0.1, "ffn_dropout": 0.1, "attention_logit_scale": "unscaled", "init": "hf_t5"},
}


# The arms of the RL comparison (docs/rl.md), V-STAR first (the default of ``genrec rl``).
# Every arm has the same rollout budget: one constrained beam search of width num_rollouts.
RL_ARMS = {
    "vstar": RLConfig(rollouts="ved", sibling_weight=1.0, value_weight=1.0),
    "grpo_beam": RLConfig(rollouts="beam", sibling_weight=0.0, value_weight=0.0),
    "grpo_sample": RLConfig(rollouts="sample", sibling_weight=0.0, value_weight=0.0),
    "sibling": RLConfig(rollouts="sample", sibling_weight=1.0, value_weight=0.0),
}


def paper_config(arg: str, *, dataset: str, preset: str, losses: dict[str, LossConfig],
                 log_every: int, default_model: str = "default") -> TrainConfig:
    """The APAO paper's recipe (arXiv 2603.02730) on ``data/<dataset>`` with model
    ``preset``, the variant of ``arg`` (keys ``loss``: one of ``losses``, ``dtype``,
    ``platform``, ``rl``: the arm ``genrec rl`` runs, one of :data:`RL_ARMS`; ``model``: one of
    :data:`T5_MODEL_VARIANTS` for the T5 preset, ``default_model`` when unnamed, ``default`` only for
    other presets; :func:`parse_arg`).

    The recipe: history of the last 20 items; AdamW lr 5e-4, weight decay 0.01,
    1% warmup, cosine decay; batch 1024; up to 200 epochs, early stopping after
    20 epochs without a better validation NDCG@10 (the reference code stops on
    validation loss); constrained beam search with 20 beams; checkpoint
    selection on every validation user, as the reference code
    (``--eval_sample_num -1``): on Beauty the first 5,000 are not typical
    (docs/results.md).
    """
    models = tuple(T5_MODEL_VARIANTS) if preset == "t5_small_rec" else ("default",)
    if default_model not in models:
        raise ValueError(f"default_model {default_model!r} is not one of: {', '.join(models)}")
    models = (default_model, *(model for model in models if model != default_model))
    args = parse_arg(arg, {"loss": tuple(losses), "dtype": DTYPES, "platform": tuple(PLATFORMS),
                           "rl": tuple(RL_ARMS), "model": models})
    platform = PLATFORMS[args["platform"]]
    return TrainConfig(
        data=DataConfig(data_dir=f"data/{dataset}", max_history=20),
        model=ModelSpec(preset=preset, dtype=platform.dtype if args["dtype"] == "auto" else args["dtype"],
                        **T5_MODEL_VARIANTS[args["model"]]),
        loss=losses[args["loss"]],
        optimizer=OptimizerConfig(learning_rate=5e-4, weight_decay=0.01, warmup_fraction=0.01, schedule="cosine"),
        eval=EvalConfig(num_beams=20, batch_size=512, max_examples=None),
        batch_size=1024,
        num_devices=platform.num_devices,
        num_epochs=200,
        early_stopping_patience=20,
        seed=42,
        log_every=log_every,
        rl=RL_ARMS[args["rl"]],
    )
