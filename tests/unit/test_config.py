"""Settings from the environment: parsing, secrets from files, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudvote.config import InvalidSetting, MissingSetting, Settings


def test_defaults_apply_when_the_environment_is_empty() -> None:
    settings = Settings.from_env({})

    assert settings == Settings()
    assert settings.port == 5000
    assert (settings.option_a, settings.option_b) == ("Cats", "Dogs")
    assert settings.redis_url == ""
    assert settings.database_url == ""


def test_variables_are_read_and_integers_coerced() -> None:
    settings = Settings.from_env(
        {
            "PORT": "8000",
            "REDIS_URL": "redis://redis:6379/0",
            "DATABASE_URL": "postgresql://cloudvote@postgres/cloudvote",
            "CLOUDVOTE_POLLS_FILE": "/etc/cloudvote/polls.yaml",
            "OPTION_A": "Tea",
            "OPTION_B": "Coffee",
            "CLOUDVOTE_DATA_DIR": "/var/lib/cloudvote",
            "WEB_CONCURRENCY": "4",
            "LOG_LEVEL": "debug",
            "WORKER_BATCH_SIZE": "500",
            "WORKER_CLAIM_IDLE_MS": "30000",
            "DATABASE_POOL_SIZE": "8",
            "CLOUDVOTE_STREAM": "votes-test",
        }
    )

    assert settings.port == 8000
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.database_url == "postgresql://cloudvote@postgres/cloudvote"
    assert settings.polls_file == "/etc/cloudvote/polls.yaml"
    assert (settings.option_a, settings.option_b) == ("Tea", "Coffee")
    assert settings.data_dir == "/var/lib/cloudvote"
    assert settings.web_concurrency == 4
    assert settings.log_level == "debug"
    assert settings.batch_size == 500
    assert settings.claim_idle_ms == 30_000
    assert settings.database_pool_size == 8
    assert settings.stream == "votes-test"


def test_an_empty_variable_counts_as_unset() -> None:
    settings = Settings.from_env({"PORT": "", "OPTION_A": ""})

    assert settings.port == 5000
    assert settings.option_a == "Cats"


def test_keyword_overrides_win_over_the_environment_and_none_is_ignored() -> None:
    settings = Settings.from_env({"PORT": "8000", "OPTION_A": "Tea"}, port=9000, option_a=None)

    assert settings.port == 9000
    assert settings.option_a == "Tea"


def test_with_overrides_coerces_and_keeps_the_rest() -> None:
    base = Settings.from_env({"REDIS_URL": "redis://r/0"})

    changed = base.with_overrides(port="7000", data_dir=None)

    assert changed.port == 7000
    assert changed.redis_url == "redis://r/0"
    assert changed.data_dir == ""


def test_without_a_mapping_the_process_environment_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORT", "6123")
    monkeypatch.setenv("OPTION_B", "Hamsters")

    settings = Settings.from_env()

    assert settings.port == 6123
    assert settings.option_b == "Hamsters"


@pytest.mark.parametrize(
    "variable", ["PORT", "WEB_CONCURRENCY", "WORKER_BATCH_SIZE", "DATABASE_POOL_SIZE"]
)
def test_a_non_integer_value_is_refused_naming_the_variable(variable: str) -> None:
    with pytest.raises(InvalidSetting) as caught:
        Settings.from_env({variable: "lots"})

    assert str(caught.value) == f"{variable} must be an integer, got 'lots'"


def test_a_bad_integer_override_is_refused() -> None:
    with pytest.raises(InvalidSetting, match="PORT must be an integer"):
        Settings().with_overrides(port="eighty")


def test_an_unknown_override_is_refused() -> None:
    with pytest.raises(InvalidSetting, match="unknown setting 'colour'"):
        Settings().with_overrides(colour="blue")


def test_passwords_are_read_from_their_files_without_the_trailing_newline(
    tmp_path: Path,
) -> None:
    redis_file = tmp_path / "redis-password"
    redis_file.write_text("r3dis-secret\n")
    database_file = tmp_path / "database-password"
    database_file.write_text("  pg-secret  \n")

    settings = Settings.from_env(
        {"REDIS_PASSWORD_FILE": str(redis_file), "DATABASE_PASSWORD_FILE": str(database_file)}
    )

    assert settings.redis_password == "r3dis-secret"
    assert settings.database_password == "pg-secret"


def test_a_password_in_a_plain_variable_is_ignored() -> None:
    settings = Settings.from_env({"REDIS_PASSWORD": "leaky", "DATABASE_PASSWORD": "leaky"})

    assert settings.redis_password == ""
    assert settings.database_password == ""


@pytest.mark.parametrize("name", ["REDIS_PASSWORD", "DATABASE_PASSWORD"])
def test_an_unreadable_password_file_is_a_startup_error_naming_variable_and_path(
    tmp_path: Path, name: str
) -> None:
    missing = tmp_path / "not-mounted"

    with pytest.raises(InvalidSetting) as caught:
        Settings.from_env({f"{name}_FILE": str(missing)})

    message = str(caught.value)
    assert f"{name}_FILE={missing}" in message
    assert "cannot be read" in message


def test_a_directory_as_password_file_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidSetting, match="REDIS_PASSWORD_FILE"):
        Settings.from_env({"REDIS_PASSWORD_FILE": str(tmp_path)})


def test_require_redis_url_names_redis_url_when_missing() -> None:
    with pytest.raises(MissingSetting) as caught:
        Settings.from_env({}).require_redis_url()

    assert caught.value.variable == "REDIS_URL"
    assert str(caught.value).startswith("REDIS_URL must be set")


def test_require_database_url_names_database_url_when_missing() -> None:
    with pytest.raises(MissingSetting) as caught:
        Settings.from_env({"REDIS_URL": "redis://r/0"}).require_database_url()

    assert caught.value.variable == "DATABASE_URL"
    assert str(caught.value).startswith("DATABASE_URL must be set")


def test_required_urls_are_returned_when_set() -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://r/0", "DATABASE_URL": "postgresql://p/d"})

    assert settings.require_redis_url() == "redis://r/0"
    assert settings.require_database_url() == "postgresql://p/d"


def test_data_dir_setting_is_used_as_given(tmp_path: Path) -> None:
    assert Settings(data_dir=str(tmp_path)).resolved_data_dir() == tmp_path


def test_data_dir_defaults_under_xdg_data_home(tmp_path: Path) -> None:
    settings = Settings.from_env({"XDG_DATA_HOME": str(tmp_path)})

    assert settings.resolved_data_dir() == tmp_path / "cloudvote"


def test_the_worker_defaults_to_port_8080_unless_port_is_set() -> None:
    assert Settings.from_env({}, service="worker").port == 8080
    assert Settings.from_env({"PORT": "9000"}, service="worker").port == 9000
    assert Settings.from_env({}, service="worker", port=7000).port == 7000
    assert Settings.from_env({}, service="vote").port == 5000


def test_the_metrics_directory_is_read_from_prometheus_multiproc_dir() -> None:
    assert Settings.from_env({"PROMETHEUS_MULTIPROC_DIR": "/run/m"}).metrics_dir == "/run/m"
    assert Settings.from_env({}).metrics_dir == ""


def test_tracing_defaults_record_one_new_trace_in_ten_and_export_nowhere() -> None:
    settings = Settings.from_env({})

    assert settings.otel_traces_sampler_arg == 0.1
    assert settings.otel_exporter_otlp_endpoint == ""
    assert settings.otel_service_name == ""
    assert settings.otel_sdk_disabled is False


def test_opentelemetry_variables_are_read() -> None:
    settings = Settings.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4318",
            "OTEL_SERVICE_NAME": "ballots",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SDK_DISABLED": "TRUE",
        }
    )

    assert settings.otel_exporter_otlp_endpoint == "http://otel-collector:4318"
    assert settings.otel_service_name == "ballots"
    assert settings.otel_traces_sampler_arg == 0.25
    assert settings.otel_sdk_disabled is True


@pytest.mark.parametrize("ratio", ["0", "1", "1.0", " 0.5 "])
def test_a_sampling_ratio_from_zero_to_one_is_accepted(ratio: str) -> None:
    settings = Settings.from_env({"OTEL_TRACES_SAMPLER_ARG": ratio})

    assert settings.otel_traces_sampler_arg == float(ratio)


@pytest.mark.parametrize("ratio", ["ten percent", "1.5", "-0.1", "nan", "inf", "10%"])
def test_a_bad_sampling_ratio_fails_naming_the_variable(ratio: str) -> None:
    with pytest.raises(InvalidSetting) as error:
        Settings.from_env({"OTEL_TRACES_SAMPLER_ARG": ratio})

    assert str(error.value) == (
        "OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1 (0.1 records one new trace in"
        f" ten), got {ratio!r}"
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_TRACES_SAMPLER", "always_on"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
    ],
)
def test_opentelemetry_choices_cloudvote_cannot_honour_fail_naming_the_variable(
    variable: str, value: str
) -> None:
    with pytest.raises(InvalidSetting, match=f"^{variable}='{value}' is not supported"):
        Settings.from_env({variable: value})


def test_otel_sdk_disabled_must_be_true_or_false() -> None:
    with pytest.raises(InvalidSetting, match="OTEL_SDK_DISABLED must be true or false"):
        Settings.from_env({"OTEL_SDK_DISABLED": "yes"})
