"""The ``genrec`` command: one entry point for the whole pipeline.

Where it sits: on top of everything. Each subcommand is a thin front for a
module that owns the work, so the same job runs from Python without the CLI:

    genrec demo         synthetic (or --data) dataset -> train (tpu_configs/cpu_smoke.py)
                        -> test Recall/NDCG@10 vs popularity -> top-10 for 3 users
    genrec train        training.train.main
    genrec rl           training.rl.main (V-STAR RL on top of a genrec train run)
    genrec eval         training.evaluate.evaluate_workdir
    genrec recommend    serving.batch_job.main (resumable sharded job)
    genrec build-index  constrained.build_index over the distinct SIDs, memory report
    genrec build-sids   genrec.rqkmeans.main
    genrec convert      genrec.convert.main (raw interaction log -> standard dataset)
    genrec synth        genrec.synthetic.main

Heavy imports (JAX, Flax) happen inside the subcommands, so ``genrec --help``
answers at once. Every subcommand prints genrec's own lines only (``--verbose``:
the libraries' INFO logs too) and a user's mistake as one line on stderr, exit
status 2 (genrec/console.py). docs/serving.md describes every command.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from genrec.console import (
    INTERRUPTED_EXIT_CODE,
    Diverged,
    UserError,
    add_verbose_flag,
    command_argv,
    print_interrupted,
    run_command,
    setup_logging,
    user_error_message,
)

if TYPE_CHECKING:  # the CLI imports training lazily, inside the commands that need it
    from training.config import TrainConfig

__all__ = ["main"]

# tpu_configs/ sits next to the packages in the repository (editable install).
_DEMO_CONFIG = Path(__file__).resolve().parents[1] / "tpu_configs" / "cpu_smoke.py"
_DEMO_USERS = 3


# ---------------------------------------------------------------------------
# Delegating subcommands: their own parsers answer --help
# ---------------------------------------------------------------------------


def _train(argv: Sequence[str]) -> int:
    from training.train import main as train_main

    return train_main(list(argv))


def _rl(argv: Sequence[str]) -> int:
    from training.rl import main as rl_main

    return rl_main(list(argv))


def _recommend(argv: Sequence[str]) -> int:
    from serving.batch_job import MANIFEST_FILE
    from serving.batch_job import build_parser as batch_parser
    from serving.batch_job import main as batch_main

    prog = "genrec recommend"
    parser = batch_parser(prog)
    add_verbose_flag(parser)
    args = parser.parse_args(argv)  # --help, usage errors, and --out for the clean-up after a failure
    setup_logging(args.verbose)

    def body() -> int:
        if args.requests is None and args.data is not None:
            _check_one_dataset(args.data, ".inter.json",
                               f"pass --requests {Path(args.data) / 'NAME.inter.json'} to serve the users of one "
                               f"of them, or move each into a directory of its own ({_DATASET_FILES})")
        return batch_main([a for a in argv if a != "--verbose"], prog=prog)

    # SIGTERM (a scheduler stopping the job): one line and exit 143; the local job resumes from its shards.
    return run_command(prog, body, outputs=[args.out], verbose=args.verbose, resumable_markers=(MANIFEST_FILE,),
                       stop_on_sigterm=args.runner == "local")


def _build_sids(argv: Sequence[str]) -> int:
    from genrec.rqkmeans import main as rqkmeans_main

    return rqkmeans_main(list(argv), prog="genrec build-sids")


def _convert(argv: Sequence[str]) -> int:
    from genrec.convert import main as convert_main

    return convert_main(list(argv), prog="genrec convert")


def _synth(argv: Sequence[str]) -> int:
    from genrec.synthetic import main as synthetic_main

    return synthetic_main(list(argv), prog="genrec synth")


_DELEGATED: dict[str, tuple[Callable[[Sequence[str]], int], str]] = {
    "train": (_train, "train a model from a config file (genrec train --config FILE --workdir DIR)"),
    "rl": (_rl, "fine-tune a trained model with V-STAR RL (genrec rl --config FILE --init-from RUN --workdir DIR)"),
    "recommend": (_recommend, "batch job: top-k items for every user, resumable JSONL shards"),
    "build-sids": (_build_sids, "RQ-KMeans semantic IDs from item embeddings"),
    "convert": (_convert, "raw interaction log (CSV/Parquet) -> standard dataset, k-core filtered, SIDs optional"),
    "synth": (_synth, "write the synthetic dataset in the standard format (genrec synth --out DIR)"),
}


# ---------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------


def _check_output_file(path: str | None, option: str) -> None:
    """Refuses an output file that cannot be written (a directory, under a file, in a read-only
    directory) before the work whose end writes it: one line naming the path, not a traceback or
    the name of a temporary file after a whole evaluation."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise UserError(f"{path}: is a directory; give a file path to {option}")
    existing = next(parent for parent in target.absolute().parents if os.path.lexists(parent))
    if not existing.is_dir():
        raise UserError(f"{path}: {existing} is a file, not a directory; choose another {option} path")
    try:  # root ignores permission bits, os.access does not know it: try what the writer will do
        fd, probe = tempfile.mkstemp(prefix=".genrec-write-check-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise UserError(f"{path}: cannot write in {existing} ({error.strerror}); "
                        f"choose another {option} path") from None


