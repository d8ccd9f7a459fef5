"""Benchmark the REST API on PostgreSQL behind gunicorn: bulk upsert rate, and list endpoints under load.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crm_apibench REDIS_URL=redis://127.0.0.1:6379/12 \\
        python bench/bench_api.py [--customers 100000] [--workers 4] [--connections 20] [--duration 30]

Seeds the database with seed_demo when it has fewer customers than asked. Starts gunicorn
(DEBUG off, the production settings path), then:
1. bulk upsert: batches of 1,000 purchase lines to POST /api/v1/purchases/bulk/, first as new
   records, then replayed unchanged, then with every amount changed; records per second each;
2. list endpoints: wrk with `--connections` clients for `--duration` seconds over a mix of list
   URLs (default page size), reporting requests/s and latency percentiles (p50, p95, p99).
Needs `wrk` (Debian package wrk). Numbers go in the README; they are never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from django.core.management import call_command  # noqa: E402

from accounts.models import User  # noqa: E402
from accounts.tokens import token_issue  # noqa: E402
from clv.summary import summary_apply  # noqa: E402
from crm.models import Customer, Product, Purchase  # noqa: E402

WRK_SCRIPT = """
local paths = {%s}
local token = "%s"
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1], {["Authorization"] = "Token " .. token})
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\": %%d, \\"seconds\\": %%f, \\"errors\\": %%d, \\"non2xx\\": %%d, "
    .. "\\"p50_ms\\": %%f, \\"p95_ms\\": %%f, \\"p99_ms\\": %%f, \\"max_ms\\": %%f}\\n",
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status,
    latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3))
