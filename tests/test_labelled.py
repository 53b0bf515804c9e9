"""Labelled images over several passes (one per backend, or per candidate int8 model): decoded once and kept when the
set is small, decoded again when it is large, with the unreadable files listed once and a set that changes between
passes refused."""

import numpy as np
import pytest
from PIL import Image

from inception_deploy.core.errors import CheckFailed, InputError
from inception_deploy.models import labelled
from inception_deploy.models.labelled import DecodedBatches, class_warnings, labelled_images, no_better_than_chance
from inception_deploy.models.registry import get_spec

SPEC = get_spec("googlenet")


@pytest.fixture
def tree(tmp_path):
    """Two classes of three small images each, and one file that is no image."""
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for k in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / cls / f"{k}.png")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    return tmp_path


@pytest.fixture
def decodes(monkeypatch):
    """How many times an image file was decoded."""
    calls = []
    real = labelled.preprocessed_image

    def counted(spec, path):
        calls.append(path)
        return real(spec, path)

    monkeypatch.setattr(labelled, "preprocessed_image", counted)
    return calls


def _passes(source, n=2):
    return [[(x.copy(), y.copy(), consumed) for x, y, consumed in source] for _ in range(n)]


@pytest.mark.parametrize("keep_decoded, decoded", [(2000, 7), (1, 14)])
def test_every_pass_yields_the_same_batches(tree, decodes, monkeypatch, keep_decoded, decoded):
    monkeypatch.setattr(labelled, "KEEP_DECODED", keep_decoded)
    data = labelled_images(tree)
    source = DecodedBatches(SPEC, data, batch=4)
    first, second = _passes(source)
    assert source.images == 6
    assert [y.tolist() for _, y, _ in first] == [[0, 0, 0, 1], [1, 1]]  # the text file left out of its batch
    assert [consumed for _, _, consumed in first] == [4, 3]
    for (x1, y1, _), (x2, y2, _) in zip(first, second, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert len(decodes) == decoded  # kept: 7 files read once; not kept: read on both passes
    assert data.skipped == [("dog/notes.txt", data.skipped[0][1])]  # listed once, whatever the passes


def test_images_counts_the_readable_ones_with_one_pass(tree, decodes):
    source = DecodedBatches(SPEC, labelled_images(tree), batch=32)
    assert source.images == 6 and len(source) == 7
    assert len(decodes) == 7
    list(source)
    assert len(decodes) == 7


@pytest.mark.parametrize("change", ["one unreadable", "one swapped", "none readable"])
def test_a_set_that_changes_between_passes_is_refused(tree, monkeypatch, change):
    monkeypatch.setattr(labelled, "KEEP_DECODED", 1)
    data = labelled_images(tree)
    source = DecodedBatches(SPEC, data, batch=4)
    list(source)
    png = (tree / "cat" / "0.png").read_bytes()
    if change == "one swapped":  # the same labels, read from other files: still another set
        (tree / "dog" / "notes.txt").write_bytes(png)
        (tree / "dog" / "0.png").write_bytes(b"truncated")
    else:
        for path in [tree / "cat" / "1.png"] if change == "one unreadable" else sorted(tree.rglob("*.png")):
            path.write_bytes(b"truncated")
    with pytest.raises(CheckFailed, match="changed between passes"):
        list(source)
    assert [name for name, _ in data.skipped] == ["dog/notes.txt"]  # the first pass's list, not this one's


def test_no_readable_image_names_the_option_and_an_example(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"\xff\xd8 not really")
    source = DecodedBatches(SPEC, labelled_images(tmp_path, option="--eval"), batch=4)
    with pytest.raises(InputError, match=r"--eval .* holds no readable image \(1 entry skipped, e\.g\. a/x\.jpg: "):
        source.images


def test_class_order_that_may_surprise_is_said(tmp_path):
    for name in ("0", "1", "10", "2"):  # sorted as text, as torchvision's ImageFolder does: 0, 1, 10, 2
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.png").write_bytes(b"")
    data = labelled_images(tmp_path, option="--eval", labels_option="--eval-labels")
    assert data.labels.tolist() == [0, 1, 2, 3]
    few, numbered = class_warnings(data, 1000)
    assert "has 4 class folder(s) for a head of 1000 classes" in few and "--eval-labels FILE" in few
    assert "folder '10' is class 2, not 10" in numbered
    assert class_warnings(data, 4) == [numbered]
    renamed = tmp_path / "renamed"
    for name in ("cat", "dog"):
        (renamed / name).mkdir(parents=True)
        (renamed / name / "a.png").write_bytes(b"")
    assert class_warnings(labelled_images(renamed), 2) == []
    labels = tmp_path / "labels.csv"
    labels.write_text("10/a.png,10\n2/a.png,2\n")
    assert class_warnings(labelled_images(tmp_path, labels=labels), 1000) == []  # a CSV says what it means


def _flat(tmp_path, names=("a.png", "b.png")):
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in names:
        Image.new("RGB", (8, 8)).save(flat / name)
    return flat


def test_a_labels_file_that_is_no_regular_file_is_refused_unread(tmp_path):
    flat = _flat(tmp_path)
    for path, why in (("/dev/zero", "is not a regular file"), (str(flat), "is a folder"),
                      (str(tmp_path / "none.csv"), "does not exist")):
        with pytest.raises(InputError, match=f"--labels {path} {why}: pass a CSV file"):
            labelled_images(flat, labels=path)


def test_a_file_named_twice_counts_once_and_two_classes_for_one_file_are_refused(tmp_path):
    flat = _flat(tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("a.png,0\nb.png,1\na.png,0\n")
    data = labelled_images(flat, labels=labels)
    assert [p.name for p in data.files] == ["a.png", "b.png"] and data.labels.tolist() == [0, 1]
    assert data.skipped == [("a.png", "named again by --labels (line 3; line 1 counts)")]
    labels.write_text("a.png,0\nb.png,1\n./a.png,2\n")
    with pytest.raises(InputError, match=r"line 3 gives '\./a\.png' the class 2, line 1 the class 0: one class per"):
        labelled_images(flat, labels=labels)


def test_only_a_first_row_that_names_no_file_is_a_header(tmp_path):
    flat = _flat(tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,class\na.png,0\nb.png,1\n")
    assert len(labelled_images(flat, labels=labels)) == 2
    labels.write_text("a.png,1.0\nb.png,1\n")
    with pytest.raises(InputError, match=r"line 1: the class '1\.0' is not an integer index"):
        labelled_images(flat, labels=labels)


def test_a_file_at_the_top_of_a_tree_is_listed_as_having_no_label(tree):
    Image.new("RGB", (8, 8)).save(tree / "stray.png")
    data = labelled_images(tree)
    assert len(data) == 7 and data.skipped == [("stray.png", data.skipped[0][1])]
    assert "in no class folder" in data.skipped[0][1]


def test_a_top1_no_better_than_the_most_common_label_is_named(tree):
    data = labelled_images(tree)  # 3 cat, 4 dog files (the text file is labelled too): dog is 4/7
    assert no_better_than_chance(4 / 7, data).startswith("top-1 57.1 % is no better than always answering the most "
                                                          "common label")
    assert no_better_than_chance(5 / 7, data) is None


@pytest.mark.parametrize("stray", ["stray.png", "README.txt"])
def test_a_tree_with_a_stray_file_at_its_top_is_read_as_a_tree_for_calibration(tree, stray):
    """One rule for a folder given without labels (--calib, --images): class folders holding at least as many files
    as its top make a tree, whatever stray file sits at the top; it is named as skipped, never calibrated on alone."""
    from inception_deploy.export.quantize import calibration_inputs
    from inception_deploy.models.labelled import folder_layout

    Image.new("RGB", (8, 8)).save(tree / stray, format="PNG")
    assert folder_layout(tree) == "tree"
    calibration = calibration_inputs(SPEC, tree, 4, synthetic=False)
    assert calibration.batch.shape[0] == 4 and stray not in calibration.files
    assert {f.split("/")[0] for f in calibration.files} == {"cat", "dog"}  # round robin over the classes
    assert (stray, "at the top of the ImageFolder tree, in no class folder: it has no label") in calibration.skipped


def test_a_flat_folder_with_a_stray_subfolder_stays_flat(tmp_path):
    from inception_deploy.export.quantize import calibration_inputs
    from inception_deploy.models.labelled import folder_layout

    for k in range(3):
        Image.new("RGB", (40, 40), (k, 0, 0)).save(tmp_path / f"{k}.jpg")
    (tmp_path / "thumbs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "thumbs" / "a.jpg")
    assert folder_layout(tmp_path) == "flat"
    calibration = calibration_inputs(SPEC, tmp_path, 64, synthetic=False)
    assert calibration.files == ["0.jpg", "1.jpg", "2.jpg"] and calibration.skipped[0][0] == "thumbs"
    assert "calibrated on 3 image(s)" in calibration.shortfall() and "fewer than the 64 asked for" in \
        calibration.shortfall()


def test_a_symlink_loop_among_labelled_images_is_skipped_not_a_crash(tree, tmp_path):
    """A link that points at itself, in a tree and named by a CSV: listed as skipped wherever files are compared."""
    from inception_deploy.export.budget import shared_images
    from inception_deploy.export.quantize import Calibration
    from inception_deploy.models.labelled import file_key

    (tree / "cat" / "loop.png").symlink_to(tree / "cat" / "loop.png")
    data = labelled_images(tree)
    assert file_key(tree / "cat" / "loop.png") == tree / "cat" / "loop.png"
    calibration = Calibration(np.zeros((1, 3, 8, 8), np.float32), str(tree), ["cat/0.png"], [], False)
    assert shared_images(calibration, DecodedBatches(SPEC, data, batch=4)) == 1  # compared, the loop among them
    source = DecodedBatches(SPEC, data, batch=4)
    assert source.images == 6 and any(name == "cat/loop.png" for name, _ in data.skipped)
    (tree / "labels.csv").write_text("cat/0.png,0\ncat/loop.png,0\n")
    flat = labelled_images(tree, labels=tree / "labels.csv")
    assert [p.name for p in flat.files] == ["0.png"] and flat.skipped[0][0] == "cat/loop.png"
