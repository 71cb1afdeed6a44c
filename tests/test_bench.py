"""Smoke test of the benchmark suite, so that ``make bench`` cannot silently rot.

It runs tiny selections (servers: greenws and simple-websocket on werkzeug;
many connections on eventlet.wsgi with its raw echo; clients: greenws's,
simple-websocket's and the raw reference) and checks that the suite exits
cleanly and prints the ratios, with the ceiling (or floor) the raw reference
sets where a target applies.
Timing numbers are not checked: tests never judge performance.
"""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quick_bench(only):
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--reps", "1",
         "--seconds", "0.2", "--only", only],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FAILED" not in proc.stdout, proc.stdout
    return proc.stdout


def test_bench_quick_runs_and_prints_a_ratio():
    out = _quick_bench(r"^rt/(greenws|simple)-werkzeug$")
    assert "ratio greenws-werkzeug / simple-werkzeug" in out, out


def test_bench_client_section_reports_the_raw_ceiling():
    out = _quick_bench(
        r"^client-rt/(raw client|greenws\.Client|simple_websocket\.Client)$"
    )
    assert "ratio greenws.Client / simple_websocket.Client" in out, out
    assert "(ceiling set by raw client:" in out, out


def test_bench_many_section_reports_the_host_floor():
    out = _quick_bench(r"^many-100/(raw|greenws|simple)-eventlet$")
    assert "ratio greenws-eventlet / simple-eventlet" in out, out
    assert "(ceiling set by raw-eventlet:" in out, out
    assert "(floor set by raw-eventlet:" in out, out


def test_bench_asyncio_rows():
    out = _quick_bench(
        r"^(rt/(greenws-aio|websockets-aio)"
        r"|client-rt/(raw client|greenws\.AioClient|websockets\.asyncio\.client))$"
    )
    assert "ratio greenws-aio / websockets-aio" in out, out
    assert "ratio greenws.AioClient / websockets.asyncio.client" in out, out
    assert "target >= 1.3x" in out, out


def test_bench_tls_many_rows():
    out = _quick_bench(r"^many-100-tls/(greenws-gevent|raw-gevent)-tls$")
    assert "ratio greenws-gevent-tls / raw-gevent-tls [many-100-tls, CPU ms/conn" in (
        out
    ), out
    assert "target <= 1.3x" in out, out


def test_bench_client_connect_rows():
    out = _quick_bench(
        r"^client-connect/(raw client|greenws\.Client|websockets\.sync\.client)$"
    )
    assert "ratio greenws.Client / websockets.sync.client [client-connect" in out, out
    assert "target >= 1.5x" in out and "(ceiling set by raw client:" in out, out
