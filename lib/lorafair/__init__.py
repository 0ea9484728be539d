"""lorafair: does LoRA change the fairness of large models? A reproducible study.

Modules (one responsibility each): assets, data, models, precision, train, runs, metrics, mia,
generation, experiments, findings, plots, profiles, bench, cpubench, estimate, notebook, pagecheck,
cli. See the book's methods chapter and the docstring of each module.
"""

__version__ = "0.1.0"
