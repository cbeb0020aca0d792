"""Inference fast paths: the CPU kernels a model runs at inference, kept out of its definition.

:mod:`iclbench.model` defines the decoder as the textbook GPT-2 network, the function training
differentiates. :mod:`iclbench.kernels.cpu` replaces its blocks at inference with blocks of the
same submodules and function that run oneDNN's fused float32 linear layer with packed weights
(:class:`~iclbench.kernels.cpu.CpuBlock`, put in by :func:`~iclbench.kernels.cpu.fast_inference`,
which every variant's inference hook calls).
"""
