"""The Triton client against a stand-in KServe v2 server on loopback: the stand-in decodes
the binary tensor extension itself (JSON header of Inference-Header-Content-Length bytes,
then the raw tensors) and runs the posted tensors through a real onnxruntime session of a
tiny exported model, so the client's answers must equal in-process onnxruntime; every
failure is a one-line TprnaError naming the URL."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from tprna.errors import TprnaError
from tprna.features import FeatureSpec
from tprna.serve import Predictor, TritonClient, make_session, triton_predictor
from tprna.serve.session import SessionRunner
from tprna.serve.triton_client import request_body
from tprna.simulate import write_example_dataset

from helpers import export_tiny_model

pytest.importorskip("tritonclient.http", reason="the Triton client needs the [triton] extra")

SPEC = FeatureSpec()
NAME = "mff"
TIMEOUT = 20.0  # per request; the stand-in answers in well under a second


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("model"), SPEC)


@pytest.fixture(scope="module")
def runner(model) -> SessionRunner:
    session, providers = make_session(model, device="cpu", threads=1)
    return SessionRunner(session, providers, io_binding=False)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """The client hung up first (the timeout and reset tests): expected, not news."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class StandIn:
    """A KServe v2 HTTP server on 127.0.0.1 (as far as the client uses the protocol).

    ``mode`` picks a fault for the infer endpoint: "ok", "500", "not-json", "no-outputs",
    "bad-shape", "short-data", "slow", "reset", "deep-json"."""

    def __init__(self, runner: SessionRunner, channels: int) -> None:
        self.runner, self.channels = runner, channels
        self.mode = "ok"
        self.requests: list[tuple[str, str]] = []
        self.binary_requests: list[bool] = []  # one per infer request: its inputs came as raw bytes
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep the test output clean
                pass

            def do_GET(self):
                stand_in.requests.append(("GET", self.path))
                if self.path == "/v2/health/ready":
                    return self.send(200, b"")
                if self.path == f"/v2/models/{NAME}/ready":
                    return self.send(200, b"")
                if self.path == f"/v2/models/{NAME}":
                    return self.send_json(200, stand_in.metadata())
                return self.send_json(404, {"error": f"Request for unknown model: '{self.path}'"})

            def do_POST(self):
                stand_in.requests.append(("POST", self.path))
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                if self.path != f"/v2/models/{NAME}/infer":
                    return self.send_json(404, {"error": "Request for unknown model"})
                mode = stand_in.mode
                if mode == "500":
                    return self.send_json(500, {"error": "onnx runtime error 6: out of memory"})
                if mode == "not-json":
                    return self.send(200, b"<html>gateway says hello</html>")
                if mode == "deep-json":  # valid JSON syntax nested past Python's recursion limit
                    return self.send(200, b"[" * 200_000 + b"]" * 200_000, "application/json")
                if mode == "no-outputs":
                    return self.send_json(200, {"model_name": NAME})
                if mode == "slow":
                    time.sleep(1.5)
                    return self.send_json(200, {"outputs": []})
                if mode == "reset":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                try:
                    request = kserve_request(body, self.headers.get("Inference-Header-Content-Length"))
                    stand_in.binary_requests.append(bool(request["raw"]))
                    answer, binary = stand_in.infer(request)
                except (KeyError, ValueError, TypeError) as e:
                    return self.send_json(400, {"error": f"bad request: {e}"})
                out = answer["outputs"][0]
                if mode == "bad-shape":
                    out["shape"] = out["shape"][:2]
                if mode == "short-data":
                    out["data"] = out["data"][:-1]
                if binary is None:
                    return self.send_json(200, answer)
                header = json.dumps(answer).encode()
                self.send(200, header + binary, "application/octet-stream",
                          {"Inference-Header-Content-Length": str(len(header))})

            def send_json(self, status, doc):
                self.send(status, json.dumps(doc).encode(), "application/json")

            def send(self, status, body, ctype="text/plain", extra=None):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def metadata(self) -> dict:
        return {"name": NAME, "versions": ["1"], "platform": "onnxruntime_onnx",
                "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, self.channels, -1, -1]},
                           {"name": "mask", "datatype": "BOOL", "shape": [-1, -1]}],
                "outputs": [{"name": "contacts", "datatype": "FP32", "shape": [-1, -1, -1]}]}

    def infer(self, request: dict) -> tuple[dict, bytes | None]:
        tensors = {}
        for t in request["inputs"]:
            dtype = {"FP32": np.dtype("<f4"), "BOOL": np.dtype(bool)}[t["datatype"]]
            if t["name"] in request["raw"]:
                values = np.frombuffer(request["raw"][t["name"]], dtype=dtype)
            else:
                values = np.asarray(t["data"], dtype=dtype)
            tensors[t["name"]] = values.reshape(t["shape"])
        with self.lock:
            contacts = self.runner.run(tensors["features"], tensors["mask"])
        want = request.get("outputs") or [{"name": "contacts"}]
        binary = bool((want[0].get("parameters") or {}).get("binary_data"))
        out = {"name": "contacts", "datatype": "FP32", "shape": list(contacts.shape)}
        if binary:
            raw = contacts.astype("<f4").tobytes()
            out["parameters"] = {"binary_data_size": len(raw)}
            return {"model_name": NAME, "outputs": [out]}, raw
        out["data"] = contacts.ravel().tolist()
        return {"model_name": NAME, "model_version": "1", "outputs": [out]}, None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def kserve_request(body: bytes, header_length: str | None) -> dict:
    """A KServe v2 infer request: all JSON, or (binary tensor extension) a JSON header of
    ``header_length`` bytes followed by each binary input's ``binary_data_size`` raw bytes,
    in the inputs' order; ``raw`` maps those inputs' names to their bytes."""
    if header_length is None:
        return {**json.loads(body), "raw": {}}
    n = int(header_length)
    request, offset, raw = json.loads(body[:n]), n, {}
    for t in request["inputs"]:
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw[t["name"]] = body[offset:offset + size]
            offset += size
    if offset != len(body):
        raise ValueError(f"{len(body) - offset} bytes beyond the declared tensors")
    return {**request, "raw": raw}


