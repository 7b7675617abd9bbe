"""The HTTP server (deocc_jax/http_server.py) over an export: real requests on
127.0.0.1 against deocc_jax.serving's own Python API, and every class of bad
input answered by a 4xx JSON error (never a 5xx)."""

import base64
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from PIL import Image

from deocc_jax import http_server, serving
from tests.helpers import paths

ROOT = str(paths.ROOT)
from tests.helpers import http_toy_export as toy  # noqa: E402

MAX_BODY = 64 * 1024
MAX_PIXELS = 200 * 200


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return toy.write_toy_export(str(tmp_path_factory.mktemp("toy") / "model"))


@pytest.fixture(scope="module")
def ref(folder):
  """serving's Python API on the export (its own instance, not the server's)."""
  return serving.ExportedRecognizer(folder)


def _start(rec, **kw):
  kw = {"max_body": MAX_BODY, "max_pixels": MAX_PIXELS, "quiet": True, **kw}
  srv = http_server.make_server(rec, "127.0.0.1", 0, **kw)
  threading.Thread(target=srv.serve_forever, daemon=True).start()
  return srv


@pytest.fixture(scope="module")
def server(folder):
  srv = _start(serving.ExportedRecognizer(folder))
  yield srv.server_address[1]
  srv.shutdown()
  srv.server_close()


def _png(arr, fmt="PNG"):
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, fmt)
  return buf.getvalue()


def _b64(arr, fmt="PNG"):
  return base64.b64encode(_png(arr, fmt)).decode()


def _img(seed, shape=(toy.RES, toy.RES, 3)):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _call(port, method, path, body=None, headers=None, conn=None):
  """(status, headers, decoded JSON) of one request; ``body`` a dict is sent as JSON."""
  c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
  data = json.dumps(body).encode() if isinstance(body, dict) else body
  c.request(method, path, body=data, headers=headers or {})
  r = c.getresponse()
  raw = r.read()
  assert r.getheader("Content-Type") == "application/json", raw[:200]
  if conn is None:
    c.close()
  return r.status, r, json.loads(raw)


# ------------------------------------------------------------------ agreement with serving


def test_healthz(server, ref):
  status, _, out = _call(server, "GET", "/healthz")
  assert status == 200 and out["status"] == "ok"
  assert out["embedding_dim"] == ref.embedding_dim == toy.DIM
  assert out["resolution"] == toy.RES and out["threshold"] == toy.THRESHOLD
  assert out["input_kind"] == "completed_predicted" and out["runtime"] == "jax"


def test_verify_agrees_with_serving(server, ref):
  a, b = _img(1), _img(2)
  big = _img(3, (40, 40, 3))  # square crop, resized to R x R
  photo = _img(4, (30, 36, 3))  # not square: aligned by its landmarks
  lm = np.array([[10.0, 12.0], [22.0, 12.5], [16.0, 18.0], [11.0, 23.0], [21.0, 23.0]])
  gray = _img(5, (toy.RES, toy.RES))
  mask = np.zeros((toy.RES, toy.RES), np.uint8)
  mask[4:10, 2:14] = 255
  cases = [
      ({"image_a": _b64(a), "image_b": _b64(a)}, (a, a), {}),
      ({"image_a": _b64(a), "image_b": _b64(b)}, (a, b), {}),
      ({"image_a": _b64(big), "image_b": _b64(gray)}, (big, gray), {}),
      (
          {"image_a": _b64(photo), "landmarks_a": lm.tolist(), "image_b": _b64(b)},
          (photo, b),
          {"landmarks_a": lm},
      ),
      (
          {"image_a": "data:image/png;base64," + _b64(a), "mask_a": _b64(mask), "image_b": _b64(b)},
          (a, b),
          {"mask_a": mask},
      ),
  ]
  scores = []
  for body, (x, y), kw in cases:
    status, _, out = _call(server, "POST", "/verify", body)
    want = ref.verify(x, y, **kw)
    assert status == 200, out
    assert set(out) == {"score", "threshold", "same"}
    assert out["score"] == pytest.approx(want["score"], abs=1e-6)
    assert out["same"] == want["same"] == (out["score"] >= toy.THRESHOLD)
    assert out["threshold"] == want["threshold"] == toy.THRESHOLD
    scores.append(out["score"])
  assert scores[0] == pytest.approx(1.0, abs=1e-5) and scores[1] < 0.99
  assert scores[4] != pytest.approx(scores[1], abs=1e-4)  # the given mask was used


