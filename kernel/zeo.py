"""`batos zeo`: serve an image's storage to several kernels with ZEO's own `runzeo`.

An image made by `batos init` (a local `Data.fs` with `blobs/`) becomes the
shared image: `batos zeo --image DIR --address HOST:PORT` writes
`DIR/zeo.conf` (the FileStorage, its blob directory, the address) and runs
`runzeo -C DIR/zeo.conf` in its place (exec), so a service manager sees
runzeo itself. Each kernel then has a directory of its own whose
`batos.toml` sets `image.zeo = "HOST:PORT"` and a distinct `kernel.id`
(docs/OPERATIONS.md, "Several kernels").

The ZEO server is the one process that writes `Data.fs`; kernels are its
clients and keep only a blob cache. Nothing here is batos-specific beyond
where the files are: any ZEO tooling (zeopack, zeoctl) works on it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from kernel.errors import ImageError
from kernel.image import DEFAULT_IMAGE

CONF_NAME = "zeo.conf"


def zeo_conf(image_dir: Path, address: str, *, invalidation_queue: int = 1000) -> str:
    """The `runzeo` configuration serving `image_dir`'s Data.fs and blobs at `address`."""
    image_dir = image_dir.resolve()
    return (
        "<zeo>\n"
        f"  address {address}\n"
        f"  invalidation-queue-size {invalidation_queue}\n"
        "</zeo>\n"
        "<filestorage 1>\n"
        f"  path {image_dir / 'Data.fs'}\n"
        f"  blob-dir {image_dir / 'blobs'}\n"
        "</filestorage>\n"
    )


def write_conf(image_dir: Path, address: str) -> Path:
    """Write `image_dir/zeo.conf`; the image must exist (`batos init`)."""
    if not (image_dir / "Data.fs").is_file():
        raise ImageError(str(image_dir), "no Data.fs here to serve (run `batos init` first)")
    path = image_dir / CONF_NAME
    path.write_text(zeo_conf(image_dir, address))
    path.chmod(0o600)
    return path


def runzeo_command(conf: Path) -> list[str]:
    """How to run ZEO's server on `conf` with this interpreter."""
    return [sys.executable, "-m", "ZEO.runzeo", "-C", str(conf)]


def zeo(
    image: Annotated[Path, typer.Option("--image", envvar="BATOS_IMAGE",
                                        help="The image directory to share.")] = DEFAULT_IMAGE,
    address: Annotated[str, typer.Option(
        "--address", help="Where the ZEO server listens: HOST:PORT or a unix socket path."
    )] = "127.0.0.1:8100",
    conf_only: Annotated[bool, typer.Option(
        "--conf-only", help="Write zeo.conf and print the runzeo command; do not start it.")
    ] = False,
) -> None:
    """Serve the image to several kernels: write zeo.conf and run ZEO's runzeo."""
    conf = write_conf(image, address)
    command = runzeo_command(conf)
    if conf_only:
        typer.echo(" ".join(command))
        return
    os.execv(command[0], command)
