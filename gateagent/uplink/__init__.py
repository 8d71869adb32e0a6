"""Delivering recorded taps to the attendance server: profiles build requests, client sends."""

import sys

# `import httpx` imports its command-line client, `httpx._main`, with click and pygments
# where they are installed (click comes with sqlite-utils): 2.3 MB the daemon would keep
# for good and never use (README "Performance"). A None in sys.modules makes that one
# import fail, which httpx allows for: its `httpx.main` then says what to install.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
