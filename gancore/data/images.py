"""Image data sets: mnist, fashion_mnist, cifar10 (torchvision), stacked_mnist, image_folder.

Everything is built as uint8 ``[N, C, H, W]`` tensors (the prepared-data storage) with seeded,
vectorised index selection, so one seed and one set of parameters give byte-identical tensors.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from gancore import progress
from gancore.config import ParamsError
from gancore.data.prepared import PreparedData
from gancore.data.raw import load_torchvision
from gancore.errors import DataError
from gancore.seeds import generator

if TYPE_CHECKING:  # pragma: no cover
    from gancore.config import Params
    from gancore.datasets import DatasetSpec
    from gancore.layout import Layout

IMAGE_RANGE = [-1.0, 1.0]
STACKED_N_TRAIN = 128_000  # PacGAN's Stacked MNIST training set
STACKED_N_TEST = 10_000
RESIZE_CHUNK = 4096
# Below this many images, decoding in worker processes costs more than it saves.
PARALLEL_DECODE_MIN = 2000


def split_tensors(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision MNIST-family or CIFAR dataset as (uint8 [N, C, H, W], int64 [N])."""
    data = ds.data
    if isinstance(data, np.ndarray):  # CIFAR keeps [N, H, W, C] numpy
        images = torch.from_numpy(data).permute(0, 3, 1, 2)
    else:  # MNIST family keeps [N, H, W] uint8 tensors
        images = data.unsqueeze(1)
    return images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64)


def subset_indices(available: int, n: int | None, gen: torch.Generator, key: str) -> torch.Tensor | None:
    """Sorted indices of a seeded random subset of size ``n`` (None: keep all)."""
    if n is None:
        return None
    if n > available:
        raise ParamsError([(key, f"{n} exceeds the {available} examples available; use at most {available} or null for all")])
    return torch.randperm(available, generator=gen)[:n].sort().values


def resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Square uint8 images resized to ``size`` (bilinear, antialiased), in chunks to bound memory."""
    if size is None or images.shape[-2:] == (size, size):
        return images
    chunks = images.split(RESIZE_CHUNK)
    out = []
    with progress.bar(len(chunks), "resize images", "chunk", show=len(chunks) >= 8) as bar:
        for c in chunks:
            out.append(v2.functional.resize(c, [size, size], antialias=True))
            bar.update(1)
    return torch.cat(out)


def _labelled_modes(name: str, classes: list[str]) -> dict[str, Any]:
    return {"count": len(classes), "definition": f"the {len(classes)} classes of {name}", "labels": list(classes)}


def prepare_torchvision(name: str, raw: Path, seed: int, n_train: int | None, n_test: int | None, size: int | None) -> PreparedData:
    """mnist, fashion_mnist or cifar10: train split -> train, test split -> test, labels = class ids."""
    train_ds, test_ds, sha = load_torchvision(name, raw)
    parts = []
    for split, ds, n, key in (("train", train_ds, n_train, "data.n_train"), ("test", test_ds, n_test, "data.n_test")):
        images, labels = split_tensors(ds)
        idx = subset_indices(len(images), n, generator(seed, f"{split}_subset"), key)
        if idx is not None:
            images, labels = images[idx], labels[idx]
        parts.append((resize(images, size), labels))
    (train, train_labels), (test, test_labels) = parts
    meta = {"value_range": IMAGE_RANGE, "modes": _labelled_modes(name, train_ds.classes), "raw_sha256": sha}
    return PreparedData(meta, train, test, train_labels, test_labels)


def stack_digits(digits: torch.Tensor, labels: torch.Tensor, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` Stacked-MNIST images: channel c holds digit ``digits[i_c]`` for three independent uniform
    indices; label ``d0*100 + d1*10 + d2``. ``digits`` is [M, H, W] -> images [n, 3, H, W]."""
    idx = torch.randint(0, len(digits), (n, 3), generator=gen)
    return digits[idx], labels[idx] @ torch.tensor([100, 10, 1])


def prepare_stacked_mnist(raw: Path, seed: int, n_train: int | None, n_test: int | None, size: int | None) -> PreparedData:
    train_ds, test_ds, sha = load_torchvision("stacked_mnist", raw)  # MNIST's files
    out = []
    for split, ds, n in (("train", train_ds, n_train or STACKED_N_TRAIN), ("test", test_ds, n_test or STACKED_N_TEST)):
        digits, labels = split_tensors(ds)
        # Resizing acts on each channel alone, so resizing the source digits once equals resizing
        # every stacked image, at a fraction of the cost when n is large.
        out.append(stack_digits(resize(digits, size)[:, 0], labels, n, generator(seed, f"stacked_{split}")))
    (train, train_labels), (test, test_labels) = out
    meta = {
        "value_range": IMAGE_RANGE,
        "modes": {
            "count": 1000,
            "definition": "digit triple (d0, d1, d2) of the R, G, B channels, each an independent uniformly drawn "
            "MNIST digit (train: MNIST train split, test: MNIST test split); label d0*100 + d1*10 + d2",
        },
        "raw_sha256": sha,
    }
    return PreparedData(meta, train, test, train_labels, test_labels)


