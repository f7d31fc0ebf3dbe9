"""The ``DatasetInfo`` that our TensorFlow-free TFDS builders share: uint8 images of a fixed
shape, a class label and the example ``id`` that the teacher-logit join uses."""

import numpy as np
import tensorflow_datasets as tfds


def image_classification_info(
  builder, *, description: str, shape: tuple[int, int, int], label, homepage: str
) -> tfds.core.DatasetInfo:
  """``{"image": uint8 shape, "label": label (a ClassLabel), "id": int64}``, supervised as
  ``(image, label)``."""
  return tfds.core.DatasetInfo(
    builder=builder,
    description=description,
    features=tfds.features.FeaturesDict(
      {
        "image": tfds.features.Tensor(shape=shape, dtype=np.uint8),
        "label": label,
        "id": tfds.features.Scalar(dtype=np.int64),
      }
    ),
    supervised_keys=("image", "label"),
    homepage=homepage,
  )
