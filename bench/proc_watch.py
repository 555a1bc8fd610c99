"""
Run a command and watch it: the peak memory of its whole process tree (worker processes included) and
when each line of its output appeared.

Memory is the sum over the tree of each process's PSS (proportional set size, /proc/<pid>/smaps_rollup):
pages shared between a parent and its forked workers, or mapped from the same file, are counted once
in all, where a sum of RSS would count them once per process. The peak RSS of the biggest single
process is reported too. Linux only.

    python bench/proc_watch.py -- python train_mlm.py --data corpus/ --steps 20
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _tree(pid: int) -> list[int]:
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(_children(p))
    return out


def _memory(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in bytes, or (0, 0) for a process that is gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return pss, rss


def watch(cmd: list[str], interval: float = 0.05, env: dict | None = None, cwd: str | None = None,
          timeout: float | None = None) -> dict:
    """Run cmd; returns its exit code, wall time, output lines with their times (stdout and stderr
    merged), the peak PSS of the tree and the peak RSS of one process, and the peak process count."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    lines: list[tuple[float, str]] = []

    def read():
        for line in proc.stdout:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peak_pss = peak_rss = peak_procs = 0
    while proc.poll() is None:
        if timeout and time.perf_counter() - t0 > timeout:
            proc.kill()
            break
        pids = _tree(proc.pid)
        mems = [_memory(p) for p in pids]
        peak_pss = max(peak_pss, sum(m[0] for m in mems))
        peak_rss = max(peak_rss, max((m[1] for m in mems), default=0))
        peak_procs = max(peak_procs, len(pids))
        time.sleep(interval)
    proc.wait()
    reader.join(timeout=5)
    return {"returncode": proc.returncode, "seconds": time.perf_counter() - t0, "lines": lines,
            "peak_pss": peak_pss, "peak_rss_one_process": peak_rss, "processes": peak_procs}


def first_time(result: dict, prefix: str) -> float | None:
    """When the first output line starting with prefix appeared (seconds after the start)."""
    return next((t for t, line in result["lines"] if line.startswith(prefix)), None)


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    r = watch(argv)
    for t, line in r["lines"]:
        print(f"{t:8.2f}s  {line}")
    print(json.dumps({k: v for k, v in r.items() if k != "lines"}))
    sys.exit(r["returncode"])
