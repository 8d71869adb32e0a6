"""What the daemon and `gateagent check` meet on the way to the server: the TLS trust,
the client certificate, the proxy, the User-Agent (README "Networks").

Both build their connections from these functions, so `check` reports what the daemon
will meet. Standard library only (no httpx): `config.py` validates with it and `check`
uses it for its raw TLS handshake.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import urlsplit

from gateagent import __version__

# Debian's bundle, which `update-ca-certificates` rebuilds from /usr/local/share/
# ca-certificates: what a school's IT admin expects a program to trust. Not certifi (what
# httpx uses by default), which no admin tool updates, and not $SSL_CERT_FILE, which
# systemd does not pass to the service anyway.
SYSTEM_CA_FILE = Path("/etc/ssl/certs/ca-certificates.crt")

PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


def tls_context(
    ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """The one TLS context for the server: `ca_file` or the system store, and the client
    certificate for mutual TLS. Raises OSError or ssl.SSLError for unusable files."""
    if ca_file is not None:
        context = ssl.create_default_context(cafile=str(ca_file))
    elif SYSTEM_CA_FILE.exists():
        context = ssl.create_default_context(cafile=str(SYSTEM_CA_FILE))
    else:
        # Not Debian: OpenSSL's own default paths.
        context = ssl.create_default_context()
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return context


def trust_name(ca_file: Path | None) -> str:
    """The trust `tls_context` uses, as `check` and error messages say it."""
    if ca_file is not None:
        return f"[uplink] ca_file {ca_file}"
    if SYSTEM_CA_FILE.exists():
        return f"the system store {SYSTEM_CA_FILE}"
    return "OpenSSL's default store"


@dataclass(frozen=True)
class Proxy:
    url: str
    source: str  # "[uplink] proxy" or the environment variable it came from

    @property
    def shown(self) -> str:
        """The proxy without a user or password, for logs and `check`."""
        return shown_url(self.url)


def proxy_for(
    url: str, configured: str | None, environ: Mapping[str, str] | None = None
) -> Proxy | None:
    """The proxy a request to `url` goes through: `[uplink] proxy`, else the standard
    variables (HTTPS_PROXY for https://, HTTP_PROXY for http://, ALL_PROXY for both,
    NO_PROXY to bypass; lower case too), as curl and httpx read them. None: direct."""
    if configured:
        return Proxy(configured, "[uplink] proxy")
    env = os.environ if environ is None else environ
    scheme = urlsplit(url).scheme
    wanted = {f"{scheme}_proxy", "all_proxy", "no_proxy"}
    # Lower case wins over upper case, as urllib and curl have it.
    found: dict[str, tuple[str, str]] = {}
    for name in sorted(env, key=lambda name: name.islower()):
        if name.lower() in wanted and env[name].strip():
            found[name.lower()] = (name, env[name].strip())
    for key in (f"{scheme}_proxy", "all_proxy"):
        if key not in found:
            continue
        host = urlsplit(url).hostname or ""
        if _bypassed(host, found.get("no_proxy", ("", ""))[1]):
            return None
        name, value = found[key]
        return Proxy(value if "://" in value else f"http://{value}", name)
    return None


def _bypassed(host: str, no_proxy: str) -> bool:
    """NO_PROXY as curl reads it: `*`, or names that match the host or a domain above it
    (`.school.lan` and `school.lan` alike), or IP addresses and networks."""
    host = host.lower().strip("[]")
    for given in no_proxy.lower().split(","):
        entry = given.strip()
        if not entry:
            continue
        if entry == "*":
            return True
        name = entry.lstrip(".")
        if name.count(":") == 1:
            name = name.split(":")[0]  # host:port; the port does not matter here
        if host == name or host.endswith("." + name):
            return True
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False):
                return True
        except ValueError:
            continue
    return False


def proxy_problem(proxy: str) -> str | None:
    """Why this proxy URL cannot be used, or None."""
    parts = urlsplit(proxy)
    if parts.scheme not in PROXY_SCHEMES or not parts.hostname:
        return f'"{shown_url(proxy)}" is not a proxy URL (e.g. "http://proxy.school.lan:3128")'
    if parts.scheme.startswith("socks") and find_spec("socksio") is None:
        return (
            f"{shown_url(proxy)}: a SOCKS proxy needs the socksio package in gateagent's"
            " environment (pip install socksio); or use the school's HTTP proxy"
        )
    return None


def shown_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=f"***@{netloc}").geturl()


def user_agent(device: str) -> str:
    """`gateagent/0.1.0 (gate-4-main)`: a server's or proxy's log names the gate."""
    # A header value is latin-1 without control characters; a device name may be neither.
    name = "".join(ch for ch in device if ch.isprintable() and ord(ch) < 256 and ch not in "()")
    return f"gateagent/{__version__} ({name})" if name.strip() else f"gateagent/{__version__}"


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_in_clear(url: str, has_token: bool) -> bool:
    """A token sent over http:// to a host that is not this machine: anyone on the path
    (the school's Wi-Fi, a proxy) can read it."""
    parts = urlsplit(url)
    return has_token and parts.scheme == "http" and not is_loopback(parts.hostname or "")
