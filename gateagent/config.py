"""The configuration: one TOML file, overridable from the environment (SPEC "Configuration").

`load(path)` returns a frozen `Config` or raises `ConfigError` naming the file, the key
(with its section and reader index) and the reason, so a technician at the gate reads
`config.toml: [uplink] flush_interval: "30x" is not a duration` and nothing else.

Sources, strongest first: `GATEAGENT_<SECTION>__<KEY>` environment variables, the file,
the defaults below. The token comes from `[uplink] token`, else `token_file`, else the
systemd credential `$CREDENTIALS_DIRECTORY/uplink-token`, else the file `token` beside
the configuration file: /etc/gateagent/token, where the unit's `LoadCredential=` takes
the credential from, so `gateagent check` in a root shell finds what the service gets
(README "Installing on a Pi"). It is a `SecretStr`, so it never shows in a repr, a log
line or an error.

`load_readers(path)` is what `gateagent listen` needs: the readers, [taps] and
[device], without [uplink] at all, since listen sends nothing.

The models are plain pydantic models, and pydantic-settings is imported only when a
`GATEAGENT_<SECTION>` variable is set: then it puts the environment over the file as its
environment source does. Without one it would only hand the file's values on, and its
import costs the daemon 50M instructions at start and a megabyte for good
(benchmarks/startup.py); a test checks that both ways validate a file alike.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import platform
import re
import shlex
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, cast
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from gateagent import network
from gateagent.configfile import DEFAULT_STORAGE_PATH, ENV_PREFIX, read_toml
from gateagent.core.answers import WebhookAnswer, WebhookSuccess
from gateagent.core.cards import CardFormat
from gateagent.core.direction import Direction
from gateagent.errors import ConfigError

if TYPE_CHECKING:
    from pydantic_settings import SettingsError

CREDENTIAL_NAME = "uplink-token"
# The file beside the configuration that holds the token: the unit's
# `LoadCredential=uplink-token:/etc/gateagent/token` (systemd/gateagent.service).
TOKEN_FILE_NAME = "token"  # noqa: S105 -- a file name, not a password

_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*")


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a string such as "500ms", "30s", "10m", "2h", "30d"."""
    if isinstance(value, bool):
        raise ValueError(f'{value!r} is not a duration (use seconds or "500ms", "30s", "10m")')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = float(match[1]) * _UNITS_S[match[2]]
    elif isinstance(value, str) and _is_number(value):
        seconds = float(value)
    else:
        raise ValueError(
            f'"{value}" is not a duration (use seconds or "500ms", "30s", "10m", "2h")'
        )
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f'"{value}" is not a duration: it must be zero or more')
    return seconds


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Device(_Section):
    name: str = Field(default_factory=lambda: platform.node() or "gateagent", min_length=1)
    timezone: str = "Asia/Jakarta"
    require_clock_sync: bool = True

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f'"{value}" is not a known time zone (e.g. "Asia/Jakarta")') from None
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Storage(_Section):
    path: Path = DEFAULT_STORAGE_PATH
    keep_sent: Duration = 30 * 86400.0
    keep_rejected: Duration = 90 * 86400.0


class Taps(_Section):
    debounce: Duration = 3.0
    min_checkout_after: Duration = 600.0
    card_format: CardFormat = "as-read"
    reverse_bytes: bool = False


class Reader(_Section):
    name: str = Field(min_length=1)
    kind: Literal["hid", "serial", "stdin"]
    path: str | None = None
    baudrate: int = Field(default=9600, gt=0)
    protocol: Literal["rdm6300", "lines"] = "rdm6300"
    direction: Direction = "auto"
    gate: int | None = Field(default=None, ge=0)
    # hid only, experimental: blink this keyboard LED of the reader (README "Feedback").
    feedback_led: Literal["none", "capslock", "numlock", "scrolllock"] = "none"


