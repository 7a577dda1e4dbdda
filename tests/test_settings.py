from __future__ import annotations

from pathlib import Path

import pytest

from keel.settings import Settings, SettingsError, describe, load_settings


def test_precedence_is_default_then_file_then_env_then_cli(tmp_path: Path) -> None:
    config = tmp_path / "keel.yaml"
    config.write_text("port: 9001\nhost: 0.0.0.0\nlog_level: debug\n")
    loaded = load_settings(
        config_file=config,
        env={"KEEL_PORT": "9002", "KEEL_LOG_LEVEL": "warning"},
        cli={"port": 9003, "host": None},
    )
    settings = loaded.settings
    assert (settings.port, settings.host, settings.log_level) == (9003, "0.0.0.0", "warning")
    assert loaded.sources["port"] == "cli"
    assert loaded.sources["log_level"] == "env"
    assert loaded.sources["host"] == "file"
    assert loaded.sources["max_body_bytes"] == "default"


def test_env_reference_keeps_secrets_out_of_the_file(tmp_path: Path) -> None:
    config = tmp_path / "keel.yaml"
    config.write_text(
        "upstreams:\n  - name: vllm\n    base_url: http://127.0.0.1:8001/v1\n"
        "    api_key: {$env: VLLM_KEY}\n    models: [llama-3]\n"
    )
    loaded = load_settings(config_file=config, env={"VLLM_KEY": "s3cret-value"})
    assert loaded.settings.upstreams[0].api_key == "s3cret-value"
    shown = dict((row[0], row[1]) for row in describe(loaded))
    assert "s3cret-value" not in shown["upstreams"]
    with pytest.raises(SettingsError, match="VLLM_KEY"):
        load_settings(config_file=config, env={})


def test_database_password_is_masked_in_config_show() -> None:
    loaded = load_settings(
        env={"KEEL_DATABASE_URL": "postgresql://keel:hunter2@db.internal:5432/keel"}
    )
    shown = dict((row[0], row[1]) for row in describe(loaded))
    assert "hunter2" not in shown["database_url"]
    assert "db.internal" in shown["database_url"]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"KEEL_PORT": "eighty"}, "port (env)"),
        ({"KEEL_PORT": "70000"}, "port (env)"),
        ({"KEEL_LOG_LEVEL": "loud"}, "log_level (env)"),
        ({"KEEL_UPSTREAMS": "not json"}, "KEEL_UPSTREAMS must be JSON"),
    ],
)
def test_bad_values_name_the_setting_and_source(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=rf"{fragment.replace('(', '[(]').replace(')', '[)]')}"):
        load_settings(env=env)


def test_an_unknown_key_names_the_file_the_line_and_a_fix(tmp_path: Path) -> None:
    config = tmp_path / "keel.yaml"
    config.write_text("port: 8000\n\nprot: 8000\n")
    with pytest.raises(SettingsError) as info:
        load_settings(config_file=config, env={})
    message = str(info.value)
    assert f"{config}:3: unknown key 'prot' (did you mean 'port'?)" in message
    assert "fix: rename or remove it" in message


def test_settings_and_declarations_live_side_by_side(tmp_path: Path) -> None:
    config = tmp_path / "keel.yaml"
    config.write_text(
        "port: 9100\n"
        "providers:\n  - name: vllm\n    kind: openai_compat\n"
        "    base_url: http://127.0.0.1:9/v1\n    api_key: {$env: NOT_SET_ON_THIS_MACHINE}\n"
        "routes: []\n"
    )
    loaded = load_settings(config_file=config, env={})
    # The settings apply; the declarations are left to `keel apply` and `keel serve`, and
    # their {$env} references to the server (so a variable unset here is no error).
    assert loaded.settings.port == 9100
    assert loaded.declarations == ("providers", "routes")


def test_a_file_of_declarations_only_leaves_every_setting_at_its_default(tmp_path: Path) -> None:
    config = tmp_path / "keel.yaml"
    config.write_text("models: []\nprompts: []\n")
    loaded = load_settings(config_file=config, env={})
    assert loaded.settings.port == 8000
    assert set(loaded.sources.values()) == {"default"}


def test_declaration_sections_are_the_ones_keel_apply_reads() -> None:
    from keel.gitops.apply import SECTIONS
    from keel.settings import DECLARATION_SECTIONS

    assert set(DECLARATION_SECTIONS) == set(SECTIONS)


def test_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.model_validate({"data_dir": tmp_path})
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'keel.db'}"


def test_every_setting_has_help() -> None:
    missing = [name for name, field in Settings.model_fields.items() if not field.description]
    assert missing == []


def test_every_setting_is_documented() -> None:
    docs = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    undocumented = [name for name in Settings.model_fields if f"| `{name}` |" not in docs]
    assert undocumented == []


@pytest.mark.parametrize("secret", ["correct:horse battery", "abcd", "fernet-key-0123456789"])
def test_secret_keys_are_never_shown(secret: str) -> None:
    loaded = load_settings(env={"KEEL_SECRET_KEY": secret})
    shown = dict((row[0], row[1]) for row in describe(loaded))
    assert secret[:4] not in shown["secret_key"]
    assert shown["secret_key"] == "****"