def test_embed_returns_serving_embedding(server, ref):
  img = _img(7, (24, 24, 3))
  for fmt in ("PNG", "JPEG", "BMP"):
    status, _, out = _call(server, "POST", "/embed", {"image": _b64(img, fmt)})
    assert status == 200, out
    decoded = np.asarray(Image.open(io.BytesIO(_png(img, fmt))).convert("RGB"))
    want = ref.embed([decoded])[0]
    assert out["dim"] == len(out["embedding"]) == ref.embedding_dim == toy.DIM
    np.testing.assert_allclose(out["embedding"], want, atol=1e-6)
    assert np.linalg.norm(out["embedding"]) == pytest.approx(1.0, abs=1e-5)


def test_concurrent_requests_get_their_own_answers(folder, ref):
  """8 clients at once against a server running 2 recogniser calls at a time."""
  srv = _start(serving.ExportedRecognizer(folder), concurrency=2, warm_up=False)
  pairs = [(_img(100 + i), _img(200 + i)) for i in range(24)]
  got = {}

  def client(k):
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=120)
    for i in range(k, len(pairs), 8):
      a, b = pairs[i]
      got[i] = _call(0, "POST", "/verify", {"image_a": _b64(a), "image_b": _b64(b)}, conn=conn)
    conn.close()

  try:
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
  finally:
    srv.shutdown()
    srv.server_close()
  assert sorted(got) == list(range(len(pairs)))
  for i, (a, b) in enumerate(pairs):
    status, _, out = got[i]
    assert status == 200 and out["score"] == pytest.approx(ref.verify(a, b)["score"], abs=1e-6)


def test_onnx_runtime_with_providers(folder):
  rec = http_server.load_recognizer(folder, "onnx", ["CPUExecutionProvider"])
  srv = _start(rec)
  try:
    a, b = _img(11), _img(12)
    status, _, out = _call(
        srv.server_address[1], "POST", "/verify", {"image_a": _b64(a), "image_b": _b64(b)}
    )
    want = serving.ExportedRecognizer(folder, runtime="onnx").verify(a, b)
    assert status == 200 and out["score"] == pytest.approx(want["score"], abs=1e-6)
  finally:
    srv.shutdown()
    srv.server_close()
  with pytest.raises(ValueError, match="NoSuchExecutionProvider"):
    http_server.load_recognizer(folder, "onnx", ["NoSuchExecutionProvider"])
  with pytest.raises(ValueError, match="--runtime=onnx"):
    http_server.load_recognizer(folder, "jax", ["CPUExecutionProvider"])


# ------------------------------------------------------------------ bad input -> 4xx JSON


