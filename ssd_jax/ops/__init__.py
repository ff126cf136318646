"""Array kernels under the model layers, NHWC, with the formulations XLA:CPU runs fast.

``conv``: :func:`conv.conv2d` (XLA's, Winograd, strided or depthwise per layer) and
:func:`conv.add_bias`; ``winograd``: Winograd F(4x4, 3x3) 3x3 convolutions; ``pooling``:
PyTorch ``MaxPool2d``; ``batch_norm``: training-mode batch normalisation; ``reduce`` and
``windows``: the channel sums and strided window views these share; ``platform``: the
per-platform choice, made at lowering, between the CPU formulations and XLA's generic ops.
Hand-written gradients give the same values as autodiff up to float rounding.
"""
