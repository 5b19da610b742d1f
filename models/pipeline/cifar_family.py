"""Family `cifar-slimresnet`: a CIFAR-shaped slimmable ResNet-18 with the paper's cost.

CIFAR-100 cannot be obtained in this build (no dataset downloads), so the weights are
untrained: a seeded Kaiming init, rounded to int8 per output channel, with per-width batch-norm
statistics computed on scikit-learn digits resized to 32x32x3 so that activations keep a sane
scale. Predictions are therefore meaningless; what the family provides is the exact compute
and memory cost of the backbone at each width. Accuracies are cited (see citations.py).
"""

import time

import numpy as np
import torch

from citations import CIFAR_SLIMRESNET as CITED
from data import CIFAR100_CLASSES, CIFAR100_MEAN, CIFAR100_STD, SEED, digits_as_cifar_u8, digits_split, preprocess
from family import clear, export_family, finish
from slimmable import SlimResNet18, calibrate_bn, quantize_int8_

INPUT_SHAPE = (3, 32, 32)
CALIBRATION_IMAGES = 512
VERIFY_IMAGES = 32


def build(models_dir, torch_version, log=print):
    folder = models_dir / "cifar-slimresnet"
    clear(folder)
    x_tr, _, x_te, _ = digits_split()
    calib = preprocess(digits_as_cifar_u8(x_tr[:CALIBRATION_IMAGES]), CIFAR100_MEAN, CIFAR100_STD)
    test = preprocess(digits_as_cifar_u8(x_te[:VERIFY_IMAGES]), CIFAR100_MEAN, CIFAR100_STD)

    t0 = time.perf_counter()
    torch.manual_seed(SEED)
    model = SlimResNet18(classes=100)
    quantize_int8_(model)
    calibrate_bn(model, torch.from_numpy(calib))
    duration = time.perf_counter() - t0
    log(f"  cifar-slimresnet: init + BN calibration in {duration:.1f} s")

    widths = export_family(folder, "cifar-slimresnet", model, INPUT_SHAPE, test[:4],
                           int8=True, cited=CITED, log=log)
    manifest = {
        "schema": 1,
        "family": "cifar-slimresnet",
        "description": "CIFAR-shaped slimmable ResNet-18 (3x32x32, 100 classes) with the cost of the "
                       "paper's SlimResNet backbone; UNTRAINED weights, accuracies cited, not measured",
        "input_shape": list(INPUT_SHAPE),
        "classes": list(CIFAR100_CLASSES),
        "weights": "untrained",
        "weights_note": (
            f"Untrained: CIFAR-100 is not available to this build, so its outputs are meaningless. "
            f"Seeded Kaiming-normal init (torch seed {SEED}), every conv/linear weight rounded to "
            f"int8 with a per-output-channel scale (stored so, dequantized in the graph), per-width "
            f"BN statistics computed on {CALIBRATION_IMAGES} scikit-learn digits resized to 32x32x3, "
            f"then folded into the convolutions. It exists for its cost (FLOPs, params, latency)."
        ),
        "preprocess": {"mean": CIFAR100_MEAN, "std": CIFAR100_STD},
        "dataset": {
            "name": "CIFAR-100 (Krizhevsky, 2009), NOT used by this build: the network is shaped "
                    "for it and its accuracies are cited from publications that trained on it",
            "license": "none stated by its authors; not redistributed here",
            "split": "the cited accuracies are on the official 10,000-image CIFAR-100 test set; "
                     "no held-out images are shipped",
        },
        "training": {
            "framework": f"torch {torch_version}",
            "method": "none (untrained): seeded init, int8 weights, per-width BN statistics "
                      "calibrated with no gradient step",
            "seed": SEED,
            "epochs": 0,
            "duration_s": round(duration, 1),
        },
        "widths": widths,
    }
    finish(folder, manifest, model, extra_inputs=test, log=log)
    (folder / "READY").write_text("")
    return manifest