# The builders the data set registry names (gancore.datasets): (spec, params, layout) -> data.
def build_torchvision(spec: DatasetSpec, params: Params, layout: Layout) -> PreparedData:
    d = params.data
    return prepare_torchvision(spec.name, layout.raw, params.seed, d.n_train, d.n_test, d.image_size)


def build_stacked_mnist(spec: DatasetSpec, params: Params, layout: Layout) -> PreparedData:
    d = params.data
    return prepare_stacked_mnist(layout.raw, params.seed, d.n_train, d.n_test, d.image_size)


def build_image_folder(spec: DatasetSpec, params: Params, layout: Layout) -> PreparedData:
    d = params.data
    assert d.path is not None and d.image_size is not None  # validated with the parameters
    return prepare_image_folder(d.path, params.seed, d.n_train, d.n_test, d.image_size, d.on_bad_image)


# -- image_folder ---------------------------------------------------------------------------------


def _hidden(name: str) -> bool:
    # .DS_Store, macOS's ._name resource forks, .ipynb_checkpoints/, .thumbnails/: no data
    return name.startswith(".")


def scan_folder(root: Path) -> tuple[list[Path], list[int] | None, list[str] | None]:
    """Image files, their class ids and the class names (None for a flat folder).

    A folder whose images sit in sub-folders is read as torchvision's ImageFolder (one class per
    sub-folder); a folder of images is one unlabelled set. Both at once is ambiguous and refused.
    """
    if not root.is_dir():
        raise DataError(f"data.path {root} is not a folder; point it at a folder of images")
    loose = sorted(p for p in root.iterdir() if _visible_image(p, root))
    class_dirs = sorted(
        d.name for d in root.iterdir() if d.is_dir() and not _hidden(d.name) and any(_visible_image(p, d) for p in d.rglob("*"))
    )
    if loose and class_dirs:
        raise DataError(
            f"{root} holds images both directly ({loose[0].name}, ...) and in sub-folders ({', '.join(class_dirs[:3])}, ...); "
            "use either a flat folder of images or one sub-folder per class"
        )
    if loose:
        return loose, None, None
    if not class_dirs:
        raise DataError(f"no images in {root} (looked for {', '.join(IMG_EXTENSIONS)})")
    # torchvision's ImageFolder order (classes sorted, each walked sorted), over the class folders
    # that do hold images.
    files, targets = [], []
    for index, name in enumerate(class_dirs):
        found = _walk_images(root / name, root)
        files += found
        targets += [index] * len(found)
    return files, targets, class_dirs


def _walk_images(folder: Path, root: Path) -> list[Path]:
    """The visible images under ``folder``, symlinked folders followed (as torchvision's
    ``make_dataset``) but each real folder read once: a link back to a parent (``cat/loop -> ..``)
    multiplied its images about 40 times, until the path grew too long."""
    seen: set[tuple[int, int]] = set()
    visited: list[tuple[str, list[str]]] = []
    for here, dirs, names in os.walk(folder, followlinks=True):  # top-down: pruning stops the descent
        info = os.stat(here)
        if (info.st_dev, info.st_ino) in seen:
            dirs.clear()
            continue
        seen.add((info.st_dev, info.st_ino))
        dirs.sort()  # the first alias of a linked folder reached is kept: the same one on every filesystem
        visited.append((here, names))
    return [path for here, names in sorted(visited) for name in sorted(names) if _visible_image(path := Path(here) / name, root)]


def _visible_image(path: Path, root: Path) -> bool:
    """An image file none of whose path components below ``root`` is hidden."""
    return path.suffix.lower() in IMG_EXTENSIONS and not any(_hidden(part) for part in path.relative_to(root).parts) and path.is_file()


