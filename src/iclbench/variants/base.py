"""The model-variant interface, its registry, and the adapter that makes every attention a variant.

A :class:`Variant` is what a name under ``variants:`` (trained), ``swapped:`` or ``finetuned:``
does to the decoder, through hooks the jobs call: the shape to train (:meth:`~Variant.model_spec`),
the model before training (:meth:`~Variant.prepare_training`), the inference model of a trained
one (:meth:`~Variant.for_inference`), of a softmax one (:meth:`~Variant.swap`) or the model to
fine-tune from one (:meth:`~Variant.convert`), how it is saved (:meth:`~Variant.save`), and the
checks of its config section. Every inference hook ends in a model whose blocks run the CPU fast
paths (:mod:`iclbench.kernels`).

Every attention in :data:`iclbench.attention.ATTENTION` is a variant through
:class:`AttentionVariant`; adding one is a module that registers an
:class:`~iclbench.attention.Attention` (and a config line). A variant that is not an attention
(int8) registers an instance of its own subclass in :data:`EXTRA_VARIANTS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn

from iclbench.attention import ATTENTION, build_attention
from iclbench.kernels.cpu import fast_inference
from iclbench.model import Decoder, ModelSpec, save_model
from iclbench.registry import Registry, UnknownNameError


class Variant:
    """The hooks of one variant; the defaults leave the float decoder as it is."""

    def __init__(self, name: str) -> None:
        self.name = name

    def check_options(self, options: Mapping[str, Any], n_head: int, head_dim: int) -> None:
        """Raise ValueError (or TypeError) for options the variant cannot take (``variants:``)."""
        raise NotImplementedError

    def check_swap_options(self, options: Mapping[str, Any], n_head: int, head_dim: int) -> None:
        """Like :meth:`check_options`, for the ``swapped:`` section: also rejects options that
        cannot go into a softmax-trained model."""
        self.check_options(options, n_head, head_dim)
        if "qk_norm" in options:
            raise ValueError("qk_norm comes from the softmax model a variant is swapped into "
                             "(set it under variants.softmax)")

    def check_convert_options(self, options: Mapping[str, Any], n_head: int,
                              head_dim: int) -> None:
        """Like :meth:`check_options`, for the ``finetuned:`` section: the variant goes into a
        trained softmax model (its weights, its own ``qk_norm``) and is trained further, so
        options that only training from scratch gives are fine, ``qk_norm`` is not."""
        self.check_options(options, n_head, head_dim)
        if "qk_norm" in options:
            raise ValueError("qk_norm comes from the softmax model a variant is converted from "
                             "(set it under variants.softmax)")

    def check_steps(self, options: Mapping[str, Any], steps: int, where: str,
                    steps_key: str) -> None:
        """Raise ValueError where the variant cannot train ``steps`` steps with ``options`` (its
        config section ``where``; ``steps_key`` names where the steps come from)."""

    def model_spec(self, base: ModelSpec, options: Mapping[str, Any]) -> ModelSpec:
        """The shape of the model to train for this variant."""
        return base

    def prepare_training(self, model: Decoder, options: Mapping[str, Any]) -> nn.Module:
        """Called on the freshly built model before training (e.g. to insert fake quantization)."""
        return model

    def for_inference(self, model: Decoder, options: Mapping[str, Any]) -> nn.Module:
        """Called on a loaded trained model before evaluation or profiling."""
        return fast_inference(model)

    def swap(self, model: Decoder, options: Mapping[str, Any]) -> nn.Module:
        """Put this variant into a softmax-trained model at inference, without retraining."""
        raise NotImplementedError

    def convert(self, model: Decoder, options: Mapping[str, Any]) -> nn.Module:
        """Put this variant into a trained softmax model to fine-tune it (conversion); the
        fine-tuning job also scores the model it returns between steps."""
        raise NotImplementedError

    def save(self, model: nn.Module, path: str | Path, options: Mapping[str, Any],
             metadata: Mapping[str, str] | None = None) -> None:
        """Write the trained model; :func:`iclbench.model.load_model` must read it back."""
        save_model(model, path, metadata)  # type: ignore[arg-type]


class AttentionVariant(Variant):
    """``name`` is an attention variant: the decoder with that attention."""

    def check_options(self, options: Mapping[str, Any], n_head: int, head_dim: int) -> None:
        build_attention(self.name, n_head, head_dim, options)

    def check_swap_options(self, options: Mapping[str, Any], n_head: int, head_dim: int) -> None:
        super().check_swap_options(options, n_head, head_dim)
        ATTENTION.get(self.name).check_swap(options)

    def model_spec(self, base: ModelSpec, options: Mapping[str, Any]) -> ModelSpec:
        return replace(base, attention=self.name, attention_options=dict(options))

    def swap(self, model: Decoder, options: Mapping[str, Any]) -> nn.Module:
        ATTENTION.get(self.name).check_swap(options)
        model.set_attention(self.name, options)
        return fast_inference(model)

    def convert(self, model: Decoder, options: Mapping[str, Any]) -> nn.Module:
        """The same hook as :meth:`swap`, without its check that the variant approximates
        softmax untrained (fine-tuning adapts the weights), then :meth:`prepare_training`."""
        model.set_attention(self.name, options)
        return fast_inference(self.prepare_training(model, options))


#: variants that are not attention variants; register an instance with ``EXTRA_VARIANTS.register``
EXTRA_VARIANTS: Registry[Variant] = Registry("variant")


def get_variant(name: str) -> Variant:
    if name in EXTRA_VARIANTS:
        return EXTRA_VARIANTS.get(name)
    if name in ATTENTION:
        return AttentionVariant(name)
    known = sorted({*ATTENTION.names(), *EXTRA_VARIANTS.names()})
    raise UnknownNameError(f"unknown variant {name!r}; known are: {', '.join(known)}")


def check_variants(names: Mapping[str, Mapping[str, Any]], where: str) -> None:
    for name in names:
        try:
            get_variant(name)
        except UnknownNameError as err:
            raise UnknownNameError(f"{where}: {err}") from None
