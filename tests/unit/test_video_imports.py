"""Genesis and the CLI stay cheap: registering the video actor imports no torch."""

from __future__ import annotations

import subprocess
import sys

# numpy is allowed: the knowledge catalog keeps its vectors as packed numpy arrays.
CHECK = ("import sys, actors.genesis, actors.cli, actors.video.actor; "
         "heavy = sorted(m for m in ('torch', 'diffusers') if m in sys.modules); "
         "print(','.join(heavy))")


def test_registering_the_video_actor_imports_no_torch() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == ""
