"""Webhook CA and serving certificate: issued, renewed before expiry, rotated with an overlap."""

from __future__ import annotations

import datetime
import ssl
import threading

import pytest
from cryptography import x509

from controller.certs import (
    CA_CERT,
    CA_PREVIOUS,
    TLS_CERT,
    TLS_KEY,
    ca_bundle,
    issue_ca,
    plan_tls,
    service_hosts,
)

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)
HOSTS = [*service_hosts("trustgate-webhook", "trustgate-system"), "127.0.0.1"]


def _fresh() -> dict[str, bytes]:
    plan = plan_tls({}, HOSTS, NOW)
    assert plan is not None
    return plan.data


def _sans(data: dict[str, bytes]) -> set[str]:
    certificate = x509.load_pem_x509_certificate(data[TLS_CERT])
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name.value) for name in names}


def test_fresh_material_is_a_working_tls_pair() -> None:
    data = _fresh()
    assert _sans(data) == set(HOSTS)
    assert "trustgate-webhook.trustgate-system.svc" in _sans(data)
    serving = x509.load_pem_x509_certificate(data[TLS_CERT])
    serving.verify_directly_issued_by(x509.load_pem_x509_certificate(data[CA_CERT]))
    # A real TLS client that trusts only caBundle accepts the server for 127.0.0.1.
    _handshake(data, ca_bundle(data, NOW))


def _handshake(data: dict[str, bytes], trusted: bytes) -> None:
    import socket
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as directory:
        cert, key = Path(directory, "tls.crt"), Path(directory, "tls.key")
        cert.write_bytes(data[TLS_CERT])
        key.write_bytes(data[TLS_KEY])
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(cert, key)
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]

        def serve() -> None:
            connection, _ = listener.accept()
            try:
                with server_context.wrap_socket(connection, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve)
        thread.start()
        client_context = ssl.create_default_context(cadata=trusted.decode())
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                client_context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"x")
        thread.join()
        listener.close()


def test_nothing_changes_while_certificates_are_fresh() -> None:
    data = _fresh()
    assert plan_tls(data, HOSTS, NOW + 10 * DAY) is None


def test_serving_certificate_is_renewed_30_days_before_expiry() -> None:
    data = _fresh()
    plan = plan_tls(data, HOSTS, NOW + 61 * DAY)
    assert plan is not None and "renewed the serving certificate" in plan.reason
    assert plan.data[CA_CERT] == data[CA_CERT]
    assert plan.data[TLS_CERT] != data[TLS_CERT]


def test_new_host_names_reissue_the_serving_certificate() -> None:
    plan = plan_tls(_fresh(), [*HOSTS, "webhook.example"], NOW)
    assert plan is not None and "webhook.example" in _sans(plan.data)


def test_serving_certificate_from_another_ca_is_replaced() -> None:
    data = _fresh()
    data[CA_CERT], _ = issue_ca(NOW)  # e.g. someone replaced the CA certificate only
    plan = plan_tls(data, HOSTS, NOW)
    assert plan is not None and "from the current CA" in plan.reason


def test_ca_rotation_keeps_the_previous_ca_trusted_until_it_expires() -> None:
    data = _fresh()
    rotated = plan_tls(data, HOSTS, NOW + 280 * DAY)
    assert rotated is not None and "rotated the webhook CA" in rotated.reason
    assert rotated.data[CA_PREVIOUS] == data[CA_CERT]
    bundle = ca_bundle(rotated.data, NOW + 280 * DAY)
    assert data[CA_CERT].strip() in bundle and rotated.data[CA_CERT].strip() in bundle
    _handshake(data, bundle)  # the old serving certificate still works during the overlap
    x509.load_pem_x509_certificate(rotated.data[TLS_CERT]).verify_directly_issued_by(
        x509.load_pem_x509_certificate(rotated.data[CA_CERT]))
    after = plan_tls(rotated.data, HOSTS, NOW + 370 * DAY)
    assert after is not None and CA_PREVIOUS not in after.data
    assert data[CA_CERT].strip() not in ca_bundle(rotated.data, NOW + 370 * DAY)


def test_untrusted_ca_fails_the_handshake() -> None:
    other_ca, _ = issue_ca(NOW)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(_fresh(), other_ca)
