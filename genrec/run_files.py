"""A training workdir's files, and the read side that inference needs: config, catalogue, trained model.

Where it sits: train loop -> checkpoint -> **run files** -> index -> decode -> serve.
``training/checkpoint.py`` writes a workdir (and restores it to resume a run);
this module owns the layout and reads it back for serving and evaluation, from
``config.json`` as plain JSON, so nothing here imports ``training``.

Workdir layout::

    workdir/
      config.json        {"format_version", "train_config": TrainConfig, "model_config": ModelConfig}
      vocab.json         genrec.vocab.SIDVocabulary (token layout)
      catalogue.npz      sid_codes int32[num_items, L], item_ids str[num_items]
      data_fingerprint.json  {"users", "interactions", "digest"} of the data the run started on
      checkpoints/<step>/  periodic Orbax checkpoints: params, opt_state, meta (JSON, with the arrays' checksums)
      best/<step>/         the best one by eval.selection_metric: params, meta
      metrics.jsonl, results.json, curves.png, ...  (written by training/train.py)

``params`` are stored as a plain nested dict of arrays (``nnx.to_pure_dict``),
so a checkpoint does not depend on how a Flax version wraps its variables.
docs/training.md describes the files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from genrec.array_digest import tree_digest
from genrec.checkpoint_checksums import CHECKSUMS_KEY, CheckpointDamaged, reading_error, verify_checksums
from genrec.datasets import MIN_INTERACTIONS, InteractionData, load_sid_dataset
from genrec.models import ModelConfig, SIDRecommender, build_model
from genrec.synthetic import make_synthetic_dataset
from genrec.vocab import SIDVocabulary

__all__ = [
    "BEST_DIR",
    "BEST_ITEMS",
    "CATALOGUE_FILE",
    "CONFIG_FILE",
    "CONFIG_FORMAT_VERSION",
    "DATA_FINGERPRINT_FILE",
    "InferenceModel",
    "PERIODIC_DIR",
    "PERIODIC_ITEMS",
    "VOCAB_FILE",
    "RunInfo",
    "abstract_tree",
    "all_finite",
    "catalogue_fingerprint",
    "checkpoint_dir",
    "check_same_catalogue",
    "check_same_data",
    "data_fingerprint",
    "damaged_run_file",
    "has_checkpoint",
    "load_inference_model",
    "load_model_for_inference",
    "load_run_data",
    "load_workdir_data",
    "model_config_from_json",
    "model_config_to_json",
    "params_digest",
    "read_catalogue",
    "read_config_json",
    "read_data_fingerprint",
    "read_run_info",
    "resolve_score_normalization",
    "restore_params",
    "restore_params_from",
    "restore_verified",
    "state_with_values",
]

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
CATALOGUE_FILE = "catalogue.npz"
# The identity of the interactions a run started on (data_fingerprint); older workdirs lack it.
DATA_FINGERPRINT_FILE = "data_fingerprint.json"
PERIODIC_DIR = "checkpoints"
BEST_DIR = "best"
# Orbax items of each checkpoint kind (training/checkpoint.py saves them).
PERIODIC_ITEMS = ("params", "opt_state", "meta")
BEST_ITEMS = ("params", "meta")
# Version of config.json's layout; training.config writes and checks it too.
CONFIG_FORMAT_VERSION = 1

logger = logging.getLogger(__name__)


def checkpoint_dir(workdir: str | Path, which: Literal["best", "latest"]) -> Path:
    """The folder of a workdir's ``best`` checkpoint or its periodic (``latest``) ones."""
    return Path(workdir) / (BEST_DIR if which == "best" else PERIODIC_DIR)


def has_checkpoint(workdir: str | Path, which: Literal["best", "latest"]) -> bool:
    """Whether ``workdir`` holds a checkpoint of that kind (its folder exists and is not empty)."""
    directory = checkpoint_dir(workdir, which)
    return directory.is_dir() and any(directory.iterdir())


def _not_a_workdir(path: Path, workdir: str | Path) -> FileNotFoundError:
    return FileNotFoundError(f"{path} not found: {workdir} is not a genrec training workdir")


def damaged_run_file(path: str | Path, reason: str) -> ValueError:
    """The one-line error of a workdir file that cannot be what genrec train wrote: names it, why, and the fix."""
    return ValueError(f"{path}: {reason}; the file is damaged or was not written by genrec train: "
                      "restore the workdir from a copy, or train the run again into a new --workdir")


