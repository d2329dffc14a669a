"""The saga's admission rules and the webhook server's certificate (approval admission: test_approval_admission)."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from steadfast.api.kinds import REQUESTED_BY
from steadfast.identity import User
from steadfast.webhooks import check_saga, make_certificate, saga_stamps

OPERATOR = "system:serviceaccount:steadfast:operator"
DAVE = User("dave", frozenset({"sre"}))
MALLORY = User("mallory")


def test_saga_creator_is_stamped_and_kept() -> None:
    assert saga_stamps("CREATE", DAVE) == {REQUESTED_BY: "dave"}
    assert saga_stamps("UPDATE", DAVE) == {}
    created = {"metadata": {"annotations": {REQUESTED_BY: "dave"}}}
    assert check_saga("CREATE", DAVE, None, created) is None
    assert "authenticated creator 'mallory'" in (check_saga("CREATE", MALLORY, None, created) or "")
    changed = {"metadata": {"annotations": {REQUESTED_BY: "mallory"}}}
    assert check_saga("UPDATE", MALLORY, created, changed) is not None
    assert check_saga("UPDATE", User(OPERATOR), created, created) is None


def test_certificate_serves_loopback_and_chains_to_its_ca(tmp_path: Path) -> None:
    cert_path, key_path, ca_path = make_certificate(tmp_path, ["127.0.0.1"])
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    ca = x509.load_pem_x509_certificate(Path(ca_path).read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    cert.verify_directly_issued_by(ca)
    assert oct(Path(key_path).stat().st_mode & 0o777) == "0o600"
