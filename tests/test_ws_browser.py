"""The WebSocket chat in a real browser: headless Chromium (the system's) driven by Playwright, two pages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from browser import CHROMIUM, chromium
from loopback import TIMEOUT

import netloop

pytest.importorskip("wsproto")
sync_api = pytest.importorskip("playwright.sync_api")

from examples import ws_chat  # noqa: E402

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian's chromium package)"),
]


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as context:
        yield context


def test_a_message_typed_in_one_tab_appears_in_the_other(browser: Any) -> None:
    engine = ws_chat.start(loops=2)
    try:
        host, port = engine.addrs[0].removeprefix("tcp://").rsplit(":", 1)
        url = f"http://{host}:{port}/"
        first, second = browser.new_page(), browser.new_page()
        for page in (first, second):
            page.goto(url)
            sync_api.expect(page.locator("#status")).to_contain_text("connected as", timeout=TIMEOUT * 1000)
        # Which loop serves each tab depends on the other connections Chromium opens (the page, its favicon), so it is
        # not asserted here; tests/test_ws_chat.py checks delivery across loops with clients placed on both.
        first.fill("#text", "hello from the first tab")
        first.click("#send")
        sync_api.expect(second.locator("#log li:not(.note)")).to_contain_text(
            ["hello from the first tab"], timeout=TIMEOUT * 1000
        )
        second.fill("#text", "and back")
        second.press("#text", "Enter")
        sync_api.expect(first.locator("#log li:not(.note)").last).to_contain_text("and back", timeout=TIMEOUT * 1000)
    finally:
        engine.stop(timeout=TIMEOUT)
        assert engine.wait(TIMEOUT)


def test_the_page_reports_the_server_going_away(browser: Any) -> None:
    engine: netloop.Engine = ws_chat.start(loops=1)
    host, port = engine.addrs[0].removeprefix("tcp://").rsplit(":", 1)
    page = browser.new_page()
    page.goto(f"http://{host}:{port}/")
    sync_api.expect(page.locator("#status")).to_contain_text("connected as", timeout=TIMEOUT * 1000)
    engine.stop(timeout=TIMEOUT)
    assert engine.wait(TIMEOUT)
    # The page notices the server going away. (The 1001 close frame itself is checked by tests/test_ws_chat.py with a
    # wsproto client; Chromium reported 1006 instead in about one run of ten on this machine.)
    sync_api.expect(page.locator("#status")).to_contain_text("disconnected (", timeout=TIMEOUT * 1000)
