"""Screenshot of a run's HTML report, as in docs/images/report.png.

    python tools/screenshot_report.py dist/resnet20/report.json docs/images/report.png

Writes the page for the report (report.json or report.failed.json) into a temporary folder, has headless
Chromium (bash tools/setup_browser.sh) take the whole page 1200 px wide, crops the empty bottom and stores it
as a 256-colour PNG whose palette keeps the charts' colours exact (a few hundred KB instead of ~700 KB).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from edgeprune.reporting import charts, html as page

WIDTH, MAX_HEIGHT = 1200, 12000
BACKGROUND = (250, 250, 250)  # body background of the page (#fafafa)
KEEP = (charts.C_FEASIBLE, charts.C_INFEASIBLE, charts.C_NOISY, charts.C_FRONT, charts.C_TARGET, charts.C_CHOSEN, charts.C_FINAL,
        "#c0392b", "#2e8b57", "#b0281a", "#1c7a45", "#d9a400", "#fffbd6", "#fde8e6", "#e7f5ee", "#fff6e0",
        "#0b5cad", "#d9d9d9", "#9a9a9a", "#ededed", "#f0f0f3", "#7b1d12", "#1c5234", "#5c4500")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="report.json or report.failed.json")
    ap.add_argument("out", type=Path, help="the PNG to write")
    args = ap.parse_args()
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    if browser is None:
        print("screenshot_report: no chromium (bash tools/setup_browser.sh)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        html_path = page.write_html_report(json.loads(args.report.read_text()), tmp)
        raw = Path(tmp) / "raw.png"
        subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--window-size={WIDTH},{MAX_HEIGHT}", f"--screenshot={raw}", html_path.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
        im = Image.open(raw).convert("RGB")
    px = im.load()
    bottom = im.height
    while bottom > 1 and all(px[x, bottom - 1] == BACKGROUND for x in range(0, im.width, 7)):
        bottom -= 1
    im = im.crop((0, 0, im.width, min(im.height, bottom + 24)))
    n = 256 - len(KEEP)
    palette = im.quantize(colors=n, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).getpalette()[:3 * n]
    for colour in KEEP:
        palette += [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    pal = Image.new("P", (1, 1))
    pal.putpalette(palette)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    im.quantize(palette=pal, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(f"{args.out}: {im.width}x{im.height}, {args.out.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
