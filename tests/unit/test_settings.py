import pytest

from counter_service import Settings, SettingsError


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
        ({"COUNTER_TICK_MS": "fast"}, "tick_ms='fast' is not a valid int"),
        ({"COUNTER_TICK_MS": "0"}, "tick_ms=0 must be between"),
        ({"COUNTER_PRESENCE_TTL": "0.1"}, "presence_ttl_s=0.1 must be between"),
        ({"COUNTER_NAMESPACE": "a b"}, "namespace='a b' use 1-64 letters"),
        ({"REDIS_URL": "http://localhost:6379"}, "scheme must be one of"),
        ({"REDIS_URL": "localhost:6379"}, "scheme must be one of"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


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
    assert caught.value.problem == "must be between 0.5 and 3600.0"


def test_every_field_has_a_documented_variable() -> None:
    from dataclasses import fields

    from counter_service.settings import SOURCES

    assert [f.name for f in fields(Settings)] == list(SOURCES)
    assert all(source.env.isupper() for source in SOURCES.values())


def test_a_bad_url_is_refused_without_its_password() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings(redis_url="http://user:hunter2@host/0")
    assert "hunter2" not in str(caught.value)
