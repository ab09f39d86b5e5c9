"""OpenSearch refusing flusso itself, rather than one request: a certificate it cannot verify,
credentials it rejects, a user without the privilege. No retry cures these, so they are raised at
once with the setting to change (`refusal`); `preflight` asks before anything runs, so that a start
with such a config exits 1 having created nothing (no publication, no slot).

What each looks like, checked against nginx with HTTPS and basic auth in front of OpenSearch
(`tests/tls.py`): an untrusted CA is urllib3's `SSLError` "certificate verify failed: unable to get
local issuer certificate", a name the certificate lacks is "Hostname mismatch" or "IP address
mismatch", wrong credentials are a 401, a missing privilege a 403 `security_exception`.
"""

from __future__ import annotations

from typing import Any

from opensearchpy.exceptions import SSLError, TransportError

from ...config import SinkConfig

# the README's section on the OpenSearch user, for the fix of a 403
_PRIVILEGES = ("grant it the privileges listed in the README (\"The OpenSearch user\"): on the index patterns "
               "<name>, <name>__g*, <name>-deadletter and the state index, and indices:admin/aliases")


def _reason(err: TransportError) -> str:
    info = err.info
    if isinstance(info, dict) and isinstance(info.get("error"), dict):
        e = info["error"]
        return f"{e.get('type', 'error')}: {e.get('reason', '')}".strip()
    return str(err.error)


def refusal(err: TransportError, config: SinkConfig) -> tuple[str, str] | None:
    """(cause, fix) when `err` is OpenSearch refusing flusso's TLS or credentials; None otherwise."""
    user = config.username
    if isinstance(err, SSLError):
        text = str(err.info)
        lower = text.lower()
        if "mismatch" in lower or "doesn't match" in lower or "not valid for" in lower:
            return (f"its certificate does not name the host in sink.hosts ({text})",
                    "put in sink.hosts a host name the certificate holds")
        if "certificate verify failed" in lower:
            trusted = f"sink.ca_certs ({config.ca_certs})" if config.ca_certs else "the system's CA store"
            return (f"its certificate is not signed by a CA in {trusted} ({text})",
                    "set sink.ca_certs to the CA certificate (PEM) that signed the cluster's certificate; "
                    "verify_certs: false is no fix (it lets anyone on the path read the credentials)")
        return (f"the TLS handshake failed ({text})",
                "check sink.ca_certs, sink.client_cert and sink.client_key, and that the host speaks HTTPS")
    status: Any = err.status_code
    if status == 401:
        if user is None:
            return ("it asks for credentials and none are configured (401)",
                    "set sink.username and sink.password")
        return (f"it refused the credentials of user {user} (401)",
                "check sink.username and sink.password (or the variables they come from)")
    if status == 400 and "ssl certificate" in str(err).lower():  # nginx: "No required SSL certificate"
        return ("it requires a client certificate and none was sent (400)",
                "set sink.client_cert (and sink.client_key) to a certificate the cluster trusts")
    if status == 403 and "security_exception" in _reason(err):
        who = f"user {user}" if user else "the anonymous user"
        return (f"{who} may not do this ({_reason(err)})", _PRIVILEGES.replace("it", who, 1))
    return None


def preflight(client: Any, config: SinkConfig) -> tuple[str, str] | None:
    """(cause, fix) if OpenSearch refuses flusso's first request (GET /); None if it answers, or fails
    in a way a retry may cure (left to the operations that follow, which retry)."""
    try:
        client.info()
    except TransportError as err:
        return refusal(err, config)
    return None
