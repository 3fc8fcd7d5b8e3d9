"""Client factory and error translation: URLs, credentials kept out of reprs and messages."""

from __future__ import annotations

import socket

import pytest

from shipper.config import OpenSearchSettings
from shipper.errors import ConnectionFailed, ExitStatus
from shipper.opensearch import display_url, make_client, translate_errors

SECRET = "s3cret-Pa55"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_display_url_drops_user_info():
    """Credentials in a URL never reach a message."""
    assert "https://search.example.net:9200" == display_url(f"https://bob:{SECRET}@search.example.net:9200")
    assert "http://[::1]:9200/os" == display_url(f"http://bob:{SECRET}@[::1]:9200/os")
    assert "http://127.0.0.1:9200" == display_url("http://127.0.0.1:9200")


def test_password_never_in_client_repr():
    """Neither the password from the environment nor one written into a URL shows in repr."""
    settings = OpenSearchSettings(
        hosts=("https://a.example:9200", f"https://bob:{SECRET}@b.example:9201"),
        username="shipper",
        password_env="MY_PW",
        environ={"MY_PW": SECRET},
    )
    client = make_client(settings)
    texts = [repr(client), str(client), repr(client.transport.connection_pool)]
    texts += [repr(c) for c in client.transport.connection_pool.connections]
    assert all(SECRET not in t for t in texts)
    conn = client.transport.connection_pool.connections[0]
    assert "authorization" in {k.lower() for k in conn.headers}  # the credentials are used, though


def test_connection_refused_is_clear_and_secret_free():
    """A closed port: ConnectionFailed (exit 5) naming the URL without its credentials."""
    port = closed_port()
    settings = OpenSearchSettings(hosts=(f"http://bob:{SECRET}@127.0.0.1:{port}",), timeout=2)
    client = make_client(settings)
    with pytest.raises(ConnectionFailed) as caught, translate_errors(settings, "setup"):
        client.info()
    message = str(caught.value)
    assert f"cannot reach OpenSearch at http://127.0.0.1:{port}: connection refused" in message
    assert SECRET not in message and "bob" not in message
    assert ExitStatus.CONNECTION == caught.value.exit_status
