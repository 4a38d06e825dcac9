"""TLS for Redis connections: the options redis-py gets, and the files behind them checked
before any connection is made.

redis-py loads the CA, the client certificate and its key on every connection attempt, and
a file that cannot work (a CA file with no certificate in it, a certificate without its
key, a key of another certificate) then fails each attempt as if Redis were down. Loaded
here once into an `ssl.SSLContext`, the same way, such a file is named at start."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from typing import Any

from redis.asyncio.connection import RedisSSLContext

from counter_service.redis.urls import TLS_OPTIONS, RedisTarget
from counter_service.settings import Settings

SETTINGS = {
    "ssl_ca_certs": ("tls_ca_file", "COUNTER_TLS_CA_FILE"),
    "ssl_certfile": ("tls_cert_file", "COUNTER_TLS_CERT_FILE"),
    "ssl_keyfile": ("tls_key_file", "COUNTER_TLS_KEY_FILE"),
}
"""The redis-py option each TLS setting gives: (Settings field, environment variable)."""
HANDSHAKE_TIMEOUT_S = 2.0
LISTEN_S = 0.5
"""How long `refusal` listens after the handshake for the server to refuse the client."""
REFUSAL_ATTEMPTS = 3
"""How often `refusal` tries: after the handshake, a server that refuses the client's
certificate sends its alert, or now and then only resets the connection."""


class _Encrypted(Exception):
    """The key file is encrypted and no password was given (rather than a prompt)."""


def tls_options(settings: Settings, target: RedisTarget) -> dict[str, Any]:
    """redis-py's TLS arguments for `target` (none unless its scheme is TLS): the
    settings' files, overridden by the URL's own TLS query options."""
    if not target.tls:
        return {}
    options: dict[str, Any] = {}
    for option, (field, _) in SETTINGS.items():
        if value := getattr(settings, field):
            options[option] = value
    return options | {k: v for k, v in target.options.items() if k in TLS_OPTIONS}


def files_problem(settings: Settings, target: RedisTarget) -> str | None:
    """What is wrong with the TLS files `target` would load, in one line naming the
    setting; None if they load (or the scheme is not TLS)."""
    options = tls_options(settings, target)
    names = {option: _named(option, target) for option in SETTINGS}
    return (
        _client_problem(options, names) or _ca_problem(options, names) or _ciphers_problem(options)
    )


def _named(option: str, target: RedisTarget) -> str:
    return f"{option} in the Redis URL" if option in target.options else SETTINGS[option][1]


def _client_problem(options: Mapping[str, Any], names: Mapping[str, str]) -> str | None:
    cert, key = options.get("ssl_certfile"), options.get("ssl_keyfile")
    cert_name, key_name = names["ssl_certfile"], names["ssl_keyfile"]
    if cert is None:
        return f"{key_name} is set without a client certificate" if key else None
    if not _holds_certificate(cert):
        return f"{cert_name} holds no certificate (PEM expected)"
    asked: list[bool] = []
    try:
        ssl.create_default_context().load_cert_chain(cert, key, _password(options, asked))
    except _Encrypted:
        return f"{key_name} is encrypted: give its password as ssl_password in the Redis URL"
    except ssl.SSLError as exc:
        return _key_problem(exc, bool(key), bool(asked), cert_name, key_name)
    return None


def _key_problem(
    error: ssl.SSLError, separate: bool, decrypted: bool, cert_name: str, key_name: str
) -> str:
    if error.reason == "KEY_VALUES_MISMATCH":
        return f"{key_name} is not the key of the certificate in {cert_name}"
    if not separate:
        return f"{cert_name} holds a certificate without its key: set {key_name} too"
    if decrypted:
        return f"{key_name} does not decrypt with the ssl_password in the Redis URL"
    return f"{key_name} holds no private key (PEM expected)"


def _password(options: Mapping[str, Any], asked: list[bool]) -> Any:
    """A password callback: OpenSSL would otherwise prompt on the terminal for an
    encrypted key. `asked` records that it was called (the key is encrypted)."""

    def give() -> str:
        asked.append(True)
        password = options.get("ssl_password")
        if password is None:
            raise _Encrypted
        return str(password)

    return give


def _holds_certificate(path: str) -> bool:
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except ssl.SSLError:
        return False
    return True


def _ca_problem(options: Mapping[str, Any], names: Mapping[str, str]) -> str | None:
    ca = options.get("ssl_ca_certs")
    if ca is not None and not _holds_certificate(ca):
        return f"{names['ssl_ca_certs']} holds no CA certificate (PEM expected)"
    return None


def _ciphers_problem(options: Mapping[str, Any]) -> str | None:
    ciphers = options.get("ssl_ciphers")
    try:
        if ciphers is not None:
            ssl.create_default_context().set_ciphers(ciphers)
    except ssl.SSLError:
        return f"ssl_ciphers={ciphers!r} in the Redis URL names no cipher this machine has"
    return None


def client_context(options: Mapping[str, Any]) -> ssl.SSLContext:
    """The context redis-py makes from `options` (its SSLConnection's defaults: the
    certificate is required and must name the host)."""
    return RedisSSLContext(
        keyfile=options.get("ssl_keyfile"),
        certfile=options.get("ssl_certfile"),
        cert_reqs=options.get("ssl_cert_reqs", "required"),
        ca_certs=options.get("ssl_ca_certs"),
        ca_path=options.get("ssl_ca_path"),
        check_hostname=options.get("ssl_check_hostname", True),
        min_version=options.get("ssl_min_version"),
        ciphers=options.get("ssl_ciphers"),
        password=options.get("ssl_password"),
    ).get()


async def refusal(host: str, port: int, options: Mapping[str, Any]) -> str | None:
    """What the server's TLS said if it refused this client (its certificate, or the lack
    of one) after a handshake as redis-py would make it; None if it did not say (it waits
    for a command, reset the connection every time, or could not be reached)."""
    context = client_context(options)
    for _ in range(REFUSAL_ATTEMPTS):
        try:
            await _listen(host, port, context)
            return None
        except ssl.SSLError as exc:
            return str(exc)
        except ConnectionResetError:
            continue
        except (OSError, TimeoutError):
            return None
    return None


async def _listen(host: str, port: int, context: ssl.SSLContext) -> None:
    """Connect and listen without sending: with TLS 1.3 the server judges the client's
    certificate after the handshake, and its alert comes unasked (data sent meanwhile
    makes it reset the connection instead, and the alert is lost)."""
    async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        async with asyncio.timeout(LISTEN_S):
            if not await reader.read(64):
                raise ConnectionResetError("closed without a word")
    except TimeoutError:
        return  # the server waits for a command: it accepted this client
    finally:
        await close(writer)


async def close(writer: asyncio.StreamWriter) -> None:
    """Close a connection and wait (briefly) until it is: a TLS one says goodbye first,
    and a transport left closing when the event loop ends is a ResourceWarning."""
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):  # ssl.SSLError is an OSError
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            await writer.wait_closed()
