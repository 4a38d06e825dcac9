"""Redis URLs: every scheme's hosts, ports, databases, credentials and query options are
checked and converted here, so a bad one is one clear refusal instead of a crash later."""

import ssl
from pathlib import Path

import pytest
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection

from counter_service.redis.connections import (
    ClusterConnections,
    SentinelConnections,
    ServerConnections,
    ServerPubSub,
)
from counter_service.redis.urls import (
    MAX_DB,
    QUERY_OPTIONS,
    InvalidRedisOption,
    InvalidRedisUrl,
    RedisTarget,
    parse_redis_url,
)
from counter_service.settings import Settings

V6 = "2001:db8::1"

VALID = [
    ("redis://127.0.0.1:6390/2", {"kind": "server", "hosts": (("127.0.0.1", 6390),), "db": 2}),
    ("redis://redis", {"hosts": (("redis", 6379),), "db": 0}),
    ("redis://my_redis.internal:7000/", {"hosts": (("my_redis.internal", 7000),), "db": 0}),
    ("REDIS://h:1/0", {"kind": "server", "tls": False}),
    ("rediss://h:6380/1", {"kind": "server", "tls": True, "db": 1}),
    ("redis://h?db=3", {"db": 3, "options": {}}),
    ("redis://[::1]:6379/0", {"hosts": (("::1", 6379),)}),
    ("redis://[::1]/0", {"hosts": (("::1", 6379),)}),
    (f"redis://[{V6}]:65535", {"hosts": ((V6, 65535),)}),
    ("redis://u:p%40ss%3Aw%2Frd@h/0", {"username": "u", "password": "p@ss:w/rd"}),
    ("redis://:secret@h/0", {"username": None, "password": "secret"}),
    ("redis://al%20ice@h/0", {"username": "al ice", "password": None}),
    ("unix:///run/redis.sock", {"socket_path": "/run/redis.sock", "hosts": (), "db": 0}),
    ("unix://u:pw@/run/redis.sock?db=4", {"socket_path": "/run/redis.sock", "db": 4}),
    (
        "redis+sentinel://s1:26380,s2,[::1]:26381/mymaster/3",
        {
            "kind": "sentinel",
            "hosts": (("s1", 26380), ("s2", 26379), ("::1", 26381)),
            "service": "mymaster",
            "db": 3,
        },
    ),
    ("redis+sentinel://[::1]/svc", {"hosts": (("::1", 26379),), "service": "svc", "db": 0}),
    ("rediss+sentinel://u:pw@s1/svc/", {"tls": True, "username": "u", "password": "pw"}),
    (
        "redis+cluster://n1:7000,n2:7001,[::1]",
        {"kind": "cluster", "hosts": (("n1", 7000), ("n2", 7001), ("::1", 6379))},
    ),
    ("rediss+cluster://n1:7000", {"kind": "cluster", "tls": True}),
]


@pytest.mark.parametrize(("url", "expected"), VALID)
def test_a_valid_url_gives_its_parts(url: str, expected: dict[str, object]) -> None:
    target = parse_redis_url(url)
    assert {name: getattr(target, name) for name in expected} == expected
    assert target.url == url


OPTIONS = [
    ("redis://h/0?socket_timeout=2.5", {"socket_timeout": 2.5}),
    ("redis://h/0?socket_connect_timeout=1", {"socket_connect_timeout": 1.0}),
    ("redis://h/0?socket_keepalive=no", {"socket_keepalive": False}),
    ("redis://h/0?socket_keepalive=TRUE", {"socket_keepalive": True}),
    ("redis://h/0?health_check_interval=30", {"health_check_interval": 30}),
    ("unix:///s.sock?socket_timeout=3&db=1", {"socket_timeout": 3.0}),
    ("rediss://h/0?ssl_check_hostname=false", {"ssl_check_hostname": False}),
    ("rediss://h/0?ssl_cert_reqs=optional", {"ssl_cert_reqs": "optional"}),
    ("rediss://h/0?ssl_min_version=TLSv1_3", {"ssl_min_version": ssl.TLSVersion.TLSv1_3}),
    ("rediss://h/0?ssl_password=a%26b", {"ssl_password": "a&b"}),
    ("rediss+sentinel://s/m?ssl_check_hostname=0", {"ssl_check_hostname": False}),
    ("rediss+cluster://n?ssl_check_hostname=off", {"ssl_check_hostname": False}),
    ("redis+sentinel://s/m?socket_timeout=5", {"socket_timeout": 5.0}),
    ("redis+cluster://n?socket_connect_timeout=0.5", {"socket_connect_timeout": 0.5}),
]


