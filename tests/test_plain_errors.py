"""A failed request is stored in plain words, the HTTP library's own text after them.

Every case is a real socket on 127.0.0.1 that fails the way a receiver can.
"""

import datetime
import ipaddress
import pickle
import socket
import ssl
import struct
import time

import pytest

from djwebhooks import send_event, transport
from djwebhooks.exceptions import DeliveryConnectionError, DeliveryTimeout
from djwebhooks.queue import MAX_ERROR_LENGTH
from djwebhooks.ssrf import TargetURLRefused, URLPolicy, check_address
from tests.helpers import by_mode
from tests.receiver import RawReceiver, read_request, unanswered_port

pytestmark = pytest.mark.django_db(transaction=True)


def stored_error(make_target, user, url):
    """Send one event to ``url`` and return its attempt's stored error, split in two."""
    make_target(target_url=url)
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    [attempt] = delivery.attempts.all()
    assert attempt.response_status is None
    plain, _, details = attempt.error.partition("\n\nDetails: ")
    return plain, details


def test_connection_refused_names_the_host_and_port(make_target, user, closed_port_url):
    port = closed_port_url.split(":")[2].split("/")[0]
    plain, details = stored_error(make_target, user, closed_port_url)
    assert plain == f"Connection refused by 127.0.0.1:{port}"
    assert details.startswith(by_mode(threads="ConnectionError: ",
                                      async_="ConnectionRefusedError: "))
    # The client's words are kept, after ours.
    for words in by_mode(threads=("Max retries exceeded", "Connection refused"),
                         async_=("Connect call failed",)):
        assert words in details


def test_a_receiver_that_never_answers_times_out_after_the_read_timeout(
        settings, make_target, user):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "READ_TIMEOUT": 0.4}
    with RawReceiver(lambda connection: time.sleep(3)) as silent:
        plain, details = stored_error(make_target, user, f"http://127.0.0.1:{silent.port}/")
    assert plain == "Timed out after 0.4 s waiting for the response"
    assert details.startswith(by_mode(threads="ReadTimeout: ", async_="TimeoutError: "))


def test_a_body_that_stops_coming_times_out_reading_the_response(settings, make_target, user):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "READ_TIMEOUT": 0.4}

    def half(connection):
        read_request(connection)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        time.sleep(3)

    with RawReceiver(half) as receiver:
        plain, _ = stored_error(make_target, user, f"http://127.0.0.1:{receiver.port}/")
    assert plain == "Timed out after 0.4 s reading the response"


def test_the_total_deadline_is_the_one_named_when_it_applies(settings, make_target, user):
    settings.DJWEBHOOKS = {**settings.DJWEBHOOKS, "READ_TIMEOUT": 5, "TOTAL_TIMEOUT": 0.5}
    with RawReceiver(lambda connection: time.sleep(3)) as silent:
        plain, details = stored_error(make_target, user, f"http://127.0.0.1:{silent.port}/")
    assert plain == "The request took longer than its total deadline (0.5 s)."
    assert details == ""


def test_a_connect_timeout_names_its_seconds_and_the_address():
    with unanswered_port() as port, pytest.raises(DeliveryTimeout) as raised:
        post(f"http://127.0.0.1:{port}/", timeout=(0.3, 5))
    assert str(raised.value) == f"Timed out after 0.3 s connecting to 127.0.0.1:{port}"
    assert raised.value.details.startswith("ConnectTimeout: ")


def test_a_receiver_that_closes_at_once(make_target, user):
    def close(connection):
        read_request(connection)
        connection.close()

    with RawReceiver(close) as receiver:
        plain, details = stored_error(make_target, user, f"http://127.0.0.1:{receiver.port}/")
    assert plain == "The receiver closed the connection before answering"
    assert by_mode(threads="RemoteDisconnected",
                   async_="EOF before any byte of the answer") in details


def test_a_receiver_that_resets_the_connection(make_target, user):
    def reset(connection):
        read_request(connection)
        # No lingering: closing sends a TCP reset instead of an orderly end.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()

    with RawReceiver(reset) as receiver:
        plain, details = stored_error(make_target, user, f"http://127.0.0.1:{receiver.port}/")
    assert plain == "Connection reset by the receiver"
    assert by_mode(threads="ConnectionResetError", async_="Connection reset by peer") in details


def test_a_receiver_that_closes_in_the_middle_of_its_response(make_target, user):
    def cut(connection):
        read_request(connection)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        connection.close()

    with RawReceiver(cut) as receiver:
        plain, _ = stored_error(make_target, user, f"http://127.0.0.1:{receiver.port}/")
    assert plain == "The receiver closed the connection in the middle of its response"


