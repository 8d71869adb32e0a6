"""One HTTP request per tap, shaped by the uplink profile (SPEC "Uplink profiles").

- `integration` (seed 000): JSON `{gate, card_no, tanggal, token, checktype}`.
- `absensi` (seed 003): JSON `{"rfid": card_no}`; the server decides in or out itself.
- `webhook`: any endpoint; URL per direction, body fields and encoding, auth and an
  `Idempotency-Key` from `[uplink.webhook]` (README "Configuration").

The request carries the token, so it has no repr: it is never logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateagent.config import Uplink
from gateagent.core.direction import CHECK_OUT
from gateagent.store import Tap, iso


@dataclass(frozen=True, repr=False)
class Request:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    json: dict[str, object] | None = None
    form: dict[str, str] | None = None

    def __repr__(self) -> str:
        return f"<Request {self.url}>"


def build(tap: Tap, uplink: Uplink, device: str) -> Request:
    token = uplink.token.get_secret_value() if uplink.token is not None else ""
    headers = _auth(uplink.auth, token)
    if uplink.profile == "integration":
        return Request(
            uplink.url,
            headers,
            json={
                "gate": tap.gate if tap.gate is not None else uplink.gate,
                "card_no": tap.card_no,
                "tanggal": iso(tap.tapped_at),
                "token": token,
                "checktype": tap.checktype,
            },
        )
    if uplink.profile == "absensi":
        return Request(uplink.url, headers, json={"rfid": tap.card_no})
    webhook = uplink.webhook
    url = webhook.url_out if tap.checktype == CHECK_OUT and webhook.url_out else uplink.url
    if webhook.idempotency_header:
        headers[webhook.idempotency_header] = tap.tap_id
    values = tap_fields(tap, uplink.gate, device)
    body = {name: values[source] for name, source in webhook.fields.items()}
    if webhook.encoding == "form":
        return Request(url, headers, form={name: str(value) for name, value in body.items()})
    return Request(url, headers, json=body)


def tap_fields(tap: Tap, default_gate: int | None, device: str) -> dict[str, object]:
    """The values a webhook body can carry, by the names `[uplink.webhook.fields]` uses."""
    return {
        "tap_id": tap.tap_id,
        "card_no": tap.card_no,
        "checktype": tap.checktype,
        "direction": "out" if tap.checktype == CHECK_OUT else "in",
        "tapped_at": iso(tap.tapped_at),
        "reader": tap.reader,
        "gate": tap.gate if tap.gate is not None else default_gate,
        "device": device,
    }


def _auth(auth: str, token: str) -> dict[str, str]:
    if auth == "bearer":
        return {"Authorization": f"Bearer {token}"}
    if auth == "x-api-key":
        return {"X-API-Key": token}
    return {}