def _check_one_dataset(data: str | None, suffix: str, fix: str) -> None:
    """Refuses a ``--data`` directory holding several datasets (``*<suffix>`` files) with one line naming
    the CLI's ``fix``, where the loader would say ``pass name=...``, a Python argument no flag sets."""
    if data is None or not Path(data).is_dir():
        return  # the loader reports a missing directory
    from genrec.datasets import dataset_names  # lazily, as the CLI imports its commands' modules

    names = dataset_names(data, suffix)
    if len(names) > 1:
        raise UserError(f"{data}: holds {len(names)} datasets ({', '.join(names)}); {fix}")


_DATASET_FILES = "its NAME.inter.json, NAME.index.rq-kmeans.json and NAME.vocab.json"


def _metrics_table(rows: dict[str, dict[str, float]], keys: Sequence[str]) -> str:
    width = max(len(name) for name in rows) + 2
    lines = [" " * width + "".join(f"{key:>12}" for key in keys)]
    for name, metrics in rows.items():
        lines.append(f"{name:<{width}}" + "".join(f"{metrics[key]:>12.4f}" for key in keys))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# genrec demo
# ---------------------------------------------------------------------------


def _demo_dataset(config: TrainConfig) -> str:
    """What the demo trains on, for its first line: the config's data (``--data`` or ``--set
    data.data_dir=DIR``, which it named as the synthetic data before), else the built-in synthetic data."""
    return config.data.data_dir or "built-in synthetic dataset"


def _demo_workdir(args: argparse.Namespace) -> Path:
    # One default run directory per dataset, so that a synthetic demo is never resumed on real data.
    return Path(args.workdir or ("runs/demo" if not args.data else f"runs/demo_{Path(args.data).resolve().name}"))


def _demo_holds_checkpoint(args: argparse.Namespace) -> bool:
    from training.train import holds_checkpoint

    return holds_checkpoint(_demo_workdir(args))


