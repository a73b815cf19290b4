"""Model configuration for the semantic-ID recommenders.

Sits between the data code (which fixes ``vocab_size`` and ``num_levels`` from
the semantic-ID codebooks) and the two model families of this package:

    genrec/vocab.py -> ModelConfig -> EncoderDecoderRecommender | DecoderOnlyRecommender

A config is a frozen, hashable dataclass, so it can be a static argument of a
jitted function. Named presets (``tiny``, ``t5_small_rec``, ``llama_small_rec``)
are the way to get standard sizes; change one field of a preset with
``dataclasses.replace(config, field=value)`` or the preset's ``**overrides``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import jax.numpy as jnp

# The token layout is owned by the data code; the model needs only PAD, BOS and
# the number of ids before the first code (level-l code c is token id
# FIRST_CODE_ID + sum(codebook_sizes[:l]) + c).
from genrec.vocab import BOS_ID, FIRST_CODE_ID, PAD_ID

__all__ = [
    "BOS_ID",
    "PAD_ID",
    "NUM_SPECIAL_TOKENS",
    "ModelConfig",
    "expected_num_params",
]

NUM_SPECIAL_TOKENS: int = FIRST_CODE_ID

Arch = Literal["encoder_decoder", "decoder_only"]
FfnActivation = Literal["geglu", "swiglu", "relu"]
AttentionLogitScale = Literal["inv_sqrt_d", "unscaled"]
Init = Literal["default", "hf_t5"]

_ARCHS = ("encoder_decoder", "decoder_only")
_FFN_ACTIVATIONS = ("geglu", "swiglu", "relu")
_ATTENTION_LOGIT_SCALES = ("inv_sqrt_d", "unscaled")
_INITS = ("default", "hf_t5")
# The Hugging Face T5 options and their defaults (today's model); encoder_decoder only.
_HF_T5_OPTION_DEFAULTS: dict[str, Any] = {
    "attention_dropout": 0.0, "ffn_dropout": 0.0, "attention_logit_scale": "inv_sqrt_d", "init": "default",
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes and numerics of one recommender model.

    Attributes:
      arch: "encoder_decoder" (T5-style) or "decoder_only" (Llama-style).
      vocab_size: number of model tokens, 2 + sum(codebook_sizes) (PAD, BOS, codes).
      num_levels: semantic-ID length L; the decoder emits L tokens per item.
      d_model: width of the residual stream.
      num_heads: attention heads per layer.
      head_dim: width of one head; num_heads * head_dim need not equal d_model.
      d_ff: hidden width of the feed-forward block.
      num_encoder_layers: encoder depth (0 for decoder_only).
      num_decoder_layers: decoder depth (the whole stack for decoder_only).
      dropout_rate: dropout on embeddings and residual branches while training.
      max_history_tokens: longest accepted history, H * L tokens; a longer input
        is a data-pipeline bug and is rejected at trace time.
      dtype: compute dtype (activations, matmuls, KV caches): float32 or bfloat16.
        Norm statistics, softmax and output logits are always float32.
      param_dtype: storage dtype of parameters; keep float32 for training.
      tie_embeddings: reuse the input embedding as the output projection.
      ffn_activation: "geglu" / "swiglu" (gated: three d_model x d_ff matrices)
        or "relu" (T5 v1.0: two matrices).
      rope_base: RoPE wavelength base (decoder_only only).
      relative_attention_num_buckets: T5 relative-position buckets
        (encoder_decoder only).
      relative_attention_max_distance: distance beyond which T5 buckets saturate.
      norm_epsilon: RMSNorm epsilon.
      fuse_qkv_projections: compute an attention layer's query, key and value
        projections of one input as one matmul against the three kernels side
        by side (keys and values of the cross-attention input likewise).
        The parameters and the checkpoint layout are the same either way, and
        so is the math; it only trades three small kernels (and their
        backward passes) for one wider one. Off by default because it made
        the train step slower (docs/benchmarks.md, "Fused Q/K/V projections:
        slower").
      attention_dropout: dropout on the attention probabilities (every
        attention: self, causal and cross) while training, as Hugging Face T5
        applies its dropout_rate there. encoder_decoder only.
      ffn_dropout: dropout on the FFN's hidden activation (after the ReLU /
        the gate product, before the down projection) while training, as
        Hugging Face T5. encoder_decoder only.
      attention_logit_scale: "inv_sqrt_d" multiplies the query by
        head_dim ** -0.5 before the logits; "unscaled" leaves them as q.k,
        as Hugging Face T5, which folds the scale into the query's init
        (``init="hf_t5"``). Not spelled "none": ``--set model.X=none`` means
        the preset's value for every ModelSpec field. encoder_decoder only.
      init: "default" (every projection Flax's LeCun normal, truncated, std
        fan_in ** -0.5; relative-position tables std head_dim ** -0.5) or
        "hf_t5", Hugging Face's ``T5PreTrainedModel._init_weights``, untruncated
        normals: q std (d_model * head_dim) ** -0.5, k and v d_model ** -0.5,
        o (num_heads * head_dim) ** -0.5, FFN inputs d_model ** -0.5, FFN
        output d_ff ** -0.5, relative-position tables d_model ** -0.5, an
        untied output projection 1.0 (the embedding is N(0, 1) either way).
        encoder_decoder only. docs/models.md, "Hugging Face T5 options".
    """

    arch: Arch
    vocab_size: int
    num_levels: int
    d_model: int
    num_heads: int
    head_dim: int
    d_ff: int
    num_encoder_layers: int
    num_decoder_layers: int
    dropout_rate: float = 0.0
    max_history_tokens: int = 1024
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    tie_embeddings: bool = True
    ffn_activation: FfnActivation = "geglu"
    rope_base: float = 10_000.0
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    norm_epsilon: float = 1e-6
    fuse_qkv_projections: bool = False
    attention_dropout: float = 0.0
    ffn_dropout: float = 0.0
    attention_logit_scale: AttentionLogitScale = "inv_sqrt_d"
    init: Init = "default"

    def __post_init__(self):
        # Canonical dtypes keep the config hashable and comparable whether the
        # caller passed jnp.bfloat16, np.dtype("bfloat16") or "bfloat16".
        object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
        object.__setattr__(self, "param_dtype", jnp.dtype(self.param_dtype))
        if self.arch not in _ARCHS:
            raise ValueError(f"ModelConfig.arch={self.arch!r}: use one of {_ARCHS}.")
        if self.ffn_activation not in _FFN_ACTIVATIONS:
            raise ValueError(
                f"ModelConfig.ffn_activation={self.ffn_activation!r}: use one of"
                f" {_FFN_ACTIVATIONS}."
            )
        if self.vocab_size <= NUM_SPECIAL_TOKENS:
            raise ValueError(
                f"ModelConfig.vocab_size={self.vocab_size}: must exceed the"
                f" {NUM_SPECIAL_TOKENS} special tokens; pass 2 + sum(codebook_sizes)."
            )
        for field in ("num_levels", "d_model", "num_heads", "head_dim", "d_ff",
                      "num_decoder_layers", "max_history_tokens"):
            if getattr(self, field) < 1:
                raise ValueError(f"ModelConfig.{field}={getattr(self, field)}: must be >= 1.")
        if self.arch == "encoder_decoder" and self.num_encoder_layers < 1:
            raise ValueError(
                "ModelConfig.num_encoder_layers must be >= 1 for arch='encoder_decoder'."
            )
        if self.arch == "decoder_only":
            if self.num_encoder_layers != 0:
                raise ValueError(
                    "ModelConfig.num_encoder_layers must be 0 for arch='decoder_only';"
                    " put the whole stack in num_decoder_layers."
                )
            if self.head_dim % 2:
                raise ValueError(
                    f"ModelConfig.head_dim={self.head_dim}: RoPE needs an even head_dim."
                )
        for field in ("dropout_rate", "attention_dropout", "ffn_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"ModelConfig.{field}={getattr(self, field)}: must be in [0, 1).")
        if self.attention_logit_scale not in _ATTENTION_LOGIT_SCALES:
            raise ValueError(
                f"ModelConfig.attention_logit_scale={self.attention_logit_scale!r}: use one of"
                f" {_ATTENTION_LOGIT_SCALES}."
            )
        if self.init not in _INITS:
            raise ValueError(f"ModelConfig.init={self.init!r}: use one of {_INITS}.")
        if self.arch == "decoder_only":
            for field, default in _HF_T5_OPTION_DEFAULTS.items():
                if getattr(self, field) != default:
                    raise ValueError(
                        f"ModelConfig.{field}={getattr(self, field)!r}: a Hugging Face T5 option, for"
                        f" arch='encoder_decoder' only; leave it at {default!r} for decoder_only."
                    )

    # ------------------------------------------------------------------ presets

    @classmethod
    def tiny(
        cls,
        vocab_size: int,
        num_levels: int,
        arch: Arch = "encoder_decoder",
        **overrides: Any,
    ) -> ModelConfig:
        """A two-layer model for unit tests: builds and runs in seconds on CPU."""
        base = cls(
            arch=arch,
            vocab_size=vocab_size,
            num_levels=num_levels,
            d_model=32,
            num_heads=4,
            head_dim=8,
            d_ff=64,
            num_encoder_layers=2 if arch == "encoder_decoder" else 0,
            num_decoder_layers=2,
            dropout_rate=0.0,
            max_history_tokens=256,
            ffn_activation="geglu" if arch == "encoder_decoder" else "swiglu",
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
        )
        return dataclasses.replace(base, **overrides)

    @classmethod
    def t5_small_rec(cls, vocab_size: int, num_levels: int, **overrides: Any) -> ModelConfig:
        """The APAO paper's T5: 4+4 layers, d_model 128, 6 heads x 64, d_ff 1024, dropout 0.1.

        The FFN is T5 v1.0's non-gated ReLU, as in the paper's Hugging Face
        T5Config; that is what gives its ~4.6M parameters: 4,590,976 with
        vocab_size=1026 (4 levels x 256 codes + PAD/BOS). A gated FFN at the same
        d_ff (``ffn_activation="geglu"``) has 5,639,552.
        """
        base = cls(
            arch="encoder_decoder",
            vocab_size=vocab_size,
            num_levels=num_levels,
            d_model=128,
            num_heads=6,
            head_dim=64,
            d_ff=1024,
            num_encoder_layers=4,
            num_decoder_layers=4,
            dropout_rate=0.1,
            max_history_tokens=1024,
            tie_embeddings=True,
            ffn_activation="relu",
        )
        return dataclasses.replace(base, **overrides)

    @classmethod
    def llama_small_rec(cls, vocab_size: int, num_levels: int, **overrides: Any) -> ModelConfig:
        """The APAO paper's Llama: 8 layers, 8 heads x 16, hidden 128, SwiGLU FFN 1024, tied.

        3,803,520 parameters with vocab_size=1026.
        """
        base = cls(
            arch="decoder_only",
            vocab_size=vocab_size,
            num_levels=num_levels,
            d_model=128,
            num_heads=8,
            head_dim=16,
            d_ff=1024,
            num_encoder_layers=0,
            num_decoder_layers=8,
            dropout_rate=0.1,
            max_history_tokens=1024,
            tie_embeddings=True,
            ffn_activation="swiglu",
        )
        return dataclasses.replace(base, **overrides)

    # --------------------------------------------------------------- properties

    @property
    def is_gated_ffn(self) -> bool:
        """Whether the FFN has a gate projection (GeGLU / SwiGLU)."""
        return self.ffn_activation in ("geglu", "swiglu")

    @property
    def attention_width(self) -> int:
        """num_heads * head_dim: width of the concatenated heads."""
        return self.num_heads * self.head_dim


def expected_num_params(config: ModelConfig) -> int:
    """Parameter count derived by hand from the config (no model is built).

    Every projection is bias-free and every RMSNorm has one scale vector of
    d_model; the tests check this formula against the built modules.
    """
    width, vocab = config.d_model, config.vocab_size
    attention = 4 * width * config.attention_width  # q, k, v, o
    ffn = (3 if config.is_gated_ffn else 2) * width * config.d_ff
    norm = width
    embeddings = vocab * width + (0 if config.tie_embeddings else width * vocab)
    if config.arch == "encoder_decoder":
        encoder_layer = attention + ffn + 2 * norm
        decoder_layer = 2 * attention + ffn + 3 * norm  # self- and cross-attention
        # One bias table for the encoder (bidirectional), one for the decoder.
        relative_bias = 2 * config.relative_attention_num_buckets * config.num_heads
        return (embeddings + relative_bias
                + config.num_encoder_layers * encoder_layer + norm
                + config.num_decoder_layers * decoder_layer + norm)
    decoder_layer = attention + ffn + 2 * norm
    return embeddings + config.num_decoder_layers * decoder_layer + norm
