"""Metrics as pure functions: tensors or numpy arrays in, python floats out.

One module per metric family, each checked for parity against its reference implementation
(torch-fidelity for IS/FID/KID, ``prdc`` for precision/recall/density/coverage):

- :mod:`~gancore.metrics.divergence`: ``kl_divergence``, ``js_divergence``, ``js_distance``,
  ``normalize_histogram``, ``label_histogram`` (discrete distributions, nats);
- :mod:`~gancore.metrics.inception_score`: ``inception_score``, ``inception_score_from_logits``;
- :mod:`~gancore.metrics.fid`: ``fid``, ``kid``, ``feature_statistics``, ``frechet_distance``;
- :mod:`~gancore.metrics.prdc`: ``precision_recall``, ``density_coverage``, ``compute_prdc``;
- :mod:`~gancore.metrics.fid_infinity`: ``fid_infinity`` (FID extrapolated to infinite n).

Invalid input raises ``ValueError`` naming the argument and what would be valid. Each module also
has the adapter the ``evaluate`` stage calls, ``evaluate(inputs)`` (:mod:`.inputs`), registered in
:data:`gancore.figures.METRICS`.
"""

from gancore.metrics.divergence import js_distance, js_divergence, kl_divergence, label_histogram, normalize_histogram
from gancore.metrics.fid import feature_statistics, fid, frechet_distance, kid
from gancore.metrics.inception_score import inception_score, inception_score_from_logits
from gancore.metrics.prdc import compute_prdc, density_coverage, precision_recall

__all__ = [
    "compute_prdc",
    "density_coverage",
    "feature_statistics",
    "fid",
    "frechet_distance",
    "inception_score",
    "inception_score_from_logits",
    "js_distance",
    "js_divergence",
    "kid",
    "kl_divergence",
    "label_histogram",
    "normalize_histogram",
    "precision_recall",
]
