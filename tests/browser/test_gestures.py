"""What a real Chromium streams while one gesture lasts (typing fast, scrolling, moving the
pointer) reaches the app whole: none of it is throttled as if it were clicks, and the
client is not taken for a flooder (counter_service.flet.frames.continuous)."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from counter_service.devtools.fleet import Fleet, ServerProcess
from tests.browser.conftest import CHROMIUM
from tests.browser.tab import ARTIFACTS, OFF_MACHINE, VIEWPORT

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does)",
    ),
]

GESTURES_APP = "tests.browser.apps.gestures_app:app"
TEXT = "the quick brown fox jumps over the lazy dog " * 4
"""176 keystrokes, typed as fast as Playwright types: several times the click rate."""


def metrics(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(server.url + "/metrics.json", timeout=5) as response:
        return dict(json.load(response))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with Fleet(1, log_dir=tmp_path_factory.mktemp("gestures"), app=GESTURES_APP) as fleet:
        yield fleet.servers[0]


@pytest.fixture
def page(browser: Browser, server: ServerProcess) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)
    context.route(OFF_MACHINE, lambda route: route.abort())
    try:
        opened = context.new_page()
        opened.goto(server.url)
        opened.locator("flt-semantics-placeholder").dispatch_event("click")
        expect(shown(opened, re.compile(r"^peak: "))).to_be_visible()
        yield opened
    finally:
        context.close()


def shown(page: Page, text: str | re.Pattern[str]) -> Locator:
    return page.locator("flt-semantics-host").get_by_text(text)


def count(page: Page, name: str) -> int:
    return int(shown(page, re.compile(rf"^{name}: \d+$")).inner_text().split(": ")[1])


def nothing_refused(server: ServerProcess) -> None:
    websockets = metrics(server)["websockets"]
    assert websockets["throttled_events"] == 0
    assert websockets["rejected"] == {}
    assert websockets["open"]["registered"] >= 1


def test_fast_typing_reaches_the_app_keystroke_by_keystroke(
    page: Page, server: ServerProcess
) -> None:
    page.get_by_label("Type here").click()
    page.keyboard.type(TEXT)
    # Set by the field's on_change: every change event ran, the last one included.
    expect(shown(page, "typed: " + TEXT.rstrip())).to_be_visible()
    nothing_refused(server)


def test_scrolling_and_pointer_moves_reach_the_app_unthrottled(
    page: Page, server: ServerProcess
) -> None:
    line = shown(page, "line 0").bounding_box()
    assert line is not None
    page.mouse.move(line["x"] + 5, line["y"] + 5)  # over the list
    for _ in range(40):
        page.mouse.wheel(0, 40)
    expect(shown(page, re.compile(r"^scrolls: [1-9]\d*$"))).to_be_visible()
    box = shown(page, re.compile(r"^peak: ")).bounding_box()
    assert box is not None
    pad_top = box["y"] + box["height"] + 10  # the pad is right below the counts
    for step in range(200):
        page.mouse.move(20 + step % 280, pad_top + step % 100)
    expect(shown(page, re.compile(r"^hovers: [1-9]\d{2,}$"))).to_be_visible()  # 100 or more
    nothing_refused(server)
    peak = count(page, "peak")
    path = ARTIFACTS / "gestures.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"peak_events_per_s": peak, "scrolls": count(page, "scrolls")}))
    assert peak > 40  # more than a session's click burst: the test pushed past it
