from pathlib import Path

import pytest

from counter_service import Settings, SettingsError
from counter_service.settings import check_variable


def test_defaults_use_the_embedded_store() -> None:
    settings = Settings.from_env({})
    assert settings.embedded
    assert settings.redis_url is None
    assert settings.tick_s == pytest.approx(0.03)


def test_environment_sets_every_field() -> None:
    env = {
        "REDIS_URL": "redis://127.0.0.1:6390/2",
        "COUNTER_NAMESPACE": "shop",
        "COUNTER_TICK_MS": "50",
        "COUNTER_PRESENCE_TTL": "4.5",
        "COUNTER_MAX_CONNECTIONS": "3",
    }
    settings = Settings.from_env(env)
    assert settings == Settings("redis://127.0.0.1:6390/2", "shop", 50, 4.5, 3)
    assert not settings.embedded


def test_empty_environment_values_mean_defaults() -> None:
    assert Settings.from_env({"REDIS_URL": "", "COUNTER_TICK_MS": ""}) == Settings()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COUNTER_TICK_MS": "fast"}, "COUNTER_TICK_MS=fast: is not a whole number"),
        ({"COUNTER_TICK_MS": "0"}, "COUNTER_TICK_MS=0: must be between 1 and 10000"),
        ({"COUNTER_PRESENCE_TTL": "abc"}, "COUNTER_PRESENCE_TTL=abc: is not a number"),
        ({"COUNTER_PRESENCE_TTL": "0.1"}, "COUNTER_PRESENCE_TTL=0.1: must be between 1 and 3600"),
        ({"COUNTER_PRESENCE_TTL": "1e9"}, "COUNTER_PRESENCE_TTL=1e9: must be between 1 and 3600"),
        ({"COUNTER_EVENTS_PER_S": "0"}, "COUNTER_EVENTS_PER_S=0: must be between 0.1 and 10000"),
        ({"COUNTER_NAMESPACE": "a b"}, "COUNTER_NAMESPACE='a b': use 1-64 letters"),
        ({"REDIS_URL": "http://localhost:6379"}, "REDIS_URL=http://localhost:6379: "),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL=localhost:6379: "),
    ],
)
def test_a_bad_variable_is_named_with_its_value_as_typed(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert str(caught.value).startswith(message)


def test_flags_override_the_environment_before_it_is_checked() -> None:
    settings = Settings.from_env({"COUNTER_TICK_MS": "0"}, flags={"tick_ms": "30"})
    assert settings.tick_ms == 30


def test_a_bad_flag_is_blamed_not_the_variable_it_overrides() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"COUNTER_TICK_MS": "40"}, flags={"tick_ms": "0"})
    assert str(caught.value) == "--tick-ms 0: must be between 1 and 10000"
    assert caught.value.field == "tick_ms"


def test_a_bad_variable_is_blamed_when_a_flag_gives_another_field() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"COUNTER_TICK_MS": "0"}, flags={"namespace": "shop"})
    assert str(caught.value) == "COUNTER_TICK_MS=0: must be between 1 and 10000"


def test_arguments_given_in_code_override_the_environment_and_are_named() -> None:
    env = {"COUNTER_NAMESPACE": "not valid!"}
    assert Settings.from_env(env, overrides={"namespace": "shop"}).namespace == "shop"
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({}, overrides={"redis_url": "http://u:hunter2@h", "namespace": None})
    assert str(caught.value).startswith("redis_url='http://u:***@h': ")
    assert "scheme must be one of" in str(caught.value)


def test_a_variable_or_flag_shows_its_url_without_the_password() -> None:
    for env, flags in [
        ({"REDIS_URL": "http://u:hunter2@h"}, {}),
        ({}, {"redis_url": "x://:hunter2@h"}),
    ]:
        with pytest.raises(SettingsError) as caught:
            Settings.from_env(env, flags=flags)
        assert "hunter2" not in str(caught.value)
        assert "***" in str(caught.value)


def test_a_variable_checked_as_a_field_names_the_variable() -> None:
    assert check_variable("FLET_SESSION_TIMEOUT", "7", "session_timeout_s") == 7
    for raw, problem in [("abc", "is not a whole number"), ("-5", "must be between 1 and 86400")]:
        with pytest.raises(SettingsError) as caught:
            check_variable("FLET_SESSION_TIMEOUT", raw, "session_timeout_s")
        assert str(caught.value) == f"FLET_SESSION_TIMEOUT={raw}: {problem}"


def test_overrides_replace_only_given_fields() -> None:
    settings = Settings(namespace="a").with_overrides(redis_url="redis://x:1/0", tick_ms=None)
    assert settings == Settings(redis_url="redis://x:1/0", namespace="a")


def test_overrides_are_validated() -> None:
    with pytest.raises(SettingsError):
        Settings().with_overrides(tick_ms=-5)


def test_redacted_url_hides_the_password() -> None:
    settings = Settings(redis_url="redis://user:s3cret@host:6379/0")
    assert settings.redacted_url == "redis://user:***@host:6379/0"
    assert "s3cret" not in settings.redacted_url
    assert Settings(redis_url="redis://host:6379/0").redacted_url == "redis://host:6379/0"


def test_a_namespace_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(SettingsError):
        Settings(namespace="shop\n")


def test_a_refusal_says_which_field_value_and_problem() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings(reconcile_s=0.1)
    assert (caught.value.field, caught.value.value) == ("reconcile_s", 0.1)
    assert caught.value.problem == "must be between 0.5 and 3600"


def test_every_field_has_a_documented_variable() -> None:
    from dataclasses import fields

    from counter_service.settings import SOURCES

    assert [f.name for f in fields(Settings)] == list(SOURCES)
    assert all(source.env.isupper() for source in SOURCES.values())
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = [line for line in readme.splitlines() if line.startswith("| ")]
    for source in SOURCES.values():
        rows = [row for row in table if f"`{source.env}`" in row]
        assert rows, f"{source.env} is not in the README's settings table"
        if source.flag:
            assert f"`{source.flag}`" in rows[0], f"{source.flag} is not beside {source.env}"


def test_a_bad_url_is_refused_without_its_password() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings(redis_url="http://user:hunter2@host/0")
    assert "hunter2" not in str(caught.value)


def test_a_url_urlsplit_cannot_parse_is_refused_without_its_password() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings(redis_url="redis://bob:hunter2@[nothost]:1/0")
    assert "hunter2" not in str(caught.value)
    assert "bob:***@" not in str(caught.value)  # the user goes too: the split is unknown


def test_a_bad_url_option_is_refused_without_an_example_of_a_url() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings(redis_url="rediss://127.0.0.1:6380/0?ssl_ca_certs=/no/such/ca.pem")
    assert "ssl_ca_certs" in str(caught.value)
    assert "for example" not in str(caught.value)
    with pytest.raises(SettingsError, match="for example redis://"):
        Settings(redis_url="redis://127.0.0.1:notaport/0")
