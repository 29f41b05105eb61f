"""The HTML report as a browser sees it: headless Chromium loads the page from disk, and
its DOM and a screenshot are checked.

The page has no script by design, so the check reads Chromium's serialized DOM
(--dump-dom): the ranked findings, the evidence tables, and ≥ 4 <img> whose data: URIs hold
valid PNGs; then the screenshot must not be blank. RISWB_KEEP_SCREENSHOT=1 also copies the
screenshot to runs/html-report.png for a person to look at.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from riswb.cli import app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt install chromium)")
EVIL = "<script>alert(1)</script>"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class Dom(HTMLParser):
    """What the test needs from the DOM: element ids, finding items, tables, images, text."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.findings = self.tables = self.scripts = 0
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if "id" in attributes:
            self.ids.append(attributes["id"])
        self.findings += tag == "li" and attributes.get("class") == "finding"
        self.tables += tag == "table"
        self.scripts += tag == "script"
        if tag == "img":
            self.images.append(attributes.get("src") or "")

    def handle_data(self, data):
        self.text.append(data)


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def decoded_png_width(src: str) -> int:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:60]
    data = base64.b64decode(src[len(prefix):], validate=True)
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big")


def test_report_renders_in_headless_chromium(tmp_path, synthetic_run):
    run = synthetic_run(tmp_path / "runs", steps=600, healthy=False, lr_zero=True,
                        terms=("nmse", "gap", EVIL))
    page = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", str(run), "--format", "html", "--out", str(page)])
    assert result.exit_code == 0, result.output
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text

    dumped = chromium(tmp_path / "profile-dom", "--dump-dom", page.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = Dom()
    dom.feed(dumped.stdout)
    assert dom.scripts == 0
    order = [dom.ids.index(anchor) for anchor in ("findings", "unchecked", "summary", "evidence")]
    assert order == sorted(order)
    assert dom.findings >= 2  # lr-stalled and params-not-moving at least
    assert "lr-stalled" in dom.text
    assert {"table-loss_terms", "table-lr", "table-param_update"} <= set(dom.ids)
    assert dom.tables >= 10
    assert len(dom.images) >= 4
    assert all(decoded_png_width(src) > 0 for src in dom.images)
    assert any(EVIL in chunk for chunk in dom.text)  # the term's name, shown as text

    screenshot = tmp_path / "report.png"
    shot = chromium(tmp_path / "profile-shot", f"--screenshot={screenshot}",
                    "--window-size=1280,2400", page.as_uri())
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    with Image.open(screenshot) as image:
        assert image.size == (1280, 2400)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
        assert len(colours) > 64  # not one flat colour: text, badges and plots drew
    if os.environ.get("RISWB_KEEP_SCREENSHOT"):
        keep = Path(__file__).resolve().parents[2] / "runs" / "html-report.png"
        keep.parent.mkdir(exist_ok=True)
        shutil.copyfile(screenshot, keep)