def _demo(args: argparse.Namespace) -> int:
    from serving.recommender import Recommender
    from training.config import load_config_file
    from training.train import load_data, train

    if args.config is None and not _DEMO_CONFIG.is_file():
        raise UserError(f"config {_DEMO_CONFIG} not found; run from a source checkout (pip install -e .) "
                        "or pass --config FILE")
    config_spec = args.config or str(_DEMO_CONFIG)  # FILE or FILE:ARG, as genrec train takes it
    config = load_config_file(config_spec, args.overrides)
    if args.data:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, data_dir=args.data))
    workdir = _demo_workdir(args)
    dataset = _demo_dataset(config)
    print(f"genrec demo: training {config.model.preset} on {dataset} in {workdir} ({Path(config_spec).name})",
          flush=True)
    start = time.perf_counter()
    with _demo_spelling():
        result = train(config, workdir, resume=not args.fresh)
    minutes = (time.perf_counter() - start) / 60

    ndcg_keys = ("recall@10", "ndcg@10")
    print()
    print(f"Test split, {int(result.test_metrics['num_examples'])} users, constrained beam search "
          f"({config.eval.num_beams} beams), {minutes:.1f} min:")
    print(_metrics_table({f"genrec ({config.model.preset})": result.test_metrics,
                          "popularity": result.popularity_test_metrics}, ndcg_keys))

    which = "best" if result.best_step is not None else "latest"
    if args.rl:
        with _demo_spelling(_demo_rl_workdir(workdir)):
            workdir, which = _demo_rl(config, workdir, result.test_metrics, fresh=args.fresh)
    recommender = Recommender.from_workdir(workdir, which, num_beams=config.eval.num_beams,
                                           batch_size=_DEMO_USERS)
    data = load_data(config.data)
    histories = [[data.item_ids[r] for r in data.sequences[u][:-1]] for u in range(_DEMO_USERS)]
    recs = recommender.recommend(histories, top_k=10)
    print()
    print("Top-10 for 3 users (history = all but their last item; * marks the held-out last item):")
    for u in range(_DEMO_USERS):
        held_out = data.item_ids[data.sequences[u][-1]]
        recent = " ".join(histories[u][-5:])
        items = " ".join(f"{item}{'*' if item == held_out else ''}" for item in recs.item_ids[u][recs.valid[u]])
        print(f"  user {data.user_ids[u]}: ... {recent} -> next {held_out}")
        print(f"    top-10: {items}")
    print()
    print(f"Checkpoints, metrics.jsonl and results.json are in {workdir}; next: genrec recommend --workdir {workdir} "
          f"--out {workdir / 'recommendations'}")
    return 0


@contextlib.contextmanager
def _demo_spelling(rl_workdir: Path | None = None) -> Iterator[None]:
    """genrec train's and genrec rl's messages name their ``--no-resume``, which demo spells ``--fresh``: a
    refused run (a user error) or a diverged one (:class:`Diverged`, exit status 1) of the demo's training
    or RL stage says ``--fresh``; the RL stage's (``rl_workdir`` given) also says how to redo that stage
    alone, since ``--fresh`` retrains the supervised stage too."""
    spelt = "--fresh" if rl_workdir is None else (
        f"--fresh (which retrains both stages; to redo only the RL stage, remove {rl_workdir})")
    try:
        yield
    except Diverged as error:
        if "--no-resume" not in str(error):
            raise
        raise Diverged(str(error).replace("--no-resume", spelt)) from error
    except (ValueError, UserError) as error:
        if "--no-resume" not in str(error) or user_error_message(error) is None:
            raise
        raise UserError(str(error).replace("--no-resume", spelt)) from error


def _demo_rl_workdir(workdir: Path) -> Path:
    """Where ``genrec demo --rl`` fine-tunes the run in ``workdir``: ``<workdir>_rl``."""
    return workdir.with_name(workdir.name + "_rl")


