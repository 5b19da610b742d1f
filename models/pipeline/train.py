"""Training of the slimmable digits network.

Every step runs all four widths on the same batch (Slimmable Networks, Yu et al. 2019, with
switchable batch norm): width 1.0 learns from the labels; 0.75, 0.5 and 0.25 learn by in-place
distillation from width 1.0's (detached) soft predictions (Yu & Huang, Universally Slimmable
Networks, ICCV 2019). Gradients of all widths are summed before one SGD step. Afterwards the
batch-norm statistics of every width are recomputed exactly over the training set.
"""

import time

import numpy as np
import torch
import torch.nn.functional as F

from slimmable import WIDTHS, calibrate_bn, set_width


def shift_augment(x, gen, bg, max_shift=1):
    """Random translation by up to max_shift pixels, per image; uncovered pixels get bg."""
    n, _, h, w = x.shape
    pad = F.pad(x, (max_shift,) * 4, value=bg)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    out = torch.empty_like(x)
    for k in range(n):
        out[k] = pad[k, :, dy[k] : dy[k] + h, dx[k] : dx[k] + w]
    return out


def train_slimmable(model, x_train, y_train, epochs=40, batch=64, lr=0.1, seed=0):
    """Train in place; returns the wall-clock seconds it took."""
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(x_train)
    y = torch.from_numpy(y_train)
    bg = float(x.min())  # a 0 pixel after preprocessing: the digits' background
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps_per_epoch = (len(x) + batch - 1) // batch
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    narrow = sorted((w for w in WIDTHS if w != 1.0), reverse=True)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            xb, yb = shift_augment(x[idx], gen, bg), y[idx]
            opt.zero_grad(set_to_none=True)
            set_width(model, 1.0)
            logits = model(xb)
            F.cross_entropy(logits, yb).backward()
            soft = F.softmax(logits.detach(), dim=1)
            for w in narrow:
                set_width(model, w)
                loss = -(soft * F.log_softmax(model(xb), dim=1)).sum(1).mean()
                loss.backward()
            opt.step()
            sched.step()
    set_width(model, 1.0)
    calibrate_bn(model, x)
    return time.perf_counter() - t0


@torch.no_grad()
def accuracy(model, x, y, w):
    model.eval()
    set_width(model, w)
    pred = model(torch.from_numpy(x)).argmax(1).numpy()
    set_width(model, 1.0)
    return float(np.mean(pred == y))
