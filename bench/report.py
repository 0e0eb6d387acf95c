"""Turn bench/results/*.json into the tables of docs/benchmarks.md.

    .venv/bin/python -m bench.report

Only the part between the ``results:begin`` and ``results:end`` markers is
rewritten; the prose around it is kept.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench import common

DOC = common.REPO / "docs" / "benchmarks.md"
BEGIN = "<!-- results:begin (written by python -m bench.report) -->"
END = "<!-- results:end -->"
VARIANTS = ("large", "default", "small")
ENGINES = {
    "profiled": "profiled (crunch step)",
    "vips_chain": "libvips best chain",
    "vips_thumbnail": "libvips thumbnail x3",
    "pillow_naive": "naive Pillow",
    "thumbor": "thumbor 7 over HTTP",
}


def load(name: str) -> dict[str, Any] | None:
    path = common.RESULTS / f"{name}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def n(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "∞ (lossless)"
    return f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None, digits: int = 2) -> str:
    if not a or not b:
        return "—"
    return f"{a / b:.{digits}f}x"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def crunch(d: dict[str, Any]) -> list[str]:
    src = d["sources"]
    ms, cpu = d["ms"], d.get("cpu_ms", {})
    engines = [e for e in ENGINES if e in ms]
    out = [
        "### Crunch",
        "",
        f"Command: `{d['command']}` ({d['rounds']} interleaved rounds after a warm-up; "
        "median wall-clock ms per source, all three variants written; CPU ms in "
        "brackets: the process's own for in-process engines, the server's mean for thumbor).",
        "",
    ]
    head = ["source"] + [ENGINES[e] for e in engines] + ["profiled / libvips chain"]
    rows = []
    for s, info in src.items():
        row = [f"{info['label']} ({info['bytes'] / 1e6:.2f} MB)"]
        for e in engines:
            c = cpu.get(e, {}).get(s)
            row.append(f"{n(ms[e][s])} ({n(c)})")
        row.append(
            f"{ratio(ms['profiled'][s], ms.get('vips_chain', {}).get(s))} wall, "
            f"{ratio(cpu.get('profiled', {}).get(s), cpu.get('vips_chain', {}).get(s))} CPU"
        )
        rows.append(row)
    out += table(head, rows)
    rows = []
    for s, info in src.items():
        p = ms["profiled"][s]
        t = ms.get("thumbor", {}).get(s)
        rows.append(
            [
                info["label"],
                n(1000 / p),
                n(1000 / cpu["profiled"][s]) if cpu.get("profiled") else "—",
                n(1000 / t) if t else "—",
                n(d["child_peak_rss_kib"][s] / 1024),
            ]
        )
    out += table(
        [
            "source",
            "profiled images/s per core (wall)",
            "(CPU)",
            "thumbor images/s per core",
            "crunch child peak RSS, MiB",
        ],
        rows,
    )
    out.append(
        f"A crunch child that has only started (Python, Pillow, no job) peaks at "
        f"{d['child_peak_rss_kib']['(no job)'] / 1024:.1f} MiB."
    )
    out.append("")
    out.append("Output bytes per variant (large / default / small):")
    out.append("")
    rows = []
    for s, info in src.items():
        row = [info["label"]]
        for e in engines:
            b = d["bytes"][e][s]
            row.append(" / ".join(f"{b[v] / 1024:.1f} K" for v in VARIANTS))
        rows.append(row)
    out += table(["source"] + [ENGINES[e] for e in engines], rows)
    out.append(
        "PSNR (dB) of each variant against a lossless full-resolution Lanczos reference "
        "(large / default / small; transparency composited over grey). The target: "
        "profiled within 0.1 dB of naive Pillow (Δ) where naive Pillow is lossy (JPEG); "
        "for the PNG, naive Pillow *is* the reference (∞), so the figure says how close "
        "the others come."
    )
    out.append("")
    rows = []
    q = d["psnr"]
    for s, info in src.items():
        row = [info["label"]]
        for e in engines:
            row.append(" / ".join(n(q[e][s][v], 2) for v in VARIANTS))
        deltas = []
        for v in VARIANTS:
            a, b = q["profiled"][s][v], q["pillow_naive"][s][v]
            deltas.append("—" if math.isinf(b) else f"{a - b:+.3f}")
        row.append(" / ".join(deltas))
        rows.append(row)
    out += table(["source"] + [ENGINES[e] for e in engines] + ["Δ profiled - naive"], rows)
    return out


def ingest(d: dict[str, Any]) -> list[str]:
    s = d["summary"]
    out = [
        "### Ingest",
        "",
        f"Command: `{d['command']}`; body {d['body_bytes'] / 2**20:.2f} MiB (a photo JPEG), "
        f"{d['runs']} runs of {d['seconds_per_run']} s each, median. Reference: {d['reference']} "
        "(stock twisted.web, which reads the body to a temp file first). Servers on CPU 0, "
        "wrk on CPU 1.",
        "",
    ]
    rows = []
    for c in sorted(s["profiled"], key=int):
        p, r = s["profiled"][c], s["plain_put"][c]
        rows.append(
            [
                c,
                f"{n(p['rps'])} /s, p50 {n(p['p50_ms'])} ms, p99 {n(p['p99_ms'])} ms",
                f"{n(r['rps'])} /s, p50 {n(r['p50_ms'])} ms, p99 {n(r['p99_ms'])} ms",
                ratio(r["rps"], p["rps"]),
                f"{n(p.get('cpu_ms_per_upload'))} / {n(r.get('cpu_ms_per_upload'))}",
                ratio(p.get("cpu_ms_per_upload"), r.get("cpu_ms_per_upload")),
                str(p["errors"] + r["errors"]),
            ]
        )
    out += table(
        [
            "clients",
            "profiled web role",
            "plain PUT into LocalStore",
            "time ratio (target ≤ 1.15x)",
            "server CPU ms per upload, profiled / plain",
            "CPU ratio",
            "errors",
        ],
        rows,
    )
    m = d["rss"]
    out.append(
        f"Web role RSS while {m['clients']} clients upload "
        f"{m['body_bytes'] / 2**20:.0f} MiB bodies ({m['uploads']} uploads, "
        f"{n(m['rps'])} /s): idle {m['idle_kib'] / 1024:.1f} MiB, peak "
        f"{m['peak_kib'] / 1024:.1f} MiB, growth **{m['growth_kib'] / 1024:.1f} MiB** "
        "(target < 50 MiB)."
    )
    return [*out, ""]


def serve(d: dict[str, Any]) -> list[str]:
    s = d["summary"]
    labels = {
        "profiled": "profiled proxy role (defaults: read cache, access log)",
        "profiled_quiet": "profiled proxy role, `proxy.access_log = false`",
        "profiled_nocache": "profiled proxy role, `local.public_cache_mb = 0`",
        "nginx": "nginx (1 worker, access log off)",
        "static_file": "twisted.web.static.File",
        "twisted_floor": "twisted.web floor: constant body, no log, no file",
        "whatif_noinstrument": "what-if: access log off, no store instrumentation",
    }
    out = [
        "### Serve",
        "",
        f"Command: `{d['command']}`; {d['ids']} ids of {d['mean_bytes'] / 1024:.1f} KiB on "
        f"average, wrk with {d['connections']} connections walking all of them, server on "
        f"CPU 0, wrk on CPU 1, {d['runs']} runs of {d['seconds_per_run']} s, median.",
        "",
    ]
    rows = []
    for name, label in labels.items():
        if name not in s:
            continue
        r = s[name]
        per_cpu = r.get("per_cpu_s")
        rows.append(
            [
                label,
                n(r["rps"], 0),
                n(r["p50_ms"], 2),
                n(r["p99_ms"], 2),
                ratio(r["rps"], s["static_file"]["rps"]),
                ratio(r["rps"], s["nginx"]["rps"], 3),
                n(per_cpu, 0),
                ratio(per_cpu, s["static_file"].get("per_cpu_s")),
                ratio(per_cpu, s["nginx"].get("per_cpu_s"), 3),
                str(r["errors"]),
            ]
        )
    out += table(
        [
            "server",
            "req/s",
            "p50 ms",
            "p99 ms",
            "vs static.File",
            "vs nginx",
            "req per CPU-second",
            "vs static.File",
            "vs nginx",
            "errors",
        ],
        rows,
    )
    c = d["every_core"]
    one, two = c["1 process"], c["2 processes"]
    out.append(
        "Every core (proxy processes sharing one socket, nothing pinned, wrk on the same "
        f"two cores): 1 process {n(one['rps'], 0)} req/s (p99 {n(one['p99_ms'], 2)} ms), "
        f"2 processes {n(two['rps'], 0)} req/s (p99 {n(two['p99_ms'], 2)} ms): "
        f"{ratio(two['rps'], one['rps'])}."
    )
    return [*out, ""]


def sustained_rows(s: dict[str, Any]) -> list[list[str]]:
    lat, up = s["latency_ms"], s["upload_ms"]
    return [
        [
            "offered",
            f"{s['rate_per_s']:g} uploads/s for {s['seconds']:g} s ({s['sent']}); "
            f"sending took {s['sending_took_s']:.0f} s",
        ],
        ["accepted / ready", f"{s['accepted']} / {s['ready']}"],
        [
            "upload-to-ready p50 / p99 / max",
            f"{n(lat['p50'], 0)} / **{n(lat['p99'], 0)}** / {n(lat['max'], 0)} ms "
            "(target p99 < 1,000 ms)",
        ],
        ["upload alone p50 / p99", f"{n(up['p50'], 0)} / {n(up['p99'], 0)} ms"],
        ["queue depth, max / at the end", f"{s['queue_depth_max']} / {s['queue_depth_last']}"],
        *cpu_rows(s),
    ]


def cpu_rows(s: dict[str, Any]) -> list[list[str]]:
    """Where the CPU went during a sustained run, moto's share apart (older results: none)."""
    if not s.get("cpu_s"):
        return []
    names = {"web": "web role", "worker": "worker", "crunch": "crunch children", "moto": "moto"}
    # In this order (the results file has its keys sorted).
    cpu = {k: s["cpu_s"][k] for k in names if k in s["cpu_s"]}
    total = sum(cpu.values())
    rows = [
        [
            f"CPU seconds in the {s['window_s']:.0f} s run: " + " / ".join(names[k] for k in cpu),
            " / ".join(n(v) for v in cpu.values()) + f" (total {n(total)})",
        ]
    ]
    if "moto" in cpu:
        rows.append(
            [
                "moto's share of that CPU",
                f"**{100 * cpu['moto'] / (total or 1.0):.0f}%** "
                f"({cpu['moto'] / s['window_s']:.2f} cores on average)",
            ]
        )
    idle = {k: s["idle_cpu_s_per_s"][k] for k in cpu if k in s.get("idle_cpu_s_per_s", {})}
    if idle:
        rows.append(
            [
                "CPU with nothing to do, cores: " + " / ".join(names[k] for k in idle),
                " / ".join(f"{v:.3f}" for v in idle.values()),
            ]
        )
    m = s["machine_cpu_s"]
    parts = sum(m.values()) or 1.0
    rows.append(
        [
            "machine CPU meanwhile: these processes / other tenants / idle",
            " / ".join(f"{100 * m[k] / parts:.0f}%" for k in ("ours", "others", "idle")),
        ]
    )
    if "observer_requests" in s:
        o = s["observer_requests"]
        rows.append(
            [
                "the benchmark's own requests to moto",
                f"{o['s3_head']} HEAD (readiness) + {o['sqs_attributes']} GetQueueAttributes",
            ]
        )
    return rows