def _bad_cases():
  ok = _b64(_img(1))
  png = _png(_img(1))
  blank = _b64(np.full((toy.RES, toy.RES, 3), 90, np.uint8))
  wide = _b64(_img(2, (16, 20, 3)))
  small_mask = _b64(np.zeros((8, 8), np.uint8))
  huge_img = _b64(np.zeros((250, 250, 3), np.uint8))  # compresses to < MAX_BODY
  return [
      ("POST", "/verify", b"{bad", 400, "malformed JSON"),
      ("POST", "/verify", b"\xff\xfe\x00", 400, "malformed JSON"),
      ("POST", "/verify", b"[1, 2]", 400, "must be an object"),
      ("POST", "/verify", b"[" * 20000, 400, "malformed JSON"),
      ("POST", "/verify", b"", 400, "malformed JSON"),
      ("POST", "/verify", {"image_a": ok}, 400, "missing field 'image_b'"),
      ("POST", "/embed", {"img": ok}, 400, "unknown field(s) ['img']"),
      ("POST", "/embed", {}, 400, "missing field 'image'"),
      ("POST", "/verify", {"image_a": ok, "image_b": ok, "landmark_a": []}, 400, "'landmark_a'"),
      ("POST", "/embed", {"image": 5}, 400, "'image' must be a base64 string"),
      ("POST", "/embed", {"image": "@@not base64!"}, 400, "'image' is not valid base64"),
      ("POST", "/embed", {"image": "data:image/png,abc"}, 400, "';base64,'"),
      (
          "POST",
          "/embed",
          {"image": base64.b64encode(b"hello").decode()},
          400,
          "not a decodable image",
      ),
      (
          "POST",
          "/embed",
          {"image": base64.b64encode(png[:60]).decode()},
          400,
          "not a decodable image",
      ),
      ("POST", "/embed", {"image": wide}, 400, "not square"),
      ("POST", "/embed", {"image": blank}, 400, "blank"),
      ("POST", "/embed", {"image": ok, "landmarks": [[1, 2]]}, 400, "'landmarks' must be 5"),
      ("POST", "/embed", {"image": ok, "landmarks": "eyes"}, 400, "'landmarks' must be 5"),
      ("POST", "/embed", {"image": ok, "mask": small_mask}, 400, "mask"),
      ("POST", "/embed", {"image": ok, "mask": "%%"}, 400, "'mask' is not valid base64"),
      ("POST", "/embed", {"image": huge_img}, 413, "over 40000 pixels"),
      ("POST", "/embed", b"x" * (MAX_BODY + 1), 413, f"limit of {MAX_BODY} bytes"),
      ("GET", "/verify", None, 405, "takes POST"),
      ("PUT", "/embed", b"{}", 405, "takes POST"),
      ("POST", "/healthz", b"{}", 405, "takes GET"),
      ("BREW", "/healthz", None, 405, "takes GET"),
      ("GET", "/nope", None, 404, "unknown path '/nope'"),
      ("POST", "/embed/extra", b"{}", 404, "unknown path"),
  ]


def test_bad_input_gets_4xx_json(server):
  for method, path, body, want, text in _bad_cases():
    status, r, out = _call(server, method, path, body)
    assert (status, out["status"]) == (want, want), (method, path, out)
    assert text in out["error"], (text, out)
    assert "\n" not in out["error"]
    if want == 405:
      assert r.getheader("Allow") in ("GET", "POST")
  assert _call(server, "GET", "/healthz")[0] == 200  # still serving


def test_detect_is_501_naming_what_is_missing(server):
  status, _, out = _call(server, "POST", "/detect", {"image": _b64(_img(1))})
  assert status == 501 and "--detector=mtcnn" in out["error"] and "Flax" in out["error"]
  assert _call(server, "GET", "/detect")[0] == 405


def test_keep_alive_survives_a_bad_request(server):
  conn = http.client.HTTPConnection("127.0.0.1", server, timeout=60)
  assert _call(server, "POST", "/embed", b"{bad", conn=conn)[0] == 400
  status, _, out = _call(server, "POST", "/embed", {"image": _b64(_img(1))}, conn=conn)
  assert status == 200 and out["dim"] == toy.DIM
  conn.close()


def _raw(port, data, timeout=30):
  """The status line and JSON body of a hand-written request."""
  with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
    s.sendall(data)
    buf = b""
    while True:
      chunk = s.recv(65536)
      if not chunk:
        break
      buf += chunk
  head, _, body = buf.partition(b"\r\n\r\n")
  return int(head.split()[1]), json.loads(body)


