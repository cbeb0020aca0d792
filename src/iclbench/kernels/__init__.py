"""Inference fast paths: the CPU kernels a model runs at inference, kept out of its definition.

:mod:`iclbench.model` defines the decoder as the textbook GPT-2 network, the function training
differentiates. These modules replace its blocks at inference with blocks of the same submodules
and function that run fused kernels:

- :mod:`iclbench.kernels.cpu`: float32 blocks through oneDNN's linear layer with packed weights
  (:class:`~iclbench.kernels.cpu.CpuBlock`, put in by :func:`~iclbench.kernels.cpu.fast_inference`,
  which every variant's inference hook calls);
- :mod:`iclbench.kernels.int8`: the int8 layers and blocks (fbgemm and oneDNN int8 kernels) that
  the int8 variant converts a model to (:mod:`iclbench.variants.int8`).

Nothing here imports a variant.
"""
