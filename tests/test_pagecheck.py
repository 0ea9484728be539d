from lorafair import pagecheck


def test_detects_missing_image_broken_link_and_error_output(tmp_path, monkeypatch):
    monkeypatch.setattr(pagecheck, "toc_pages", lambda root=None: ["book/a", "book/b", "book/c"])
    d = tmp_path / "book"
    d.mkdir()
    (d / "ok.png").write_bytes(b"png")
    (d / "a.html").write_text('<h1 id="top">A</h1><img src="ok.png"><a href="b.html#sec">b</a><a href="https://x.org">x</a>')
    (d / "b.html").write_text('<h2 id="other">B</h2><img src="missing.png"><a href="nowhere.html">n</a>'
                              '<div class="cell_output output error">Traceback (most recent call last)</div>')
    problems = pagecheck.check(tmp_path)
    text = "\n".join(problems)
    assert "book/c: page missing" in text
    assert "missing image missing.png" in text
    assert "broken link nowhere.html" in text
    assert "broken anchor b.html#sec" in text
    assert "b.html: shows an error output" in text
    assert not any(p.startswith("book/a.html") and "ok.png" in p for p in problems)


def test_a_script_from_the_network_fails_the_page(tmp_path, monkeypatch):
    """Today's MathJax-from-a-CDN pages fail; a page whose scripts are all served by the book passes."""
    monkeypatch.setattr(pagecheck, "toc_pages", lambda root=None: ["book/a", "book/b"])
    d = tmp_path / "book"
    (d / "_static").mkdir(parents=True)
    (d / "_static" / "tex-chtml.js").write_text("")
    (d / "a.html").write_text('<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js">'
                              '</script><p>\\(\\Delta W = BA\\)</p>')
    (d / "b.html").write_text('<script defer src="_static/tex-chtml.js"></script>'
                              '<link rel="stylesheet" href="_static/missing.css">')
    problems = pagecheck.check(tmp_path)
    assert any(p.startswith("book/a.html: loads a script or stylesheet from the network: https://cdn.jsdelivr")
               for p in problems)
    assert "book/b.html: missing script or stylesheet _static/missing.css" in problems
    assert not any("tex-chtml.js" in p for p in problems)


def test_the_builders_paths_in_a_published_file_are_found(tmp_path, monkeypatch):
    from lorafair.notebook import scrub_paths
    import nbformat

    d = tmp_path / "_sources"
    d.mkdir()
    (d / "a.ipynb").write_text('{"metadata": {"papermill": {"input_path": "/home/alice/lorafair/notebooks/a.py"}}}')
    (d / "b.ipynb").write_text('{"cells": []}')
    assert pagecheck.builder_paths(tmp_path, ["/home/alice"]) == ["_sources/a.ipynb: names the builder's path /home/alice"]
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"input_path": str(pagecheck.REPO_ROOT / "notebooks" / "a.py")}
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text=f"warning in {pagecheck.REPO_ROOT}/lib/x.py")]
    nb.cells.append(cell)
    scrub_paths(nb)
    assert nb.metadata["papermill"]["input_path"] == "notebooks/a.py"
    assert str(pagecheck.REPO_ROOT) not in nb.cells[0].outputs[0]["text"]


# --- the reader: chromium at a desktop and a phone width (skipped where chromium is missing) -------

def _reader_available():
    import shutil

    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return bool(shutil.which("chromium") or shutil.which("chromium-browser"))


