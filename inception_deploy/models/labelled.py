"""Labelled images: an ImageFolder tree, or a flat folder with a CSV of labels, read in batches through a variant's
own preprocessing.

- ImageFolder (torchvision's, and ImageNet's synset folders): one subfolder per class; a class's index is the
  position of its folder's name in sorted order; its images are every file below it, in sorted order.
- A flat folder with `--labels FILE`: CSV rows `file,class`, the class an integer index; a header row is allowed.

Images are decoded batch by batch (a 50 000-image set never sits in memory); an unreadable one is skipped and listed.
`DecodedBatches` passes over a set more than once (one pass per backend, or per candidate model): a set of at most
KEEP_DECODED images is decoded once and kept, a larger one is decoded again on every pass.
`--limit N` takes the first N in round-robin order over the classes, so that a small limit still covers every class.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..core.errors import CheckFailed, InputError, first_line
from ..core.manifest import MAX_CLASSES
from .samples import image_batch, preprocessed_image
from .spec import ModelSpec

log = logging.getLogger(__name__)

KEEP_DECODED = 2000  # images kept decoded between passes (2000 x 3x299x299 float32 is about 2 GiB)
MAX_LABELS_BYTES = 256 * 2**20  # the largest CSV of labels read (ImageNet's 1.28 M training files take about 60 MB)


@dataclass
class LabelledImages:
    root: Path
    layout: str  # "imagefolder" or "csv"
    files: list[Path]
    labels: np.ndarray  # int64, one per file
    classes: list[str]  # names by index: folder names, or the indices as text for a CSV
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why): found while listing or decoding
    unlabelled: int = 0  # files of a flat folder that the CSV does not name
    option: str = "--data"  # the options that named the folder and its labels, for messages
    labels_option: str = "--labels"

    def __len__(self) -> int:
        return len(self.files)

    def describe(self) -> dict:
        return {"root": str(self.root), "layout": self.layout, "images": len(self.files), "classes": len(self.classes),
                "unlabelled": self.unlabelled}


def labelled_images(directory: str | Path, *, labels: str | Path | None = None, limit: int | None = None,
                    option: str = "--data", labels_option: str = "--labels",
                    limit_option: str = "--limit") -> LabelledImages:
    """The labelled images of `directory` (not yet decoded). InputError (exit 2) for a folder that is neither layout,
    a CSV that names no file of it or holds a bad row, or a bad --limit."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"{option} {root} is not a directory: point it at an ImageFolder tree (one folder per class) "
                         f"or a flat folder with {labels_option} FILE")
    if limit is not None and limit < 1:
        raise InputError(f"{limit_option} must be at least 1, got {limit}")
    data = (_from_csv(root, Path(labels), option, labels_option) if labels is not None
            else _from_folders(root, option, labels_option))
    data.option, data.labels_option = option, labels_option
    if limit is not None and limit < len(data.files):
        order = _round_robin(data.labels)[:limit]
        data.files = [data.files[i] for i in order]
        data.labels = data.labels[order]
    return data


def check_classes(data: LabelledImages, num_classes: int, option: str = "--data") -> None:
    """InputError naming how many images carry a class the model's head does not have."""
    outside = int((data.labels >= num_classes).sum())
    if outside:
        top = int(data.labels.max())
        raise InputError(f"{outside} image(s) of {option} {data.root} are labelled with a class the model does not "
                         f"have (up to {top}; its head has {num_classes} classes, 0..{num_classes - 1}): check the "
                         "labels, or evaluate the model they belong to")


