"""Data: the Fashion-MNIST builder from a manual dir, the missing-data error, CIFAR-10 on TFDS
mock data, sharding, determinism, the teacher-logit join."""

import gzip
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from robust_distill.data import fashion_mnist, pipeline, sources
import io
import zipfile
from PIL import Image


def _write_idx(d, prefix, images, labels):
  with gzip.open(os.path.join(d, f"{prefix}-images-idx3-ubyte.gz"), "wb") as f:
    f.write(
      (2051).to_bytes(4, "big")
      + len(images).to_bytes(4, "big")
      + (28).to_bytes(4, "big")
      + (28).to_bytes(4, "big")
      + images.tobytes()
    )
  with gzip.open(os.path.join(d, f"{prefix}-labels-idx1-ubyte.gz"), "wb") as f:
    f.write((2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.tobytes())


def _tiny_fmnist(d):
  d.mkdir()
  rng = np.random.default_rng(0)
  tr_x, tr_y = (
    rng.integers(0, 255, (30, 28, 28), dtype=np.uint8),
    rng.integers(0, 10, 30, dtype=np.uint8),
  )
  te_x, te_y = (
    rng.integers(0, 255, (12, 28, 28), dtype=np.uint8),
    rng.integers(0, 10, 12, dtype=np.uint8),
  )
  _write_idx(d, "train", tr_x, tr_y)
  _write_idx(d, "t10k", te_x, te_y)
  return tr_x, tr_y


def test_fashion_mnist_builder_from_manual_dir(tmp_path, monkeypatch):
  manual = tmp_path / "manual"
  tr_x, tr_y = _tiny_fmnist(manual)
  # The fast path: the idx files read directly, in the order TFDS stores them in.
  data = pipeline.load_split(
    "fashion_mnist", "train", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual)
  )
  assert data["image"].shape == (30, 28, 28, 1) and data["image"].dtype == np.uint8
  order = np.argsort(data["id"])  # array_record order is shuffled: join by id
  np.testing.assert_array_equal(data["image"][order][..., 0], tr_x)
  np.testing.assert_array_equal(data["label"][order], tr_y)
  assert not (tmp_path / "tfds").exists()  # nothing built
  # The TFDS path (the builder, then array_record through tfds.data_source) gives the very same
  # arrays in the same order: load with no idx files reachable, from the prepared dataset.
  sources.prepare("fashion_mnist", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
  assert (tmp_path / "tfds" / "fashion_mnist_idx" / "1.0.0").exists()
  monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "nothing"))
  for split, n in (("train", 30), ("test", 12)):
    fast = fashion_mnist.load_arrays(split, str(manual))
    via_tfds = pipeline.load_split("fashion_mnist", split, data_dir=str(tmp_path / "tfds"))
    assert len(via_tfds["label"]) == n
    assert fashion_mnist.load_arrays(split) is None  # no idx files: TFDS was used
    for k in ("image", "label", "id"):
      assert fast[k].dtype == via_tfds[k].dtype, k
      np.testing.assert_array_equal(fast[k], via_tfds[k])
    assert not np.array_equal(fast["id"], np.arange(n))  # the order is TFDS's, not the file's


def test_missing_data_error_says_how_to_get_it(tmp_path, monkeypatch):
  monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "nothing"))
  monkeypatch.setattr(fashion_mnist, "MIRROR_URL", "http://127.0.0.1:9/")
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
    pipeline.load_split(
      "fashion_mnist", "train", data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "empty")
    )


def test_bad_idx_file_is_rejected(tmp_path):
  p = tmp_path / "x.gz"
  with gzip.open(p, "wb") as f:
    f.write((2051).to_bytes(4, "big") + (5).to_bytes(4, "big") + b"\0" * 100)
  with pytest.raises(ValueError, match="not a valid idx"):
    fashion_mnist.read_idx(str(p), images=True)


def test_cifar10_pipeline_on_mock_data():
  with tfds.testing.mock_data(num_examples=40):
    data = pipeline.load_split("cifar10", "train")
  assert data["image"].shape == (40, 32, 32, 3)
  tr, va = pipeline.split_train_val(40, 8, 0)
  it = pipeline.train_iterator(data, tr, global_batch=16, seed=0, augment="crop_flip")
  b = next(it)
  assert b["image"].shape == (16, 32, 32, 3) and b["image"].dtype == np.uint8
  assert set(b["id"]).issubset(set(data["id"][tr]))
  assert not set(b["id"]) & set(data["id"][va])


def test_crop_flip_keeps_content_and_flips():
  x = np.arange(2 * 32 * 32 * 3, dtype=np.uint8).reshape(2, 32, 32, 3)
  out, flips = pipeline.augment_batch(x, np.random.default_rng(0), "flip")
  for i in range(2):
    np.testing.assert_array_equal(out[i], x[i, :, ::-1] if flips[i] else x[i])
  out, _ = pipeline.augment_batch(x, np.random.default_rng(1), "crop_flip")
  assert out.shape == x.shape


