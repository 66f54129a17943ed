"""The typer options that `batos` commands share, defined once.

Every command that talks to a kernel takes the same connection options
(`--image`, `--endpoint`, `--key`, `--server-key`, `--timeout`) and most take
`--json`; commands that read the configuration take `--set`. A command
declares them by type, with its own default where one differs (a timeout):

    from kernel.cli_options import EndpointOpt, ImageOpt, JsonOpt, TimeoutOpt

    def status(image: ImageOpt = DEFAULT_IMAGE, endpoint: EndpointOpt = None,
               timeout: TimeoutOpt = 10.0, as_json: JsonOpt = False) -> None: ...

so each option reads the same in every `--help`, and an environment variable
(`BATOS_IMAGE`, `BATOS_ENDPOINT`, `BATOS_KEY`, `BATOS_TIMEOUT`) works for all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ImageOpt = Annotated[Path, typer.Option(
    "--image", envvar="BATOS_IMAGE", help="Image directory (or BATOS_IMAGE).")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a setting: section.key=value (repeatable).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
EndpointOpt = Annotated[str | None, typer.Option(
    "--endpoint", envvar="BATOS_ENDPOINT",
    help="Kernel endpoint (default: ipc socket of --image).")]
KeyOpt = Annotated[Path | None, typer.Option(
    "--key", envvar="BATOS_KEY", help="Your CURVE secret key file (tcp endpoints).")]
ServerKeyOpt = Annotated[Path | None, typer.Option(
    "--server-key", help="The kernel's public key file (default: IMAGE/keys/server.key).")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", envvar="BATOS_TIMEOUT", help="Seconds to wait for the kernel.")]
