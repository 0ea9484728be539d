"""lorafair: does LoRA change the fairness of large models? A reproducible study.

It re-implements, checks and extends the original study: Ding, Liu, Peetathawatchai, Isik and
Koyejo, "On Fairness of Low-Rank Adaptation of Large Models" (arXiv 2405.17512); "the original
study" in the docstrings is that paper and its published code (book/credits.md).

Registries: ``methods`` (adaptation methods), ``models`` (model specs and ``adapt``), ``data``
(dataset loaders), ``metrics`` (metrics and their directions). Experiments: ``splits`` (every split
design), ``experiments`` (classification runs), ``generation`` (pronoun task and token-bias probe),
``mia`` (membership-inference attacks), ``chapters`` (each chapter's grid of runs), ``sweep`` (the one
runner), ``runs`` (the run store), ``train``, ``precision``. Reading: ``findings``, ``plots``.
Tools: ``assets``, ``profiles``, ``notebook``, ``bench``, ``cpubench``, ``estimate``, ``pagecheck``,
``cli``. The book's methods chapter ("Extending the study") says which file an extension touches.
"""

__version__ = "0.1.0"