def test_iterator_is_deterministic_resumable_and_sharded():
  data = pipeline.mock_split("train", n=100)
  idx = np.arange(100)
  a = pipeline.train_iterator(data, idx, global_batch=20, seed=3)
  batches = [next(a) for _ in range(7)]  # crosses an epoch boundary (5 batches/epoch)
  assert sorted(np.concatenate([b["id"] for b in batches[:5]]).tolist()) == list(range(100))
  assert not np.array_equal(batches[0]["id"], batches[5]["id"])  # new permutation per epoch
  b = pipeline.train_iterator(data, idx, global_batch=20, seed=3)
  for _ in range(3):
    next(b)
  c = pipeline.train_iterator(data, idx, global_batch=20, seed=3, state=b.get_state())
  np.testing.assert_array_equal(next(c)["id"], batches[3]["id"])
  # Two hosts, each with the rows its devices hold: together, the single host's batch in order.
  h0 = pipeline.train_iterator(data, idx, global_batch=20, seed=3, host_rows=slice(0, 10))
  h1 = pipeline.train_iterator(data, idx, global_batch=20, seed=3, host_rows=slice(10, 20))
  ids = np.concatenate([next(h0)["id"], next(h1)["id"]])
  np.testing.assert_array_equal(ids, batches[0]["id"])


def test_worker_processes_give_the_same_batches_and_a_state_any_count_resumes():
  data = pipeline.mock_split("train", n=100)
  idx = np.arange(100)
  kw = dict(global_batch=20, seed=3, augment="crop_flip")
  ref = pipeline.train_iterator(data, idx, **kw)
  want = [next(ref) for _ in range(8)]
  two = pipeline.train_iterator(data, idx, workers=2, **kw)
  got = [next(two) for _ in range(3)]
  assert two.get_state() == {"next_index": 3}
  one = pipeline.train_iterator(data, idx, workers=1, state=two.get_state(), **kw)
  got += [next(one) for _ in range(3)]
  none = pipeline.train_iterator(data, idx, state=one.get_state(), **kw)  # back in-process
  got += [next(none) for _ in range(2)]
  for w, g in zip(want, got, strict=True):
    for k in w:
      np.testing.assert_array_equal(w[k], g[k])


def test_teacher_logits_joined_by_id():
  data = pipeline.mock_split("train", n=50)
  data["id"] = data["id"][::-1] * 3  # ids unrelated to positions
  ids = np.sort(data["id"])
  logits = np.stack([ids, -ids], 1).astype(np.float32)
  it = pipeline.train_iterator(
    data, np.arange(50), global_batch=10, seed=0, teacher_logits=logits, teacher_ids=ids
  )
  b = next(it)
  np.testing.assert_array_equal(b["teacher_logits"][:, 0], b["id"])
  flip_logits = np.stack([logits, logits + 1000], 1)
  it = pipeline.train_iterator(
    data,
    np.arange(50),
    global_batch=10,
    seed=0,
    augment="flip",
    teacher_logits=flip_logits,
    teacher_ids=ids,
  )
  b = next(it)
  assert set(np.unique(b["teacher_logits"][:, 0] - b["id"])).issubset({0.0, 1000.0})
  # On one of 2 hosts: its 5 rows, the same view (flip) of each as on a single host.
  h1 = next(
    pipeline.train_iterator(
      data,
      np.arange(50),
      global_batch=10,
      seed=0,
      augment="flip",
      teacher_logits=flip_logits,
      teacher_ids=ids,
      host_rows=slice(5, 10),
    )
  )
  np.testing.assert_array_equal(h1["teacher_logits"], b["teacher_logits"][5:])
  np.testing.assert_array_equal(h1["image"], b["image"][5:])
  with pytest.raises(ValueError, match="miss"):
    pipeline.train_iterator(
      data, np.arange(50), global_batch=10, seed=0, teacher_logits=logits[:10], teacher_ids=ids[:10]
    )


def test_cifar100_on_mock_data():
  with tfds.testing.mock_data(num_examples=12):
    data = pipeline.load_split("cifar100", "test")
  assert data["image"].shape == (12, 32, 32, 3) and pipeline.geometry("cifar100")[1] == 100


def test_imagenet_is_read_lazily_with_random_resized_crops_on_mock_data():
  """TFDS imagenet2012 (mock records of random sizes): decoded on access, 224x224, RRC + flip
  for training (one seed per example, independent of the host split), resize + center crop for
  evaluation, ids = positions."""
  with tfds.testing.mock_data(num_examples=24):
    train = pipeline.load_split("imagenet2012", "train")
    test = pipeline.load_split("imagenet2012", "test")  # the validation split
    assert isinstance(train, pipeline.LazySplit) and len(train) == 24
    ev = pipeline.take(test, np.arange(5))
    assert ev["image"].shape == (5, 224, 224, 3) and ev["image"].dtype == np.uint8
    np.testing.assert_array_equal(ev["id"], np.arange(5))
    kw = dict(global_batch=8, seed=1, augment="rrc_flip")
    b = next(pipeline.train_iterator(train, np.arange(24), **kw))
    assert b["image"].shape == (8, 224, 224, 3) and b["label"].shape == (8,)
    h1 = next(pipeline.train_iterator(train, np.arange(24), host_rows=slice(4, 8), **kw))
    np.testing.assert_array_equal(h1["image"], b["image"][4:])  # same crops on 2 hosts
    val = train.subset(np.arange(20, 24))
    assert len(val) == 4 and pipeline.take(val, [0])["id"][0] == 20
  with pytest.raises(ValueError, match="rrc_flip"):
    train.take([0], augment="crop_flip")


