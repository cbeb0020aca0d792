"""The float32 decoder block at CPU inference: oneDNN's fused linear layer with packed weights.

:func:`fast_inference` replaces every :class:`~iclbench.model.Block` of a decoder by a
:class:`CpuBlock`: the same submodules (and state-dict keys), the same function, computed

- in eval mode, without autograd, on the CPU, in float32, with plain ``nn.Linear`` layers: by
  oneDNN's float32 linear layer (``mkldnn::_linear_pointwise``, the kernel behind inductor's CPU
  freezing path) on weights packed once for it, with GELU inside the first MLP layer's kernel and
  each residual add inside the kernel of the layer before it (the values differ from MKL's
  ``addmm`` by float rounding, 1e-5: products of 256 numbers are summed in another order);
- otherwise without autograd: GELU in place on the hidden layer and the residual added into the
  block's own tensor (:func:`residual_forward`), the textbook block's numbers bit for bit;
- with autograd (training): the textbook block itself.

The variants' inference hooks (:meth:`iclbench.variants.Variant.for_inference`, ``swap`` and
``convert``, whose fine-tuning scores the model between steps) call :func:`fast_inference`, so
evaluation, profiling and conversion curves run these blocks. A :class:`CpuBlock` trains like a
:class:`~iclbench.model.Block`; it drops its packed weights when it goes back to training
(:meth:`CpuBlock.train`).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from iclbench.model import Block


@functools.cache
def onednn_ops(*names: str) -> bool:
    """Whether this torch build has oneDNN and every op ``names`` (``"namespace::op"``) on the
    CPU; asked once per set of names (forwards ask on every call)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        for name in names:
            namespace, op = name.split("::")
            getattr(getattr(torch.ops, namespace), op)  # raises where the op is not built
    except (AttributeError, RuntimeError):
        return False
    return True


def onednn_linear_available() -> bool:
    """Whether this torch build has oneDNN's float32 linear layer for the CPU
    (``mkldnn::_linear_pointwise``) and its weight packing."""
    return onednn_ops("mkldnn::_linear_pointwise", "mkldnn::_reorder_linear_weight")


def residual_forward(block: nn.Module, x: Tensor) -> Tensor:
    """``x + attn(ln_1(x))``, then ``+ mlp(ln_2(...))``, on ``block``'s submodules (a
    :class:`~iclbench.model.Block`, or an int8 block with the same ones): with autograd the
    textbook forward, or, without, GELU in place on the hidden layer and the residual added into
    the block's own tensor, the same values without two more activation-sized buffers (the
    4x-wide hidden layer is the model's largest; 12% off the whole forward at 8192 tokens with a
    free attention core, in interleaved runs)."""
    x = x + block.attn(block.ln_1(x))
    if torch.is_grad_enabled() or not isinstance(block.mlp[1], nn.GELU):
        return x + block.mlp(block.ln_2(x))
    hidden = block.mlp[0](block.ln_2(x))
    torch.ops.aten.gelu_(hidden, approximate=block.mlp[1].approximate)
    return x.add_(block.mlp[2](hidden))


class PackedWeights(dict):  # type: ignore[type-arg]
    """oneDNN's packed copies of a block's linear weights, by layer name, each with the key of
    the weight it was packed from. A packed weight is opaque memory that cannot be copied: a copy
    of the block (``copy.deepcopy``, pickling) starts empty and packs again on first use."""

    def __deepcopy__(self, memo: dict[int, Any]) -> PackedWeights:
        return PackedWeights()

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (PackedWeights, ())


