"""Sign-in through OpenID Connect (``[auth.oidc]``) against a real OpenID provider on loopback.

The provider is panva's certified ``oidc-provider`` (tests/fixtures_oidc.py), the gateway a
real one over real HTTP, the browser a client that follows redirects and fills in the
provider's own forms (and Chromium once). Bad ID tokens come from the provider itself: its
test harness changes the next token response (a claim changed under the signature, or
claims re-signed with the provider's real key), so only the gateway's checks stand between
them and a session.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from gateway import config as config_mod
from gateway.access.directory import Directory
from gateway.access.policy import load_roles
from gateway.appkeys import AUDIT
from gateway.errors import ConfigErrors
from gateway.plugins import load_plugins
from tests.fixtures_app import RunningGateway, camera_toml
from tests.fixtures_browser import CHROMIUM
from tests.fixtures_oidc import OpenIdProvider, follow, free_port, oidc_provider

__all__ = ["oidc_provider"]  # the module-scoped provider fixture

ROOT = Path(__file__).resolve().parent.parent
CALLBACK = "/api/session/redirect/oidc/callback"


def oidc_toml(op: OpenIdProvider, port: int, client_id: str, secret_file: Path, **extra: str) -> str:
    keys = "".join(f"{k} = {v}\n" for k, v in extra.items())
    return f"""
[auth.oidc]
issuer = "{op.issuer}"
client-id = "{client_id}"
client-secret-file = "{secret_file}"
redirect-url = "http://127.0.0.1:{port}{CALLBACK}"
display-name = "City SSO"
scopes = ["openid", "profile", "groups"]
{keys}
[[auth.oidc.groups]]
group = "/cctv-supervisors"
role = "supervisor"
all-areas = true

[[auth.oidc.groups]]
group = "/cctv-operators"
role = "operator"

