"""A self-signed certificate made by openssl, for TLS servers in tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(folder: Path, names: str) -> tuple[Path, Path]:
    """(certificate, key) for CN=localhost with the subjectAltName `names` ("DNS:localhost")."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            f"subjectAltName={names}",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key
