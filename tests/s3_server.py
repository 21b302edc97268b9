"""A real S3-compatible server on loopback for the tests: moto's standalone server (no MinIO server
package exists for this machine), driven by the real client libraries (s3fs, boto3).

It enforces credentials: after the first few requests (which create an IAM user with an access key
and an s3:* policy) every request must be signed by that key, so a wrong key or secret is refused
as a real store refuses it. The server is one process started here and ended by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.prefect_server import free_port

REGION = "us-east-1"
# Requests the server serves before it checks credentials: the set-up below makes exactly these.
SETUP_REQUESTS = 3


@dataclass(frozen=True)
class S3Server:
    """The endpoint and the one valid key of a running server."""

    endpoint: str
    key: str
    secret: str
    pid: int

    def env(self, **overrides: str) -> dict[str, str]:
        """The variables a client reads (boto3, s3fs, pyarrow): endpoint, key, secret, region."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.key,
                "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_DEFAULT_REGION": REGION, **overrides}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=self.key,
                            aws_secret_access_key=self.secret)


def _wait_for(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the S3 server exited with status {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"the S3 server did not answer on port {port} within {timeout:g} s") from None
            time.sleep(0.1)


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """Start the server, create the credentials, yield; end the server by its PID."""
    import boto3

    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(SETUP_REQUESTS), AWS_DEFAULT_REGION=REGION)
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        _wait_for(port, proc)
        endpoint = f"http://127.0.0.1:{port}"
        iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="setup",
                           aws_secret_access_key="setup")
        iam.create_user(UserName="linreg")
        key = iam.create_access_key(UserName="linreg")["AccessKey"]
        iam.put_user_policy(UserName="linreg", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"], proc.pid)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