def test_framing_errors(server):
  status, out = _raw(server, b"POST /embed HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n{}")
  assert status == 411 and "Content-Length" in out["error"]
  status, out = _raw(server, b"POST /embed HTTP/1.1\r\nContent-Length: abc\r\n\r\n")
  assert status == 400 and "Content-Length" in out["error"]
  status, out = _raw(server, b"POST /embed HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
  assert status == 411
  status, out = _raw(server, b"GARBAGE\r\n\r\n")
  assert status == 400 and out["status"] == 400
  # Expect: 100-continue with a huge body: refused before the body is sent
  status, out = _raw(
      server, b"POST /embed HTTP/1.1\r\nContent-Length: 999999999\r\nExpect: 100-continue\r\n\r\n"
  )
  assert status == 413 and "999999999" in out["error"]


def test_slow_body_is_408(folder):
  srv = _start(serving.ExportedRecognizer(folder), request_timeout=0.5, warm_up=False)
  try:
    status, out = _raw(
        srv.server_address[1], b"POST /embed HTTP/1.1\r\nContent-Length: 100\r\n\r\n{}"
    )
    assert status == 408 and "2 of 100 bytes" in out["error"]
  finally:
    srv.shutdown()
    srv.server_close()


# ------------------------------------------------------------------ the command


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")


def test_help_and_startup_errors(tmp_path):
  cmd = [sys.executable, "-m", "deocc_jax.http_server"]
  r = subprocess.run(
      cmd + ["--help"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
  )
  assert r.returncode == 0 and "--max_body" in r.stdout and "--providers" in r.stdout
  r = subprocess.run(
      cmd + [str(tmp_path / "nowhere")],
      cwd=ROOT,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert r.returncode == 2 and "Traceback" not in r.stderr
  assert r.stderr.strip().splitlines()[-1].startswith("error:") and "nowhere" in r.stderr
  r = subprocess.run(
      cmd + [str(tmp_path), "--port=70000"],
      cwd=ROOT,
      env=_env(),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert r.returncode == 2 and "--port" in r.stderr


def test_command_serves_without_flax_and_stops_on_sigterm(folder, ref):
  """main() on port 0 prints its address, serves, and returns 0 on SIGTERM, having
  loaded no Flax / ml_collections / absl."""
  script = textwrap.dedent(f"""
      import sys
      from deocc_jax import http_server
      code = http_server.main([{folder!r}, "--port=0", "--quiet"])
      bad = sorted(m for m in sys.modules if m.split(".")[0] in ("flax", "ml_collections", "absl"))
      print("loaded:", bad, flush=True)
      sys.exit(code if not bad else 3)
  """)
  proc = subprocess.Popen(
      [sys.executable, "-c", script],
      cwd=ROOT,
      env=_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  try:
    line = proc.stdout.readline()
    assert "http://127.0.0.1:" in line, (
        line,
        proc.stderr.read() if proc.poll() is not None else "",
    )
    port = int(line.rsplit(":", 1)[1])
    a, b = _img(21), _img(22)
    status, _, out = _call(port, "POST", "/verify", {"image_a": _b64(a), "image_b": _b64(b)})
    assert status == 200 and out["score"] == pytest.approx(ref.verify(a, b)["score"], abs=1e-6)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, (proc.stdout.read(), proc.stderr.read()[-3000:])
    assert proc.stdout.read().strip() == "loaded: []"
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


# ------------------------------------------------------------------ photos: --detector


def test_detector_finds_faces_and_aligns_photos_without_landmarks(folder, ref):
  """--detector=mtcnn: /detect gives infer's faces; /verify and /embed of photos sent
  without landmarks align the largest face as serving does with its landmarks."""
  from deocc_jax import inference
  from tests.helpers import photos as photos_lib

  pics = photos_lib.face_photos()
  a, b = pics["obama"], pics["biden"]
  srv = _start(
      serving.ExportedRecognizer(folder),
      max_body=8 * 2**20,
      max_pixels=4096 * 4096,
      detector=http_server.load_detector("mtcnn"),
  )
  port = srv.server_address[1]
  try:
    status, _, out = _call(port, "POST", "/detect", {"image": _b64(a)})
    want = inference.detect_faces(a, "mtcnn")
    assert status == 200 and (out["width"], out["height"]) == (a.shape[1], a.shape[0])
    assert out["faces"] == [f.to_dict() for f in want] and len(want) >= 1
    status, _, out = _call(port, "POST", "/verify", {"image_a": _b64(a), "image_b": _b64(b)})
    lm_b = inference.detect_faces(b, "mtcnn")[0].landmarks
    exp = ref.verify(a, b, landmarks_a=want[0].landmarks, landmarks_b=lm_b)
    assert status == 200 and out["score"] == pytest.approx(exp["score"], abs=1e-6), out
    status, _, out = _call(port, "POST", "/embed", {"image": _b64(b)})
    e = ref.embed([b], landmarks=[lm_b])[0]
    assert status == 200 and np.allclose(out["embedding"], e, atol=1e-6)
    crop = _img(5)  # an aligned crop: sent as it is with "aligned": true
    status, _, out = _call(port, "POST", "/embed", {"image": _b64(crop), "aligned": True})
    assert status == 200 and np.allclose(out["embedding"], ref.embed([crop])[0], atol=1e-6)
    noise = _img(6, (200, 200, 3))
    status, _, out = _call(port, "POST", "/embed", {"image": _b64(noise)})
    assert status == 400 and "image: no face found in the 200x200 image" in out["error"]
    status, _, out = _call(port, "POST", "/embed", {"image": _b64(crop), "aligned": "yes"})
    assert status == 400 and "'aligned' must be true or false" in out["error"]
    assert _call(port, "GET", "/healthz")[2]["detector"] == "mtcnn"
  finally:
    srv.shutdown()
    srv.server_close()


def test_unknown_detector_is_refused():
  for bad in ("hog", "none", "dlib:x.npz"):
    with pytest.raises(ValueError, match=f"--detector must be one of .*got '{bad}'"):
      http_server.load_detector(bad)


# ------------------------------------------------------------------ the tiny run's export


@pytest.mark.slow
def test_server_over_tiny_run_export(tiny_run, tmp_path_factory):
  """The server over the tiny trained run's real export agrees with serving."""
  from deocc_jax import export as export_lib
  from deocc_jax import inference
  from deocc_jax.runs import workdir as workdir_lib
  from tests.helpers import tiny_run as tiny_run_lib

  _, workdir = tiny_run
  fr = inference.FaceRecognizer.from_run(config=workdir_lib.read_config(workdir), workdir=workdir)
  out = str(tmp_path_factory.mktemp("tiny_export") / "model")
  export_lib.export_recognizer(fr, out, onnx=False, workdir=workdir)
  srv = _start(serving.ExportedRecognizer(out))
  try:
    src = tiny_run_lib.held_out_source()
    occluded, mask = tiny_run_lib.occluded(src[2], seed=3)
    rec = serving.ExportedRecognizer(out)
    for (x, mx), y in (
        ((src[0]["image"], None), src[1]["image"]),
        ((occluded, mask), src[5]["image"]),
    ):
      body = {"image_a": _b64(x), "image_b": _b64(y)}
      if mx is not None:
        body["mask_a"] = _b64(mx.astype(np.uint8) * 255)
      status, _, got = _call(srv.server_address[1], "POST", "/verify", body)
      want = rec.verify(x, y, mask_a=mx)
      assert status == 200 and got["score"] == pytest.approx(want["score"], abs=1e-6)
      assert got["same"] == want["same"] and got["threshold"] == fr.threshold
    status, _, e = _call(srv.server_address[1], "POST", "/embed", {"image": _b64(src[0]["image"])})
    assert e["dim"] == rec.embedding_dim and np.allclose(
        e["embedding"], rec.embed([src[0]["image"]])[0], atol=1e-6
    )
  finally:
    srv.shutdown()
    srv.server_close()