def e2e(d: dict[str, Any], crunch_d: dict[str, Any] | None) -> list[str]:
    out = [
        "### End to end (local driver)",
        "",
        f"Command: `{d['command']}`; photos {d['photo']['size'][0]}x{d['photo']['size'][1]} "
        f"JPEG, EXIF-rotated, {min(d['photo']['bytes']) / 1e6:.1f}-"
        f"{max(d['photo']['bytes']) / 1e6:.1f} MB; machine load average during the run "
        f"{d.get('loadavg', ['?'])[0]}.",
        "",
    ]
    for key, title in (("sustained", "target rate"), ("sustained_low", "lighter rate")):
        if key in d:
            out += table([f"sustained load, {title}", "value"], sustained_rows(d[key]))
    t = d["throughput"]
    rows = []
    for label, r in t.items():
        runs = r["runs"]
        worker = common.median([x.get("worker_cpu_ms_per_image", 0.0) for x in runs])
        crunch_ms = common.median([x.get("crunch_cpu_ms_per_image", 0.0) for x in runs])
        shares = [x["machine_cpu_s"] for x in runs if "machine_cpu_s" in x]
        if shares:
            fractions = [{k: v / (sum(m.values()) or 1.0) for k, v in m.items()} for m in shares]
            share = " / ".join(
                f"{100 * common.median([f[k] for f in fractions]):.0f}%"
                for k in ("profiled", "others", "idle")
            )
        else:
            share = "—"
        rows.append(
            [
                label,
                n(r["images_per_s"], 2),
                n(r["images_per_cpu_s"], 2),
                f"{n(worker)} / {n(crunch_ms)}",
                share,
            ]
        )
    out += table(
        [
            "queue drained by",
            "images/s",
            "images per CPU-second",
            "CPU ms per image: worker process / crunch children",
            "machine CPU meanwhile: profiled / other tenants / idle",
        ],
        rows,
    )
    one = t["1 worker"]["images_per_s"]
    pinned = t["1 worker, 1 core"]["images_per_s"]
    two = t["2 workers"]["images_per_s"]
    out.append(
        f"2 workers vs 1: **{ratio(two, one)}** (vs 1 worker pinned to one core: "
        f"{ratio(two, pinned)}; target ≥ 1.8x on 2 cores)."
    )
    if crunch_d and "thumbor" in crunch_d["ms"]:
        th = crunch_d["ms"]["thumbor"]["camera-12mp.jpg"]
        th_cpu = crunch_d.get("cpu_ms", {}).get("thumbor", {}).get("camera-12mp.jpg")
        per_cpu = t["1 worker, 1 core"]["images_per_cpu_s"]
        out.append(
            f"Worker end to end on one core (read, crunch in the pool, write three variants, "
            f"ack): {n(pinned, 2)} images/s; thumbor makes the same three variants of the "
            f"12 MP JPEG in {n(th)} ms on one core, {n(1000 / th, 2)} images/s: "
            f"**{ratio(pinned, 1000 / th)}** (target ≥ 2x). Per CPU-second: "
            f"{n(per_cpu, 2)} vs {n(1000 / th_cpu, 2) if th_cpu else '—'} images, "
            f"{ratio(per_cpu, 1000 / th_cpu) if th_cpu else '—'}."
        )
    return [*out, ""]


