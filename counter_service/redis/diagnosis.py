"""What Redis's refusals mean: one short line that names the problem and the setting to
fix, or None when retrying may help (an outage).

Used at start by the probe (`counter_service.redis.probe`) and later by readiness, on
the errors the service keeps: our own wrappers keep redis-py's error as their cause."""

from __future__ import annotations

import re

from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from counter_service.errors import StoreError
from counter_service.redis.text import brief

URL = "the Redis URL (--redis-url or REDIS_URL)"
ACL_FIX = "(README: Production Redis, ACL)"
CLIENT_CERT = "COUNTER_TLS_CERT_FILE or ssl_certfile"
NOT_A_SENTINEL = (
    f"{{host}} in {URL} is not a sentinel (it does not know SENTINEL): list the"
    " sentinels, or use redis:// for a single server"
)
SENTINEL_PASSWORD = (
    f"the sentinels require a password, which {URL} cannot give (its password is the"
    " master's): let clients reach the sentinels without one (README: Production Redis)"
)
# SELECT of a database past `databases` (past INT_MAX it is out of an int's range).
_NO_SUCH_DB = ("DB index is out of range", "invalid DB index", "value must between -2147483648")
# redis-py names the command ('client|setname'), the scripts append theirs: (HSET).
_COMMAND_RE = re.compile(r"'([a-z|_-]+)' command|\(([A-Z]+)\)")


def diagnose(error: BaseException) -> str | None:
    """What is wrong with the configuration if `error` says so, in one short line; None
    for an outage (or anything retrying may fix)."""
    cause = _root(error)
    text = _said(cause)
    if isinstance(cause, AuthenticationError) or "WRONGPASS" in text:
        return f"Redis refused the user name or password: fix them in {URL}"
    if _is_permission(cause, text):
        return _permission(text)
    if any(sign in text for sign in _NO_SUCH_DB):
        return f"the database number in {URL} does not exist on this server"
    return diagnose_tls(text) or _diagnose_topology(cause, text)


def _is_permission(cause: BaseException, text: str) -> bool:
    return isinstance(cause, NoPermissionError) or any(
        sign in text for sign in ("NOPERM", "no permissions", "user executing the script can't")
    )


def _permission(text: str) -> str:
    if "keys" in text:
        return f"the Redis user may not use the namespace's keys: add ~<namespace>:* {ACL_FIX}"
    if "channel" in text:
        return f"the Redis user may not use the namespace's channels: add &<namespace>:* {ACL_FIX}"
    found = _COMMAND_RE.search(text)
    if found is None:
        return f"the Redis user lacks a permission ({text}): grant it the ACL rule {ACL_FIX}"
    command = (found.group(1) or found.group(2)).lower()
    shown = command.replace("|", " ").upper()
    return f"the Redis user may not run {shown}: add +{command} to its ACL rule {ACL_FIX}"


def diagnose_tls(text: str) -> str | None:
    """What an OpenSSL error text says is wrong with TLS, in one line; None if nothing."""
    if "certificate verify failed" in text:
        return _unverified(_reason(text))
    if "certificate required" in text:
        return (
            "Redis wants a client certificate: set COUNTER_TLS_CERT_FILE and"
            " COUNTER_TLS_KEY_FILE (or ssl_certfile and ssl_keyfile in the URL)"
        )
    if "alert unknown ca" in text:
        return (
            f"Redis refused the client certificate ({CLIENT_CERT}): no CA that Redis"
            " trusts (its tls-ca-cert-file) signed it"
        )
    if "alert" in text and "certificate" in text:
        return f"Redis refused the client certificate ({CLIENT_CERT}): {_alert(text)}"
    if "wrong version number" in text or "record layer failure" in text:
        return f"TLS and plain connections are mixed up: check rediss:// vs redis:// in {URL}"
    return None


def _unverified(reason: str) -> str:
    if "mismatch" in reason:  # "IP address mismatch", "Hostname mismatch"
        return (
            f"Redis's TLS certificate does not name the host it was reached by ({reason}):"
            f" connect by a name it names, or fix the certificate (or turn the check off:"
            f" ssl_check_hostname=false in {URL})"
        )
    return (
        "Redis's TLS certificate does not verify: set COUNTER_TLS_CA_FILE (or"
        f" ssl_ca_certs in the URL) to the CA that signed it ({reason})"
    )


def _reason(text: str) -> str:
    """The part of an OpenSSL message after its own prefix."""
    return text.rpartition("certificate verify failed: ")[2].split(" (_ssl")[0]


def _alert(text: str) -> str:
    """The alert in an OpenSSL message: 'sslv3 alert bad certificate'."""
    return text.rpartition("] ")[2].split(" (_ssl")[0]


def _diagnose_topology(cause: BaseException, text: str) -> str | None:
    if "cluster support disabled" in text or "Cluster mode is not enabled" in text:
        return f"this Redis is not a cluster: use redis:// instead of redis+cluster:// in {URL}"
    if "unknown command 'SENTINEL'" in text:
        return NOT_A_SENTINEL.format(host="a host")
    # Sentinel collects each sentinel's error in MasterNotFoundError's text alone.
    if isinstance(cause, MasterNotFoundError) and "AuthenticationError(" in str(cause):
        return SENTINEL_PASSWORD
    return None


def _root(error: BaseException) -> BaseException:
    """The redis-py or ssl error behind our own wrappers and redis-py's (a cluster's
    "cannot be connected" wraps each node's error, sometimes only as the context)."""
    while isinstance(error, (StoreError, RedisError, RedisClusterException)):
        if isinstance(error, (AuthenticationError, NoPermissionError, ResponseError)):
            break
        inner = error.__cause__ or error.__context__
        if inner is None:
            break
        error = inner
    return error


def _said(error: BaseException) -> str:
    """What Redis said, on one line, without the script location Redis appends."""
    return brief(error).split(" script: ", 1)[0]
