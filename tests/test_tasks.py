"""Tests for growenv.data.tasks and growenv.data.cifar: real numbers, determinism, layouts,
errors."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from growenv.data.cifar import (
    ARCHIVE_NAME,
    BATCH_DIR,
    CIFAR_URL,
    augment,
    crop_and_flip,
    load_cifar10,
    sample_augment_params,
)
from growenv.data.tasks import (
    TASK_NAMES,
    Split,
    Task,
    TeacherNet,
    TeacherStudentDistribution,
    cifar10,
    digits,
    held_out_teachers,
    make_task,
    multi_sin,
    teacher_student,
)

SUBSET = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-subset"
needs_subset = pytest.mark.skipif(not SUBSET.is_dir(), reason=f"no CIFAR-10 subset at {SUBSET}")

SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717

SMALL = {"n_train": 64, "n_stats": 32, "n_val": 32, "n_test": 64}


def assert_tasks_equal(a: Task, b: Task) -> None:
    for name in ("train", "stats", "val", "test"):
        assert torch.equal(getattr(a, name).x, getattr(b, name).x), name
        assert torch.equal(getattr(a, name).y, getattr(b, name).y), name


# --------------------------------------------------------------------------- Task / Split


def test_split_rejects_length_mismatch():
    with pytest.raises(ValueError, match="3 inputs but 2 targets"):
        Split(torch.zeros(3, 2), torch.zeros(2))


def test_task_to_and_flattened_copy_tensors():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    split = Split(x, torch.tensor([0, 1]))
    task = Task("t", "cross_entropy", (3, 4, 4), 2, split, split, split, split)
    assert task.in_features == 48 and task.is_classification
    flat = task.flattened()
    assert flat.input_shape == (48,) and flat.info["image_shape"] == (3, 4, 4)
    assert torch.equal(flat.train.x[1], x[1].reshape(-1))
    assert task.input_shape == (3, 4, 4) and "image_shape" not in task.info
    moved = teacher_student(**SMALL).to("cpu")
    original = teacher_student(**SMALL)
    assert moved.teacher is not original.teacher
    assert_tasks_equal(moved, original)
    with pytest.raises(ValueError, match="loss"):
        Task("t", "hinge", (2,), 1, split, split, split, split)


# --------------------------------------------------------------------------- teacher-student


def numpy_teacher(teacher: TeacherNet, x: np.ndarray) -> np.ndarray:
    """Independent float64 forward pass from the teacher's weights (SELU only)."""

    def lin(layer, h):
        return h @ layer.weight.double().numpy().T + layer.bias.double().numpy()

    def selu(z):
        return SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0)))

    h = x
    for i, layer in enumerate(teacher.hidden):
        z = lin(layer, h)
        if i == len(teacher.hidden) - 1 and teacher.skip is not None:
            z = z + lin(teacher.skip, x)
        h = selu(z)
    return lin(teacher.output, h)


def test_default_teacher_has_4701_parameters_and_documented_sizes():
    task = teacher_student()
    t = task.teacher
    assert sum(p.numel() for p in t.parameters()) == 4701 == task.info["n_params"]
    assert [tuple(layer.weight.shape) for layer in t.hidden] == [(50, 20), (50, 50)]
    assert tuple(t.skip.weight.shape) == (50, 20) and tuple(t.output.weight.shape) == (1, 50)
    assert [len(s) for s in task.splits().values()] == [2048, 1024, 1024, 2048]
    assert task.loss == "mse" and task.input_shape == (20,) and task.out_features == 1
    assert task.train.x.dtype == torch.float32 and task.train.y.shape == (2048, 1)
    assert not any(p.requires_grad for p in t.parameters())


def test_teacher_parameter_counts_for_other_shapes():
    def count(**kw):
        return teacher_student(**kw, **SMALL).info["n_params"]

    assert count(skip=False) == 4701 - (20 * 50 + 50)
    assert count(hidden=(30,)) == 20 * 30 + 30 + 30 + 1  # no skip with a single hidden state
    deep = (20 * 10 + 10) + (10 * 20 + 20) + (20 * 30 + 30) + (20 * 30 + 30) + (30 * 2 + 2)
    assert count(hidden=(10, 20, 30), out_features=2) == deep


