"""Classifiers that give p(y|x) and a feature embedding, for the Inception Score and its kin.

``load_classifier(name, layout, device)`` returns a :class:`Classifier`, loaded by the entry
``name`` of :data:`gancore.classifier_choices.REGISTRY` (``gan classifiers`` lists them):

- ``domain``: the data set's own classifier (the "MNIST score" protocol). For ring8/grid25 the
  exact Gaussian posterior over the mixture centres; for labelled image sets a small CNN trained
  during ``gan prepare`` (``data/prepared/classifier.pt``); for stacked_mnist a per-channel digit
  CNN whose 1000-way probabilities are the outer product of the three channels' 10-way ones.
- ``inception``: torchvision's ImageNet Inception-v3 (1000 classes, 2048-D pool features). Its
  scores are not comparable with published ones.
- ``inception_tf``: torch-fidelity's port of the TF inception-2015-12-05 graph (1008 unbiased
  logits, 2048-D pool3), the protocol behind published Inception Scores and FIDs.

``predict(x)`` takes a float batch in model range (``[B, *shape]``) and returns probabilities
(float64 ``[B, K]``, rows summing to 1) and features (float32 ``[B, F]``). :func:`classify` runs it
over any number of examples in batches, without gradients. On CUDA the networks run under bf16 autocast with
channels_last images, except ``inception_tf``, whose point is parity with the TF reference numbers;
softmax is always taken in float64 afterwards so that the KL terms of the score are not rounded.
"""

from __future__ import annotations

import torch

from gancore.classifier_choices import REGISTRY
from gancore.classifiers.base import Classifier, classify
from gancore.errors import EvaluationError
from gancore.names import CLASSIFIERS


def load_classifier(name: str, layout, device: str | torch.device = "cpu") -> Classifier:
    """The classifier ``name`` (one of :data:`CLASSIFIERS`) on ``device``.

    ``domain`` reads ``layout.prepared`` (meta.json, classifier.pt); the Inception networks read
    their weights from torch hub's cache and download them there when missing.
    """
    spec = REGISTRY.get(name)
    if spec is None:
        raise EvaluationError(f"unknown classifier {name!r}; choose one of {', '.join(CLASSIFIERS)}")
    return spec.loader()(layout).to(device)


__all__ = ["CLASSIFIERS", "Classifier", "classify", "load_classifier"]
