"""The async client's reading of answers, hostile and unusual ones included, and its reuse
of connections.

Every receiver is a raw socket on 127.0.0.1 that writes the bytes given; the client is the
process's shared ``aio.Client``, called as the async senders call it.
"""

import gzip
import socket
import ssl
import struct
import threading
import time
import zlib

import pytest

from djwebhooks import aio, transport
from djwebhooks.exceptions import (
    DeliveryConnectionError,
    DeliveryError,
    DeliveryRefused,
    DeliveryTimeout,
)
from tests.helpers import post_async
from tests.receiver import RawReceiver, read_request, unanswered_port
from tests.test_aio import aio_policy

LOOPBACK = aio_policy()
NOT_HTTP = "The receiver's answer is not valid HTTP"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
SECOND = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond"
STALE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale"
CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
TOO_MANY_INFORMATIONAL = (f"The receiver sent more than {transport.MAX_INFORMATIONAL_RESPONSES} "
                          "informational (1xx) responses without a final one.")


@pytest.fixture(autouse=True)
def no_kept_connections():
    """Each test starts and ends with no connection kept by the shared client."""
    loop = aio.event_loop()
    loop.submit(loop.client.close()).result(5)
    yield
    loop.submit(loop.client.close()).result(5)


def post(port, *, path="/hook/", body=b"{}", headers=None, timeout=(2, 2), body_limit=100,
         total_timeout=5, policy=LOOPBACK, host="127.0.0.1", scheme="http"):
    return post_async(f"{scheme}://{host}:{port}{path}", body, headers or {},
                      timeout=timeout, body_limit=body_limit, policy=policy,
                      total_timeout=total_timeout)


def raw_receiver(handle):
    """A ``RawReceiver`` that stops within 10 ms of the end of its block."""
    raw = RawReceiver(handle)
    raw.listener.settimeout(0.01)
    return raw


def answering(*answers):
    """A receiver that answers the requests it reads, on whichever connection, with
    ``answers`` in turn (bytes to write, or a function of the connection); a connection
    stays open for its next request."""
    script = list(answers)
    lock = threading.Lock()

    def handle(connection):
        while read_request(connection):
            with lock:
                if not script:
                    return
                answer = script.pop(0)
            if callable(answer):
                answer(connection)
            else:
                connection.sendall(answer)

    return raw_receiver(handle)


def keeping(received):
    """A receiver that answers every request OK, on one connection or many, and appends
    each request it reads (``read_request``'s bytes) to ``received``."""
    def handle(connection):
        while request := read_request(connection):
            received.append(request)
            connection.sendall(OK)

    return raw_receiver(handle)


def then_close(*parts, pause=0.0):
    """An answer written in ``parts`` (``pause`` seconds apart), then the connection
    closed."""
    def answer(connection):
        for index, part in enumerate(parts):
            if index and pause:
                time.sleep(pause)
            connection.sendall(part)
        connection.close()

    return answer


def then_reset(data=b""):
    """An answer that starts with ``data``, then a TCP reset."""
    def answer(connection):
        if data:
            connection.sendall(data)
            time.sleep(0.05)
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()

    return answer


def then_stall(data, seconds=3.0):
    """An answer that starts with ``data``, then nothing for ``seconds``."""
    def answer(connection):
        if data:
            connection.sendall(data)
        time.sleep(seconds)

    return answer


def endless(start, repeated, every=0.0):
    """``(answer, finished)``: an answer that starts with ``start`` and repeats ``repeated``
    until the client hangs up (every ``every`` seconds); ``finished`` is set once it has
    stopped writing."""
    finished = threading.Event()

    def answer(connection):
        try:
            connection.sendall(start)
            while True:
                connection.sendall(repeated)
                if every:
                    time.sleep(every)
        finally:
            finished.set()

    return answer, finished


def one_byte_at_a_time(data):
    """An answer written a byte at a time, each in a TCP segment of its own."""
    def answer(connection):
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index in range(len(data)):
            connection.sendall(data[index:index + 1])
            time.sleep(0.001)

    return answer


