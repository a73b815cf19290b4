"""V-STAR reinforcement learning on top of a trained run: ``genrec rl``.

    genrec rl --config tpu_configs/office_t5.py:rl=vstar --init-from runs/office_ce \\
        --workdir runs/office_vstar [--set rl.num_steps=2000 ...] [--no-resume]

Reads top to bottom: config -> the start (data, model, weights) ->
value head -> optimizer -> loop -> evaluation -> checkpoints. Each step draws
``rl.num_rollouts`` rollouts per training request (beam, sampled or VED,
``rl.rollouts``), scores them against the request's target and updates the
policy and the value head with GRPO + Sibling-GRPO + value + KL losses, all
in one jitted program (training/rl_step.py). docs/rl.md describes the method
and the contracts of its parts.

The workdir has the layout of a supervised one (``config.json``,
``vocab.json``, ``catalogue.npz``, ``checkpoints/``, ``best/``,
``metrics.jsonl``, ``results.json``): ``genrec eval``, ``genrec recommend``
and the ``Recommender`` read it unchanged. The value head is saved with the
optimizer state of the periodic checkpoints (it is for training only).
``rl_init.json`` records the checkpoint the run started from: its start, a ``genrec train`` workdir
(``--init-from``), or another ``genrec rl`` workdir to go on from its checkpoint.

Selection: validation ``eval.selection_metric`` with the usual constrained
beam search, with the start's beam-score normalisation (``with_start_normalization``; config.json records
it), measured first at step 0 (the start), so the best
checkpoint is never worse on validation than the model the run started from.
Resume is exact (rollout and dropout randomness are pure functions of
``(seed, step)``); SIGTERM checkpoints the current step and exits 143. After the last checkpoint (the final
test evaluation) a SIGTERM stops at once, exit 143, and rerunning the command only evaluates (as genrec train).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from constrained.decode import build_eval_index
from constrained.ved import beam_search_budget
from genrec.atomic_files import atomic_open, write_json_atomic
from genrec.batching import BatchIterator
from genrec.checkpoint_checksums import CheckpointDamaged
from genrec.console import Diverged, UserError, add_verbose_flag, run_command, setup_logging
from genrec.locks import DirectoryLock
from genrec.models import build_model, count_params
from genrec.progress import progress_bar
from genrec.run_files import CONFIG_FILE, all_finite, checkpoint_dir, has_checkpoint
from genrec.split import leave_one_out_split, subset_examples
from training.checkpoint import (
    Checkpointer,
    TrainingProgress,
    read_run_config,
    write_data_fingerprint,
    write_run_files,
)
from training.config import TrainConfig, load_config_file, override_keys, score_normalization
from training.evaluate import evaluate_split
from training.optim import make_optimizer
from training.preemption import StopOnSignal
from training.prefix_counts import count_distinct_prefixes
from training.rl_step import init_value_head, make_rl_step, uses_value_head
from training.train import (
    METRICS_FILE,
    RESULTS_FILE,
    RL_INIT_FILE,
    TENSORBOARD_DIR,
    TEST_RANKS_FILE,
    MetricsLog,
    absolute_data_dir,
    check_resumed_data,
    check_same_start,
    damaged_best_error,
    describe_changes,
    end_step,
    holds_checkpoint,
    load_data,
    load_start,
    model_or_data_changes,
    read_metrics_records,
    read_start_record,
    remove_run_outputs,
    report_run,
    resume_changes,
    use_its_config,
    window_from_json,
    window_to_json,
)
from training.train_step import make_data_mesh, replicate, shard_batch

__all__ = ["RLResult", "check_settings", "main", "rl_train", "trie_prefixes", "with_start_normalization"]

logger = logging.getLogger("genrec.rl")

# What --no-resume removes from a workdir (only files this module writes).
_RUN_OUTPUTS = ("checkpoints", "best", METRICS_FILE, RESULTS_FILE, TENSORBOARD_DIR, TEST_RANKS_FILE, RL_INIT_FILE)
# Settings a resumed RL run may change (they cannot change what it computes); a longer run is allowed too.
_RESUMABLE = ("log_every", "checkpoint.async_save", "checkpoint.keep", "checkpoint.every_steps", "rl.num_steps",
              "early_stopping_patience", "eval.batch_size")


@dataclasses.dataclass(frozen=True)
class RLResult:
    """What a finished RL run reports (also in ``workdir/results.json``).

    Attributes:
      workdir: the run's directory.
      init_from: the workdir and checkpoint it started from (``rl_init.json``).
      final_step: RL steps done.
      best_step: step of the best validation ``eval.selection_metric`` (0 = the start); None without
        validation (``rl.eval_every=0``: no best checkpoint, as in ``genrec train``).
      start_valid_metrics: validation metrics of the start (step 0); None without validation.
      best_valid_metrics: validation metrics at ``best_step``; None without validation.
      test_metrics: test-split metrics of the best checkpoint (of the final weights, the latest
        checkpoint, without validation).
    """

    workdir: Path
    init_from: dict[str, Any]
    final_step: int
    best_step: int | None
    start_valid_metrics: dict[str, float] | None
    best_valid_metrics: dict[str, float] | None
    test_metrics: dict[str, float]


def _check_same_run(config: TrainConfig, init_from: Path) -> None:
    """Refuses an RL config whose data or model differ from the start's."""
    changes = model_or_data_changes(init_from, config)
    if changes:
        raise UserError(f"{init_from / CONFIG_FILE}: the RL config changes its start's "
                        f"{describe_changes(changes)}; RL continues that run's model on its data: "
                        f"{use_its_config(changes)}")


