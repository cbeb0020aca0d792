"""Model variants: what a name under ``variants:`` (trained) or ``swapped:`` does to the decoder.

Every attention variant in :data:`iclbench.attention.ATTENTION` is a model variant whose trained
form builds the decoder with that attention and whose swapped form replaces the attention of a
softmax-trained decoder at inference. Variants that are not an attention (such as int8
quantization) register a :class:`Variant` of their own in :data:`EXTRA_VARIANTS`.
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
    """The default behaviour: ``name`` is an attention variant."""

    def __init__(self, name: str) -> None:
        self.name = name

    def check_options(self, options: Mapping[str, Any], n_head: int, head_dim: int) -> None:
        build_attention(self.name, n_head, head_dim, options)

    def check_swap_options(self, options: Mapping[str, Any], n_head: int, head_dim: int) -> None:
        """Like :meth:`check_options`, for the ``swapped:`` section: also rejects options that
        cannot go into a softmax-trained model (``Attention.check_swap``)."""
        self.check_options(options, n_head, head_dim)
        if "qk_norm" in options:
            raise ValueError("qk_norm comes from the softmax model a variant is swapped into "
                             "(set it under variants.softmax)")
        if self.name in ATTENTION:
            ATTENTION.get(self.name).check_swap(options)

    def model_spec(self, base: ModelSpec, options: Mapping[str, Any]) -> ModelSpec:
        """The shape of the model to train for this variant."""
        return replace(base, attention=self.name, attention_options=dict(options))

    def prepare_training(self, model: Decoder, options: Mapping[str, Any]) -> nn.Module:
        """Called on the freshly built model before training (e.g. to insert fake quantization)."""
        return model

    def for_inference(self, model: Decoder, options: Mapping[str, Any]) -> nn.Module:
        """Called on a loaded trained model before evaluation or profiling (the CPU inference
        blocks of :mod:`iclbench.kernels.cpu`)."""
        return fast_inference(model)

    def swap(self, model: Decoder, options: Mapping[str, Any]) -> nn.Module:
        """Put this variant into a softmax-trained model at inference, without retraining."""
        ATTENTION.get(self.name).check_swap(options)
        model.set_attention(self.name, options)
        return fast_inference(model)

    def check_convert_options(self, options: Mapping[str, Any], n_head: int,
                              head_dim: int) -> None:
        """Like :meth:`check_options`, for the ``finetuned:`` section: the variant goes into a
        trained softmax model (its weights, its own ``qk_norm``) and is trained further, so
        options that only training from scratch gives are fine, ``qk_norm`` is not."""
        self.check_options(options, n_head, head_dim)
        if "qk_norm" in options:
            raise ValueError("qk_norm comes from the softmax model a variant is converted from "
                             "(set it under variants.softmax)")

    def convert(self, model: Decoder, options: Mapping[str, Any]) -> nn.Module:
        """Put this variant into a trained softmax model to fine-tune it (conversion): the same
        hook as :meth:`swap`, without its check that the variant approximates softmax untrained
        (fine-tuning adapts the weights), then :meth:`prepare_training`. The fine-tuning job scores
        the model it returns between steps: the CPU inference blocks."""
        model.set_attention(self.name, options)
        return fast_inference(self.prepare_training(model, options))

    def save(self, model: nn.Module, path: str | Path, options: Mapping[str, Any],
             metadata: Mapping[str, str] | None = None) -> None:
        """Write the trained model; :func:`iclbench.model.load_model` must read it back."""
        save_model(model, path, metadata)  # type: ignore[arg-type]


#: variants that are not attention variants; register an instance with ``EXTRA_VARIANTS.register``
EXTRA_VARIANTS: Registry[Variant] = Registry("variant")


def get_variant(name: str) -> Variant:
    if name in EXTRA_VARIANTS:
        return EXTRA_VARIANTS.get(name)
    if name in ATTENTION:
        return Variant(name)
    known = sorted({*ATTENTION.names(), *EXTRA_VARIANTS.names()})
    raise UnknownNameError(f"unknown variant {name!r}; known are: {', '.join(known)}")


def check_variants(names: Mapping[str, Mapping[str, Any]], where: str) -> None:
    for name in names:
        try:
            get_variant(name)
        except UnknownNameError as err:
            raise UnknownNameError(f"{where}: {err}") from None


# modules that register extra variants (imported last: they subclass Variant)
from iclbench import quant  # noqa: E402,F401  (registers "int8")
