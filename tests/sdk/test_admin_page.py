"""The admin web page in real headless Chromium (Debian's, driven by Playwright) against a real server
with official SDK clients connected: log in, look a user up, disconnect one session, revoke the other's
token. The sessions page is saved as a screenshot (``test-artifacts/admin-sessions.png``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.sdk.common import SERVER_EXTRA, SHARDS, connection_token, connections, run, unique
from tests.sdk.scenarios import connected, open_client
from tests.support.server import API_KEY, Server
from tests.support.waiting import eventually_async, scaled

PASSWORD = "admin-page-password"
ARTIFACTS = Path(os.environ.get("SWITCHBOARD_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    secret = "admin-page-secret-of-at-least-32-bytes"
    admin = {"admin": True, "admin_password": PASSWORD, "admin_secret": secret}
    with Server(tmp_path_factory.mktemp("admin"), shards=SHARDS, **SERVER_EXTRA, **admin) as srv:
        yield srv


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    assert CHROMIUM is not None, "no chromium on PATH: `make test` installs Debian's"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], timeout=scaled(30) * 1000
        )
        try:
            yield browser
        finally:
            await browser.close()


class Watched:
    """A page whose every request and response is checked: only this server, never the API key."""

    def __init__(self, page: Page, server: Server) -> None:
        self.page = page
        self.requests: list[str] = []
        self.bodies: list[bytes] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("response", self._keep_body)
        page.set_default_timeout(scaled(10) * 1000)
        expect.set_options(timeout=scaled(10) * 1000)
        self.origin = server.url

    def _keep_body(self, response: Any) -> None:
        self.bodies.append(response)

    async def check(self) -> None:
        assert self.requests and all(url.startswith(self.origin + "/") for url in self.requests), (
            self.requests
        )
        for response in self.bodies:
            if response.status in (301, 302, 303, 307, 308):
                continue  # a redirect has no body
            body = await asyncio.wait_for(response.body(), scaled(5))
            assert API_KEY.encode() not in body, response.url
        assert API_KEY not in await self.page.content()


async def log_in(page: Page, server: Server, password: str = PASSWORD) -> None:
    await page.goto(server.url + "/")
    await expect(page.locator("#login")).to_be_visible()
    await page.fill("#password", password)
    await page.click("#login-form button[type=submit]")


def test_a_wrong_password_is_refused_and_the_api_needs_a_token(server: Server) -> None:
    async def scenario() -> None:
        async with chromium() as browser:
            page = await browser.new_page()
            watched = Watched(page, server)
            await log_in(page, server, "not-the-password")
            await expect(page.locator("#login-error")).to_have_text("Wrong password.")
            await expect(page.locator("#overview")).to_be_hidden()
            await watched.check()

    run(scenario())
    refused = requests.post(f"{server.url}/admin/api", json={"method": "info"}, timeout=5)
    assert refused.status_code == 401
    forged = requests.post(
        f"{server.url}/admin/api",
        json={"method": "info"},
        headers={"Authorization": f"token {API_KEY}"},  # the API key is not an admin token
        timeout=5,
    )
    assert forged.status_code == 401
    as_form = requests.post(f"{server.url}/admin/api", data={"method": "info"}, timeout=5)
    assert as_form.status_code in (401, 415)


def test_sessions_page_disconnects_and_revokes_sdk_sessions(server: Server) -> None:
    user = unique("admin-page")
    js_name, py_name = "admin-page-js", "admin-page-python"

    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            news = unique("news:updates")
            js_token = connection_token(
                user, jti=unique("js-jti"), channels=[news], meta={"plan": "pro"}, labels={"region": "eu"}
            )
            js = await open_client(stack, "js", server, "js", "json", js_token, name=js_name)
            python_jti = unique("py-jti")
            python = await open_client(
                stack, "python", server, "py", "json", connection_token(user, jti=python_jti), name=py_name
            )
            js_id, python_id = await connected(js), await connected(python)

            browser = await stack.enter_async_context(chromium())
            page = await browser.new_page(viewport={"width": 1500, "height": 560})
            watched = Watched(page, server)
            await log_in(page, server)
            await expect(page.locator("#overview")).to_be_visible()
            await expect(page.locator("#nodes tbody tr")).to_have_count(1)

            await page.click("nav a[data-page=sessions]")
            await page.fill("#lookup-user", user)
            await page.click("#lookup button[type=submit]")
            rows = page.locator("#sessions-table tbody tr")
            await expect(rows).to_have_count(2)
            await expect(page.locator(f'tr[data-client="{js_id}"] td.app')).to_have_text(js_name)
            await expect(page.locator(f'tr[data-client="{python_id}"] td.app')).to_have_text(py_name)
            await expect(page.locator(f'tr[data-client="{python_id}"]')).to_contain_text(python_jti)
            js_row = page.locator(f'tr[data-client="{js_id}"]')
            for shown in (news, '{"plan":"pro"}', '{"region":"eu"}', "websocket", "json"):
                await expect(js_row).to_contain_text(shown)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "admin-sessions.png"), full_page=True)

            # Disconnect: the row goes from the page and from the connections API; the SDK is told 3503
            # and, as that code says, does not come back.
            await page.click(f'tr[data-client="{js_id}"] button[data-action="disconnect"]')
            await expect(page.locator(f'tr[data-client="{js_id}"]')).to_have_count(0)
            await expect(rows).to_have_count(1)
            event = await js.log.wait("disconnected")
            assert event["code"] == 3503, event
            listed = await connections(server, user=user)
            assert set(listed) == {python_id}, listed

            # Revoke token: the SDK is closed with 3500 and cannot come back with that token.
            started = time.monotonic()
            await page.click(f'tr[data-client="{python_id}"] button[data-action="revoke"]')
            event = await python.log.wait("disconnected")
            revoke_to_close = time.monotonic() - started
            assert event["code"] == 3500, event
            assert revoke_to_close < scaled(1.0) + 0.5, revoke_to_close
            await expect(rows).to_have_count(0)
            mark = len(python.log.events)
            await python.connect()
            refused = await python.log.wait("disconnected", start=mark)
            assert refused["code"] == 3500, refused
            assert not python.log.after(mark, "connected")
            await eventually_async(
                lambda: connections(server, user=user), until=lambda c: not c, what="no sessions left"
            )
            await watched.check()

    run(scenario(), timeout=120)


def test_user_actions_block_and_unblock(server: Server) -> None:
    user = unique("admin-block")

    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            client = await open_client(stack, "python", server, "py", "json", connection_token(user))
            await connected(client)
            browser = await stack.enter_async_context(chromium())
            page = await browser.new_page()
            await log_in(page, server)
            await page.click("nav a[data-page=sessions]")
            await page.fill("#lookup-user", user)
            await page.click("#lookup button[type=submit]")
            await expect(page.locator("#sessions-table tbody tr")).to_have_count(1)
            await page.click('#user-actions button[data-user-action="block_user"]')
            event = await client.log.wait("disconnected")
            assert event["code"] == 3503, event  # blocked: "force disconnect", no reconnect
            await expect(page.locator("#sessions-table tbody tr")).to_have_count(0)
            await expect(page.locator("#notice")).to_contain_text("Block")
            await page.click('#user-actions button[data-user-action="unblock_user"]')
            await expect(page.locator("#notice")).to_contain_text("Unblock")
            mark = len(client.log.events)
            await client.connect()
            await client.log.wait("connected", start=mark)

    run(scenario(), timeout=90)
