"""An HTTP JSON server over an exported recogniser: ``deocc-serve EXPORT_DIR``.

Serves the folder ``python -m deocc_jax.export`` writes through
:class:`deocc_jax.serving.ExportedRecognizer` (numpy, Pillow and jax or
onnxruntime; no Flax, no configs) with the standard library's
``http.server.ThreadingHTTPServer``, bound to 127.0.0.1 by default::

  deocc-serve model/ --port=8000          # --port=0: any free port (printed)

Endpoints (JSON in, JSON out; images are base64 PNG / JPEG / any format Pillow
reads, a ``data:image/...;base64,`` prefix allowed, EXIF orientation applied):

* ``POST /verify`` ``{"image_a", "image_b"}`` (+ optional ``landmarks_a`` /
  ``landmarks_b``: 5 ``[x, y]`` pixels, left eye, right eye, nose, left /
  right mouth corner; ``mask_a`` / ``mask_b``: base64 images of the occluded
  pixels, > 127 in gray) -> ``{"score", "threshold", "same"}``;
* ``POST /embed`` ``{"image"}`` (+ ``landmarks``, ``mask``) ->
  ``{"embedding": [D floats], "dim": D}`` (L2-normalised);
* ``POST /detect`` ``{"image"}`` -> ``{"width", "height", "faces": [{"box",
  "landmarks", "score", "eye_distance"}]}``, largest face first, with
  ``--detector=mtcnn`` (or ``mtcnn:FILE.npz``, converted weights) or
  ``--detector=dlib``; without a detector 501 (the export has none, and
  :mod:`deocc_jax.serving` loads no Flax);
* ``GET /healthz`` -> ``{"status": "ok", ...}`` with the export's metadata.

Without landmarks an image must be an aligned square face crop (see
:mod:`deocc_jax.serving`), unless the server has a detector: then the largest
face it finds is aligned (a photo in, no landmarks needed; ``"aligned": true``
in the request sends a crop as it is), and an image with no face is a 400.
The detector loads Flax only when asked for. Every error is ``{"error": message, "status": code}``:
400 malformed JSON / bad base64 / undecodable image / missing, unknown or
wrong-typed field / an image serving refuses (not square without landmarks,
blank, eyes too close), 404
unknown path, 405 wrong method, 408 body not sent in time, 411 no
Content-Length, 413 body over ``--max_body`` bytes or image over
``--max_pixels``; a 5xx only for a fault of the server itself.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence

import numpy as np

from deocc_jax import serving
from deocc_jax.http_requests import MAX_PIXELS, RequestError, decode_image, field, landmarks_field

__all__ = ["RequestError", "Service", "load_detector", "make_server", "main"]

MAX_BODY = 10 * 2**20  # bytes of one request body
DRAIN_LIMIT = 64 * 2**20  # an oversized body up to this is read (and dropped) after the 413
NO_DETECTOR = (
    "face detection is not available: this server was started without a detector "
    "(deocc-serve --detector=mtcnn or --detector=dlib; the export has none, and "
    "deocc_jax.serving loads no Flax); send aligned square face crops, "
    "or 5 landmarks per image, to /verify and /embed"
)
DETECTORS = ("mtcnn", "mtcnn:FILE.npz", "dlib")
ROUTES = {"/healthz": "GET", "/verify": "POST", "/embed": "POST", "/detect": "POST"}
FIELDS = {
    "/verify": ("image_a", "image_b", "landmarks_a", "landmarks_b", "mask_a", "mask_b", "aligned"),
    "/embed": ("image", "landmarks", "mask", "aligned"),
    "/detect": ("image",),
}


# ------------------------------------------------------------------ the service


class Service:
  """The endpoints on a recogniser, independent of HTTP (``handle`` returns status + JSON).

  Args:
    recognizer: a loaded :class:`deocc_jax.serving.ExportedRecognizer`.
    max_pixels: the largest decoded image (413 above it).
    concurrency: recogniser calls run at once (the rest wait).
  """

  def __init__(
      self,
      recognizer: serving.ExportedRecognizer,
      max_pixels: int = MAX_PIXELS,
      concurrency: int = 1,
      detector: Callable[[np.ndarray], list[Any]] | None = None,
  ):
    self.rec = recognizer
    self.max_pixels = int(max_pixels)
    self.detector = detector
    self._slots = threading.BoundedSemaphore(max(1, int(concurrency)))

  def _detect(self, image: np.ndarray) -> list[Any]:
    with self._slots:
      try:
        return self.detector(image)
      except ValueError as e:
        raise RequestError(400, str(e)) from None

  def _face(self, body: dict[str, Any], suffix: str) -> tuple[np.ndarray, Any, Any]:
    name = "image" + suffix
    image = decode_image(field(body, name), name, self.max_pixels)
    lm = landmarks_field(body.get("landmarks" + suffix), "landmarks" + suffix)
    aligned = body.get("aligned", False)
    if not isinstance(aligned, bool):
      raise RequestError(400, f"field 'aligned' must be true or false, got {aligned!r}")
    if lm is None and self.detector is not None and not aligned:
      faces = self._detect(image)
      if not faces:
        h, w = image.shape[:2]
        raise RequestError(400, f"{name}: no face found in the {w}x{h} image")
      lm = faces[0].landmarks  # the largest face
    mask = field(body, "mask" + suffix, required=False)
    if mask is not None:
      mask = decode_image(mask, "mask" + suffix, self.max_pixels, mode="L")
    return image, lm, mask

  def _run(self, fn: Callable[[], Any]) -> Any:
    """Runs a recogniser call; serving's input checks (ValueError) are the client's 400."""
    with self._slots:
      try:
        return fn()
      except ValueError as e:
        raise RequestError(400, str(e)) from None

  def detect(self, body: dict[str, Any]) -> dict[str, Any]:
    image = decode_image(field(body, "image"), "image", self.max_pixels)
    faces = self._detect(image)
    h, w = image.shape[:2]
    return {"width": int(w), "height": int(h), "faces": [f.to_dict() for f in faces]}

  def healthz(self) -> dict[str, Any]:
    meta = self.rec.metadata
    return {
        "status": "ok",
        "detector": getattr(self.detector, "spec", None),
        "format": meta.get("format"),
        "recognizer": meta.get("recognizer"),
        "input_kind": self.rec.input_kind,
        "embedding_dim": self.rec.embedding_dim,
        "resolution": self.rec.resolution,
        "threshold": self.rec.threshold,
        "runtime": self.rec.runtime,
    }

  def verify(self, body: dict[str, Any]) -> dict[str, Any]:
    a, lm_a, m_a = self._face(body, "_a")
    b, lm_b, m_b = self._face(body, "_b")
    out = self._run(
        lambda: self.rec.verify(a, b, mask_a=m_a, mask_b=m_b, landmarks_a=lm_a, landmarks_b=lm_b)
    )
    return {
        "score": float(out["score"]),
        "threshold": float(out["threshold"]),
        "same": bool(out["same"]),
    }

  def embed(self, body: dict[str, Any]) -> dict[str, Any]:
    img, lm, mask = self._face(body, "")
    e = self._run(lambda: self.rec.embed([img], masks=[mask], landmarks=[lm]))[0]
    return {"embedding": [float(v) for v in e], "dim": int(e.shape[0])}

  def handle(self, method: str, path: str, body: bytes | None) -> tuple[int, dict[str, Any]]:
    """(status, JSON payload) of one request; a client error never gives a 5xx."""
    try:
      path = path.split("?", 1)[0]
      if path not in ROUTES:
        raise RequestError(404, f"unknown path {path!r} (endpoints: {', '.join(sorted(ROUTES))})")
      if method != ROUTES[path]:
        raise RequestError(405, f"{path} takes {ROUTES[path]}, not {method}")
      if path == "/healthz":
        return 200, self.healthz()
      if path == "/detect" and self.detector is None:
        return 501, {"error": NO_DETECTOR, "status": 501}
      try:
        req = json.loads(body or b"")
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(400, f"malformed JSON body: {e}") from None
      except RecursionError:
        raise RequestError(400, "malformed JSON body: nested too deeply") from None
      if not isinstance(req, dict):
        raise RequestError(400, f"the JSON body must be an object, got {type(req).__name__}")
      unknown = sorted(set(req) - set(FIELDS[path]))
      if unknown:  # e.g. a misspelt 'landmark' would otherwise be ignored silently
        raise RequestError(400, f"unknown field(s) {unknown} (fields: {', '.join(FIELDS[path])})")
      return 200, {"/verify": self.verify, "/embed": self.embed, "/detect": self.detect}[path](req)
    except RequestError as e:
      return e.status, {"error": e.message, "status": e.status}
    except Exception as e:  # noqa: BLE001 -- a fault of the server: 500 with its name, logged
      traceback.print_exc()
      msg = " ".join(f"internal error: {type(e).__name__}: {e}".split())
      return 500, {"error": msg, "status": 500}


# ------------------------------------------------------------------ HTTP


class _Handler(BaseHTTPRequestHandler):
  """One connection (HTTP/1.1 keep-alive); every response is JSON."""

  server_version = "deocc-serve"
  sys_version = ""
  protocol_version = "HTTP/1.1"
  disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms ACK wait
  error_content_type = "application/json"

  def setup(self) -> None:
    self.timeout = self.server.request_timeout
    super().setup()

  def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- the stdlib's name
    if not self.server.quiet:
      super().log_message(format, *args)

  def _send(
      self,
      status: int,
      payload: dict[str, Any],
      close: bool = False,
      extra: dict[str, str] | None = None,
  ) -> None:
    data = json.dumps(payload).encode()
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    for k, v in (extra or {}).items():
      self.send_header(k, v)
    if close:
      self.close_connection = True
      self.send_header("Connection", "close")
    try:
      self.end_headers()
      if self.command != "HEAD":
        self.wfile.write(data)
      self.wfile.flush()
    except OSError:  # the client has gone
      self.close_connection = True

  def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
    """The stdlib's protocol errors (bad request line, headers too long, ...) as JSON."""
    self.log_error("code %d, message %s", code, message)
    if self.request_version == "HTTP/0.9":  # an unparsable request line: answer with headers
      self.request_version = "HTTP/1.1"
    text = message or HTTPStatus(code).phrase
    self._send(code, {"error": " ".join(text.split()), "status": code}, close=True)

  def _length(self) -> int | None:
    """The Content-Length (0 if absent), None if it is not a non-negative integer."""
    raw = self.headers.get("Content-Length", "0")
    try:
      length = int(raw)
    except ValueError:
      return None
    return length if length >= 0 else None

  def handle_expect_100(self) -> bool:
    """``Expect: 100-continue`` (curl, for bodies over 1 KB): refuses an oversized body unsent."""
    length = self._length()
    if length is not None and length > self.server.max_body:
      self._send(413, self._too_large(length), close=True)
      return False
    return super().handle_expect_100()

  def _too_large(self, length: int) -> dict[str, Any]:
    limit = self.server.max_body
    return {"error": f"body of {length} bytes is over the limit of {limit} bytes", "status": 413}

  def _drop_body(self, length: int) -> None:
    """Reads and drops up to ``length`` body bytes (so the client sees the response),
    for at most 10 s."""
    left = min(length, DRAIN_LIMIT)
    deadline = time.monotonic() + 10.0
    try:
      self.connection.settimeout(2.0)
      while left > 0 and time.monotonic() < deadline:
        chunk = self.rfile.read(min(left, 1 << 16))
        if not chunk:
          break
        left -= len(chunk)
    except OSError:
      pass

  def _body(self) -> bytes | None:
    """The request body, or None after an error response (the connection then closes)."""
    if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
      self._send(
          411,
          {"error": "chunked bodies are not accepted: send Content-Length", "status": 411},
          close=True,
      )
      return None
    if self.headers.get("Content-Length") is None:
      self._send(411, {"error": "missing Content-Length header", "status": 411}, close=True)
      return None
    length = self._length()
    if length is None:
      raw = self.headers.get("Content-Length")
      self._send(400, {"error": f"bad Content-Length {raw!r}", "status": 400}, close=True)
      return None
    if length > self.server.max_body:
      self._send(413, self._too_large(length), close=True)
      self._drop_body(length)
      return None
    parts, got = [], 0
    try:
      while got < length:  # read1: what arrived before a timeout is counted, not lost
        chunk = self.rfile.read1(min(length - got, 1 << 20))
        if not chunk:
          break
        parts.append(chunk)
        got += len(chunk)
    except OSError:  # the socket timeout (--timeout) or a reset
      pass
    if got != length:
      msg = f"body ended after {got} of {length} bytes"
      self._send(408, {"error": msg, "status": 408}, close=True)
      return None
    return b"".join(parts)

  def _dispatch(self) -> None:
    body = None
    if self.command == "POST":
      body = self._body()
      if body is None:
        return
    status, payload = self.server.service.handle(self.command, self.path, body)
    unread = self.command != "POST" and self._length() != 0  # a body not read: close
    allow = ROUTES.get(self.path.split("?", 1)[0])
    extra = {"Allow": allow} if status == 405 and allow else None
    self._send(status, payload, close=unread, extra=extra)

  do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

  def __getattr__(self, name: str) -> Any:
    if name.startswith("do_"):  # any other method: 405 from the routes, not the stdlib's 501
      return self._dispatch
    raise AttributeError(name)


