"""What a real Chromium streams while one gesture lasts (typing fast, scrolling, moving the
pointer) reaches the app whole: none of it is throttled as if it were clicks, and the
client is not taken for a flooder (counter_service.flet.frames.continuous)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from counter_service.devtools.fleet import Fleet, ServerProcess
from tests.browser.conftest import CHROMIUM
from tests.browser.tab import ARTIFACTS, Tab
from tests.support import worker_metrics

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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with Fleet(1, log_dir=tmp_path_factory.mktemp("gestures"), app=GESTURES_APP) as fleet:
        yield fleet.servers[0]


@pytest.fixture
def tab(browser: Browser, server: ServerProcess) -> Iterator[Tab]:
    opened = Tab.load(browser, server.url)
    try:
        expect(opened.shown(re.compile(r"^peak: "))).to_be_visible()
        yield opened
    finally:
        opened.close()


def count(tab: Tab, name: str) -> int:
    return int(tab.shown(re.compile(rf"^{name}: \d+$")).inner_text().split(": ")[1])


def nothing_refused(server: ServerProcess) -> None:
    websockets = worker_metrics(server.url)["websockets"]
    assert websockets["throttled_events"] == 0
    assert websockets["rejected"] == {}
    assert websockets["open"]["registered"] >= 1


def test_fast_typing_reaches_the_app_keystroke_by_keystroke(
    tab: Tab, server: ServerProcess
) -> None:
    tab.page.get_by_label("Type here").click()
    tab.page.keyboard.type(TEXT)
    # Set by the field's on_change: every change event ran, the last one included.
    expect(tab.shown("typed: " + TEXT.rstrip())).to_be_visible()
    nothing_refused(server)


def test_scrolling_and_pointer_moves_reach_the_app_unthrottled(
    tab: Tab, server: ServerProcess
) -> None:
    page = tab.page
    line = tab.shown("line 0").bounding_box()
    assert line is not None
    page.mouse.move(line["x"] + 5, line["y"] + 5)  # over the list
    for _ in range(40):
        page.mouse.wheel(0, 40)
    expect(tab.shown(re.compile(r"^scrolls: [1-9]\d*$"))).to_be_visible()
    box = tab.shown(re.compile(r"^peak: ")).bounding_box()
    assert box is not None
    pad_top = box["y"] + box["height"] + 10  # the pad is right below the counts
    for step in range(200):
        page.mouse.move(20 + step % 280, pad_top + step % 100)
    expect(tab.shown(re.compile(r"^hovers: [1-9]\d{2,}$"))).to_be_visible()  # 100 or more
    nothing_refused(server)
    peak = count(tab, "peak")
    path = ARTIFACTS / "gestures.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"peak_events_per_s": peak, "scrolls": count(tab, "scrolls")}))
    assert peak > 40  # more than a session's click burst: the test pushed past it
