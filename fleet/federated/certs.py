"""Self-signed TLS certificates for a federation: a private CA, and the SuperLink's certificate
signed by it (``edgefpga fed certs``).

Why a CA of our own and not one self-signed server certificate: the sites are told to trust the
CA file only (``--root-certificates ca.crt``), so the SuperLink's key can be renewed without
touching any site, and a SuperNode given another CA refuses the SuperLink during the TLS handshake.
The private keys never leave the machine that runs this command (the SuperLink's); the sites
receive ``ca.crt`` alone. Made with the ``cryptography`` package (a dependency of Flower), so no
openssl CLI is needed; ``docs/federated.md`` gives the equivalent openssl commands.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

CA_CERT, SERVER_CERT, SERVER_KEY = "ca.crt", "server.pem", "server.key"


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _alt_names(hosts: list[str]):
    """Subject alternative names: IP addresses as IPs, the rest as DNS names (TLS checks these)."""
    from cryptography import x509

    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def make_certificates(out: str | Path, hosts: list[str] | None = None, days: int = 365,
                      name: str = "edgefpga federation") -> dict[str, Path]:
    """Write ``ca.crt`` (give it to every site), ``server.pem`` and ``server.key`` (the
    SuperLink's) into ``out``. ``hosts`` are the names and addresses the sites dial."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    hosts = hosts or ["127.0.0.1", "localhost"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)  # tolerate a little clock skew
    ca_key, server_key = _key(), _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
              .issuer_name(ca_name).public_key(server_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now)
              .not_valid_after(now + dt.timedelta(days=days))
              .add_extension(_alt_names(hosts), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding

    paths = {"ca": out / CA_CERT, "cert": out / SERVER_CERT, "key": out / SERVER_KEY}
    paths["ca"].write_bytes(ca.public_bytes(Encoding.PEM))
    paths["cert"].write_bytes(server.public_bytes(Encoding.PEM))
    _write_key(server_key, paths["key"])
    return paths
