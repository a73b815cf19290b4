"""A workdir of a randomly initialised model over the synthetic dataset, for the serving benchmarks.

Speed and agreement of decoding do not depend on trained weights; this builds
one without training (``beam_vs_local.py``, ``decode_determinism.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flax import nnx

from genrec.datasets import write_sid_dataset
from genrec.models import ModelConfig, build_model
from genrec.synthetic import make_synthetic_dataset


def random_workdir(root: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """``(workdir, data_dir)``: a random ``args.preset`` model over the synthetic dataset, checkpointed as 'best'.

    Reads ``args.num_items``, ``num_users``, ``codebook_size``, ``preset`` and ``max_history``.
    """
    from training.checkpoint import Checkpointer, TrainingProgress, write_run_files
    from training.config import CheckpointConfig, DataConfig, TrainConfig

    data = make_synthetic_dataset(num_items=args.num_items, num_users=args.num_users, num_levels=3,
                                  codebook_size=args.codebook_size, seed=0)
    preset = getattr(ModelConfig, args.preset)
    config = preset(data.vocab.vocab_size, data.num_levels, **({} if args.preset != "tiny" else
                                                                {"num_encoder_layers": 1, "num_decoder_layers": 1}))
    model = build_model(config, rngs=nnx.Rngs(0))
    workdir, data_dir = root / "run", root / "data"
    write_run_files(workdir, TrainConfig(data=DataConfig(max_history=args.max_history)), config, data.vocab,
                    data.sid_codes, data.item_ids)
    checkpointer = Checkpointer(workdir, CheckpointConfig(async_save=False))
    checkpointer.save_best(nnx.state(model, nnx.Param), TrainingProgress(step=1, data_step=1, rng_key=(0, 0)),
                           {"ndcg@10": 0.0})
    checkpointer.close()
    write_sid_dataset(data, data_dir, "synthetic")
    return workdir, data_dir