# ---------------------------------------------------------------------------
# config.json
# ---------------------------------------------------------------------------


def model_config_to_json(config: ModelConfig) -> dict[str, Any]:
    """``ModelConfig`` as JSON (dtypes by name)."""
    values = dataclasses.asdict(config)
    values["dtype"] = jnp.dtype(config.dtype).name
    values["param_dtype"] = jnp.dtype(config.param_dtype).name
    return values


def model_config_from_json(values: Any, source: str | Path = "<json>") -> ModelConfig:
    """Inverse of :func:`model_config_to_json`.

    Raises:
      ValueError: ``values`` is not a ``ModelConfig`` as JSON (not an object,
        unknown or missing fields, a bad value): one line naming ``source``.
    """
    if not isinstance(values, dict):
        raise damaged_run_file(source, f"model_config is {_not_an_object(values)}")
    unknown = sorted(set(values) - {field.name for field in dataclasses.fields(ModelConfig)})
    if unknown:
        raise damaged_run_file(source, f"unknown model_config fields {unknown}")
    try:
        return ModelConfig(**values)
    except (TypeError, ValueError) as error:  # a missing field, a dtype that is no dtype, a value out of range
        raise damaged_run_file(source, f"model_config is not a valid ModelConfig ({error})") from error


# config.json's top-level keys (training/checkpoint.py write_run_files writes every one).
_CONFIG_KEYS = ("format_version", "train_config", "model_config")


def _json_object(value: Any, path: Path, where: str) -> dict[str, Any]:
    """``value`` if it is a JSON object, else :func:`damaged_run_file`'s error saying what ``where`` holds."""
    if not isinstance(value, dict):
        raise damaged_run_file(path, f"{where} is {_not_an_object(value)}")
    return value


def _not_an_object(value: Any) -> str:
    """What a JSON value that should be an object is, for an error message (``"a JSON list, not an object"``)."""
    if value is None:
        return "missing"
    kinds = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return f"a JSON {kinds.get(type(value), type(value).__name__)}, not an object"


def _read_json(path: Path) -> Any:
    """A JSON file's value; a file that is not UTF-8 JSON raises :func:`damaged_run_file`'s ValueError."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise damaged_run_file(path, f"not UTF-8 text (byte {error.start})") from None
    if not text.strip():
        raise damaged_run_file(path, "empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:  # truncated or edited
        raise damaged_run_file(path, f"malformed JSON at line {error.lineno}, column {error.colno} "
                                     f"({error.msg})") from None


def read_config_json(workdir: str | Path) -> dict[str, Any]:
    """``workdir/config.json`` as a dict, its layout checked: ``format_version``,
    and ``train_config`` and ``model_config`` JSON objects, nothing else.

    Raises:
      FileNotFoundError: not a training workdir.
      ValueError: written by a genrec version with another config layout, or
        not a config.json of genrec train (malformed JSON, not an object, a
        section missing, an unknown top-level key): one line naming the file.
    """
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise _not_a_workdir(path, workdir)
    payload = _read_json(path)
    if not isinstance(payload, dict):
        raise damaged_run_file(path, f"holds {_not_an_object(payload)}")
    if payload.get("format_version") != CONFIG_FORMAT_VERSION:
        raise ValueError(
            f"{path}: config format_version {payload.get('format_version')!r} is not "
            f"{CONFIG_FORMAT_VERSION}; it was written by another genrec version"
        )
    unknown = sorted(set(payload) - set(_CONFIG_KEYS))
    if unknown:
        raise damaged_run_file(path, f"unknown top-level keys {unknown}: config.json holds only "
                                     f"{', '.join(_CONFIG_KEYS)}")
    for key in _CONFIG_KEYS[1:]:
        _json_object(payload.get(key), path, key)
    return payload


def resolve_score_normalization(choice: str, loss_kind: str) -> Literal["vocab", "trie"]:
    """The beam-score normalisation a run's model is evaluated and served with.

    ``choice`` (``eval.score_normalization``) unless it is ``"auto"``, which
    gives ``"trie"`` for the ``msl`` loss (trained with a softmax over valid
    trie children only) and ``"vocab"`` otherwise (docs/losses.md).
    """
    if choice == "auto":
        return "trie" if loss_kind == "msl" else "vocab"
    if choice not in ("vocab", "trie"):
        raise ValueError(f"score_normalization={choice!r}; use 'auto', 'vocab' or 'trie'")
    return choice


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What inference needs of a run's ``config.json`` (the rest belongs to training).

    Attributes:
      model_config: the trained model's architecture.
      data: the ``train_config.data`` section as JSON (``data_dir``, ``name``,
        ``synthetic``, ...): what :func:`load_run_data` loads.
      max_history: most recent history items per example the model was trained with.
      score_normalization: ``"vocab"`` or ``"trie"`` (:func:`resolve_score_normalization`).
      num_beams, eval_batch_size, ks: the run's evaluation settings.
    """

    model_config: ModelConfig
    data: dict[str, Any]
    max_history: int
    score_normalization: Literal["vocab", "trie"]
    num_beams: int
    eval_batch_size: int
    ks: tuple[int, ...]


