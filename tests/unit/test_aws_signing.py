"""SigV4 signing and key encoding: exact canonical requests, no sockets."""

from __future__ import annotations

import calendar
import hashlib

import pytest
from botocore.credentials import ReadOnlyCredentials

from profiled.drivers.aws.signing import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    encode_key,
    host_header,
    object_url,
    sign,
)

#: The example key of the AWS SigV4 documentation.
CREDS = ReadOnlyCredentials(
    "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None
)
MAY_24_2013 = calendar.timegm((2013, 5, 24, 0, 0, 0))


def test_aws_documented_get_object_example():
    """The S3 GET example of the AWS SigV4 documentation gives its published signature."""
    signed = sign(
        CREDS,
        "s3",
        "us-east-1",
        "GET",
        "https://examplebucket.s3.amazonaws.com/test.txt",
        {"Range": "bytes=0-9"},
        now=MAY_24_2013,
    )
    assert signed.headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    assert signed.headers["X-Amz-Content-SHA256"] == EMPTY_SHA256


@pytest.mark.parametrize(
    ("key", "encoded"),
    [
        ("originals/0123abcd", "originals/0123abcd"),
        ("with space/and+plus~tilde", "with%20space/and%2Bplus~tilde"),
        ("ünïcødé/画像", "%C3%BCn%C3%AFc%C3%B8d%C3%A9/%E7%94%BB%E5%83%8F"),
        ("a=b&c;d,e@f:g$h!(i)'j*k", "a%3Db%26c%3Bd%2Ce%40f%3Ag%24h%21%28i%29%27j%2Ak"),
        ("percent%20literal", "percent%2520literal"),
        ("dash-dot.under_score", "dash-dot.under_score"),
    ],
)
def test_encode_key(key, encoded):
    """Keys are escaped byte by byte except unreserved characters and '/'."""
    assert encode_key(key) == encoded


def test_odd_key_canonical_request_is_the_sent_path():
    """The canonical URI of an odd key is exactly the path of the URL that is sent."""
    url = object_url("http://127.0.0.1:9000", "bucket", "with space/and+plus~tilde")
    assert url == "http://127.0.0.1:9000/bucket/with%20space/and%2Bplus~tilde"
    signed = sign(CREDS, "s3", "us-east-1", "HEAD", url, {}, now=MAY_24_2013)
    assert signed.canonical_request == "\n".join(
        [
            "HEAD",
            "/bucket/with%20space/and%2Bplus~tilde",
            "",
            "host:127.0.0.1:9000",
            f"x-amz-content-sha256:{EMPTY_SHA256}",
            "x-amz-date:20130524T000000Z",
            "",
            "host;x-amz-content-sha256;x-amz-date",
            EMPTY_SHA256,
        ]
    )
    assert signed.url == url
    assert signed.headers["Host"] == "127.0.0.1:9000"


def test_percent_in_key_is_not_decoded_before_signing():
    """A literal '%20' in a key is signed as '%2520', never collapsed to a space."""
    url = object_url("http://h", "b", "percent%20literal")
    signed = sign(CREDS, "s3", "us-east-1", "GET", url, {}, now=MAY_24_2013)
    assert signed.canonical_request.splitlines()[1] == "/b/percent%2520literal"


def test_streamed_put_is_signed_unsigned_payload_with_its_headers():
    """A PUT signs UNSIGNED-PAYLOAD plus its content type and metadata headers."""
    url = object_url("http://127.0.0.1:9000", "bucket", "originals/abc")
    signed = sign(
        CREDS,
        "s3",
        "us-east-1",
        "PUT",
        url,
        {"Content-Type": "image/png", "x-amz-meta-principal": "alice"},
        now=MAY_24_2013,
        payload_hash=UNSIGNED_PAYLOAD,
    )
    lines = signed.canonical_request.splitlines()
    assert lines[-1] == UNSIGNED_PAYLOAD
    assert lines[-2] == "content-type;host;x-amz-content-sha256;x-amz-date;x-amz-meta-principal"
    assert signed.headers["X-Amz-Content-SHA256"] == UNSIGNED_PAYLOAD


def test_session_token_is_sent_and_signed():
    """Temporary credentials add X-Amz-Security-Token, and it is part of the signature."""
    creds = ReadOnlyCredentials(CREDS.access_key, CREDS.secret_key, "the-token")
    signed = sign(creds, "s3", "us-east-1", "GET", "http://h/b/k", {}, now=MAY_24_2013)
    assert signed.headers["X-Amz-Security-Token"] == "the-token"
    assert "x-amz-security-token:the-token" in signed.canonical_request.splitlines()


def test_sqs_signs_the_body_hash():
    """An SQS JSON call signs the SHA-256 of its body and its X-Amz-Target."""
    body = b'{"QueueUrl":"http://h/1/q"}'
    signed = sign(
        CREDS,
        "sqs",
        "eu-west-1",
        "POST",
        "https://sqs.eu-west-1.amazonaws.com/",
        {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.SendMessage"},
        now=MAY_24_2013,
        body=body,
    )
    lines = signed.canonical_request.splitlines()
    assert lines[-1] == hashlib.sha256(body).hexdigest()
    assert "x-amz-target:AmazonSQS.SendMessage" in lines
    assert "X-Amz-Content-SHA256" not in signed.headers
    assert "/eu-west-1/sqs/aws4_request" in signed.headers["Authorization"]


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://s3.amazonaws.com/b", "s3.amazonaws.com"),
        ("https://s3.amazonaws.com:443/b", "s3.amazonaws.com"),
        ("http://127.0.0.1:8333/b", "127.0.0.1:8333"),
        ("http://[::1]:9000/b", "[::1]:9000"),
    ],
)
def test_host_header_drops_default_ports(url, host):
    """The signed Host header is what an HTTP client sends: no default port."""
    assert host_header(url) == host