def test_random_resized_crop_and_center_crop_shapes():
  img = np.random.default_rng(0).integers(0, 255, (50, 80, 3), dtype=np.uint8)
  a = pipeline.random_resized_crop(img, np.random.default_rng(1), 32)
  b = pipeline.random_resized_crop(img, np.random.default_rng(1), 32)
  assert a.shape == (32, 32, 3) and (a == b).all()  # seeded
  c = pipeline.resize_center_crop(img, 32)
  assert c.shape == (32, 32, 3)


def test_tiny_imagenet_builder_reads_the_official_zip(tmp_path):
  """The builder on a fabricated tiny-imagenet-200.zip with the official layout."""
  wnids = ["n02", "n01"]

  def jpeg(v):
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), v, np.uint8)).save(buf, format="JPEG", quality=100)
    return buf.getvalue()

  manual = tmp_path / "manual"
  manual.mkdir()
  with zipfile.ZipFile(manual / "tiny-imagenet-200.zip", "w") as z:
    z.writestr("tiny-imagenet-200/wnids.txt", "\n".join(wnids) + "\n")
    for w, v in (("n01", 10), ("n02", 200)):
      for i in range(3):
        z.writestr(f"tiny-imagenet-200/train/{w}/images/{w}_{i}.JPEG", jpeg(v))
    z.writestr("tiny-imagenet-200/val/images/val_0.JPEG", jpeg(200))
    z.writestr("tiny-imagenet-200/val/images/val_1.JPEG", jpeg(10))
    z.writestr(
      "tiny-imagenet-200/val/val_annotations.txt",
      "val_0.JPEG\tn02\t0\t0\t63\t63\nval_1.JPEG\tn01\t0\t0\t63\t63\n",
    )
  kw = dict(data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
  train = pipeline.load_split("tiny_imagenet", "train", **kw)
  test = pipeline.load_split("tiny_imagenet", "test", **kw)
  assert train["image"].shape == (6, 64, 64, 3) and test["image"].shape == (2, 64, 64, 3)
  # Labels are the sorted-wnid indices (n01 -> 0, n02 -> 1), images decoded from the JPEGs.
  assert sorted(train["label"].tolist()) == [0, 0, 0, 1, 1, 1]
  bright = train["image"].reshape(6, -1).mean(1) > 100
  np.testing.assert_array_equal(bright, train["label"] == 1)
  np.testing.assert_array_equal(test["label"][np.argsort(test["id"])], [1, 0])  # val_0: n02


def test_class_pool_in_the_input_pipeline():
  data = pipeline.mock_split("train", n=200)
  idx = np.arange(150)
  kw = dict(global_batch=16, seed=3, class_pool=4, num_classes=10)
  b0 = next(pipeline.train_iterator(data, idx, **kw))
  assert b0["pool_image"].shape == (10, 4, 28, 28, 1)
  # Every pool image is a training image (of idx) of its class.
  flat = data["image"][idx].reshape(150, -1)
  for c in range(10):
    for k in range(4):
      rows = np.flatnonzero((flat == b0["pool_image"][c, k].reshape(-1)).all(-1))
      assert rows.size and (data["label"][idx][rows] == c).all()
  # Identical on every host, while the examples are split between hosts.
  b1 = next(pipeline.train_iterator(data, idx, host_rows=slice(8, 16), **kw))
  np.testing.assert_array_equal(b0["pool_image"], b1["pool_image"])
  assert b1["image"].shape[0] == 8


def test_balanced_batches_spread_points_evenly_with_little_padding():
  assert pipeline.balanced_batches(100, 128, 8) == (100, 104)
  assert pipeline.balanced_batches(300, 256, 8) == (150, 152)
  assert pipeline.balanced_batches(256, 256, 8) == (256, 256)
  assert pipeline.balanced_batches(257, 256, 8) == (129, 136)
  assert pipeline.balanced_batches(5, 20, 8) == (5, 8)
  assert pipeline.balanced_batches(19, 20, 8) == (19, 20)  # never above the cap
  for count, cap in ((1, 8), (77, 64), (1000, 256), (63, 64)):
    per, size = pipeline.balanced_batches(count, cap, 8)
    batches = list(pipeline.padded_batches(np.arange(count), per, size))
    assert len(batches) == -(-count // cap)  # as few batches as the cap allows
    assert all(len(i) == size and len(v) == size for i, v in batches)
    covered = np.concatenate([i[v] for i, v in batches])
    np.testing.assert_array_equal(covered, np.arange(count))
    assert size <= cap and size - per < 8