def e2e_aws(d: dict[str, Any]) -> list[str]:
    out = [
        "### End to end (S3/SQS on moto)",
        "",
        f"Command: `{d['command']}`; the same photos, client and rates as the local run; "
        f"moto {d['moto']['version']} in server mode on the same two cores (SigV4 and IAM "
        "checked), objects over "
        f"{d['moto']['key_buffer_bytes'] / 2**20:g} MiB spooled to disk by moto; ready when "
        "the worker logs the image ready and a HEAD of its default variant on moto finds it; "
        f"machine load average during the run {d.get('loadavg', ['?'])[0]}.",
        "",
    ]
    for key, title in (("sustained", "target rate"), ("sustained_low", "lighter rate")):
        if key in d:
            s = d[key]
            out += table(
                [f"sustained load on S3/SQS, {title}", "value"],
                [
                    *sustained_rows(s),
                    ["moto peak RSS", f"{n(s.get('moto_peak_rss_mib'), 0)} MiB"],
                ],
            )
    t = d.get("throughput")
    if t:
        rows = []
        for label, r in t.items():
            runs = r["runs"]
            per = [
                common.median([x[f"{k}_cpu_ms_per_image"] for x in runs])
                for k in ("worker", "crunch", "moto")
            ]
            shares = [x["machine_cpu_s"] for x in runs]
            fractions = [{k: v / (sum(m.values()) or 1.0) for k, v in m.items()} for m in shares]
            share = " / ".join(
                f"{100 * common.median([f[k] for f in fractions]):.0f}%"
                for k in ("profiled", "moto", "others", "idle")
            )
            rows.append(
                [
                    label,
                    n(r["images_per_s"], 2),
                    n(r["images_per_cpu_s"], 2),
                    " / ".join(n(x) for x in per),
                    share,
                ]
            )
        out += table(
            [
                "queue drained by",
                "images/s",
                "images per profiled CPU-second",
                "CPU ms per image: worker process / crunch children / moto",
                "machine CPU meanwhile: profiled / moto / other tenants / idle",
            ],
            rows,
        )
        one, two = t["1 worker"]["images_per_s"], t["2 workers"]["images_per_s"]
        images = t["1 worker"]["runs"][0]["images"]
        out.append(
            f"{images} originals queued at once; 2 workers vs 1 on S3/SQS: **{ratio(two, one)}**."
        )
    return [*out, ""]


