"""Who may see the dashboard: a loopback bind and a secret token, by default.

The token is 32 random bytes (url-safe text) kept in `IMAGE/dashboard.token`,
created owner-only (0600) on first use and reused after; a file others could
read is refused (`UnsafeTokenFile`) rather than trusted. A browser proves it
holds the token once, with `?token=...` in the URL `batos dashboard` prints;
the answer sets an HttpOnly, SameSite=Strict cookie and redirects to the same
page without the token, so it leaves the address bar and the history.
Scripts may send `Authorization: Bearer TOKEN` instead. Every comparison is
constant-time (`hmac.compare_digest`).

On a loopback bind the `Host` header must name a loopback host too, so a
page on another site cannot reach the dashboard through DNS rebinding.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from actors.dashboard.errors import BadHttpAddress, RemoteBindRefused, UnsafeTokenFile
from kernel.errors import ImageMissing

TOKEN_FILE = "dashboard.token"
COOKIE = "batos_dashboard"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def parse_address(text: str, allow_remote: bool = False) -> tuple[str, int]:
    """`HOST:PORT` as (host, port); a non-loopback host only with `allow_remote`."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise BadHttpAddress(text)
    if not allow_remote and not is_loopback(host):
        raise RemoteBindRefused(host)
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_token(image_dir: Path) -> str:
    """The image's dashboard token, made (0600) if there is none yet."""
    if not (image_dir / "Data.fs").exists():
        raise ImageMissing(str(image_dir))
    path = image_dir / TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_token(path)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    return token


def _read_token(path: Path) -> str:
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
        raise UnsafeTokenFile(str(path), stat.S_IMODE(info.st_mode))
    token = path.read_text(encoding="ascii").strip()
    if len(token) < 16:
        raise UnsafeTokenFile(str(path), stat.S_IMODE(info.st_mode))
    return token


def same(offered: str | None, token: str) -> bool:
    """Constant-time: does `offered` equal the token?"""
    if not offered:
        return False
    return hmac.compare_digest(offered.encode("utf-8", "replace"), token.encode("ascii"))


def guard(token: str, loopback_only: bool) -> Middleware:
    """The aiohttp middleware that lets only token holders through."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if loopback_only and not is_loopback(_host_name(request.host)):
            raise web.HTTPMisdirectedRequest(text="this dashboard answers to localhost only")
        offered = request.query.get("token")
        if offered is not None:
            if not same(offered, token):
                raise web.HTTPUnauthorized(text=REFUSED)
            query = {k: v for k, v in request.query.items() if k != "token"}
            found = web.HTTPSeeOther(request.rel_url.with_query(query))
            found.set_cookie(COOKIE, token, httponly=True, samesite="Strict",
                             path="/")
            raise found
        bearer = request.headers.get("Authorization", "")
        if same(request.cookies.get(COOKIE), token) or (
                bearer.startswith("Bearer ") and same(bearer[7:].strip(), token)):
            return await handler(request)
        raise web.HTTPUnauthorized(text=REFUSED)

    return middleware


REFUSED = ("batos dashboard: a token is needed. Open the address `batos dashboard` "
           "printed (it ends in ?token=...), or send 'Authorization: Bearer TOKEN'; the "
           f"token is in the image directory's {TOKEN_FILE}.\n")


def _host_name(host: str | None) -> str:
    if not host:
        return ""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host
