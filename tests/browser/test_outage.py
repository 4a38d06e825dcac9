"""A first visit while Redis is down, in real Chromium through `counter-service up
--replicas 2`: a stack of its own, so that no page has shown its replica any number yet.
The page must say the store is unreachable and show no number at all (no zeros, no
"last known" numbers when none are known), and follow the store once it is back.
Screenshots: reports/browser/."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, expect

from counter_service.balancer.nginx import find_nginx
from counter_service.devtools.fleet import RedisProcess
from tests.browser.conftest import CHROMIUM
from tests.browser.tab import Tab
from tests.stack import Up
from ui.page import LABELS
from ui.status import BUSY, NO_ANSWER, NOT_REPLICATED, REFUSED, STALE, UNKNOWN

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does)",
    ),
    pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (CI installs it)"),
]


def test_a_new_visit_while_redis_is_down_shows_no_numbers_and_says_why(
    browser: Browser, stack: Up, redis_server: RedisProcess
) -> None:
    redis_server.stop()
    try:
        tab = Tab.open(browser, stack.url)
    except BaseException:
        redis_server.start()
        raise
    try:
        try:
            expect(tab.shown(UNKNOWN)).to_be_visible()
            expect(tab.shown(STALE)).to_have_count(0)  # nothing is known: no "last known"
            for label in LABELS.values():
                tab.expect_unknown(label)
            # The page counted this visit itself and failed: the visitor is asked nothing.
            for line in (NO_ANSWER, REFUSED, NOT_REPLICATED, BUSY):
                expect(tab.shown(line)).to_have_count(0)
            expect(tab.shown(re.compile("try again", re.IGNORECASE))).to_have_count(0)
            tab.screenshot("new-visit-store-unreachable")
        finally:
            redis_server.start()
        expect(tab.shown(UNKNOWN)).to_have_count(0)
        for label in LABELS.values():
            assert tab.number(label) >= 0  # the store's numbers, once it is back
        clicks = tab.number("Clicks")
        tab.click()
        tab.expect_number("Clicks", clicks + 1)
        tab.screenshot("new-visit-store-back")
    finally:
        tab.close()
