"""TLS by configuration: ``elsa cloud`` serves HTTPS with ``ELSA_CLOUD_TLS_CERTFILE|KEYFILE``;
an edge configured with ``ELSA_EDGE_CA_FILE`` joins it over HTTPS; clients without the CA are
refused by certificate verification. Certificates come from the ``openssl`` command."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from elsa.runtime.launcher import free_port, running_cluster

pytestmark = [pytest.mark.e2e]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    ca_key, ca, key, csr, cert = (
        folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
             "-days", "2", "-subj", "/CN=ELSA test CA")  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", "/CN=127.0.0.1")  # fmt: skip
    ext = folder / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return ca, cert, key


def test_cloud_serves_https_and_an_edge_joins_it_with_the_ca(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make test certificates")
    ca, cert, key = make_certificates(tmp_path)
    cloud_port, edge_port = free_port(), free_port()
    cloud_url = f"https://127.0.0.1:{cloud_port}"
    secret, admin = "tls-join-secret", "tls-admin-token"
    with running_cluster(tmp_path) as cluster:
        cluster.start(
            "cloud",
            "cloud",
            ["-m", "elsa.cli", "cloud", "--host", "127.0.0.1", "--port", str(cloud_port)],
            {
                "ELSA_CLOUD_TLS_CERTFILE": str(cert),
                "ELSA_CLOUD_TLS_KEYFILE": str(key),
                "ELSA_CLOUD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'elsa.db'}",
                "ELSA_CLOUD_ADAPTER_DIR": str(tmp_path / "adapters"),
                "ELSA_CLOUD_JOIN_SECRET": secret,
                "ELSA_CLOUD_ADMIN_TOKEN": admin,
            },
        )
        cluster.start(
            "edge",
            "edge",
            ["-m", "elsa.cli", "edge", "--host", "127.0.0.1", "--port", str(edge_port)],
            {
                "ELSA_EDGE_CLOUD_URL": cloud_url,
                "ELSA_EDGE_CA_FILE": str(ca),
                "ELSA_EDGE_JOIN_SECRET": secret,
                "ELSA_EDGE_PUBLIC_URL": f"http://127.0.0.1:{edge_port}",
            },
        )
        verified = ssl.create_default_context(cafile=str(ca))
        deadline = time.monotonic() + 120
        nodes: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            cluster.check_alive(("cloud", "edge"))
            try:
                response = httpx.get(
                    f"{cloud_url}/v1/nodes", headers={"authorization": f"Bearer {admin}"}, verify=verified
                )
                nodes = response.json() if response.status_code == 200 else []
            except httpx.ConnectError:
                nodes = []
            if any(n["role"] == "edge" and n["alive"] for n in nodes):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the edge did not join over HTTPS: {nodes}; logs in {tmp_path / 'logs'}")

        # the certificate is checked: a client that does not trust the CA is refused
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{cloud_url}/health")
        # plain HTTP is not served on the TLS port
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{cloud_port}/health", timeout=5)
