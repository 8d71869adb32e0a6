"""How long to wait before trying the server again (SPEC: "exponential backoff and full jitter,
honour `Retry-After`, never give up").

Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015): the delay is
uniform in [0, min(cap, base * 2**(attempt - 1))], which spreads the retries of many gates
that lost the same server at the same moment. The jitter draws from a `random.Random` the
caller passes, so tests and the daemon decide where randomness comes from.

This is not tenacity's `wait_random_exponential`: tenacity retries one call in a loop it
owns, while a tap's next attempt is a time the scheduler (`core/schedule.py`) keeps
among hundreds of others, across sweeps, reloads and restarts; its wait strategies only
take a `RetryCallState` of such a loop. tenacity retries the calls that are retried as a
loop: the daemon's opening of the database and its writes (`AsyncRetrying`, daemon.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime

# A server asking for more than this is more likely misconfigured than truly down for a
# day; the gate asks again after an hour rather than going silent.
RETRY_AFTER_MAX_S = 3600.0

# RFC 9110 5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime forms a recipient
# must still accept. (email.utils would parse them too, but it imports socket.)
_HTTP_DATES = ("%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %d %H:%M:%S %Y")


# 2**64 seconds outlasts any cap: past it the ceiling is the cap, without a huge power.
_DOUBLINGS_MAX = 64


@dataclass(frozen=True)
class Backoff:
    base_s: float = 1.0
    # A minute at most: after an outage a gate's taps reach the server within about a
    # minute of its return, and a probe a minute from each of hundreds of gates is
    # nothing to a server. (Pauses for a wrong token or gate are slower: the uploader.)
    cap_s: float = 60.0

    def ceiling(self, attempt: int) -> float:
        """The largest delay after `attempt` failures (attempt >= 1)."""
        doublings = min(max(attempt, 1) - 1, _DOUBLINGS_MAX)
        return max(0.0, min(self.cap_s, self.base_s * 2.0**doublings))

    def delay(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Seconds to wait after `attempt` failures; never less than the server asked for."""
        jittered = rng.uniform(0.0, self.ceiling(attempt))
        if retry_after_s is None:
            return jittered
        return max(jittered, min(retry_after_s, RETRY_AFTER_MAX_S))


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds from a `Retry-After` header: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # str.isdigit() also takes "²" and "٣"
        return float(text)
    for form in _HTTP_DATES:
        try:
            when = datetime.strptime(" ".join(text.split()), form).replace(tzinfo=UTC)
        except ValueError:
            continue
        return max(0.0, (when - now).total_seconds())
    return None
