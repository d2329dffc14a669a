"""Certificates and keys: the operator's admission webhooks and the local control plane.

Made with `cryptography` rather than openssl or kopf's certbuilder (whose OpenSSL detection fails on
some machines). One CA signs a serving certificate; for the local control plane a service-account key
pair also lets the API server issue tokens, as a real cluster does.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_public: Path
    sa_private: Path
    # etcd's own CA (as kubeadm does it): a certificate the cluster CA signs never opens etcd.
    etcd_ca: Path
    etcd_cert: Path  # etcd's serving and peer certificate
    etcd_key: Path
    etcd_client_cert: Path  # the API server's client certificate for etcd
    etcd_client_key: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_serving_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    hosts: list[str],
    usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.SERVER_AUTH,),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for loopback names (server by default; `usages` adds client auth, e.g. for etcd peers).

    Also used for the operator's admission webhooks.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def serving_files(directory: Path, hosts: list[str]) -> tuple[str, str, str]:
    """A fresh CA and a serving certificate for `hosts` (plus localhost), as PEM files: (cert, key, ca)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = make_ca("steadfast-webhook-ca")
    cert, key = make_serving_cert(ca_cert, ca_key, hosts[0], list(dict.fromkeys([*hosts, "localhost"])))
    paths = {name: directory / f"{name}.pem" for name in ("cert", "key", "ca")}
    write_pem(paths["cert"], cert)
    write_pem(paths["ca"], ca_cert)
    _write_key(paths["key"], key)
    return str(paths["cert"]), str(paths["key"]), str(paths["ca"])


def write_pem(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def generate(directory: Path) -> Pki:
    """Write a fresh CA, API server certificate and service-account key pair into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_public=directory / "sa.pub",
        sa_private=directory / "sa.key",
        etcd_ca=directory / "etcd-ca.crt",
        etcd_cert=directory / "etcd.crt",
        etcd_key=directory / "etcd.key",
        etcd_client_cert=directory / "apiserver-etcd-client.crt",
        etcd_client_key=directory / "apiserver-etcd-client.key",
    )
    ca_cert, ca_key = make_ca("steadfast-dev-ca")
    write_pem(pki.ca_cert, ca_cert)
    _write_key(pki.ca_key, ca_key)
    hosts = ["127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    cert, key = make_serving_cert(ca_cert, ca_key, "kube-apiserver", hosts)
    write_pem(pki.serving_cert, cert)
    _write_key(pki.serving_key, key)
    etcd_ca, etcd_ca_key = make_ca("steadfast-dev-etcd-ca")
    write_pem(pki.etcd_ca, etcd_ca)
    both = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
    cert, key = make_serving_cert(etcd_ca, etcd_ca_key, "etcd", ["127.0.0.1", "localhost"], both)
    write_pem(pki.etcd_cert, cert)
    _write_key(pki.etcd_key, key)
    cert, key = make_serving_cert(etcd_ca, etcd_ca_key, "kube-apiserver-etcd-client", ["kube-apiserver"], (both[1],))
    write_pem(pki.etcd_client_cert, cert)
    _write_key(pki.etcd_client_key, key)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_private, sa_key)
    pki.sa_public.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pki
