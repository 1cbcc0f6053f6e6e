"""A site's trust for the edge-cloud link: one site CA, a certificate per identity (the cloud
service, each cell), mutual TLS on Zenoh, and answers signed by the service that gave them.

Why: escalated images are the plant's data and the cloud's answers become training labels. Over
plain TCP anyone on the plant network can read the images, query the cloud model or answer in
its place (and so steer the next model). With the site's certificates (``edgefpga fleet certs``):

- the link is Zenoh ``tls/`` with ``enable_mtls``: a cell refuses a service whose certificate
  the site CA did not sign, the service refuses a peer without such a certificate (the TLS
  handshake fails; no query, no reply crosses);
- the service signs every answer with its certificate's key and sends the certificate along, so
  the edge can record *who* labelled a sample (the certificate's subject) even through Zenoh
  routers, and ``edgefpga retrain`` learns only from the identities the site lists
  (``site.json``'s ``labelers``). A cell's certificate is from the same CA but is not a labeller:
  a cell that answers escalations in the cloud's place is recorded under its own subject.

The site folder (``edgefpga fleet certs --out site/``)::

    ca.crt                    the site CA: every identity gets it
    ca.key                    the CA's key: stays on the machine that issues (adding a cell reuses it)
    <identity>.crt / .key     one pair per identity: the service's goes to the server, a cell's to that cell
    site.json                 {"site", "service", "hosts", "identities": {name: subject}, "labelers": [subject]}

Plain ``tcp/`` (or any other unencrypted locator) is accepted on loopback only, or with
``insecure=True`` (``--insecure``), which prints a warning. The certificates come from the
federation's helper (``fleet/federated/certs.py``): one way to make a certificate.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from edgefpga.fleet.federated.certs import CA_CERT, _write_key, issue, new_ca, write_cert

SITE_FILE, CA_KEY = "site.json", "ca.key"
DEFAULT_SERVICE = "edgefpga-cloud"
SECURE_PROTOCOLS = ("tls", "quic")  # Zenoh link protocols that encrypt and authenticate
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class TrustError(ValueError):
    """A site folder, certificate, endpoint or signed answer that cannot be trusted; the message
    names it and the reason."""


@dataclass(frozen=True)
class Credentials:
    """What one identity needs on the link: the site CA, its own certificate and key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def of(cls, site: str | Path, identity: str) -> "Credentials":
        """``identity``'s files in a site folder; a missing one is named."""
        site = Path(site)
        creds = cls(site / CA_CERT, site / f"{identity}.crt", site / f"{identity}.key")
        for path in (creds.ca, creds.cert, creds.key):
            if not path.is_file():
                raise TrustError(f"{path}: missing; make the site's certificates with `edgefpga fleet certs --out "
                                 f"{site}` (identity {identity!r})")
        return creds

    @property
    def subject(self) -> str:
        return subject_of(self.cert.read_bytes())

    def zenoh_tls(self) -> dict:
        """``transport/link/tls`` for zenoh 1.x: this certificate on both sides of a link (a peer
        listens and dials), the site CA as the only root, and mutual authentication."""
        return {"root_ca_certificate": str(self.ca), "enable_mtls": True, "verify_name_on_connect": True,
                "listen_certificate": str(self.cert), "listen_private_key": str(self.key),
                "connect_certificate": str(self.cert), "connect_private_key": str(self.key)}


def check_name(name: str, what: str) -> str:
    if not NAME.match(name or ""):
        raise TrustError(f"{what} {name!r}: use letters, digits, '_', '.', '-' (it names the certificate's files)")
    return name


