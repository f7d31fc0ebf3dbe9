"""Augmentations, seeded and deterministic: flips, pad-and-crop, random-resized crops."""

import numpy as np
from PIL import Image

AUGMENTS = ("none", "flip", "crop_flip", "rrc_flip")
# Augmentations whose output is not a fixed function of the example (and its flip): teacher
# logits cannot be precomputed for them.
RANDOM_CROPS = ("crop_flip", "rrc_flip")


def random_resized_crop(
  image: np.ndarray, rng: np.random.Generator, size: int, *, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> np.ndarray:
  """Inception-style random-resized crop of one HWC uint8 image to ``size x size`` (10 tries
  at a random area fraction in ``scale`` and log-uniform aspect ratio in ``ratio``, then a
  center crop of the clamped ratio, as torchvision does), bilinear resize."""
  h, w = image.shape[:2]
  for _ in range(10):
    area = h * w * rng.uniform(*scale)
    r = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    cw, ch = int(round(np.sqrt(area * r))), int(round(np.sqrt(area / r)))
    if 0 < cw <= w and 0 < ch <= h:
      top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
      break
  else:
    r0 = w / h
    cw, ch = (
      (w, int(round(w / ratio[1])))
      if r0 > ratio[1]
      else ((int(round(h * ratio[0])), h) if r0 < ratio[0] else (w, h))
    )
    top, left = (h - ch) // 2, (w - cw) // 2
  crop = image[top : top + ch, left : left + cw]
  img = Image.fromarray(crop[..., 0] if crop.shape[-1] == 1 else crop)
  out = np.asarray(img.resize((size, size), Image.BILINEAR))
  return out.reshape(size, size, image.shape[-1])


def resize_center_crop(image: np.ndarray, size: int, resize: int | None = None) -> np.ndarray:
  """Evaluation transform: shorter side to ``resize`` (default ``size * 256 / 224``), bilinear,
  then the central ``size x size`` crop."""
  resize = resize or int(round(size * 256 / 224))
  h, w = image.shape[:2]
  f = resize / min(h, w)
  nh, nw = max(size, int(round(h * f))), max(size, int(round(w * f)))
  img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  out = np.asarray(img.resize((nw, nh), Image.BILINEAR)).reshape(nh, nw, image.shape[-1])
  top, left = (nh - size) // 2, (nw - size) // 2
  return out[top : top + size, left : left + size]


def rrc_flip_each(images, seeds, size: int) -> tuple[np.ndarray, np.ndarray]:
  """Random-resized crop to ``size`` and a random horizontal flip of each image, each from its
  own seed (so that an example's augmentation does not depend on its batch-mates or hosts)."""
  out, flips = [], np.zeros(len(images), bool)
  for i, im in enumerate(images):
    rng = np.random.default_rng(seeds[i])
    im = random_resized_crop(im, rng, size)
    flips[i] = rng.random() < 0.5
    out.append(im[:, ::-1] if flips[i] else im)
  return np.stack(out), flips


def augment_batch(
  images: np.ndarray,
  rng: np.random.Generator,
  mode: str,
  *,
  host: slice = slice(None),
  draw_n: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Random crop (zero-pad 4) and horizontal flip of a uint8 NHWC batch.

  The random draws are made for ``draw_n`` examples (default: all of ``images``) and their
  ``host`` slice is applied to ``images``: a host passes its own rows of a global batch of
  ``draw_n``, so an example's augmentation does not depend on the number of hosts.

  Returns the augmented batch and the per-example flip flags (used by the flip-aware teacher
  logits join).
  """
  n = images.shape[0]
  draw_n = n if draw_n is None else draw_n
  flips = np.zeros(n, bool)
  if mode == "none":
    return images, flips
  out = images
  if mode == "crop_flip":
    h, w = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    dy, dx = rng.integers(0, 9, draw_n)[host], rng.integers(0, 9, draw_n)[host]
    rows = dy[:, None] + np.arange(h)[None]
    cols = dx[:, None] + np.arange(w)[None]
    out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
  flips = (rng.random(draw_n) < 0.5)[host]
  out = np.where(flips[:, None, None, None], out[:, :, ::-1], out)
  return out, flips