@pytest.fixture
def server(runner):
    stand_in = StandIn(runner, SPEC.channels)
    yield stand_in
    stand_in.close()


def padded_batch(seed: int, lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    longest = max(lengths)
    x = np.zeros((len(lengths), SPEC.channels, longest, longest), np.float32)
    mask = np.zeros((len(lengths), longest), bool)
    for b, n in enumerate(lengths):
        x[b, :, :n, :n] = rng.standard_normal((SPEC.channels, n, n)).astype(np.float32)
        mask[b, :n] = True
    return x, mask


def test_ready_and_metadata(server):
    client = TritonClient(server.url, NAME, timeout=TIMEOUT)
    assert client.ready()
    meta = client.metadata()
    assert meta["name"] == NAME and [t["name"] for t in meta["inputs"]] == ["features", "mask"]
    assert client.check_model(SPEC.channels) == meta
    with pytest.raises(TprnaError, match="feature channels"):
        client.check_model(SPEC.channels + 1)
    assert not TritonClient(server.url, "other", timeout=TIMEOUT).ready()
    # "host:port" alone means http://
    assert TritonClient(server.url.removeprefix("http://"), NAME, timeout=TIMEOUT).ready()
    assert ("GET", "/v2/health/ready") in server.requests
    assert ("GET", f"/v2/models/{NAME}/ready") in server.requests


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_equals_onnxruntime_in_process(server, runner, binary):
    client = TritonClient(server.url, NAME, timeout=TIMEOUT, binary_output=binary)
    cases = [[9], [17, 17], [21, 12, 7], [30, 8, 25, 16]]  # padded batches included
    for seed, lengths in enumerate(cases):
        x, mask = padded_batch(seed, lengths)
        got = client.infer(x, mask)
        want = runner.run(x, mask)
        assert got.dtype == np.float32 and got.shape == (len(lengths), max(lengths), max(lengths))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # larger batches split over requests of max_batch_size RNAs
    x, mask = padded_batch(9, [14, 11, 13, 9, 14])
    before = sum(1 for m, _ in server.requests if m == "POST")
    split = TritonClient(server.url, NAME, timeout=TIMEOUT, max_batch_size=2, binary_output=binary)
    np.testing.assert_allclose(split.infer(x, mask), runner.run(x, mask), rtol=0, atol=1e-6)
    assert sum(1 for m, _ in server.requests if m == "POST") - before == 3
    assert server.binary_requests and all(server.binary_requests)


def test_requests_carry_binary_tensors():
    """One L=300 RNA: the body is the JSON header plus the tensors' own bytes (4 per
    feature value, 1 per mask value), not a JSON list of numbers."""
    import tritonclient.http as kserve

    length = 300
    x = np.random.default_rng(0).standard_normal((1, SPEC.channels, length, length)).astype(np.float32)
    mask = np.ones((1, length), bool)
    body, header_length = request_body(kserve, x, mask, binary_output=False)
    assert header_length is not None and header_length < 1024
    assert len(body) == header_length + x.nbytes + mask.nbytes
    request = kserve_request(body, str(header_length))
    np.testing.assert_array_equal(np.frombuffer(request["raw"]["features"], "<f4").reshape(x.shape), x)
    assert [t["name"] for t in request["inputs"]] == ["features", "mask"]
    assert request["outputs"] == [{"name": "contacts", "parameters": {"binary_data": False}}]


def test_predictor_with_the_triton_backend(server, model, tmp_path):
    write_example_dataset(tmp_path, n_families=5, seed=4, lengths=(20, 50), depths=(5, 40))
    msas = sorted((tmp_path / "msa").iterdir())
    client = TritonClient(server.url, NAME, timeout=TIMEOUT)
    remote = triton_predictor(model, client, max_batch=4, max_padding=10.0)
    assert remote.runner is client and remote.providers[0].startswith("Triton http://127.0.0.1")
    local = Predictor(model, device="cpu", max_batch=4, max_padding=10.0, threads=1)
    got, want = remote.predict(msas), local.predict(msas)
    assert [p.id for p in got] == [p.id for p in want] and len(got) == len(msas)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=1e-6)
    assert any(m == "POST" for m, _ in server.requests)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_one_line_naming(err: pytest.ExceptionInfo, url: str, *words: str) -> None:
    text = str(err.value)
    assert "\n" not in text and text.startswith(url), text
    for w in words:
        assert w in text, text


