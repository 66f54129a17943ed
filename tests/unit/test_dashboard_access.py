"""The dashboard's door: bind addresses, the token file, and the guard in front
of every route (a real aiohttp server on loopback; the kernel behind it is a
stand-in, since these tests are about who gets in, not what they see)."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from actors.dashboard import access, web
from actors.dashboard.errors import BadHttpAddress, RemoteBindRefused, UnsafeTokenFile
from actors.dashboard.source import KernelSource
from kernel.client import KernelUnreachable
from kernel.errors import ImageMissing

ADDRESSES = [  # (text, allow_remote, expected (host, port) or error type)
    ("127.0.0.1:8765", False, ("127.0.0.1", 8765)),
    ("localhost:0", False, ("localhost", 0)),
    ("[::1]:9000", False, ("::1", 9000)),
    ("127.0.0.2:80", False, ("127.0.0.2", 80)),
    ("0.0.0.0:8765", False, RemoteBindRefused),
    ("192.168.1.5:8765", False, RemoteBindRefused),
    ("example.org:8765", False, RemoteBindRefused),
    ("0.0.0.0:8765", True, ("0.0.0.0", 8765)),
    ("127.0.0.1", False, BadHttpAddress),
    ("127.0.0.1:http", False, BadHttpAddress),
    ("127.0.0.1:70000", False, BadHttpAddress),
    (":8765", False, BadHttpAddress),
]


@pytest.mark.parametrize(("text", "allow_remote", "expected"), ADDRESSES)
def test_bind_addresses(text: str, allow_remote: bool, expected: Any) -> None:
    if isinstance(expected, tuple):
        assert access.parse_address(text, allow_remote) == expected
        return
    with pytest.raises(expected) as caught:
        access.parse_address(text, allow_remote)
    assert caught.value.__class__ is expected


def test_token_file_is_made_owner_only_and_reused(tmp_path: Path) -> None:
    (tmp_path / "Data.fs").touch()
    token = access.load_token(tmp_path)
    path = tmp_path / access.TOKEN_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(token) >= 40 and access.load_token(tmp_path) == token


def test_no_token_is_made_where_there_is_no_image(tmp_path: Path) -> None:
    with pytest.raises(ImageMissing):
        access.load_token(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    (tmp_path / "Data.fs").touch()
    access.load_token(tmp_path)
    path = tmp_path / access.TOKEN_FILE
    os.chmod(path, 0o644)
    with pytest.raises(UnsafeTokenFile) as caught:
        access.load_token(tmp_path)
    assert (caught.value.path, caught.value.mode) == (str(path), 0o644)


def test_same_compares_whole_tokens(rng: random.Random) -> None:
    token = "".join(rng.choice("abcdefghijklmnop") for _ in range(43))
    assert access.same(token, token)
    for offered in (None, "", token[:-1], token + "x", token.upper(), " " + token):
        assert not access.same(offered, token)


class _Canned(KernelSource):
    """A kernel stand-in: one finished mission, no adapters, no audits."""

    def overview(self, limit: int = 50) -> dict[str, Any]:
        return {"status": {"kernel": {"steps": 3}, "counters": {"missions.started": 1}},
                "missions": [{"id": "ab" * 16, "state": "COMPLETE", "created": 1.7e9,
                              "pass": "memorize", "round": 0, "confidence": 0.9,
                              "question": "<script>alert(1)</script>"}], "time": 1.7e9}


class _Silent(KernelSource):
    """A kernel that never answers."""

    def overview(self, limit: int = 50) -> dict[str, Any]:
        raise KernelUnreachable(self.endpoint, self.timeout)


def _ask(token: str, requests: list[tuple[str, dict[str, str]]],
         source: KernelSource | None = None) -> list[tuple[int, str]]:
    async def run() -> list[tuple[int, str]]:
        app = web.make_app(source or _Canned("ipc:///nowhere"), token, loopback_only=True)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            out = []
            for path, headers in requests:
                response = await client.get(path, headers=headers, allow_redirects=False)
                out.append((response.status, await response.text()))
            return out
    return asyncio.run(run())


def test_the_guard_lets_in_only_token_holders() -> None:
    token = "t" * 43
    bearer = {"Authorization": f"Bearer {token}"}
    answers = _ask(token, [
        ("/", {}), ("/api/overview", {}), ("/events", {}), ("/static/dashboard.js", {}),
        (f"/?token={token}x", {}), ("/api/overview", {"Authorization": "Bearer nope"}),
        ("/api/overview", {"Cookie": f"{access.COOKIE}=wrong"}),
        ("/api/overview", {**bearer, "Host": "evil.example"}),
        ("/api/overview", bearer), ("/api/overview", {"Cookie": f"{access.COOKIE}={token}"}),
        (f"/?token={token}&x=1", {}),
    ])
    codes = [status for status, _ in answers]
    assert codes == [401, 401, 401, 401, 401, 401, 401, 421, 200, 200, 303]


def test_mission_text_is_escaped_in_pages() -> None:
    token = "t" * 43
    [(status, html)] = _ask(token, [("/", {"Authorization": f"Bearer {token}"})])
    assert status == 200
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_a_silent_kernel_is_a_503_that_names_the_endpoint() -> None:
    token = "t" * 43
    [(status, text)] = _ask(token, [("/", {"Authorization": f"Bearer {token}"})],
                            _Silent("ipc:///tmp/nobody/kernel.sock", timeout=0.1))
    assert status == 503
    assert "ipc:///tmp/nobody/kernel.sock" in text


def test_tier_totals_read_the_steward_counters(rng: random.Random) -> None:
    hits, swaps = rng.randrange(100), rng.randrange(1, 20)
    counters = {"adapters.hits.warm": hits, "adapters.swap_count.warm": swaps,
                "adapters.swap_us.warm": swaps * 1500}
    assert web.tier_totals(counters, "warm") == {"hits": hits, "swaps": swaps,
                                                  "mean_swap_ms": 1.5}
    assert web.tier_totals(counters, "hot") == {"hits": 0, "swaps": 0, "mean_swap_ms": None}
