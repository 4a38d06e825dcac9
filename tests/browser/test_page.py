"""The counter page in real Chromium, through `counter-service up --replicas 2` and its
nginx: two browsers on different replicas see each other's clicks, each names its
replica, a Redis outage shows on the page and heals, and so does a broken counter.
Screenshots: reports/browser/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from playwright.sync_api import Browser, expect

from counter_service.balancer.nginx import find_nginx
from counter_service.devtools.fleet import RedisProcess
from counter_service.names import Names
from tests.browser.conftest import CHROMIUM
from tests.browser.tab import Tab
from tests.stack import Up
from ui.contract import CLICKS
from ui.page import LABELS, TITLE
from ui.status import NO_ANSWER, STALE, broken

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
        other = next(r for r in stack.replicas() if r.worker != first.replica)
        second = Tab.open(browser, stack.url, other.id)
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
        expect(first.shown(NO_ANSWER)).to_be_visible()  # not "not counted": it may have
        first.screenshot("store-unreachable")
    finally:
        redis_server.start()
    for tab in tabs:
        expect(tab.shown(STALE)).to_have_count(0)
        tab.expect_number("Clicks", clicks)  # the store's truth, though lower than shown
    expect(first.shown(NO_ANSWER)).to_have_count(0)
    second.click()
    first.expect_number("Clicks", clicks + 1)


def test_a_broken_counter_says_so_on_every_page_and_heals_once_repaired(
    tabs: Tabs, redis_server: RedisProcess
) -> None:
    first, second = tabs
    clicks = clicks_in_both(tabs)
    key = Names("counter-service").value(CLICKS)
    message = broken("Clicks", 'holds "abc", not an integer')
    with redis.Redis.from_url(redis_server.url) as client:
        client.set(key, "abc")
        first.click()  # refused, nothing written: and every page is told at once
        for tab in tabs:
            expect(tab.shown(message)).to_be_visible()
            tab.expect_unknown("Clicks")
        assert client.get(key) == b"abc"
        second.screenshot("counter-broken")
        client.set(key, str(clicks + 10))  # repaired, with no click: reconciliation heals it
    for tab in tabs:
        tab.expect_number("Clicks", clicks + 10)
        expect(tab.shown(message)).to_have_count(0)
    second.screenshot("counter-repaired")
    second.click()
    first.expect_number("Clicks", clicks + 11)
