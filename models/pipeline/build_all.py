"""Rebuild every model family under models/ from scratch, with fixed seeds, and verify it.

    bash models/build.sh          (makes models/.venv, then runs this file)
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cifar_family  # noqa: E402
import digits_family  # noqa: E402
from data import SEED  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent


def main(argv):
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    version = torch.__version__.split("+")[0]
    wanted = argv or ["digits", "cifar-slimresnet"]
    builders = {"digits": digits_family.build, "cifar-slimresnet": cifar_family.build}
    t0 = time.perf_counter()
    for name in wanted:
        t = time.perf_counter()
        print(f"{name}: building", flush=True)
        builders[name](MODELS, version, log=lambda s: print(s, flush=True))
        print(f"{name}: built and verified in {time.perf_counter() - t:.1f} s", flush=True)
    print(f"all done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
