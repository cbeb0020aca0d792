"""iclbench: in-context learning accuracy under cheaper transformer inference.

Registries: :data:`iclbench.tasks.TASKS`, :data:`iclbench.attention.ATTENTION`,
:data:`iclbench.baselines.BASELINES`, :data:`iclbench.figures.FIGURES`. The Snakemake rules call
:mod:`iclbench.jobs`.
"""

__version__ = "0.1.0"
