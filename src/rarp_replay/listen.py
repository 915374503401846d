"""`HOST:PORT` listen addresses (`--metrics`), parsed without importing the server."""

from __future__ import annotations

from ipaddress import IPv6Address, ip_address


def parse_listen(text: str) -> tuple[str, int]:
    """`--metrics HOST:PORT`: `127.0.0.1:9464`, `[::1]:9464`, `[::]:9464`, `localhost:9464`.

    Raises ValueError with a message that says what is wrong (config.py's
    ENDPOINT kind makes it a usage error: exit 2).
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:9464 or [::1]:9464), got {text!r}")
    if host.startswith("[") or host.endswith("]"):
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else ""
        try:
            IPv6Address(inner)
        except ValueError:
            raise ValueError(f"not an IPv6 address in brackets: {host!r} (in {text!r})") from None
        host = inner
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, as in [::1]:9464: {text!r}")
    elif not _is_ip(host) and not _is_hostname(host):
        raise ValueError(f"not an IP address or host name: {host!r}")
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be 1..65535, got {port_text!r} in {text!r}")
    return host, int(port_text)


def format_listen(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_ip(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def _is_hostname(text: str) -> bool:
    # RFC 1123 labels: letters, digits, hyphens; not starting or ending with a hyphen.
    labels = text.rstrip(".").split(".")
    return len(text) <= 253 and all(
        0 < len(label) <= 63
        and label.isascii()
        and all(c.isalnum() or c == "-" for c in label)
        and not label.startswith("-")
        and not label.endswith("-")
        for label in labels
    )