def with_start_normalization(config: TrainConfig, init_from: Path) -> TrainConfig:
    """``config`` with ``eval.score_normalization`` set to the normalisation its start resolves to (``"trie"``
    after ``msl`` training, else ``"vocab"``, or what the start set), not ``"auto"``: ``"auto"`` would resolve
    by the RL config's ``loss.kind``, which need not be the start's, so step 0 (the start's own weights) would
    score other figures than the start did. Written explicitly into the RL run's config.json, so ``genrec
    eval``, ``genrec recommend`` and the ``Recommender`` read the RL workdir with it too.

    Raises:
      UserError: ``config`` sets another normalisation than the start's (one line): the best checkpoint is
        chosen against the start's step-0 validation, so both must be measured on one scale.
    """
    start_config, _ = read_run_config(init_from)
    start = score_normalization(start_config)
    chosen = config.eval.score_normalization
    if chosen not in ("auto", start):
        how = ("set it" if start_config.eval.score_normalization != "auto"
               else f"auto with its loss.kind={start_config.loss.kind}")
        raise UserError(f"eval.score_normalization={chosen}: the start {init_from} is evaluated and served with "
                        f"{start} ({how}), and an RL run keeps its start's, so that step 0 scores what the start "
                        f"did and every validation is on one scale: leave it out, or set {start}")
    return dataclasses.replace(config, eval=dataclasses.replace(config.eval, score_normalization=start))


def trie_prefixes(sid_codes: np.ndarray) -> int:
    """The prefixes of the catalogue trie shorter than ``L`` codes, the root included: the most forward tokens
    VED can spend on a request (it evaluates each at most once: a node's children are added once each, so
    its tree never holds one prefix twice), hence the largest ``rl.budget`` ``genrec rl`` accepts.

    Args:
      sid_codes: ``int[num_items, L]`` SID codes of the catalogue.
    """
    return 1 + int(count_distinct_prefixes(sid_codes)[:-1].sum())