def _demo_rl(config: TrainConfig, workdir: Path, supervised_test: dict[str, float], *,
             fresh: bool) -> tuple[Path, str]:
    """``genrec demo --rl``: V-STAR fine-tuning of the demo run (the config's ``rl``) into ``<workdir>_rl``,
    its test metrics printed beside the supervised model's; returns the RL workdir and the checkpoint that
    serves it (``"best"``; ``"latest"`` when the run validated nothing, ``rl.eval_every=0``)."""
    from training.rl import rl_train

    rl_workdir = _demo_rl_workdir(workdir)
    rl = config.rl
    print(f"\ngenrec demo --rl: {rl.num_steps} RL steps ({rl.rollouts} rollouts, {rl.num_rollouts} per request, "
          f"{rl.batch_size} requests a step) from {workdir} in {rl_workdir}", flush=True)
    start = time.perf_counter()
    rl_result = rl_train(config, workdir, rl_workdir, resume=not fresh)
    minutes = (time.perf_counter() - start) / 60
    which = ("final weights, no validation (rl.eval_every=0)" if rl_result.best_step is None else
             f"best validation checkpoint: RL step {rl_result.best_step}; 0 = the supervised start")
    print(f"\nTest split after RL ({which}), {minutes:.1f} min:")
    print(_metrics_table({"supervised": supervised_test, "+ V-STAR RL": rl_result.test_metrics},
                         ("recall@10", "ndcg@10")))
    return rl_workdir, "latest" if rl_result.best_step is None else "best"


# ---------------------------------------------------------------------------
# genrec eval
# ---------------------------------------------------------------------------


def _eval(args: argparse.Namespace) -> int:
    if args.save_prefix_ranks and not args.diagnose:
        raise ValueError("--save-prefix-ranks needs --diagnose")
    _check_one_dataset(args.data, ".inter.json",
                       f"genrec eval reads one dataset a directory: move the one to use into a directory of its own "
                       f"({_DATASET_FILES}) and pass that to --data")
    _check_output_file(args.save_ranks, "--save-ranks")
    _check_output_file(args.save_prefix_ranks, "--save-prefix-ranks")
    import numpy as np

    from genrec.atomic_files import atomic_open
    from training.evaluate import evaluate_workdir

    evaluation = evaluate_workdir(
        args.workdir, split=args.split, data_dir=args.data, which=args.which, num_beams=args.num_beams,
        batch_size=args.batch_size, max_examples=args.max_examples, normalization=args.normalization,
        diagnose=args.diagnose, devices=args.devices, matmul_precision=args.matmul_precision,
    )
    result = evaluation.result
    for path, ranks in ((args.save_ranks, result.ranks), (args.save_prefix_ranks, result.prefix_ranks)):
        if path:
            with atomic_open(path, "wb") as f:
                np.save(f, ranks)
    metrics = result.metrics
    keys = [f"{m}@{k}" for k in evaluation.ks for m in ("recall", "ndcg")]
    print(f"{args.split} split of {evaluation.dataset}: {int(metrics['num_examples'])} examples, "
          f"{evaluation.num_beams} beams, {args.which} checkpoint, {evaluation.seconds:.1f} s")
    print(_metrics_table({"genrec": metrics, "popularity": evaluation.popularity}, keys))
    if args.diagnose:
        print(f"unconstrained beam: {metrics['unconstrained_valid_fraction']:.2%} of generated SIDs are items")
        survival = ", ".join(f"level {t}: {metrics[f'prefix_in_beam@{t}']:.2%}"
                             for t in range(1, evaluation.num_levels + 1))
        print(f"target prefix still in the {evaluation.num_beams} beams after {survival}")
    print(json.dumps({"split": args.split, "metrics": metrics, "popularity": evaluation.popularity}))
    return 0


# ---------------------------------------------------------------------------
# genrec build-index
# ---------------------------------------------------------------------------


