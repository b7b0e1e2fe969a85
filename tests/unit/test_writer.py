"""The InfluxDB writer's sessions, without a server."""

import requests

from monasca_persister_dbpt.influx.writer import InfluxWriter
from monasca_persister_dbpt.placement import Server


def test_a_session_without_credentials_never_reads_a_netrc(monkeypatch):
    """requests would look for ~/.netrc on every request (and send what it
    finds); the writer's credentials are the config's alone."""
    looked = []
    monkeypatch.setattr(requests.sessions, 'get_netrc_auth',
                        lambda url, *a: looked.append(url) or ('u', 'p'))
    writer = InfluxWriter(concurrency=1)
    for server in (Server('h'), Server('h2', user='u', password='secret')):
        session = writer.session(server)
        prepared = session.prepare_request(
            requests.Request('POST', server.url + '/write', data=b'x'))
        assert looked == []
        assert ('Authorization' in prepared.headers) == bool(server.password)
    plain = requests.Session().prepare_request(
        requests.Request('POST', 'http://h:8086/write'))
    assert looked and 'Authorization' in plain.headers  # the stand-in works