needs_chromium = __import__("pytest").mark.skipif(not _reader_available(), reason="needs chromium and playwright")

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body {{margin: 0}} main {{max-width: 640px; margin: 0 auto; padding: 0 8px}}
.scroll {{overflow-x: auto}} .grey {{color: #bbbbbb}} img {{max-width: 100%; height: auto}}</style>{head}</head>
<body><main><article class="bd-article">{body}</article></main></body></html>"""

WIDE = "<table><thead><tr>" + "".join(f"<th>column {i}</th>" for i in range(14)) + "</tr></thead><tbody><tr>" \
       + "".join("<td>0.130&nbsp;±&nbsp;0.007</td>" for _ in range(14)) + "</tr></tbody></table>"


def _png(path, width, dpi, min_font=None):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if min_font is not None:
        info.add_text("lorafair:min_font_pt", str(min_font))
    Image.new("RGB", (width, width // 2), "white").save(path, dpi=(dpi, dpi), pnginfo=info)


def _site(tmp_path, pages):
    d = tmp_path / "book"
    d.mkdir()
    for name, (head, body) in pages.items():
        (d / f"{name}.html").write_text(PAGE.format(head=head, body=body))
    return d


@needs_chromium
def test_the_reader_fails_each_problem_a_reader_hits(tmp_path, monkeypatch):
    """Today's problems, one fixture page each, and the same content fixed."""
    d = _site(tmp_path, {
        "net": ('<script src="https://cdn.example.org/mathjax.js"></script>', "<p>text</p>"),
        "tex": ("", '<p>LoRA adds <span class="math">\\(\\Delta W = BA\\)</span> to a weight.</p>'),
        "wide": ("", f"<div>{WIDE}</div>"),
        "ref": ("", '<p>As <span class="xref std std-numref">fig-forest</span> shows, and {numref}`tbl-x`.</p>'),
        "emoji": ("", "<p>options 🟠 🟡 🟢</p>"),
        "fig": ("", '<figure><img src="small.png"><figcaption class="grey">Fig. 1: pale</figcaption></figure>'
                    '<img src="blurry.png">'),
        "quote": ("", "<p>the label is the mean score</p><blockquote><p>0.5, and each flag</p></blockquote>"),
        "frame": ("", "<table><thead><tr><th></th><th>worst_group_accuracy</th><th>n</th></tr></thead><tbody>"
                      "<tr><th>0</th><td>nan</td><td>57.0</td></tr><tr><th>1</th><td>0.5</td><td>12.0</td></tr>"
                      "<tr><th>2</th><td>0.4</td><td>30.0</td></tr></tbody></table>"),
        "long": ("", "<table><caption>every seed</caption><thead><tr><th>seed</th></tr></thead><tbody>"
                     + "".join(f"<tr><td>{i}</td></tr>" for i in range(40)) + "</tbody></table>"
                     "<details><summary>folded</summary><table><caption>folded seeds</caption><thead><tr><th>seed</th>"
                     "</tr></thead><tbody>" + "".join(f"<tr><td>{i}</td></tr>" for i in range(40))
                     + "</tbody></table></details>"),
    })
    _png(d / "small.png", 1300, 100)  # 13 inches of 10-pt text in a 624 px column
    _png(d / "blurry.png", 600, 100)  # one pixel per CSS pixel
    monkeypatch.setattr(pagecheck, "toc_pages", lambda root=None: [f"book/{p.stem}" for p in sorted(d.glob("*.html"))])
    text = "\n".join(pagecheck.check(tmp_path, reader=True))
    assert "book/net.html: requests https://cdn.example.org/mathjax.js from the network" in text
    assert "book/tex.html: raw TeX in the rendered text" in text
    assert "book/wide.html at 1280 px: a table" in text and "without a scroll container" in text
    assert "book/wide.html at 390 px: a table" in text
    assert "book/ref.html: an unresolved reference: 'fig-forest'" in text
    assert "an unresolved reference: 'As fig-forest shows, and {numref}`tbl-x`.'" in text or "{numref}" in text
    assert "emoji LARGE ORANGE CIRCLE (U+1F7E0) shows as a box" in text
    assert "book/fig.html: figure small.png: its smallest text (10 pt at 100 dpi) shows" in text
    assert "book/fig.html: figure blurry.png: 600 px shown 600 px wide" in text
    assert "figure small.png: 1300 px" not in text and "figure blurry.png: its smallest text" not in text
    assert "book/fig.html: caption 'Fig. 1: pale' has contrast" in text
    assert "book/quote.html: a block quote" in text
    assert "identifiers as column names (worst_group_accuracy)" in text
    assert "row numbers" in text and "1 cells reading nan/None" in text and "whole numbers written as floats" in text
    assert "table 'every seed' shows 40 rows unfolded" in text and "folded seeds" not in text


@needs_chromium
def test_the_reader_passes_the_same_content_fixed(tmp_path, monkeypatch):
    d = _site(tmp_path, {
        "ok": ("", "<p>LoRA adds a low-rank update to a weight; the label is whether the mean score is above 0.5.</p>"
                   f'<div class="scroll">{WIDE}</div>'
                   '<p>As <a href="#f"><span class="xref std std-numref">Fig. 1</span></a> shows.</p>'
                   "<p>options [large orange circle] [large yellow circle]</p>"
                   '<figure id="f"><img src="sharp.png" width="600"><figcaption>Fig. 1: dark</figcaption></figure>'
                   "<table><thead><tr><th>worst-group accuracy</th><th>n</th></tr></thead><tbody>"
                   "<tr><td>-</td><td>57</td></tr><tr><td>0.5</td><td>12</td></tr></tbody></table>"),
    })
    _png(d / "sharp.png", 1200, 200, min_font=7)
    monkeypatch.setattr(pagecheck, "toc_pages", lambda root=None: ["book/ok"])
    shots = tmp_path / "shots"
    assert pagecheck.check(tmp_path, screenshots=shots) == []
    from PIL import Image

    for w in (1280, 390):
        with Image.open(shots / f"book_ok-{w}.png") as im:  # a full-page screenshot at each width
            assert im.size[0] == w and im.size[1] >= 300


def test_tables_and_figures_follow_the_reader_style():
    """Tables: words for names, no row numbers, counts as whole numbers, "-" for a missing value,
    numbered captions; figures: capped at the column, titles wrapped, no font below the minimum."""
    import re
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from lorafair import plots

    plots.setup()
    html = plots.table(pd.DataFrame({"worst_group_accuracy": [0.51234, None], "n": [57.0, 12.0]}),
                       caption="A table").to_html()
    assert "worst group accuracy" in html and ">0.512<" in html and ">-<" in html and ">57<" in html
    assert "57.0" not in html and "Table 1. A table" in html
    assert "Table 2. Another" in plots.table(pd.DataFrame({"a": [1]}), caption="Another").to_html()
    fig, _ = plots.subplots(1, 3, figsize=(13, 4))
    assert fig.get_figwidth() == plots.COLUMN_IN
    t = plots._suptitle(fig, "a very long title " * 10)
    assert max(len(line) for line in t.get_text().splitlines()) < 120
    plots.plt.close(fig)
    src = (Path(plots.__file__)).read_text()
    sizes = [float(x) for x in re.findall(r"fontsize=(\d+(?:\.\d+)?)", src)]
    assert sizes and min(sizes) >= plots.MIN_FONT_PT
    assert "plt.subplots(" not in src.replace("return plt.subplots(", "")
    # the smallest figure text, shown in a 672 px column, is what the page check accepts
    assert plots.MIN_FONT_PT * 672 / (72 * plots.COLUMN_IN) >= pagecheck.MIN_TEXT_PX
