"""The InfluxDB writer's connections, against a local HTTP stand-in."""

import base64
import logging
import http.server
import socket
import threading
import time
import types

import pytest
import requests

from monasca_persister_dbpt.influx import connections
from monasca_persister_dbpt.influx.writer import InfluxWriter, ServerDown
from monasca_persister_dbpt.placement import Placement, Server


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


_DATABASES = (b'{"results":[{"statement_id":0,"series":[{"name":"databases",'
              b'"columns":["name"],"values":[["mon_t1"]]}]}]}')


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers each POST with the status the test sets; keeps what came."""

    protocol_version = 'HTTP/1.1'   # keep-alive, as influxd
    seen: list = []
    answer = (204, b'')
    delay = 0.0

    def do_POST(self):  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers['Content-Length']))
        if self.path.startswith('/query'):   # the database exists
            status, text = 200, _DATABASES
        else:
            self.seen.append((self.path, {k.lower(): v for k, v in
                                          self.headers.items()}, body,
                              self.client_address[1]))
            status, text = self.answer
            time.sleep(self.delay)
        self.send_response(status)
        self.send_header('Content-Length', str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    _Recorder.seen = []
    _Recorder.answer = (204, b'')
    _Recorder.delay = 0.0
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _placement(server):
    return Placement('t1', server, 'mon_t1', None)


def test_a_write_posts_the_lines_as_requests_did_on_one_kept_connection(
        recorder, monkeypatch):
    monkeypatch.delenv('HTTP_PROXY', raising=False)
    monkeypatch.delenv('http_proxy', raising=False)
    writer = InfluxWriter(concurrency=1)
    server = Server('127.0.0.1', recorder, user='u', password='p:w')
    try:
        writer.write(_placement(server), ['m v=1 1', 'm v=2 2'])
        writer.write(_placement(server), ['m v=3 3'], policy='tier_1h')
    finally:
        writer.close()
    (path1, headers, body, port1), (path2, _, body2, port2) = _Recorder.seen
    assert path1 == '/write?db=mon_t1&precision=ms'
    assert path2 == '/write?db=mon_t1&precision=ms&rp=tier_1h'
    assert body == b'm v=1 1\nm v=2 2' and body2 == b'm v=3 3'
    assert headers['content-type'] == 'application/octet-stream'
    assert headers['authorization'] == 'Basic ' + base64.b64encode(
        b'u:p:w').decode()
    assert port1 == port2   # the same keep-alive connection
    assert writer.stats.total('points_written') == 3


def test_a_write_without_a_password_sends_no_credentials(recorder):
    writer = InfluxWriter(concurrency=1)
    try:
        writer.write(_placement(Server('127.0.0.1', recorder)), ['m v=1 1'])
    finally:
        writer.close()
    assert 'authorization' not in _Recorder.seen[0][1]


def test_an_answer_influxdb_refused_is_classified_from_its_text(recorder):
    """The status and text reach the error table: a field type conflict
    drops the point (counted), it is not retried or raised."""
    _Recorder.answer = (400, b'{"error":"partial write: field type conflict:'
                             b' input field \\"value\\" on measurement \\"m'
                             b'\\" is type string, already exists as type '
                             b'float dropped=1"}')
    writer = InfluxWriter(concurrency=1)
    try:
        writer.write(_placement(Server('127.0.0.1', recorder)), ['m v="x" 1'])
    finally:
        writer.close()
    assert len(_Recorder.seen) == 1
    assert writer.stats.total('dropped_field_type_conflict') == 1


def test_a_server_that_does_not_answer_is_marked_down():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]   # closed again: nothing listens
    writer = InfluxWriter(concurrency=1, retry_timeout=0.5)
    server = Server('127.0.0.1', port)
    try:
        with pytest.raises(ServerDown):
            writer.write(_placement(server), ['m v=1 1'], retry_for=0.3)
    finally:
        writer.close()
    assert writer.is_down(server)


def test_a_server_behind_a_proxy_is_written_through_requests(monkeypatch):
    monkeypatch.setenv('HTTP_PROXY', 'http://proxy.example:3128')
    monkeypatch.setenv('NO_PROXY', 'direct.example')
    assert connections.proxied(Server('influx.example'))
    assert not connections.proxied(Server('direct.example'))
    pools = connections.WritePools(1, 5.0)
    used = []

    class Session:
        def post(self, url, **kwargs):
            used.append(url)
            return types.SimpleNamespace(status_code=204, text='')
    assert pools.post(Server('influx.example'), '/write', {'db': 'd'}, b'x',
                      lambda server: Session()) == (204, '')
    assert used == ['http://influx.example:8086/write?db=d']


def test_writes_from_more_threads_than_the_writer_has_keep_their_connections(
        recorder, caplog):
    """The migration writes from its workers through a writer of
    concurrency 1: their connections are kept, nothing is logged."""
    _Recorder.delay = 0.05   # the writes overlap
    writer = InfluxWriter(concurrency=1)
    placement = _placement(Server('127.0.0.1', recorder))
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(2):
                threads = [threading.Thread(target=writer.write, args=(
                    placement, ['m v=%d %d' % (n, n)])) for n in range(4)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
    finally:
        writer.close()
    assert len(_Recorder.seen) == 8
    assert [r.getMessage() for r in caplog.records] == []
    ports = {port for _, _, _, port in _Recorder.seen}
    assert len(ports) <= 4   # the second round reused the first's