def read_run_info(workdir: str | Path) -> RunInfo:
    """The :class:`RunInfo` of ``workdir/config.json``.

    Fields that a workdir written before they existed lacks take
    ``training.config``'s defaults (``eval.score_normalization="auto"``).

    Raises:
      FileNotFoundError: not a training workdir.
      ValueError: config.json is not one of genrec train (:func:`read_config_json`),
        or a section or field that inference reads is missing or of the wrong
        kind (``"num_beams": "x"``, ``"ks": []``): one line naming the file.
    """
    path = Path(workdir) / CONFIG_FILE
    payload = read_config_json(workdir)
    train_config = payload["train_config"]
    data = _json_object(train_config.get("data"), path, "train_config.data")
    evaluation = _json_object(train_config.get("eval"), path, "train_config.eval")
    loss = _json_object(train_config.get("loss", {}), path, "train_config.loss")
    # The data section goes to load_run_data as it is: its kinds are checked here, not where they are used.
    synthetic = _json_object(data.get("synthetic", {}), path, "train_config.data.synthetic")
    unknown = sorted(set(synthetic) - set(inspect.signature(make_synthetic_dataset).parameters))
    if unknown:
        raise damaged_run_file(path, f"unknown train_config.data.synthetic fields {unknown}")
    for key in ("data_dir", "name"):
        if not isinstance(data.get(key), (str, type(None))):
            raise damaged_run_file(path, f"train_config.data.{key} is {json.dumps(data[key])}, not a string or null")
    missing = [f"train_config.{where}.{key}" for where, section, keys in
               (("data", data, ("max_history",)), ("eval", evaluation, ("num_beams", "batch_size", "ks")))
               for key in keys if key not in section]
    if missing:
        raise damaged_run_file(path, f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
    ks = evaluation["ks"]
    if not isinstance(ks, list) or not ks:
        raise damaged_run_file(path, f"train_config.eval.ks is {json.dumps(ks)}, not a list of positive integers")
    try:
        score_normalization = resolve_score_normalization(evaluation.get("score_normalization", "auto"),
                                                          loss.get("kind", "ce"))
    except ValueError as error:
        raise damaged_run_file(path, f"train_config.eval.{error}") from None
    return RunInfo(
        model_config=model_config_from_json(payload["model_config"], path),
        data=dict(data),
        max_history=_positive_int(data["max_history"], path, "train_config.data.max_history"),
        score_normalization=score_normalization,
        num_beams=_positive_int(evaluation["num_beams"], path, "train_config.eval.num_beams"),
        eval_batch_size=_positive_int(evaluation["batch_size"], path, "train_config.eval.batch_size"),
        ks=tuple(_positive_int(k, path, f"train_config.eval.ks[{i}]") for i, k in enumerate(ks)),
    )


def _positive_int(value: Any, path: Path, where: str) -> int:
    """``value`` if it is an integer >= 1, else :func:`damaged_run_file`'s error naming ``where``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise damaged_run_file(path, f"{where} is {json.dumps(value)}, not a positive integer")
    return value


def load_run_data(data: Mapping[str, Any], min_interactions: int = MIN_INTERACTIONS) -> InteractionData:
    """The dataset of a run's data section: files from ``data_dir``, or the synthetic one.

    Args:
      data: ``{"data_dir": str | None, "name": str | None, "synthetic": {...}}``:
        :attr:`RunInfo.data`, or ``dataclasses.asdict(DataConfig)``; the
        ``synthetic`` entries are ``genrec.synthetic.make_synthetic_dataset`` arguments.
      min_interactions: users with fewer are skipped (0 keeps every user: serving).
    """
    if data.get("data_dir") is None:
        return make_synthetic_dataset(**data.get("synthetic", {}))
    return load_sid_dataset(data["data_dir"], data.get("name"), min_interactions=min_interactions)


def load_workdir_data(
    workdir: str | Path,
    data_dir: str | Path | None = None,
    vocab: SIDVocabulary | None = None,
    min_interactions: int = MIN_INTERACTIONS,
) -> InteractionData:
    """The users to evaluate or serve: ``data_dir`` if given (its SIDs checked
    to fit ``vocab``, the checkpoint's, and its catalogue checked to be the
    workdir's: :func:`check_same_catalogue`), else the dataset the workdir's run trained on.

    ``min_interactions``: users with fewer are skipped; leave-one-out evaluation
    needs 3 (the default), serving takes every user (0: cold start included)."""
    if data_dir is not None:
        data = load_sid_dataset(data_dir, vocab=vocab, min_interactions=min_interactions)
        sid_codes, item_ids = read_catalogue(workdir)
        check_same_catalogue(data, item_ids, sid_codes, workdir)
        return data
    run_data = read_run_info(workdir).data
    run_dir = run_data.get("data_dir")
    if run_dir is not None and not Path(run_dir).is_dir():
        # Runs record an absolute path; an older workdir may hold one relative to where training ran.
        where = "" if Path(run_dir).is_absolute() else f" (relative to the current directory {Path.cwd()})"
        raise FileNotFoundError(f"{run_dir}: dataset directory of {workdir}'s run (config.json data.data_dir) not "
                                f"found{where}; point to the dataset with --data DIR")
    return load_run_data(run_data, min_interactions)


def catalogue_fingerprint(item_ids: np.ndarray, sid_codes: np.ndarray) -> str:
    """A catalogue's identity: the first 16 hex digits of a SHA-256 over its item ids and SID codes, in order."""
    digest = hashlib.sha256()
    digest.update("\0".join(str(i) for i in np.asarray(item_ids).tolist()).encode())
    digest.update(np.ascontiguousarray(sid_codes, dtype="<i4").tobytes())
    return digest.hexdigest()[:16]


# Bump when data_fingerprint's formula changes: a record of another version is not compared (its run resumes
# unchecked, as one from before fingerprints), rather than refused as other data.
DATA_FINGERPRINT_VERSION = 1


# data_fingerprint of each loaded dataset still alive: a run checks its start's record, its own on resume, and
# writes it on a fresh start, all for one dataset, which is hashed once.
_FINGERPRINTS: weakref.WeakKeyDictionary[InteractionData, dict[str, Any]] = weakref.WeakKeyDictionary()


def data_fingerprint(data: InteractionData) -> dict[str, Any]:
    """The identity of a dataset's interactions: ``{"version", "users", "interactions", "digest"}``, the digest a
    ``sha256:<hex>`` over the user ids, the sorted item ids, and each user's items in order as their ranks in
    that sort (what a run trains and evaluates on; independent of the catalogue's row order). One pass over
    int32 arrays: no per-interaction Python objects, for datasets of hundreds of millions of interactions;
    computed once per ``data`` object (InteractionData is immutable)."""
    if data not in _FINGERPRINTS:
        _FINGERPRINTS[data] = _compute_data_fingerprint(data)
    return dict(_FINGERPRINTS[data])


def _compute_data_fingerprint(data: InteractionData) -> dict[str, Any]:
    lengths = np.asarray([len(sequence) for sequence in data.sequences], "<i8")
    rows = np.concatenate([np.asarray(s, np.int64) for s in data.sequences]) if data.sequences else np.zeros(0, int)
    item_ids = [str(item) for item in np.asarray(data.item_ids).tolist()]
    order = np.argsort(np.asarray(item_ids), kind="stable")
    rank_of_row = np.empty(len(item_ids), "<i4")
    rank_of_row[order] = np.arange(len(item_ids), dtype="<i4")
    digest = hashlib.sha256()
    digest.update("\0".join(str(user) for user in data.user_ids).encode())
    digest.update(b"\1" + "\0".join(item_ids[i] for i in order.tolist()).encode())
    digest.update(lengths.tobytes())
    digest.update(np.ascontiguousarray(rank_of_row[rows]).tobytes())
    return {"version": DATA_FINGERPRINT_VERSION, "users": len(data.user_ids), "interactions": int(lengths.sum()),
            "digest": "sha256:" + digest.hexdigest()}


def read_data_fingerprint(workdir: str | Path) -> dict[str, Any] | None:
    """``workdir/data_fingerprint.json`` (:func:`data_fingerprint` of the data its run started on), or None for
    a workdir written before genrec recorded it; a damaged one is :func:`damaged_run_file`'s one line."""
    path = Path(workdir) / DATA_FINGERPRINT_FILE
    if not path.exists():
        return None
    record = _read_json(path)
    if not isinstance(record, dict) or not {"users", "interactions", "digest"} <= record.keys():
        raise damaged_run_file(path, "not a data fingerprint (users, interactions, digest)")
    return record


def check_same_data(record: dict[str, Any] | None, data: InteractionData, what: str, fix: str,
                    now: str = "this config's") -> None:
    """Refuses ``data`` if it is not the data of ``record`` (:func:`read_data_fingerprint`; None: not
    recorded, nothing to check).

    Raises:
      ValueError: one line: ``what`` (e.g. "PATH: this run started on"), "other data than" ``now``, both
        datasets' sizes and digests, ``fix``.
    """
    if record is None or record.get("version") != DATA_FINGERPRINT_VERSION:
        return
    current = data_fingerprint(data)
    if current["digest"] != record["digest"]:
        def described(values: dict[str, Any]) -> str:
            return f"{values['users']} users, {values['interactions']} interactions, {str(values['digest'])[:19]}"

        raise ValueError(f"{what} other data than {now}: {described(record)} then, {described(current)} "
                         f"now (the data files changed); {fix}")


# A dataset is taken to describe a model's catalogue when at least this share of
# its items are catalogue items and at most this share of those have another SID.
MIN_SHARED_ITEMS = 0.5
MAX_CHANGED_SIDS = 0.5


def catalogue_rows(item_ids: Sequence[Any] | np.ndarray, catalogue_item_ids: Sequence[Any] | np.ndarray
                   ) -> np.ndarray:
    """``int64[len(item_ids)]``: each item's row in a catalogue of ``catalogue_item_ids``, -1 where it has none
    (ids compared as strings)."""
    row_of_item = {item: row for row, item in enumerate(np.asarray(catalogue_item_ids).astype(str).tolist())}
    return np.array([row_of_item.get(item, -1) for item in np.asarray(item_ids).astype(str).tolist()],
                    dtype=np.int64)


def check_same_catalogue(data: InteractionData, item_ids: np.ndarray, sid_codes: np.ndarray,
                         workdir: str | Path) -> None:
    """Refuses a dataset built on another catalogue than the workdir's model.

    Items are matched by id; numeric ids of two catalogues overlap, so a
    model of one catalogue would silently serve another's users with wrong
    items. A few unknown or re-coded items are fine (the batch job's
    ``--on-unknown`` handles unknown ones); a dataset whose items mostly miss
    the catalogue, or mostly carry other SIDs, is refused.

    Raises:
      ValueError: one line giving the counts, example ids and the fix.
    """
    data_ids = np.asarray(data.item_ids).astype(str).tolist()
    rows = catalogue_rows(data_ids, item_ids)
    known = rows >= 0
    fix = f"use the dataset {workdir}'s model was trained on, or train a model on this one"
    if known.mean() < MIN_SHARED_ITEMS:
        missing = [item for item, row in zip(data_ids, rows) if row < 0][:3]
        raise ValueError(
            f"{data.name or 'the dataset'}: only {int(known.sum())} of its {len(data_ids)} items are in the "
            f"catalogue of {workdir} (e.g. {', '.join(repr(i) for i in missing)} are not): it is another "
            f"catalogue; {fix}"
        )
    levels, catalogue_levels = np.asarray(data.sid_codes).shape[1], np.asarray(sid_codes).shape[1]
    if levels != catalogue_levels:  # an index rebuilt with another depth: its SIDs cannot be this model's
        raise ValueError(
            f"{data.name or 'the dataset'}: its SIDs have {levels} levels, those of the catalogue of {workdir} "
            f"{catalogue_levels}: it is another catalogue; {fix}"
        )
    changed = np.any(np.asarray(data.sid_codes)[known] != np.asarray(sid_codes)[rows[known]], axis=1)
    if changed.mean() > MAX_CHANGED_SIDS:
        example = np.asarray(data_ids)[known][changed][0]
        raise ValueError(
            f"{data.name or 'the dataset'}: {int(changed.sum())} of the {int(known.sum())} items it shares with "
            f"the catalogue of {workdir} have other SIDs there (e.g. item {str(example)!r}): it is another "
            f"catalogue; {fix}"
        )


def read_catalogue(workdir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(sid_codes int32[num_items, L], item_ids str[num_items])`` from ``workdir/catalogue.npz``.

    Raises:
      FileNotFoundError: not a training workdir.
      ValueError: the file is not a catalogue that genrec train wrote (not an
        npz archive, truncated, an array missing or of the wrong kind): one line naming it.
    """
    path = Path(workdir) / CATALOGUE_FILE
    if not path.is_file():
        raise _not_a_workdir(path, workdir)
    with path.open("rb") as file:
        magic = file.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # an npz file is a zip archive
        raise damaged_run_file(path, "empty" if not magic else "not an npz archive")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = [name for name in ("sid_codes", "item_ids") if name not in arrays.files]
            if not missing:
                sid_codes, item_ids = arrays["sid_codes"], arrays["item_ids"]
    except Exception as error:  # whatever NumPy's zip reader raises (BadZipFile, EOFError, zlib.error, ...)
        raise damaged_run_file(path, f"a truncated or damaged npz archive ({type(error).__name__}: {error})") from error
    if missing:
        raise damaged_run_file(path, f"no {' or '.join(missing)} array")
    if sid_codes.ndim != 2 or sid_codes.size == 0 or not np.issubdtype(sid_codes.dtype, np.integer):
        raise damaged_run_file(path, f"sid_codes is {sid_codes.dtype}{list(sid_codes.shape)}, not int[num_items, L]")
    if item_ids.shape != sid_codes.shape[:1]:
        raise damaged_run_file(path, f"item_ids has shape {list(item_ids.shape)}, not [{sid_codes.shape[0]}] "
                                     "(one id per sid_codes row)")
    return sid_codes, item_ids


# ---------------------------------------------------------------------------
# Checkpointed parameters
# ---------------------------------------------------------------------------


def abstract_tree(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a pytree of arrays: an Orbax restore target."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def state_with_values(template: nnx.State, pure: dict[str, Any]) -> nnx.State:
    """``template`` (an ``nnx.State``) holding the arrays of the pure dict ``pure``; the template is untouched."""
    state = jax.tree.map(lambda x: x, template)
    nnx.replace_by_pure_dict(state, pure)
    return state


def restore_verified(
    manager: ocp.CheckpointManager, step: int, directory: Path, **targets: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One step's array items, checked against the checksums saved with them, and its ``meta``.

    Args:
      manager: the Orbax manager of ``directory``.
      step: the checkpoint to read.
      targets: the array items to restore, by name, as Orbax restore targets
        (``params=abstract_tree(...)``).

    Returns:
      ``(arrays, meta)``: the restored trees by item name, and the ``meta``
      JSON without its checksum record. A checkpoint saved before checksums
      were recorded is returned unverified, with a one-line warning.

    Raises:
      CheckpointDamaged: a file of the step cannot be read (missing, truncated,
        undecodable, bad JSON), or an array differs from its checksum.
    """
    args = {name: ocp.args.StandardRestore(target) for name, target in targets.items()}
    try:
        restored = manager.restore(step, args=ocp.args.Composite(**args, meta=ocp.args.JsonRestore()))
        arrays = {name: restored[name] for name in targets}
        meta = restored.meta
    except Exception as error:  # whatever the reader raises, the step is unusable
        raise _damaged(directory, step, reading_error(error)) from error
    if not isinstance(meta, Mapping):
        raise _damaged(directory, step, "its meta item is missing or not a JSON object")
    meta = dict(meta)
    record = meta.pop(CHECKSUMS_KEY, None)
    if record is None:
        logger.warning("%s: checkpoint step %d has no checksums (saved by an older genrec): its arrays cannot be "
                       "verified", directory, step)
        return arrays, meta
    reason = verify_checksums(record, **arrays)
    if reason is not None:
        raise _damaged(directory, step, reason)
    return arrays, meta


def _damaged(directory: Path, step: int, reason: str) -> CheckpointDamaged:
    return CheckpointDamaged(f"{directory}: checkpoint step {step} is damaged ({reason})", step=step, reason=reason)


def _damaged_checkpoint_fix(which: Literal["best", "latest"]) -> str:
    """What to do about a damaged best or latest checkpoint (the end of the one-line error)."""
    if which == "best":
        return "load the latest checkpoint instead (--which latest, which='latest') or retrain"
    return ("load the best checkpoint instead (--which best, which='best'), or run genrec train again: "
            "it resumes from the newest intact checkpoint")


def restore_params_from(
    manager: ocp.CheckpointManager | None, params: nnx.State, which: Literal["best", "latest"], directory: Path
) -> tuple[nnx.State, int]:
    """The parameters of ``manager``'s newest step onto the template ``params``: ``(params, step)``,
    verified against the checksums saved with them (:func:`restore_verified`).

    Args:
      manager: an Orbax manager of ``directory`` with ``params`` and ``meta``
        items, or None when the directory does not exist.
      params: the model's ``nnx.Param`` state; gives the structure, dtypes and
        shardings (its values are not used).
      which: the kind of checkpoint ``directory`` holds (for the error message).

    Raises:
      FileNotFoundError: no checkpoint there.
      CheckpointDamaged: the checkpoint cannot be read or its weights differ
        from their checksums (one line naming it, its step, the reason and the fix).
    """
    step = None if manager is None else manager.latest_step()
    if step is None:
        if which == "best":
            raise FileNotFoundError(
                f"no best checkpoint in {directory}: no validation evaluation ran "
                "(eval_every=0, or training stopped before the first one); use which='latest' (--which latest)"
            )
        raise FileNotFoundError(f"no checkpoint in {directory}")
    try:
        arrays, _ = restore_verified(manager, step, directory, params=abstract_tree(nnx.to_pure_dict(params)))
    except CheckpointDamaged as damaged:
        raise CheckpointDamaged(
            f"{directory}: the {which} checkpoint (step {step}) is damaged ({damaged.reason}); "
            f"{_damaged_checkpoint_fix(which)}", step=step, reason=damaged.reason) from damaged
    return state_with_values(params, arrays["params"]), step


def _drop_read_only_notices(record: logging.LogRecord) -> bool:
    """Orbax warns on every read-only manager that it is read only; that is what we asked for."""
    message = str(record.msg)
    return not (message.startswith("Given directory is read only") or "read_only=True" in message)


def restore_params(
    workdir: str | Path, params: nnx.State, which: Literal["best", "latest"]
) -> tuple[nnx.State, int]:
    """The parameters of a workdir's best or newest periodic checkpoint (read only): ``(params, step)``.

    Raises:
      FileNotFoundError: no checkpoint of that kind.
    """
    directory = checkpoint_dir(Path(workdir).absolute(), which)
    if not directory.is_dir():
        return restore_params_from(None, params, which, directory)
    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(_drop_read_only_notices)
    try:
        manager = ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(read_only=True, create=False, enable_async_checkpointing=False),
            item_names=BEST_ITEMS if which == "best" else PERIODIC_ITEMS,
        )
    finally:
        absl_logger.removeFilter(_drop_read_only_notices)
    try:
        return restore_params_from(manager, params, which, directory)
    finally:
        manager.close()


def load_model_for_inference(
    workdir: str | Path, which: Literal["best", "latest"] = "best"
) -> tuple[SIDRecommender, ModelConfig, SIDVocabulary, np.ndarray, np.ndarray]:
    """A trained model and its catalogue, from a training workdir alone (no data directory).

    :func:`load_inference_model` also gives the checkpoint's step and weights' digest.

    Args:
      workdir: the directory ``genrec train --workdir`` wrote.
      which: ``"best"`` (best by the run's eval.selection_metric) or ``"latest"`` (newest periodic).

    Returns:
      ``(model, model_config, vocab, sid_codes, item_ids)``: the model on the
      default device (call it with ``deterministic=True``, the default), its
      config, the token layout, ``sid_codes int32[num_items, L]`` and the
      original ``item_ids str[num_items]`` of each item row.

    Raises:
      FileNotFoundError: not a workdir, or no checkpoint of that kind.
      ValueError: ``which`` is neither "best" nor "latest", or the checkpoint's
        weights are not all finite (a diverged or damaged run).
    """
    return _load_model(workdir, which)[:5]


@dataclasses.dataclass(frozen=True, eq=False)
class InferenceModel:
    """A trained model of a workdir, its catalogue, and which weights it holds.

    Attributes:
      model: the model on the default device (call it with ``deterministic=True``, the default).
      model_config: its config.
      vocab: the token layout.
      sid_codes: ``int32[num_items, L]`` SID codes of the catalogue.
      item_ids: ``str[num_items]`` original item id of each catalogue row.
      checkpoint: ``"best"`` or ``"latest"``.
      step: the training step of the restored checkpoint.
      params_digest: ``sha256:<hex>`` of the restored parameters (:func:`params_digest`).
    """

    model: SIDRecommender
    model_config: ModelConfig
    vocab: SIDVocabulary
    sid_codes: np.ndarray
    item_ids: np.ndarray
    checkpoint: Literal["best", "latest"]
    step: int
    params_digest: str

    @property
    def identity(self) -> dict[str, Any]:
        """``{"checkpoint", "step", "params"}``: what a result made with this model records
        (a retrained workdir reuses step numbers; the digest tells the weights apart)."""
        return {"checkpoint": self.checkpoint, "step": self.step, "params": self.params_digest}


def params_digest(model: nnx.Module) -> str:
    """``sha256:<hex>`` of a model's ``nnx.Param`` arrays (as a pure dict, keyed by path; genrec.array_digest)."""
    return tree_digest(nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def load_inference_model(workdir: str | Path, which: Literal["best", "latest"] = "best") -> InferenceModel:
    """A trained model and its catalogue, from a training workdir alone (no data directory),
    with the checkpoint's step and the digest of its weights.

    Args:
      workdir: the directory ``genrec train --workdir`` wrote.
      which: ``"best"`` (best by the run's eval.selection_metric) or ``"latest"`` (newest periodic).

    Raises:
      FileNotFoundError: not a workdir, or no checkpoint of that kind.
      ValueError: ``which`` is neither "best" nor "latest", or the checkpoint's
        weights are not all finite (a diverged or damaged run).
    """
    model, model_config, vocab, sid_codes, item_ids, step = _load_model(workdir, which)
    return InferenceModel(model=model, model_config=model_config, vocab=vocab, sid_codes=sid_codes,
                          item_ids=item_ids, checkpoint=which, step=step, params_digest=params_digest(model))


def _load_model(
    workdir: str | Path, which: Literal["best", "latest"]
) -> tuple[SIDRecommender, ModelConfig, SIDVocabulary, np.ndarray, np.ndarray, int]:
    """:func:`load_model_for_inference`'s tuple and the checkpoint's step."""
    if which not in ("best", "latest"):
        raise ValueError(f"which={which!r}; use 'best' or 'latest'")
    workdir = Path(workdir)
    model_config = read_run_info(workdir).model_config
    vocab = SIDVocabulary.load(workdir / VOCAB_FILE)
    sid_codes, item_ids = read_catalogue(workdir)
    _check_run_files_agree(workdir, model_config, vocab, sid_codes)

    model = build_model(model_config, rngs=nnx.Rngs(params=0, dropout=0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, step = restore_params(workdir, params, which)
    if not all_finite(params):
        raise ValueError(f"{workdir}: the {which} checkpoint (step {step}) holds non-finite weights; "
                         "the run diverged or the checkpoint is damaged: use another checkpoint or retrain")
    return nnx.merge(graphdef, params, rest), model_config, vocab, sid_codes, item_ids, int(step)


def _check_run_files_agree(workdir: Path, model_config: ModelConfig, vocab: SIDVocabulary,
                           sid_codes: np.ndarray) -> None:
    """Refuses run files that each read well but describe different runs (one of them replaced or edited):
    the model's token count and SID length are the vocabulary's, and every catalogue code is in its codebook."""
    if (model_config.vocab_size, model_config.num_levels) != (vocab.vocab_size, vocab.num_levels):
        raise damaged_run_file(workdir / VOCAB_FILE, f"a vocabulary of {vocab.vocab_size} tokens and "
                               f"{vocab.num_levels} levels, but {CONFIG_FILE}'s model has {model_config.vocab_size} "
                               f"tokens and {model_config.num_levels} levels")
    sizes = np.asarray(vocab.codebook_sizes)
    if sid_codes.shape[1] != len(sizes) or np.any((sid_codes < 0) | (sid_codes >= sizes)):
        raise damaged_run_file(workdir / CATALOGUE_FILE, f"its SID codes ({sid_codes.shape[1]} levels, "
                               f"{int(sid_codes.min())} to {int(sid_codes.max())}) do not fit {VOCAB_FILE}'s "
                               f"codebooks {list(vocab.codebook_sizes)}")


def all_finite(tree: Any) -> bool:
    """Whether every floating-point array of ``tree`` (e.g. a model's parameters) is finite."""
    return bool(_all_finite(tree))


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    checks = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
              if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.bool_(True)