def class_warnings(data: LabelledImages, num_classes: int) -> list[str]:
    """What an ImageFolder tree's class order may hide: fewer class folders than the head has classes (a subset of
    ImageNet's synsets is not indexed as ImageNet), or numbered folders, which sort as text ('10' before '2')."""
    if data.layout != "imagefolder":
        return []
    warnings = []
    n = len(data.classes)
    if n < num_classes:
        warnings.append(f"{data.option} {data.root} has {n} class folder(s) for a head of {num_classes} classes: each "
                        f"folder's class is its position among them (0..{n - 1}), as torchvision's ImageFolder reads "
                        "it; if they are some of the model's classes, give their indices with "
                        f"{data.labels_option} FILE (CSV rows 'folder/file,class')")
    moved = [(position, name) for position, name in enumerate(data.classes)
             if name.isdecimal() and int(name) != position]
    if moved and all(name.isdecimal() for name in data.classes):
        position, name = moved[0]
        warnings.append(f"the class folders of {data.option} {data.root} are numbers, taken in sorted text order as "
                        f"torchvision's ImageFolder does: folder '{name}' is class {position}, not {int(name)}; if the "
                        f"numbers are class indices, give them with {data.labels_option} FILE (CSV rows "
                        "'folder/file,class')")
    return warnings


def no_better_than_chance(top1: float, data: LabelledImages) -> str | None:
    """Why a top-1 on these images says nothing of the model: it is no better than always answering their most
    common label (what a model that ignores its input can reach). None otherwise."""
    share = float(np.bincount(data.labels).max() / len(data.labels)) if len(data.labels) else 0.0
    if top1 > share + 1e-9:
        return None
    return (f"top-1 {100 * top1:.1f} % is no better than always answering the most common label of {data.option} "
            f"{data.root} ({100 * share:.1f} % of its images): the labels may not match the model's classes (their "
            f"order, or a subset: see {data.labels_option}), or the weights are not the trained ones")


