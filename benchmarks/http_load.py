"""Bounded load on ``deocc-serve`` (deocc_jax/http_server.py) on 127.0.0.1:
latency, throughput, 5xx count and the server's memory.

  python benchmarks/http_load.py [--export=DIR | --workdir=RUN] [--requests=2000]
      [--clients=8] [--time_cap=900] [--runtime=jax]

Starts ``python -m deocc_jax.http_server EXPORT --port=0 --quiet`` as a
subprocess on 127.0.0.1 (``--export``: an existing export folder;
``--workdir``: a trained and evaluated run, exported first without ONNX;
neither: the toy export of ``tests/helpers/http_toy_export.py``), then ``--clients``
threads send ``--requests`` requests in all over keep-alive connections, a
fixed seeded mix: valid /verify and /embed (aligned crops, larger square crops,
photos with landmarks, masks), /healthz, and bad requests of every class
(malformed JSON, bad base64, undecodable image, missing field, not square,
wrong method, unknown path, and bodies over the 10 MB limit). Every response
is checked against its expected status. Stops issuing at ``--time_cap``
seconds. The server's RSS (``/proc/PID/status``) is read after start-up
(warmed up), after the first half of the requests and at the end.

Writes ``benchmarks/results/http_load.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_BODY = 10 * 2**20


def _png(arr: np.ndarray) -> str:
  from PIL import Image

  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, "PNG")
  return base64.b64encode(buf.getvalue()).decode()


def _rss_kib(pid: int) -> dict[str, int]:
  out = {}
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      key, _, val = line.partition(":")
      if key in ("VmRSS", "VmHWM", "Threads"):
        out[key] = int(val.split()[0])
  return out


def workload(res: int, n: int, seed: int = 0) -> list[tuple[str, str, str, bytes, int]]:
  """``n`` requests (kind, method, path, body, expected status), a seeded mix."""
  rng = np.random.default_rng(seed)

  def face(size: int = res) -> np.ndarray:
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)

  # landmarks for a photo: the face spans ~60% of a 3R x 3R image, eyes > 8 px apart
  s = 3 * res
  lm = [[0.35 * s, 0.4 * s], [0.65 * s, 0.4 * s], [0.5 * s, 0.55 * s], [0.38 * s, 0.7 * s]]
  lm.append([0.62 * s, 0.7 * s])
  mask = np.zeros((res, res), np.uint8)
  mask[res // 3 : 2 * res // 3, :] = 255
  pool = [face() for _ in range(16)]
  big = [face(2 * res) for _ in range(4)]
  photo = [rng.integers(0, 256, (s, s + 8, 3), dtype=np.uint8) for _ in range(4)]
  enc = [_png(x) for x in pool]
  enc_big = [_png(x) for x in big]
  enc_photo = [_png(x) for x in photo]
  enc_mask = _png(mask)
  wide = _png(rng.integers(0, 256, (res, res + 5, 3), dtype=np.uint8))
  oversized = b'{"image": "' + b"A" * (MAX_BODY + 1024) + b'"}'

  def pick(xs: list) -> str:
    return xs[rng.integers(len(xs))]

  def post(path: str, body: dict | bytes, want: int) -> tuple[str, str, bytes, int]:
    return "POST", path, body if isinstance(body, bytes) else json.dumps(body).encode(), want

  noise = lambda: base64.b64encode(rng.bytes(300)).decode()  # noqa: E731
  kinds = [  # (kind, weight, request maker)
      ("verify", 30, lambda: post("/verify", {"image_a": pick(enc), "image_b": pick(enc)}, 200)),
      (
          "verify_mask",
          8,
          lambda: post(
              "/verify", {"image_a": pick(enc), "mask_a": enc_mask, "image_b": pick(enc_big)}, 200
          ),
      ),
      (
          "verify_landmarks",
          7,
          lambda: post(
              "/verify", {"image_a": pick(enc_photo), "landmarks_a": lm, "image_b": pick(enc)}, 200
          ),
      ),
      ("embed", 25, lambda: post("/embed", {"image": pick(enc)}, 200)),
      ("healthz", 5, lambda: ("GET", "/healthz", b"", 200)),
      ("bad_json", 4, lambda: post("/verify", b'{"image_a": ', 400)),
      ("bad_base64", 4, lambda: post("/embed", {"image": "not*base64"}, 400)),
      ("bad_image", 4, lambda: post("/embed", {"image": noise()}, 400)),
      ("missing_field", 3, lambda: post("/verify", {"image_a": enc[0]}, 400)),
      ("not_square", 3, lambda: post("/embed", {"image": wide}, 400)),
      ("wrong_method", 2, lambda: ("GET", "/embed", b"", 405)),
      ("unknown_path", 2, lambda: post("/nope", b"{}", 404)),
      ("oversized", 3, lambda: post("/embed", oversized, 413)),
  ]
  weights = np.array([w for _, w, _ in kinds], np.float64)
  picks = rng.choice(len(kinds), size=n, p=weights / weights.sum())
  out = []
  for i in picks:
    method, path, body, status = kinds[i][2]()
    out.append((kinds[i][0], method, path, body, status))
  return out


def _client(port: int, jobs: list, results: list, lock: threading.Lock, deadline: float) -> None:
  conn = None
  while time.monotonic() < deadline:
    with lock:
      if not jobs:
        return
      kind, method, path, body, want = jobs.pop()
    if conn is None:
      conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    t = time.perf_counter()
    try:
      conn.request(method, path, body=body if method == "POST" else None)
      r = conn.getresponse()
      payload = r.read()
      status = r.status
      json.loads(payload)  # every answer is JSON
      if r.getheader("Connection", "").lower() == "close":
        conn.close()
        conn = None
    except Exception as e:  # noqa: BLE001 -- counted as a failed request
      status = f"{type(e).__name__}"
      conn.close()
      conn = None
    results.append((kind, want, status, time.perf_counter() - t))


def _pct(xs: list[float], q: float) -> float:
  return float(np.percentile(xs, q)) * 1e3 if xs else float("nan")


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--export", default=None, help="an export folder")
  p.add_argument("--workdir", default=None, help="a trained, evaluated run (exported first)")
  p.add_argument("--requests", type=int, default=2000)
  p.add_argument("--clients", type=int, default=8)
  p.add_argument("--time_cap", type=float, default=900.0, help="seconds; no request starts later")
  p.add_argument("--runtime", default="jax", choices=("jax", "onnx"))
  p.add_argument("--name", default="http_load", help="results file name")
  args = p.parse_args()

  info = _common.machine()
  tmp = tempfile.mkdtemp(prefix="http_load_")
  folder, source = args.export, f"--export={args.export}"
  if folder is None and args.workdir:
    from deocc_jax import export as export_lib

    folder, source = os.path.join(tmp, "model"), f"--workdir={args.workdir} (exported, no ONNX)"
    export_lib.export_run(args.workdir, folder, onnx=False)
  elif folder is None:
    sys.path.insert(0, ROOT)  # the repository root: tests.helpers
    from tests.helpers import http_toy_export as _http_toy_export

    folder = _http_toy_export.write_toy_export(
        os.path.join(tmp, "toy"), onnx=args.runtime == "onnx"
    )
    source = "the toy export (tests/helpers/http_toy_export.py)"
  with open(os.path.join(folder, "metadata.json")) as f:
    meta = json.load(f)
  res = int(meta["preprocessing"]["resolution"])
  jobs = workload(res, args.requests)
  jobs.reverse()  # clients pop from the end: the seeded order

  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  cmd = [sys.executable, "-m", "deocc_jax.http_server", folder, "--port=0", "--quiet"]
  cmd += [f"--runtime={args.runtime}"]
  t0 = time.perf_counter()
  server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
  try:
    line = server.stdout.readline()
    if "http://" not in line:
      raise SystemExit(f"server did not start: {line!r}")
    startup_s = time.perf_counter() - t0
    port = int(line.rsplit(":", 1)[1])
    rss = {"after_startup": _rss_kib(server.pid)}
    results: list = []
    lock = threading.Lock()
    deadline = time.monotonic() + args.time_cap
    half = len(jobs) // 2
    t_start = time.perf_counter()
    for phase, todo in (("after_first_half", jobs[half:]), ("after_second_half", jobs[:half])):
      threads = [
          threading.Thread(target=_client, args=(port, todo, results, lock, deadline))
          for _ in range(args.clients)
      ]
      for t in threads:
        t.start()
      for t in threads:
        t.join()
      rss[phase] = _rss_kib(server.pid)
    wall = time.perf_counter() - t_start
  finally:
    server.terminate()
    server.wait(timeout=60)

  by_kind: dict[str, dict] = {}
  for kind, want, status, dt in results:
    k = by_kind.setdefault(kind, {"n": 0, "lat": [], "unexpected": 0, "5xx": 0})
    k["n"] += 1
    k["lat"].append(dt)
    k["unexpected"] += status != want
    k["5xx"] += isinstance(status, int) and status >= 500
  valid = [dt for kind, want, s, dt in results if want == 200]
  bad = [dt for kind, want, s, dt in results if want != 200 and kind != "oversized"]
  fivexx = sum(k["5xx"] for k in by_kind.values())
  unexpected = [(kind, want, s) for kind, want, s, _ in results if s != want]
  mib = lambda kib: round(kib / 1024, 1)  # noqa: E731
  payload = {
      "machine": info,
      "export": source,
      "runtime": args.runtime,
      "resolution": res,
      "embedding_dim": meta.get("embedding_dim"),
      "clients": args.clients,
      "requests_planned": args.requests,
      "requests_done": len(results),
      "time_cap_s": args.time_cap,
      "server_startup_s": round(startup_s, 2),
      "wall_s": round(wall, 2),
      "throughput_rps": round(len(results) / wall, 2),
      "count_5xx": fivexx,
      "unexpected_status": len(unexpected),
      "unexpected_examples": [list(map(str, u)) for u in unexpected[:10]],
      "latency_ms": {
          "all": {
              "p50": _pct([r[3] for r in results], 50),
              "p99": _pct([r[3] for r in results], 99),
          },
          "valid (200)": {"p50": _pct(valid, 50), "p99": _pct(valid, 99)},
          "bad input (4xx, not oversized)": {"p50": _pct(bad, 50), "p99": _pct(bad, 99)},
      },
      "by_kind": {
          k: {
              "n": v["n"],
              "p50_ms": _pct(v["lat"], 50),
              "p99_ms": _pct(v["lat"], 99),
              "unexpected": v["unexpected"],
              "5xx": v["5xx"],
          }
          for k, v in sorted(by_kind.items())
      },
      "server_rss_mib": {ph: mib(v["VmRSS"]) for ph, v in rss.items()},
      "server_peak_rss_mib": mib(rss["after_second_half"]["VmHWM"]),
      "server_threads": {ph: v["Threads"] for ph, v in rss.items()},
  }
  r = payload["server_rss_mib"]
  lat = payload["latency_ms"]
  md = [
      "# HTTP server under bounded load",
      "",
      f"`python benchmarks/http_load.py` ({source}; runtime {args.runtime}, {res}x{res} faces, "
      f"{payload['embedding_dim']}-d): `deocc-serve` on 127.0.0.1 in a subprocess, "
      f"{args.clients} keep-alive clients, {len(results)} of {args.requests} requests "
      f"(time cap {args.time_cap:.0f} s), a seeded mix of valid and bad requests.",
      f"Machine: {info['cpu']}, {info['cores']} cores (shared; load average at start "
      f"{info['loadavg_at_start']}), {info['date']}.",
      "",
      f"* throughput: **{payload['throughput_rps']} requests/s** ({len(results)} in {wall:.1f} s)",
      f"* latency, all requests: p50 {lat['all']['p50']:.1f} ms, p99 {lat['all']['p99']:.1f} ms; "
      f"valid: p50 {lat['valid (200)']['p50']:.1f} ms, p99 {lat['valid (200)']['p99']:.1f} ms",
      f"* 5xx responses: **{fivexx}**; responses with another status than expected: "
      f"{len(unexpected)}",
      f"* server RSS: {r['after_startup']} MiB after start-up (warmed up), "
      f"{r['after_first_half']} MiB after half the requests, {r['after_second_half']} MiB "
      f"at the end (peak {payload['server_peak_rss_mib']} MiB); start-up {startup_s:.1f} s",
      "",
      "| request | n | p50 ms | p99 ms | unexpected status | 5xx |",
      "|---|---:|---:|---:|---:|---:|",
  ]
  for k, v in payload["by_kind"].items():
    md.append(
        f"| {k} | {v['n']} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} | {v['unexpected']} | {v['5xx']} |"
    )
  md += [
      "",
      "Expected statuses: valid 200; bad_json / bad_base64 / bad_image / missing_field / "
      "not_square 400; wrong_method 405; unknown_path 404; oversized (a 10 MB + 1 KiB body, "
      "sent in full) 413.",
  ]
  _common.write(args.name, payload, "\n".join(md))
  if fivexx or unexpected:
    sys.exit(1)


if __name__ == "__main__":
  main()
