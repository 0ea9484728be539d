"""Generation fairness (book chapter ``generation_fairness``), on the same seams as classification.

- ``pronoun``: the pronoun-bias task (data, scoring of a generation, rates and paired differences);
- ``probe``: the answer-token bias probe (prompt families, candidate scoring, bias index);
- ``lm``: causal-LM encoding and decoding (supervised examples, packed corpora, greedy decoding,
  answer log-likelihoods);
- ``runs``: the hashed configuration and computation of one pronoun or probe run, on the shared
  model and method registries, ``train.fit_lm`` and the sweep runner.

The names below are re-exported so that chapters can write ``generation.X``.
"""

from .lm import answer_loglik, encode_translation, generate, pack_corpus, shorten
from .probe import (PLANT_DESIGN, PROBE_BY_ID, PROBE_PROMPTS, SPECIAL_MC, SPECIAL_YN, ProbePrompt, bias_index, readable,
                    choice_distribution, first_option_difference, flip_rate_difference, flips, gender_preference,
                    load_probe_corpus, mean_flip_rate, order_variants,
                    probe_instances, probe_prompt_ids, run_probe, total_variation)
from .pronoun import (CATEGORIES, MT_GENDER_COMMIT, MT_GENDER_FILES, MT_GENDER_URL, PREDISPOSITIONS,
                      PRONOUN_TASKS, PRONOUNS, STEREOTYPE_EXCESS, WINOGENDER_BLOCK, PronounTask,
                      fetch_mt_gender, likelihood_preference, load_mt_gender_task, load_occupations_task,
                      load_pronoun_task, load_winobias_task, occupations, OCCUPATION_FRAMES,
                      paired_rate_difference, pronoun_category, pronoun_predictions, pronoun_ratios,
                      read_pairs, scored_text, training_lines, winobias_items)
from .runs import compute_probe_run, compute_pronoun_run, lm_methods, probe_config, pronoun_config

__all__ = [n for n in dir() if not n.startswith("_")]
