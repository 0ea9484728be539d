"""lorafair: does LoRA change the fairness of large models? A reproducible study.

Modules (one responsibility each): assets, data, models, train, runs, metrics, plots, profiles,
experiments, notebook, cli. See book/methods.md and docs in each module.
"""

__version__ = "0.1.0"
