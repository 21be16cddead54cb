"""Gateway throughput and latency under load, next to bare MLServer answering the same requests.

    uv run python benchmarks/gateway.py [--duration 30] [--connections 32] [--warmup 5]
        [--rate 300] [--batch-size 32] [--batch-time 0.002] [--trees 200] [--depth 6]
        [--threads N] [--no-fail]

Issue 7's target: one candidate, with its explanation and a committed audit record, at least
300 requests/s sustained at concurrency 32 with p99 under 50 ms; the gateway's throughput is
shown next to bare MLServer's for the same requests, measured in the same run, and their ratio.

Everything runs on this machine, on loopback: the Adult model of benchmarks/serving.py (edge
50,000 USD, fixed parameters, --trees / --depth) written as a model folder and served by a
real ``payband-serving serve`` (MLServer in-process, with adaptive batching of up to
--batch-size requests within --batch-time seconds, the setting for MLServer behind the
gateway; --batch-size 1 turns it off; --threads sets PAYBAND_SERVING_THREADS); a durable
embedded PostgreSQL (fsync on) migrated to the audit schema; a real ``payband-gateway serve``
(one process, default settings) in front of both; and wrk (``apt-get install -y wrk``), a C
load generator that costs little CPU, with 2 threads and --connections keep-alive
connections, posting in turn 1,000 held-out Adult rows as canonical candidates
(benchmarks/wrk/post.lua).

Three runs. (1) wrk against MLServer, (2) wrk against the gateway: closed loops, each
connection sending its next request when the last is answered, so they measure the most
either can do: requests/s, latency p50/p90/p99, non-2xx answers, socket errors. A closed loop
keeps every connection busy, so mean latency = connections / throughput (Little's law): p99
under 50 ms at 32 connections would need more than 640 requests/s, so the latency target is
judged in (3), the gateway paced at --rate requests/s (an open loop: requests are sent on
schedule with at most --connections in flight, and latency counts from when each was due).

A sample of answers is checked first (every gateway answer carries MLServer's band and
contributions). After run (2) the rows added to audit.prediction_responses are compared with
wrk's 2xx answers (wrk may stop with requests in flight, which the gateway still commits, so
there may be more rows but never fewer); after run (3), which ends with nothing in flight,
they must be equal. Then the whole hash chain is verified.

Where the time goes: the CPU seconds of each process tree (gateway, MLServer, PostgreSQL, wrk)
and of the rest of the machine over runs (1) and (2), per request, and the gateway's own
/metrics (mean time in its handler, in the inference call and waiting for the audit commit).
Other work on the machine (the "other work" rows) lowers every number.
Prints a table; exits 1 if a target is missed (0 with --no-fail), and always if an answer is
wrong or the audit log lacks records; exits 2 if wrk is not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from _common import MIDDLE_PARAMS, adult_model, durable_audit_database, model_size
from _report import Row, print_table  # benchmarks/ is the script's directory
from prometheus_client.parser import text_string_to_metric_families

from payband_audit.verify import verify_chain
from payband_contracts import Candidate
from payband_local.postgres import PostgresConnectionInfo
from payband_serving.settings import ServingSettings
from payband_testing.gateway import GatewayServer, TestKey, gateway_server
from payband_testing.serving import InferenceServer, inference_server
from payband_training.model import load_bundle

THROUGHPUT_TARGET = 300.0  # requests/s
P99_TARGET_MS = 50.0
WRK_THREADS = 2
WRK_TIMEOUT_S = 10  # above the gateway's inference timeout: slow answers are measured, not lost
POST_SCRIPT = Path(__file__).with_name("wrk") / "post.lua"
REQUEST_ROWS = 1_000
CHECKED_ROWS = 5
CONTRIBUTION_TOLERANCE = 1e-9
SETTLE_S = 10.0  # longest wait for in-flight predictions to be committed after wrk stops
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# One Python process each, so mostly one core each whatever the machine has (the GIL).
ONE_CORE = ("gateway", "MLServer")


class WrongAnswer(RuntimeError):
    """An answer that is not what it must be."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run, from the line benchmarks/wrk/post.lua prints when it is done."""

    requests: int
    seconds: float
    non_2xx: int
    socket_errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @classmethod
    def parse(cls, output: str) -> WrkResult:
        lines = [line for line in output.splitlines() if line.startswith("wrk-json ")]
        if not lines:
            raise RuntimeError(f"wrk printed no result line:\n{output}")
        data = json.loads(lines[-1].removeprefix("wrk-json "))
        return cls(
            requests=data["requests"],
            seconds=data["duration_us"] / 1e6,
            # wrk counts answers with a status of 400 or more; the services send no 3xx.
            non_2xx=data["status"],
            socket_errors={name: data[name] for name in ("connect", "read", "write", "timeout")},
            p50_ms=data["p50_us"] / 1000,
            p90_ms=data["p90_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            mean_ms=data["mean_us"] / 1000,
            max_ms=data["max_us"] / 1000,
        )


@dataclass(frozen=True)
class Load:
    """What wrk sends: the URL, a file of bodies (one a line) and extra headers."""

    url: str
    bodies: Path
    headers: Sequence[str] = ()


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds over one run: each named process tree, wrk, and the machine as a whole."""

    wall_s: float
    trees: dict[str, float]
    wrk_s: float
    machine_s: float

    @property
    def others_s(self) -> float:
        return max(0.0, self.machine_s - sum(self.trees.values()) - self.wrk_s)


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of a process and all its descendants, including reaped children."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # the process ended meanwhile
            continue
        # Fields after the command name, which may itself hold spaces and parentheses.
        fields = text[text.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(value) for value in fields[11:15]) / CLOCK_TICKS
    total, pending = 0.0, [root]
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    while pending:
        pid = pending.pop()
        total += times.get(pid, 0.0)
        pending += children.get(pid, [])
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    load: Load, *, seconds: int, connections: int, processes: Mapping[str, int]
) -> tuple[WrkResult, CpuUse]:
    threads = min(WRK_THREADS, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    command += [f"--timeout={WRK_TIMEOUT_S}s", "-s", str(POST_SCRIPT), load.url, "--"]
    command += [str(load.bodies), *load.headers]
    trees = {name: tree_cpu_seconds(pid) for name, pid in processes.items()}
    wrk_cpu, machine = children_cpu_seconds(), machine_busy_seconds()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    cpu = CpuUse(
        wall_s=wall,
        trees={name: tree_cpu_seconds(pid) - trees[name] for name, pid in processes.items()},
        wrk_s=children_cpu_seconds() - wrk_cpu,
        machine_s=machine_busy_seconds() - machine,
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return WrkResult.parse(done.stdout), cpu


@dataclass(frozen=True)
class PacedResult:
    """An open-loop run: requests sent on a fixed schedule, whatever the answers take."""

    offered: float
    seconds: float
    statuses: Counter[int]
    latencies_ms: list[float]  # sorted; from each request's scheduled time to its answer
    client_cpu_s: float

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    def percentile(self, share: float) -> float:
        count = len(self.latencies_ms)
        return self.latencies_ms[min(count - 1, int(share * count))]


def run_paced(
    url: str,
    bodies: Sequence[bytes],
    headers: Mapping[str, str],
    *,
    rate: float,
    seconds: int,
    connections: int,
) -> PacedResult:
    """Send `rate` requests a second for `seconds` over at most `connections` connections.

    Latency counts from when a request was due, not when it could be sent: a server that
    falls behind is charged for the wait (no coordinated omission)."""

    async def run() -> tuple[float, Counter[int], list[float]]:
        loop = asyncio.get_running_loop()
        statuses: Counter[int] = Counter()
        latencies: list[float] = []
        connector = aiohttp.TCPConnector(limit=connections)
        timeout = aiohttp.ClientTimeout(total=WRK_TIMEOUT_S)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one(index: int, due: float) -> None:
                body = bodies[index % len(bodies)]
                async with session.post(url, data=body, headers=dict(headers)) as response:
                    await response.read()
                    statuses[response.status] += 1
                latencies.append((loop.time() - due) * 1000)

            # Each request is started when it is due; only those in flight exist as tasks.
            start = loop.time() + 0.1
            tasks = set()
            for index in range(int(rate * seconds)):
                due = start + index / rate
                await asyncio.sleep(max(0.0, due - loop.time()))
                task = asyncio.create_task(one(index, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
            return loop.time() - start, statuses, latencies

    # This process holds the data and the model: a full collection of its heap would stall
    # the load generator, and the stall would be charged to the gateway.
    gc.collect()
    gc.freeze()
    gc.disable()
    before = resource.getrusage(resource.RUSAGE_SELF)
    try:
        elapsed, statuses, latencies = asyncio.run(run())
    finally:
        gc.enable()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return PacedResult(rate, elapsed, statuses, sorted(latencies), cpu)


def gateway_bodies(people: Sequence[dict[str, Any]]) -> list[bytes]:
    """POST /v1/predictions bodies, each candidate validated by the contract first."""
    return [
        b'{"candidate": ' + Candidate.model_validate(person).model_dump_json().encode() + b"}"
        for person in people
    ]


def v2_bodies(people: Sequence[dict[str, Any]], metadata: dict[str, Any]) -> list[bytes]:
    """The V2 requests the gateway itself sends: the model's inputs, all outputs."""
    return [
        json.dumps(
            {
                "inputs": [
                    {
                        "name": spec["name"],
                        "datatype": spec["datatype"],
                        "shape": [1, 1],
                        "data": [person[spec["name"]]],
                    }
                    for spec in metadata["inputs"]
                ]
            }
        ).encode()
        for person in people
    ]


def write_lines(path: Path, bodies: Sequence[bytes]) -> Path:
    path.write_bytes(b"".join(body + b"\n" for body in bodies))
    return path


def check_answers(
    client: httpx.Client,
    mlserver: InferenceServer,
    gateway: GatewayServer,
    key: TestKey,
    v2: Sequence[bytes],
    predictions: Sequence[bytes],
) -> int:
    """Post a few candidates to both; the gateway's band and contributions must be MLServer's.
    Returns the number of features explained."""
    headers = {"content-type": "application/json"}
    features = 0
    for v2_body, body in zip(v2, predictions, strict=True):
        bare = client.post(mlserver.infer_url, content=v2_body, headers=headers)
        if bare.status_code != 200:
            raise WrongAnswer(f"MLServer: HTTP {bare.status_code}: {bare.text[:300]}")
        answer = bare.json()
        outputs = {output["name"]: output for output in answer["outputs"]}
        missing = {"band", "probabilities", "contributions", "base_value"} - set(outputs)
        if missing:
            raise WrongAnswer(f"MLServer's answer lacks {sorted(missing)}")
        names = json.loads(answer["parameters"]["features"])
        features = len(names)
        band = int(outputs["band"]["data"][0])
        expected = outputs["contributions"]["data"][band * features : (band + 1) * features]
        expected_by_name = dict(zip(names, expected, strict=True))

        served = client.post(
            f"{gateway.url}/v1/predictions", content=body, headers={**headers, **key.headers}
        )
        if served.status_code != 200:
            raise WrongAnswer(f"gateway: HTTP {served.status_code}: {served.text[:300]}")
        prediction = served.json()
        if prediction.get("band", {}).get("index") != band:
            raise WrongAnswer(f"gateway band {prediction.get('band')} is not MLServer's {band}")
        contributions = prediction.get("explanation", {}).get("contributions", [])
        got = {item["feature"]: item["contribution"] for item in contributions}
        if got.keys() != expected_by_name.keys() or any(
            abs(got[name] - value) > CONTRIBUTION_TOLERANCE
            for name, value in expected_by_name.items()
        ):
            raise WrongAnswer(f"gateway contributions {got} are not MLServer's {expected_by_name}")
    return features


def metric_total(text: str, sample: str, **labels: str) -> float:
    """The sum of a /metrics sample over the series whose labels include `labels`."""
    return sum(
        found.value
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == sample and labels.items() <= found.labels.items()
    )


def mean_ms(before: str, after: str, histogram: str, **labels: str) -> float:
    """The mean of a histogram's observations between two /metrics texts, in ms."""

    def delta(suffix: str) -> float:
        name = f"{histogram}{suffix}"
        return metric_total(after, name, **labels) - metric_total(before, name, **labels)

    count = delta("_count")
    return delta("_sum") / count * 1000 if count else float("nan")


def p99_bound_ms(before: str, after: str, histogram: str, **labels: str) -> str:
    """The histogram bucket 99 % of the observations between two /metrics texts fall in."""
    buckets: dict[float, float] = {}
    for text, sign in ((after, 1), (before, -1)):
        for family in text_string_to_metric_families(text):
            for found in family.samples:
                if found.name == f"{histogram}_bucket" and labels.items() <= found.labels.items():
                    bound = float(found.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sign * found.value
    if not buckets or max(buckets.values()) <= 0:
        return "n/a"
    total = buckets[float("inf")]
    bound = min(b for b, cumulative in buckets.items() if cumulative >= 0.99 * total)
    return "over 10 s" if bound == float("inf") else f"<= {bound * 1000:g} ms"


def count_rows(audit: PostgresConnectionInfo, table: str) -> int:
    with audit.connect(autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM audit.{table}").fetchone()  # noqa: S608 - ours
        return int(row[0]) if row else 0


def settled(count: Callable[[], int]) -> int:
    """The count once it stopped growing (in-flight requests committed), or after SETTLE_S."""
    deadline = time.monotonic() + SETTLE_S
    last = count()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = count()
        if now == last:
            return now
        last = now
    return last


def load_rows(name: str, result: WrkResult) -> list[Row]:
    errors = ", ".join(f"{kind} {n}" for kind, n in result.socket_errors.items())
    return [
        Row(f"{name}: requests / 2xx / non-2xx",
            f"{result.requests:,} / {result.ok:,} / {result.non_2xx:,} in {result.seconds:.1f} s"),
        Row(f"{name}: latency p50 / p90 / mean / max",
            f"{result.p50_ms:.1f} / {result.p90_ms:.1f} / {result.mean_ms:.1f} / "
            f"{result.max_ms:.1f} ms"),
        Row(f"{name}: socket errors", errors, "none", "",
            not any(result.socket_errors.values())),
    ]  # fmt: skip


def cpu_rows(name: str, cpu: CpuUse, requests: int) -> list[Row]:
    """CPU per request of each part and the cores it kept busy over one measured run, and the
    rate this run's own processes could reach on every core if nothing else ran."""
    parts = {**cpu.trees, "wrk": cpu.wrk_s, "rest of the machine": cpu.others_s}
    shown = ", ".join(
        f"{part} {seconds * 1000 / requests:.2f} ms ({seconds / cpu.wall_s:.2f} cores)"
        for part, seconds in parts.items()
    )
    cores = os.cpu_count() or 1
    busy = cpu.machine_s / cpu.wall_s
    ours_ms = (sum(cpu.trees.values()) + cpu.wrk_s) * 1000 / requests
    single = {part: cpu.trees[part] * 1000 / requests for part in ONE_CORE if part in cpu.trees}
    slowest = max(single, key=lambda part: single[part])
    ceiling = min(cores * 1000 / ours_ms, 1000 / single[slowest])
    return [
        Row(f"{name}: CPU per request (cores busy)", shown),
        Row(f"{name}: machine busy / of which other work (processes, kernel)",
            f"{busy:.2f} / {cpu.others_s / cpu.wall_s:.2f} of {cores} cores"),
        Row(f"{name}: CPU-bound ceiling: {ours_ms:.2f} ms on {cores} idle cores, "
            f"{single[slowest]:.2f} ms on {slowest}'s one core",
            f"{ceiling:,.0f} requests/s", "", "estimate"),
    ]  # fmt: skip


def warm_up(name: str, load: Load, args: argparse.Namespace) -> None:
    warm, _ = run_wrk(load, seconds=args.warmup, connections=args.connections, processes={})
    if warm.ok == 0:
        raise WrongAnswer(f"{name} answered nothing but errors during the warm-up")
    print(f"{name}: warm-up {warm.rate:,.0f} requests/s, measuring {args.duration} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=30, help="seconds of each measured run")
    parser.add_argument("--connections", type=int, default=32, help="wrk's open connections")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of load before each run")
    parser.add_argument("--trees", type=int, default=MIDDLE_PARAMS["n_estimators"])
    parser.add_argument("--depth", type=int, default=MIDDLE_PARAMS["max_depth"])
    parser.add_argument(
        "--threads", type=int, help="XGBoost threads per prediction (PAYBAND_SERVING_THREADS)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=THROUGHPUT_TARGET,
        help="requests/s offered in the paced run (at most --connections in flight)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="MLServer adaptive batching: most requests merged (PAYBAND_SERVING_MAX_BATCH_SIZE)",
    )
    parser.add_argument(
        "--batch-time",
        type=float,
        default=0.002,
        help="MLServer adaptive batching: longest wait in s (PAYBAND_SERVING_MAX_BATCH_TIME_S)",
    )
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even if a target is missed")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so every context manager stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk (Debian/Ubuntu)", file=sys.stderr)
        sys.exit(2)
    if args.duration < 1 or args.warmup < 1 or args.connections < 1:
        parser.error("--duration, --warmup and --connections must be at least 1")

    with tempfile.TemporaryDirectory(prefix="payband-bench-") as tmp:
        home = Path(tmp)
        os.environ["PAYBAND_HOME"] = str(home)  # nothing of the run lands in ~/.payband
        if args.threads is not None:
            os.environ["PAYBAND_SERVING_THREADS"] = str(args.threads)  # the server's too
        os.environ["PAYBAND_SERVING_MAX_BATCH_SIZE"] = str(args.batch_size)
        os.environ["PAYBAND_SERVING_MAX_BATCH_TIME_S"] = str(args.batch_time)
        serving = ServingSettings()
        threads = serving.threads
        batching = (
            f"adaptive batching of up to {serving.max_batch_size} requests within "
            f"{serving.max_batch_time_s * 1000:g} ms"
            if serving.max_batch_size > 1
            else "batching off"
        )
        rows: list[Row] = [
            Row("cpus (every service and wrk share them)", str(os.cpu_count())),
            Row("1-min load average before the run (other work)", f"{os.getloadavg()[0]:.2f}"),
        ]
        folder = home / "model"
        params = MIDDLE_PARAMS | {"n_estimators": args.trees, "max_depth": args.depth}
        candidates, prep = adult_model(folder, params)
        rows += prep
        booster, schema = load_bundle(folder)
        size = model_size(booster)
        assert candidates.people is not None, "the Adult model keeps its held-out rows"
        people = candidates.people.head(REQUEST_ROWS).to_dict(orient="records")
        rows += [
            Row("model: trees / mean leaves per tree / max depth / mean leaf depth",
                f"{size.trees} / {size.mean_leaves:.1f} / {size.max_depth} / "
                f"{size.mean_leaf_depth:.2f}"),
            Row("model: features / bands", f"{len(schema.features)} / {schema.n_bands}"),
            Row("requests", f"one candidate each, {len(people):,} held-out Adult rows in turn"),
            Row("load: wrk", f"{min(WRK_THREADS, args.connections)} threads, "
                f"{args.connections} connections, {args.warmup} s warm-up + {args.duration} s "
                "each, keep-alive, loopback"),
            Row("MLServer", f"payband-serving serve, in-process inference, {batching}, "
                f"threads {threads}" + " (all cores)" * (threads == 0)),
            Row("gateway", "payband-gateway serve: 1 uvicorn process, default settings"),
            Row("audit log", "embedded PostgreSQL 18, fsync on (durable), group commit"),
        ]  # fmt: skip
        key = TestKey(name="benchmark", key=secrets.token_urlsafe(24), roles=("predict",))
        predictions = gateway_bodies(people)
        try:
            with (
                durable_audit_database("payband_audit") as (postgres, audit),
                inference_server(model_uri=folder) as mlserver,
                httpx.Client(timeout=30) as client,
            ):
                metadata = client.get(f"{mlserver.url}/v2/models/{mlserver.model_name}").json()
                v2 = v2_bodies(people, metadata)
                with gateway_server(
                    inference_url=mlserver.url, database_url=audit.url, keys=[key]
                ) as gateway:
                    features = check_answers(
                        client,
                        mlserver,
                        gateway,
                        key,
                        v2[:CHECKED_ROWS],
                        predictions[:CHECKED_ROWS],
                    )
                    if postgres.pid is None:
                        raise RuntimeError("the audit log's PostgreSQL is not running")
                    processes = {
                        "gateway": gateway.process.pid,
                        "MLServer": mlserver.process.pid,
                        "PostgreSQL": postgres.pid,
                    }
                    bare_load = Load(mlserver.infer_url, write_lines(home / "v2.jsonl", v2))
                    warm_up("MLServer", bare_load, args)
                    bare, bare_cpu = run_wrk(
                        bare_load,
                        seconds=args.duration,
                        connections=args.connections,
                        processes=processes,
                    )
                    gateway_load = Load(
                        f"{gateway.url}/v1/predictions",
                        write_lines(home / "predictions.jsonl", predictions),
                        [f"X-API-Key: {key.key}"],
                    )
                    warm_up("gateway", gateway_load, args)
                    responses_before = settled(lambda: count_rows(audit, "prediction_responses"))
                    errors_before = count_rows(audit, "prediction_errors")
                    metrics_before = client.get(f"{gateway.url}/metrics").text
                    served, served_cpu = run_wrk(
                        gateway_load,
                        seconds=args.duration,
                        connections=args.connections,
                        processes=processes,
                    )
                    responses = (
                        settled(lambda: count_rows(audit, "prediction_responses"))
                        - responses_before
                    )
                    errors = count_rows(audit, "prediction_errors") - errors_before
                    metrics_after = client.get(f"{gateway.url}/metrics").text
                    print(f"gateway: paced at {args.rate:g} requests/s for {args.duration} s",
                          flush=True)  # fmt: skip
                    paced_before = settled(lambda: count_rows(audit, "prediction_responses"))
                    paced_metrics_before = client.get(f"{gateway.url}/metrics").text
                    paced = run_paced(
                        f"{gateway.url}/v1/predictions",
                        predictions,
                        {"X-API-Key": key.key, "Content-Type": "application/json"},
                        rate=args.rate,
                        seconds=args.duration,
                        connections=args.connections,
                    )
                    # Every request was answered before run_paced returned: nothing in flight.
                    paced_rows = count_rows(audit, "prediction_responses") - paced_before
                    paced_metrics = client.get(f"{gateway.url}/metrics").text
                with audit.connect(autocommit=True) as conn:
                    verification = verify_chain(conn)
        except WrongAnswer as exc:
            print_table(rows)
            sys.exit(f"wrong answer: {exc}")

    route = {"route": "/v1/predictions", "method": "POST", "status": "200"}
    handler_ms = mean_ms(
        metrics_before, metrics_after, "payband_gateway_request_duration_seconds", **route
    )
    inference_ms = mean_ms(
        metrics_before, metrics_after, "payband_gateway_upstream_duration_seconds",
        stage="inference", outcome="ok",
    )  # fmt: skip
    audit_ms = mean_ms(
        metrics_before, metrics_after, "payband_gateway_audit_write_duration_seconds",
        kind="prediction",
    )  # fmt: skip
    ratio = served.rate / bare.rate
    audit_kept = responses >= served.ok
    rows += [
        Row(f"answers checked: {CHECKED_ROWS} candidates, gateway band and {features} "
            "contributions = MLServer's", "identical", "", "", True),
        Row("MLServer alone: requests/s", f"{bare.rate:,.0f}"),
        Row("MLServer alone: latency p99", f"{bare.p99_ms:.1f} ms"),
        *load_rows("MLServer alone", bare),
        Row("gateway: requests/s", f"{served.rate:,.0f}", f">= {THROUGHPUT_TARGET:.0f}",
            f"{served.rate / THROUGHPUT_TARGET:.0%} of target", served.rate >= THROUGHPUT_TARGET),
        # Closed loop: the latency is what the throughput leaves (Little's law, below); the
        # p99 target is judged in the paced run.
        Row("gateway: latency p99 (closed loop)", f"{served.p99_ms:.1f} ms"),
        *load_rows("gateway", served),
        Row("gateway / MLServer throughput", f"{ratio:.0%}", "", f"{ratio:.2f}"),
        # A closed loop keeps every connection busy: latency is what the rate leaves for it.
        Row(f"Little's law, {args.connections} connections / throughput = mean latency",
            f"gateway {args.connections / served.rate * 1000:.0f} ms, "
            f"MLServer {args.connections / bare.rate * 1000:.0f} ms", "",
            f"p99 < {P99_TARGET_MS:.0f} ms needs > "
            f"{args.connections / (P99_TARGET_MS / 1000):,.0f} requests/s"),
        Row("gateway: non-2xx answers", f"{served.non_2xx:,}", "0", "", served.non_2xx == 0),
        Row(f"gateway, paced: {args.rate:g} requests/s offered, at most {args.connections} "
            "in flight: achieved", f"{paced.rate:,.0f} requests/s, {len(paced.latencies_ms):,} "
            f"requests in {paced.seconds:.1f} s", f">= {THROUGHPUT_TARGET * 0.99:.0f}", "",
            paced.rate >= THROUGHPUT_TARGET * 0.99),
        Row("gateway, paced: latency p99 (from when each request was due)",
            f"{paced.percentile(0.99):.1f} ms", f"< {P99_TARGET_MS:.0f} ms",
            f"{paced.percentile(0.99) / P99_TARGET_MS:.0%} of budget",
            paced.percentile(0.99) < P99_TARGET_MS),
        Row("gateway, paced: latency p50 / p90 / max",
            f"{paced.percentile(0.5):.1f} / {paced.percentile(0.9):.1f} / "
            f"{paced.latencies_ms[-1]:.1f} ms"),
        Row("gateway, paced: p99 of the inference call / of the audit commit (/metrics)",
            p99_bound_ms(paced_metrics_before, paced_metrics,
                         "payband_gateway_upstream_duration_seconds", stage="inference")
            + " / " + p99_bound_ms(paced_metrics_before, paced_metrics,
                                   "payband_gateway_audit_write_duration_seconds",
                                   kind="prediction")),
        Row("gateway, paced: answers by status", ", ".join(
            f"{status}: {n:,}" for status, n in sorted(paced.statuses.items()))),
        Row("gateway, paced: 2xx answers = prediction_responses rows added",
            f"{paced.ok:,} = {paced_rows:,}", "equal", "", paced.ok == paced_rows),
        Row("gateway, paced: the load generator's own CPU (Python, aiohttp)",
            f"{paced.client_cpu_s / paced.seconds:.2f} cores"),
        Row("audit: prediction_responses rows added vs wrk's 2xx",
            f"{responses:,} vs {served.ok:,} (difference {responses - served.ok:+,})",
            "rows >= 2xx", "", audit_kept),
        Row("audit: prediction_errors rows added", f"{errors:,}"),
        Row("audit: hash chain after the run", str(verification), "ok", "", verification.ok),
        Row("gateway /metrics: mean handler / inference call / audit commit",
            f"{handler_ms:.1f} / {inference_ms:.1f} / {audit_ms:.1f} ms"),
        Row("gateway: mean latency at wrk minus in the handler (queueing, HTTP)",
            f"{served.mean_ms - handler_ms:.1f} ms"),
        *cpu_rows("MLServer run", bare_cpu, bare.requests),
        *cpu_rows("gateway run", served_cpu, served.requests),
        Row("1-min load average after the run", f"{os.getloadavg()[0]:.2f}"),
    ]  # fmt: skip
    print_table(rows)
    if not audit_kept or not verification.ok:
        sys.exit("the audit log does not hold every answered prediction")
    if not args.no_fail and any(row.passed is False for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
