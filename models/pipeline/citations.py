"""Published accuracies for families whose accuracy cannot be measured here.

Every number carries its source. Keys: width -> (top1 as a fraction, accuracy_note).

For the CIFAR-shaped SlimResNet only one per-width number could be found for this build: the
Slim Scheduler paper's abstract gives 70.3% on CIFAR-100 for its slimmest width. Its values for
the wider widths could not be retrieved, so they are not invented: the wider widths carry the
same cited 70.3%, marked as a lower bound (the abstract describes the slimmest width as the one
that *drops* accuracy), never as that width's own result. Replace them when a source is found.
"""

SLIM_SCHEDULER = (
    "Harshbarger and Chidambaram, 'Slim Scheduler: A Runtime-Aware RL and Scheduler System for "
    "Efficient CNN Inference', arXiv:2510.09018, 2025"
)

_SLIMMEST = (
    f"cited: {SLIM_SCHEDULER}, abstract: 70.3% top-1 on CIFAR-100 for the slimmest SlimResNet "
    "width available, taken here to be 0.25x"
)
_LOWER_BOUND = (
    f"cited LOWER BOUND, not this width's own result: {SLIM_SCHEDULER} gives 70.3% on CIFAR-100 "
    "only for its slimmest width and describes choosing that width as dropping accuracy, so wider "
    "widths are at least as accurate there; the paper's value for this width could not be retrieved"
)

CIFAR_SLIMRESNET = {
    0.25: (0.703, _SLIMMEST),
    0.5: (0.703, _LOWER_BOUND),
    0.75: (0.703, _LOWER_BOUND),
    1.0: (0.703, _LOWER_BOUND),
}
