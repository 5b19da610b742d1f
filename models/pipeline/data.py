"""Data for the model families: scikit-learn's copy of the UCI handwritten digits.

Nothing is downloaded: load_digits() reads a file shipped inside the scikit-learn wheel.
Pixels are stored the way the agent receives them (u8, CHW) and turned into model input
with the manifest's rule (v / 255 - mean[c]) / std[c], so a u8 image gives exactly the
training input.
"""

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0

DIGITS_MEAN = [0.5]
DIGITS_STD = [0.5]

# CIFAR-100 per-channel statistics of the training set (the values used throughout the
# CIFAR literature); the CIFAR-shaped family expects images preprocessed this way.
CIFAR100_MEAN = [0.5071, 0.4865, 0.4409]
CIFAR100_STD = [0.2673, 0.2564, 0.2762]


# CIFAR-100's 100 fine labels, in the dataset's label order (alphabetical).
CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo "
    "keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse "
    "mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy "
    "porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper "
    "snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television "
    "tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
assert len(CIFAR100_CLASSES) == 100 and CIFAR100_CLASSES == sorted(set(CIFAR100_CLASSES))


def digits_u8():
    """All 1797 digits as u8 [N, 1, 8, 8] (round(p * 255 / 16)) and int64 labels."""
    d = load_digits()
    px = np.rint(d.images.astype(np.float64) * 255.0 / 16.0)
    x = np.clip(px, 0, 255).astype(np.uint8)[:, None, :, :]
    y = d.target.astype(np.int64)
    return x, y


def digits_split():
    """Stratified 70/30 split with seed 0: (x_train, y_train, x_test, y_test), u8 and int64."""
    x, y = digits_u8()
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=0.3, stratify=y, random_state=SEED
    )
    return x_tr, y_tr, x_te, y_te


def preprocess(x_u8, mean, std):
    """u8 [N, C, H, W] -> float32 model input, (v / 255 - mean[c]) / std[c], in float32."""
    v = x_u8.astype(np.float32) / np.float32(255.0)
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((v - m) / s).astype(np.float32)


def digits_as_cifar_u8(x_u8):
    """Digits resized to 32x32 (bilinear) and repeated over 3 channels, as u8 [N, 3, 32, 32].

    Used only to calibrate batch-norm statistics of the untrained CIFAR-shaped family, so that
    its activations have sane scale on image-like input.
    """
    t = torch.from_numpy(x_u8.astype(np.float32))
    t = F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)
    t = t.round().clamp(0, 255).repeat(1, 3, 1, 1)
    return t.numpy().astype(np.uint8)