def load_rgb(path: str | Path) -> Any:
    """An image file as an 8-bit RGB PIL image, whatever its mode: 16-bit greyscale scaled to 8
    bits (PIL's own convert would clip it to white), palette images through their colours,
    transparency composited over black (the model range's -1), turned upright by its EXIF
    orientation (a phone's photo is stored sideways). Integer images are scaled by a fixed depth,
    16 bits unless their values exceed it, never by their own maximum, which stretched each
    image's contrast on its own (a dark 16-bit PGM came out white)."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        opened.load()
        img: Image.Image = ImageOps.exif_transpose(opened)
        if img.mode.startswith("I;16") or img.mode == "I":
            depth = 65535.0 if img.mode.startswith("I;16") or float(np.asarray(img).max()) <= 65535 else 2.0**31 - 1
            img = Image.fromarray(np.round(np.asarray(img, dtype=np.float64) * (255.0 / depth)).clip(0, 255).astype(np.uint8), "L")
        elif img.mode == "F":
            img = Image.fromarray((np.asarray(img, dtype=np.float64).clip(0, 1) * 255).round().astype(np.uint8), "L")
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
            rgba = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
        return img.convert("RGB")


class _Files(torch.utils.data.Dataset):
    """Decoded images, or the reason a file could not be decoded (collected, not raised, so that
    every bad file of a folder is named at once)."""

    def __init__(self, files: list[Path], size: int):
        self.files = files
        # Resize the shorter side, then crop the centre: the aspect ratio is kept, borders go.
        self.transform = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size), v2.PILToTensor()])
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        from PIL import Image

        try:
            return self.transform(load_rgb(self.files[i])), ""
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # PIL's errors for damaged or huge files
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), f"{type(exc).__name__}: {exc}"


def decode(files: list[Path], size: int) -> tuple[torch.Tensor, dict[int, str]]:
    """uint8 [N, 3, size, size] and ``{index: reason}`` for the files that could not be decoded
    (their rows are zeros); files decode in worker processes when there are many."""
    if not files:
        return torch.empty(0, 3, size, size, dtype=torch.uint8), {}
    workers = min(8, os.cpu_count() or 1) if len(files) >= PARALLEL_DECODE_MIN else 0
    loader = torch.utils.data.DataLoader(_Files(files, size), batch_size=256, num_workers=workers, collate_fn=_collate)
    images: list[torch.Tensor] = []
    bad: dict[int, str] = {}
    offset = 0
    with progress.bar(len(files), "decode images", "image", show=len(files) >= PARALLEL_DECODE_MIN) as bar:
        for batch, reasons in loader:
            bad.update({offset + j: reason for j, reason in enumerate(reasons) if reason})
            images.append(batch)
            offset += len(batch)
            bar.update(len(batch))
    return torch.cat(images), bad


def _collate(items: list[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, list[str]]:
    return torch.stack([x for x, _ in items]), [r for _, r in items]


def bad_images_message(root: Path, bad: dict[Path, str], limit: int = 10) -> str:
    shown = "; ".join(f"{path.relative_to(root)} ({reason})" for path, reason in list(bad.items())[:limit])
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"{len(bad)} image(s) in {root} cannot be decoded: {shown}{more}"


def folder_digest(root: Path, files: list[Path]) -> str:
    """One sha256 over (relative path, file sha256) of every image: the identity of the source."""
    total = hashlib.sha256()
    for path in files:
        total.update(os.fsencode(path.relative_to(root).as_posix()) + b"\0")  # names need not be UTF-8
        total.update(hashlib.sha256(path.read_bytes()).digest())
    return total.hexdigest()


def _split(n: int, n_test: int, labels: list[int] | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(test, train) indices, sorted. Class folders are split class by class, in proportion
    (largest remainders), each class keeping at least one training image: a random split of the
    whole left a class of one image out of training, or a class of 20 out of the test set."""
    perm = torch.randperm(n, generator=generator(seed, "folder_split"))
    if labels is None:
        return perm[:n_test].sort().values, perm[n_test:].sort().values
    label_of = torch.tensor(labels, dtype=torch.int64)[perm]
    members = [perm[label_of == c] for c in range(int(label_of.max()) + 1)]
    share = [n_test * len(m) / n for m in members]
    take = [min(int(q), max(len(m) - 1, 0)) for q, m in zip(share, members)]
    by_remainder = sorted(range(len(members)), key=lambda c: share[c] - int(share[c]), reverse=True)
    for c in by_remainder:
        if sum(take) >= n_test:
            break
        if take[c] < len(members[c]) - 1:
            take[c] += 1
    # Every class of two images or more keeps one test image, when the split has room for one per
    # class: rounded down to none, a small class had no held-out image, its reference share was 0,
    # and the diagnosis could not see it missing (found by a review: 12 classes of 400 down to 2).
    small = [c for c, m in enumerate(members) if len(m) >= 2 and take[c] == 0]
    if small and sum(1 for m in members if len(m) >= 2) <= n_test:
        for c in small:
            take[c] = 1
        while sum(take) > n_test:
            take[max(range(len(take)), key=lambda c: (take[c], -c))] -= 1
    if not sum(take):
        raise DataError("every class folder holds a single image: none can be held out for the test split; add images")
    test = torch.cat([m[:k] for m, k in zip(members, take)])
    train = torch.cat([m[k:] for m, k in zip(members, take)])
    return test.sort().values, train.sort().values


