"""A client for a Triton Inference Server (or any server speaking the KServe v2 inference
protocol over HTTP) that runs an exported tpRNA model — an alternative backend to
in-process onnxruntime.  It needs the optional ``triton`` extra
(``pip install 'tprna[triton]'``, which brings ``tritonclient[http]``)::

    from tprna.serve import TritonClient, triton_predictor

    client = TritonClient("localhost:8000", "mffnet36", timeout=60)
    client.ready()                                  # True when server and model are ready
    contacts = client.infer(features, mask)        # (B,C,L,L) float32, (B,L) bool → (B,L,L)

    predictor = triton_predictor("export/mffnet36.onnx", client)   # batched Predictor, Triton runs the model
    maps = predictor.predict(["a.fasta"])

Requests carry their tensors in the binary tensor extension of the protocol (a JSON
header, then the raw little-endian bytes), encoded by ``tritonclient.http``
(``InferInput.set_data_from_numpy(..., binary_data=True)`` and
``InferenceServerClient.generate_request_body``): a request of one L=300 RNA with 26
feature channels is 9.4 MB, where the same tensors as JSON numbers take 45 MB and seconds
to encode.  The answer comes as JSON numbers unless ``binary_output=True`` asks for it in
binary as well.

Every failure — the server unreachable, no answer within ``timeout``, an HTTP error, a
response that is not the tensor asked for — is a :class:`~tprna.errors.TprnaError` whose
one-line message starts with the URL it was talking to.

The HTTP exchange is this module's own (``http.client``), not tritonclient's
``InferenceServerClient``, whose timeouts bound each socket operation and which reads
every answer whole, whatever its size.  Here ``timeout`` is a deadline for the whole
request — connecting, sending, and reading the full answer: a server that trickles its
answer still fails the call at the deadline.  Answers are read up to a size limit derived
from what was asked (``B·L²`` values: 8 bytes each in binary, 32 as JSON text, plus 1 MiB
for headers and JSON; 1 MiB for the health and metadata calls); a larger answer is refused
before it fills the memory.  The client talks to the server directly (no HTTP proxy).
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
import urllib.parse
from typing import Any

import numpy as np

from tprna.errors import TprnaError

__all__ = ["TritonClient", "triton_predictor", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 60.0  # seconds per request; a long RNA on a busy CPU server takes a while
SMALL_REPLY = 1 << 20  # bytes: the most a health or metadata answer may take
_SLACK = 1 << 20  # bytes beyond the tensor's own for the JSON header and framing
_HEADER_LENGTH = "Inference-Header-Content-Length"
_NUMPY_OF = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64}


class TritonClient:
    """Talks to one model on one KServe-v2 HTTP endpoint (needs the ``triton`` extra).

    Args:
        url: ``http://host:port`` (``host:port`` alone means ``http://``).
        model_name: the model's name in the server's repository.
        timeout: seconds each request may take in all (connect, send, read the answer).
        model_version: a version number, or ``None`` for the server's choice.
        max_batch_size: split larger batches into several requests of at most this many
            RNAs (Triton refuses a request over the model's ``max_batch_size``).
        binary_output: ask for ``contacts`` in the binary tensor extension too (the inputs
            always travel in it).
    """

    def __init__(self, url: str, model_name: str, timeout: float = DEFAULT_TIMEOUT,
                 model_version: int | str | None = None, max_batch_size: int | None = None,
                 binary_output: bool = False) -> None:
        url = str(url).strip()
        if "://" not in url:
            url = "http://" + url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TprnaError(f"Triton URL {url!r} is not http(s)://host:port")
        if not model_name or "/" in model_name:
            raise TprnaError(f"Triton model name {model_name!r} is empty or contains '/'")
        if timeout is None or float(timeout) <= 0:
            raise TprnaError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if max_batch_size is not None and int(max_batch_size) < 1:
            raise TprnaError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self._kserve = _tritonclient_http()
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.timeout = float(timeout)
        self.model_version = None if model_version is None else str(model_version)
        self.max_batch_size = None if max_batch_size is None else int(max_batch_size)
        self.binary_output = bool(binary_output)
        self.providers = [f"Triton {self.url} ({model_name})"]  # what Predictor reports

    def __repr__(self) -> str:
        return f"TritonClient({self.url!r}, {self.model_name!r})"

    # ------------------------------------------------------------------ endpoints

    @property
    def model_url(self) -> str:
        base = f"{self.url}/v2/models/{urllib.parse.quote(self.model_name, safe='')}"
        return base if self.model_version is None else f"{base}/versions/{self.model_version}"

    def ready(self) -> bool:
        """Whether the server (``/v2/health/ready``) and the model (``.../ready``) are ready.
        A 4xx/5xx answer is "not ready"; no answer at all is a :class:`TprnaError`."""
        for url in (f"{self.url}/v2/health/ready", f"{self.model_url}/ready"):
            status, _, _ = self._request(url, raise_status=False)
            if status != 200:
                return False
        return True

    def metadata(self) -> dict[str, Any]:
        """The model's metadata (``GET /v2/models/{name}``): name, versions, platform, and
        its ``inputs`` / ``outputs`` (name, datatype, shape with -1 for dynamic dims)."""
        url = self.model_url
        _, _, body = self._request(url)
        meta = _json(body, url)
        if not isinstance(meta, dict) or not isinstance(meta.get("inputs"), list) \
                or not isinstance(meta.get("outputs"), list):
            raise TprnaError("malformed model metadata (no 'inputs' / 'outputs' lists)", url)
        return meta

    def check_model(self, channels: int | None = None) -> dict[str, Any]:
        """The metadata, after checking the model is tpRNA's (features, mask → contacts) and,
        when ``channels`` is given, that it takes that many feature channels."""
        meta = self.metadata()
        ins = {t.get("name"): t for t in meta["inputs"] if isinstance(t, dict)}
        outs = [t.get("name") for t in meta["outputs"] if isinstance(t, dict)]
        if set(ins) != {"features", "mask"} or "contacts" not in outs:
            raise TprnaError(f"model inputs {sorted(map(str, ins))} / outputs {outs} are not tpRNA's "
                             "(features, mask → contacts)", self.model_url)
        shape = ins["features"].get("shape") or []
        if channels is not None and len(shape) == 4 and isinstance(shape[1], int) and shape[1] > 0 \
                and shape[1] != channels:
            raise TprnaError(f"the served model takes {shape[1]} feature channels but the local "
                             f"model's feature spec gives {channels}: they are different models",
                             self.model_url)
        return meta

    def infer(self, features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``contacts`` ``(B, L, L)`` float32 for ``features`` ``(B, C, L, L)`` float32 and
        ``mask`` ``(B, L)`` bool (False on the padding of shorter RNAs)."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        mask = np.ascontiguousarray(mask, dtype=bool)
        if features.ndim != 4 or features.shape[2] != features.shape[3]:
            raise TprnaError(f"features must be (B, C, L, L), got shape {features.shape}")
        b, _, length, _ = features.shape
        if mask.shape != (b, length):
            raise TprnaError(f"mask must be (B, L) = ({b}, {length}), got shape {mask.shape}")
        step = self.max_batch_size or max(b, 1)
        if b <= step:
            return self._infer_one(features, mask)
        return np.concatenate([self._infer_one(features[i:i + step], mask[i:i + step])
                               for i in range(0, b, step)], axis=0)

    run = infer  # the interface of tprna.serve.SessionRunner, so a Predictor can use it

    # ------------------------------------------------------------------ internals

    def _infer_one(self, features: np.ndarray, mask: np.ndarray) -> np.ndarray:
        url = f"{self.model_url}/infer"
        body, header_length = request_body(self._kserve, features, mask, self.binary_output)
        b, _, length, _ = features.shape
        _, headers, answer = self._request(url, body, header_length=header_length,
                                           limit=reply_limit(b * length * length, self.binary_output))
        return _contacts(answer, headers, url, (b, length, length))

    def _request(self, url: str, body: bytes | None = None, raise_status: bool = True,
                 limit: int = SMALL_REPLY, header_length: int | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP exchange within ``self.timeout`` in all: a watchdog shuts the socket at
        the deadline, whatever the server is doing.  Answers over ``limit`` bytes are refused.
        ``header_length``: the body is a binary-extension request whose JSON header is that
        many bytes."""
        parts = urllib.parse.urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        deadline = time.monotonic() + self.timeout
        conn = kind(parts.hostname, parts.port, timeout=self.timeout)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked read at once
                except OSError:
                    pass

        watchdog = threading.Timer(self.timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        stage = "connect"
        try:
            conn.connect()
            if expired.is_set():
                raise TimeoutError
            conn.sock.settimeout(max(deadline - time.monotonic(), 1e-3))
            stage = "exchange"
            headers = {"Accept": "application/json", "Connection": "close"}
            if header_length is not None:
                headers["Content-Type"] = "application/octet-stream"
                headers[_HEADER_LENGTH] = str(header_length)
            elif body is not None:
                headers["Content-Type"] = "application/json"
            conn.request("POST" if body is not None else "GET", path, body=body, headers=headers)
            resp = conn.getresponse()
            got = {k.lower(): v for k, v in resp.getheaders()}
            if resp.status >= 400:
                if not raise_status:
                    return resp.status, {}, b""
                raise TprnaError(f"HTTP {resp.status} {resp.reason}{_error_detail(_read(resp, 4096))}", url)
            declared = got.get("content-length", "").strip()
            if declared.isdigit() and int(declared) > limit:
                raise TprnaError(f"the answer would be {int(declared)} bytes, more than the {limit} bytes "
                                 "this request can return", url)
            data = _read(resp, limit + 1)
            if expired.is_set():
                raise TimeoutError
            if len(data) > limit:
                raise TprnaError(f"the answer is more than the {limit} bytes this request can return", url)
            return resp.status, got, data
        except TprnaError:
            raise
        except Exception as e:
            if expired.is_set() or time.monotonic() >= deadline or isinstance(e, (socket.timeout, TimeoutError)):
                raise TprnaError(f"no answer within {self.timeout:g} s", url) from None
            if stage == "connect":
                raise TprnaError(f"cannot reach the server ({_text(e) or type(e).__name__})", url) from None
            if isinstance(e, (OSError, ValueError)):  # connection reset mid-answer, bad status line, ...
                raise TprnaError(f"the connection failed ({type(e).__name__}: {_text(e)})", url) from None
            raise TprnaError(f"the request failed ({type(e).__name__}: {_text(e)})", url) from None
        finally:
            watchdog.cancel()
            conn.close()


def _tritonclient_http():
    """``tritonclient.http``, imported when a client is made: it is an optional extra, and
    importing it (gevent included) takes about a second that ``tprna infer`` need not pay."""
    try:
        import tritonclient.http as kserve
    except ImportError:
        raise TprnaError("the Triton client needs the 'triton' extra: pip install 'tprna[triton]' "
                         "(tritonclient[http])") from None
    return kserve


def request_body(kserve: Any, features: np.ndarray, mask: np.ndarray,
                 binary_output: bool) -> tuple[bytes, int | None]:
    """The infer request for ``features`` (FP32) and ``mask`` (BOOL) with both tensors in
    the binary extension, and the length of its JSON header (``kserve``: the
    ``tritonclient.http`` module)."""
    inputs = [kserve.InferInput("features", list(features.shape), "FP32"),
              kserve.InferInput("mask", list(mask.shape), "BOOL")]
    inputs[0].set_data_from_numpy(features, binary_data=True)
    inputs[1].set_data_from_numpy(mask, binary_data=True)
    outputs = [kserve.InferRequestedOutput("contacts", binary_data=binary_output)]
    return kserve.InferenceServerClient.generate_request_body(inputs, outputs=outputs)


def reply_limit(values: int, binary: bool) -> int:
    """The most bytes an infer answer holding ``values`` numbers may take: 8 bytes a value
    in binary (FP64 at most), 32 as JSON text, plus :data:`_SLACK`."""
    return int(values) * (8 if binary else 32) + _SLACK


def _read(resp: http.client.HTTPResponse, most: int) -> bytes:
    """Up to ``most`` bytes of the body (fewer at its end)."""
    chunks, total = [], 0
    while total < most:
        chunk = resp.read(min(1 << 16, most - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def triton_predictor(model_path: str | os.PathLike, client: TritonClient, check: bool = True,
                     **kwargs: Any):
    """A :class:`~tprna.serve.Predictor` whose model runs on Triton through ``client``.

    The local ONNX file (the one the server's repository was written from) supplies the
    feature spec and model name; features, batching, padding and outputs are the
    in-process predictor's, only the model-run step goes over HTTP.  ``check``: compare the
    served model's inputs with the local one first.  ``kwargs`` go to ``Predictor``
    (``device`` is the local session's and defaults to ``"cpu"``)."""
    from tprna.serve.predictor import Predictor

    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("threads", 1)
    predictor = Predictor(model_path, **kwargs)
    if check:
        client.check_model(predictor.spec.channels)
    predictor.runner = client
    predictor.providers = list(client.providers)
    return predictor


def _text(value: Any) -> str:
    return " ".join(str(value).split())[:200]


def _error_detail(raw: bytes) -> str:
    """': <the server's message>' from a KServe error body ``{"error": "..."}``, if any."""
    try:
        msg = json.loads(raw).get("error")
    except Exception:
        msg = raw.decode("utf-8", "replace")
    msg = _text(msg or "")
    return f": {msg}" if msg else ""


def _json(body: bytes, url: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: "[[[[…" nested too deep
        raise TprnaError(f"the answer is not JSON ({_text(e)})", url) from None


def _contacts(body: bytes, headers: dict[str, str], url: str, want: tuple[int, int, int]) -> np.ndarray:
    """The ``contacts`` tensor of an infer response (JSON or binary tensor extension)."""
    header_len = headers.get(_HEADER_LENGTH.lower())
    binary = b""
    if header_len is not None:
        try:
            n = int(header_len)
            if not 0 <= n <= len(body):
                raise ValueError(header_len)
        except ValueError:
            raise TprnaError(f"bad {_HEADER_LENGTH} header {header_len!r}", url) from None
        body, binary = body[:n], body[n:]
    doc = _json(body, url)
    if isinstance(doc, dict) and "error" in doc and "outputs" not in doc:
        raise TprnaError(f"the server reports an error: {_text(doc['error'])}", url)
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
        raise TprnaError("malformed infer response (no 'outputs' list)", url)
    named = [o for o in outputs if o.get("name") == "contacts"]
    out = named[0] if named else outputs[0]
    if not named and len(outputs) > 1:
        raise TprnaError(f"the response has no 'contacts' output (got {[o.get('name') for o in outputs]})", url)
    dtype = _NUMPY_OF.get(str(out.get("datatype")))
    if dtype is None:
        raise TprnaError(f"output datatype {out.get('datatype')!r} is not a float type", url)
    shape = out.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape) \
            or tuple(shape) != want:
        raise TprnaError(f"output shape {shape!r} is not the expected {list(want)}", url)
    size = int(np.prod(want))
    params = out.get("parameters") if isinstance(out.get("parameters"), dict) else {}
    if "binary_data_size" in params:
        try:
            nbytes = int(params["binary_data_size"])
        except (TypeError, ValueError):
            raise TprnaError(f"bad binary_data_size {params['binary_data_size']!r}", url) from None
        itemsize = np.dtype(dtype).itemsize
        if nbytes != size * itemsize or len(binary) < nbytes:
            raise TprnaError(f"binary output of {len(binary)} bytes (declared {nbytes}) does not hold "
                             f"{size} {out.get('datatype')} values", url)
        values = np.frombuffer(binary[:nbytes], dtype=np.dtype(dtype).newbyteorder("<"))
    else:
        data = out.get("data")
        if not isinstance(data, list):
            raise TprnaError("the output has no 'data' list", url)
        try:
            values = np.asarray(data, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise TprnaError("the output's data are not numbers", url) from None
        if values.size != size:
            raise TprnaError(f"the output holds {values.size} values, its shape {list(want)} needs {size}", url)
    result = values.astype(np.float32).reshape(want)
    if not np.isfinite(result).all():
        raise TprnaError("the output holds non-finite values", url)
    return result
