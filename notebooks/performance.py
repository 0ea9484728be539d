# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Performance: where a GPU training step's time and memory go (estimated)
#
# The `paper` profile trains ViT-Base, Swin-v2-Large and 7B language models on GPUs. This chapter
# asks what one training step of those architectures costs on a GPU, and what keeps each one below
# the GPU's peak. It is a **model, not a measurement**: the sessions that built this book had no
# GPU. `lorafair bench` measures the same workloads on a real GPU (see {doc}`reproducing`); this
# chapter is what to compare such a measurement with.
#
# **How the estimate is made** (`lorafair.estimate`, also `lorafair bench --estimate`). Each
# architecture is built with its real configuration and trained for one step on *fake tensors*
# (PyTorch's `FakeTensorMode`): every operation runs with shapes and dtypes but no data, so a 7B
# model costs no memory. From that step:
#
# - **Memory**: PyTorch's `MemTracker` records the peak of live tensors by kind: parameters,
#   gradients, AdamW states, activations, temporaries. It does not see the CUDA context, library
#   workspaces or allocator fragmentation, so a real peak is a few GiB higher.
# - **Time, as a roofline**: every operation costs max(FLOPs / peak FLOP/s, bytes moved / memory
#   bandwidth) at the GPU's datasheet peaks. FLOPs come from `torch.utils.flop_counter` (matmuls,
#   convolutions, attention); bytes are the operation's inputs and outputs. Kernels are assumed to
#   run at their roofline, unfused, with no launch gaps. The resulting MFU (counted FLOPs over
#   step time × bf16 peak) is therefore a **ceiling for an eager training loop**: a real eager loop
#   stays below it, and fusion (`torch.compile`) can go above it by removing memory traffic.
#
# The operations fall into five kinds: **matmul** (linear layers, convolutions, batched matmuls;
# compute-bound at these sizes), **attention** (fused SDPA kernels), **cast** (dtype copies, above
# all autocast's bf16 copies of fp32 weights, made again in every forward), **optimizer** (the
# fused AdamW update) and **memory-bound other** (normalisations, activations, element-wise
# operations, reductions, the loss). The kernels are those of PyTorch's CPU dispatch, which matches
# the GPU's in shapes and FLOPs; the GPU's own kernels can differ in how much they read and write.

# %% tags=["parameters"]
profile = "offline"        # smoke | offline | paper; every None below takes the profile's value
scale = None               # paper: the real sizes; tiny: toy sizes (smoke)
gpu = None                 # h200 | h100 | a100 (datasheet peaks)
seq = None                 # tokens per sequence (language models)
steps = None               # the configurations: workload, precision, batch, checkpointing
workers = None             # estimates in parallel 1-thread processes
results_dir = None
force = False              # true: recompute estimates that have a record

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from lorafair import chapters, estimate, plots, sweep
from lorafair.notebook import Text, setup_chapter

P, store = setup_chapter("performance", globals())
spec = estimate.GPUS[P["gpu"]]
configs = chapters.configs("performance", P)["estimates"]
records = sweep.run(store, configs, force=force, workers=P["workers"], desc="estimates")
rows = pd.DataFrame([r.metrics for r in records])
rows["label"] = [f"{r.workload}, {r.precision}{', ckpt' if r.checkpointing else ''}, b{r.batch}"
                 for r in rows.itertuples()]
display(Markdown(f"**Profile `{P['profile']}`**: {len(rows)} estimated training steps at `{P['scale']}` scale "
                 f"on the datasheet peaks of the {spec.name} ({spec.bf16_flops / 1e12:.0f} TFLOP/s dense bf16, "
                 f"{spec.bandwidth / 1e12:.2f} TB/s, {spec.memory / 1e9:.0f} GB = {spec.memory / 2 ** 30:.0f} GiB), "
                 f"records in `{P['results_dir']}/performance/`. Estimated with torch "
                 f"{records[0].meta['environment']['packages']['torch']}, transformers "
                 f"{records[0].meta['environment']['packages']['transformers']}, peft "
                 f"{records[0].meta['environment']['packages']['peft']}."))