def file_key(path: Path) -> Path:
    """What identifies an image file across folders and links: its resolved path, or, for a link that cannot be
    resolved (a loop, a dangling chain), its own absolute path (such a file is skipped when it is read)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: Python 3.11's "Symlink loop"
        return path.absolute()


def folder_layout(directory: str | Path) -> str:
    """One rule for a folder of images given without labels (--calib, parity's and loadtest's --images): "tree" when
    its class folders hold at least as many files as its top does (a tree with a stray README or photograph at its
    top is still a tree, the strays named), else "flat" (a flat folder with a stray subfolder stays flat)."""
    root = Path(directory)
    top = [p for p in root.iterdir() if not p.name.startswith(".")] if root.is_dir() else []
    in_folders = sum(1 for d in top if d.is_dir() for f in d.rglob("*") if not _hidden(f, root) and not f.is_dir())
    files_on_top = sum(1 for p in top if not p.is_dir())
    return "tree" if in_folders and in_folders >= files_on_top else "flat"


IMAGES_CAP = 1024  # --images without a limit: at most this many decoded into memory (a 299x299 image is 1 MiB)


def image_set(spec: ModelSpec, directory: str | Path, *, limit: int | None = None,
              option: str = "--images") -> tuple[torch.Tensor, list[str], list[tuple[str, str]]]:
    """The images of a folder given without labels, through the variant's preprocessing: (batch, the files used,
    [(file, why it was skipped)]). A tree (folder_layout) gives its first `limit` readable images in round-robin
    order over its class folders, so that every class is represented; a flat folder its first `limit` readable
    ones in name order. Without a limit, at most IMAGES_CAP, said in a warning. InputError when none is readable."""
    cap = limit if limit is not None else IMAGES_CAP
    if folder_layout(directory) == "flat":
        batch, used, skipped = image_batch(spec, directory, option=option, limit=cap)
        more = sum(1 for p in Path(directory).iterdir() if not p.is_dir()) - len(used) - len(skipped)
    else:
        data = labelled_images(directory, option=option)
        skipped, arrays, used = list(data.skipped), [], []
        order = [data.files[i] for i in _round_robin(data.labels)]
        for path in order:
            if len(arrays) >= cap:
                break
            pixels, why = preprocessed_image(spec, path)
            if why:
                skipped.append((_shown(data.root, path), why))
                continue
            arrays.append(pixels)
            used.append(_shown(data.root, path))
        if not arrays:
            data.skipped = skipped
            raise no_readable_image(data)
        batch = torch.from_numpy(np.stack(arrays))
        more = len(order) - len(used) - (len(skipped) - len(data.skipped))
    if limit is None and more > 0:
        log.warning("%s %s: using the first %d of its images (at most %d are read into memory)", option, directory,
                    len(used), IMAGES_CAP)
    return batch, used, skipped


def labelled_batches(spec: ModelSpec, data: LabelledImages, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """(inputs (n, C, H, W) float32, their labels, files consumed) for every `batch` files; unreadable files are
    appended to data.skipped and left out of their batch (which may then be smaller, or, if all fail, not yielded)."""
    if batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    for start in range(0, len(data.files), batch):
        arrays, labels = [], []
        for path, label in zip(data.files[start:start + batch], data.labels[start:start + batch]):
            pixels, why = preprocessed_image(spec, path)
            if why:
                data.skipped.append((_shown(data.root, path), why))
                continue
            arrays.append(pixels)
            labels.append(label)
        consumed = len(data.files[start:start + batch])
        if arrays:
            yield np.stack(arrays), np.asarray(labels, dtype=np.int64), consumed


def no_readable_image(data: LabelledImages) -> InputError:
    """The error for a set of which not one image could be decoded (every file was listed: each one is skipped)."""
    count = f"{len(data.skipped)} {'entry' if len(data.skipped) == 1 else 'entries'} skipped"
    what = f"{count}, e.g. {data.skipped[0][0]}: {data.skipped[0][1]}" if data.skipped else "none listed"
    return InputError(f"{data.option} {data.root} holds no readable image ({what}): its files must be JPEG/PNG images")


class DecodedBatches:
    """The labelled images in decoded batches, (inputs, labels, files consumed), over as many passes as needed.

    The first pass decodes every file and lists the unreadable ones (once); a set of at most KEEP_DECODED images is
    kept from it, a larger one is decoded again on each later pass, which must then read the very same images (else
    CheckFailed: figures paired across passes would mean nothing). `images` counts the readable ones; InputError if
    there are none."""

    def __init__(self, spec: ModelSpec, data: LabelledImages, batch: int):
        self.spec, self.data, self.batch = spec, data, batch
        self.keep = len(data) <= KEEP_DECODED
        self._kept: list[tuple[np.ndarray, np.ndarray, int]] | None = None
        self._images: int | None = None  # readable images, known after the first pass
        self._unreadable: list[str] | None = None  # the files the first pass could not read

    def __len__(self) -> int:
        return len(self.data)

    @property
    def images(self) -> int:
        """The readable images (the first pass runs now if it has not yet)."""
        if self._images is None:
            for _ in self:
                pass
        return self._images

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        if self._kept is not None:
            yield from self._kept
            return
        first = self._images is None
        listed = len(self.data.skipped)  # entries before this pass: found while listing, or by the first pass
        kept, images = [], 0
        for x, y, consumed in labelled_batches(self.spec, self.data, self.batch):
            images += len(y)
            if self.keep:
                kept.append((x, y, consumed))
            yield x, y, consumed
        unreadable = [name for name, _ in self.data.skipped[listed:]]
        if first:
            if not images:
                raise no_readable_image(self.data)
            self._images, self._unreadable = images, unreadable
            self._kept = kept if self.keep else None
            return
        del self.data.skipped[listed:]  # listed on the first pass already
        if unreadable != self._unreadable:
            raise CheckFailed(f"the images of {self.data.option} {self.data.root} changed between passes (other files "
                              "readable than on the first): run again on a folder nothing writes to")


def _from_folders(root: Path, option: str, labels_option: str) -> LabelledImages:
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise InputError(f"{option} {root} has no class folders: an ImageFolder tree holds one folder per class; for a "
                         f"flat folder of images, pass {labels_option} FILE (CSV rows file,class)")
    files, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted(p for p in (root / name).rglob("*") if not p.is_dir() and not _hidden(p, root)):
            files.append(path)
            labels.append(index)
    if not files:
        raise InputError(f"{option} {root} has {len(classes)} class folder(s) but no file in any of them")
    stray = [(entry.name, "at the top of the ImageFolder tree, in no class folder: it has no label")
             for entry in sorted(root.iterdir()) if not entry.is_dir() and not entry.name.startswith(".")]
    return LabelledImages(root, "imagefolder", files, np.asarray(labels, dtype=np.int64), classes, stray)


def _from_csv(root: Path, labels_file: Path, option: str, labels_option: str) -> LabelledImages:
    text = _labels_text(labels_file, labels_option)
    files, labels, skipped = [], [], []
    seen: dict[Path, tuple[int, int]] = {}  # file -> (its class, the line that named it first)
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < 2:
            raise InputError(f"{labels_option} {labels_file} line {number} is not 'file,class': "
                             f"{','.join(row)[:60]!r}")
        name, cls = row[0].strip(), row[1].strip()
        try:
            label = int(cls)
        except ValueError:
            if number == 1 and not files and not (root / name).is_file():  # a header row names no file
                continue
            raise InputError(f"{labels_option} {labels_file} line {number}: the class '{cls[:40]}' is not an "
                             "integer index (0 for the first class of the model's head)") from None
        if not 0 <= label < MAX_CLASSES:
            raise InputError(f"{labels_option} {labels_file} line {number}: the class {label} is not an index of a "
                             f"head (0 to {MAX_CLASSES - 1})")
        path = (root / name)
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise InputError(f"{labels_option} {labels_file} line {number}: '{name[:60]}' is not a file name inside "
                             f"{root}")
        if not path.exists():
            skipped.append((name, f"named by {labels_option} but not in the folder"))
            continue
        key = file_key(path)
        if key in seen:
            first_label, first_number = seen[key]
            if first_label != label:
                raise InputError(f"{labels_option} {labels_file} line {number} gives '{name[:60]}' the class {label}, "
                                 f"line {first_number} the class {first_label}: one class per file")
            skipped.append((name, f"named again by {labels_option} (line {number}; line {first_number} counts)"))
            continue
        seen[key] = (label, number)
        files.append(path)
        labels.append(label)
    if not files:
        raise InputError(f"{labels_option} {labels_file} names no file of {option} {root}" + (
            f" ({len(skipped)} named, none found, e.g. {skipped[0][0]})" if skipped else " (it has no rows)"))
    named = {file_key(p) for p in files} | {file_key(root / n) for n, _ in skipped}
    unlabelled = sum(1 for p in root.iterdir()
                     if p.is_file() and file_key(p) not in named and not p.name.startswith("."))
    classes = [str(i) for i in range(max(labels) + 1)]
    return LabelledImages(root, "csv", files, np.asarray(labels, dtype=np.int64), classes, skipped, unlabelled)


def _labels_text(labels_file: Path, labels_option: str) -> str:
    """The CSV's text: a regular file (not a device, a pipe or a folder) of reasonable size, in UTF-8."""
    if not labels_file.is_file():
        what = ("does not exist" if not labels_file.exists() else "is a folder" if labels_file.is_dir()
                else "is not a regular file")
        raise InputError(f"{labels_option} {labels_file} {what}: pass a CSV file of file,class rows")
    if labels_file.stat().st_size > MAX_LABELS_BYTES:
        raise InputError(f"{labels_option} {labels_file} is {labels_file.stat().st_size / 2**20:.0f} MiB, more than "
                         f"a CSV of labels holds (up to {MAX_LABELS_BYTES // 2**20} MiB): pass a CSV of file,class "
                         "rows")
    try:
        return labels_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{labels_option} {labels_file} cannot be read ({first_line(err, 80)}): pass a CSV of "
                         "file,class rows") from None


def _round_robin(labels: np.ndarray) -> np.ndarray:
    """Indices in round-robin order over the classes (the first file of each class, then the second, …)."""
    rank = np.zeros(len(labels), dtype=np.int64)
    seen: dict[int, int] = {}
    for i, label in enumerate(labels.tolist()):
        rank[i] = seen.get(label, 0)
        seen[label] = rank[i] + 1
    return np.lexsort((labels, rank))


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _shown(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