end
"""


def ensure_data(customers: int) -> None:
    if Customer.objects.count() < customers:
        print(f"seeding {customers} customers with seed_demo ...", flush=True)
        call_command("seed_demo", customers=customers, seed=42)


def start_gunicorn(port: int, workers: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "API_RATE": "100000000/min",
        "CONN_MAX_AGE": "600",
        "LOG_LEVEL": "WARNING",
        # Plain HTTP on the loopback: production's redirect to HTTPS would send every request away.
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_HSTS_SECONDS": "0",
    }
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    proc = subprocess.Popen(
        [gunicorn, "config.wsgi:application", "-w", str(workers), "-b", f"127.0.0.1:{port}", "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    for _ in range(100):
        try:
            requests.get(f"http://127.0.0.1:{port}/api/v1/", timeout=10, allow_redirects=False)  # 401 is an answer
            return proc
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("gunicorn did not start")


def bench_bulk(base: str, token: str, batches: int, workers: int) -> dict:
    # each measured batch has its own 1,000 customers, and each warm-up batch others again
    customer_ids = list(Customer.objects.order_by("id").values_list("id", flat=True)[: (batches + 2 * workers) * 1000])
    product_ids = list(Product.objects.values_list("id", flat=True))
    run = secrets.token_hex(3)
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    session = requests.Session()

    def batch(b: int, amount_shift: int) -> list[dict]:
        return [
            {"external_id": f"BENCH-{run}-{b}-{i}", "customer": customer_ids[(b * 1000 + i) % len(customer_ids)],
             "product": product_ids[i % len(product_ids)], "quantity": "1", "amount": f"{10 + i % 90 + amount_shift}.00",
             "purchased_at": "2026-10-15T12:00:00Z"}
            for i in range(1000)
        ]

    # Warm every worker first, so the first phase measures the steady rate like the others: a
    # worker's first full batch (lazy imports, the URL conf, the serializer's fields, the database
    # connection and its caches, the process's memory) takes about twice a steady one. Sequential
    # requests may all go to one worker, so `workers` full batches (of their own keys) go at once,
    # twice; each reports how long it took.
    def warm(w: int) -> float:
        records = [{**r, "external_id": f"{r['external_id']}-warm{w}"} for r in batch(batches + w, 0)]
        start = time.perf_counter()
        response = requests.post(f"{base}/api/v1/purchases/bulk/", data=json.dumps({"records": records}),
                                 headers=headers, timeout=120)
        if response.status_code != 200:
            raise SystemExit(f"bulk warm-up: {response.status_code} {response.text[:500]}")
        return time.perf_counter() - start

    warm_seconds = []
    with ThreadPoolExecutor(workers) as pool:
        for round_ in range(2):
            warm_seconds.append(list(pool.map(warm, range(round_ * workers, (round_ + 1) * workers))))
    results = {}
    for label, shift in (("create", 0), ("replay (unchanged)", 0), ("update", 1)):
        bodies = [json.dumps({"records": batch(b, shift)}) for b in range(batches)]
        start = time.perf_counter()
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        for body in bodies:
            response = session.post(f"{base}/api/v1/purchases/bulk/", data=body, headers=headers, timeout=120)
            if response.status_code != 200:
                raise SystemExit(f"bulk {label}: {response.status_code} {response.text[:500]}")
            answer = response.json()
            for key in counts:
                counts[key] += answer[key]
        seconds = time.perf_counter() - start
        results[label] = {"records": batches * 1000, "seconds": round(seconds, 2),
                          "records_per_s": round(batches * 1000 / seconds), **counts}
    results["warm-up"] = [[round(x * 1000) for x in r] for r in warm_seconds]
    benched = Purchase.objects.filter(external_id__startswith=f"BENCH-{run}-")
    touched = set(benched.values_list("customer_id", flat=True))
    benched.delete()
    summary_apply(customer_ids=touched)  # the kept CLV summary stays in step with the lines
    return results


def bench_lists(base: str, token: str, connections: int, duration: int) -> dict:
    some = list(Customer.objects.order_by("id").values_list("id", flat=True)[:: max(1, Customer.objects.count() // 50)])
    paths = ["/api/v1/customers/", "/api/v1/customers/?lifecycle_stage=retained", "/api/v1/products/",
             "/api/v1/opportunities/?status=open", "/api/v1/events/", "/api/v1/values/"]
    for cid in some[:20]:
        paths += [f"/api/v1/purchases/?customer={cid}", f"/api/v1/contacts/?customer={cid}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % (", ".join(f'"{p}"' for p in paths), token))
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "-s", script.name, base],
        capture_output=True, text=True, check=True,
    ).stdout
    os.unlink(script.name)
    line = next(li for li in out.splitlines() if li.startswith("JSON "))
    stats = json.loads(line[5:])
    stats["requests_per_s"] = round(stats["requests"] / stats["seconds"], 1)
    stats["paths"] = len(paths)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--connections", type=int, default=20, help="concurrent clients (wrk connections)")
    parser.add_argument("--duration", type=int, default=30, help="seconds of list load")
    parser.add_argument("--batches", type=int, default=20, help="bulk batches of 1,000 records per phase")
    parser.add_argument("--port", type=int, default=8077)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    ensure_data(args.customers)
    admin = User.objects.filter(username="admin").first() or User.objects.filter(is_superuser=True).first()
    _, token = token_issue(user=admin, name="bench")
    proc = start_gunicorn(args.port, args.workers)
    base = f"http://127.0.0.1:{args.port}"
    try:
        bulk = bench_bulk(base, token, args.batches, args.workers)
        requests.get(f"{base}/api/v1/customers/", headers={"Authorization": f"Token {token}"}, timeout=30)
        lists = bench_lists(base, token, args.connections, args.duration)
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"\ncustomers: {Customer.objects.count():,}, purchase lines: {Purchase.objects.count():,}, "
          f"gunicorn workers: {args.workers}\n")
    print("| bulk upsert (1,000 per request) | records | seconds | records/s |")
    print("|---|---:|---:|---:|")
    warm = bulk.pop("warm-up")
    for label, r in bulk.items():
        print(f"| {label} | {r['records']:,} | {r['seconds']} | {r['records_per_s']:,} |")
    print(f"\nwarm-up, {args.workers} full batches at once, twice (ms each, not counted above): {warm}")
    print(f"\n| list endpoints, {args.connections} clients, {args.duration} s | value |")
    print("|---|---:|")
    for key in ("requests", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "errors", "non2xx", "paths"):
        value = lists[key]
        print(f"| {key} | {round(value, 1) if isinstance(value, float) else value} |")


if __name__ == "__main__":
    main()