def test_inputs_are_uniform_on_the_cube():
    x = teacher_student().train.x
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert abs(x.mean()) < 0.02 and abs(x.var() - 1 / 3) < 0.01


@pytest.mark.parametrize("hidden", [(50, 50), (7,), (9, 5, 11)])
def test_teacher_matches_float64_recomputation(hidden):
    task = teacher_student(seed=3, hidden=hidden, **SMALL)
    x = task.test.x[:10]
    expected = numpy_teacher(task.teacher, x.double().numpy())
    np.testing.assert_allclose(task.teacher(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    # without noise the stored targets are the teacher's outputs
    np.testing.assert_allclose(task.test.y[:10].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(task.train.y.numpy(), task.teacher(task.train.x).numpy())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_teacher_targets_have_unit_variance(seed):
    y = teacher_student(seed=seed).test.y
    assert abs(y.mean()) < 0.1 and 0.9 < y.std() < 1.1


def test_teacher_student_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = teacher_student(seed=5), teacher_student(seed=5), teacher_student(seed=6)
    assert torch.equal(state, torch.random.get_rng_state())
    assert_tasks_equal(a, b)
    assert torch.equal(a.teacher.output.weight, b.teacher.output.weight)
    assert not torch.equal(a.train.x, c.train.x)
    assert not torch.equal(a.teacher.hidden[0].weight, c.teacher.hidden[0].weight)


def test_split_sizes_do_not_change_teacher_or_test_set():
    a = teacher_student(seed=2, n_train=100)
    b = teacher_student(seed=2, n_train=300)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)
    assert torch.equal(a.teacher.hidden[1].weight, b.teacher.hidden[1].weight)
    for name in ("stats", "val", "test"):  # each split is its own draw
        assert not torch.equal(a.train.x[:10], getattr(a, name).x[:10]), name


def test_noise_on_train_stats_val_but_not_test():
    task = teacher_student(seed=1, noise_std=0.5)
    for name in ("train", "stats", "val"):
        s = getattr(task, name)
        resid = s.y - task.teacher(s.x)
        assert 0.45 < resid.std() < 0.55, name
    assert torch.equal(task.test.y, task.teacher(task.test.x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_train": 0}, "n_train"),
        ({"n_test": -3}, "n_test"),
        ({"hidden": (50, 0)}, r"hidden\[1\]"),
        ({"hidden": ()}, "hidden"),
        ({"in_features": 0}, "in_features"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"activation": "swish"}, "activation"),
        ({"seed": -1}, "seed"),
    ],
)
def test_teacher_student_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        teacher_student(**kwargs)


# --------------------------------------------------------------------------- distribution


def test_distribution_samples_are_deterministic_and_in_range():
    dist = TeacherStudentDistribution(depth=(1, 3), width=(10, 80), seeds=range(100, 200))
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    depths = set()
    for _ in range(3):
        a, b = dist.sample(rng_a, **SMALL), dist.sample(rng_b, **SMALL)
        assert_tasks_equal(a, b)
        assert a.info["seed"] in range(100, 200)
        assert all(10 <= w <= 80 for w in a.info["hidden"])
        depths.add(len(a.info["hidden"]))
        assert len(a.train) == 64
    assert depths == {1, 2, 3}


def test_distribution_default_and_overrides():
    task = TeacherStudentDistribution().sample(np.random.default_rng(0), n_train=16)
    assert len(task.info["hidden"]) == 2 and len(task.train) == 16 and task.in_features == 20
    with pytest.raises(TypeError, match="n_epochs"):
        TeacherStudentDistribution().sample(np.random.default_rng(0), n_epochs=3)
    with pytest.raises(ValueError, match="width"):
        TeacherStudentDistribution(width=(20, 10))


def test_held_out_teachers_disjoint_from_training_seeds():
    dist = TeacherStudentDistribution()
    held = dist.held_out_teachers(4, **SMALL)
    seeds = [t.info["seed"] for t in held]
    assert seeds == [10**6, 10**6 + 1, 10**6 + 2, 10**6 + 3]
    assert not any(s in dist.seeds for s in seeds)
    assert len({t.info["hidden"] for t in held}) > 1  # sizes are drawn too
    again = held_out_teachers(2, **SMALL)  # module-level helper, same distribution
    for a, b in zip(held[:2], again, strict=True):
        assert a.info["hidden"] == b.info["hidden"]
        assert_tasks_equal(a, b)
    with pytest.raises(ValueError, match="overlap"):
        dist.held_out_teachers(3, seed_offset=10)
    with pytest.raises(ValueError, match="overlap"):
        TeacherStudentDistribution(seeds=[1, 5, 9]).held_out_teachers(3, seed_offset=4)
    ok = TeacherStudentDistribution(seeds=[1, 5, 9]).held_out_teachers(2, seed_offset=6, **SMALL)
    assert [t.info["seed"] for t in ok] == [6, 7]


def test_classification_teacher_labels_are_argmax_of_the_teacher():
    task = teacher_student(seed=3, classes=4, **SMALL)
    assert task.loss == "cross_entropy" and task.out_features == 4 and task.is_classification
    for split in task.splits().values():  # noise-free: labels are the teacher's argmax
        assert split.y.dtype == torch.int64
        logits = task.teacher(split.x).double()
        expected = [max(range(4), key=lambda k, row=row: row[k]) for row in logits.tolist()]
        assert split.y.tolist() == expected
    assert len(set(task.train.y.tolist())) == 4  # every class occurs
    regression = teacher_student(seed=3, out_features=4, **SMALL)  # same teacher, raw outputs
    assert torch.equal(regression.train.y.argmax(1), task.train.y)
    with pytest.raises(ValueError, match="classes: expected 0"):
        teacher_student(classes=1)
    with pytest.raises(ValueError, match="out_features: expected 1 or classes"):
        teacher_student(classes=3, out_features=2)


def test_distribution_classes_mixture_and_unchanged_regression_draws():
    plain, single = TeacherStudentDistribution(), TeacherStudentDistribution(classes=(0,))
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(3):  # a single value draws nothing: the same tasks as before the option
        assert_tasks_equal(plain.sample(a, **SMALL), single.sample(b, **SMALL))
    mixed = TeacherStudentDistribution(classes=(0, 3), seeds=range(50))
    draws = [mixed.sample(np.random.default_rng(i), **SMALL) for i in range(12)]
    assert {t.loss for t in draws} == {"mse", "cross_entropy"}
    assert {t.out_features for t in draws if t.is_classification} == {3}
    held = TeacherStudentDistribution(classes=(5,)).held_out_teachers(2, **SMALL)
    assert all(t.out_features == 5 and t.is_classification for t in held)
    with pytest.raises(ValueError, match=r"classes\[1\]: expected 0 or an int >= 2"):
        TeacherStudentDistribution(classes=(0, 1))
    with pytest.raises(ValueError, match="classes: expected a non-empty sequence"):
        TeacherStudentDistribution(classes=())


# --------------------------------------------------------------------------- multi-sin


def test_multi_sin_labels_match_numpy_recomputation():
    task = multi_sin(seed=4)
    assert task.is_classification and task.out_features == 10 and task.input_shape == (50,)
    assert [len(s) for s in task.splits().values()] == [4096, 1024, 1024, 2048]
    for s in task.splits().values():
        x = s.x.numpy().astype(np.float64)
        expected = np.sin(np.outer(x.sum(1), np.arange(1, 11))).argmax(1)
        assert s.y.dtype == torch.int64
        np.testing.assert_array_equal(s.y.numpy(), expected)
    x = task.train.x
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
    assert set(task.train.y.tolist()) == set(range(10))


def test_multi_sin_determinism():
    a, b, c = multi_sin(seed=1, **SMALL), multi_sin(seed=1, **SMALL), multi_sin(seed=2, **SMALL)
    assert_tasks_equal(a, b)
    assert not torch.equal(a.train.x, c.train.x)
    with pytest.raises(ValueError, match="n_val"):
        multi_sin(n_val=0)


# --------------------------------------------------------------------------- digits


def test_digits_splits_disjoint_cover_and_sized():
    task = digits(seed=0)
    idx = task.info["split_indices"]
    sizes = {name: len(i) for name, i in idx.items()}
    assert sizes == {"train": 898, "stats": 270, "val": 270, "test": 359}
    everything = np.concatenate(list(idx.values()))
    assert len(everything) == 1797 and set(everything.tolist()) == set(range(1797))
    assert task.input_shape == (64,) and task.info["image_shape"] == (1, 8, 8)
    target = load_digits().target
    counts = np.bincount(target, minlength=10)
    for name, i in idx.items():  # stratified: each class in proportion
        expected = counts * len(i) / 1797
        assert np.all(np.abs(np.bincount(target[i], minlength=10) - expected) <= 1.0), name
        np.testing.assert_array_equal(getattr(task, name).y.numpy(), target[i])


def test_digits_standardised_with_train_statistics():
    task = digits(seed=3)
    idx = task.info["split_indices"]
    raw = load_digits().data / 16.0
    mean = raw[idx["train"]].mean(0)
    std = raw[idx["train"]].std(0)
    std[std == 0] = 1.0
    for name, i in idx.items():
        np.testing.assert_allclose(getattr(task, name).x.numpy(), (raw[i] - mean) / std, atol=1e-5)
    train = task.train.x.numpy()
    assert np.abs(train.mean(0)).max() < 1e-5
    varying = raw[idx["train"]].std(0) > 0
    np.testing.assert_allclose(train.std(0)[varying], 1.0, atol=1e-4)
    assert np.abs(task.test.x.numpy().mean(0)).max() > 1e-3  # not re-standardised per split


def test_digits_determinism_and_bad_fractions():
    assert_tasks_equal(digits(seed=1), digits(seed=1))
    a, b = digits(seed=1), digits(seed=2)
    assert not np.array_equal(a.info["split_indices"]["test"], b.info["split_indices"]["test"])
    with pytest.raises(ValueError, match="test_fraction"):
        digits(test_fraction=0.0)
    with pytest.raises(ValueError, match="< 1"):
        digits(stats_fraction=0.4, val_fraction=0.4)


# --------------------------------------------------------------------------- CIFAR files

BATCH_SIZES = {
    "data_batch_1": 7,
    "data_batch_2": 5,
    "data_batch_3": 3,
    "data_batch_4": 2,
    "data_batch_5": 4,
    "test_batch": 6,
}
LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]
LABEL_NAMES += ["dog", "frog", "horse", "ship", "truck"]
SENTINEL = (2, 1, 5, 7)  # (image in data_batch_2, channel, row, column) holding the value 255


