"""Where webhooks may go: rules for target URLs, and a check of every address connected to.

Pure code: no Django, no models. A receiver's URL is chosen by a user of your site, so by
default it may only lead to public addresses: not to loopback, private ranges, link-local
(169.254.169.254, the cloud metadata address), shared (100.64.0.0/10), multicast, reserved,
unspecified or documentation ranges, IPv6 unique-local or link-local, nor to IPv4-mapped,
NAT64, 6to4 or Teredo forms of those. Addresses are checked where the connection is made,
after DNS resolution, so a name that resolves differently later (DNS rebinding) gets no
further. ``ALLOWED_NETWORKS`` opens chosen networks.
"""

import contextlib
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_NUMERIC_HOST = re.compile(r"^[0-9a-fA-FxX.]+$")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
#: Ranges refused although some Python versions call them global.
_ALWAYS_REFUSED = tuple(ipaddress.ip_network(net) for net in (
    "0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "240.0.0.0/4",
    "255.255.255.255/32", "fec0::/10", "100::/64", "2001:db8::/32", "2001::/23",
))

#: Link-local ranges and the cloud metadata addresses in them (fd00:ec2::254 is EC2's over
#: IPv6): a refusal there never suggests ALLOWED_NETWORKS.
_NEVER_TARGETS = tuple(ipaddress.ip_network(net) for net in (
    "169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128",
))


class TargetURLRefused(ValueError):
    """A target URL, or an address it leads to, is not allowed; the message says why."""


@dataclass(frozen=True)
class URLPolicy:
    """What target URLs may be: networks allowed beyond public ones, scheme and ports."""

    allowed_networks: tuple = ()
    https_only: bool = False
    allowed_ports: frozenset | None = None
    #: Looks names up, like ``socket.getaddrinfo`` (which is used when None).
    resolver: object = field(default=None, compare=False)

    def __hash__(self):
        # Computed once: a policy is a key of the clients' caches and connection pools on
        # every request, and hashing its networks runs Python code for each.
        try:
            return self.__dict__["_hash"]
        except KeyError:
            value = hash((self.allowed_networks, self.https_only, self.allowed_ports))
            object.__setattr__(self, "_hash", value)
            return value


def is_public(address):
    """True when ``address`` (an ``ipaddress`` object) is a public unicast address."""
    if address.version == 6:
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
    if any(address in network for network in _ALWAYS_REFUSED if
           network.version == address.version):
        return False
    return address.is_global and not (
        address.is_multicast or address.is_private or address.is_reserved
        or address.is_loopback or address.is_link_local or address.is_unspecified
    )


def _embedded_ipv4(address):
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        server, client = address.teredo
        return client if is_public(server) else server
    if any(address in network for network in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def check_address(address, policy):
    """Raise ``TargetURLRefused`` unless ``address`` may be connected to under ``policy``."""
    if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        address = ipaddress.ip_address(address)
    candidates = [address]
    if address.version == 6 and _embedded_ipv4(address) is not None:
        candidates.append(_embedded_ipv4(address))
    for network in policy.allowed_networks:
        if any(c.version == network.version and c in network for c in candidates):
            return
    if any(c in network for c in candidates for network in _NEVER_TARGETS
           if c.version == network.version):
        raise TargetURLRefused(
            f"{address} is a link-local or cloud metadata address, where cloud servers read "
            "their instance metadata and credentials; it is never a webhook target. Point "
            "the target at the receiver's own address or name."
        )
    if not is_public(address):
        raise TargetURLRefused(
            f"{address} is not a public address; add its network to "
            "DJWEBHOOKS['ALLOWED_NETWORKS'] to allow it."
        )


def ip_literal(host):
    """Return the address a host written as an IP stands for, in any spelling, or None.

    Besides dotted quads this catches what C libraries also accept as IPv4: ``127.1``,
    ``2130706433``, ``0x7f.0.0.1``, ``0177.0.0.1``.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def check_url(url, policy):
    """Check a target URL's form; return ``(host, port)``, the host in ASCII (IDNA).

    Refuses, with ``TargetURLRefused`` saying why: non-strings, URLs over 2,048 characters,
    spaces or control characters (CR/LF), schemes other than http(s) (https only, with
    ``https_only``), credentials, a missing or malformed host, a port not allowed, and hosts
    that are IP addresses ``check_address`` refuses.
    """
    if not isinstance(url, str):
        raise TargetURLRefused(f"The URL must be a string, got {type(url).__name__}.")
    if len(url) > MAX_URL_LENGTH:
        raise TargetURLRefused(f"The URL is {len(url)} characters long; at most "
                               f"{MAX_URL_LENGTH} are allowed.")
    if _CONTROL_OR_SPACE.search(url):
        raise TargetURLRefused("The URL contains spaces or control characters (such as a "
                               "line break).")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetURLRefused(f"The URL cannot be read: {exc}.") from None
    scheme = parts.scheme.lower()
    allowed_schemes = ("https",) if policy.https_only else ("http", "https")
    if scheme not in allowed_schemes:
        raise TargetURLRefused(
            f"The URL's scheme must be {' or '.join(allowed_schemes)}, not "
            f"{parts.scheme or 'missing'!r}."
        )
    if "@" in parts.netloc:
        raise TargetURLRefused("The URL must not contain a user name or password.")
    host = parts.hostname
    if not host:
        raise TargetURLRefused("The URL has no host.")
    if "%" in host:
        raise TargetURLRefused("The URL's host must not carry an IPv6 zone (%...).")
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise TargetURLRefused(f"The URL's host {host!r} is not a valid domain name.") from None
    port = port or (443 if scheme == "https" else 80)
    if policy.allowed_ports is not None and port not in policy.allowed_ports:
        raise TargetURLRefused(
            f"Port {port} is not allowed; DJWEBHOOKS['ALLOWED_PORTS'] allows "
            f"{', '.join(map(str, sorted(policy.allowed_ports)))}."
        )
    literal = ip_literal(ascii_host)
    if literal is not None:
        check_address(literal, policy)
    return ascii_host, port


def check_target(url, policy):
    """Check a URL as a target is saved: its form, and the addresses its host has now.

    A host that does not resolve is accepted (DNS may be down, or the name not yet
    published); every connection is checked again when sending.
    """
    host, port = check_url(url, policy)
    with contextlib.suppress(OSError, UnicodeError):
        resolve(host, port, policy)


def resolve(host, port, policy):
    """Return every address ``host`` resolves to, after checking each one.

    Raises ``socket.gaierror`` when the name does not resolve, and ``TargetURLRefused``
    when any address it resolves to is refused (all are checked, so a name cannot slip a
    private address in beside a public one).
    """
    literal = ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        infos = (policy.resolver or socket.getaddrinfo)(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0])
                                       for info in infos))
    for address in addresses:
        check_address(address, policy)
    return addresses