def chunked(data, size):
    """``data`` as a chunked body of chunks of ``size`` bytes."""
    chunks = [data[index:index + size] for index in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"


def answer_of(answer, **options):
    """The ``Response`` to one request answered with ``answer``."""
    with answering(answer) as raw:
        return post(raw.port, **options)


def error_of(answer, expected=DeliveryError, **options):
    """The error that one request answered with ``answer`` fails with."""
    with answering(answer) as raw, pytest.raises(expected) as raised:
        post(raw.port, **options)
    assert type(raised.value) is expected
    return raised.value


def timed(function, *args, **kwargs):
    """``(result or exception, seconds taken)``."""
    started = time.monotonic()
    try:
        result = function(*args, **kwargs)
    except DeliveryError as exc:
        result = exc
    return result, time.monotonic() - started


# Framing
# -------

def test_a_content_length_body_is_returned_whole_with_its_status_and_fields():
    response = answer_of(b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\n"
                         b"Retry-After: 7\r\nX-Other: x\r\nContent-Length: 11\r\n\r\n"
                         b"hello world")
    assert response == transport.Response(status=201, reason="Created",
                                          content_type="text/plain", body=b"hello world",
                                          retry_after="7")


@pytest.mark.parametrize("limit, expected", [
    (100, b"hello world"), (11, b"hello world"), (5, b"hello"), (1, b"h"),
])
def test_a_content_length_body_is_returned_up_to_the_limit(limit, expected):
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world"
    assert answer_of(answer, body_limit=limit).body == expected


def test_the_names_of_fields_are_read_in_any_case_and_the_first_of_a_repeated_one_counts():
    response = answer_of(b"HTTP/1.1 503 Busy\r\ncontent-type: text/a\r\nCONTENT-TYPE: text/b"
                         b"\r\nretry-after: 1\r\nRetry-After: 2\r\ncontent-length:2\r\n\r\nok")
    assert (response.content_type, response.retry_after, response.body) == (
        "text/a", "1", b"ok")


@pytest.mark.parametrize("coding", [b"chunked", b"Chunked", b"CHUNKED"])
def test_a_chunked_body_with_extensions_and_trailers_is_decoded(coding):
    answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\n\r\n"
              b"5;a=b\r\nhello\r\n2;name=\"quoted;value\";c\r\n, \r\nA\r\n0123456789\r\n"
              b"0;last=yes\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n")
    assert answer_of(answer).body == b"hello, 0123456789"


def test_a_chunked_body_of_many_small_chunks_is_decoded_up_to_the_limit():
    data = bytes(range(256)) * 4
    answer = CHUNKED_HEAD + chunked(data, 7)
    assert answer_of(answer, body_limit=2000).body == data
    assert answer_of(answer, body_limit=300).body == data[:300]


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\n",
], ids=["http-1.1", "http-1.0", "identity-coding", "other-coding-and-length"])
def test_a_body_without_length_or_chunks_is_read_until_the_receiver_closes(head):
    response = answer_of(then_close(head + b"first, ", b"then ", b"the end", pause=0.05))
    assert (response.status, response.body) == (200, b"first, then the end")


@pytest.mark.parametrize("status", [204, 304])
@pytest.mark.parametrize("fields", [b"", b"Content-Length: 50\r\n",
                                    b"Transfer-Encoding: chunked\r\n"])
def test_204_and_304_have_no_body_whatever_their_fields_say(status, fields):
    answer = b"HTTP/1.1 %d Nothing\r\n%s\r\n" % (status, fields)
    response, seconds = timed(answer_of, answer)
    assert (response.status, response.reason, response.body) == (status, "Nothing", b"")
    assert seconds < 1


def test_an_http_1_0_answer_is_read_and_its_connection_not_used_again():
    with answering(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", SECOND) as raw:
        first = post(raw.port)
        second = post(raw.port)
    assert (first.status, first.reason, first.body) == (200, "OK", b"ok")
    assert second.body == b"second"
    assert len(raw.connections) == 2


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    CHUNKED_HEAD + b"2;a=b\r\nhe\r\n3\r\nllo\r\n0\r\nX-T: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello",
    b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5\nhello\n0\n\n",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
    % (len(gzip.compress(b"hello")), gzip.compress(b"hello")),
], ids=["informational", "chunked", "bare-lf", "bare-lf-chunked", "gzip"])
def test_an_answer_written_one_byte_at_a_time_reads_the_same_and_ends_cleanly(answer):
    with answering(one_byte_at_a_time(answer), SECOND) as raw:
        first = post(raw.port)
        second = post(raw.port)
    assert (first.status, first.body) == (200, b"hello")
    assert second.body == b"second"
    assert len(raw.connections) == 1


# Bounds
# ------

@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n",
    CHUNKED_HEAD + b"F4240\r\n",
    b"HTTP/1.1 200 OK\r\n\r\n",
], ids=["content-length", "chunked", "until-close"])
@pytest.mark.parametrize("limit", [0, 100])
def test_the_body_past_the_limit_is_never_waited_for(head, limit):
    response, seconds = timed(answer_of, then_stall(head + b"a" * 200), body_limit=limit)
    assert response.body == b"a" * limit
    assert seconds < 1  # the read timeout is 2 s


