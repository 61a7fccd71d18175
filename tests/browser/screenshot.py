"""The screenshots in docs/images/: the demo's visual report in headless Chromium, taken by the test tooling.

Run: .venv/bin/python tests/browser/screenshot.py [--out docs/images]
It builds a fresh demo ledger (240 units) in a temporary folder, writes `custody report html`, and saves
`report.png` (the banner, the findings at a glance and the flow) and `report-timeline.png` (a diverted
unit's timeline).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ledger import append, demo  # noqa: E402
from tests.browser import tooling  # noqa: E402

WIDTH = 1200


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, tooling.launch() as browser:
        now = append.now_us()
        result = demo.run(Path(tmp) / "demo", demo.plan(demo.DEFAULT_UNITS, now), now_us=now)
        page_file = Path(tmp) / "report.html"
        subprocess.run([str(Path(sys.executable).parent / "custody"), "--db", str(result.db), "report", "html",
                        str(page_file)], check=True, stdout=subprocess.DEVNULL)
        watched = tooling.open_page(browser, page_file, width=WIDTH)
        page = watched.page
        bottom = page.evaluate("document.querySelector('#flow').getBoundingClientRect().top + window.scrollY")
        page.screenshot(path=str(args.out / "report.png"), clip={"x": 0, "y": 0, "width": WIDTH, "height": bottom})
        diverted = next(v.serials[0] for v in result.injected if v.code == demo.DIVERSION)
        page.fill("#u-serial", diverted)
        page.press("#u-serial", "Enter")
        page.locator("#unit").screenshot(path=str(args.out / "report-timeline.png"))
        if watched.errors or watched.left_the_page():
            raise SystemExit(f"the page misbehaved: {watched.errors} {watched.left_the_page()}")
    for name in ("report.png", "report-timeline.png"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
