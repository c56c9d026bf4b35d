"""An upstream that misbehaves on purpose, over real sockets on loopback: it drips its answer a byte at
a time, says nothing at all, or sends raw bytes no polite server would."""

from __future__ import annotations

import ipaddress
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

# An answer writes to the client's socket; it must return soon after `stopping` is set.
Answer = Callable[[socket.socket, threading.Event], None]


def http_response(status: int = 200, body: bytes = b"[]", headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response with a Content-Length, as bytes."""
    lines = [f"HTTP/1.1 {status} Scripted", f"Content-Length: {len(body)}", "Content-Type: application/json"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def send(payload: bytes, *, at: Callable[[], float] | None = None) -> Answer:
    """Send `payload` at once, or once `time.monotonic()` reaches what `at` returns; then close."""

    def answer(client: socket.socket, stopping: threading.Event) -> None:
        if at is not None and stopping.wait(max(0.0, at() - time.monotonic())):
            return
        client.sendall(payload)

    return answer


def drip(payload: bytes, *, every: float, after: int = 0) -> Answer:
    """Send the first `after` bytes at once, then the rest one byte every `every` seconds."""

    def answer(client: socket.socket, stopping: threading.Event) -> None:
        client.sendall(payload[:after])
        for offset in range(after, len(payload)):
            if stopping.wait(every):
                return
            client.sendall(payload[offset : offset + 1])

    return answer


def silence() -> Answer:
    """Accept the request and say nothing, until the server stops."""

    def answer(_client: socket.socket, stopping: threading.Event) -> None:
        stopping.wait()

    return answer


class HostileUpstream:
    """Each connection gets the next answer (the last one repeats); `requests` keeps each request's head.
    With `tls` (a certificate file and its key file), it speaks HTTPS."""

    def __init__(self, *answers: Answer, tls: tuple[Path, Path] | None = None):
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self._stopping = threading.Event()
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), self._handler(), bind_and_activate=True)
        self._server.daemon_threads = True
        self.scheme = "https" if tls else "http"
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}/posts"

    def __enter__(self) -> HostileUpstream:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def _next_answer(self) -> Answer:
        self.connections += 1
        return self.answers[min(self.connections, len(self.answers)) - 1]

    def _handler(self) -> type[socketserver.BaseRequestHandler]:
        upstream = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                client: socket.socket = self.request
                client.settimeout(10)
                head = b""
                try:
                    while b"\r\n\r\n" not in head and (chunk := client.recv(4096)):
                        head += chunk
                    upstream.requests.append(head)
                    upstream._next_answer()(client, upstream._stopping)
                except OSError:
                    pass  # the client hung up: that is what many tests want it to do

        return Handler


def unaccepted_address() -> tuple[socket.socket, socket.socket, str]:
    """A listening socket whose accept queue is full, so a new connection to its URL hangs in connect.
    Keep both sockets open while the URL is in use."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    queued = socket.create_connection(listener.getsockname())
    return listener, queued, f"http://127.0.0.1:{listener.getsockname()[1]}/posts"


def self_signed_certificate(folder: Path, host: str = "localhost") -> tuple[Path, Path]:
    """A certificate for `host` (and 127.0.0.1) that signs itself, and its key, as PEM files in `folder`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    names = [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file
