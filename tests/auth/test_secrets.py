from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from keel.auth.secrets import SecretBox, SecretError
from keel.settings import Settings, describe, load_settings

SECRET = "sk-ant-api03-very-secret-value"
WRONG_KEY = (
    "cannot decrypt provider secret: KEEL_SECRET_KEY differs from the key it was encrypted with"
)


def test_round_trip_with_the_generated_key_file(tmp_path: Path) -> None:
    box = SecretBox.load(tmp_path, None)
    token = box.encrypt(SECRET)
    assert token.startswith("fernet:")
    assert box.decrypt(token) == SECRET


def test_key_file_is_created_private_on_first_use(tmp_path: Path) -> None:
    data_dir = tmp_path / "not-yet-there"
    SecretBox.load(data_dir, None)
    key_file = data_dir / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in data_dir.iterdir()] == ["secret.key"]  # no temporary left over


def test_key_file_is_reused_so_secrets_survive_a_restart(tmp_path: Path) -> None:
    token = SecretBox.load(tmp_path, None).encrypt(SECRET)
    key_before = (tmp_path / "secret.key").read_bytes()
    assert SecretBox.load(tmp_path, None).decrypt(token) == SECRET
    assert (tmp_path / "secret.key").read_bytes() == key_before


def test_ciphertext_does_not_contain_the_plaintext(tmp_path: Path) -> None:
    box = SecretBox.load(tmp_path, None)
    token = box.encrypt(SECRET)
    assert SECRET not in token
    assert "very-secret" not in token
    assert box.encrypt(SECRET) != token  # a fresh IV each time: equal secrets look different


@pytest.mark.parametrize(
    "secret_key",
    [Fernet.generate_key().decode(), "correct horse battery"],
    ids=["fernet-key", "passphrase"],  # a random key in a test's name differs between workers
)
def test_setting_key_works_without_a_key_file(tmp_path: Path, secret_key: str) -> None:
    token = SecretBox.load(tmp_path, secret_key).encrypt(SECRET)
    assert SecretBox.load(tmp_path / "other-replica", secret_key).decrypt(token) == SECRET
    assert not (tmp_path / "secret.key").exists()


def test_a_fernet_key_is_used_as_is(tmp_path: Path) -> None:
    key = Fernet.generate_key()
    token = SecretBox.load(tmp_path, key.decode()).encrypt(SECRET)
    assert Fernet(key).decrypt(token.removeprefix("fernet:").encode()).decode() == SECRET


@pytest.mark.parametrize(
    ("first", "second"),
    [("passphrase one", "passphrase two"), (None, "a passphrase"), ("a passphrase", None)],
)
def test_wrong_key_is_a_clear_error(tmp_path: Path, first: str | None, second: str | None) -> None:
    token = SecretBox.load(tmp_path, first).encrypt(SECRET)
    with pytest.raises(SecretError, match=WRONG_KEY):
        SecretBox.load(tmp_path, second).decrypt(token)


def test_value_not_encrypted_by_keel_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="does not start with 'fernet:'"):
        SecretBox.load(tmp_path, None).decrypt(SECRET)


def test_damaged_key_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_text("not a key\n")
    with pytest.raises(SecretError, match=r"secret\.key does not hold a Fernet key"):
        SecretBox.load(tmp_path, None)


def test_empty_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="KEEL_SECRET_KEY is empty"):
        SecretBox.load(tmp_path, "  ")


def test_config_show_masks_the_secret_key(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    loaded = load_settings(env={"KEEL_SECRET_KEY": key, "KEEL_DATA_DIR": str(tmp_path)})
    assert loaded.settings.secret_key == key
    shown = {row[0]: row[1] for row in describe(loaded)}["secret_key"]
    assert key not in shown
    assert Settings.model_validate({}).secret_key is None
