"""The web dashboard (`batos dashboard`): a token-guarded aiohttp app that shows
a running kernel's missions, adapters, audits and counters, live.

Modules: `access` (bind address, token, the guard), `source` (the kernel
queries behind every page), `plots` (audit plots as SVG), `live` (the
shared poller, a running mission's stream), `web` (routes,
pages, live events), `cli` (the command), `errors`.
"""

from __future__ import annotations
