"""Serving: the public :class:`~serving.recommender.Recommender`, the offline
batch job (:mod:`serving.batch_job`) and the ``genrec`` command (:mod:`serving.cli`).

Where it sits: checkpoint -> index -> decode -> **serve**. ``Recommender`` and
``Recommendations`` are imported lazily, so ``genrec --help`` does not load JAX.
"""

from __future__ import annotations

__all__ = ["Recommendations", "Recommender"]


def __getattr__(name: str):
    if name in __all__:
        from serving import recommender

        return getattr(recommender, name)
    raise AttributeError(f"module 'serving' has no attribute {name!r}")
