"""int8: Q8BERT quantization-aware training and real int8 inference (Zafrir et al. 2019).

- :mod:`.options`: :class:`QuantOptions`, the variant's options and their defaults;
- :mod:`.qat`: fake quantization and quantization-aware training (the training side);
- :mod:`.convert`: :func:`to_int8`, QAT or float model to the int8 layers and blocks of
  :mod:`iclbench.kernels.int8` (the inference side: fbgemm and oneDNN int8 kernels);
- :mod:`.io`: int8 model files (registers the ``int8`` model format);
- :mod:`.variant`: :class:`Int8Variant`, registered as ``int8`` in
  :data:`iclbench.variants.EXTRA_VARIANTS`.
"""

from iclbench.kernels.int8 import is_int8
from iclbench.variants.int8.convert import to_int8
from iclbench.variants.int8.io import int8_options, int8_skeleton, load_int8, save_int8
from iclbench.variants.int8.options import QuantOptions
from iclbench.variants.int8.qat import QATEmbedding, QATLinear, fake_quantize, prepare_qat
from iclbench.variants.int8.variant import Int8Variant

__all__ = ["Int8Variant", "QATEmbedding", "QATLinear", "QuantOptions", "fake_quantize",
           "int8_options", "int8_skeleton", "is_int8", "load_int8", "prepare_qat", "save_int8",
           "to_int8"]
