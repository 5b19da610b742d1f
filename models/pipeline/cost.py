"""Cost of one static (cut) network for ONE image.

flops  = 2 x multiply-accumulates of every convolution and linear layer (adds of biases,
         ReLU, residual adds and pooling are not counted, as is usual in the literature).
params = scalars in the deployed graph's weights: conv weights, conv biases (the folded
         batch norms) and the linear layer's weight and bias.
"""

import torch
import torch.nn as nn


@torch.no_grad()
def cost(static_model, input_shape):
    macs = [0]

    def conv_hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        macs[0] += out.shape[1] * out.shape[2] * out.shape[3] * (m.in_channels // m.groups) * k

    def linear_hook(m, inp, out):
        macs[0] += m.in_features * m.out_features

    hooks = []
    for m in static_model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    static_model(torch.zeros((1,) + tuple(input_shape)))
    for h in hooks:
        h.remove()
    params = sum(p.numel() for p in static_model.parameters())
    return 2 * macs[0], params
