"""A PostgreSQL connection that failed, in the user's words: the endpoint, the cause, the fix.

libpq's own text says what went wrong in its terms (`SSL error: certificate verify failed`,
`password authentication failed`); what a user needs next is which setting to change. The
endpoint is shown as host, port, database and user, never as the DSN, and every password the DSN
holds is scrubbed from libpq's text too (libpq does not quote it, but a future version might).
"""

from __future__ import annotations

import psycopg

from .redact import scrub


def endpoint(dsn: str) -> str:
    """`PostgreSQL at host:port (database d, user u)` from a DSN, with the defaults libpq would use."""
    try:
        given = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "PostgreSQL (source.dsn does not parse)"
    host = str(given.get("host") or given.get("hostaddr") or "localhost")
    port = str(given.get("port") or "5432")
    facts = [f"database {given['dbname']}" if given.get("dbname") else "",
             f"user {given['user']}" if given.get("user") else ""]
    shown = ", ".join(f for f in facts if f)
    return f"PostgreSQL at {host}:{port}" + (f" ({shown})" if shown else "")


def _fix(text: str, given: dict) -> str:
    """What to change for libpq's error `text`, judged by the phrases libpq and the server use."""
    user = given.get("user") or "the user"
    host = given.get("host") or "localhost"
    rootcert = given.get("sslrootcert")
    lower = text.lower()
    if "password authentication failed" in lower:
        return (f"the server refused the password of user {user}: correct the password in source.dsn (or the "
                f"variable it comes from); an administrator sets it with ALTER ROLE {user} PASSWORD '...'")
    if "does not match host name" in lower:
        return (f'the server\'s certificate does not name "{host}": put in source.dsn a host name the certificate '
                "holds (libpq names it above), adding hostaddr=<ip> if that name does not resolve here; only "
                "on a network you trust, sslmode=verify-ca checks the CA without the name")
    if "certificate verify failed" in lower or "self-signed certificate" in lower:
        trusted = f"the CA in sslrootcert={rootcert}" if rootcert else "a CA of ~/.postgresql/root.crt"
        return (f"the server's certificate is not signed by {trusted}: set sslrootcert in source.dsn to the CA "
                "certificate that signed it (for a managed database, the provider's CA bundle); do not lower "
                "sslmode to hide it")
    if "root certificate file" in lower:
        return "sslrootcert in source.dsn names no readable file: give the path of the CA certificate (PEM)"
    if "no encryption" in lower:
        return ("the server accepts this user only over TLS: add sslmode=verify-full and sslrootcert=<CA file> "
                "to source.dsn")
    if "server does not support ssl" in lower:
        return ("source.dsn asks for TLS (sslmode) and the server has ssl off: turn ssl on in the server's "
                "postgresql.conf, or reach a server that offers it")
    if "pg_hba.conf" in lower:
        return (f"no pg_hba.conf rule admits user {user} to this database from here: ask the administrator "
                "for a hostssl rule (with scram-sha-256), or check user and dbname in source.dsn")
    if "does not exist" in lower and ("role" in lower or "database" in lower):
        return "check user and dbname in source.dsn"
    if "refused" in lower or "timeout" in lower or "could not translate host name" in lower:
        return "check host and port in source.dsn and that the server is running and reachable from here"
    return "check source.dsn and that the server is running"


def connect_failure(dsn: str, err: BaseException) -> str:
    """The message for a failed connect: `cannot connect to <endpoint>: <libpq's words>. Fix: <what to change>`."""
    try:
        given = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        given = {}
    secrets = [s for s in (given.get("password"), given.get("sslpassword")) if s]
    text = scrub(" ".join(str(err).split()), secrets)
    return f"cannot connect to {endpoint(dsn)}: {text}. Fix: {_fix(text, given)}"