class CpuBlock(Block):
    """A :class:`~iclbench.model.Block` (its submodules, shared) with the CPU inference paths of
    this module's docstring."""

    def __init__(self, block: Block) -> None:
        nn.Module.__init__(self)  # the block's own submodules, not new ones (Block.__init__)
        self.ln_1, self.attn, self.ln_2, self.mlp = block.ln_1, block.attn, block.ln_2, block.mlp
        #: False: CPU inference without oneDNN's float kernels (benchmarks and tests compare)
        self.use_onednn = True
        self._packed = PackedWeights()
        self.training = block.training

    def forward(self, x: Tensor) -> Tensor:
        if self.onednn(x):
            return self._onednn_forward(x)
        return residual_forward(self, x)

    def _linears(self) -> dict[str, nn.Module]:
        return {"c_attn": self.attn.c_attn, "c_proj": self.attn.c_proj, "fc1": self.mlp[0],
                "fc2": self.mlp[2]}

    def train(self, mode: bool = True) -> CpuBlock:
        """Also drops the packed weights when training starts: fused optimisers (``Adam(...,
        fused=True)``, what :func:`iclbench.train.train` uses) update weights in place without
        bumping their version counter, so the key alone would not see their steps."""
        if mode:
            self._packed.clear()
        return super().train(mode)

    def onednn(self, x: Tensor) -> bool:
        """Whether :meth:`forward` runs :meth:`_onednn_forward` for ``x``: in eval mode, without
        autograd, on the CPU, in float32, with plain ``nn.Linear`` layers (not int8 or
        fake-quantized ones)."""
        return (self.use_onednn and not self.training and not torch.is_grad_enabled()
                and isinstance(self.mlp[1], nn.GELU)
                and x.device.type == "cpu" and x.dtype == torch.float32
                and x.dim() == 3 and onednn_linear_available()
                and all(type(m) is nn.Linear and m.weight.dtype == torch.float32
                        for m in self._linears().values()))

    def _weight(self, name: str, layer: nn.Linear) -> Tensor:
        """``layer``'s weight packed for oneDNN, packed again whenever the weight changes (its
        version counter, bumped by every in-place update such as an optimiser step or
        ``load_state_dict``, its storage and its device are the key). A weight made under
        ``torch.inference_mode`` has no version counter: oneDNN reads it unpacked."""
        w = layer.weight
        if w.is_inference():
            return w.detach()
        key = (w._version, w.data_ptr(), w.device, tuple(w.shape))
        hit = self._packed.get(name)
        if hit is None or hit[0] != key:
            with torch.no_grad():
                hit = (key, torch.ops.mkldnn._reorder_linear_weight(w.detach()))
            self._packed[name] = hit
        return hit[1]

    def _onednn_forward(self, x: Tensor) -> Tensor:
        """The block through oneDNN's float32 linear layer with packed weights: GELU runs inside
        the first MLP layer's kernel and each residual add inside the kernel of the layer before
        it. On the 2-core AVX-512 VM, 2 threads: each layer 1.2-1.6x faster than ``F.linear`` at
        8192 rows of 64 channels, 1.0-1.2x at 1,408."""
        B, T, C = x.shape
        lp = torch.ops.mkldnn._linear_pointwise
        layers = self._linears()
        w = {name: self._weight(name, layer) for name, layer in layers.items()}
        b = {name: layer.bias for name, layer in layers.items()}
        rows = x.reshape(B * T, C).contiguous()
        qkv = lp(self.ln_1(x).reshape(B * T, C), w["c_attn"], b["c_attn"], "none", [], "")
        y = self.attn.attend(qkv.view(B, T, 3 * C)).reshape(B * T, C).contiguous()
        del qkv  # freed before the MLP, as the autograd forward's temporaries are
        h = lp.binary(y, rows, w["c_proj"], b["c_proj"], "add")  # a new tensor: x is left as is
        del y
        hidden = lp(self.ln_2(h), w["fc1"], b["fc1"], "gelu", [], self.mlp[1].approximate)
        return lp.binary(hidden, h, w["fc2"], b["fc2"], "add").view(B, T, C)


def fast_inference(model: nn.Module) -> nn.Module:
    """``model`` (a decoder) with every plain :class:`~iclbench.model.Block` replaced, in place,
    by a :class:`CpuBlock` sharing its submodules; blocks already replaced and other blocks (int8)
    are left as they are. Returns ``model``."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.ModuleList):
        for i, block in enumerate(blocks):
            if type(block) is Block:
                blocks[i] = CpuBlock(block)
    return model