[[auth.oidc.groups]]
group = "/north-district"
areas = ["north"]
"""


async def oidc_gateway(make_gateway, op: OpenIdProvider, tmp_path: Path, cameras: str = "") -> RunningGateway:
    port = free_port()
    client_id, secret = await op.register_client(f"http://127.0.0.1:{port}{CALLBACK}", f"http://127.0.0.1:{port}/")
    secret_file = tmp_path / f"oidc-secret-{port}"
    secret_file.write_text(secret + "\n")
    return await make_gateway(cameras, oidc_toml(op, port, client_id, secret_file), port=port)


def browser(gw: RunningGateway) -> aiohttp.ClientSession:
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    gw._sessions.append(session)
    return session


def at_gateway(gw: RunningGateway):
    return lambda url: url.startswith(gw.url + "/") and not url.startswith(gw.url + "/api/")


async def sign_in(gw: RunningGateway, session: aiohttp.ClientSession, login: str = "alice", **kw):
    return await follow(session, gw.url + "/api/session/redirect/oidc", done=at_gateway(gw), login=login, **kw)


def refusal(url: str) -> str | None:
    return (parse_qs(urlsplit(url).query).get("sign-in-error") or [None])[0]


async def audit_entries(gw: RunningGateway, action: str, **kw) -> list[dict]:
    await gw.app[AUDIT].flush()
    return await gw.app[AUDIT].query(action=action, **kw)


async def whoami(gw: RunningGateway, session: aiohttp.ClientSession) -> tuple[int, dict]:
    async with session.get(gw.url + "/api/session") as resp:
        return resp.status, await resp.json()


# --------------------------------------------------------------------------------------


async def test_sign_in_maps_claims_limits_cameras_and_logout_ends_both_sessions(
    make_gateway, oidc_provider: OpenIdProvider, tmp_path: Path
) -> None:
    cams = camera_toml("n1", "demo", area="north", width=160, height=96, fps=5) + camera_toml(
        "c1", "demo", area="centre", width=160, height=96, fps=5
    )
    gw = await oidc_gateway(make_gateway, oidc_provider, tmp_path, cams)
    async with gw.anonymous.get(gw.url + "/api/session/providers") as resp:
        assert resp.status == 200
        assert await resp.json() == [{"id": "oidc", "title": "City SSO", "url": "/api/session/redirect/oidc"}]

    session = browser(gw)
    journey = await sign_in(gw, session, "alice")
    assert journey.landed == gw.url + "/", journey
    assert journey.prompts == ["login", "consent"]
    status, me = await whoami(gw, session)
    assert status == 200, me
    assert me["user"]["username"] == "alice" and me["user"]["display_name"] == "Alice Example"
    assert me["user"]["role"] == "operator" and me["user"]["areas"] == ["north"] and me["user"]["all_areas"] is False
    async with session.get(gw.url + "/api/cameras") as resp:
        assert resp.status == 200
        assert [c["id"] for c in await resp.json()] == ["n1"]  # only her area's camera
    async with session.get(gw.url + "/api/cameras/c1") as resp:
        assert resp.status in (403, 404)
    created = await audit_entries(gw, "user.create", user="directory:oidc")
    assert created and created[0]["detail"]["username"] == "alice", created
    assert created[0]["detail"]["groups"] == ["/cctv-operators", "/north-district"]
    ok = await audit_entries(gw, "login.ok", user="alice")
    assert ok and ok[0]["detail"]["source"] == "oidc" and ok[0]["client"] == "127.0.0.1", ok

    # A supervisor's name as the provider writes it ("Bob") becomes the username "bob".
    bob = browser(gw)
    assert (await sign_in(gw, bob, "bob")).landed == gw.url + "/"
    status, me = await whoami(gw, bob)
    assert me["user"]["username"] == "bob" and me["user"]["role"] == "supervisor" and me["user"]["all_areas"] is True

    # Sign-out: the Citygate session ends, and the answer leads to the provider's sign-out.
    session.headers["X-CSRF-Token"] = me_csrf = (await whoami(gw, session))[1]["csrf_token"]
    assert me_csrf
    async with session.delete(gw.url + "/api/session") as resp:
        assert resp.status == 200, await resp.text()
        logout_url = (await resp.json())["logout_url"]
    parts = urlsplit(logout_url)
    assert logout_url.startswith(oidc_provider.issuer + "/session/end?"), logout_url
    assert parse_qs(parts.query)["post_logout_redirect_uri"] == [gw.url + "/"] and "id_token_hint" in parse_qs(parts.query)
    assert (await whoami(gw, session))[0] == 401
    assert await audit_entries(gw, "logout", user="alice")
    back = await follow(session, logout_url, done=lambda url: url.startswith(gw.url))
    assert back.landed == gw.url + "/" and back.prompts == ["logout"], back
    # The provider's session ended too: signing in again asks for the password again.
    again = await sign_in(gw, session, "alice")
    assert again.prompts[0] == "login" and again.landed == gw.url + "/", again
    assert (await whoami(gw, session))[0] == 200


async def test_bad_answers_and_tokens_refused_and_audited(make_gateway, oidc_provider: OpenIdProvider, tmp_path: Path) -> None:
    gw = await oidc_gateway(make_gateway, oidc_provider, tmp_path)

    async def refused(expect: str, login: str = "alice", shown: str | None = None, **kw) -> None:
        session = browser(gw)
        journey = await sign_in(gw, session, login, **kw)
        reason = refusal(journey.landed)
        assert reason is not None and (shown or expect) in reason, (expect, journey)
        assert (await whoami(gw, session))[0] == 401  # no session
        entries = await audit_entries(gw, "login.failed", outcome="refused")
        assert any(expect in e["detail"]["reason"] and e["detail"]["source"] == "oidc" for e in entries), (expect, entries)

    for mode, expect in [
        ("tampered", "signature is not valid"),
        ("expired", "ID token expired"),
        ("wrong-audience", "meant for 'another-client'"),
        ("wrong-issuer", "issued by 'http://127.0.0.1:1'"),
    ]:
        await oidc_provider.control("/__test/next-id-token", {"mode": mode})
        await refused(expect)

    def other_state(url: str) -> str:
        return url.replace("state=", "state=x") if url.startswith(gw.url + CALLBACK) else url

    await refused("state does not match", rewrite=other_state)
    # right at the provider, in no mapped group:
    await refused("in no directory group mapped to a Citygate role", "carol", shown="in no group that may use Citygate")
    # "tester" is a local account here, never taken over:
    await refused("a local account has this name", "mallory", shown="belongs to a local account here")
    carol = await audit_entries(gw, "login.failed", user="carol")
    assert carol and carol[0]["detail"]["source"] == "oidc"

    # A callback this browser never started (a login CSRF attempt): no cookie, refused.
    async with browser(gw).get(gw.url + CALLBACK + "?code=abc&state=xyz", allow_redirects=False) as resp:
        assert resp.status == 303 and "no sign-in was started" in refusal(resp.headers["Location"])

    # The provider rotates its signing key: the unknown kid fetches the JWKS again.
    await oidc_provider.control("/__test/rotate-keys")
    session = browser(gw)
    assert (await sign_in(gw, session, "alice")).landed == gw.url + "/"
    assert (await whoami(gw, session))[0] == 200

    # A flood of forged callbacks meets the address's sign-in budget, audited once.
    forger = browser(gw)
    for _ in range(40):
        async with forger.get(gw.url + CALLBACK + "?code=abc&state=xyz", allow_redirects=False) as resp:
            if "too many sign-in attempts" in refusal(resp.headers["Location"]):
                break
    else:
        raise AssertionError("40 forged callbacks in a row were never throttled")
    assert len(await audit_entries(gw, "login.throttled")) == 1


async def test_unreachable_provider_is_a_clear_error_and_local_sign_in_goes_on(
    make_gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    port, dead = free_port(), free_port()
    dead_op = OpenIdProvider(f"http://127.0.0.1:{dead}")
    with caplog.at_level(logging.ERROR, logger="citygate_plugins.auth.oidc"):
        gw = await make_gateway("", oidc_toml(dead_op, port, "citygate", secret, timeout="2"), port=port)
    discovery = f"http://127.0.0.1:{dead}/.well-known/openid-configuration"
    assert any(discovery in r.getMessage() and "local accounts still sign in" in r.getMessage() for r in caplog.records), caplog.text
    async with gw.anonymous.get(gw.url + "/api/session/redirect/oidc", allow_redirects=False) as resp:
        assert resp.status == 503
        assert discovery in (await resp.json())["error"], "the answer names what could not be fetched"
    failed = await audit_entries(gw, "login.failed", outcome="failed")
    assert failed and failed[0]["detail"]["source"] == "oidc" and "unavailable" in failed[0]["detail"]["reason"]
    assert (await whoami(gw, gw.session))[0] == 200  # the fixture's local account signed in


def test_oidc_options_are_checked_with_file_and_key(tmp_path: Path) -> None:
    plugins = load_plugins()
    (tmp_path / "roles.toml").write_text((ROOT / "conf" / "roles.toml").read_text())
    op = OpenIdProvider("http://sso.city.example/realms/city")  # plain http off loopback
    toml = oidc_toml(op, 8443, "citygate", tmp_path / "no-such-secret").replace(CALLBACK, "/callback").replace(
        'role = "operator"', 'role = "no-such-role"'
    )
    (tmp_path / "gateway.toml").write_text(toml)
    config = config_mod.load(tmp_path, vendors={}, auth_providers=plugins.auth_providers())
    with pytest.raises(ConfigErrors) as exc:
        Directory.from_config(config, plugins.auth_providers(), frozenset(load_roles(tmp_path).roles))
    lines = str(exc.value).splitlines()
    file = tmp_path / "gateway.toml"
    assert f"{file}: auth.oidc.issuer: 'http://sso.city.example/realms/city' must be an https:// URL (http:// only on loopback)" in lines
    assert f"{file}: auth.oidc.redirect-url: must end in {CALLBACK} (the gateway's callback)" in lines
    assert f"{file}: auth.oidc.client-secret-file: cannot read {tmp_path / 'no-such-secret'}: No such file or directory" in lines
    assert any(line.startswith(f"{file}: auth.oidc.groups[1].role: unknown role 'no-such-role'") for line in lines), lines
    (tmp_path / "gateway.toml").write_text(toml.replace('scopes = ["openid", "profile", "groups"]', "scopes = 3"))
    with pytest.raises(ConfigErrors) as exc:
        config_mod.load(tmp_path, vendors={}, auth_providers=plugins.auth_providers())
    assert str(exc.value).startswith(f"{file}: auth.oidc.scopes: expected `array`, got `int`"), str(exc.value)


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM}")
async def test_oidc_sign_in_and_out_in_chromium(make_gateway, oidc_provider: OpenIdProvider, tmp_path: Path, browser) -> None:
    gw = await oidc_gateway(make_gateway, oidc_provider, tmp_path, camera_toml("n1", "demo", area="north", width=160, height=96, fps=5))
    context = await browser.new_context()
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # A refused redirect sign-in comes back with its reason, shown on the sign-in screen once.
        await page.goto(gw.url + "/?sign-in-error=Sign-in%20through%20City%20SSO%20refused%3A%20test")
        await page.wait_for_selector("#sign-in .sign-in-message:has-text('Sign-in through City SSO refused: test')")
        assert "sign-in-error" not in page.url
        await page.click("#sign-in a.sign-in-provider:has-text('Sign in with City SSO')")
        await page.wait_for_selector('input[name="login"]')  # the provider's own page
        await page.fill('input[name="login"]', "alice")
        await page.fill('input[name="password"]', "anything")
        await page.click('button[type="submit"]')
        await page.wait_for_selector('button:has-text("Continue")')  # consent
        await page.click('button:has-text("Continue")')
        await page.wait_for_selector('#camera-list li[data-camera-id="n1"]')
        me = await page.evaluate("fetch('/api/session').then(r => r.json())")
        assert me["user"]["username"] == "alice" and me["user"]["role"] == "operator"
        # Signing out leaves for the provider's sign-out page; the Citygate session has ended.
        await page.click(".user-menu-button")
        await page.click('[data-action="sign-out"]')
        await page.wait_for_url(f"{oidc_provider.issuer}/session/end?**", wait_until="commit")
        await page.wait_for_selector('button[value="yes"]')
        await page.click('button[value="yes"]')
        await page.wait_for_url(gw.url + "/", wait_until="commit")  # the provider sends it back
        await page.wait_for_selector("#sign-in[open]")
        assert errors == []
    finally:
        await context.close()
    assert await audit_entries(gw, "logout", user="alice")
