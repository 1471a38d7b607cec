"""How a registry conversation's failures read: one line each, whatever a server or the
network sent (the text escaped and bounded, URLs without their query), naming the peer
that failed and what the user can do about it."""

from __future__ import annotations

import ssl

from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
    SSLError,
)

from oci2vm.errors import Oci2vmError
from oci2vm.image.model import load_json
from oci2vm.sources.transport import CONNECT_TIMEOUT, hide_query
from oci2vm.util.text import shown


def one_line(text: object) -> str:
    """Text from an error or a server, for a message: on one line, escaped and bounded
    (util/text.py); URLs in it lose their query (a presigned link's signature) and user."""
    return shown(hide_query(str(text)))


def _causes(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def transport_error(
    peer: str,
    err: BaseException,
    *,
    timeout: float,
    tls_fix: str = "if you trust this registry, use --tls-verify=false",
) -> Oci2vmError:
    """One line for a request that got no HTTP answer; `peer` is "registry HOST" or
    "token server HOST"; `tls_fix` says how to trust its certificate anyway."""
    reason: BaseException = err
    if isinstance(err, MaxRetryError) and err.reason is not None:
        reason = err.reason
    causes = _causes(reason)
    if isinstance(reason, SSLError):
        detail = one_line(reason)
        for c in causes:
            if isinstance(c, ssl.SSLCertVerificationError):
                detail = f"certificate verify failed: {c.verify_message}"
                break
            if isinstance(c, ssl.CertificateError):
                detail = one_line(c)
                break
        return Oci2vmError(f"TLS connection to {peer} failed: {detail}: {tls_fix}")
    if isinstance(reason, NameResolutionError):
        return Oci2vmError(f"cannot connect to {peer}: host name not found")
    if isinstance(reason, NewConnectionError):
        strerror = next((c.strerror for c in causes if isinstance(c, OSError) and c.strerror), None)
        return Oci2vmError(f"cannot connect to {peer}: {(strerror or one_line(reason)).lower()}")
    if isinstance(reason, ConnectTimeoutError):
        return Oci2vmError(f"cannot connect to {peer}: no answer within {CONNECT_TIMEOUT:g} s")
    if isinstance(reason, ReadTimeoutError):
        return Oci2vmError(
            f"{peer} did not answer within {timeout:g} s: retry, or raise --network-timeout"
        )
    if isinstance(reason, ResponseError):
        return Oci2vmError(f"{peer}: {one_line(reason)}")
    if isinstance(reason, ProtocolError) and reason.args:
        # ProtocolError(message, cause): the message says it.
        return Oci2vmError(f"connection to {peer} dropped: {one_line(reason.args[0])}")
    return Oci2vmError(f"connection to {peer} failed: {one_line(reason)}")


def registry_errors(body: bytes) -> tuple[list[str], str]:
    """The error codes and first message of a distribution-spec error body (none of a
    body that is not such JSON: the message then gives the HTTP status alone)."""
    try:
        doc = load_json(body, "error body")
    except Oci2vmError:
        return [], ""
    errors = doc.get("errors")
    if not isinstance(errors, list):
        return [], ""
    codes = [str(e.get("code")) for e in errors if isinstance(e, dict)]
    messages = [str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message")]
    return codes, one_line(messages[0]) if messages else ""
