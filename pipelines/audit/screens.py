"""Does an audit page fit the page? Checks with and without a browser, and screenshots.

* :func:`static_problems` (no browser): every ``<img>`` is styled ``max-width:100%``, its file exists
  and decodes; every table sits in a scroll container; no inline width over ``max_px``.
* :func:`browser_problems` / :func:`browser_problems_many`: the page opened in headless Chromium
  (Debian's ``chromium``) in a frame of a given width, every ``<details>`` opened: no element
  reaches past the viewport unless a scroll container clips it, the page does not scroll
  sideways, every image loaded. All pages at all widths are measured in one Chromium start.
* :func:`screenshot`: the top of the page as a PNG (256 colours).

``python -m pipelines.audit.screens OUT_DIR PATH...``: for each audit page under the PATHs (a page,
an audit directory, a stage output, or any directory holding them), the browser check at each
width in :data:`WIDTHS` and a screenshot ``OUT_DIR/<stage output name>-<width>.png`` at each
(docs/audit.md).
Needs a Chromium binary (``MGTE_CHROMIUM``, else ``chromium``, ``chromium-browser``,
``google-chrome`` on PATH); without one it stops with one line.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTHS = (1280, 800)
MAX_INLINE_PX = 1000
RESULT_ID = "mgte-layout"

# Runs on load: opens every <details>, then measures; the result goes into the DOM (for --dump-dom)
# and, inside a frame of the batch page (browser_problems_many), to the parent window.
CHECK_JS = """<script>
window.addEventListener('load', function () {
  var details = document.getElementsByTagName('details');
  for (var d = 0; d < details.length; d++) details[d].open = true;
  var W = document.documentElement.clientWidth, problems = [];
  function clipped(el) {
    for (var p = el.parentElement; p && p !== document.documentElement; p = p.parentElement) {
      var o = getComputedStyle(p).overflowX;
      if (o === 'auto' || o === 'scroll' || o === 'hidden') return true;
    }
    return false;
  }
  var all = document.body.getElementsByTagName('*');
  for (var i = 0; i < all.length; i++) {
    var r = all[i].getBoundingClientRect();
    if (r.right > W + 1 && !clipped(all[i]))
      problems.push('<' + all[i].tagName.toLowerCase() + (all[i].id ? '#' + all[i].id : '') + '> reaches ' +
                    Math.round(r.right) + ' px, viewport ' + W);
  }
  if (document.documentElement.scrollWidth > W + 1)
    problems.push('the page scrolls sideways: ' + document.documentElement.scrollWidth + ' px, viewport ' + W);
  var images = document.images;
  for (var j = 0; j < images.length; j++)
    if (!images[j].complete || images[j].naturalWidth === 0)
      problems.push('image did not load: ' + images[j].getAttribute('src'));
  var result = {elements: all.length, images: images.length, width: W, problems: problems};
  if (window.parent !== window) window.parent.postMessage({name: window.name, result: result}, '*');
  var out = document.createElement('pre');
  out.id = '%s';
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>""" % RESULT_ID

# The batch page: one frame per (page, width), each as wide as its width; the frames' results are
# collected into one element that --dump-dom prints.
BATCH_HTML = """<!doctype html><html><head><meta charset="utf-8"></head><body style="margin:0">
<pre id="%s">{}</pre>
<script>
var got = {};
window.addEventListener('message', function (e) {
  got[e.data.name] = e.data.result;
  document.getElementById('%s').textContent = JSON.stringify(got);
});
</script>
%%s
</body></html>""" % (RESULT_ID, RESULT_ID)


def find_browser() -> str | None:
    """A headless-capable Chromium: ``MGTE_CHROMIUM``, else the first of BROWSERS on PATH."""
    env = os.environ.get("MGTE_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def audit_pages(paths) -> list[Path]:
    """The audit pages (``index.html`` of an audit or audit diff directory) named by or under ``paths``."""
    pages: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            pages.append(p)
        elif (p / "index.html").is_file():
            pages.append(p / "index.html")
        elif (p / "audit" / "index.html").is_file():
            pages.append(p / "audit" / "index.html")
        elif p.is_dir():  # DIR/audit/index.html and the diff pages DIR/audit/diff/index.html
            pages += sorted(q for q in p.rglob("index.html") if "audit" in q.relative_to(p).parts[:-1])
    return pages


class _Page(HTMLParser):
    """Collects what the static check needs: images, tables and their parents, inline widths, CSS."""

    VOID = {"img", "br", "meta", "link", "hr", "input", "source", "wbr", "col", "area", "base", "embed", "track"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict]] = []
        self.images: list[dict] = []
        self.tables: list[dict | None] = []  # the parent element's attributes of each table
        self.widths: list[str] = []
        self.css: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        style = a.get("style", "")
        for m in re.finditer(r"(?<![-\w])(?:min-)?width\s*:\s*(\d+(?:\.\d+)?)px", style):
            self.widths.append(f"<{tag} style='{style}'>: {m.group(1)} px")
        if a.get("width", "").isdigit():
            self.widths.append(f"<{tag} width={a['width']}>: {a['width']} px")
        if tag == "img":
            self.images.append(a)
        if tag == "table":
            self.tables.append(dict(self.stack[-1][1], tag=self.stack[-1][0]) if self.stack else None)
        if tag == "style":
            self._in_style = True
        if tag not in self.VOID:
            self.stack.append((tag, a))

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False
        for i in range(len(self.stack) - 1, -1, -1):  # tolerate unclosed tags
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        if self._in_style:
            self.css.append(data)


def _squash(css: str) -> str:
    return re.sub(r"\s+", "", css).lower()


def _css_rules(css: str) -> dict[str, str]:
    """selector -> declarations (squashed) of a plain stylesheet."""
    return {sel: body for sels, body in re.findall(r"([^{}]+)\{([^{}]*)\}", _squash(css)) for sel in sels.split(",")}


def static_problems(page: Path, max_px: int = MAX_INLINE_PX) -> list[str]:
    """What keeps ``page`` from fitting the page, found without a browser (module doc)."""
    from PIL import Image

    page = Path(page)
    parsed = _Page()
    parsed.feed(page.read_text(encoding="utf-8"))
    rules = _css_rules("".join(parsed.css))
    problems = []
    scroll_classes = {sel[1:] for sel, body in rules.items() if sel.startswith(".")
                      and re.search(r"overflow(-x)?:(auto|scroll)", body)}
    for img in parsed.images:
        src = img.get("src", "")
        styled = "max-width:100%" in _squash(img.get("style", "")) or "max-width:100%" in rules.get("img", "")
        if not styled:
            problems.append(f"{page}: <img src='{src}'> has no max-width:100%")
        target = page.parent / src
        if not src or not target.is_file():
            problems.append(f"{page}: <img src='{src}'>: no such file {target}")
            continue
        try:
            with Image.open(target) as im:
                im.load()
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the finding
            problems.append(f"{page}: <img src='{src}'>: does not decode ({type(exc).__name__}: {exc})")
    for parent in parsed.tables:
        classes = set((parent or {}).get("class", "").split())
        inline = _squash((parent or {}).get("style", ""))
        if not (classes & scroll_classes or re.search(r"overflow(-x)?:(auto|scroll)", inline)):
            problems.append(f"{page}: a <table> outside a scroll container (parent {parent})")
    for width in parsed.widths:
        px = float(re.findall(r"(\d+(?:\.\d+)?) px$", width)[0])
        if px > max_px:
            problems.append(f"{page}: inline width over {max_px} px: {width}")
    return problems


def _run(browser: str, args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    # --no-sandbox: a root user (containers, CI) cannot use Chromium's sandbox
    cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
           "--allow-file-access-from-files", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def browser_problems_many(pages, browser: str, widths=WIDTHS, height: int = 900) -> dict:
    """{(page, width): (the check's own summary, problems)} of every page at every width, in one headless
    Chromium: a batch page holds one frame per (page, width) at that width (a frame's viewport is its
    width, as a window's is), each loading the page with the check of the module doc. A Chromium start
    costs seconds; the pages are measured in one."""
    pages = [Path(p).resolve() for p in pages]
    checked, frames, jobs = [], [], {}
    try:
        for page in pages:
            text = page.read_text(encoding="utf-8")
            text = text.replace("</body>", CHECK_JS + "</body>") if "</body>" in text else text + CHECK_JS
            # next to the page, so that its images resolve the same way
            fd, tmp = tempfile.mkstemp(suffix=".html", prefix=".layout-", dir=page.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            checked.append(tmp)
            for width in widths:
                name = f"f{len(jobs)}"
                jobs[name] = (page, width)
                frames.append(f'<iframe name="{name}" src="{html.escape(Path(tmp).as_uri())}" '
                              f'style="display:block;border:0;width:{width}px;height:{height}px"></iframe>')
        with tempfile.TemporaryDirectory(prefix="mgte-layout-") as tmpdir:
            batch = Path(tmpdir) / "batch.html"
            batch.write_text(BATCH_HTML % "\n".join(frames), encoding="utf-8")
            proc = _run(browser, [f"--window-size={max(widths) + 20},{height}", "--virtual-time-budget=20000",
                                  "--dump-dom", batch.as_uri()], timeout=60 + 10 * len(jobs))
    finally:
        for tmp in checked:
            os.unlink(tmp)
    found = re.search(rf"<pre id=\"{RESULT_ID}\">(.*?)</pre>", proc.stdout, re.S)
    got = json.loads(html.unescape(found.group(1))) if found else {}
    out = {}
    for name, (page, width) in jobs.items():
        if name not in got:
            out[(page, width)] = ({}, [f"{page} at {width} px: the layout check did not run in {browser} (exit "
                                       f"{proc.returncode}: {' '.join(proc.stderr.split())[-300:]})"])
            continue
        summary = got[name]
        out[(page, width)] = (summary, [f"{page} at {width} px: {p}" for p in summary["problems"]])
    return out


def browser_problems(page: Path, browser: str, width: int = WIDTHS[0], height: int = 900) -> tuple[dict, list[str]]:
    """(the check's own summary, problems) of ``page`` in headless Chromium at ``width`` px (module doc)."""
    return browser_problems_many([page], browser, (width,), height)[(Path(page).resolve(), width)]


def screenshot(page: Path, png: Path, browser: str, width: int = WIDTHS[0], height: int = 1600,
               colours: int | None = 256) -> Path:
    """The top ``height`` px of ``page`` at ``width`` px as ``png``; ``colours``: saved with a palette of
    that many colours (a page of text and plots stays legible and the file about a quarter the size),
    None keeps Chromium's full-colour file."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    proc = _run(browser, [f"--window-size={width},{height}", f"--screenshot={png}", Path(page).resolve().as_uri()])
    if proc.returncode != 0 or not png.is_file():
        raise RuntimeError(f"{browser} made no screenshot of {page} (exit {proc.returncode}): "
                           f"{' '.join(proc.stderr.split())[-300:]}")
    if colours:
        from PIL import Image

        with Image.open(png) as im:
            small = im.convert("RGB").quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
        small.save(png, optimize=True)
    return png


def _name(page: Path) -> str:
    """The stage output's directory name for DIR/audit/index.html (DIR-diff for DIR/audit/diff/index.html),
    else the page's directory name."""
    page = Path(page).resolve()
    if page.parent.name == "audit":
        return page.parent.parent.name
    if page.parent.name == "diff" and page.parent.parent.name == "audit":
        return f"{page.parent.parent.parent.name}-diff"
    return page.parent.name


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print("usage: python -m pipelines.audit.screens OUT_DIR PATH... (audit pages, audit or stage "
              "output directories)", file=sys.stderr)
        return 2
    browser = find_browser()
    if browser is None:
        print(f"screens: no Chromium found (set MGTE_CHROMIUM or install one of: {', '.join(BROWSERS)})",
              file=sys.stderr)
        return 1
    out, pages = Path(argv[0]), audit_pages(argv[1:])
    if not pages:
        print(f"screens: no audit page (DIR/audit/index.html) under {' '.join(argv[1:])}", file=sys.stderr)
        return 1
    failed = 0
    checked = browser_problems_many(pages, browser, WIDTHS)
    for page in pages:
        problems = static_problems(page)
        for width in WIDTHS:
            problems += checked[(Path(page).resolve(), width)][1]
        pngs = [screenshot(page, out / f"{_name(page)}-{width}.png", browser, width) for width in WIDTHS]
        print(f"{page}: {'fits' if not problems else f'{len(problems)} problem(s)'}; screenshots "
              f"{', '.join(map(str, pngs))}")
        for p in problems:
            print(f"  {p}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