# %% [markdown]
# ## The table
#
# One row per configuration. *precision* `autocast` keeps fp32 weights and AdamW states and
# computes in bf16 (the training loop's setting on GPUs, as in the original study); `bf16` stores
# weights and states in bf16. *ckpt*: gradient checkpointing. *MFU* counts the FLOPs of the step
# as executed (a checkpointed step recomputes its forward, and those FLOPs count); *MFU (6N)* is
# the language-model convention, 6 FLOPs per parameter per token for full fine-tuning and 4 for
# LoRA (no weight gradients of frozen matrices), which does not credit recomputation.
#
# See {numref}`fig-perf-time` and {numref}`fig-perf-memory` below.

# %% tags=["hide-input"]
table = pd.DataFrame({
    "configuration": rows["label"],
    "est. step (ms)": rows["est_step_s"] * 1e3,
    "samples/s": rows["est_samples_per_s"],
    "tokens/s": rows["est_tokens_per_s"],
    "MFU ceiling": rows["est_mfu"],
    "MFU (6N)": rows.get("est_mfu_6n"),
    "peak GiB": rows["est_peak_gib"],
    "trainable params": rows["trainable_params"],
})
display(table.style.format({"est. step (ms)": "{:.1f}", "samples/s": "{:,.0f}", "tokens/s": "{:,.0f}",
                            "MFU ceiling": "{:.0%}", "MFU (6N)": "{:.0%}", "peak GiB": "{:.1f}",
                            "trainable params": "{:,}"}, na_rep="").hide(axis="index"))
shares = pd.DataFrame({c: rows.get(f"share_{c.replace(' ', '_').replace('-', '_')}", 0.0)
                       for c in plots.TIME_STYLE}).fillna(0.0)
fig = plots.step_time_shares(shares, list(rows["label"]), spec.name, P["profile"])
glue("perf_time_fig", plots.checked(fig), display=False)
plots.plt.close(fig)
mem = pd.DataFrame({c: rows.get(f"mem_{c}_gib", 0.0) for c in plots.MEMORY_STYLE}).fillna(0.0)
fig = plots.step_memory(mem, list(rows["label"]), spec.name, spec.memory / 2 ** 30, P["profile"])
glue("perf_memory_fig", plots.checked(fig), display=False)
plots.plt.close(fig)

# %% [markdown]
# ```{glue:figure} perf_time_fig
# :name: fig-perf-time
#
# Where the modelled step time goes, per configuration: matmuls (solid), attention (dotted), dtype
# casts (hatched //), other memory-bound operations (crossed) and the optimizer (hatched \\). The
# larger the share that is not matmul or attention, the further the step stays below the GPU's
# peak.
# ```
#
# ```{glue:figure} perf_memory_fig
# :name: fig-perf-memory
#
# Estimated peak memory of one step by kind of tensor: parameters (solid), gradients (dotted),
# AdamW states (hatched \\), activations (crossed) and temporaries (hatched //); the dashed line
# is the GPU's memory. The peak is taken over the whole step, so its parts are those alive at that
# moment (for example, gradients are absent if the peak falls at the end of the forward pass).
# ```

# %% [markdown]
# ## The operations that cost the most
#
# For each configuration, the five operations with the largest modelled time, summed over their
# calls in the step (stored in each record's `predictions.parquet`).

# %% tags=["hide-input"]
tops = []
for r, label in zip(records, rows["label"]):
    ops = r.predictions().head(5)
    tops.append({"configuration": label, "top operations (share of step)": "; ".join(
        f"{o.op} [{o.category}] {o.share:.0%}" for o in ops.itertuples())})
display(pd.DataFrame(tops).style.hide(axis="index"))

# %% [markdown]
# ## What the paper profile costs
#
# Every run of the paper profile, per chapter, from the chapters' grids (`lorafair sweep all --profile
# paper`): its number of runs and the estimated GPU-hours, each run's epochs times its training
# examples divided by the estimated training rate of its architecture and method above (an adapter
# or a head trains at about LoRA's rate; Mistral 7B as Llama-2 7B), plus a fixed allowance for
# loading, evaluation and decoding. These are planning numbers for the scheduler's time requests,
# not measurements.

# %% tags=["hide-input"]
from lorafair import launch

