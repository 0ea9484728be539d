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
