"""Check the built book like a reader, offline.

From the HTML files (no browser): every page of the table of contents exists, every image and
internal link resolves, no page loads a script or stylesheet from the network (MathJax included),
no page shows an error output, no published file names the builder's absolute paths.

In a browser (Debian's chromium driven by playwright; ``reader=True``), every page at a desktop and
a phone width, after its scripts (MathJax) have run:

- no request leaves the machine (each is blocked and named);
- no raw TeX is left in the rendered text (a formula MathJax did not typeset);
- no table, figure, formula or code block is wider than the text column unless it sits in a
  horizontal scroll container, and the page itself never scrolls sideways;
- no reference is unresolved (a cross-reference without its link, a role printed as text);
- every character has a glyph in an installed font (fontconfig), and no emoji needs a colour-emoji
  font the reader may not have;
- figure text is readable at the rendered width (from the PNG's dpi and the smallest font size the
  figure style writes into it) and figures carry enough pixels for high-density screens;
- captions have a text contrast of at least 4.5:1 (WCAG AA);
- a full-page screenshot of each page at each width, for a person to look at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

from .assets import REPO_ROOT
from .errors import LorafairError


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.ids, self.scripts = [], [], set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "img" and a.get("src"):
            self.images.append(a["src"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        if tag == "link" and a.get("href") and "stylesheet" in (a.get("rel") or ""):
            self.scripts.append(a["href"])


def toc_pages(root: Path = REPO_ROOT) -> list[str]:
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    chapters = list(toc.get("chapters", [])) + [c for part in toc.get("parts", []) for c in part.get("chapters", [])]
    pages = [toc["root"]] + [c["file"] for c in chapters]
    return [p.removesuffix(".md").removesuffix(".ipynb") for p in pages]


def check(html_dir: Path | None = None, screenshots: Path | None = None, reader: bool = False) -> list[str]:
    """Every problem found, one line each. ``reader``: also read every page in a browser (needs
    chromium); ``screenshots``: a folder for full-page screenshots (implies ``reader``)."""
    html_dir = Path(html_dir or REPO_ROOT / "_build" / "html")
    problems = []
    parsed = {}
    for page in toc_pages():
        f = html_dir / f"{page}.html"
        if not f.exists():
            problems.append(f"{page}: page missing ({f})")
            continue
        p = _Links()
        text = f.read_text(errors="replace")
        p.feed(text)
        parsed[f] = (p, text)
    for f, (p, text) in parsed.items():
        rel = f.relative_to(html_dir)
        if re.search(r'class="[^"]*(output error|traceback)', text) or "Traceback (most recent call last)" in text:
            problems.append(f"{rel}: shows an error output")
        for src in p.images:
            u = urlparse(src)
            if u.scheme in ("http", "https"):
                problems.append(f"{rel}: image loads from the network: {src}")
            elif u.scheme != "data" and not (f.parent / unquote(u.path)).exists():
                problems.append(f"{rel}: missing image {src}")
        for src in p.scripts:  # a script or stylesheet from the network: the page does not read offline
            u = urlparse(src)
            if u.scheme in ("http", "https") or src.startswith("//"):
                problems.append(f"{rel}: loads a script or stylesheet from the network: {src}")
            elif u.scheme != "data" and not (f.parent / unquote(u.path)).exists():
                problems.append(f"{rel}: missing script or stylesheet {src}")
        for href in p.links:
            u = urlparse(href)
            if u.scheme or href.startswith(("mailto:", "javascript:")):
                continue
            target = (f.parent / unquote(u.path)).resolve() if u.path else f
            if not target.exists():
                problems.append(f"{rel}: broken link {href}")
            elif u.fragment and target in parsed and u.fragment not in parsed[target][0].ids:
                problems.append(f"{rel}: broken anchor {href}")
    problems += builder_paths(html_dir)
    if reader or screenshots is not None:
        problems += read_pages(list(parsed), html_dir, Path(screenshots) if screenshots else None)
    return problems


def builder_paths(html_dir: Path, roots: list[str] | None = None) -> list[str]:
    """Published files (pages, downloadable notebooks, sources) that name an absolute path of the
    machine that built the book: the repository's root or the home directory."""
    import os

    roots = [r for r in (roots or [str(REPO_ROOT), os.path.expanduser("~")]) if r and r != "/"]
    found = []
    for f in sorted(Path(html_dir).rglob("*")):
        if not f.is_file() or f.suffix not in (".html", ".ipynb", ".txt", ".md", ".py", ".json"):
            continue
        text = f.read_text(errors="replace")
        for r in roots:
            if r + "/" in text or f'"{r}"' in text:
                found.append(f"{f.relative_to(html_dir)}: names the builder's path {r}")
                break
    return found


WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
MIN_TEXT_PX = 9.0       # the smallest figure text a reader can read at the rendered width (CSS px)
MIN_PIXEL_RATIO = 1.5   # figure pixels per CSS pixel at desktop width (high-density screens)
MIN_CONTRAST = 4.5      # WCAG AA for body-size text
DEFAULT_FONT_PT = 10.0  # matplotlib's default, for a PNG that does not say its smallest font
MAX_VISIBLE_ROWS = 30   # a table longer than this is folded (a dropdown) or offered as a CSV


def browser_path() -> str:
    b = shutil.which("chromium") or shutil.which("chromium-browser")
    if b is None:
        raise LorafairError("chromium not found: `apt-get install chromium` (Debian), or check without --reader")
    return b


READ_PAGE_JS = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    try { await MathJax.startup.promise; } catch (e) {}
  }
  const col = document.querySelector('main .bd-article') || document.querySelector('article')
              || document.querySelector('main') || document.body;
  const cr = col.getBoundingClientRect();
  const out = {rawtex: [], overflow: [], unresolved: [], chars: '', images: [], captions: [],
               page: document.documentElement.scrollWidth, viewport: window.innerWidth, column: Math.round(cr.width)};
  const skip = el => el.closest('pre, code, script, style, mjx-container, .highlight, textarea, mjx-assistive-mml');
  const tex = /\\[(\[]|\\(frac|Delta|sum|log|mathrm|text|hat|leq?|geq?|times|cdot|alpha|beta|sigma|mathbb|operatorname|left|right|sqrt)(?![a-zA-Z])|\$\$/;
  const role = /\{(numref|ref|cite|cite:p|cite:t|glue|glue:text|term|doc|eq|prf:ref|download)\}`/;
  const chars = new Set();
  const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (w.nextNode()) {
    const n = w.currentNode, p = n.parentElement;
    if (!p || p.closest('script, style, mjx-assistive-mml') || !p.getClientRects().length) continue;
    const t = n.textContent;
    for (const ch of t) if (ch.codePointAt(0) > 0x24F) chars.add(ch);
    if (skip(p) || !col.contains(p)) continue;
    if (tex.test(t)) out.rawtex.push(t.trim().slice(0, 70));
    if (role.test(t) || /\?\?/.test(t) && !p.closest('pre, code')) out.unresolved.push(t.trim().slice(0, 70));
  }
  for (const x of col.querySelectorAll('span.xref, span.std-ref, span.std-numref')) {
    if (!x.closest('a')) out.unresolved.push(x.textContent.trim().slice(0, 70));
  }
  out.chars = [...chars].join('');
  out.quotes = [...col.querySelectorAll('blockquote')].filter(b => !b.closest('.admonition, .epigraph'))
               .map(b => b.innerText.trim().slice(0, 60));
  out.tables = [];
  for (const t of col.querySelectorAll('table')) {
    const heads = [...t.querySelectorAll('thead th')].map(h => h.innerText.trim());
    const ids = heads.filter(h => /^[a-z0-9%]+(_[a-z0-9%]+)+$/i.test(h));
    const rowNums = [...t.querySelectorAll('tbody tr > th:first-child')].map(h => h.innerText.trim());
    const counted = rowNums.length > 2 && rowNums.every((v, i) => v === String(i));
    const missing = [...t.querySelectorAll('td')].map(d => d.innerText.trim()).filter(v => /^(nan|NaN|None|<NA>|NaT)$/.test(v));
    const name = (t.querySelector('caption') || {}).innerText || heads.slice(0, 3).join(' | ');
    const rows = [...t.querySelectorAll('tbody tr')].map(r => [...r.querySelectorAll('td')].map(d => d.innerText.trim()));
    const floats = [];
    for (let j = 0; rows.length > 1 && j < rows[0].length; j++) {
      const col = rows.map(r => r[j]).filter(v => v !== undefined && v !== '' && v !== '-');
      if (col.length > 1 && col.every(v => /^-?\d+\.0+$/.test(v))) floats.push(j);
    }
    // rows a reader has to scroll past: those drawn on the page (a folded table draws none)
    const shown = [...t.querySelectorAll('tbody tr')].filter(r => r.getClientRects().length).length;
    const long = shown > MAX_ROWS ? shown : 0;
    if (ids.length || counted || missing.length || floats.length || long)
      out.tables.push({name: name.slice(0, 50), ids: ids.slice(0, 4), counted, missing: missing.length, floats: floats.length, long});
  }
  const seen = new Set();
  for (const el of col.querySelectorAll('table, img, pre, svg, mjx-container[display="true"], figure, iframe, .cell_output > div')) {
    const r = el.getBoundingClientRect();
    if (el.checkVisibility && !el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})) continue;
    if (!r.width || (r.right <= cr.right + 2 && r.left >= cr.left - 2)) continue;
    let a = el.parentElement, ok = false;
    while (a && a !== document.body) {
      const s = getComputedStyle(a);
      if ((s.overflowX === 'auto' || s.overflowX === 'scroll') && a.getBoundingClientRect().right <= cr.right + 2) { ok = true; break; }
      a = a.parentElement;
    }
    if (ok) continue;
    let top = el, q = el.parentElement;  // report the outermost offender once
    while (q && q !== col) { if (seen.has(q)) { top = null; break; } q = q.parentElement; }
    if (!top) continue;
    seen.add(el);
    out.overflow.push({tag: el.tagName.toLowerCase(), width: Math.round(r.width),
                       text: (el.getAttribute('alt') || el.innerText || '').replace(/\s+/g, ' ').trim().slice(0, 50)});
  }
  for (const img of col.querySelectorAll('img')) {
    const r = img.getBoundingClientRect();
    out.images.push({src: img.getAttribute('src'), natural: img.naturalWidth, rendered: r.width});
  }
  const rgb = c => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
                                return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  for (const c of col.querySelectorAll('figcaption, caption, .caption-text')) {
    if (!c.textContent.trim()) continue;
    const fg = rgb(getComputedStyle(c).color);
    let bg = null, a = c;
    while (a) { const v = rgb(getComputedStyle(a).backgroundColor); if (v.length >= 3 && (v.length < 4 || v[3] > 0)) { bg = v; break; } a = a.parentElement; }
    bg = bg || [255, 255, 255];
    const L1 = lum(fg), L2 = lum(bg);
    out.captions.push({text: c.textContent.trim().slice(0, 40), contrast: (Math.max(L1, L2) + 0.05) / (Math.min(L1, L2) + 0.05)});
  }
  return out;
}
"""


def png_text_scale(path: Path) -> tuple[float | None, float]:
    """(dpi, smallest font size in points) of a PNG figure: the dpi from its pHYs chunk, the font
    size from the ``lorafair:min_font_pt`` text chunk the figure style writes (matplotlib's
    default otherwise)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            dpi = im.info.get("dpi", (None,))[0]
            font = float(im.info.get("lorafair:min_font_pt", DEFAULT_FONT_PT))
    except (OSError, ValueError):
        return None, DEFAULT_FONT_PT
    return (float(dpi) if dpi else None), font


def _has_glyph(ch: str, cache: dict) -> bool:
    if ch not in cache:
        res = subprocess.run(["fc-list", f":charset={ord(ch):x}", "family"], capture_output=True, text=True)
        cache[ch] = bool(res.stdout.strip()) if res.returncode == 0 else True
    return cache[ch]


def is_emoji(ch: str) -> bool:
    c = ord(ch)
    return 0x1F000 <= c <= 0x1FAFF or 0x2600 <= c <= 0x27BF and c not in range(0x2700, 0x2710)


def read_pages(pages: list[Path], html_dir: Path, screenshots: Path | None = None) -> list[str]:
    """Read every page in chromium at each of ``WIDTHS`` (see the module's docstring)."""
    import unicodedata

    from playwright.sync_api import sync_playwright

    exe = browser_path()
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
    problems, glyphs, chars = [], {}, {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            for width_name, (w, h) in WIDTHS.items():
                ctx = browser.new_context(viewport={"width": w, "height": h}, device_scale_factor=1,
                                          offline=True)
                for f in pages:
                    rel = f.relative_to(html_dir)
                    where = f"{rel} at {w} px"
                    page = ctx.new_page()
                    net, errors = [], []

                    page.route("**/*", _router(net))
                    page.on("pageerror", lambda e, errors=errors: errors.append(str(e).splitlines()[0]))
                    page.goto(f.as_uri(), wait_until="load")
                    res = page.evaluate(READ_PAGE_JS.replace("MAX_ROWS", str(MAX_VISIBLE_ROWS)))
                    if width_name == "desktop":  # what does not depend on the width, read once
                        problems += _desktop_problems(res, f, rel, w, net, errors)
                        for ch in res["chars"]:
                            chars.setdefault(ch, rel)
                    for o in res["overflow"][:8]:
                        problems.append(f"{where}: a {o['tag']} {o['width']} px wide in a {res['column']} px column "
                                        f"without a scroll container ({o['text']!r})")
                    if res["page"] > res["viewport"] + 1:
                        problems.append(f"{where}: the page scrolls sideways ({res['page']} px of content)")
                    if screenshots is not None:
                        png = screenshots / f"{str(rel).replace('/', '_').removesuffix('.html')}-{w}.png"
                        page.screenshot(path=str(png), full_page=True)
                    page.close()
                ctx.close()
        finally:
            browser.close()
    for ch, rel in sorted(chars.items()):
        name = unicodedata.name(ch, f"U+{ord(ch):04X}")
        if is_emoji(ch):
            problems.append(f"{rel}: emoji {name} (U+{ord(ch):04X}) shows as a box without a colour-emoji font")
        elif not _has_glyph(ch, glyphs):
            problems.append(f"{rel}: no installed font has a glyph for {name} (U+{ord(ch):04X})")
    return problems


def _desktop_problems(res: dict, page: Path, rel, width: int, net: list, errors: list) -> list[str]:
    """The problems of one page read at the desktop width that the phone width would only repeat:
    network requests, script errors, raw TeX, references, captions, figures, quotes, tables."""
    out = [f"{rel}: requests {u} from the network" for u in sorted(set(net))]
    out += [f"{rel}: a script fails: {e}" for e in errors[:3]]
    out += [f"{rel}: raw TeX in the rendered text: {t!r}" for t in res["rawtex"][:5]]
    out += [f"{rel}: an unresolved reference: {t!r}" for t in sorted(set(res["unresolved"]))[:5]]
    out += [f"{rel}: caption {c['text']!r} has contrast {c['contrast']:.1f}:1 (at least {MIN_CONTRAST}:1)"
            for c in res["captions"] if c["contrast"] < MIN_CONTRAST]
    out += _figure_text(res["images"], page, rel, width)
    out += [f"{rel}: a block quote (a source line starting with '>'?): {q!r}" for q in res["quotes"]]
    for t in res["tables"]:
        what = ([f"identifiers as column names ({', '.join(t['ids'])})"] if t["ids"] else []) \
            + (["row numbers"] if t["counted"] else []) \
            + ([f"{t['missing']} cells reading nan/None (use '-')"] if t["missing"] else []) \
            + ([f"{t['floats']} column(s) of whole numbers written as floats"] if t["floats"] else []) \
            + ([f"{t['long']} rows unfolded (at most {MAX_VISIBLE_ROWS}: fold it or offer it as a CSV)"]
               if t.get("long") else [])
        out.append(f"{rel}: table {t['name']!r} shows " + "; ".join(what))
    return out


def _router(net: list):
    """A route handler: the book's own files load; anything else is named in ``net`` and blocked."""
    def route(r, request=None):
        if r.request.url.startswith(("file:", "data:", "blob:", "about:")):
            r.continue_()
        else:
            net.append(r.request.url)
            r.abort()
    return route


def _figure_text(images: list[dict], page: Path, rel, width: int) -> list[str]:
    out = []
    for im in images:
        src = im["src"] or ""
        if not im["rendered"] or not im["natural"] or src.startswith("data:") or not src.endswith(".png"):
            continue
        dpi, font = png_text_scale((page.parent / unquote(urlparse(src).path)))
        name = Path(urlparse(src).path).name
        shown = im["rendered"] / im["natural"]  # CSS px per figure pixel
        if dpi:
            px = font * dpi / 72 * shown
            if px < MIN_TEXT_PX:
                out.append(f"{rel}: figure {name}: its smallest text ({font:g} pt at {dpi:.0f} dpi) shows "
                           f"{px:.1f} px high at {width} px (at least {MIN_TEXT_PX:g})")
        if 1 / shown < MIN_PIXEL_RATIO:
            out.append(f"{rel}: figure {name}: {im['natural']} px shown {im['rendered']:.0f} px wide "
                       f"({1 / shown:.2f} pixels per CSS pixel, at least {MIN_PIXEL_RATIO:g} for sharp text)")
    return out