TapField = Literal[
    "tap_id", "card_no", "checktype", "direction", "tapped_at", "reader", "gate", "device"
]
_DEFAULT_FIELDS: dict[str, TapField] = {
    "tap_id": "tap_id",
    "card_no": "card_no",
    "checktype": "checktype",
    "tapped_at": "tapped_at",
    "gate": "gate",
}
_STATUS_KEY = re.compile(r"[1-5](\d\d|xx)")


class Webhook(_Section):
    """The `webhook` profile: any endpoint, described by the config (README "webhook")."""

    url_out: str | None = None
    encoding: Literal["json", "form"] = "json"
    fields: dict[str, TapField] = Field(default_factory=lambda: dict(_DEFAULT_FIELDS))
    idempotency_header: str = "Idempotency-Key"
    statuses: dict[str, WebhookAnswer] = Field(default_factory=dict)
    # What a 2xx must look like to count as delivered: "not-html" (anything but an HTML
    # page, which a captive portal or a proxy answers: it pauses the uplink), "any-2xx"
    # (even an HTML page), or "json" (a JSON body).
    success: WebhookSuccess = "not-html"

    @field_validator("url_out")
    @classmethod
    def _http_url_out(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @field_validator("fields")
    @classmethod
    def _some_fields(cls, value: dict[str, TapField]) -> dict[str, TapField]:
        if not value:
            raise ValueError('needs at least one body field, e.g. card_no = "card_no"')
        return value

    @field_validator("statuses")
    @classmethod
    def _status_keys(cls, value: dict[str, WebhookAnswer]) -> dict[str, WebhookAnswer]:
        for key in value:
            if not _STATUS_KEY.fullmatch(key):
                raise ValueError(f'"{key}" is not a status code or class (e.g. "409" or "4xx")')
        return value


class Uplink(_Section):
    profile: Literal["integration", "absensi", "webhook"] = "integration"
    url: str
    token: SecretStr | None = None
    token_file: Path | None = None
    auth: Literal["none", "bearer", "x-api-key"] = "none"
    gate: int | None = Field(default=None, ge=0)
    flush_interval: Duration = 30.0
    concurrency: int = Field(default=4, ge=1, le=64)
    # The whole request, connect to last byte (README "Networks").
    timeout: Annotated[Duration, Field(gt=0)] = 10.0
    # After a timeout, a 502/504 or a connection lost after sending, the server may
    # still be working on the request: the tap is not sent again before timeout plus
    # this has passed (SPEC "What counts as an answer").
    ambiguous_margin: Duration = 20.0
    # TLS: trust for a school's own CA (PEM; default the system store), and a client
    # certificate for servers that require mutual TLS.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # Else HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY from the environment.
    proxy: str | None = None
    webhook: Webhook = Field(default_factory=Webhook)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is not None and (problem := network.proxy_problem(value)):
            raise ValueError(problem)
        return value

    def urls(self) -> list[str]:
        """Every URL this uplink sends to."""
        return [self.url] + ([self.webhook.url_out] if self.webhook.url_out else [])


# -- [feedback] (README "Feedback at the gate"; the outputs are gateagent/feedback.py) --

# BCM GPIO numbers of the Pi's 40-pin header (GPIO2..GPIO27).
GpioPin = Annotated[int, Field(ge=2, le=27)]


class Feedback(_Section):
    buzzer_pin: GpioPin | None = None
    green_pin: GpioPin | None = None
    red_pin: GpioPin | None = None
    # A program run for each signal, with the outcome in its environment (no shell).
    command: str | None = None
    command_timeout: Annotated[Duration, Field(gt=0)] = 5.0
    # A server's verdict is signalled only this soon after the recorded signal: the
    # person has walked on after that (useful with [uplink] flush_interval = "0s").
    verdict_within: Duration = 2.0

    @field_validator("command")
    @classmethod
    def _a_program(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                words = shlex.split(value)
            except ValueError as exc:
                raise ValueError(f"cannot be split into words: {exc}") from None
            if not words:
                raise ValueError("is empty (leave it out for no command)")
        return value

    def pins(self) -> dict[str, int]:
        """The GPIO pins configured, by key."""
        given = {"buzzer_pin": self.buzzer_pin, "green_pin": self.green_pin}
        return {k: pin for k, pin in {**given, "red_pin": self.red_pin}.items() if pin is not None}


# -- end of [feedback] --


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f'"{value}" is not an http:// or https:// URL')
    return value


# -- [metrics] (README "Monitoring many gates") ---------------------------------------
# Debian's prometheus-node-exporter reads *.prom files from this directory (its compiled-in
# --collector.textfile.directory default; /etc/default/prometheus-node-exporter sets none).
DEFAULT_METRICS_TEXTFILE = "/var/lib/prometheus/node-exporter/gateagent.prom"


class Metrics(_Section):
    # "" turns each off.
    textfile: str = DEFAULT_METRICS_TEXTFILE
    # A minute, as a usual scrape interval; every 15 s cost 0.03 % more idle CPU
    # (benchmarks/idle.py), and the stale-textfile alert waits 5 minutes.
    textfile_interval: Annotated[Duration, Field(ge=1.0)] = 60.0
    listen: str = ""

    @field_validator("textfile")
    @classmethod
    def _prom_file(cls, value: str) -> str:
        if value and (not value.endswith(".prom") or not Path(value).is_absolute()):
            raise ValueError(
                f'"{value}" must be an absolute path ending in .prom (node_exporter reads'
                ' only *.prom), or "" for none'
            )
        return value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value:
            listen_address(value)
        return value


def listen_address(value: str) -> tuple[str, int]:
    """("127.0.0.1", 9920) from "127.0.0.1:9920" (or "[::1]:9920"), else ValueError."""
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'"{value}" is not HOST:PORT (e.g. "127.0.0.1:9920")')
    return host, int(port)


