"""TLS options for a client connection: a private CA, a client certificate (mutual TLS), the
name to verify. Verification is always on: there is no switch to turn it off.

``parse_tls`` reads a ``tls:`` section (``remote.tls``, a belaUI source's ``tls``);
``client_context`` builds the ``ssl.SSLContext`` and turns every problem with the files into
a ``ConfigError`` naming the key and the fix. ``ssl`` is imported only there: a plain-http
agent never loads OpenSSL.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from belabox_metrics.validation import ConfigError

if TYPE_CHECKING:
    import ssl


@dataclass(frozen=True)
class TlsSettings:
    ca_file: str | None = None       # PEM bundle of the CAs to trust instead of the system's
    cert_file: str | None = None     # PEM client certificate (chain) for mutual TLS
    key_file: str | None = None      # its private key (mode 0600)
    server_name: str | None = None   # the name to send (SNI) and verify, if not the URL's host
    key: str = "remote.tls"          # where in the config, for error messages

    @property
    def configured(self) -> bool:
        return any((self.ca_file, self.cert_file, self.key_file, self.server_name))


def parse_tls(reader: Any, base_dir: str | None = None) -> TlsSettings:
    """The ``tls:`` section read by ``reader`` (a validation.Reader of that section)."""
    key = reader.path
    def path(name: str, example: str) -> str | None:
        value: str | None = reader.string(name, None, example=example)
        if value is not None:
            value = os.path.expanduser(value)
            if base_dir is not None and not os.path.isabs(value):
                value = os.path.join(base_dir, value)
        return value

    settings = TlsSettings(
        ca_file=path("ca_file", "/etc/belabox-metrics/ca.pem"),
        cert_file=path("cert_file", "/etc/belabox-metrics/client.pem"),
        key_file=path("key_file", "/etc/belabox-metrics/client.key"),
        server_name=reader.string("server_name", None, example="metrics.example.org"),
        key=key,
    )
    if (settings.cert_file is None) != (settings.key_file is None):
        missing = "key_file" if settings.key_file is None else "cert_file"
        reader.fail(missing, "mutual TLS needs both cert_file and key_file",
                    f"set {key}.{missing} too, or remove the other one")
    if settings.server_name is not None and ("/" in settings.server_name or ":" in settings.server_name
                                             or not settings.server_name.strip()):
        reader.fail("server_name", f"{settings.server_name!r} is not a host name",
                    "write the name the server's certificate carries, e.g. metrics.example.org")
    reader.finish()
    return settings


def _check_file(path: str, key: str, what: str, *, private: bool = False) -> None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(key, f"{what} {path} does not exist", "check the path (PEM file)") from None
    except OSError as exc:
        raise ConfigError(key, f"{what} {path}: {exc.strerror}", "check the path and its permissions") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(key, f"{what} {path} is not a regular file", "point it at the PEM file")
    if private and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(key, f"{what} {path} is accessible by group or others "
                               f"(mode {stat.S_IMODE(info.st_mode):04o})", f"run `chmod 600 {path}`")
    if not os.access(path, os.R_OK):
        raise ConfigError(key, f"{what} {path} is not readable by this user",
                          "make it readable by the service user (metrics)")


def host_name(name: str) -> str | bytes:
    """``name`` as ``socket.getaddrinfo`` and ``wrap_socket(server_hostname=...)`` would encode
    it. Both IDNA-encode a str, which imports ``encodings.idna``, ``stringprep`` and
    ``unicodedata`` (~0.2 MB of RSS, issue 16) to return an ASCII name unchanged; bytes they
    pass on as they are. So an ASCII name that the IDNA codec accepts goes as bytes; any other
    (non-ASCII, an empty or too long label) stays a str, for their own encoding and error."""
    if name.isascii():
        labels = name.split(".")
        if all(0 < len(label) < 64 for label in labels[:-1]) and len(labels[-1]) < 64:
            return name.encode("ascii")
    return name


def client_context(tls: TlsSettings | None) -> ssl.SSLContext:
    """A verifying client context: the system CAs (or ``ca_file``), hostname checks on, the
    client certificate loaded. Raises ConfigError naming the key on any bad file."""
    import ssl  # only for https:// and wss://: ~5 MB of RSS a plain-http agent never pays

    tls = tls or TlsSettings()
    if tls.ca_file is not None:
        _check_file(tls.ca_file, f"{tls.key}.ca_file", "CA file")
        try:
            context = ssl.create_default_context(cafile=tls.ca_file)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"{tls.key}.ca_file", f"{tls.ca_file} holds no usable CA certificate ({exc})",
                              "use a PEM file with the CA certificate(s) that signed the server's") from None
        if not context.get_ca_certs():
            raise ConfigError(f"{tls.key}.ca_file", f"{tls.ca_file} holds no CA certificate",
                              "use a PEM file with the CA certificate(s) that signed the server's")
    else:
        context = ssl.create_default_context()
    if tls.cert_file is not None and tls.key_file is not None:
        _check_file(tls.cert_file, f"{tls.key}.cert_file", "client certificate")
        _check_file(tls.key_file, f"{tls.key}.key_file", "client key", private=True)
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file)
        except ssl.SSLError as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            raise ConfigError(f"{tls.key}.cert_file", f"cannot use {tls.cert_file} with {tls.key_file} ({reason})",
                              "use a PEM certificate and its matching, unencrypted PEM private key") from None
        except OSError as exc:
            raise ConfigError(f"{tls.key}.cert_file", f"cannot read {tls.cert_file} / {tls.key_file} ({exc})",
                              "check both files") from None
    # Verification stays on: CERT_REQUIRED and check_hostname, as create_default_context sets.
    context.set_alpn_protocols(["http/1.1"])  # as http.client does: no server may pick h2
    return context
