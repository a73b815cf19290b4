"""The small dataset and recommender of the batch-job tests (tests/test_batch_job.py, tests/test_requests_io.py):
one definition, so that both files decode the same shapes and the decode compiles once for both."""

from flax import nnx

from genrec.models import ModelConfig, build_model
from genrec.synthetic import make_synthetic_dataset
from serving.recommender import Recommender

USERS_PER_SHARD = 4  # 18 users: shards of 4, 4, 4, 4, 2


def batch_job_data():
    return make_synthetic_dataset(num_items=50, num_users=18, num_levels=3, codebook_size=4, seed=5)


def tiny_model(data):
    """An untrained one-layer encoder-decoder over ``data``'s vocabulary (seed 0)."""
    config = ModelConfig.tiny(data.vocab.vocab_size, data.num_levels, num_encoder_layers=1, num_decoder_layers=1)
    return build_model(config, rngs=nnx.Rngs(0))


def batch_job_recommender(data) -> Recommender:
    return Recommender(tiny_model(data), data.vocab, data.sid_codes, data.item_ids,
                       num_beams=6, batch_size=USERS_PER_SHARD, max_history=5)


def write_model_workdir(model, data, workdir, max_history: int = 5) -> None:
    """``workdir`` as ``genrec train`` leaves it for serving: the run files of ``data``'s catalogue and ``model``
    checkpointed as 'best' (untrained weights serve as well as trained ones for the serving paths' tests)."""
    from training.checkpoint import Checkpointer, TrainingProgress, write_run_files
    from training.config import CheckpointConfig, DataConfig, TrainConfig

    write_run_files(workdir, TrainConfig(data=DataConfig(max_history=max_history)), model.config, data.vocab,
                    data.sid_codes, data.item_ids)
    checkpointer = Checkpointer(workdir, CheckpointConfig(async_save=False))
    checkpointer.save_best(nnx.state(model, nnx.Param), TrainingProgress(step=1, data_step=1, rng_key=(0, 0)),
                           {"ndcg@10": 0.0})
    checkpointer.close()


def write_served_run(data, root) -> tuple:
    """``(root/run, root/data)``: a workdir of :func:`tiny_model` over ``data`` (:func:`write_model_workdir`) and
    ``data`` written as the dataset ``toy``, what ``genrec recommend --workdir/--data`` reads."""
    from genrec.datasets import write_sid_dataset

    workdir, data_dir = root / "run", root / "data"
    write_model_workdir(tiny_model(data), data, workdir)
    write_sid_dataset(data, data_dir, "toy")
    return workdir, data_dir