def test_server_down(runner):
    url = f"http://127.0.0.1:{free_port()}"
    client = TritonClient(url, NAME, timeout=TIMEOUT)
    x, mask = padded_batch(0, [8])
    for call in (client.ready, client.metadata, lambda: client.infer(x, mask)):
        with pytest.raises(TprnaError) as err:
            call()
        assert_one_line_naming(err, url, "cannot reach the server")
    # a server that was up and went away
    stand_in = StandIn(runner, SPEC.channels)
    client = TritonClient(stand_in.url, NAME, timeout=TIMEOUT)
    assert client.ready()
    stand_in.close()
    with pytest.raises(TprnaError) as err:
        client.infer(x, mask)
    assert_one_line_naming(err, stand_in.url, "cannot reach")


@pytest.mark.parametrize("mode, words", [
    ("500", ["HTTP 500", "out of memory"]),
    ("not-json", ["not JSON"]),
    ("deep-json", ["not JSON"]),
    ("no-outputs", ["no 'outputs'"]),
    ("bad-shape", ["shape"]),
    ("short-data", ["values"]),
    ("reset", []),
])
def test_bad_answers_are_tprna_errors(server, mode, words):
    server.mode = mode
    client = TritonClient(server.url, NAME, timeout=TIMEOUT)
    x, mask = padded_batch(1, [10, 6])
    with pytest.raises(TprnaError) as err:
        client.infer(x, mask)
    assert_one_line_naming(err, f"{server.url}/v2/models/{NAME}/infer", *words)


def test_timeout(server):
    server.mode = "slow"
    client = TritonClient(server.url, NAME, timeout=0.3)
    x, mask = padded_batch(2, [6])
    t0 = time.monotonic()
    with pytest.raises(TprnaError) as err:
        client.infer(x, mask)
    assert time.monotonic() - t0 < 1.4
    assert_one_line_naming(err, server.url, "no answer within 0.3 s")