@pytest.mark.parametrize("encoding, compress", [
    (b"gzip", gzip.compress), (b"x-gzip", gzip.compress), (b"GZIP", gzip.compress),
    (b"deflate", zlib.compress),
])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("plain, limit", [(b"hello world", 100),
                                          (b"0123456789" * 10_000, 1000)])
def test_compressed_bodies_are_decompressed_up_to_the_limit(encoding, compress, framing,
                                                            plain, limit):
    data = compress(plain)
    if framing == "chunked":
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
        answer = head % encoding + chunked(data, 10)
    else:
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n"
        answer = head % (encoding, len(data)) + data
    assert answer_of(answer, body_limit=limit).body == plain[:limit]


@pytest.mark.parametrize("apart", [False, True], ids=["at-once", "a-byte-at-a-time"])
def test_a_deflate_body_without_its_zlib_wrapper_is_decompressed_as_by_the_threads(apart):
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    data = compressor.compress(b"hello world") + compressor.flush()
    answer = b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n"
    answer = answer % len(data) + data
    assert answer_of(one_byte_at_a_time(answer) if apart else answer).body == b"hello world"


def test_a_compression_bomb_sent_in_part_gives_its_answer_at_the_limit():
    bomb = gzip.compress(b"\x00" * 5_000_000)
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
    answer = then_stall(head % len(bomb) + bomb[:len(bomb) // 2])
    response, seconds = timed(answer_of, answer, body_limit=4096)
    assert response.body == b"\x00" * 4096
    assert seconds < 1


def test_a_body_that_is_not_the_compression_it_claims_is_an_error():
    error = error_of(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\n"
                     b"not gzip!")
    assert str(error) == "The receiver's answer could not be decompressed"


def padded_head(length):
    """An answer whose head is ``length`` bytes long (its body: "ok")."""
    start, end = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Pad: ", b"\r\n\r\n"
    return start + b"p" * (length - len(start) - len(end)) + end + b"ok"


def test_a_head_of_max_head_bytes_is_read():
    assert answer_of(padded_head(aio.MAX_HEAD_BYTES)).body == b"ok"


def test_a_head_longer_than_max_head_bytes_is_not_http():
    error = error_of(padded_head(aio.MAX_HEAD_BYTES + 1))
    assert str(error) == NOT_HTTP
    assert f"longer than {aio.MAX_HEAD_BYTES} bytes" in error.details


@pytest.mark.parametrize("start, repeated", [
    (b"HTTP/1.1 200 OK\r\n", b"X-Endless: yes\r\n"),
    (b"HTTP/1.1 200 OK\r\nX-Endless: ", b"y" * 1000),
    (b"HTTP/1.1 200 ", b"reason " * 100),
    (b"", b"\x00" * 1000),
], ids=["fields", "one-field", "status-line", "nul-bytes"])
def test_an_endless_head_is_cut_off_promptly_as_not_http(start, repeated):
    answer, finished = endless(start, repeated)
    error, seconds = timed(error_of, answer)
    assert str(error) == NOT_HTTP
    assert f"longer than {aio.MAX_HEAD_BYTES} bytes" in error.details
    assert seconds < 1
    assert finished.wait(2), "the client read on"


def many_fields(count):
    return (b"HTTP/1.1 200 OK\r\n" + b"X-Field: 1\r\n" * (count - 1)
            + b"Content-Length: 2\r\n\r\nok")


def test_max_headers_header_lines_are_read():
    assert answer_of(many_fields(aio.MAX_HEADERS)).body == b"ok"


def test_more_than_max_headers_header_lines_are_not_http():
    error = error_of(many_fields(aio.MAX_HEADERS + 1))
    assert str(error) == NOT_HTTP
    assert f"more than {aio.MAX_HEADERS} header fields" in error.details


def test_a_chunk_line_shorter_than_max_chunk_line_is_read():
    extension = b";a=" + b"b" * (aio.MAX_CHUNK_LINE - 100)
    answer = CHUNKED_HEAD + b"2" + extension + b"\r\nok\r\n0\r\n\r\n"
    assert answer_of(answer).body == b"ok"


@pytest.mark.parametrize("body", [
    b"2;a=" + b"b" * aio.MAX_CHUNK_LINE + b"\r\nok\r\n0\r\n\r\n",
    b"2\r\nok\r\n" + b"0" * (aio.MAX_CHUNK_LINE + 1) + b"\r\n\r\n",
    b"2\r\nok\r\n0\r\nX-Trailer: " + b"t" * aio.MAX_CHUNK_LINE + b"\r\n\r\n",
], ids=["extension", "size", "trailer"])
def test_a_chunk_line_longer_than_max_chunk_line_is_not_http(body):
    error = error_of(CHUNKED_HEAD + body)
    assert str(error) == NOT_HTTP
    assert f"longer than {aio.MAX_CHUNK_LINE} bytes" in error.details


@pytest.mark.parametrize("start, repeated", [
    (CHUNKED_HEAD + b"2;a=", b"b" * 1000),
    (CHUNKED_HEAD + b"2\r\nok\r\n0\r\nX-Trailer: ", b"t" * 1000),
], ids=["chunk-size", "trailer"])
def test_an_endless_chunk_line_is_cut_off_promptly_as_not_http(start, repeated):
    answer, finished = endless(start, repeated)
    error, seconds = timed(error_of, answer)
    assert str(error) == NOT_HTTP
    assert f"longer than {aio.MAX_CHUNK_LINE} bytes" in error.details
    assert seconds < 1
    assert finished.wait(2), "the client read on"


def test_more_than_max_headers_trailer_fields_are_not_http():
    body = b"2\r\nok\r\n0\r\n" + b"X-Trailer: 1\r\n" * (aio.MAX_HEADERS + 1) + b"\r\n"
    error = error_of(CHUNKED_HEAD + body)
    assert str(error) == NOT_HTTP
    assert f"more than {aio.MAX_HEADERS} trailer fields" in error.details


# Not HTTP
# --------

@pytest.mark.parametrize("status_line", [
    b"HTTP/2 200 OK", b"HTTP/2.0 200 OK", b"HTTP/1 200 OK", b"FOO", b"", b"http/1.1 200 OK",
    b"HTTP/1.1 20 OK", b"HTTP/1.1 2000 OK", b"HTTP/1.1 200OK", b"HTTP/1.1 abc OK",
    b"HTTP/1.1 -20 OK", b"ICY 200 OK", b"\x16\x03\x01\x00\xa5", b"HTTP/1.1 099 Low",
    b"HTTP/1.1 000 Zero",
], ids=["http2", "http2.0", "http1", "foo", "empty", "lower-case", "two-digits",
        "four-digits", "no-space", "letters", "negative", "icy", "tls", "status-below-100",
        "status-zero"])
def test_a_status_line_that_is_not_http_1_x_nnn_reason_is_not_http(status_line):
    error = error_of(status_line + b"\r\nContent-Length: 2\r\n\r\nok")
    assert str(error) == NOT_HTTP
    assert "not a status line" in error.details
    assert repr(status_line) in error.details


@pytest.mark.parametrize("fields", [
    b"Content-Length: abc", b"Content-Length: 5, 6", b"Content-Length: 5\r\nContent-Length: 6",
    b"Content-Length: -1", b"Content-Length: +5", b"Content-Length: 0x10",
    b"Content-Length: 1e3", b"Content-Length: 5 5", b"Content-Length: \xb2",
    b"Content-Length: ",
], ids=["letters", "two-in-one", "two-fields", "negative", "plus", "hex", "exponent",
        "space", "superscript", "empty"])
def test_a_content_length_that_is_not_one_number_is_not_http(fields):
    error = error_of(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n\r\nhello!")
    assert str(error) == NOT_HTTP
    assert "Content-Length" in error.details


@pytest.mark.parametrize("fields", [b"Content-Length: 2, 2",
                                    b"Content-Length: 2\r\nContent-Length: 2"])
def test_the_same_content_length_given_twice_is_one_length(fields):
    assert answer_of(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n\r\nok").body == b"ok"


@pytest.mark.parametrize("size", [b"xyz", b"-5", b"0x5", b"", b";a=b", b"5 5", b"5g",
                                  b"1" * 17])
def test_a_chunk_size_that_is_not_hex_is_not_http(size):
    error = error_of(CHUNKED_HEAD + size + b"\r\nhello\r\n0\r\n\r\n")
    assert str(error) == NOT_HTTP
    assert "not a chunk size" in error.details


def test_a_chunk_longer_than_its_size_is_not_http():
    error = error_of(CHUNKED_HEAD + b"3\r\nhello\r\n0\r\n\r\n")
    assert str(error) == NOT_HTTP
    assert "a chunk is longer than its size" in error.details


# Lenient where http.client is
# ----------------------------

@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 5\n\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\nContent-Length: 5\r\n\nhello",
    b"HTTP/1.1 200 OK\nContent-Type: text/plain\nTransfer-Encoding: chunked\n\n"
    b"2\nhe\n3;x=y\r\nllo\n0\nX-T: 1\n\n",
], ids=["content-length", "mixed", "chunked"])
def test_lines_ending_in_a_bare_lf_are_read(answer):
    assert answer_of(answer) == transport.Response(status=200, reason="OK",
                                                   content_type="text/plain", body=b"hello")


@pytest.mark.parametrize("answer, reason, content_type", [
    (b"HTTP/1.1 500 Bad\x00Reason\xff\r\nContent-Type: text/\x00plain\xfe\r\n"
     b"Content-Length: 2\r\n\r\nok", "Bad\x00Reason\xff", "text/\x00plain\xfe"),
    (b"HTTP/1.1 500 \xc3\xa9t\xc3\xa9\r\nContent-Type: \x00\r\nContent-Length: 2\r\n\r\nok",
     "\xc3\xa9t\xc3\xa9", "\x00"),
    (b"HTTP/1.1 500 \x00\r\nX-Bad: \xff\x00\xfe\r\nContent-Length: 2\r\n\r\nok", "\x00", ""),
], ids=["nul-and-latin-1", "utf-8-as-latin-1", "nul-only"])
def test_nul_bytes_and_invalid_utf8_in_the_head_are_returned_as_latin_1(answer, reason,
                                                                        content_type):
    response = answer_of(answer)
    assert (response.status, response.reason, response.content_type, response.body) == (
        500, reason, content_type, b"ok")


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 200", b"HTTP/1.1 200 ", b"HTTP/1.0 200"])
def test_an_answer_without_a_reason_phrase_is_read(status_line):
    response = answer_of(status_line + b"\r\nContent-Length: 2\r\n\r\nok")
    assert (response.status, response.reason, response.body) == (200, "", b"ok")


# Informational answers
# ---------------------

EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"


@pytest.mark.parametrize("informational", [
    [b"HTTP/1.1 100 Continue\r\n\r\n"],
    [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 102 Processing\r\n\r\n", EARLY_HINTS],
    [EARLY_HINTS] * transport.MAX_INFORMATIONAL_RESPONSES,
], ids=["continue", "three-kinds", "ten"])
def test_informational_answers_before_the_answer_are_skipped(informational):
    response = answer_of(b"".join(informational) + b"HTTP/1.1 202 Accepted\r\n"
                         b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
    assert (response.status, response.reason, response.content_type, response.body) == (
        202, "Accepted", "text/plain", b"hello")


def test_informational_answers_sent_apart_are_skipped():
    answer = then_close(b"HTTP/1.1 100 Continue\r\n\r\n", EARLY_HINTS, OK, pause=0.02)
    assert answer_of(answer).body == b"ok"


def test_eleven_informational_answers_are_an_error():
    error = error_of(EARLY_HINTS * (transport.MAX_INFORMATIONAL_RESPONSES + 1) + OK)
    assert str(error) == TOO_MANY_INFORMATIONAL


def test_endless_informational_answers_are_cut_off_promptly():
    answer, finished = endless(b"", EARLY_HINTS)
    error, seconds = timed(error_of, answer)
    assert str(error) == TOO_MANY_INFORMATIONAL
    assert seconds < 1
    assert finished.wait(2), "the client read on"


def test_101_is_returned_as_the_answer_without_waiting_for_more():
    answer = then_stall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\n\r\n\x81\x05hello")
    response, seconds = timed(answer_of, answer)
    assert (response.status, response.reason, response.body) == (101, "Switching Protocols",
                                                                 b"")
    assert seconds < 1


# Ends
# ----

def test_a_receiver_that_closes_before_answering():
    error = error_of(then_close(), DeliveryConnectionError)
    assert str(error) == "The receiver closed the connection before answering"


def test_a_receiver_that_closes_after_its_last_chunk_has_given_its_body():
    # As the threads read it: the trailer's empty line is all that is missing.
    response = answer_of(then_close(CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n"))
    assert (response.status, response.body) == (200, b"hello")


@pytest.mark.parametrize("status_line", [b"HTTP/1.1  200 OK", b"HTTP/1.2 200 OK"])
def test_a_status_line_the_threads_accept_is_read(status_line):
    response = answer_of(status_line + b"\r\nContent-Length: 2\r\n\r\nok")
    assert (response.status, response.reason, response.body) == (200, "OK", b"ok")


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
    CHUNKED_HEAD,
    CHUNKED_HEAD + b"5\r\nhel",
    CHUNKED_HEAD + b"5\r\nhello",
    CHUNKED_HEAD + b"5\r\nhello\r\n",
    CHUNKED_HEAD + b"5\r\nhello\r\n1",
], ids=["content-length", "content-length-empty", "chunked-empty", "in-a-chunk",
        "after-a-chunk", "between-chunks", "in-a-size"])
def test_a_receiver_that_closes_in_the_middle_of_its_response(answer):
    error = error_of(then_close(answer), DeliveryConnectionError)
    assert str(error) == "The receiver closed the connection in the middle of its response"


@pytest.mark.parametrize("data", [
    b"", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", CHUNKED_HEAD + b"5\r\nhe",
], ids=["before-answering", "content-length", "chunked"])
def test_a_receiver_that_resets_the_connection(data):
    error = error_of(then_reset(data), DeliveryConnectionError)
    assert str(error) == "Connection reset by the receiver"
    assert "ConnectionResetError" in error.details


# Timeouts
# --------

@pytest.mark.parametrize("data, read, waiting", [
    (b"", 0.5, "waiting for the response"),
    (b"HTTP/1.1 200 O", 0.3, "waiting for the response"),
    (b"HTTP/1.1 100 Continue\r\n\r\n", 0.3, "waiting for the response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", 0.5, "reading the response"),
    (CHUNKED_HEAD + b"5\r\nhel", 0.3, "reading the response"),
], ids=["nothing", "part-of-a-head", "informational", "content-length", "chunked"])
def test_silence_longer_than_the_read_timeout(data, read, waiting):
    error, seconds = timed(error_of, then_stall(data), DeliveryTimeout, timeout=(2, read))
    assert str(error) == f"Timed out after {read:g} s {waiting}"
    assert error.details == f"TimeoutError: no byte came for {read:g} s"
    assert read - 0.05 < seconds < read + 1


@pytest.mark.parametrize("start, repeated", [
    (b"HTTP/1.1 200 OK\r\nX-Slow: ", b"s"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", b"b"),
], ids=["head", "body"])
def test_a_receiver_trickling_bytes_is_cut_off_at_the_total_deadline(start, repeated):
    answer, finished = endless(start, repeated, every=0.1)
    error, seconds = timed(error_of, answer, DeliveryTimeout, timeout=(2, 0.5),
                           total_timeout=1)
    assert str(error) == "The request took longer than its total deadline (1 s)."
    assert 0.9 < seconds < 1.5
    assert finished.wait(2), "the client read on"


# Reuse of connections
# --------------------

@pytest.mark.parametrize("first", [
    OK,
    b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    CHUNKED_HEAD + b"2;a=b\r\nok\r\n0\r\nX-Trailer: 1\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n" + OK,
    b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\noops",
], ids=["content-length", "keep-alive", "empty", "chunked", "204", "304", "informational",
        "500"])
def test_a_keep_alive_receiver_s_connection_carries_the_next_request(first):
    with answering(first, SECOND, SECOND) as raw:
        post(raw.port)
        assert post(raw.port).body == b"second"
        assert post(raw.port).body == b"second"
    assert len(raw.connections) == 1


@pytest.mark.parametrize("first, limit", [
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 100),
    (b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok", 100),
    (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\n"
     b"Content-Length: 2\r\n\r\nok", 100),
    (then_close(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"a" * 200,
                b"a" * 800, pause=0.05), 100),
    (CHUNKED_HEAD + b"C8\r\n" + b"a" * 200 + b"\r\n0\r\n\r\n", 100),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n" + b"a" * 200, 0),
    (OK + STALE, 100),
    (CHUNKED_HEAD + b"2\r\nok\r\n0\r\n\r\n" + STALE, 100),
    (b"HTTP/1.1 204 No Content\r\n\r\n" + STALE, 100),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"
     b"2\r\nok\r\n0\r\n\r\n", 100),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"2\r\nok\r\n0\r\n\r\n", 100),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 100),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", 100),
    (then_close(b"HTTP/1.1 200 OK\r\n\r\nok"), 100),
], ids=["connection-close", "close-in-a-list", "close-in-a-second-field", "cut-at-the-limit",
        "chunk-cut-at-the-limit", "limit-zero", "bytes-after-the-body",
        "bytes-after-the-chunks", "bytes-after-a-204", "chunked-and-length",
        "length-and-chunked", "http-1.0", "101", "until-close"])
def test_after_an_answer_whose_end_is_not_certain_the_next_request_uses_a_new_connection(
        first, limit):
    with answering(first, SECOND) as raw:
        post(raw.port, body_limit=limit)
        second = post(raw.port)
    assert second.body == b"second"
    assert len(raw.connections) == 2


@pytest.mark.parametrize("first, error", [
    (b"FOO\r\n\r\n", DeliveryError),
    (b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok", DeliveryError),
    (CHUNKED_HEAD + b"3\r\nhello\r\n0\r\n\r\n" + STALE, DeliveryError),
    (CHUNKED_HEAD + b"zz\r\n" + STALE, DeliveryError),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!",
     DeliveryError),
    (EARLY_HINTS * 11 + OK, DeliveryError),
    (padded_head(aio.MAX_HEAD_BYTES + 1), DeliveryError),
    (then_stall(b"", 0.4), DeliveryTimeout),
    (lambda connection: (time.sleep(0.4), connection.sendall(STALE)), DeliveryTimeout),
    (then_stall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nst", 0.4), DeliveryTimeout),
], ids=["status-line", "content-length", "chunk-too-long", "chunk-size", "not-gzip",
        "informational", "long-head", "silence", "late-answer", "slow-body"])
def test_after_an_error_the_next_request_uses_a_new_connection(first, error):
    with answering(first, SECOND) as raw:
        with pytest.raises(error):
            post(raw.port, timeout=(2, 0.2))
        second = post(raw.port)
    assert second.body == b"second"
    assert len(raw.connections) == 2


def test_a_kept_connection_the_receiver_closes_is_not_used_again():
    with answering(then_close(OK), SECOND) as raw:
        assert post(raw.port).body == b"ok"
        time.sleep(0.1)
        assert post(raw.port).body == b"second"
    assert len(raw.connections) == 2


def test_bytes_a_receiver_sends_on_an_idle_connection_make_it_not_used_again():
    def answer(connection):
        connection.sendall(OK)
        time.sleep(0.05)
        connection.sendall(STALE)

    with answering(answer, SECOND) as raw:
        assert post(raw.port).body == b"ok"
        time.sleep(0.2)
        assert post(raw.port).body == b"second"
    assert len(raw.connections) == 2


@pytest.fixture(name="unanswered_port")
def unanswered_port_fixture():
    with unanswered_port() as port:
        yield port


@pytest.mark.parametrize("timeout, total, expected", [
    ((0.3, 5), 5, "Timed out after 0.3 s connecting to 127.0.0.1:{port}"),
    ((5, 5), 0.3, "The request took longer than its total deadline (0.3 s)."),
    ((None, 5), 0.3, "The request took longer than its total deadline (0.3 s)."),
], ids=["connect-timeout", "deadline-first", "no-connect-timeout"])
def test_connecting_is_bounded_by_the_shorter_of_its_timeout_and_the_deadline(
        unanswered_port, timeout, total, expected):
    (error, seconds) = timed(error_of_post, unanswered_port, timeout=timeout,
                             total_timeout=total)
    assert str(error) == expected.format(port=unanswered_port)
    assert seconds < 2


def error_of_post(port, **options):
    with pytest.raises(DeliveryTimeout) as raised:
        post(port, **options)
    return raised.value


def test_a_connection_kept_unused_for_keepalive_seconds_is_closed(monkeypatch):
    monkeypatch.setattr(aio, "KEEPALIVE_SECONDS", 0.2)
    closed = threading.Event()

    def handle(connection):
        read_request(connection)
        connection.sendall(OK)
        if not connection.recv(1):  # the client's end of the connection
            closed.set()

    with raw_receiver(handle) as raw:
        assert post(raw.port).body == b"ok"
        assert closed.wait(3)
    loop = aio.event_loop()
    assert loop.submit(_kept(loop.client)).result(5) == 0


def test_closing_the_client_closes_the_connections_it_kept():
    closed = threading.Event()

    def handle(connection):
        read_request(connection)
        connection.sendall(OK)
        if not connection.recv(1):
            closed.set()

    with raw_receiver(handle) as raw:
        assert post(raw.port).body == b"ok"
        assert not closed.wait(0.1)  # kept for the next request
        loop = aio.event_loop()
        loop.submit(loop.client.close()).result(5)
        assert closed.wait(3)


async def _kept(client):
    return sum(len(connections) for connections in client._idle.values())


def test_requests_in_turn_to_two_receivers_each_reuse_their_own_connection():
    with answering(OK, SECOND, SECOND) as one, answering(OK, SECOND, SECOND) as two:
        for _ in range(3):
            post(one.port)
            post(two.port)
    assert (len(one.connections), len(two.connections)) == (1, 1)


def test_a_connection_made_under_one_url_policy_is_not_used_under_a_stricter_one():
    received = []
    with keeping(received) as raw:
        def inward(host, port, *args, **kwargs):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", raw.port))]

        allowing = aio_policy(resolver=inward)
        refusing = aio_policy(resolver=inward, allowed=False)
        assert post(raw.port, host="inward.test", policy=allowing).body == b"ok"
        with pytest.raises(DeliveryRefused, match="127.0.0.1"):
            post(raw.port, host="inward.test", policy=refusing)
        assert post(raw.port, host="inward.test", policy=allowing).body == b"ok"
    assert len(received) == 2
    assert len(raw.connections) == 1


# TLS
# ---

@pytest.fixture
def tls_receiver(tmp_path, monkeypatch):
    """A keep-alive receiver speaking TLS with a certificate for localhost, which the
    shared client is made to trust; ``localhost`` resolves to 127.0.0.1 alone."""
    from tests.test_plain_errors import self_signed_certificate

    cert_file, key_file = self_signed_certificate(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    loop = aio.event_loop()
    monkeypatch.setattr(loop.client, "_tls", ssl.create_default_context(cafile=cert_file))

    def handle(connection):
        with server.wrap_socket(connection, server_side=True) as wrapped:
            while read_request(wrapped):
                wrapped.sendall(OK)

    with raw_receiver(handle) as raw:
        yield raw


def to_localhost(host, port, *args, **kwargs):
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]


def test_an_https_receiver_is_answered_on_one_verified_connection(tls_receiver):
    policy = aio_policy(resolver=to_localhost)
    for _ in range(2):
        response = post_async(f"https://localhost:{tls_receiver.port}/hook/", b"{}", {},
                              timeout=(2, 2), body_limit=100, policy=policy)
        assert (response.status, response.body) == (200, b"ok")
    assert len(tls_receiver.connections) == 1


def test_a_certificate_for_another_name_is_refused(tls_receiver):
    with pytest.raises(DeliveryConnectionError) as raised:
        post(tls_receiver.port, path="/hook/", host="127.0.0.1", scheme="https")
    assert str(raised.value).startswith("TLS certificate not valid for 127.0.0.1: ")


# The request on the wire
# -----------------------

def test_the_request_on_the_wire_is_the_post_its_headers_in_order_and_its_body():
    received = []
    with keeping(received) as raw:
        headers = {"Content-Type": "application/json", "webhook-id": "msg_1",
                   "User-Agent": "dj-webhooks/test", "Webhook-Signature": "v1,abc="}
        post(raw.port, path="/path?q=1", body=b'{"a": 1}', headers=headers)
        post(raw.port, path="/other/", body=b"second body", headers={"X-B": "2", "X-A": "1"})
        start = b"Host: 127.0.0.1:%d\r\nAccept-Encoding: identity\r\n" % raw.port
    assert received == [
        b"POST /path?q=1 HTTP/1.1\r\n" + start + b"Content-Type: application/json\r\n"
        b"webhook-id: msg_1\r\nUser-Agent: dj-webhooks/test\r\nWebhook-Signature: v1,abc=\r\n"
        b"Content-Length: 8\r\n\r\n{\"a\": 1}",
        b"POST /other/ HTTP/1.1\r\n" + start + b"X-B: 2\r\nX-A: 1\r\n"
        b"Content-Length: 11\r\n\r\nsecond body",
    ]
    assert len(raw.connections) == 1


@pytest.mark.parametrize("body, sent", [
    (b"", b"Content-Length: 0\r\n\r\n"),
    ("plain", b"Content-Length: 5\r\n\r\nplain"),
    ("\u00e9t\u00e9", b"Content-Length: 5\r\n\r\n\xc3\xa9t\xc3\xa9"),
    ("\u20ac 1", b"Content-Length: 5\r\n\r\n\xe2\x82\xac 1"),
], ids=["empty", "ascii-text", "latin-1-text", "other-text"])
def test_a_body_given_as_text_or_empty_is_sent_as_the_threads_send_it(body, sent):
    received = []

    def handle(connection):
        received.append(read_request(connection))
        connection.sendall(OK)

    with raw_receiver(handle) as raw:
        response, _ = timed(post, raw.port, body=body, headers={"X-A": "1"},
                            timeout=(2, 0.5))
        port = raw.port
    assert received == [b"POST /hook/ HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept-Encoding: "
                        b"identity\r\nX-A: 1\r\n%s" % (port, sent)], \
        getattr(response, "details", response)
    assert response.body == b"ok"


@pytest.mark.parametrize("path, target", [
    ("", b"/"), ("/caf\u00e9/?x=\u00e9&y=1", b"/caf%C3%A9/?x=%C3%A9&y=1"),
    ("/p?q=1#fragment", b"/p?q=1"),
], ids=["none", "quoted", "fragment"])
def test_the_path_is_sent_as_requests_prepares_it(path, target):
    received = []

    def handle(connection):
        received.append(read_request(connection))
        connection.sendall(OK)

    with raw_receiver(handle) as raw:
        post(raw.port, path=path)
    [request] = received
    assert request.startswith(b"POST " + target + b" HTTP/1.1\r\n")


@pytest.mark.parametrize("headers", [{"X-A": "1\r\nX-Injected: yes"}, {"X-A": "1\nX"},
                                     {"X-A\r\nX-Injected": "yes"}, {"X-A": " leading"}])
def test_a_header_that_would_break_the_head_is_refused_before_connecting(headers):
    with answering(OK) as raw, pytest.raises(DeliveryError):
        post(raw.port, headers=headers)
    assert raw.connections == []
