"""Semantic-ID vocabulary: how SID codes become model token ids, and back.

Where it sits: index file (``<a_32>`` strings) -> :func:`parse_sid_tokens` ->
codes ``int[..., num_levels]`` -> :meth:`SIDVocabulary.codes_to_tokens` ->
model token ids. The decoder produces token ids; :meth:`tokens_to_codes` turns
them back into codes, and the constrained index maps codes to items.

Token layout (one flat vocabulary shared by history and target):

    id 0                    PAD
    id 1                    BOS (start of the generated SID)
    id 2 + offset[l] + c    code ``c`` of level ``l``,
                            offset[l] = sum(codebook_sizes[:l])

so every level owns a disjoint, contiguous block of ids and a token id alone
says which level it belongs to. The vocabulary is saved next to a checkpoint
(:meth:`SIDVocabulary.save`) so a model and the index it decodes against always
agree on this layout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from genrec.atomic_files import write_json_atomic

PAD_ID = 0
BOS_ID = 1
FIRST_CODE_ID = 2

# Largest codebook a level may have. Semantic-ID codebooks hold a few hundred
# codes (RQ-KMeans: 256); the bound turns a corrupt code such as <a_2000000000>
# into a clear error instead of an embedding table and trie tables of that size.
MAX_CODEBOOK_SIZE = 1 << 16

# Version of the JSON written by SIDVocabulary.save; bump on layout changes.
VOCAB_FORMAT_VERSION = 1

_VOCAB_FORMAT_KIND = "genrec.SIDVocabulary"

LEVEL_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_SID_TOKEN_RE = re.compile(r"<([A-Za-z]+)_(\d+)>")


def parse_sid_token(token: str) -> tuple[int, int]:
    """Parses one SID token string ``"<c_83>"`` into ``(level, code)`` = ``(2, 83)``.

    Raises:
      ValueError: the string is not ``<letter_digits>`` or the letter is not a-z.
    """
    if not isinstance(token, str):
        raise ValueError(f"SID token {token!r} is not a string; expected e.g. '<a_32>'")
    match = _SID_TOKEN_RE.fullmatch(token)
    if match is None:
        raise ValueError(f"malformed SID token {token!r}; expected '<letter_code>' like '<a_32>'")
    letter, code = match.groups()
    if len(letter) != 1 or letter not in LEVEL_LETTERS:
        raise ValueError(
            f"unknown SID level letter {letter!r} in {token!r}; levels are lower-case a, b, c, ..."
        )
    return LEVEL_LETTERS.index(letter), int(code)


def parse_sid_tokens(tokens: Sequence[str]) -> list[int]:
    """Parses one item's token strings ``["<a_32>", "<b_18>", ...]`` into codes.

    The letters must be ``a, b, c, ...`` in this order (level ``l`` at position ``l``).

    Raises:
      ValueError: a token is malformed, or a level letter is out of order.
    """
    if isinstance(tokens, str) or not isinstance(tokens, Sequence) or len(tokens) == 0:
        raise ValueError(f"SID must be a non-empty list of token strings, got {tokens!r}")
    codes = []
    for position, token in enumerate(tokens):
        level, code = parse_sid_token(token)
        if level != position:
            raise ValueError(
                f"SID token {token!r} at position {position} has level letter "
                f"{LEVEL_LETTERS[level]!r}; expected {LEVEL_LETTERS[position]!r} "
                f"(levels must appear in order a, b, c, ...)"
            )
        codes.append(code)
    return codes


def format_sid_tokens(codes: Sequence[int] | np.ndarray) -> list[str]:
    """Inverse of :func:`parse_sid_tokens`: ``[32, 18] -> ["<a_32>", "<b_18>"]``."""
    codes = [int(c) for c in codes]
    if len(codes) > len(LEVEL_LETTERS):
        raise ValueError(f"at most {len(LEVEL_LETTERS)} SID levels can be written, got {len(codes)}")
    if any(c < 0 for c in codes):
        raise ValueError(f"SID codes must be non-negative, got {codes}")
    return [f"<{LEVEL_LETTERS[level]}_{code}>" for level, code in enumerate(codes)]


@dataclass(frozen=True)
class SIDVocabulary:
    """Maps per-level SID codes to model token ids (layout in the module docstring).

    Attributes:
      codebook_sizes: number of codes at each level, ``(K_0, ..., K_{L-1})``.
    """

    codebook_sizes: tuple[int, ...]

    PAD_ID: ClassVar[int] = PAD_ID
    BOS_ID: ClassVar[int] = BOS_ID
    FIRST_CODE_ID: ClassVar[int] = FIRST_CODE_ID

    def __post_init__(self):
        sizes = tuple(int(s) for s in self.codebook_sizes)
        if not sizes:
            raise ValueError("SIDVocabulary needs at least one level")
        if any(s <= 0 for s in sizes):
            raise ValueError(f"codebook sizes must be positive, got {sizes}")
        too_large = [(LEVEL_LETTERS[level], s) for level, s in enumerate(sizes) if s > MAX_CODEBOOK_SIZE]
        if too_large:
            letter, size = too_large[0]
            raise ValueError(
                f"level {letter!r} needs a codebook of {size} codes, more than the {MAX_CODEBOOK_SIZE} allowed; "
                f"SID codes are small integers (e.g. <{letter}_0> to <{letter}_255>): check the index file"
            )
        object.__setattr__(self, "codebook_sizes", sizes)

    @property
    def num_levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def level_offsets(self) -> np.ndarray:
        """int32 ``[num_levels]``: token id of code 0 at each level."""
        starts = np.concatenate([[0], np.cumsum(self.codebook_sizes[:-1], dtype=np.int64)])
        return (FIRST_CODE_ID + starts).astype(np.int32)

    @property
    def vocab_size(self) -> int:
        """Total number of token ids, PAD and BOS included."""
        return FIRST_CODE_ID + sum(self.codebook_sizes)

    def level_token_range(self, level: int) -> tuple[int, int]:
        """Half-open token-id range ``[start, stop)`` owned by ``level``."""
        if not 0 <= level < self.num_levels:
            raise ValueError(f"level {level} out of range for {self.num_levels} levels")
        start = int(self.level_offsets[level])
        return start, start + self.codebook_sizes[level]

    def codes_to_tokens(self, codes: np.ndarray) -> np.ndarray:
        """Codes ``int[..., num_levels]`` -> token ids ``int32[..., num_levels]``.

        Raises:
          ValueError: the last axis is not ``num_levels`` or a code is outside
            ``[0, codebook_sizes[level])``.
        """
        codes = np.asarray(codes)
        self._check_last_axis(codes, "codes")
        sizes = np.asarray(self.codebook_sizes)
        bad = (codes < 0) | (codes >= sizes)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"SID code {int(codes[where])} at index {where} is outside its level's "
                f"codebook (sizes {self.codebook_sizes})"
            )
        return (codes + self.level_offsets).astype(np.int32)

    def tokens_to_codes(self, tokens: np.ndarray) -> np.ndarray:
        """Token ids ``int[..., num_levels]`` -> codes ``int32[..., num_levels]``.

        Raises:
          ValueError: a token at position ``l`` is not a level-``l`` code token
            (PAD, BOS and other levels' tokens included).
        """
        tokens = np.asarray(tokens)
        self._check_last_axis(tokens, "tokens")
        codes = tokens - self.level_offsets
        bad = (codes < 0) | (codes >= np.asarray(self.codebook_sizes))
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"token id {int(tokens[where])} at index {where} is not a code token of "
                f"level {where[-1]} (range {self.level_token_range(where[-1])})"
            )
        return codes.astype(np.int32)

    def _check_last_axis(self, array: np.ndarray, what: str) -> None:
        if array.ndim == 0 or array.shape[-1] != self.num_levels:
            raise ValueError(
                f"{what} must have last axis num_levels={self.num_levels}, got shape {array.shape}"
            )

    @classmethod
    def from_codes(
        cls, codes: np.ndarray, codebook_sizes: Sequence[int] | None = None
    ) -> "SIDVocabulary":
        """Vocabulary for ``codes: int[num_items, num_levels]``.

        Each level's size is ``max code + 1`` unless ``codebook_sizes`` is given,
        in which case the codes are checked to fit.
        """
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] == 0:
            raise ValueError(f"codes must be [num_items > 0, num_levels], got shape {codes.shape}")
        if codebook_sizes is None:
            if codes.min() < 0:
                raise ValueError(f"SID codes must be non-negative, found {int(codes.min())}")
            return cls(tuple(int(m) + 1 for m in codes.max(axis=0)))
        vocab = cls(tuple(codebook_sizes))
        vocab.codes_to_tokens(codes)  # raises if a code does not fit
        return vocab

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": _VOCAB_FORMAT_KIND,
            "format_version": VOCAB_FORMAT_VERSION,
            "codebook_sizes": list(self.codebook_sizes),
            "pad_id": PAD_ID,
            "bos_id": BOS_ID,
            "first_code_id": FIRST_CODE_ID,
            "vocab_size": self.vocab_size,
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any], source: str = "<json>") -> "SIDVocabulary":
        if not isinstance(payload, dict) or payload.get("kind") != _VOCAB_FORMAT_KIND:
            raise ValueError(f"{source}: not a genrec SID vocabulary file (missing kind={_VOCAB_FORMAT_KIND!r})")
        version = payload.get("format_version")
        if version != VOCAB_FORMAT_VERSION:
            raise ValueError(
                f"{source}: vocabulary format_version {version!r} is not supported "
                f"(this genrec reads version {VOCAB_FORMAT_VERSION}); re-export it with this version"
            )
        layout = (payload.get("pad_id"), payload.get("bos_id"), payload.get("first_code_id"))
        if layout != (PAD_ID, BOS_ID, FIRST_CODE_ID):
            raise ValueError(f"{source}: special-token layout {layout} differs from this genrec's "
                             f"{(PAD_ID, BOS_ID, FIRST_CODE_ID)}")
        vocab = cls(tuple(payload["codebook_sizes"]))
        if payload.get("vocab_size") != vocab.vocab_size:
            raise ValueError(f"{source}: vocab_size {payload.get('vocab_size')} does not match "
                             f"codebook_sizes {vocab.codebook_sizes} (expected {vocab.vocab_size})")
        return vocab

    def save(self, path: str | Path) -> Path:
        """Writes the vocabulary as JSON, atomically. Returns the path."""
        return write_json_atomic(path, self.to_json(), indent=2)

    @classmethod
    def load(cls, path: str | Path) -> "SIDVocabulary":
        """Reads a file written by :meth:`save`.

        Raises:
          ValueError: the file is not one :meth:`save` wrote (not UTF-8 JSON,
            truncated, a field missing or of the wrong kind): one line naming it and the fix.
        """
        path = Path(path)
        fix = "restore it from a copy, or write it again with genrec (build-sids for a dataset, train for a workdir)"
        try:
            payload = json.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text (byte {e.start}), not a genrec SID vocabulary; {fix}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg} "
                             f"(a truncated or damaged file); {fix}") from None
        try:
            return cls.from_json(payload, source=str(path))
        except (KeyError, TypeError, ValueError) as e:
            if str(e).startswith(str(path)):  # from_json's own checks name the file
                raise
            reason = f"no {e.args[0]!r} field" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
            raise ValueError(f"{path}: not a genrec SID vocabulary ({reason}); {fix}") from e