def test_wrong_model_name(server):
    client = TritonClient(server.url, "nosuchmodel", timeout=TIMEOUT)
    assert not client.ready()
    x, mask = padded_batch(3, [7])
    for call in (client.metadata, lambda: client.infer(x, mask)):
        with pytest.raises(TprnaError) as err:
            call()
        assert_one_line_naming(err, f"{server.url}/v2/models/nosuchmodel", "HTTP 404", "unknown model")


def test_bad_arguments_are_refused_before_sending(server):
    with pytest.raises(TprnaError, match="http"):
        TritonClient("ftp://127.0.0.1:1", NAME)
    with pytest.raises(TprnaError, match="timeout"):
        TritonClient(server.url, NAME, timeout=0)
    client = TritonClient(server.url, NAME, timeout=TIMEOUT)
    x, mask = padded_batch(4, [5])
    with pytest.raises(TprnaError, match=r"\(B, C, L, L\)"):
        client.infer(x[0], mask)
    with pytest.raises(TprnaError, match="mask"):
        client.infer(x, mask[:, :3])
    assert not any(m == "POST" for m, _ in server.requests)


# ----------------------------------------------------------------------------- deadline and size cap

class RawServer:
    """A bare TCP server on 127.0.0.1 whose ``answer(conn)`` writes whatever bytes it likes
    after reading the request's headers; each connection in its own thread, closed on exit."""

    def __init__(self, answer) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.answer, self.sent, self.stop = answer, 0, threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                self.answer(self, conn)
            except OSError:  # the client hung up: expected
                pass

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def trickle_body(server, conn):
    """Headers at once, then a JSON body one byte every 0.2 s (8 s for 40 bytes)."""
    body = b'{"outputs": []}' + b" " * 25
    server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body))
    for byte in body:
        time.sleep(0.2)
        server.send(conn, bytes([byte]))


def trickle_headers(server, conn):
    """The status line and headers themselves one byte every 0.2 s."""
    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Padding: " + b"x" * 40:
        time.sleep(0.2)
        server.send(conn, bytes([byte]))


@pytest.mark.parametrize("answer", [trickle_body, trickle_headers], ids=["body", "headers"])
def test_timeout_is_a_deadline_for_the_whole_request(answer):
    """A server that sends a byte every 0.2 s never leaves a socket read idle for 0.5 s:
    a per-read timeout would wait 8 s; the deadline ends the call at 0.5 s."""
    server = RawServer(answer)
    try:
        client = TritonClient(server.url, NAME, timeout=0.5)
        x, mask = padded_batch(5, [6])
        for call in (client.metadata, lambda: client.infer(x, mask)):
            t0 = time.monotonic()
            with pytest.raises(TprnaError) as err:
                call()
            assert time.monotonic() - t0 < 1.5
            assert_one_line_naming(err, server.url, "no answer within 0.5 s")
    finally:
        server.close()


def declared_huge(server, conn):
    server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{")


def endless(server, conn):
    """No Content-Length: the body runs until the connection closes — here, up to 64 MiB."""
    server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
    block = b"[" * (1 << 16)
    for _ in range(1024):
        server.send(conn, block)


@pytest.mark.parametrize("answer", [declared_huge, endless], ids=["declared", "endless"])
def test_answers_larger_than_the_request_can_return_are_refused(answer):
    """The most an answer may take: 1 MiB for metadata; for B·L² contacts as JSON, 32
    bytes a value plus 1 MiB (tprna.serve.triton_client.reply_limit)."""
    server = RawServer(answer)
    try:
        client = TritonClient(server.url, NAME, timeout=TIMEOUT)
        x, mask = padded_batch(6, [12, 9])  # 2·12² values
        for call, most in ((client.metadata, 1 << 20), (lambda: client.infer(x, mask), 2 * 12 * 12 * 32 + (1 << 20))):
            t0 = time.monotonic()
            with pytest.raises(TprnaError) as err:
                call()
            assert time.monotonic() - t0 < 10
            assert_one_line_naming(err, server.url, f"more than the {most} bytes")
        # the client stopped reading at its limit: the server sent far less than its 64 MiB
        assert server.sent < 16 * (1 << 20)
    finally:
        server.close()
