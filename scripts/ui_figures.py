"""Do a markdown artifact's figures render in the Prefect UI? Asked of a real browser.

Opens the newest artifact of `--key` in the Prefect UI in headless Chromium (Debian's
`chromium`; `apt-get install chromium`), waits for the page's images, prints each image's
source and rendered size, and saves a screenshot. (`img.cm-widgetBuffer`, the raw view's
editor widgets, are not figures and are skipped.) Exit status 0 when the artifact shows at
least one image and every image decoded (natural width > 0); 1 otherwise (e.g. a report that
links a local file path, which the browser cannot load: a broken image).

    python scripts/ui_figures.py --key rlt-report [--ui http://127.0.0.1:4200] \\
        [--screenshot artifacts/report/ui.png] [--ui-version v1|v2|both]

Prefect 3.7 serves two UIs: the default (Vue) at `/`, which renders a markdown artifact's
`data:` images, and the opt-in React UI at `/v2`, whose markdown sanitiser drops `data:` URLs
(measured: the image's src is emptied). The reports therefore also publish each figure as an
image artifact, which renders in both: check `--key rlt-report` on v1 and
`--key rlt-report-reward-curves` with `--ui-version both`.

The API is the UI's `/api` unless PREFECT_API_URL says otherwise. Chromium is driven over the
DevTools protocol (`websockets`, which Prefect already installs), no other browser tooling.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

IMAGES_JS = """
Array.from(document.querySelectorAll('img:not(.cm-widgetBuffer)')).map(i => ({
  src: i.getAttribute('src') || '', alt: i.getAttribute('alt') || '',
  cls: i.className || '', complete: i.complete,
  width: i.naturalWidth, height: i.naturalHeight}))
"""


def newest_artifact_id(api: str, key: str) -> str:
    """The id of the newest artifact with `key` (Prefect REST API)."""
    body = json.dumps({"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1})
    request = urllib.request.Request(
        f"{api}/artifacts/filter", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        found = json.loads(response.read())
    if not found:
        raise SystemExit(f"no artifact with key {key!r} at {api}: run a flow that publishes it.")
    return str(found[0]["id"])


class Page:
    """One Chromium tab over the DevTools protocol."""

    def __init__(self, socket_url: str) -> None:
        self.socket = connect(socket_url, max_size=64 * 2**20, open_timeout=30)
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events in between are skipped)."""
        number = next(self.ids)
        self.socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")


def open_browser(profile: Path) -> tuple[subprocess.Popen, int]:
    """Headless Chromium with the DevTools protocol on a free port; (process, port)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise SystemExit("chromium is not installed: apt-get install chromium (Debian).")
    process = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "--window-size=1400,2200", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if port_file.is_file() and port_file.read_text().strip():
            return process, int(port_file.read_text().split()[0])
        time.sleep(0.2)
    process.kill()
    raise SystemExit("chromium did not open its DevTools port within 60 s.")


UI_PATHS = {"v1": "", "v2": "/v2"}  # Prefect 3 serves its Vue UI at / and the React one at /v2


def check(
    ui: str, api: str, key: str, screenshot: Path | None, timeout: float, version: str = "v1"
) -> dict[str, Any]:
    """Load the artifact's page in UI `version`; its images (source, size) and whether all
    rendered."""
    url = f"{ui.rstrip('/')}{UI_PATHS[version]}/artifacts/artifact/{newest_artifact_id(api, key)}"
    with tempfile.TemporaryDirectory(prefix="rlt-chromium-", ignore_cleanup_errors=True) as profile:
        process, port = open_browser(Path(profile))
        try:
            new_tab = f"http://127.0.0.1:{port}/json/new?{url}"
            request = urllib.request.Request(new_tab, method="PUT")
            with urllib.request.urlopen(request, timeout=30) as response:
                target = json.loads(response.read())
            page = Page(target["webSocketDebuggerUrl"])
            deadline = time.monotonic() + timeout
            images: list[dict[str, Any]] = []
            while time.monotonic() < deadline:  # the UI renders the markdown after its API calls
                images = page.evaluate(IMAGES_JS) or []
                if images and all(image["complete"] for image in images):
                    break
                time.sleep(0.5)
            if screenshot is not None:
                shot = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
        finally:
            process.terminate()
            process.wait(timeout=30)
    for image in images:
        image["src"] = image["src"][:60] + ("..." if len(image["src"]) > 60 else "")
    rendered = bool(images) and all(image["width"] > 0 for image in images)
    return {"ui": version, "url": url, "images": images, "rendered": rendered}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key", required=True, help="artifact key, e.g. rlt-report")
    parser.add_argument("--ui", default="http://127.0.0.1:4200", help="the Prefect UI's URL")
    parser.add_argument(
        "--screenshot", type=Path, help="save each page as this PNG (<name>-v2.png for /v2)"
    )
    parser.add_argument(
        "--ui-version",
        choices=("v1", "v2", "both"),
        default="v1",
        help="the Vue UI at / (Prefect's default), the React one at /v2, or both",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for images")
    args = parser.parse_args(argv)
    api = os.environ.get("PREFECT_API_URL") or f"{args.ui.rstrip('/')}/api"
    versions = ("v1", "v2") if args.ui_version == "both" else (args.ui_version,)
    results = []
    for version in versions:
        shot = args.screenshot
        if shot is not None and version == "v2":
            shot = shot.with_name(f"{shot.stem}-v2{shot.suffix}")
        results.append(check(args.ui, api.rstrip("/"), args.key, shot, args.timeout, version))
    print(json.dumps(results, indent=2))
    return 0 if all(result["rendered"] for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