def official_batches(seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    batches = {}
    for name, n in BATCH_SIZES.items():
        data = rng.integers(0, 255, size=(n, 3072), dtype=np.uint8)  # never 255 ...
        batches[name] = {
            "batch_label": name,
            "data": data,
            "labels": rng.integers(0, 10, n).tolist(),
        }
    i, c, h, w = SENTINEL
    batches["data_batch_2"]["data"][i, c * 1024 + h * 32 + w] = 255  # ... except here
    batches["batches.meta"] = {"label_names": LABEL_NAMES, "num_cases_per_batch": 10000}
    return batches


def write_batch_dir(root: Path, batches: dict[str, dict]) -> Path:
    folder = root / BATCH_DIR
    folder.mkdir(parents=True)
    for name, obj in batches.items():
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))
    return folder


def write_archive(root: Path, batches: dict[str, dict]) -> Path:
    folder = write_batch_dir(root / "staging", batches)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / ARCHIVE_NAME
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=BATCH_DIR)
    return archive


@pytest.fixture
def batches():
    return official_batches()


def check_loaded(data, batches):
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    n_train = sum(BATCH_SIZES[n] for n in train_names)
    assert data.x_train.shape == (n_train, 3, 32, 32) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (6, 3, 32, 32)
    assert data.y_train.dtype == np.int64 and data.y_test.dtype == np.int64
    labels = sum((batches[n]["labels"] for n in train_names), [])
    np.testing.assert_array_equal(data.y_train, labels)
    np.testing.assert_array_equal(data.y_test, batches["test_batch"]["labels"])
    i, c, h, w = SENTINEL
    hits = np.argwhere(data.x_train == 255)
    np.testing.assert_array_equal(hits, [[BATCH_SIZES["data_batch_1"] + i, c, h, w]])
    row = batches["test_batch"]["data"][4]
    assert data.x_test[4, 0, 0, 0] == row[0] and data.x_test[4, 0, 0, 1] == row[1]
    assert data.x_test[4, 0, 1, 0] == row[32] and data.x_test[4, 2, 31, 31] == row[3071]
    assert data.x_test[4, 1, 0, 0] == row[1024] and data.x_test[4, 2, 0, 0] == row[2048]
    assert data.label_names == LABEL_NAMES


