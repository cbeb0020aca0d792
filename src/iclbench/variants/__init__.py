"""Model variants: what a name under ``variants:`` (trained), ``swapped:`` or ``finetuned:`` does
to the decoder.

The interface, its registry and the adapter that makes every registered attention a variant are in
:mod:`iclbench.variants.base`. A variant that is not an attention is a module (or package) of this
package that registers itself in :data:`EXTRA_VARIANTS` (:mod:`.int8`); every module whose name does
not start with ``_`` is imported here, so adding one is the module plus its entry in the config.
"""

from __future__ import annotations

from iclbench.variants.base import (
    EXTRA_VARIANTS,
    AttentionVariant,
    Variant,
    check_variants,
    get_variant,
)
from iclbench.registry import import_modules

__all__ = ["EXTRA_VARIANTS", "AttentionVariant", "Variant", "check_variants", "get_variant"]


import_modules(__name__, __path__)  # importing each registers its entries
