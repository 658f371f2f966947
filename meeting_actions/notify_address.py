"""Where a notification may go: the notify URL checked at submit time, and
the addresses its host resolves to checked at send time.

Server-side request forgery: A notify URL is chosen by
whoever submits a meeting, and the function runs inside Google's network,
next to the metadata server that hands out its credentials. So at send time
the host is resolved and the request is refused when ANY of its addresses is
private, loopback, link-local, multicast, reserved, unspecified, not globally
routable (such as 100.64.0.0/10), or the metadata server (169.254.169.254,
fd00:ec2::254, metadata.google.internal); IPv4 inside IPv6 (::ffff:a.b.c.d,
64:ff9b::a.b.c.d) is judged by its IPv4 address. The connection then goes
to an address that passed the check, never to a second lookup of the name,
so a name that resolves differently a moment later (DNS rebinding) cannot
redirect it. TLS still verifies the certificate for the URL's host name,
and redirects are not followed (a 3xx is a failed attempt). Notifications
go straight out, not through an HTTP proxy from the environment: a proxy
would resolve the name itself and void the check.
Local runs
(`allow_local`) may also reach loopback addresses, and nothing else private.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse

MAX_URL_LENGTH = 2048
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata"})
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class RefusedURL(ValueError):
    """The notify URL may not be used; another attempt would not change that."""


def check_notify_url(url: str, allow_local: bool) -> str:
    """The URL, if a meeting may be submitted with it; else ValueError.

    https anywhere public; http (or https) to localhost, 127.0.0.1 or [::1]
    only when `allow_local` (local runs). This is the cheap check at submit
    time: the addresses a host name resolves to are checked at send time.
    An address is accepted only as written canonically (93.184.216.34, or
    IPv6 in brackets): the other IPv4 forms resolvers accept (2130706433,
    0x7f.1, 127.1) are refused, as is a host ending in a number that is no
    address.
    """
    if not isinstance(url, str) or not url:
        raise RefusedURL("notify_url must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise RefusedURL(f"notify_url is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise RefusedURL("notify_url must not contain whitespace or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise RefusedURL(f"notify_url is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise RefusedURL("notify_url must be an https URL")
    if "@" in parts.netloc:
        raise RefusedURL("notify_url must not contain a user name or password")
    host = host_name(parts)
    if not host:
        raise RefusedURL("notify_url has no host")
    local = host in LOCAL_HOSTS
    if local and not allow_local:
        raise RefusedURL("notify_url may not point at this machine (localhost)")
    if scheme == "http" and not local:
        what = "https, or http to localhost" if allow_local else "https"
        raise RefusedURL(f"notify_url must use {what}")
    if host in METADATA_HOSTS:
        raise RefusedURL("notify_url may not point at the metadata server")
    form = _ipv4_form(host)
    if form is False:
        raise RefusedURL("notify_url's host ends in a number but is not an IPv4 address")
    if form is not None and str(form) != host:
        # 2130706433, 0x7f.1, 127.1, 0177.0.0.1: resolvers read these as
        # addresses (inet_aton), which a check of names would let through.
        reason = _refusal(form, allow_local)
        judged = f", a {reason} address" if reason else ""
        raise RefusedURL(
            f"notify_url's host {host} is the IPv4 address {form}{judged} written another "
            f"way: write an address as four decimal numbers"
        )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url
    reason = _refusal(address, allow_local)
    if reason:
        raise RefusedURL(f"notify_url may not point at a {reason} address")
    return url


def resolve_allowed(url: str, allow_local: bool) -> list[str]:
    """The addresses to connect to for `url`, after checking every one.

    Raises RefusedURL when the URL fails check_notify_url or any address the
    host resolves to is not public (see the module's docstring); OSError
    (socket.gaierror) when the name does not resolve, which may be passing.
    """
    check_notify_url(url, allow_local)
    parts = urllib.parse.urlsplit(url)
    host = host_name(parts)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for family, *_rest, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        reason = _refusal(address, allow_local)
        if reason:
            raise RefusedURL(f"{host} resolves to {address}, a {reason} address: refused")
        if str(address) not in addresses:
            addresses.append(str(address))
    if not addresses:
        raise RefusedURL(f"{host} resolves to no IP address")
    return addresses


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_local: bool) -> str:
    """Why the address is refused, or '' when it may be used."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _refusal(address.ipv4_mapped, allow_local)
        if address in _NAT64:
            return _refusal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF), allow_local)
    if address in METADATA_ADDRESSES:
        return "metadata server"
    if address.is_loopback:
        return "" if allow_local else "loopback"
    for reason, flagged in (
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-public", not address.is_global),
    ):
        if flagged:
            return reason
    return ""


def _ipv4_form(host: str) -> ipaddress.IPv4Address | bool | None:
    """For a host whose last label is a number (a URL parser's sign of an
    IPv4 host), the address a resolver reads in it, in any of the forms
    inet_aton accepts (one to four parts, decimal, octal or hex), or False
    if it reads none; None for a host name."""
    if ":" in host:  # IPv6, judged as itself
        return None
    last = host.rsplit(".", 1)[-1]
    digits = last[2:] if last.startswith("0x") else last
    if not last or not digits.isascii() or not all(c in "0123456789abcdef" for c in digits):
        return None
    if not last.startswith("0x") and not last.isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return False


def host_name(parts: urllib.parse.SplitResult) -> str:
    return (parts.hostname or "").rstrip(".").lower()
