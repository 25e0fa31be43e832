"""Mermaid diagrams rendered as a person sees them: the real Mermaid library (npm, under
.ci/node_modules) in a real headless Chromium (Debian's ``chromium``), both installed by
bootstrap.sh.

``render(blocks, out_dir)`` writes one HTML page that renders every block with
``mermaid.render`` and reports, per block, whether it parsed and how big the drawing is; Chromium
runs it headless and prints the DOM, which carries that report. ``screenshot(block, path)``
renders one block on a page of its own and saves a PNG of it.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vtaplab import PROJECT_ROOT

MERMAID_JS = PROJECT_ROOT / ".ci" / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"
# Chromium's virtual time: mermaid.render is asynchronous; the page is dumped once idle or when
# this budget (ms of virtual time) is spent. Wall time is bounded by the subprocess timeout.
VIRTUAL_TIME_MS = 20000
TIMEOUT_S = 120

_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<style>body{{font-family:sans-serif;background:#fff;margin:8px}} #result{{display:none}}</style>
<script src="{lib}"></script></head><body><div id="out"></div><pre id="result">pending</pre>
<script id="blocks" type="application/json">{blocks}</script>
<script>
(async () => {{
  const blocks = JSON.parse(document.getElementById("blocks").textContent);
  mermaid.initialize({{startOnLoad: false, securityLevel: "strict"}});
  const results = [];
  for (let i = 0; i < blocks.length; i++) {{
    try {{
      const {{svg}} = await mermaid.render("diagram" + i, blocks[i]);
      const holder = document.createElement("div");
      holder.innerHTML = svg;
      document.getElementById("out").appendChild(holder);
      const el = holder.querySelector("svg");
      const box = el.getBBox();
      results.push({{index: i, ok: true, width: box.width, height: box.height,
                    shapes: el.querySelectorAll("path, rect, circle, polygon, line").length,
                    text: el.textContent.trim().length,
                    error_drawn: /Syntax error/i.test(el.textContent)}});
    }} catch (e) {{
      results.push({{index: i, ok: false,
                    error: String((e && e.message) || e).split("\\n").slice(0, 4).join(" ")}});
    }}
  }}
  document.getElementById("result").textContent = JSON.stringify(results);
}})();
</script></body></html>
"""


class BrowserError(RuntimeError):
    """Chromium or the Mermaid library is missing, or the page did not report."""


@dataclass(frozen=True)
class Rendered:
    index: int
    ok: bool
    width: float = 0.0
    height: float = 0.0
    shapes: int = 0
    text: int = 0
    error: str = ""

    @property
    def empty(self) -> bool:
        """Nothing a person could read: no size, no shapes or no text."""
        return self.width < 1 or self.height < 1 or self.shapes == 0 or self.text == 0


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise BrowserError("chromium is not installed (./bootstrap.sh installs Debian's)")
    if not MERMAID_JS.is_file():
        raise BrowserError(f"{MERMAID_JS} is missing (./bootstrap.sh installs npm mermaid@11)")
    return path


def _page(blocks: list[str], path: Path) -> Path:
    # </script> inside a block would end the JSON island early: escape the slash.
    data = json.dumps(blocks).replace("</", "<\\/")
    path.write_text(_PAGE.format(lib=MERMAID_JS.as_uri(), blocks=data))
    return path


def _run(args: list[str]) -> str:
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--allow-file-access-from-files", f"--virtual-time-budget={VIRTUAL_TIME_MS}", *args],
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise BrowserError(f"chromium exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return done.stdout


def render(blocks: list[str], out_dir: Path) -> list[Rendered]:
    """Every block through mermaid.render in one page; one ``Rendered`` per block."""
    page = _page(blocks, out_dir / "diagrams.html")
    dom = _run(["--dump-dom", page.as_uri()])
    found = re.search(r'<pre id="result">([^<]*)</pre>', dom)
    if found is None or found.group(1) == "pending":
        raise BrowserError("the page never reported (Mermaid did not finish in time)")
    results = []
    for item in json.loads(html.unescape(found.group(1))):
        if item.pop("error_drawn", False):  # Mermaid drew its "Syntax error" picture instead
            item.update(ok=False, error="Mermaid drew a syntax-error picture")
        results.append(Rendered(**item))
    return results


def screenshot(block: str, path: Path, *, width: int = 1400, height: int = 1000) -> Path:
    """One block on a page of its own, saved as a PNG at ``path``."""
    page = _page([block], path.with_suffix(".html"))
    _run([f"--screenshot={path}", f"--window-size={width},{height}", page.as_uri()])
    if not path.is_file() or path.stat().st_size == 0:
        raise BrowserError(f"chromium wrote no screenshot at {path}")
    return path