def test_load_cifar10_from_folders(tmp_path, batches):
    folder = write_batch_dir(tmp_path, batches)
    check_loaded(load_cifar10(tmp_path), batches)  # folder containing cifar-10-batches-py
    check_loaded(load_cifar10(folder), batches)  # the batch folder itself
    check_loaded(load_cifar10(str(folder)), batches)


def test_load_cifar10_from_archive(tmp_path, batches):
    archive = write_archive(tmp_path / "dl", batches)
    check_loaded(load_cifar10(archive), batches)
    check_loaded(load_cifar10(tmp_path / "dl"), batches)  # folder holding only the archive
    assert not (tmp_path / "dl" / BATCH_DIR).exists()  # nothing extracted


def test_load_cifar10_from_environment(tmp_path, batches, monkeypatch):
    write_batch_dir(tmp_path, batches)
    monkeypatch.setenv("GROWENV_DATA", str(tmp_path))
    check_loaded(load_cifar10(), batches)
    monkeypatch.delenv("GROWENV_DATA")
    with pytest.raises(FileNotFoundError, match="GROWENV_DATA"):
        load_cifar10()


def test_missing_files_name_the_file_and_the_source(tmp_path, batches):
    del batches["test_batch"]
    folder = write_batch_dir(tmp_path / "a", batches)
    with pytest.raises(FileNotFoundError, match="test_batch") as err:
        load_cifar10(folder)
    assert CIFAR_URL in str(err.value) and ARCHIVE_NAME in str(err.value)
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(write_archive(tmp_path / "b", batches))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=ARCHIVE_NAME):
        load_cifar10(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_cifar10(tmp_path / "nowhere")


DROP = object()  # marks a key to remove from a batch dict


@pytest.mark.parametrize(
    ("name", "change", "match"),
    [
        ("data_batch_2", {"labels": DROP}, "lacks the key 'labels'"),
        ("test_batch", {"data": np.zeros((6, 3071), np.uint8)}, "3072"),
        ("data_batch_4", {"labels": [0, 10]}, "outside 0..9"),
        ("data_batch_5", {"labels": [1, 2, 3]}, "4 images"),
        ("data_batch_1", {"data": np.zeros((7, 3072), np.float32)}, "uint8"),
    ],
)
def test_malformed_batches_raise_value_error_naming_the_file(
    tmp_path, batches, name, change, match
):
    batches[name] = {k: v for k, v in {**batches[name], **change}.items() if v is not DROP}
    write_batch_dir(tmp_path, batches)
    with pytest.raises(ValueError, match=match) as err:
        load_cifar10(tmp_path)
    assert name in str(err.value)


def test_truncated_and_hostile_pickles(tmp_path, batches):
    folder = write_batch_dir(tmp_path, batches)
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match="data_batch_3"):
        load_cifar10(folder)
    path.write_bytes(pickle.dumps(batches["data_batch_3"], protocol=2))
    marker = tmp_path / "pwned"
    hostile = pickle.dumps(Hostile(str(marker)))
    (folder / "test_batch").write_bytes(hostile)
    with pytest.raises(ValueError, match="test_batch"):
        load_cifar10(folder)
    assert not marker.exists()
    bad_archive = tmp_path / "broken" / ARCHIVE_NAME
    bad_archive.parent.mkdir()
    bad_archive.write_bytes(b"not a tar file at all")
    with pytest.raises(ValueError, match="broken"):
        load_cifar10(bad_archive)