def check_settings(config: TrainConfig, *, num_levels: int, num_train_examples: int, num_devices: int,
                   num_prefixes: int) -> None:
    """Refuses, in one line naming the setting and what it may be, RL settings that cannot train or would
    fail later (after compiling, or after the step-0 evaluation), or a VED budget no search can spend
    (its node table and iteration count are sized by it: ``rl.budget=100000`` on a 300-item catalogue ran for
    minutes at gigabytes, deaf to Ctrl-C): checked before anything is built or written.

    Args:
      config: the RL run's config (``config.rl`` and the evaluation's selection metric are checked).
      num_levels: ``L``, levels of the catalogue's SIDs.
      num_train_examples: training requests of the split (one per user).
      num_devices: devices the batch is split over.
      num_prefixes: :func:`trie_prefixes` of the catalogue: ``rl.budget`` may be at most this, or the
        default budget (one width-``rl.num_rollouts`` beam search) where that is more.

    Raises:
      UserError: the first refused setting.
    """
    rl = config.rl
    if config.eval.selection_metric == "valid_ce":
        raise UserError("eval.selection_metric=valid_ce does not apply to RL; select by recall@k or ndcg@k")
    if rl.grpo_weight == rl.sibling_weight == rl.value_weight == 0:
        raise UserError("rl.grpo_weight, rl.sibling_weight and rl.value_weight are all 0: nothing would train "
                        "(the KL term alone keeps the policy at its start); set one of them > 0")
    group_terms = [f"rl.{key}={getattr(rl, key)}" for key in ("grpo_weight", "sibling_weight") if getattr(rl, key)]
    if rl.num_rollouts < 2 and group_terms:
        raise UserError(f"rl.num_rollouts={rl.num_rollouts}: GRPO and Sibling-GRPO compare a request's rollouts "
                        f"with each other, so a group of one never has an advantage ({', '.join(group_terms)}); "
                        "use rl.num_rollouts >= 2")
    if rl.level_weights is not None and len(rl.level_weights) != num_levels:
        raise UserError(f"rl.level_weights={','.join(f'{w:g}' for w in rl.level_weights)} has "
                        f"{len(rl.level_weights)} weights but the SIDs have {num_levels} levels; give {num_levels} "
                        "(--set rl.level_weights=w1,...) or none (the defaults)")
    if rl.rollouts != "ved" and rl.budget is not None:  # else silently ignored: beam and sampling spend G
        raise UserError(f"rl.budget={rl.budget} sets VED's search budget only; rl.rollouts={rl.rollouts} spends "
                        f"{beam_search_budget(num_levels, rl.num_rollouts)} forward tokens a request (one "
                        f"width-{rl.num_rollouts} beam search, docs/rl.md \"Budget\"): drop rl.budget, or change "
                        "rl.num_rollouts")
    sampling = [f"rl.{key}={getattr(rl, key)}" for key, default in (("temperature", 1.0), ("top_k", None),
                                                                      ("top_p", None)) if getattr(rl, key) != default]
    if rl.rollouts != "sample" and sampling:  # else silently ignored: neither VED nor beam rollouts read them
        how = ("draws children from the policy itself" if rl.rollouts == "ved" else "takes the beam search's top")
        raise UserError(f"{', '.join(sampling)} shapes sampled rollouts only; rl.rollouts={rl.rollouts} {how}: "
                        "drop it, or use rl.rollouts=sample")
    min_budget = beam_search_budget(num_levels, 1)
    if rl.rollouts == "ved" and rl.budget is not None and rl.budget < min_budget:
        raise UserError(f"rl.budget={rl.budget} is below one width-1 beam search ({min_budget} forward tokens "
                        f"for {num_levels}-level SIDs): VED would reach no complete SID; set rl.budget >= "
                        f"{min_budget}, or none (one width-{rl.num_rollouts} beam search, "
                        f"{beam_search_budget(num_levels, rl.num_rollouts)} tokens)")
    default_budget = beam_search_budget(num_levels, rl.num_rollouts)
    bound = max(num_prefixes, default_budget)
    if rl.rollouts == "ved" and rl.budget is not None and rl.budget > bound:
        raise UserError(f"rl.budget={rl.budget} is more than VED can spend: it evaluates each prefix of the "
                        f"catalogue trie shorter than {num_levels} codes at most once, and there are {num_prefixes} "
                        f"(the root included); set rl.budget <= {bound}, or none (one width-{rl.num_rollouts} beam "
                        f"search, {default_budget} tokens)")
    if rl.batch_size % num_devices:  # make_data_mesh's message would name genrec train's batch_size
        fits = -(-rl.batch_size // num_devices) * num_devices
        raise UserError(f"rl.batch_size={rl.batch_size} does not split evenly over {num_devices} devices; use a "
                        f"multiple of {num_devices} (e.g. --set rl.batch_size={fits}) or set num_devices")
    if rl.batch_size > num_train_examples:  # every step takes a full batch of requests
        fits = num_train_examples // num_devices * num_devices
        raise UserError(f"rl.batch_size={rl.batch_size} is more than the {num_train_examples} training requests; "
                        f"use at most {num_train_examples}" +
                        (f" (e.g. --set rl.batch_size={fits})" if fits else ""))


def _check_start_checkpoint(init_from: Path, which: str) -> None:
    """Refuses a start without the ``rl.init_checkpoint`` to start from, naming the other one if it has it."""
    if has_checkpoint(init_from, which):
        return
    why = "no validation evaluation ran" if which == "best" else "no periodic checkpoint was saved"
    other = "latest" if which == "best" else "best"
    fix = (f"start from its {other} checkpoint (--set rl.init_checkpoint={other}) or from another run"
           if has_checkpoint(init_from, other) else "start from a run that has one")
    raise UserError(f"--init-from {init_from}: no {which} checkpoint in {checkpoint_dir(init_from, which)} ({why}); "
                    f"{fix}")


def _damaged_start_fix(init_from: Path, which: str) -> str:
    """What to do about a damaged ``rl.init_checkpoint`` of the start, in genrec rl's options."""
    other = "latest" if which == "best" else "best"
    if not has_checkpoint(init_from, other):
        return "train the start again"
    return f"start from its {other} checkpoint (--set rl.init_checkpoint={other}) or train the start again"


def _check_resume(saved: TrainConfig, current: TrainConfig, source: Path,
                  init_from: Path) -> dict[str, tuple[Any, Any]]:
    """``{key: (old, new)}`` of accepted changes; refuses changes that alter the run, or a shorter run.

    ``current`` holds the start's normalisation (:func:`with_start_normalization`). A run whose config.json says
    ``eval.score_normalization="auto"`` (written before RL runs recorded their start's) was evaluated with what
    ``auto`` gave for its own ``loss.kind``: every genrec rl evaluated with ``score_normalization`` of the RL
    config (the field and its rule came before the RL stage and never changed), so that is known from config.json
    alone. Where it is the start's, the run resumes; where it is not, the run's validations so far (its start's at
    step 0, its best checkpoint's) are on another scale than those it would go on with, and no setting of genrec
    rl can resume it (another normalisation than the start's is refused): one line saying what to do instead.

    Raises:
      UserError: an older run validated with another normalisation than its start's.
      ValueError: a refused change of settings, or a shorter run (``training.train.resume_changes``).
    """
    if saved.eval.score_normalization == "auto":
        then, now = score_normalization(saved), current.eval.score_normalization
        if then != now:
            raise UserError(f"{source}: this run validated and chose its best checkpoint with {then} "
                            f"(eval.score_normalization=auto with its loss.kind={saved.loss.kind}, before genrec rl "
                            f"kept its start's), but its start {init_from} is evaluated with {now}, which a resumed "
                            "run goes on with, and scores on the two cannot be compared, so it cannot resume: rerun "
                            f"this command with --no-resume to start it over (with {now}), or use another --workdir "
                            f"to keep this run as it is (genrec eval reads it with {then}, as before)")
        saved = dataclasses.replace(saved, eval=dataclasses.replace(saved.eval, score_normalization=then))
    return resume_changes(saved, current, lambda key: key in _RESUMABLE, saved.rl.num_steps,
                          current.rl.num_steps, source)


def rl_train(
    config: TrainConfig,
    init_from: str | Path,
    workdir: str | Path,
    *,
    resume: bool = True,
    on_step_end: Callable[[int], None] | None = None,
) -> RLResult:
    """Fine-tunes the run in ``init_from`` with RL (``config.rl``) into ``workdir``.

    Args:
      config: the run: ``data`` and ``model`` must be the start's;
        ``rl`` holds the RL settings; ``eval`` / ``checkpoint`` / ``seed`` /
        ``log_every`` / ``num_devices`` / ``early_stopping_patience`` apply as in ``genrec train``.
      init_from: the start: a ``genrec train`` workdir, or a ``genrec rl`` one to go on from; read only.
      workdir: output directory (created).
      resume: continue from the newest checkpoint in ``workdir``; False starts over.
      on_step_end: called with the step number after every step (and its checkpoint, if due).

    Raises:
      UserError: the config does not match the start, or its checkpoint is missing or
        non-finite (``training.train.load_start``).
      ValueError: a resume would change the run's settings or shorten it (``training.train.resume_changes``).
      genrec.locks.DirectoryInUseError: another process uses ``workdir``.
      TrainingInterrupted: SIGTERM; the step is checkpointed, call again to resume (in the final test
        evaluation: it stopped at once, and calling again runs only that evaluation).
      Diverged (a FloatingPointError): the policy's weights or loss became non-finite.
    """
    init_from, workdir = Path(init_from), Path(workdir)
    config = absolute_data_dir(config)  # config.json records where the data is, whatever the current directory
    if init_from.resolve() == workdir.resolve():
        raise UserError(f"--workdir {workdir} is --init-from itself; RL writes a new workdir")
    lock = DirectoryLock(workdir, "genrec rl").acquire() if jax.process_index() == 0 else None
    try:
        return _rl_train_locked(config, init_from, workdir, resume=resume, on_step_end=on_step_end)
    finally:
        if lock is not None:
            lock.release()


def _rl_train_locked(config: TrainConfig, init_from: Path, workdir: Path, *, resume: bool,
                     on_step_end: Callable[[int], None] | None) -> RLResult:
    rl = config.rl
    workdir.mkdir(parents=True, exist_ok=True)
    if (workdir / CONFIG_FILE).exists() and not (workdir / RL_INIT_FILE).exists():  # never resume or wipe it
        raise UserError(f"--workdir {workdir} holds a genrec train run (no {RL_INIT_FILE}); RL writes a workdir "
                        "of its own: use another --workdir")

    # --- The start: data, model, weights ---------------------------------------
    # Every check that can refuse the run comes before --no-resume clears the workdir's previous run.
    _check_same_run(config, init_from)
    config = with_start_normalization(config, init_from)  # before config.json is written, and every evaluation
    data = load_data(config.data)
    vocab = data.vocab
    split = leave_one_out_split(data.sequences, config.data.max_history)
    check_settings(config, num_levels=vocab.num_levels, num_train_examples=split.train.num_examples,
                   num_devices=config.num_devices or jax.device_count(), num_prefixes=trie_prefixes(data.sid_codes))
    _check_start_checkpoint(init_from, rl.init_checkpoint)
    model_config = config.model.build(vocab.vocab_size, vocab.num_levels, config.data.max_history)
    model = build_model(model_config, rngs=nnx.Rngs(params=config.seed, dropout=config.seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    del model
    params, init_record = load_start(init_from, params, data, rl.init_checkpoint,
                                     damaged_fix=_damaged_start_fix(init_from, rl.init_checkpoint))
    logger.info("RL from %s (%s checkpoint, step %d): %s, %d parameters", init_from, rl.init_checkpoint,
                init_record["step"], model_config.arch, count_params(nnx.merge(graphdef, params, rest)))
    # The frozen KL anchor, in buffers of its own (the step donates the policy's).
    reference_params = jax.tree.map(lambda x: x.copy(), params)
    value_graphdef, value_params = init_value_head(model_config, rl, seed=config.seed)

    # --- Optimizer, devices --------------------------------------------------
    optimizer, schedule = make_optimizer(rl.optimizer, rl.num_steps)
    trainable = {"policy": params, "value": value_params}
    opt_state = optimizer.init(trainable)
    mesh = make_data_mesh(rl.batch_size, config.num_devices)
    eval_index, _ = build_eval_index(data.sid_codes, vocab)
    device_index = replicate(eval_index.to_device(), mesh)
    trainable, opt_state, reference_params, rest = replicate((trainable, opt_state, reference_params, rest), mesh)
    rl_step = make_rl_step(rl, optimizer, mesh)
    if not resume:
        remove_run_outputs(workdir, _RUN_OUTPUTS)

    # --- Run files, resume ----------------------------------------------------
    changes: dict[str, tuple[Any, Any]] = {}
    resuming = resume and (workdir / CONFIG_FILE).exists()
    if resuming:
        saved_config, _ = read_run_config(workdir)
        changes = _check_resume(saved_config, config, workdir / CONFIG_FILE, init_from)
        check_resumed_data(workdir, data)
        # A moved start with the same weights is accepted; rl_init.json then names its new place (below).
        check_same_start(read_start_record(workdir / RL_INIT_FILE, "the start of an RL run"), init_record,
                         where=workdir / RL_INIT_FILE, fix="use another --workdir", log=logger)
    # rl_init.json first: a workdir with config.json but no rl_init.json reads as a genrec train run and is refused.
    write_json_atomic(workdir / RL_INIT_FILE, init_record, indent=1)
    if not resuming:  # the data the run starts on; a resume keeps the record of the run's start
        write_data_fingerprint(workdir, data)
    write_run_files(workdir, config, model_config, vocab, data.sid_codes, data.item_ids)
    checkpointer = Checkpointer(workdir, config.checkpoint)
    base_key = jax.random.key(config.seed)
    progress = TrainingProgress(step=0, data_step=0, rng_key=tuple(int(w) for w in jax.random.key_data(base_key)))
    if resume and checkpointer.latest_step() is not None:
        try:
            restored_params, extra, progress = checkpointer.restore_newest_intact(
                trainable["policy"], {"optimizer": opt_state, "value": trainable["value"]})
            if progress.start_valid_metrics is None and progress.best_metric is not None:  # an older checkpoint
                progress = dataclasses.replace(progress,
                                               start_valid_metrics=_logged_start_metrics(workdir, progress.step))
        except UserError:
            checkpointer.close()
            raise
        trainable = {"policy": restored_params, "value": extra["value"]}
        opt_state = extra["optimizer"]
        base_key = jax.random.wrap_key_data(np.asarray(progress.rng_key, np.uint32))
        logger.info("resumed from step %d in %s", progress.step, workdir)
        if progress.finished and progress.step < rl.num_steps and not progress.early_stopped:
            progress = dataclasses.replace(progress, finished=False)
    # A run that never checkpointed starts its log afresh (its step-0 evaluation is redone).
    metrics_log = MetricsLog(workdir / METRICS_FILE, keep_up_to_step=progress.step if progress.step else None,
                             tensorboard_dir=workdir / TENSORBOARD_DIR)
    if changes:
        metrics_log.write({"step": progress.step, "kind": "resume_changes",
                           "changes": {key: [old, new] for key, (old, new) in changes.items()}})

    # --- Evaluation: the supervised protocol ----------------------------------
    valid_examples = subset_examples(split.valid, config.eval.max_examples, config.eval.subset)
    selection_metric = config.eval.selection_metric

    def evaluate(policy: nnx.State, split_arrays) -> Any:
        result = evaluate_split(nnx.merge(graphdef, policy, rest), eval_index, data, split_arrays,
                                num_beams=config.eval.num_beams, batch_size=config.eval.batch_size,
                                ks=tuple(config.eval.ks), normalization=score_normalization(config))
        return dataclasses.replace(result, metrics={key: float(value) for key, value in result.metrics.items()})

    def consider(step: int, valid_metrics: dict[str, float]) -> bool:
        nonlocal progress
        score = valid_metrics[selection_metric]
        progress, improved = progress.after_validation(step, score)
        if improved:
            checkpointer.save_best(trainable["policy"], dataclasses.replace(progress, step=step), valid_metrics)
        logger.info("step %d valid %s=%.4f %s", step, selection_metric, score,
                    "(new best)" if improved else f"(best {progress.best_metric:.4f} at step {progress.best_step})")
        return improved

    # rl.eval_every=0 validates nothing, the start neither: no checkpoint is selected, and the run reports and
    # serves its final weights (the latest checkpoint), as genrec train with eval_every=0 does.
    if rl.eval_every and progress.step == 0 and progress.best_metric is None:
        start_metrics = evaluate(trainable["policy"], valid_examples).metrics
        metrics_log.write({"step": 0, "kind": "valid", **start_metrics})
        # In every checkpoint from here on, so the result reports them whatever becomes of metrics.jsonl.
        progress = dataclasses.replace(progress, start_valid_metrics=start_metrics)
        consider(0, start_metrics)

    # --- Loop -------------------------------------------------------------------
    batches = BatchIterator.from_split(split.train, data.sid_codes, vocab, rl.batch_size, shuffle=True,
                                       seed=config.seed, drop_remainder=True, start_step=progress.data_step)
    checkpoint_every = config.checkpoint.every_steps or rl.eval_every or rl.num_steps
    # The step metrics since the last log, those before a resume included (the checkpoint holds them, as
    # genrec train's does), so the first log after a resume averages the steps an uninterrupted run's does;
    # the rate counts only this process's steps.
    window: list[dict[str, Any]] = window_from_json(progress.log_window)
    restored_in_window = len(window)
    progress = dataclasses.replace(progress, log_window=())
    window_start = time.perf_counter()
    step = progress.step
    # SIGTERM (preemption, timeout, scheduler) stops the loop after a step, with a checkpoint; once the last
    # checkpoint is committed, the final evaluation at once (as genrec train).
    with StopOnSignal() as stop_signal:
        with progress_bar(rl.num_steps, unit="step", initial=step, desc="rl") as bar:
            while not progress.finished and step < rl.num_steps:
                batch = shard_batch(next(batches), mesh)
                trainable, opt_state, step_metrics = rl_step(
                    graphdef, value_graphdef, trainable, opt_state, reference_params, rest, batch,
                    jax.random.fold_in(base_key, step), device_index)
                step += 1
                window.append(step_metrics)
                bar.update(1)
                if step % config.log_every == 0 or step == rl.num_steps:
                    record = _summarize(jax.device_get(window), step, time.perf_counter() - window_start,
                                        float(schedule(step - 1)), timed_steps=len(window) - restored_in_window,
                                        value_head=uses_value_head(rl))
                    metrics_log.write(record)
                    logger.info(_progress_line(record, rl.num_steps, value_loss=rl.value_weight > 0))
                    bar.set_postfix(reward=f"{record['reward_mean']:.3f}", refresh=False)
                    if not np.isfinite(record["loss"]) or not all_finite(trainable["policy"]):
                        checkpointer.close()
                        metrics_log.close()
                        raise Diverged(f"RL diverged by step {step}: non-finite loss or weights; nothing of it was "
                                       "saved. Lower rl.optimizer.learning_rate and rerun with --no-resume or another "
                                       "--workdir (a resume repeats the divergence)")
                    window, window_start, restored_in_window = [], time.perf_counter(), 0
                stop_early = False
                if rl.eval_every and (step % rl.eval_every == 0 or step == rl.num_steps):
                    eval_start = time.perf_counter()
                    valid_metrics = evaluate(trainable["policy"], valid_examples).metrics
                    window_start += time.perf_counter() - eval_start
                    metrics_log.write({"step": step, "kind": "valid", **valid_metrics})
                    consider(step, valid_metrics)
                    patience = config.early_stopping_patience
                    stop_early = patience is not None and progress.evals_without_improvement >= patience
                finished = stop_early or step == rl.num_steps
                interrupted = not finished and stop_signal.requested(step)
                progress = dataclasses.replace(progress, step=step, data_step=batches.step, finished=finished,
                                               early_stopped=stop_early)
                if finished or interrupted or step % checkpoint_every == 0:
                    checkpointer.save(trainable["policy"], {"optimizer": opt_state, "value": trainable["value"]},
                                      dataclasses.replace(progress, log_window=window_to_json(jax.device_get(window))))
                end_step(step, checkpointer, metrics_log, on_step_end, stop_signal.signum if interrupted else None,
                         log=logger)
        checkpointer.wait()

        # --- Final evaluation: test split, best checkpoint (without validation: the final weights) ----
        # Training is finished and its last checkpoint committed: a signal from here on stops at once (exit 143)
        # and rerunning the command runs only this final evaluation, as in genrec train.
        try:
            stop_signal.stop_at_once(progress.step)
            policy, best_step = trainable["policy"], None
            try:  # never a test evaluation of damaged weights
                best_meta = checkpointer.best_metadata()
                if best_meta is not None:
                    policy, best_step = checkpointer.restore_params(trainable["policy"], "best")
            except CheckpointDamaged as damaged:  # its message is genrec eval's (which='latest')
                raise damaged_best_error(workdir, damaged, run="the RL run's",
                                         rerun="run genrec rl again") from damaged
            test_result = evaluate(policy, split.test)
            with atomic_open(workdir / TEST_RANKS_FILE, "wb") as f:
                np.save(f, test_result.ranks)
            metrics_log.write({"step": progress.step, "kind": "test", **test_result.metrics})
        except BaseException:  # the stop, a damaged best checkpoint: what the run opened is closed
            checkpointer.close()
            metrics_log.close()
            raise
    checkpointer.close()
    metrics_log.close()
    result = RLResult(
        workdir=workdir, init_from=init_record, final_step=progress.step,
        best_step=None if best_step is None else int(best_step), start_valid_metrics=progress.start_valid_metrics,
        best_valid_metrics=None if best_meta is None else best_meta["valid_metrics"], test_metrics=test_result.metrics,
    )
    payload = dataclasses.asdict(result)
    payload["workdir"] = str(workdir)
    write_json_atomic(workdir / RESULTS_FILE, payload, indent=1)
    return result


def _logged_start_metrics(workdir: Path, step: int) -> dict[str, float]:
    """The start's validation (step 0) as metrics.jsonl logged it, for a checkpoint written before the
    checkpoints kept it (``TrainingProgress.start_valid_metrics``).

    Raises:
      UserError: metrics.jsonl does not hold it (one line; before anything of the resumed run is done).
    """
    path = workdir / METRICS_FILE
    for _, record in read_metrics_records(path):
        if record.get("kind") == "valid" and record.get("step") == 0:
            return {key: value for key, value in record.items() if key not in ("step", "kind")}
    raise UserError(f"{workdir}: the validation of its start (step 0), which the run reports, is in neither its "
                    f"checkpoint (step {step}, written by an older genrec) nor {path.name} "
                    f"({'no such record' if path.is_file() else 'deleted'}); restore {path.name}, or start over "
                    "with --no-resume")


# Step metrics of the value head's values: figures of all-zero stand-ins in an arm without a value head.
_VALUE_METRICS = ("value_loss", "explained_variance", "value_mean")


def _summarize(host: list[dict[str, Any]], step: int, seconds: float, learning_rate: float, *,
               timed_steps: int, value_head: bool = True) -> dict[str, Any]:
    """One metrics.jsonl record: the window's mean of every step metric (lists by element), and the rate
    (``timed_steps`` of the window's steps, those this process ran, took ``seconds``). Without a value head
    (``training.rl_step.uses_value_head``) the value figures are None (null)."""
    record: dict[str, Any] = {"step": step, "kind": "train"}
    for key in host[-1]:
        if not value_head and key in _VALUE_METRICS:
            record[key] = None
            continue
        values = np.stack([np.asarray(m[key], np.float64) for m in host])
        mean = np.nanmean(values, axis=0) if np.isfinite(values).any() else values.mean(axis=0)
        record[key] = mean.tolist()
    record["learning_rate"] = learning_rate
    record["steps_per_s"] = timed_steps / max(seconds, 1e-9)
    return record


def _progress_line(record: dict[str, Any], total_steps: int, *, value_loss: bool) -> str:
    """The log line of a metrics.jsonl record; the value loss only where it is trained (``rl.value_weight > 0``)."""
    value = f"| value_loss {record['value_loss']:.4f} " if value_loss and record["value_loss"] is not None else ""
    return (f"step {record['step']}/{total_steps} | loss {record['loss']:.4f} | reward {record['reward_mean']:.4f} "
            f"| kl {record['kl']:.2e} {value}"
            f"| unique/group {record['unique_items_per_group']:.1f} | {record['steps_per_s']:.2f} steps/s")


def _result_line(result: RLResult) -> str:
    keys = [key for key in ("recall@10", "ndcg@10") if key in result.test_metrics] or \
        [key for key in result.test_metrics if "@" in key]
    metrics = " ".join(f"{key} {result.test_metrics[key]:.4f}" for key in keys)
    if result.best_step is None or result.start_valid_metrics is None or result.best_valid_metrics is None:
        return (f"test {metrics} (final weights, RL step {result.final_step}: no validation, rl.eval_every=0; "
                f"genrec eval --which latest reads them); all metrics in {result.workdir / RESULTS_FILE}")
    start = " ".join(f"{key} {result.start_valid_metrics[key]:.4f}" for key in keys)
    best = " ".join(f"{key} {result.best_valid_metrics[key]:.4f}" for key in keys)
    return (f"test {metrics} (best checkpoint, RL step {result.best_step}); valid {best} against its start's "
            f"{start}; all metrics in {result.workdir / RESULTS_FILE}")


def main(argv: Sequence[str] | None = None, *, prog: str = "genrec rl",
         on_step_end: Callable[[int], None] | None = None) -> int:
    """``genrec rl``: parse arguments, then :func:`rl_train`. Exit status 0 done, 1 diverged, 2 a user's
    mistake, 143 SIGTERM."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Fine-tune a trained genrec run with V-STAR reinforcement learning (docs/rl.md).",
        epilog="Settable keys: " + ", ".join(key for key in override_keys() if key.startswith("rl.")) +
        " (and every key of genrec train). rl.budget (VED only) is at most the catalogue trie's prefixes shorter "
        "than L codes, the root included (VED evaluates each at most once), or the default budget where that is "
        "more.",
    )
    parser.add_argument("--config", required=True, metavar="FILE[:ARG]",
                        help="the start's config file with an RL arm, e.g. tpu_configs/office_t5.py:rl=vstar")
    parser.add_argument("--init-from", required=True, metavar="WORKDIR",
                        help="the start: the workdir of a genrec train run, or of a genrec rl run to go on from "
                             "its checkpoint (read only)")
    parser.add_argument("--workdir", required=True, help="output directory of the RL run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set rl.num_rollouts=8 (repeatable)")
    parser.add_argument("--no-resume", action="store_true", help="start over, deleting the workdir's previous RL run")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def run() -> int:
        if not (Path(args.init_from) / CONFIG_FILE).is_file():
            raise UserError(f"--init-from {args.init_from}: not a genrec workdir (no {CONFIG_FILE}); "
                            "give the workdir of a genrec train (or genrec rl) run")
        config = load_config_file(args.config, args.overrides)
        return report_run(lambda: rl_train(config, args.init_from, args.workdir, resume=not args.no_resume,
                                           on_step_end=on_step_end), _result_line)

    return run_command(parser.prog, run, outputs=[args.workdir], verbose=args.verbose,
                       keep_outputs=lambda: holds_checkpoint(args.workdir))


if __name__ == "__main__":
    raise SystemExit(main())