def _without_copies_of(
    train: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The test images that are no exact copy of a training image (as decoded at the prepared
    size). A folder holding files twice put copies on both sides of the split: held-out images
    then sat on training images, and 2,500 training images returned verbatim passed the copy test
    (C_T -1.1; found by a review). Meehan et al.'s test needs held-out data disjoint from training."""
    seen = {hashlib.sha1(image.numpy().tobytes()).digest() for image in train}
    keep = torch.tensor([hashlib.sha1(image.numpy().tobytes()).digest() not in seen for image in test], dtype=torch.bool)
    dropped = int((~keep).sum())
    if not dropped:
        return test, test_labels
    if dropped == len(test):  # nothing would be left to score against: kept, and said
        warnings.warn(
            f"every one of the {len(test)} test images is a copy of a training image (files held twice?); the copy test cannot tell "
            "copying from fresh samples on this data",
            stacklevel=3,
        )
        return test, test_labels
    emptied = []
    if test_labels is not None:  # classes whose every test image was a copy: no reference share left
        emptied = sorted(set(test_labels.tolist()) - set(test_labels[keep].tolist()))
    warnings.warn(
        f"{dropped} of {len(test)} test images are exact copies of training images (files held twice?); left out of the test split, "
        "which must be disjoint from training for the copy test"
        + (
            f"; class(es) {', '.join(map(str, emptied))} now have no test image, and the diagnosis cannot see them missing"
            if emptied
            else ""
        ),
        stacklevel=3,
    )
    return test[keep], None if test_labels is None else test_labels[keep]


def prepare_image_folder(
    path: str, seed: int, n_train: int | None, n_test: int | None, size: int, on_bad_image: str = "fail"
) -> PreparedData:
    """A folder of images as prepared data. Files that cannot be decoded fail the stage, all named
    at once (``on_bad_image="fail"``), or are left out with a warning naming them (``"skip"``)."""
    root = Path(path).expanduser()
    files, labels, classes = scan_folder(root)
    n = len(files)
    n_test = n_test or max(1, round(0.1 * n))
    if n_test >= n:
        raise ParamsError([("data.n_test", f"{n_test} leaves no training images out of the {n} in {root}; use fewer")])
    test_idx, train_idx = _split(n, n_test, labels, seed)
    sub = subset_indices(len(train_idx), n_train, generator(seed, "train_subset"), "data.n_train")
    if sub is not None:
        train_idx = train_idx[sub]
    train_labels = test_labels = None
    if labels is not None:
        label_tensor = torch.tensor(labels, dtype=torch.int64)
        train_labels, test_labels = label_tensor[train_idx], label_tensor[test_idx]
    train, bad_train = decode([files[i] for i in train_idx], size)
    test, bad_test = decode([files[i] for i in test_idx], size)
    bad = {files[int(train_idx[i])]: r for i, r in bad_train.items()} | {files[int(test_idx[i])]: r for i, r in bad_test.items()}
    if bad:
        message = bad_images_message(root, bad)
        if on_bad_image != "skip":
            raise DataError(f"{message}. Remove or replace them, or set data.on_bad_image=skip to leave them out")
        warnings.warn(f"{message}; left out (data.on_bad_image=skip)", stacklevel=2)
        keep_train = torch.tensor([i not in bad_train for i in range(len(train))], dtype=torch.bool)
        keep_test = torch.tensor([i not in bad_test for i in range(len(test))], dtype=torch.bool)
        train, test = train[keep_train], test[keep_test]
        if train_labels is not None and test_labels is not None:
            train_labels, test_labels = train_labels[keep_train], test_labels[keep_test]
        if not len(train) or not len(test):
            raise DataError(f"{message}: no decodable images left for the {'training' if not len(train) else 'test'} set")
    test, test_labels = _without_copies_of(train, test, test_labels)
    if classes is None:
        modes = {"count": None, "definition": f"unlabelled folder of images ({root.name}): modes unknown"}
    else:
        modes = _labelled_modes(root.name, classes)
    meta = {
        "value_range": IMAGE_RANGE,
        "modes": modes,
        # The images live outside layout.raw; their identity is recorded under "source" instead.
        "raw_sha256": {},
        "source": {"path": str(root.resolve()), "files": n, "sha256": folder_digest(root, files)} | ({"skipped": len(bad)} if bad else {}),
    }
    return PreparedData(meta, train, test, train_labels, test_labels)