def _build_index(args: argparse.Namespace) -> int:
    import numpy as np

    from constrained.decode import build_eval_index
    from constrained.index import build_index, disambiguate_sids
    from genrec.datasets import find_duplicate_sids, load_sid_catalogue
    from genrec.vocab import SIDVocabulary

    _check_output_file(args.out, "--out")
    if args.name is None:
        _check_one_dataset(args.data, ".index.rq-kmeans.json", "pass --name NAME to choose one")
    data = load_sid_catalogue(args.data, args.name)  # the SIDs only: the interactions are not needed
    start = time.perf_counter()
    duplicates = find_duplicate_sids(data.sid_codes)
    if args.disambiguate:
        # As the data pipeline does (genrec.rqkmeans): disambiguate_sids() first, then the vocabulary of the
        # disambiguated SIDs, whose appended level's tokens follow the others' (build_index cannot give the
        # level it would append a token range of the model's vocabulary).
        sid_codes, vocab = data.sid_codes, data.vocab
        if duplicates:
            sid_codes = disambiguate_sids(sid_codes)
            vocab = SIDVocabulary((*vocab.codebook_sizes, int(sid_codes[:, -1].max()) + 1))
        index = build_index(sid_codes, np.arange(data.num_items), codebook_sizes=vocab.codebook_sizes,
                            token_offsets=vocab.level_offsets)
        leaves = ("item rows, a disambiguation level was appended" if duplicates else
                  "item rows; no SID is shared, so no disambiguation level was needed")
    else:
        index, _ = build_eval_index(data.sid_codes, data.vocab)
        leaves = "distinct-SID rows (SIDs in lexicographic order)"
    seconds = time.perf_counter() - start
    index.save(args.out)
    print(f"{data.name}: {data.num_items} items, {len(duplicates)} SIDs shared by "
          f"{sum(len(g) for g in duplicates)} items -> {index.num_items} leaves ({leaves})")
    print(f"{index.num_levels} levels, codebooks {index.codebook_sizes}, {index.num_states} states, "
          f"max branching {index.max_branch}, dense depth {index.dense_depth}; built in {seconds:.2f} s")
    print("memory:")
    for part, nbytes in index.memory_report().items():
        print(f"  {part:<20}{nbytes / 2**20:>10.3f} MiB")
    print(f"wrote {args.out}")
    return 0


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genrec",
        description="Generative retrieval with semantic IDs: train, evaluate and serve. "
        "Start with 'genrec demo'.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="train a small model, compare it with popularity, recommend for 3 users",
        description="The main job: dataset (built-in synthetic, or --data) -> train the CPU smoke config "
        "(72 s on a 2-core CPU) -> test Recall@10 / NDCG@10 next to a popularity baseline -> "
        "top-10 recommendations for 3 users. Rerunning resumes (or reuses) the run in --workdir.",
    )
    demo.add_argument("--data", default=None, help="dataset directory in the standard format (docs/data.md)")
    demo.add_argument("--workdir", default=None,
                      help="run directory (default runs/demo, or runs/demo_<data dir name> with --data)")
    demo.add_argument("--config", default=None, metavar="FILE[:ARG]",
                      help="config file, FILE:ARG for a variant (default tpu_configs/cpu_smoke.py)")
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field, e.g. --set num_steps=100 (repeatable)")
    demo.add_argument("--fresh", action="store_true", help="retrain from scratch instead of resuming")
    demo.add_argument("--rl", action="store_true",
                      help="then fine-tune the model with V-STAR RL (the config's rl.*, docs/rl.md) in "
                           "<workdir>_rl, and recommend from that")
    demo.set_defaults(handler=_demo, outputs=lambda args: [_demo_workdir(args)] + (
                          [_demo_rl_workdir(_demo_workdir(args))] if args.rl else []),
                      keep_outputs=_demo_holds_checkpoint)

    evaluate = commands.add_parser(
        "eval", help="Recall/NDCG of a trained workdir through the constrained beam search",
        description="Leave-one-out evaluation of a trained model (SID-level hits, docs/serving.md).",
    )
    evaluate.add_argument("--workdir", required=True, help="training workdir")
    evaluate.add_argument("--split", choices=("test", "valid"), default="test")
    evaluate.add_argument("--data", default=None, help="dataset directory (default: the training data)")
    evaluate.add_argument("--which", choices=("best", "latest"), default="best", help="checkpoint to load")
    evaluate.add_argument("--num-beams", type=int, default=None, help="beam width (default: the run's)")
    evaluate.add_argument("--batch-size", type=int, default=None, help="users per decode call (default: the run's)")
    evaluate.add_argument("--devices", type=int, default=None, metavar="N",
                          help="local devices each decode call is split over (default: all; 1 = one device)")
    # constrained.decode.MATMUL_PRECISIONS, spelled out: the parser imports no JAX (genrec --help answers at once).
    evaluate.add_argument("--matmul-precision", choices=("default", "high", "highest"), default="default",
                          help="float32 matmul precision of the decode: default (fastest: TF32 on GPUs, bfloat16 "
                               "on TPUs; a user's ranks can change with the other users of its batch), high, or "
                               "highest (full float32); the same on CPUs (docs/serving.md)")
    evaluate.add_argument("--max-examples", type=int, default=None,
                          help="evaluate only the first N examples (in the data file's user order, which "
                               "may not be typical of all users; docs/results.md)")
    evaluate.add_argument("--diagnose", action="store_true",
                          help="also report how often an unconstrained beam search generates real items, "
                               "and how often the target's prefix is still in the beams after each level")
    evaluate.add_argument("--normalization", choices=("vocab", "trie"), default=None,
                          help="softmax support of beam scores: whole vocabulary or valid trie children "
                               "(default: the run's; 'trie' after MSL training)")
    evaluate.add_argument("--save-ranks", default=None, metavar="FILE.npy",
                          help="write each example's rank of the target in the beam (0 = missed), "
                               "for paired comparisons (research/compare_runs.py)")
    evaluate.add_argument("--save-prefix-ranks", default=None, metavar="FILE.npy",
                          help="with --diagnose: write int32[levels, examples], row t-1 = rank of the "
                               "target's length-t prefix among the beams after level t (0 = pruned), "
                               "for survival by user group (research/popularity_buckets.py)")
    evaluate.set_defaults(handler=_eval, outputs=lambda args: [args.save_ranks, args.save_prefix_ranks])

    index = commands.add_parser(
        "build-index", help="build and save the trie index of a dataset, print its memory",
        description="Builds the constrained-decoding trie over a dataset's SIDs (one leaf per distinct SID, "
        "the index evaluation and serving use) and saves it as one .npz file.",
    )
    index.add_argument("--data", required=True, help="dataset directory")
    index.add_argument("--name", default=None, help="dataset name if the directory holds several")
    index.add_argument("--out", required=True, help="output .npz file")
    index.add_argument("--disambiguate", action="store_true",
                       help="one leaf per item: append a level numbering the items that share a SID "
                            "(disambiguate_sids(); its tokens follow the last level's in the vocabulary), "
                            "for a model trained on SIDs so disambiguated; nothing is appended when no SID "
                            "is shared")
    index.set_defaults(handler=_build_index, outputs=lambda args: [args.out])

    for subcommand in (demo, evaluate, index):
        add_verbose_flag(subcommand)
    for name, (_, help_text) in _DELEGATED.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``genrec`` console script.

    Returns the exit status: 0 done, 2 a usage error or a user's mistake (one
    line ``genrec COMMAND: error: ...`` on stderr), 130 Ctrl-C (one line, the
    traceback with ``--verbose``), others as each command says.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with command_argv(argv):  # Ctrl-C's one line depends on the command's flags (print_interrupted)
            return _main(argv)
    except KeyboardInterrupt:  # outside a command's run_command, e.g. while genrec train imports JAX
        if "--verbose" in argv:
            raise
        print_interrupted(f"genrec {argv[0]}" if argv and not argv[0].startswith("-") else "genrec", argv)
        return INTERRUPTED_EXIT_CODE


def _main(argv: list[str]) -> int:
    if argv and argv[0] in _DELEGATED:  # they parse their own arguments and report their own errors
        return _DELEGATED[argv[0]][0](argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    setup_logging(args.verbose)
    keep = getattr(args, "keep_outputs", None)
    return run_command(f"genrec {args.command}", lambda: args.handler(args), outputs=args.outputs(args),
                       verbose=args.verbose, keep_outputs=keep and (lambda: keep(args)))


if __name__ == "__main__":
    sys.exit(main())
