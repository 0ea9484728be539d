"""Check the built book like a reader: every page of the table of contents exists, every image and
internal link resolves, no page loads a script or stylesheet from the network (MathJax included),
no page shows an error output, and (with Debian's chromium) every page
renders to a PNG screenshot for a person to look at. Offline: nothing is fetched."""

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
    pages = [toc["root"]] + [c["file"] for c in toc.get("chapters", [])]
    return [p.removesuffix(".md").removesuffix(".ipynb") for p in pages]


def check(html_dir: Path | None = None, screenshots: Path | None = None) -> list[str]:
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
    if screenshots is not None:
        problems += _screenshots(parsed, html_dir, Path(screenshots))
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


def _screenshots(parsed: dict, html_dir: Path, out: Path) -> list[str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise LorafairError("chromium not found: `apt-get install chromium` (Debian), or run without --screenshots")
    out.mkdir(parents=True, exist_ok=True)
    problems = []
    for f in parsed:
        png = out / (str(f.relative_to(html_dir)).replace("/", "_").removesuffix(".html") + ".png")
        with tempfile.TemporaryDirectory() as profile:
            res = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                  "--disable-component-update", "--no-first-run", "--hide-scrollbars",
                                  f"--user-data-dir={profile}", "--window-size=1280,4000",
                                  f"--screenshot={png}", f.as_uri()], capture_output=True, text=True, timeout=120)
        if res.returncode != 0 or not png.exists() or png.stat().st_size < 10_000:
            problems.append(f"{f.name}: chromium could not render it ({res.returncode})")
    return problems
