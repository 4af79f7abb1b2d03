"""The datasets and augmentation presets as data: names, default folders, per-channel statistics.

Nothing here imports torch, so a recipe can be checked against these names without loading it; the
readers (``registry.py``, ``fetch.py``) and the transforms read the same tables.
"""

from __future__ import annotations

DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagefolder", "synthetic")

# Detection and segmentation datasets (`bagoftricks transfer`, bagoftricks.transfer.data): images with
# boxes and label maps. fmnist_scenes is built from the Fashion-MNIST files (its root is theirs); voc is
# a VOCdevkit folder, ade20k a folder with images/ and annotations/ (segmentation only), coco a folder
# with annotations/instances_*.json (detection only).
TRANSFER_DATASETS = ("fmnist_scenes", "voc", "ade20k", "coco")

# Where a dataset is looked for (and downloaded to) when no root is given. imagefolder and
# synthetic have none: an ImageFolder needs its root, synthetic data is generated.
DEFAULT_ROOTS = {
    "fashion_mnist": "/usr/share/datasets/fashion-mnist",  # Debian's dataset-fashion-mnist
    "cifar10": "~/.cache/bagoftricks/cifar10",
    "cifar100": "~/.cache/bagoftricks/cifar100",
}

# Training augmentation presets (data.augment): "paper" is the §2 pipeline, "small" pad-and-crop +
# flip for 28-32 px images, then data.jitter/data.lighting as in "paper" (0 = off), "none" resize +
# centre crop only. See transforms.BatchAugment.
AUGMENTS = ("paper", "small", "none")

# Horizontal flips (data.flip_mode): "random" draws a flip per image and epoch; "alternate" draws one
# per image for the first epoch and flips each image the other way every following epoch.
FLIP_MODES = ("random", "alternate")

# Padding of the "small" preset's pad-and-crop (data.pad_mode): zeros, or the image mirrored at its edges
# (airbench's translate), which keeps the border's statistics.
PAD_MODES = ("zeros", "reflect")

# Where the training images of a folder read per image are decoded (data.decode): "cpu" in DataLoader
# workers, one image at a time; "device" in batches on the training device (a GPU's JPEG decoder), the §2
# augmentation applied there to the whole batch; "auto" is "device" when training on a GPU (see setup).
DECODES = ("auto", "cpu", "device")

# Mean and std per channel on the 0..255 scale.
IMAGENET_MEAN = (123.68, 116.779, 103.939)  # the paper's §2 values
IMAGENET_STD = (58.393, 57.12, 57.375)
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # Computed over the 60000 training images (population std over all pixels).
    "fashion_mnist": ((72.9404,), (90.0212,)),
    # Over the 50000 training images, per channel, population std over all pixels (not the
    # often-quoted mean of per-image stds 0.2023/0.1994/0.2010).
    "cifar10": ((125.3069, 122.9504, 113.8654), (62.9932, 62.0887, 66.7049)),
    "cifar100": ((129.3042, 124.0700, 112.4341), (68.1702, 65.3918, 70.4184)),
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
    "synthetic": (IMAGENET_MEAN, IMAGENET_STD),
}