def render() -> list[str]:
    c, i, s, e = load("crunch"), load("ingest"), load("serve"), load("e2e")
    a = load("e2e_aws")
    first = next((x for x in (c, i, s, e, a) if x), None)
    if first is None:
        return ["No results yet: run `make bench`.", ""]
    m = first["machine"]
    out = [
        f"Measured {first['when']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}, Python {m['python']}.",
        "",
    ]
    versions: dict[str, str] = {}
    for x in (c, i, s):
        if x:
            versions.update(x.get("versions", {}))
    if versions:
        out.append("Versions: " + "; ".join(f"{k} {v}" for k, v in sorted(versions.items())) + ".")
        out.append("")
    loads = [
        f"{x['benchmark']} {x['loadavg'][0]}" for x in (c, i, s, e, a) if x and x.get("loadavg")
    ]
    if loads:
        out.append(
            "The machine is shared: its 1-minute load average at the end of each benchmark "
            "was " + ", ".join(loads) + " (2 cores; above 2, other work was waiting for them)."
        )
        out.append("")
    if c:
        out += crunch(c)
    if i:
        out += ingest(i)
    if s:
        out += serve(s)
    if e:
        out += e2e(e, c)
    if a:
        out += e2e_aws(a)
    return out


def main() -> None:
    body = "\n".join([BEGIN, "", *render(), END])
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + body + tail
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    Path(DOC).write_text(text)
    print(f"wrote {DOC.relative_to(common.REPO)}")


if __name__ == "__main__":
    main()