class _Server(ThreadingHTTPServer):
  daemon_threads = True
  request_queue_size = 64

  def __init__(
      self,
      address: tuple[str, int],
      service: Service,
      max_body: int,
      request_timeout: float,
      quiet: bool,
  ):
    if ":" in address[0]:
      self.address_family = socket.AF_INET6
    self.service = service
    self.max_body = int(max_body)
    self.request_timeout = float(request_timeout)
    self.quiet = quiet
    super().__init__(address, _Handler)


def _warm_up(rec: serving.ExportedRecognizer) -> None:
  """Compiles / loads what requests use: batches of 1 and 2, with and without a mask."""
  r = rec.resolution
  face = np.random.default_rng(0).integers(0, 256, (r, r, 3), dtype=np.uint8)  # not blank
  mask = np.zeros((r, r), np.uint8)
  mask[: r // 2] = 255
  rec.verify(face, face)
  rec.embed([face])
  if rec.input_kind in ("completed", "completed_predicted"):
    rec.verify(face, face, mask_a=mask, mask_b=mask)
    rec.embed([face], masks=[mask])


def load_detector(spec: str) -> Callable[[np.ndarray], list[Any]]:
  """The face detector ``spec`` names ('mtcnn', 'mtcnn:FILE.npz' or 'dlib'), loaded and
  warmed up: image -> faces (``deocc_jax.inference.DetectedFace``), largest first.
  Imports the detector (Flax for MTCNN) only here."""
  from deocc_jax.inference.locate import align_mode, detect_faces

  try:
    mode = align_mode(spec)[0]
  except ValueError:
    mode = ""
  if mode not in ("mtcnn", "dlib"):
    raise ValueError(f"--detector must be one of {', '.join(DETECTORS)}, got {spec!r}")

  def detect(image: np.ndarray) -> list[Any]:
    return detect_faces(image, spec)

  detect(np.full((160, 160, 3), 127, np.uint8))  # loads the weights, compiles / warms up
  detect.spec = spec  # type: ignore[attr-defined]
  return detect


def load_recognizer(
    folder: str,
    runtime: str = "jax",
    providers: Sequence[str] | None = None,
    threshold: float | None = None,
    max_batch: int = 64,
) -> serving.ExportedRecognizer:
  """The export in ``folder``; ``providers`` (onnxruntime execution providers) need runtime 'onnx'."""
  kwargs: dict[str, Any] = {}
  if providers:
    if runtime != "onnx":
      raise ValueError("--providers applies to --runtime=onnx only")
    import onnxruntime

    have = onnxruntime.get_available_providers()
    missing = [p for p in providers if p not in have]
    if missing:
      raise ValueError(f"onnxruntime providers {missing} not available (available: {have})")
    kwargs["providers"] = list(providers)
  return serving.ExportedRecognizer(
      folder, runtime=runtime, max_batch=max_batch, threshold=threshold, **kwargs
  )


def make_server(
    recognizer: serving.ExportedRecognizer,
    host: str = "127.0.0.1",
    port: int = 0,
    max_body: int = MAX_BODY,
    max_pixels: int = MAX_PIXELS,
    concurrency: int = 1,
    request_timeout: float = 30.0,
    quiet: bool = False,
    warm_up: bool = True,
    detector: Callable[[np.ndarray], list[Any]] | None = None,
) -> ThreadingHTTPServer:
  """A bound (not yet serving) server; ``server.server_address`` has the port. Run
  ``serve_forever()`` (in a thread for tests), then ``shutdown()`` and ``server_close()``.
  ``detector``: :func:`load_detector`'s (enables /detect and photos without landmarks)."""
  if warm_up:
    _warm_up(recognizer)
  service = Service(recognizer, max_pixels=max_pixels, concurrency=concurrency, detector=detector)
  return _Server((host, int(port)), service, max_body, request_timeout, quiet)


# ------------------------------------------------------------------ CLI


class _Parser(argparse.ArgumentParser):

  def error(self, message: str):  # one line, status 2, like the other commands
    print(f"error: {message} (see --help)", file=sys.stderr, flush=True)
    sys.exit(2)


def _parser() -> argparse.ArgumentParser:
  p = _Parser(
      prog="deocc-serve",
      description="HTTP JSON server (POST /verify, /embed, /detect; GET /healthz) over an "
      "exported recogniser (python -m deocc_jax.export).",
  )
  p.add_argument(
      "export_dir", metavar="EXPORT_DIR", help="the export folder (metadata.json + artifacts)"
  )
  p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
  p.add_argument(
      "--port",
      type=int,
      default=8000,
      help="port (default 8000; 0: any free one; the bound address is printed)",
  )
  p.add_argument("--runtime", default="jax", choices=("jax", "onnx"))
  p.add_argument(
      "--providers",
      default=None,
      help="comma-separated onnxruntime execution providers (--runtime=onnx), e.g. CPUExecutionProvider",
  )
  p.add_argument(
      "--threshold", type=float, default=None, help="cosine threshold (default: the export's)"
  )
  p.add_argument(
      "--max_body",
      type=int,
      default=MAX_BODY,
      help=f"largest request body in bytes (413 above; default {MAX_BODY})",
  )
  p.add_argument(
      "--max_pixels",
      type=int,
      default=MAX_PIXELS,
      help=f"largest decoded image in pixels (413 above; default {MAX_PIXELS})",
  )
  p.add_argument(
      "--detector",
      default=None,
      help="face detector for /detect and for photos sent without landmarks: mtcnn "
      "(facenet-pytorch's weights), mtcnn:FILE.npz (converted: python -m deocc_jax.convert "
      "--arch mtcnn) or dlib (pip install -e '.[dlib]'); loads Flax. Default: none (501)",
  )
  p.add_argument("--concurrency", type=int, default=1, help="recogniser calls at once (default 1)")
  p.add_argument("--max_batch", type=int, default=64, help="serving's largest batch")
  p.add_argument(
      "--timeout",
      type=float,
      default=30.0,
      help="seconds a connection may idle or take to send its request",
  )
  p.add_argument(
      "--no_warmup", action="store_true", help="skip compiling the artifacts before serving"
  )
  p.add_argument("--quiet", action="store_true", help="no access log on stderr")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  """``deocc-serve EXPORT_DIR``: serves until SIGINT / SIGTERM; returns the exit status."""
  import signal

  args = _parser().parse_args(argv)
  for name in ("max_body", "max_pixels", "concurrency", "max_batch"):
    if getattr(args, name) < 1:
      _parser().error(f"--{name} must be >= 1")
  if not args.timeout > 0:
    _parser().error("--timeout must be > 0")
  if not 0 <= args.port <= 65535:
    _parser().error("--port must be in 0..65535")
  providers = (
      [s.strip() for s in args.providers.split(",") if s.strip()] if args.providers else None
  )
  try:
    rec = load_recognizer(args.export_dir, args.runtime, providers, args.threshold, args.max_batch)
    detector = load_detector(args.detector) if args.detector else None
    server = make_server(
        rec,
        args.host,
        args.port,
        max_body=args.max_body,
        max_pixels=args.max_pixels,
        concurrency=args.concurrency,
        request_timeout=args.timeout,
        quiet=args.quiet,
        warm_up=not args.no_warmup,
        detector=detector,
    )
  except KeyError as e:
    print(f"error: {args.export_dir}/metadata.json lacks the key {e}", file=sys.stderr, flush=True)
    return 2
  except (OSError, ValueError, ImportError) as e:
    print("error: " + " ".join(str(e).split()), file=sys.stderr, flush=True)
    return 2

  def stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt

  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, stop)
  host, port = server.server_address[:2]
  shown = f"[{host}]" if ":" in host else host
  print(f"deocc-serve: {args.export_dir} ({rec.runtime}) on http://{shown}:{port}", flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
  return 0


if __name__ == "__main__":
  sys.exit(main())
