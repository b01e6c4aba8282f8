"""Checks AWS SigV4 signatures the way an AWS endpoint does, with botocore's own signer.

Used by tests/xray.rs: its local X-Ray OTLP endpoint hands every request it receives to this
process (one JSON object per line on stdin) and answers 403 unless the verdict (one JSON object
per line on stdout) is {"ok": true}. Independent of the Rust signer under test: the signature
is recomputed here by botocore (`botocore.auth.SigV4Auth.add_auth`, the clock fixed at the
request's X-Amz-Date) over the headers the request says it signed, with the secret key the test
knows, and compared with the one received.

Request: {"method", "url", "headers": [[name, value], ...], "body_b64", "access_key",
"secret_key", "token" (or null), "region", "service"}.
"""

import base64
import datetime
import hmac
import json
import re
import sys
from unittest import mock

import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$"
)
# What AWS allows between the signing time and its own clock.
MAX_SKEW = datetime.timedelta(minutes=5)


def verify(req):
    headers = {}
    for name, value in req["headers"]:
        headers[name.lower()] = value
    auth = headers.get("authorization")
    if auth is None:
        return "MissingAuthenticationToken: no Authorization header"
    m = AUTHORIZATION.match(auth)
    if m is None:
        return "IncompleteSignature: malformed Authorization header"
    akid, date, region, service, signed, _signature = m.groups()
    if akid != req["access_key"]:
        return "UnrecognizedClientException: unknown access key"
    if (region, service) != (req["region"], req["service"]):
        return f"SignatureDoesNotMatch: credential scope {region}/{service}"
    amz_date = headers.get("x-amz-date")
    if amz_date is None:
        return "IncompleteSignature: no X-Amz-Date"
    when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    if abs(when - now) > MAX_SKEW:
        return f"InvalidSignatureException: Signature expired ({amz_date})"
    if date != amz_date[:8]:
        return "SignatureDoesNotMatch: the credential date is not the X-Amz-Date"
    names = signed.split(";")
    required = ["host", "x-amz-date", "content-type"]
    if "content-encoding" in headers:
        required.append("content-encoding")
    token = req.get("token")
    if token is not None:
        required.append("x-amz-security-token")
        if headers.get("x-amz-security-token") != token:
            return "UnrecognizedClientException: wrong or missing security token"
    elif "x-amz-security-token" in headers:
        return "UnrecognizedClientException: unexpected security token"
    for name in required:
        if name not in names:
            return f"SignatureDoesNotMatch: {name} is not signed"
    to_sign = {}
    for name in names:
        if name not in headers:
            return f"SignatureDoesNotMatch: signed header {name} is missing"
        if name not in ("x-amz-date", "x-amz-security-token"):
            to_sign[name] = headers[name]
    body = base64.b64decode(req["body_b64"])
    expected = AWSRequest(method=req["method"], url=req["url"], data=body, headers=to_sign)
    creds = Credentials(akid, req["secret_key"], token)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=when):
        SigV4Auth(creds, service, region).add_auth(expected)
    if not hmac.compare_digest(expected.headers["Authorization"], auth):
        return (
            "SignatureDoesNotMatch: The request signature we calculated does not match the "
            "signature you provided"
        )
    return None


def main():
    for line in sys.stdin:
        try:
            reason = verify(json.loads(line))
        except Exception as e:  # a malformed request is a rejected one
            reason = f"IncompleteSignature: {type(e).__name__}: {e}"
        sys.stdout.write(json.dumps({"ok": reason is None, "reason": reason}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