def test_an_answer_that_is_not_http(make_target, user):
    def garbage(connection):
        read_request(connection)
        connection.sendall(b"garbage\r\n\r\n")
        connection.close()

    with RawReceiver(garbage) as receiver:
        plain, details = stored_error(make_target, user, f"http://127.0.0.1:{receiver.port}/")
    assert plain == "The receiver's answer is not valid HTTP"
    assert by_mode(threads="BadStatusLine", async_="not a status line") in details


def test_a_name_that_does_not_resolve(make_target, user):
    # .invalid never resolves (RFC 6761), and fails without asking the network.
    plain, details = stored_error(make_target, user, "http://no-such-host.invalid/hook/")
    assert plain == "DNS lookup failed for no-such-host.invalid"
    assert by_mode(threads="NameResolutionError", async_="gaierror") in details


def test_https_to_a_plain_tcp_listener(make_target, user):
    def plain_http(connection):
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        time.sleep(0.5)

    with RawReceiver(plain_http) as receiver:
        port = receiver.port
        plain, details = stored_error(make_target, user, f"https://127.0.0.1:{port}/")
    assert plain == (f"TLS handshake with 127.0.0.1:{port} failed: wrong version "
                     "number; does the receiver speak HTTPS on that port?")
    assert "SSLError" in details


def test_a_self_signed_certificate(make_target, user, tmp_path):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed_certificate(tmp_path))

    def tls(connection):
        with context.wrap_socket(connection, server_side=True) as wrapped:
            read_request(wrapped)

    with RawReceiver(tls) as receiver:
        plain, details = stored_error(make_target, user,
                                      f"https://localhost:{receiver.port}/hook/")
    assert plain == "TLS certificate not valid for localhost: self-signed certificate"
    assert "CERTIFICATE_VERIFY_FAILED" in details


@pytest.mark.skipif(by_mode(threads=False, async_=True),
                    reason="the async client's details name neither the host nor the URL, so the "
                    "error stays under the cap")
def test_the_plain_sentence_survives_the_length_cap(make_target, user):
    long_name = ".".join(["a" * 60] * 4) + ".invalid"
    make_target(target_url=f"http://{long_name}/" + "p" * 1700)
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    error = delivery.attempts.get().error
    assert len(error) == MAX_ERROR_LENGTH
    assert error.startswith(f"DNS lookup failed for {long_name}\n\nDetails: ")


def test_the_details_survive_pickling(closed_port_url):
    with pytest.raises(DeliveryConnectionError) as raised:
        post(closed_port_url)
    copy = pickle.loads(pickle.dumps(raised.value))
    assert (str(copy), copy.details) == (str(raised.value), raised.value.details)
    assert copy.describe() == raised.value.describe()


def post(url, timeout=(2, 2)):
    policy = URLPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    return transport.post(url, b"{}", {"Content-Type": "application/json"}, timeout=timeout,
                          body_limit=10, policy=policy, session=transport.new_session())


def self_signed_certificate(directory):
    """A throwaway certificate and key for localhost; their file paths."""
    x509 = pytest.importorskip(
        "cryptography.x509", reason="the 'cryptography' package makes the test certificate")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.mark.parametrize("address", [
    "169.254.169.254", "169.254.0.1", "fd00:ec2::254", "fe80::1", "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",
])
def test_link_local_and_metadata_refusals_never_suggest_allowed_networks(address):
    with pytest.raises(TargetURLRefused) as raised:
        check_address(address, URLPolicy())
    message = str(raised.value)
    # (As Python spells it: older versions write an IPv4-mapped address in hex.)
    assert message.startswith(
        f"{ipaddress.ip_address(address)} is a link-local or cloud metadata address")
    assert "it is never a webhook target" in message
    assert "ALLOWED_NETWORKS" not in message


def test_other_private_refusals_still_say_how_to_allow_them():
    with pytest.raises(TargetURLRefused) as raised:
        check_address("10.0.0.5", URLPolicy())
    assert str(raised.value) == ("10.0.0.5 is not a public address; add its network to "
                                 "DJWEBHOOKS['ALLOWED_NETWORKS'] to allow it.")


def test_an_attempt_at_the_metadata_address_is_recorded_without_the_hint(make_target, user):
    make_target(target_url="http://169.254.169.254/latest/meta-data/")
    [delivery] = send_event("project.update", {"n": 1}, owner=user)
    attempt = delivery.attempts.get()
    assert attempt.notification == "Refused"
    assert attempt.error.startswith(
        "169.254.169.254 is a link-local or cloud metadata address")
    assert "ALLOWED_NETWORKS" not in attempt.error
