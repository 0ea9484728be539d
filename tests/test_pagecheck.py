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