paper_rows = []
for ch in launch.RUN_CHAPTERS:
    rows_ch = launch.listing(ch, "paper")  # the paper store's records, where any, else estimates
    secs = [r["seconds"] for r in rows_ch if r["seconds"]]
    paper_rows.append({"chapter": ch.replace("_", " "), "runs": len(rows_ch),
                       "estimated GPU-hours": sum(secs) / 3600, "runs without an estimate": len(rows_ch) - len(secs)})
paper_cost = pd.DataFrame(paper_rows)
for r in paper_rows:
    key = r["chapter"].replace(" ", "_")
    glue(f"paper_{key}_runs", r["runs"], display=False)
    glue(f"paper_{key}_gpu_hours", round(r["estimated GPU-hours"], 1), display=False)
glue("paper_total_runs", int(paper_cost["runs"].sum()), display=False)
glue("paper_total_gpu_hours", round(float(paper_cost["estimated GPU-hours"].sum()), 1), display=False)
display(paper_cost.style.format({"estimated GPU-hours": "{:.1f}"}).hide(axis="index"))

# %% [markdown]
# ## Reading the estimates
#
# Generated from the records above. The baselines and targets come from the project's planning
# notes: they were measured on an H200 with a plain training loop before this book was written, not
# from its records, and are quoted for comparison only. For the language models those notes count
# 6N FLOPs per token; we read that as applying to LoRA too, so for LoRA rows the comparison scales
# our 4N ceiling to 6N.

# %% tags=["hide-input"]
DESIGN = {  # plain-loop baseline MFU and target MFU on an H200, from the project's planning notes
    "vit_base:full": (0.18, 0.35), "vit_base:lora": (0.14, None), "swinv2_large:full": (0.08, 0.20),
    "llama_7b:lora": (0.47, 0.55), "llama_7b:full": (0.40, 0.45),
}
share_cols = {c: f"share_{c.replace(' ', '_').replace('-', '_')}" for c in plots.TIME_STYLE}
shares_all = rows.reindex(columns=list(share_cols.values())).fillna(0.0)
lines = []
for i, r in enumerate(rows.itertuples()):
    share = {c: float(shares_all.iloc[i][col]) for c, col in share_cols.items()}
    limits = sorted((c for c in share if c not in ("matmul", "attention")), key=lambda c: -share[c])[:2]
    lm = r.workload.startswith("llama")
    text = (f"- **{r.label}**: ceiling {r.est_mfu:.0%} of counted FLOPs"
            + (f", {r.est_mfu_6n:.0%} in 6N/4N counting" if lm else "")
            + f"; matmul and attention take {share['matmul'] + share['attention']:.0%} of the modelled time, "
            + " and ".join(f"{c} {share[c]:.0%}" for c in limits) + ".")
    base, target = DESIGN.get(r.workload, (None, None))
    if base is not None and r.scale == "paper":
        # the planning notes count 6N per token for the language models, LoRA included
        ceiling = (r.est_mfu_6n * (1.5 if r.method == "lora" else 1.0)) if lm else r.est_mfu
        text += (f" Planning notes: plain-loop baseline {base:.0%}" + (f", target {target:.0%}" if target else "")
                 + (f" (in their counting this ceiling is {ceiling:.0%}" if lm else ""))
        if target:
            text += (")" if lm else "") + (". The target is below the eager ceiling." if target < ceiling else
                                           ". The target is above the eager ceiling: only fusion can reach it.")
        else:
            text += (")" if lm else "") + "."
    lines.append(text)
if rows["arch"].eq("swinv2_large").any():
    lines.append("- Swin-v2's attention is not an SDPA kernel: its scaled cosine attention is computed with batched "
                 "matmuls, normalisations and divisions, counted under matmul and memory-bound other. Together with "
                 "the window shifts and partitions, this is why Swin-v2 spends the most time on memory-bound "
                 "operations.")
big = rows[(rows["workload"] == "llama_7b:full") & (rows["precision"] == "autocast")]
if big.empty:  # a profile without the 7B estimate (smoke): the reproducing page says so
    glue("perf_llama_full_peak", Text(f"(not estimated on the {P['profile']} profile)"), display=False)