class ReadingConfig(BaseModel):
    """What reading cards needs (`gateagent listen`, with its feedback): everything but
    [uplink] and [metrics]."""

    # validate_default as pydantic-settings' BaseSettings has it: both ways of loading
    # (see from_environment) treat a default alike.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    device: Device = Field(default_factory=Device)
    storage: Storage = Field(default_factory=Storage)
    taps: Taps = Field(default_factory=Taps)
    readers: list[Reader] = Field(min_length=1)
    feedback: Feedback = Field(default_factory=Feedback)


class Config(ReadingConfig):
    uplink: Uplink
    metrics: Metrics = Field(default_factory=Metrics)


def load(path: str | os.PathLike[str]) -> Config:
    """Read, validate and complete the configuration at `path`, or raise ConfigError."""
    where = str(path)
    config = _validated(Config, where, _sections(where))
    config = _with_token(where, config)
    _check_readers(where, config)
    _check_uplink(where, config)
    _check_tls(where, config.uplink)
    return config


def load_readers(path: str | os.PathLike[str]) -> ReadingConfig:
    """The configuration at `path` without its [uplink] and [metrics] sections (which may
    be missing, incomplete or wrong), for `gateagent listen`; or ConfigError."""
    where = str(path)
    data = _sections(where)
    # Only what reading needs is validated: [uplink] (and [metrics]) may be anything.
    for name in Config.model_fields.keys() - ReadingConfig.model_fields.keys():
        data.pop(name, None)
    config = _validated(ReadingConfig, where, data)
    _check_readers(where, config)
    return config


def _sections(where: str) -> dict[str, Any]:
    data = read_toml(where)
    # Config(**data) takes a top-level `_env_file`, `_secrets_dir`, `_cli_parse_args`, ...
    # as pydantic-settings' own options, not as settings (found by tests/test_fuzz.py):
    # only the sections may reach it.
    for name in data:
        if name not in Config.model_fields:
            raise ConfigError(where, _key_name((name,), data), _unknown_key((name,)))
    return data


_Model = TypeVar("_Model", bound=ReadingConfig)


