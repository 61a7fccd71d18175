"""Rough edges a new user hit (issue 15): each a small thing, each seen to fail before its fix."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from commands.main import app


def test_keys_show_of_an_rsa_public_key_says_what_is_wrong(tmp_path: Path, runner: CliRunner) -> None:
    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    openssh = tmp_path / "id_rsa.pub"
    openssh.write_bytes(public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    pem = tmp_path / "rsa.pem"
    pem.write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo))
    for path, says in ((openssh, "ssh-rsa"), (pem, "RSA")):
        result = runner.invoke(app, ["--db", str(tmp_path / "none.db"), "keys", "show", str(path)])
        assert result.exit_code == 2 and result.stdout == ""
        assert says in result.stderr and "d25519" in result.stderr, result.stderr
        assert "private key" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