def _load_ca(out: Path, site: str, days: int):
    """The site CA in ``out`` if there is one (issuing more identities keeps every old one valid), else a new one."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if (out / CA_CERT).is_file() and (out / CA_KEY).is_file():
        return load_pem_private_key((out / CA_KEY).read_bytes(), None), x509.load_pem_x509_certificate(
            (out / CA_CERT).read_bytes())
    if (out / CA_CERT).exists():
        raise TrustError(f"{out / CA_CERT}: a CA certificate without its key ({CA_KEY}): cannot issue more identities")
    key, cert = new_ca(site, days)
    write_cert(cert, out / CA_CERT)
    _write_key(key, out / CA_KEY)
    return key, cert


def make_site(out: str | Path, cells: list[str], service: str = DEFAULT_SERVICE, hosts: list[str] | None = None,
              site: str = "edgefpga site", days: int = 365) -> dict:
    """Write (or extend) a site folder: the CA, the service's certificate for ``hosts`` (the
    names and addresses cells dial), one certificate per cell. Identities already there are kept.
    Returns site.json's content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hosts = hosts or ["127.0.0.1", "localhost"]
    old = read_site(out) if (out / SITE_FILE).is_file() else {}
    site = old.get("site", site)  # a site keeps its name: every subject's O= is the same
    ca_key, ca = _load_ca(out, site, days)
    identities = dict(old.get("identities", {}))
    for name, names in [(service, hosts)] + [(cell, [cell]) for cell in cells]:
        if check_name(name, "identity") in identities and (out / f"{name}.crt").is_file():
            continue
        key, cert = issue(ca_key, ca, name, names, days, client=True, organization=site)
        write_cert(cert, out / f"{name}.crt")
        _write_key(key, out / f"{name}.key")
        identities[name] = subject_of(cert)
    info = {"site": site, "service": old.get("service", service),
            "hosts": old.get("hosts", hosts), "identities": identities,
            "labelers": old.get("labelers", [identities[service]])}
    (out / SITE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def read_site(site: str | Path) -> dict:
    """site.json of a site folder, checked for what retrain and the link read."""
    path = Path(site) / SITE_FILE
    try:
        info = json.loads(path.read_text())
    except OSError as exc:
        raise TrustError(f"{path}: cannot read the site file ({exc.strerror}); make it with `edgefpga fleet certs`")
    except ValueError as exc:
        raise TrustError(f"{path}: not JSON: {exc}")
    if not isinstance(info.get("labelers"), list) or not isinstance(info.get("identities"), dict):
        raise TrustError(f"{path}: needs 'identities' (an object) and 'labelers' (a list of certificate subjects)")
    return info


def subject_of(cert) -> str:
    """A certificate's subject as RFC 4514 text (``CN=edgefpga-cloud,O=...``): the identity a label records."""
    from cryptography import x509

    if isinstance(cert, bytes):
        cert = x509.load_pem_x509_certificate(cert)
    return cert.subject.rfc4514_string()


# ---- endpoints ---------------------------------------------------------------------------------

def is_loopback(endpoint: str) -> bool:
    """``tcp/127.0.0.1:7447``, ``tcp/[::1]:7447``, ``tcp/localhost:7447``: the link never leaves the machine."""
    address = endpoint.split("/", 1)[-1].split("#", 1)[0].split("?", 1)[0]
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoints(endpoints: list[str], insecure: bool = False, warn=None) -> list[str]:
    """Refuse an unencrypted endpoint off loopback unless ``insecure`` (then warn once per endpoint)."""
    warn = warn or (lambda text: print(text, file=sys.stderr, flush=True))
    for endpoint in endpoints:
        protocol = endpoint.split("/", 1)[0]
        if protocol in SECURE_PROTOCOLS or is_loopback(endpoint):
            continue
        if not insecure:
            raise TrustError(f"endpoint {endpoint}: {protocol}/ is not encrypted and not on loopback: use tls/ "
                             "with the site's certificates (edgefpga fleet certs), or --insecure to send images "
                             "in the clear")
        warn(f"WARNING: endpoint {endpoint} is plain {protocol}/ (--insecure): images and labels cross the "
             "network unencrypted and anyone on it can answer in the cloud's place")
    return list(endpoints)


# ---- signed answers ----------------------------------------------------------------------------

def _message(body: dict) -> bytes:
    """The signed bytes: the answer's fields except the signature, canonical JSON (floats round-trip)."""
    return json.dumps({k: v for k, v in body.items() if k != "signature"}, sort_keys=True,
                      separators=(",", ":")).encode()


class Signer:
    """The service's side: its certificate and key, to sign each answer."""

    def __init__(self, creds: Credentials):
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        self.certificate = creds.cert.read_text()
        self.subject = subject_of(creds.cert.read_bytes())
        self._key = load_pem_private_key(creds.key.read_bytes(), None)

    def sign(self, body: dict) -> dict:
        """``body`` plus ``service`` (the subject), ``certificate`` and ``signature`` (ECDSA-SHA256, base64)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        body = body | {"service": self.subject, "certificate": self.certificate}
        signature = self._key.sign(_message(body), ec.ECDSA(hashes.SHA256()))
        return body | {"signature": base64.b64encode(signature).decode()}


@lru_cache(maxsize=64)
def _verified_certificate(ca_pem: bytes, cert_pem: str):
    """The certificate, once checked to be signed by the CA and valid now (cached: each answer carries it)."""
    from datetime import datetime, timezone

    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    ca = x509.load_pem_x509_certificate(ca_pem)
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as exc:  # another issuer, a bad signature, another key type
        raise TrustError(f"the answer's certificate {subject_of(cert)} is not signed by the site CA "
                         f"({type(exc).__name__})") from exc
    now = datetime.now(timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise TrustError(f"the answer's certificate {subject_of(cert)} is not valid now")
    return cert


def verify_answer(body: dict, ca: Path) -> str:
    """The subject that signed ``body``; TrustError when unsigned, not from the site CA, or altered."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    if not all(isinstance(body.get(k), str) for k in ("certificate", "signature", "service")):
        raise TrustError("an unsigned answer (no certificate, signature or service)")
    cert = _verified_certificate(Path(ca).read_bytes(), body["certificate"])
    try:
        cert.public_key().verify(base64.b64decode(body["signature"]), _message(body), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError) as exc:
        raise TrustError(f"the answer's signature does not match {subject_of(cert)}'s certificate") from exc
    if body["service"] != subject_of(cert):
        raise TrustError(f"the answer claims {body['service']!r} but is signed by {subject_of(cert)!r}")
    return body["service"]
