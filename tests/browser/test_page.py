"""The counter page in real Chromium, through `counter-service up --replicas 2` and its
nginx: two browsers on different replicas see each other's clicks, each names its
replica, and a Redis outage shows on the page and heals. Screenshots: reports/browser/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from playwright.sync_api import Browser, expect

from counter_service.devtools.fleet import RedisProcess
from counter_service.devtools.nginx import find_nginx
from tests.browser.conftest import CHROMIUM
from tests.browser.tab import Tab, cookie_for
from tests.stack import Up
from ui.page import LABELS, STALE, STORE_DOWN, TITLE

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does)",
    ),
    pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (CI installs it)"),
]

Tabs = tuple[Tab, Tab]
# An aria snapshot is YAML: `[:]` is a colon that YAML does not take for a mapping.
READS_AS = f"""
- heading "{TITLE}" [level=1]
- text: /Views[:] \\d+ Clicks[:] \\d+ Online now[:] \\d+/
- button "Add a click"
- text: /Served by replica[:] \\S+/
"""


@pytest.fixture(scope="module")
def tabs(browser: Browser, stack: Up) -> Iterator[Tabs]:
    """Two browsers served by different replicas: the first where nginx puts it (and
    with the cookie nginx gives it), the second pinned to the other replica by cookie."""
    first = Tab.open(browser, stack.url)
    try:
        other = next(r.worker for r in stack.replicas() if r.worker != first.replica)
        second = Tab.open(browser, stack.url, cookie_for(stack.url, other))
        try:
            yield first, second
        finally:
            second.close()
    finally:
        first.close()


def clicks_in_both(tabs: Tabs) -> int:
    """The clicks both pages agree on."""
    clicks = tabs[0].number("Clicks")
    tabs[1].expect_number("Clicks", clicks)
    return clicks


def test_the_page_has_a_title_and_reads_as_heading_numbers_button_replica(tabs: Tabs) -> None:
    page = tabs[0].page
    expect(page).to_have_title(TITLE)
    # What a screen reader gets: each number is one phrase with its label ("Clicks: 12").
    expect(page.locator("flt-semantics-host")).to_match_aria_snapshot(READS_AS)
    for label in LABELS.values():
        assert tabs[0].number(label) >= 0


def test_each_browser_names_the_replica_that_serves_it(tabs: Tabs, stack: Up) -> None:
    assert {tab.replica for tab in tabs} == {replica.worker for replica in stack.replicas()}


def test_a_click_in_one_browser_shows_in_the_other_on_another_replica(tabs: Tabs) -> None:
    first, second = tabs
    clicks = clicks_in_both(tabs)
    second.click()
    first.expect_number("Clicks", clicks + 1)
    first.click()
    second.expect_number("Clicks", clicks + 2)
    first.expect_number("Clicks", clicks + 2)
    first.screenshot("two-replicas-first")
    second.screenshot("two-replicas-second")


def test_while_redis_is_down_the_page_says_so_and_then_follows_the_store(
    tabs: Tabs, redis_server: RedisProcess
) -> None:
    first, second = tabs
    clicks = clicks_in_both(tabs)
    with redis.Redis.from_url(redis_server.url) as client:
        client.save()  # what the restarted Redis comes back with
    first.click()  # after the snapshot: lost in the restart, as a crash loses AOF's last second
    second.expect_number("Clicks", clicks + 1)
    redis_server.stop()
    try:
        for tab in tabs:
            expect(tab.shown(STALE)).to_be_visible()
        second.expect_number("Clicks", clicks + 1)  # the last known value, faded: no zero
        first.click()
        expect(first.shown(STORE_DOWN)).to_be_visible()
        first.screenshot("store-unreachable")
    finally:
        redis_server.start()
    for tab in tabs:
        expect(tab.shown(STALE)).to_have_count(0)
        tab.expect_number("Clicks", clicks)  # the store's truth, though lower than shown
    expect(first.shown(STORE_DOWN)).to_have_count(0)
    second.click()
    first.expect_number("Clicks", clicks + 1)