@pytest.mark.parametrize(("url", "options"), OPTIONS)
def test_query_options_are_converted_to_their_types(url: str, options: dict[str, object]) -> None:
    assert parse_redis_url(url).options == options


def test_file_options_must_name_files(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    url = f"rediss://h/0?ssl_ca_certs={ca}&ssl_ca_path={tmp_path}"
    assert parse_redis_url(url).options == {"ssl_ca_certs": str(ca), "ssl_ca_path": str(tmp_path)}
    with pytest.raises(InvalidRedisUrl, match=r"ssl_certfile=.*is not a readable file"):
        parse_redis_url(f"rediss://h/0?ssl_certfile={tmp_path}/missing.pem")
    with pytest.raises(InvalidRedisUrl, match=r"ssl_ca_path=.*is not a directory"):
        parse_redis_url(f"rediss://h/0?ssl_ca_path={ca}")


INVALID = [
    ("http://h/0", "scheme must be one of"),
    ("h:6379", "scheme must be one of"),
    ("redis://", "a host is missing"),
    ("redis://:pw@/0", "a host is missing"),
    ("redis://h:notaport/0", "the port must be a number from 1 to 65535"),
    ("redis://h:99999/0", "the port must be a number from 1 to 65535"),
    ("redis://h:0/0", "the port must be a number from 1 to 65535"),
    ("redis://h:/0", "the port must be a number from 1 to 65535"),
    ("redis://h:-1/0", "the port must be a number from 1 to 65535"),
    ("redis://h/abc", "database 'abc' is not a number"),
    ("redis://h/-1", "database '-1' is not a number"),
    ("redis://h/0/1", "the path is the database number alone"),
    ("redis://h/1?db=2", "give the database number once"),
    ("redis://h?db=x", "query option db='x': must be a whole number"),
    ("redis://h1,h2/0", "one host only"),
    ("redis://::1:6379/0", "put an IPv6 address in brackets"),
    ("redis://[::1/0", "is not [IPv6 address]:port"),
    ("redis://[::1]x/0", "is not [IPv6 address]:port"),
    ("redis://[nothost]:1/0", "is not an IPv6 address"),
    ("redis://bad_host!/0", "is not a host name or address"),
    ("redis://bad host/0", "has a space or a control character"),
    ("redis://h/0?socket_timeout=abc", "query option socket_timeout='abc': must be a number"),
    ("redis://h/0?socket_timeout=-1", "socket_timeout='-1': must be a positive number"),
    ("redis://h/0?socket_timeout=", "socket_timeout='': must be a number"),
    ("redis://h/0?socket_keepalive=maybe", "socket_keepalive='maybe': must be one of"),
    ("redis://h/0?health_check_interval=1.5", "health_check_interval='1.5': must be a whole"),
    ("redis://h/0?foo=bar", "unknown query option 'foo' for redis://"),
    ("redis://h/0?ssl_ca_cert=/ca.pem", "unknown query option 'ssl_ca_cert'"),
    ("redis://h/0?ssl_check_hostname=false", "'ssl_check_hostname' needs TLS: use rediss://"),
    ("redis+sentinel://s/m?ssl_cert_reqs=none", "needs TLS: use rediss+sentinel://"),
    ("redis+cluster://n?ssl_certfile=/c.pem", "needs TLS: use rediss+cluster://"),
    ("rediss://h/0?ssl_cert_reqs=maybe", "ssl_cert_reqs='maybe': must be none, optional"),
    ("rediss://h/0?ssl_min_version=771", "ssl_min_version='771': must be one of TLSv1_2"),
    ("rediss+cluster://n?ssl_password=x", "unknown query option 'ssl_password'"),
    ("redis://h/0?socket_timeout=1&socket_timeout=2", "'socket_timeout' is given twice"),
    ("redis://h/0?db=1", "give the database number once"),
    ("unix://", "needs the socket's absolute path"),
    ("unix://host/run/redis.sock", "a unix:// URL names a socket"),
    ("unix:///s.sock?socket_keepalive=yes", "unknown query option 'socket_keepalive'"),
    ("unix:///s.sock?db=-2", "db='-2': must be a whole number"),
    ("redis+sentinel://s1:26379", "a Sentinel URL ends in /SERVICE or /SERVICE/DB"),
    ("redis+sentinel://s1/m/0/1", "a Sentinel URL ends in /SERVICE or /SERVICE/DB"),
    ("redis+sentinel://s1/m/x", "database 'x' is not a number"),
    ("redis+sentinel://s1/m?db=1", "unknown query option 'db'"),
    ("redis+sentinel://s1:abc,s2/m", "'s1:abc': the port must be a number"),
    ("redis+sentinel://s1,,s2/m", "a host is missing"),
    ("redis+cluster://n1:7000/0", "a cluster has no database numbers"),
    ("redis+cluster://n1:700000", "the port must be a number from 1 to 65535"),
    # Redis's last database is INT_MAX - 1; past it SELECT fails as "value is out of range".
    ("redis://h/2147483647", "database 2147483647 is past Redis's last database number"),
    ("redis://h/99999999999999999999", "is past Redis's last database number, 2147483646"),
    ("redis://h?db=2147483647", "db='2147483647': is past Redis's last database number"),
    ("redis+sentinel://s/m/2147483648", "is past Redis's last database number"),
    # What urllib would trim, drop or keep as is.
    ("redis://h /0", "has a space or a control character"),
    ("redis://h:6379 /0", "has a space or a control character"),
    ("redis+sentinel://s1, s2/m", "has a space or a control character"),
    ("redis://h/0\n", "has a space or a control character"),
    ("redis://h:٦٣٧٩/0", "the port must be a number from 1 to 65535"),
    ("redis://h/٣", "is not a number, 0 or more"),
    ("redis://h?db=٣", "db='٣': must be a whole number"),
    ("redis://h/0?health_check_interval=٣", "must be a whole number"),
    ("redis://h/0?socket_timeout=٣", "socket_timeout='٣': must be a number"),
    ("redis://h/0?socket_timeout=1_0", "socket_timeout='1_0': must be a number"),
    ("redis://h/0?socket_timeout=1e3", "socket_timeout='1e3': must be a number"),
    ("redis://h/0?socket_timeout=nan", "socket_timeout='nan': must be a number"),
    ("redis://u:p%zz@h/0", "starts no percent escape"),
    ("redis://u:p%2@h/0", "starts no percent escape"),
    ("redis://u:%ff@h/0", "a percent escape in the URL is not UTF-8"),
    ("redis://h/0#frag", "a Redis URL has no #fragment"),
    ("redis://u:pa#ss@h/0", "(a '#' in a password is %23)"),
]


@pytest.mark.parametrize(("url", "problem"), INVALID)
def test_an_invalid_url_is_refused_with_a_message_that_names_the_problem(
    url: str, problem: str
) -> None:
    with pytest.raises(InvalidRedisUrl) as caught:
        parse_redis_url(url)
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_refused_escape_or_fragment_does_not_show_the_password() -> None:
    for url in ("redis://u:s3cr%zz@h/0", "redis://u:s3cr#et@h/0"):
        with pytest.raises(InvalidRedisUrl) as caught:
            parse_redis_url(url)
        assert "s3cr" not in str(caught.value)


def test_the_last_database_number_and_percent_escapes_are_accepted() -> None:
    assert parse_redis_url("redis://h/2147483646").db == MAX_DB == 2**31 - 2
    assert parse_redis_url("redis://h?db=2147483646").db == MAX_DB
    assert parse_redis_url("redis://u:a%25b%23@h/0").password == "a%b#"
    assert parse_redis_url("redis://u:%C3%A9@h/0").password == "é"


def test_only_query_options_raise_invalid_redis_option() -> None:
    with pytest.raises(InvalidRedisOption):
        parse_redis_url("redis://h/0?socket_timeout=x")
    with pytest.raises(InvalidRedisUrl) as caught:
        parse_redis_url("redis://h:x/0")
    assert not isinstance(caught.value, InvalidRedisOption)


def test_every_scheme_accepts_only_options_of_its_own_connections() -> None:
    for scheme, allowed in QUERY_OPTIONS.items():
        tls = scheme.startswith("rediss")
        assert any(name.startswith("ssl_") for name in allowed) == tls, scheme
        assert ("db" in allowed) == (scheme in ("redis", "rediss", "unix")), scheme


def test_a_target_holds_no_raw_strings_for_typed_options() -> None:
    target = parse_redis_url("redis+sentinel://s/m?socket_timeout=5&socket_keepalive=yes")
    assert target == RedisTarget(
        "sentinel",
        target.url,
        hosts=(("s", 26379),),
        service="m",
        options={"socket_timeout": 5.0, "socket_keepalive": True},
    )


# What the URL's options reach: every connection, the sentinels' included.


def test_tls_query_options_reach_the_sentinels_and_the_master(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    url = f"rediss+sentinel://s1:26380,s2/svc/2?ssl_ca_certs={ca}&ssl_check_hostname=no"
    connections = SentinelConnections(Settings(redis_url=url), parse_redis_url(url), "t")
    for sentinel in connections.sentinel.sentinels:
        kwargs = sentinel.connection_pool.connection_kwargs
        assert sentinel.connection_pool.connection_class is SSLConnection
        assert (kwargs["ssl_ca_certs"], kwargs["ssl_check_hostname"]) == (str(ca), False)
    master = connections.commands.connection_pool
    assert master.connection_class.__name__ == "SentinelManagedSSLConnection"
    assert master.connection_kwargs["ssl_check_hostname"] is False
    assert master.connection_kwargs["db"] == 2


def test_settings_files_apply_unless_the_url_names_its_own(tmp_path: Path) -> None:
    ca, other = tmp_path / "ca.pem", tmp_path / "other.pem"
    ca.write_text("x")
    other.write_text("x")
    settings = Settings(redis_url=f"rediss://h:6380/0?ssl_ca_certs={other}", tls_ca_file=str(ca))
    pool = ServerConnections(settings, "t").commands.connection_pool
    assert pool.connection_class is SSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == str(other)
    plain = Settings(redis_url="redis://h:6380/0", tls_ca_file=str(ca))
    assert (
        "ssl_ca_certs"
        not in ServerConnections(plain, "t").commands.connection_pool.connection_kwargs
    )


def test_a_socket_timeout_in_the_url_is_for_commands_not_the_subscription() -> None:
    settings = Settings(redis_url="redis://h:6380/3?socket_timeout=1.5&socket_keepalive=no")
    connections = ServerConnections(settings, "t")
    commands = connections.commands.connection_pool.connection_kwargs
    assert (commands["socket_timeout"], commands["socket_keepalive"], commands["db"]) == (
        1.5,
        False,
        3,
    )
    pubsub = connections.new_pubsub()
    assert isinstance(pubsub, ServerPubSub)
    subscription = pubsub._client.connection_pool.connection_kwargs
    assert "socket_timeout" not in subscription
    assert subscription["socket_keepalive"] is False


def test_a_unix_socket_gets_no_tcp_options() -> None:
    pool = ServerConnections(
        Settings(redis_url="unix:///run/r.sock?db=2"), "t"
    ).commands.connection_pool
    assert pool.connection_class is UnixDomainSocketConnection
    assert pool.connection_kwargs["path"] == "/run/r.sock"
    assert pool.connection_kwargs["db"] == 2
    assert "socket_keepalive" not in pool.connection_kwargs


def test_cluster_nodes_get_the_urls_options() -> None:
    url = "rediss+cluster://u:p%40ss@n1:7000,n2?ssl_cert_reqs=optional&socket_timeout=2"
    connections = ClusterConnections(Settings(redis_url=url), parse_redis_url(url), "t")
    [node, *_] = connections.commands.startup_nodes
    kwargs = node.connection_kwargs
    assert node.connection_class is SSLConnection
    assert (kwargs["ssl_cert_reqs"], kwargs["socket_timeout"]) == ("optional", 2.0)
    assert (kwargs["username"], kwargs["password"]) == ("u", "p@ss")