def _validated(model: type[_Model], where: str, data: dict[str, Any]) -> _Model:
    try:
        if overridden(os.environ):
            return _overridden(model, where, data)
        return model(**data)
    except ValidationError as exc:
        raise _config_error(where, data, exc) from None


def overridden(environ: Mapping[str, str]) -> bool:
    """Whether a variable overrides a section or a key of one (`GATEAGENT_READERS`,
    `GATEAGENT_UPLINK__URL`), in any case, as pydantic-settings matches them."""
    return any(
        name.upper().startswith(ENV_PREFIX)
        and name[len(ENV_PREFIX) :].split("__")[0].lower() in Config.model_fields
        for name in environ
    )


def _overridden(model: type[_Model], where: str, data: dict[str, Any]) -> _Model:
    from pydantic_settings import SettingsError  # noqa: PLC0415 (see the module's docstring)

    try:
        return cast(_Model, from_environment()[model](**data))
    except SettingsError as exc:
        # An environment override pydantic-settings cannot even parse, such as
        # GATEAGENT_READERS='[{...': one line and exit 2, not a traceback.
        raise _source_error(where, exc) from None


@functools.cache
def from_environment() -> dict[type[ReadingConfig], type[ReadingConfig]]:
    """Each top model as pydantic-settings' settings: the `GATEAGENT_*` variables over
    the file's values (which arrive as its init values)."""
    from pydantic_settings import (  # noqa: PLC0415 (see the module's docstring)
        BaseSettings,
        PydanticBaseSettingsSource,
        SettingsConfigDict,
    )

    class Overridden(BaseSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            # The environment wins over the file.
            return (env_settings, init_settings)

    # Also each model's own: BaseSettings' and ReadingConfig's differ in type.
    settings = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    class OverriddenReading(Overridden, ReadingConfig):
        model_config = settings

    class OverriddenConfig(Overridden, Config):
        model_config = settings

    return {ReadingConfig: OverriddenReading, Config: OverriddenConfig}


def clear_text_token_warning(uplink: Uplink) -> str | None:
    """The warning to log (at start and in `check`) when the token travels over http://
    to a host that is not this machine; None when it does not."""
    clear = [url for url in uplink.urls() if network.token_in_clear(url, uplink.token is not None)]
    if not clear:
        return None
    host = urlsplit(clear[0]).hostname
    return (
        f"the token travels in clear text over http:// to {host}: anyone on the network"
        " path can read it; use an https:// [uplink] url"
    )


def reader(given: dict[str, Any], where: str) -> Reader:
    """A reader described on the command line (`listen --path`), or ConfigError."""
    try:
        return Reader.model_validate(given)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise ConfigError(where, key, error["msg"]) from None


def _with_token(where: str, config: Config) -> Config:
    uplink = config.uplink
    if uplink.token is not None:
        if not uplink.token.get_secret_value().strip():
            raise ConfigError(where, "[uplink] token", "is empty")
        if problem := _token_problem(uplink.token.get_secret_value(), uplink.auth):
            raise ConfigError(where, "[uplink] token", problem)
        return config
    source = _token_source(where, uplink)
    if source is None:
        return config
    key, token_path = source
    try:
        # utf-8-sig: Windows' Notepad starts a UTF-8 file with a BOM, which would otherwise
        # become the token's first character (and no HTTP header can carry it).
        token = token_path.read_text(encoding="utf-8-sig").strip()
    except PermissionError as exc:
        raise ConfigError(
            where, key, f"cannot read {token_path}: {exc.strerror} (it is root's: run as root)"
        ) from None
    except OSError as exc:
        raise ConfigError(where, key, f"cannot read {token_path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(where, key, f"{token_path} is not UTF-8 text") from None
    if not token and uplink.token_file is None:
        # install.sh leaves an empty root-only file for the technician to fill in: until
        # then there is no token, which only a profile that needs one refuses.
        return config
    if not token:
        raise ConfigError(where, key, f"{token_path} is empty")
    if problem := _token_problem(token, uplink.auth):
        raise ConfigError(where, key, f"the token in {token_path} {problem}")
    new_uplink = uplink.model_copy(update={"token": SecretStr(token)})
    return config.model_copy(update={"uplink": new_uplink})


def _token_source(where: str, uplink: Uplink) -> tuple[str, Path] | None:
    """(the key to name in an error, the file) the token is read from, or None."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    beside = Path(where).parent / TOKEN_FILE_NAME
    if uplink.token_file is not None:
        return ("[uplink] token_file", uplink.token_file)
    if credentials and (Path(credentials) / CREDENTIAL_NAME).exists():
        return (f"systemd credential {CREDENTIAL_NAME}", Path(credentials) / CREDENTIAL_NAME)
    if beside.exists():
        # Outside the service (a root shell: check, listen, run by hand), the file the
        # unit's LoadCredential= reads: the walkthrough needs no extra variable.
        return ("[uplink] token", beside)
    return None


def _token_problem(token: str, auth: str) -> str | None:
    """Why the token cannot travel safely, or None; never quotes the token."""
    for position, ch in enumerate(token, start=1):
        if not ch.isprintable():
            return (
                f"holds a control or invisible character (U+{ord(ch):04X} at position"
                f" {position}): copy it again without it"
            )
        if auth != "none" and ord(ch) > 126:
            return (
                f"holds a character an HTTP header cannot carry (U+{ord(ch):04X} at"
                f" position {position}): a header token must be ASCII"
            )
    return None


def _check_tls(where: str, uplink: Uplink) -> None:
    """The TLS files are read at start, so a wrong path stops the daemon with exit 2
    instead of pausing the uplink at the first tap."""
    if uplink.key_file is not None and uplink.cert_file is None:
        raise ConfigError(where, "[uplink] key_file", "needs [uplink] cert_file too")
    if uplink.ca_file is None and uplink.cert_file is None:
        return
    key, path = "[uplink] ca_file", uplink.ca_file
    try:
        network.tls_context(uplink.ca_file, None, None)
        key, path = "[uplink] cert_file", uplink.cert_file
        network.tls_context(uplink.ca_file, uplink.cert_file, uplink.key_file)
    except ssl.SSLError as exc:  # before OSError: it is one
        what = "a PEM certificate file" if key.endswith("ca_file") else "a PEM certificate"
        if key.endswith("cert_file"):
            what += " whose key is key_file (or inside it)"
        raise ConfigError(where, key, f"is not {what} ({exc.reason or exc})") from None
    except OSError as exc:
        shown = exc.filename or path
        raise ConfigError(where, key, f"cannot read {shown}: {exc.strerror or exc}") from None


def _source_error(where: str, exc: SettingsError) -> ConfigError:
    found = re.search(r'field "([^"]+)"', str(exc))
    field = found[1] if found else ""
    env = next(
        (name for name in os.environ if name.upper() == ENV_PREFIX + field.upper()),
        f"{ENV_PREFIX}{field.upper()}",
    )
    cause = exc.__cause__
    detail = f": {cause}" if cause is not None else ""
    return ConfigError(where, f"[{field}]" if field else "", f"{env} is not valid JSON{detail}")


def _check_readers(where: str, config: ReadingConfig) -> None:
    """Rules that span the readers' keys; each names the key a technician has to change."""
    names: dict[str, int] = {}
    stdin_readers = 0
    for number, reader in enumerate(config.readers, start=1):
        key = _reader_key(number, reader.name)
        if reader.name in names:
            raise ConfigError(
                where,
                f"{key} name",
                f'"{reader.name}" is already the name of reader #{names[reader.name]}',
            )
        names[reader.name] = number
        if reader.kind in ("hid", "serial") and not reader.path:
            raise ConfigError(where, f"{key} path", f"is required for a {reader.kind} reader")
        stdin_readers += reader.kind == "stdin"
        if reader.feedback_led != "none" and reader.kind != "hid":
            raise ConfigError(where, f"{key} feedback_led", "is for hid readers only")
    if stdin_readers > 1:
        raise ConfigError(where, "[[readers]] kind", 'only one reader can be of kind "stdin"')
    pins: dict[int, str] = {}
    for name, pin in config.feedback.pins().items():
        if pin in pins:
            raise ConfigError(where, f"[feedback] {name}", f"GPIO{pin} is already {pins[pin]}")
        pins[pin] = name


def _check_uplink(where: str, config: Config) -> None:
    """Rules that span [uplink] and the readers."""
    uplink = config.uplink
    beside = Path(where).parent / TOKEN_FILE_NAME
    if uplink.profile == "integration":
        if uplink.gate is None and any(reader.gate is None for reader in config.readers):
            raise ConfigError(
                where,
                "[uplink] gate",
                "is required by the integration profile (or set gate on every reader)",
            )
        if uplink.token is None:
            raise ConfigError(
                where,
                "[uplink] token",
                "is required by the integration profile (token, token_file, the systemd"
                f" credential {CREDENTIAL_NAME}, or the file {beside})",
            )
    elif uplink.auth != "none" and uplink.token is None:
        raise ConfigError(
            where,
            "[uplink] token",
            f'is required when auth = "{uplink.auth}" (token or token_file)',
        )


def _reader_key(number: int, name: object) -> str:
    return (
        f"[[readers]] #{number} ({name})"
        if isinstance(name, str) and name
        else f"[[readers]] #{number}"
    )


def _config_error(where: str, data: dict[str, Any], exc: ValidationError) -> ConfigError:
    """The first problem pydantic found, said as a technician reads the file."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    key = _key_name(loc, data)
    secret = any(part in ("token", "token_file") for part in loc if isinstance(part, str))
    kind = error["type"]
    if kind == "extra_forbidden":
        return ConfigError(where, key, _unknown_key(loc))
    if kind == "missing":
        return ConfigError(where, key, "is required" if len(loc) > 1 else "the section is required")
    if kind == "too_short" and loc == ("readers",):
        return ConfigError(where, "[[readers]]", "at least one reader is required")
    reason = str(error["msg"]).removeprefix("Value error, ")
    if kind not in ("value_error",) and not secret:
        reason += f" (got {_shown(error.get('input'))})"
    if env := _env_override(loc):
        reason += f" (from the environment variable {env})"
    return ConfigError(where, key, reason)


def _key_name(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    if not loc:
        return ""
    if loc[0] == "readers" and len(loc) >= 2 and isinstance(loc[1], int):
        readers = data.get("readers")
        name = None
        if (
            isinstance(readers, list)
            and loc[1] < len(readers)
            and isinstance(readers[loc[1]], dict)
        ):
            name = readers[loc[1]].get("name")
        rest = " ".join(str(part) for part in loc[2:])
        return f"{_reader_key(loc[1] + 1, name)} {rest}".rstrip()
    if len(loc) == 1:
        return f"[{loc[0]}]"
    head = ".".join(str(part) for part in loc[:-1])
    return f"[{head}] {loc[-1]}"


def _unknown_key(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] | None = Config
    for part in loc[:-1]:
        if model is None or isinstance(part, int):
            continue
        model = _submodel(model, str(part))
    known = sorted(model.model_fields) if model is not None else []
    what = "unknown section" if len(loc) == 1 else "unknown key"
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f"{what}; did you mean {close[0]!r}?"
    return f"{what}; valid keys are {', '.join(known)}" if known else what


def _submodel(model: type[BaseModel], field: str) -> type[BaseModel] | None:
    info = model.model_fields.get(field)
    if info is None:
        return None
    annotation = info.annotation
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _env_override(loc: tuple[Any, ...]) -> str | None:
    if not loc or any(isinstance(part, int) for part in loc):
        return None
    name = ENV_PREFIX + "__".join(str(part).upper() for part in loc)
    return name if name in os.environ else None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
