"""Family `digits`: a small slimmable CNN trained on scikit-learn's 8x8 handwritten digits."""

import numpy as np
import torch

from data import DIGITS_MEAN, DIGITS_STD, SEED, digits_split, preprocess
from family import clear, export_family, finish
from slimmable import SlimDigitsNet
from train import train_slimmable

EPOCHS = 40
INPUT_SHAPE = (1, 8, 8)


def build(models_dir, torch_version, log=print):
    folder = models_dir / "digits"
    clear(folder)
    x_tr, y_tr, x_te, y_te = digits_split()
    np.save(folder / "holdout_x.npy", x_te)
    np.save(folder / "holdout_y.npy", y_te)
    xf_tr = preprocess(x_tr, DIGITS_MEAN, DIGITS_STD)
    xf_te = preprocess(x_te, DIGITS_MEAN, DIGITS_STD)

    torch.manual_seed(SEED)
    model = SlimDigitsNet(classes=10)
    duration = train_slimmable(model, xf_tr, y_tr, epochs=EPOCHS, seed=SEED)
    log(f"  digits: trained {EPOCHS} epochs in {duration:.1f} s")

    widths = export_family(folder, "digits", model, INPUT_SHAPE, xf_te[:4],
                           holdout=(xf_te, y_te), log=log)
    accs = [w["top1"] for w in widths]
    rising = all(a <= b for a, b in zip(accs, accs[1:]))
    note = (
        f"Trained here from a seeded init (torch seed {SEED}) for {EPOCHS} epochs of SGD on the "
        f"{len(y_tr)}-image training split, all four widths per step; batch norm folded per width."
    )
    if not rising:
        note += (
            " Accuracy does not rise strictly with width on this 540-image split: the widths "
            "differ by a few images only, within the noise of so small a test set."
        )
    manifest = {
        "schema": 1,
        "family": "digits",
        "description": "Slimmable 3-layer CNN for 8x8 handwritten digits (0-9); a small, fast family for tests and demos",
        "input_shape": list(INPUT_SHAPE),
        "classes": [str(i) for i in range(10)],
        "weights": "trained",
        "weights_note": note,
        "preprocess": {"mean": DIGITS_MEAN, "std": DIGITS_STD},
        "dataset": {
            "name": "UCI optical recognition of handwritten digits, as shipped by scikit-learn "
                    "1.x (load_digits); pixels 0..16 stored as u8 round(p * 255 / 16)",
            "license": "CC BY 4.0",
            "split": f"held-out test split: 30% stratified, seed {SEED} ({len(y_te)} images)",
            "holdout_inputs": "holdout_x.npy",
            "holdout_labels": "holdout_y.npy",
        },
        "training": {
            "framework": f"torch {torch_version}",
            "method": "slimmable, switchable BN per width: all 4 widths each step (sandwich of the "
                      "fixed widths), width 1.0 on labels, narrower widths by in-place distillation "
                      "from width 1.0; per-width BN statistics recalibrated on the training split",
            "seed": SEED,
            "epochs": EPOCHS,
            "duration_s": round(duration, 1),
        },
        "widths": widths,
    }
    finish(folder, manifest, model, log=log)
    (folder / "READY").write_text("")
    return manifest