for r in big.itertuples():
    fits = r.est_peak_gib < spec.memory / 2 ** 30
    glue("perf_llama_full_peak", Text(f"{float(r.est_peak_gib):.1f} GiB at its peak"), display=False)
    lines.append(f"- **Full fine-tuning of the 7B model on one GPU** ({r.label}, the paper profile's setting): "
                 f"estimated peak {r.est_peak_gib:.1f} GiB against {spec.memory / 2 ** 30:.0f} GiB: "
                 + ("it fits" if fits else "it does **not** fit")
                 + f", with parameters {r.mem_parameter_gib:.1f} GiB, gradients {r.mem_gradient_gib:.1f} GiB and "
                 f"AdamW states {r.mem_optstate_gib:.1f} GiB at the peak. The CUDA context and workspaces add a "
                 "few GiB that the model does not see.")
lines.append("- These ceilings assume every kernel runs at its roofline. A measured eager loop is lower (kernel "
             "efficiency, launch gaps); when `lorafair bench --scale paper` has run on a GPU, the gap between its "
             "MFU and this ceiling is the part that better kernels and fewer launches could recover, and the "
             "memory-bound shares above are what fusion (`--compile`) attacks.")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## Exercises
#
# Run the commands from the repository's root after `make setup` (or `make book`), which installs
# the environment in `.venv/`; `.venv/bin/lorafair` is its command (or `source .venv/bin/activate`
# first and type `lorafair`). The estimates are computed on the CPU, no GPU needed.

# %% tags=["remove-cell"]
from lorafair.launch import exercise_cost

glue("perf_ex_cast_cost", Markdown(exercise_cost("performance", P["profile"], {}, P["results_dir"])), display=False)
key = ["workload", "batch", "seq", "checkpointing"]
pair = rows[rows["precision"] == "autocast"].merge(rows[rows["precision"] == "bf16"], on=[k for k in key if k in rows],
                                                   suffixes=("_autocast", "_bf16"))
cast = pd.DataFrame({"workload": pair["workload"], "batch": pair["batch"],
                     "step s, autocast": pair["est_step_s_autocast"], "step s, bf16": pair["est_step_s_bf16"],
                     "autocast / bf16": pair["est_step_s_autocast"] / pair["est_step_s_bf16"],
                     "cast share (autocast)": pair["share_cast_autocast"],
                     "peak GiB, autocast": pair["est_peak_gib_autocast"], "peak GiB, bf16": pair["est_peak_gib_bf16"]})
glue("perf_ex_cast_table", plots.table(cast), display=False)
glue("perf_ex_cast_answer", Markdown(
    (f"Across the {len(cast)} workloads estimated both ways, an autocast step takes {cast['autocast / bf16'].min():.2f} "
     f"to {cast['autocast / bf16'].max():.2f} times as long as a pure-bf16 step, and casts are "
     f"{cast['cast share (autocast)'].min():.0%} to {cast['cast share (autocast)'].max():.0%} of the autocast step. "
     f"The peak memory grows by {(cast['peak GiB, autocast'] - cast['peak GiB, bf16']).min():.1f} to "
     f"{(cast['peak GiB, autocast'] - cast['peak GiB, bf16']).max():.1f} GiB: fp32 weights, gradients and AdamW "
     "states. Autocast is still the study's setting because fine-tuning with small learning rates needs the fp32 "
     "master weights: a bf16 weight cannot hold an update smaller than its last bit.")
    if len(cast) else "This profile has no workload estimated in both precisions."), display=False)

# %% [markdown]
# ````{exercise}
# :label: perf-ex-cast
#
# **Autocast's price.** The table above estimates some workloads both in bf16 autocast (fp32
# weights, bf16 matmuls) and in pure bf16. Re-run the chapter:
#
# ```
# .venv/bin/lorafair notebook performance
# ```
#
# Cost on two cores: {glue:md}`perf_ex_cast_cost`. How much of each autocast step is spent on
# casts, how much memory do fp32 weights and AdamW states add, and why does the original study's
# setting still make sense for fine-tuning?
# ````
#
# ````{solution} perf-ex-cast
# :class: dropdown
#
# {glue:md}`perf_ex_cast_answer`
#
# ```{glue:} perf_ex_cast_table
# ```
# ````
