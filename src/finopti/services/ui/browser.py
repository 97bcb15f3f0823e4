"""Launching Debian's Chromium with Playwright (no `playwright install`: no downloads), for tests and benchmarks."""

from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def launch_chromium(playwright, profile: Path, width: int = 1280, height: int = 800):
    """A persistent context on a fresh user-data dir, 1280×800."""
    return playwright.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, args=ARGS, headless=True,
        viewport={"width": width, "height": height}, device_scale_factor=1,
    )
