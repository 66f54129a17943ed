"""CURVE keys, the allow list and roles.

Layout under the image's `keys/` directory:

    server.key, server.key_secret      the kernel's keypair (`batos keys init`)
    clients/NAME.key                   allowed public keys, one folder per role
    actors/NAME.key
    admins/NAME.key
    issued/NAME.key, NAME.key_secret   keypairs made by `batos keys add`, to hand
                                       to the peer (then delete the secret here)
    kernels/NAME.key                   the other kernels sharing the image (their
                                       server.key): only they may subscribe to this
                                       kernel's events over tcp (`kernel.relay`)

A `tcp://` endpoint requires CURVE: the ZAP authenticator starts before the
socket binds, enforces the `batos` domain and accepts only keys in a role
folder. The authenticated key (the message's `User-Id`) decides the role;
the routing id a peer chose decides nothing.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from kernel.errors import KernelError

ZAP_DOMAIN = "batos"
KERNELS_ZAP_DOMAIN = "batos.kernels"  # the event publisher's: other kernels only
KERNELS_DIR = "kernels"
ROLES = ("client", "actor", "admin")
ROLE_DIRS = {"client": "clients", "actor": "actors", "admin": "admins"}
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# What each role may send. Over ipc (owner-only socket) the peer is the owner: admin.
ROLE_KINDS: dict[str, frozenset[str]] = {
    "client": frozenset({"ping", "mission", "watch", "cancel", "status"}),
    "actor": frozenset({"ping", "register", "heartbeat", "reply", "unregister"}),
    "admin": frozenset({"ping", "mission", "send", "watch", "cancel", "status",
                        "register", "heartbeat", "reply", "unregister"}),
}


class KeyFileError(KernelError):
    """Keys are missing, malformed or would be overwritten."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"keys {where}: {problem}")
        self.where = where


@dataclass(frozen=True, slots=True)
class PeerKeys:
    """What a peer needs to connect over CURVE: its keypair and the server's key."""

    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def load(cls, secret_file: Path | str, server_public_file: Path | str) -> PeerKeys:
        public, secret = _load(Path(secret_file), need_secret=True)
        server_public, _ = _load(Path(server_public_file), need_secret=False)
        assert secret is not None
        return cls(public, secret, server_public)

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Configure `sock` as a CURVE client of the kernel."""
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = self.server_public


def keys_dir(image_dir: Path) -> Path:
    return image_dir / "keys"


def init_server_keys(image_dir: Path) -> Path:
    """Create the kernel's keypair (once); returns the public key file."""
    root = keys_dir(image_dir)
    public = root / "server.key"
    if public.exists():
        return public
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    for role_dir in ROLE_DIRS.values():
        (root / role_dir).mkdir(exist_ok=True)
    (root / "issued").mkdir(exist_ok=True)
    zmq.auth.create_certificates(str(root), "server")
    os.chmod(root / "server.key_secret", 0o600)
    return public


def add_peer_key(image_dir: Path, name: str, role: str) -> tuple[Path, Path]:
    """Make a keypair for a peer and allow its public key in `role`.

    Returns (secret file to hand to the peer, server public key file).
    """
    if role not in ROLES:
        raise KeyFileError(role, f"role must be one of {', '.join(ROLES)}")
    if not _NAME.fullmatch(name):
        raise KeyFileError(name, "a key name is 1-64 letters, digits, '_', '.' or '-'")
    root = keys_dir(image_dir)
    server_public = root / "server.key"
    if not server_public.exists():
        raise KeyFileError(str(root), "no server keys; run `batos keys init` first")
    issued = root / "issued"
    if (issued / f"{name}.key").exists():
        raise KeyFileError(name, "a key of this name exists already")
    public_file, secret_file = zmq.auth.create_certificates(str(issued), name)
    os.chmod(secret_file, 0o600)
    allowed = root / ROLE_DIRS[role] / f"{name}.key"
    allowed.write_bytes(Path(public_file).read_bytes())
    return Path(secret_file), server_public


class KeyRing:
    """Allowed public keys by role, re-read when a role folder changes."""

    def __init__(self, image_dir: Path) -> None:
        self.root = keys_dir(image_dir)
        self._lock = threading.Lock()
        self._stamp: tuple[float, ...] = ()
        self._roles: dict[bytes, tuple[str, str]] = {}

    def server_keys(self) -> tuple[bytes, bytes]:
        public, secret = _load(self.root / "server.key_secret", need_secret=True)
        assert secret is not None
        return public, secret

    def lookup(self, public_z85: bytes) -> tuple[str, str] | None:
        """(name, role) for an allowed key, else None."""
        with self._lock:
            self._refresh()
            return self._roles.get(public_z85)

    def callback(self, domain: str, key_z85: bytes) -> bool:
        """ZAP credentials provider (pyzmq passes the key z85-encoded)."""
        return domain == ZAP_DOMAIN and self.lookup(key_z85) is not None

    def _refresh(self) -> None:
        dirs = [self.root / d for d in ROLE_DIRS.values()]
        stamp = tuple(d.stat().st_mtime if d.exists() else 0.0 for d in dirs)
        if stamp == self._stamp:
            return
        roles: dict[bytes, tuple[str, str]] = {}
        for role, folder in ROLE_DIRS.items():
            for path in sorted((self.root / folder).glob("*.key")):
                public, _ = _load(path, need_secret=False)
                roles[public] = (path.stem, role)
        self._roles, self._stamp = roles, stamp


class KernelKeys:
    """ZAP credentials of the event publisher: the keys in `keys/kernels/`, re-read
    when the folder changes."""

    def __init__(self, image_dir: Path) -> None:
        self.folder = keys_dir(image_dir) / KERNELS_DIR
        self._stamp = -1.0
        self._keys: frozenset[bytes] = frozenset()

    def callback(self, domain: str, key_z85: bytes) -> bool:
        stamp = self.folder.stat().st_mtime if self.folder.exists() else 0.0
        if stamp != self._stamp:
            self._keys = frozenset(_load(path, need_secret=False)[0]
                                   for path in sorted(self.folder.glob("*.key")))
            self._stamp = stamp
        return domain == KERNELS_ZAP_DOMAIN and key_z85 in self._keys


def start_authenticator(ctx: zmq.Context[Any], keyring: KeyRing) -> ThreadAuthenticator:
    """Start ZAP before any CURVE socket binds; only allowed keys get through."""
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=keyring)
    return auth


def make_curve_server(sock: zmq.Socket[Any], keyring: KeyRing,
                      domain: str = ZAP_DOMAIN) -> None:
    """Make `sock` a CURVE server in an enforced ZAP domain (`batos` by default)."""
    public, secret = keyring.server_keys()
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    sock.zap_domain = domain.encode()
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def _load(path: Path, *, need_secret: bool) -> tuple[bytes, bytes | None]:
    if not path.exists():
        raise KeyFileError(str(path), "no such key file")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise KeyFileError(str(path), f"not a key file: {exc}") from exc
    if need_secret and secret is None:
        raise KeyFileError(str(path), "holds no secret key")
    return public, secret