class Hostile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_cifar10_task_on_tiny_archive(tmp_path, batches):
    archive = write_archive(tmp_path, batches)
    task = cifar10(archive, seed=1, n_val=3, n_stats=2, flatten=False)
    assert [len(s) for s in task.splits().values()] == [16, 2, 3, 6]
    assert task.input_shape == (3, 32, 32) and task.is_classification and task.out_features == 10
    raw = load_cifar10(archive)
    idx = task.info["split_indices"]
    assert len(set(np.concatenate([idx["train"], idx["stats"], idx["val"]]).tolist())) == 21
    pixels = raw.x_train[idx["train"]] / 255.0
    mean, std = pixels.mean((0, 2, 3)), pixels.std((0, 2, 3))
    np.testing.assert_allclose(task.info["mean"], mean, rtol=1e-10)
    np.testing.assert_allclose(task.info["std"], std, rtol=1e-10)
    expected = (raw.x_train[idx["val"]] / 255.0 - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(task.val.x.numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(task.val.y.numpy(), raw.y_train[idx["val"]])
    flat = cifar10(archive, seed=1, n_val=3, n_stats=2, n_test=4)
    assert flat.input_shape == (3072,) and len(flat.test) == 4
    assert torch.equal(flat.val.x, task.val.x.reshape(3, -1))
    with pytest.raises(ValueError, match="exceeds"):
        cifar10(archive, n_train=20, n_val=3, n_stats=2)
    with pytest.raises(ValueError, match="n_stats"):
        cifar10(archive, n_stats=0)


def test_cifar10_pool_averages_normalised_blocks(tmp_path, batches):
    archive = write_archive(tmp_path, batches)
    full = cifar10(archive, seed=1, n_val=3, n_stats=2, flatten=False)
    pooled = cifar10(archive, seed=1, n_val=3, n_stats=2, flatten=False, pool=4)
    flat = cifar10(archive, seed=1, n_val=3, n_stats=2, pool=4)
    assert pooled.input_shape == (3, 8, 8) and flat.input_shape == (192,)
    x = full.val.x.double().numpy()  # explicit block means of the normalised images
    expected = x.reshape(3, 3, 8, 4, 8, 4).mean(axis=(3, 5))
    np.testing.assert_allclose(pooled.val.x.numpy(), expected, atol=1e-5)
    assert torch.equal(flat.val.x, pooled.val.x.reshape(3, -1))
    assert torch.equal(flat.val.y, full.val.y) and flat.info["pool"] == 4
    with pytest.raises(ValueError, match="pool: expected a divisor of 32"):
        cifar10(archive, pool=5)


@needs_subset
def test_real_cifar10_subset():
    data = load_cifar10(SUBSET)
    assert len(data.y_train) == 5170 and len(data.y_test) == 1017
    assert data.y_test[:8].tolist() == [3, 8, 8, 0, 6, 6, 1, 6]
    assert data.label_names[3] == "cat" and data.label_names[8] == "ship"
    assert sorted(set(data.y_train.tolist())) == list(range(10))
    task = cifar10(SUBSET)
    assert [len(s) for s in task.splits().values()] == [4136, 517, 517, 1017]
    assert task.input_shape == (3072,)
    x = task.train.x.reshape(-1, 3, 1024)
    np.testing.assert_allclose(x.double().mean((0, 2)).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(x.double().std((0, 2)).numpy(), 1.0, atol=1e-4)
    assert task.test.y[:8].tolist() == [3, 8, 8, 0, 6, 6, 1, 6]


# --------------------------------------------------------------------------- augmentation


def images(n: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) + 0.5


def test_augment_deterministic_under_a_generator():
    x = images()
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    c = augment(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype
    params = sample_augment_params(len(x), torch.Generator().manual_seed(3))
    assert torch.equal(a, crop_and_flip(x, *params))
    flat = augment(x.reshape(len(x), -1), torch.Generator().manual_seed(3))
    assert torch.equal(flat, a.reshape(len(x), -1))


def test_crop_and_flip_matches_per_image_loop():
    x = images(40)
    dy, dx, flip = sample_augment_params(40, torch.Generator().manual_seed(0))
    out = crop_and_flip(x, dy, dx, flip)
    for i in range(40):
        padded = torch.zeros(3, 40, 40)
        padded[:, 4:36, 4:36] = x[i]
        window = padded[:, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        if flip[i]:
            window = window[:, :, torch.arange(31, -1, -1)]
        assert torch.equal(out[i], window), i


def test_flip_mirrors_and_crop_shifts():
    x = images(4)
    n = len(x)
    centre = torch.full((n,), 4)
    no, yes = torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)
    assert torch.equal(crop_and_flip(x, centre, centre, no), x)
    mirrored = crop_and_flip(x, centre, centre, yes)
    assert torch.equal(mirrored[..., 0], x[..., 31]) and torch.equal(mirrored, x.flip(-1))
    corner = crop_and_flip(x, torch.zeros(n, dtype=torch.long), torch.full((n,), 8), no)
    assert torch.equal(corner[:, :, 4:, :28], x[:, :, :28, 4:])  # shifted down and left
    assert (corner[:, :, :4] == 0).all() and (corner[:, :, :, 28:] == 0).all()


def test_augment_params_cover_range_and_leave_global_rng_alone():
    state = torch.random.get_rng_state()
    dy, dx, flip = sample_augment_params(4000, torch.Generator().manual_seed(1))
    assert torch.equal(state, torch.random.get_rng_state())
    assert set(dy.tolist()) == set(range(9)) == set(dx.tolist())
    assert 0.45 < flip.float().mean() < 0.55
    with pytest.raises(ValueError, match="augment"):
        augment(torch.zeros(2, 3, 32), torch.Generator())


# --------------------------------------------------------------------------- make_task


def test_make_task_dispatches_to_builders():
    assert set(TASK_NAMES) == {"teacher_student", "multi_sin", "digits", "cifar10"}
    assert_tasks_equal(make_task("teacher_student", seed=3, **SMALL), teacher_student(3, **SMALL))
    assert_tasks_equal(make_task("multi_sin", seed=2, **SMALL), multi_sin(2, **SMALL))
    assert_tasks_equal(make_task("digits", seed=1), digits(1))


def test_make_task_cifar10_from_tiny_folder(tmp_path, batches):
    write_batch_dir(tmp_path, batches)
    task = make_task("cifar10", seed=0, data_dir=tmp_path, n_val=2, n_stats=2)
    assert_tasks_equal(task, cifar10(tmp_path, seed=0, n_val=2, n_stats=2))


def test_make_task_errors():
    with pytest.raises(ValueError, match="teacher_student, multi_sin, digits, cifar10"):
        make_task("mnist")
    for name, kwarg in [("teacher_student", "n_hidden"), ("digits", "n_train")]:
        with pytest.raises(TypeError) as err:
            make_task(name, **{kwarg: 3})
        assert f"'{kwarg}'" in str(err.value) and f"'{name}'" in str(err.value)
    with pytest.raises(ValueError, match="n_test"):
        make_task("multi_sin", n_test=0)
