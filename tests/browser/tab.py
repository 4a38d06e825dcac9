"""The counter page in one real Chromium context, read and clicked the way a screen reader
sees it: Flutter paints on a canvas, and its accessibility tree is the DOM to use."""

from __future__ import annotations

import re
import time
from pathlib import Path

from playwright.sync_api import Browser, Locator, Page, ViewportSize, expect

from counter_service.flet.live import PLACEHOLDER
from tests.stack import COOKIE, STEP

AFFINITY = COOKIE
"""nginx's stickiness cookie (deploy/nginx/counter-service.conf)."""
VIEWPORT: ViewportSize = {"width": 900, "height": 640}
ARTIFACTS = Path(__file__).resolve().parents[2] / "reports" / "browser"
"""Screenshots of every run (reports/ is git-ignored)."""
# The Flet client asks a CDN for an optional library; machines here have no internet,
# and tests send nothing off this machine.
OFF_MACHINE = re.compile(r"^(?!https?://127\.0\.0\.1[:/])")
# Waits are correctness deadlines, not speed: only reached when something is broken.
expect.set_options(timeout=STEP * 1000)
NEXT_FRAMES = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"
STILL_SHOTS = 3  # equal screenshots in a row, two frames apart, make a still page


class Tab:
    """One browser context (own cookies, so own replica) with the counter page open."""

    def __init__(self, page: Page) -> None:
        self.page = page

    @classmethod
    def open(cls, browser: Browser, url: str, affinity: str | None = None) -> Tab:
        """A fresh context on the counter page at `url`, rendered, with its accessibility
        tree on; `affinity` (a replica's id, `Replica.id`) pins the replica, else nginx
        picks one and sets the cookie."""
        tab = cls.load(browser, url, affinity)
        expect(tab.labelled("Served by replica")).to_have_text(re.compile(r":\s*\S+$"))
        return tab

    @classmethod
    def load(cls, browser: Browser, url: str, affinity: str | None = None) -> Tab:
        """A fresh context on any Flet page at `url`, its accessibility tree turned on
        (the caller waits for what the page shows)."""
        context = browser.new_context(viewport=VIEWPORT)
        context.route(OFF_MACHINE, lambda route: route.abort())
        if affinity is not None:
            context.add_cookies([{"name": AFFINITY, "value": affinity, "url": url}])
        page = context.new_page()
        page.set_default_timeout(STEP * 1000)
        page.goto(url)
        # A click on this off-screen element is how Flutter's web engine turns on its
        # semantics tree (what screen readers read); before it the DOM holds no text.
        page.locator("flt-semantics-placeholder").dispatch_event("click")
        return cls(page)

    def labelled(self, label: str) -> Locator:
        """The accessibility node that reads `label: <value>`."""
        return self.shown(re.compile(rf"^{re.escape(label)}:\s"))

    def shown(self, text: str | re.Pattern[str]) -> Locator:
        """`text` on the page (not in Flutter's announcements to screen readers, which
        repeat a live region's text elsewhere)."""
        return self.page.locator("flt-semantics-host").get_by_text(text)

    def reading(self, label: str) -> str:
        """What a screen reader says for `label`'s value."""
        return self.labelled(label).inner_text().split(":", 1)[1].strip()

    def number(self, label: str) -> int:
        """The number shown for `label`, once it is known (not the placeholder)."""
        expect(self.labelled(label)).to_have_text(re.compile(r":\s*\d+$"))
        return int(self.reading(label))

    def expect_number(self, label: str, value: int) -> None:
        expect(self.labelled(label)).to_have_text(re.compile(rf":\s*{value}$"))

    def expect_unknown(self, label: str) -> None:
        """`label` shows the placeholder: no number at all, not a made-up one."""
        expect(self.labelled(label)).to_have_text(re.compile(rf":\s*{PLACEHOLDER}$"))

    @property
    def replica(self) -> str:
        return self.reading("Served by replica")

    def click(self) -> None:
        self.page.get_by_role("button", name="Add a click").click()

    def screenshot(self, name: str) -> Path:
        """Save what the page shows under reports/browser/ once the canvas is still."""
        path = ARTIFACTS / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.still())
        return path

    def still(self) -> bytes:
        """A screenshot that the next frames no longer change. While an animation runs (a
        button's ripple), the canvas lags the accessibility tree by a few frames."""
        shots = [self.page.screenshot()]
        deadline = time.monotonic() + STEP
        while len(shots) < STILL_SHOTS or len(set(shots[-STILL_SHOTS:])) > 1:
            assert time.monotonic() < deadline, "the page never stopped changing"
            self.page.evaluate(NEXT_FRAMES)
            shots.append(self.page.screenshot())
        return shots[-1]

    def close(self) -> None:
        self.page.context.close()
