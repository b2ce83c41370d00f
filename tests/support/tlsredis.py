"""A redis-server as managed Redis runs it: TLS only, ACL users, the default user off.

The certificates are throwaway ones made with the ``openssl`` CLI (the ``cryptography`` package
is not a dependency of the project), valid for 127.0.0.1 only, so clients check the chain and
the host name exactly as they would against a real service.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import redis

from dispatcher.devtools.localredis import find_redis_server, free_port


def tls_support() -> str | None:
    """None when redis-server and openssl can run a TLS server here, else why not."""
    if shutil.which("openssl") is None:
        return "no openssl CLI to make a throwaway certificate"
    try:
        exe = find_redis_server()
    except Exception as exc:
        return str(exc)
    # A build without TLS rejects the option at start; one with it fails later, on the files.
    out = subprocess.run(
        [exe, "--tls-port", "0", "--port", "0", "--tls-cert-file", "/nonexistent"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    text = out.stdout + out.stderr
    if "Bad directive" in text or "not supported" in text.lower():
        return "redis-server was built without TLS support"
    return None


def make_certs(dirname: Path) -> tuple[Path, Path, Path]:
    """(ca.crt, server.crt, server.key): a CA and a server certificate for IP 127.0.0.1."""
    dirname.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, crt = (
        dirname / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    )
    ext = dirname / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=dispatcher-test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext))  # fmt: skip
    key.chmod(0o600)
    return ca, crt, key


class TlsRedis:
    """``redis-server --port 0 --tls-port P`` with ``users`` (ACL lines after ``user``) and
    ``user default off``; stopped by ``stop()``."""

    def __init__(self, dirname: Path, users: Sequence[str]) -> None:
        self.dir = dirname
        self.port = free_port()
        self.ca, self.cert, self.key = make_certs(dirname / "tls")
        conf = dirname / "redis.conf"
        lines = [
            "port 0",
            f"tls-port {self.port}",
            "bind 127.0.0.1",
            f"tls-cert-file {self.cert}",
            f"tls-key-file {self.key}",
            f"tls-ca-cert-file {self.ca}",
            "tls-auth-clients no",  # clients authenticate with ACL passwords, not certificates
            'save ""',
            "appendonly no",
            f"dir {dirname}",
            f"logfile {dirname / 'redis.log'}",
            "user default off",
            *(f"user {u}" for u in users),
        ]
        conf.write_text("\n".join(lines) + "\n")
        self._proc = subprocess.Popen(
            [find_redis_server(), str(conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def url(self, user: str, password: str, db: int = 0) -> str:
        """What a user writes: ``rediss://user:password@127.0.0.1:P/db?ssl_ca_certs=...``."""
        return (
            f"rediss://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}/{db}"
            f"?ssl_ca_certs={quote(str(self.ca))}"
        )

    def wait(self, user: str, password: str, timeout: float = 15) -> None:
        client = redis.Redis.from_url(self.url(user, password))
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self._proc.poll() is not None or time.monotonic() > deadline:
                        log = self.dir / "redis.log"
                        tail = log.read_text()[-1000:] if log.exists() else ""
                        raise RuntimeError(f"TLS redis-server did not start: {tail}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
