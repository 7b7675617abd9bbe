"""CPU and wall time of the paper rehearsal, per stage, in 1 or 2 processes.

    python benchmarks/rehearsal_timing.py --processes 2 --workdir /tmp/reh2 [--config.x=y ...]
Runs ``python -m deocc_jax.main --config=configs/paper_rehearsal.py`` (the
same stage table, each stage wrapped with a timer), 8 CPU devices in all
(8 in one process or 4 in each of two), and writes
benchmarks/results/rehearsal_timing_<N>proc.{md,json}: per stage and process
the CPU seconds (user + sys of the process, all threads), the wall seconds,
and the XLA compilations (count, seconds, the costliest programs). CPU seconds
are the number to compare on a shared machine; wall seconds only mean
something on a quiet one.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)


def _cpu_self() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def _worker(out_path: str, argv: list[str]) -> None:
  """One process of the job: main.main with every stage timed."""
  from absl import app
  from jax._src import monitoring

  from deocc_jax import cli
  from deocc_jax import main as main_lib

  compiles: list[tuple[str, str, float]] = []
  current = ["(setup)"]

  def on_event(event: str, secs: float, **kw) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append((current[0], str(kw.get("fun_name", "?")), float(secs)))

  monitoring.register_event_duration_secs_listener(on_event)
  stages: dict[str, dict] = {}
  table = main_lib.stage_table()

  def timed(name, fn):
    def run(config, workdir):
      current[0] = name
      c0, w0 = _cpu_self(), time.perf_counter()
      try:
        fn(config, workdir)
      finally:
        stages[name] = {"cpu_s": _cpu_self() - c0, "wall_s": time.perf_counter() - w0}
        current[0] = "(after)"

    return run

  timed_table = {k: timed(k, v) for k, v in table.items()}
  main_lib.stage_table = lambda: timed_table
  c0, w0 = _cpu_self(), time.perf_counter()
  try:
    app.run(main_lib.main, argv=argv, flags_parser=cli.parse_flags)
  except SystemExit as e:
    if e.code not in (None, 0):
      raise
  finally:
    for name, d in stages.items():
      mine = [c for c in compiles if c[0] == name]
      d["compiles"] = len(mine)
      d["compile_s"] = sum(c[2] for c in mine)
      by_fn = collections.Counter()
      n_fn = collections.Counter()
      for _, fn, s in mine:
        by_fn[fn] += s
        n_fn[fn] += 1
      d["top_compiles"] = [[fn, n_fn[fn], round(s, 2)] for fn, s in by_fn.most_common(6)]
    payload = {
        "stages": stages,
        "total_cpu_s": _cpu_self() - c0,
        "total_wall_s": time.perf_counter() - w0,
        "compiles": len(compiles),
        "compile_s": sum(c[2] for c in compiles),
    }
    with open(out_path, "w") as f:
      json.dump(payload, f, indent=2)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def main() -> None:
  if len(sys.argv) > 1 and sys.argv[1] == "--worker":
    _worker(sys.argv[2], [sys.argv[0]] + sys.argv[3:])
    return
  p = argparse.ArgumentParser()
  p.add_argument("--processes", type=int, default=2, choices=(1, 2))
  p.add_argument("--workdir", required=True)
  p.add_argument("--config", default="configs/paper_rehearsal.py")
  args, extra = p.parse_known_args()
  import _common

  info = _common.machine()
  n = args.processes
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={8 // n}", JAX_PLATFORMS="cpu")
  port = _free_port()
  outs = [os.path.join(args.workdir + f".timing_p{i}.json") for i in range(n)]
  procs = []
  for i in range(n):
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        outs[i],
        f"--config={args.config}",
        f"--workdir={args.workdir}",
    ] + extra
    if n > 1:
      cmd += [
          "--config.distributed.mode=manual",
          f"--config.distributed.coordinator_address=127.0.0.1:{port}",
          f"--config.distributed.num_processes={n}",
          f"--config.distributed.process_id={i}",
      ]
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env))
  w0 = time.perf_counter()
  codes = [q.wait() for q in procs]
  wall = time.perf_counter() - w0
  ru = resource.getrusage(resource.RUSAGE_CHILDREN)
  if any(codes):
    sys.exit(f"a process failed: exit codes {codes}")
  per = [json.load(open(o)) for o in outs]
  names = list(per[0]["stages"])
  rows = []
  for name in names:
    ds = [q["stages"][name] for q in per]
    top = "; ".join(f"{fn} x{k} {s:.0f}s" for fn, k, s in ds[0]["top_compiles"][:3])
    rows.append(
        f"| {name} | {sum(d['cpu_s'] for d in ds):.0f} | "
        f"{max(d['wall_s'] for d in ds):.0f} | {ds[0]['compiles']} | "
        f"{ds[0]['compile_s']:.0f} | {top} |"
    )
  total_cpu = ru.ru_utime + ru.ru_stime
  md = "\n".join(
      [
          f"# Paper rehearsal: time per stage, {n} process(es), 8 CPU devices in all",
          f"`python benchmarks/rehearsal_timing.py --processes {n} --workdir DIR "
          f"{' '.join(extra)}`".rstrip() + " -- configs/paper_rehearsal.py.",
          f"Machine: {info['cpu']}, {info['cores']} cores, load average at start "
          f"{info['loadavg_at_start']}; {info['date']}. CPU s = user + sys summed over the "
          "processes (the machine may be shared: compare CPU s; wall s is the slowest "
          "process's and is only meaningful on a quiet machine). Compiles / compile s: XLA "
          "backend compilations of process 0 in the stage (wall seconds).",
          "",
          "| stage | CPU s | wall s | compiles | compile s | costliest compiles (process 0) |",
          "|---|---|---|---|---|---|",
          *rows,
          f"| **total** (all processes, incl. start-up) | **{total_cpu:.0f}** | **{wall:.0f}** | "
          f"{per[0]['compiles']} | {per[0]['compile_s']:.0f} | |",
      ]
  )
  _common.write(
      f"rehearsal_timing_{n}proc",
      {
          "machine": info,
          "processes": n,
          "extra_args": extra,
          "total_cpu_s": total_cpu,
          "total_wall_s": wall,
          "per_process": per,
      },
      md,
  )


if __name__ == "__main__":
  main()
