"""Jupyter kernel baseline for `npm run bench`: start-to-ready time, execute round trip of print(1), and the
kernel's idle memory. Needs Debian's python3-ipykernel and python3-jupyter-client; prints one JSON object."""
import json
import statistics
import sys
import time

try:
    from jupyter_client.manager import start_new_kernel
except ImportError:
    print(json.dumps({"skipped": "apt-get install -y python3-ipykernel python3-jupyter-client"}))
    sys.exit(0)

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 300
starts = []
for _ in range(3):
    t = time.perf_counter()
    km, kc = start_new_kernel(kernel_name="python3")
    starts.append((time.perf_counter() - t) * 1000)
    if len(starts) < 3:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

times = []
for i in range(ROUNDS + 20):
    t = time.perf_counter()
    kc.execute_interactive("print(1)", output_hook=lambda msg: None, timeout=10)
    if i >= 20:
        times.append((time.perf_counter() - t) * 1000)
pid = km.provisioner.process.pid if hasattr(km, "provisioner") and km.provisioner else km.kernel.pid
rss_kb = int([l for l in open("/proc/%d/status" % pid) if l.startswith("VmRSS")][0].split()[1])
kc.stop_channels()
km.shutdown_kernel(now=True)
times.sort()
print(json.dumps({
    "start_ms": {"p50": statistics.median(starts)},
    "exec_ms": {"p50": times[len(times) // 2], "p95": times[int(len(times) * 0.95)], "p99": times[int(len(times) * 0.99)]},
    "idle_rss_mb": rss_kb / 1024,
}))
