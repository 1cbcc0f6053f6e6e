"""Self-signed TLS certificates: a private CA and leaves it signs. For a federation, the
SuperLink's certificate (``edgefpga fed certs``); for a site's edge-cloud link, the cloud
service's and every cell's (``edgefpga fleet certs``, fleet/trust.py builds on ``new_ca`` and ``issue``).

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


def _now():
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)  # tolerate a little clock skew


def new_ca(name: str, days: int):
    """A private CA's key and self-signed certificate (it signs leaves only: path length 0)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key, now = _key(), _now()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca_key, ca_cert, common_name: str, hosts: list[str], days: int, client: bool = False,
          organization: str | None = None):
    """A leaf key and certificate signed by the CA. ``client``: also good for TLS client
    authentication (a Zenoh peer dials and is dialled, and mutual TLS checks both ends)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key, now = _key(), _now()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    cert = (x509.CertificateBuilder().subject_name(x509.Name(attrs))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(_alt_names(hosts), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def write_cert(cert, path: Path) -> Path:
    from cryptography.hazmat.primitives.serialization import Encoding

    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return path


def make_certificates(out: str | Path, hosts: list[str] | None = None, days: int = 365,
                      name: str = "edgefpga federation") -> dict[str, Path]:
    """Write ``ca.crt`` (give it to every site), ``server.pem`` and ``server.key`` (the
    SuperLink's) into ``out``. ``hosts`` are the names and addresses the sites dial."""
    hosts = hosts or ["127.0.0.1", "localhost"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca = new_ca(name, days)
    server_key, server = issue(ca_key, ca, hosts[0], hosts, days)
    paths = {"ca": write_cert(ca, out / CA_CERT), "cert": write_cert(server, out / SERVER_CERT),
             "key": out / SERVER_KEY}
    _write_key(server_key, paths["key"])
    return paths
