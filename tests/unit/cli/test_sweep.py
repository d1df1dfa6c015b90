"""``fastpool bench --sweep ... --plot``, end to end on the embedded default: the
table, the JSON, the knee, and the PNG (its header, its size, and that it decodes)."""

from __future__ import annotations

import json
import struct

import pytest

from fastpool.cli import main
from fastpool.cli.sweep import format_sweep, knee, parse_sizes
from tests.unit.cli.test_cli import run


def png_size(path) -> tuple[int, int]:
    """Width and height from a PNG's signature and IHDR chunk (RFC 2083)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow  # ~20 s on the shared machine, most of it importing matplotlib
def test_sweep_prints_each_size_marks_the_knee_and_draws_a_png(tmp_path):
    png = tmp_path / "sweep.png"
    proc = run("bench", "--sweep", "1,2", "--duration", "0.1", "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("fastpool bench --sweep: sqlite (the embedded default), ")
    assert "4 threads" in out  # twice the largest size
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [int(r[0]) for r in rows] == [1, 2]
    assert sum(1 for line in out.splitlines() if line.endswith("<- knee")) == 1
    assert "knee: max_size " in out and f"plot: {png}" in out
    assert "max_size 2, 4 threads" in proc.stderr  # progress per size
    # The picture: a real PNG of the size drawn (8 x 4.5 in at 100 dpi), decodable.
    assert png_size(png) == (800, 450)
    assert png.stat().st_size > 10_000
    image = pytest.importorskip("matplotlib.image").imread(str(png))
    assert image.shape[:2] == (450, 800)
    assert image.std() > 0.05  # lines and text, not a blank canvas


def test_sweep_json_has_every_size_and_the_knee(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["bench", "--url", url, "--sweep", "2,1", "--threads", "3", "--duration",
                 "0.3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["max_size"] for r in out["sizes"]] == [1, 2]
    assert out["threads"] == 3 and out["knee"] in (1, 2)
    for r in out["sizes"]:
        assert r["throughput"] > 0 and r["cycles"] > 0
        assert 0 < r["latency_p50"] <= r["latency_p99"]
        assert 0 < r["utilization"] <= 1.0


@pytest.mark.parametrize(("args", "message"), [
    (("--sweep", "0,1"), "must be >= 1"),
    (("--sweep", "1,x"), "comma-separated pool sizes"),
    (("--plot", "x.png"), "--plot goes with --sweep"),
    (("--sweep", "1,2", "--min-size", "1"), "no --min-size"),
])
def test_sweep_rejects_bad_arguments(args, message, capsys):
    try:
        code = main(["bench", *args])
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_knee_is_the_size_of_greatest_power():
    sizes = [1, 2, 4, 8, 16]
    # Throughput doubles up to 4 (latency flat), then stays flat (latency grows).
    throughput = [100.0, 200.0, 400.0, 410.0, 405.0]
    latency = [0.01, 0.01, 0.01, 0.0195, 0.04]
    assert knee(sizes, throughput, latency) == 4
    assert knee([1, 2], [100.0, 100.0], [0.01, 0.01]) == 1  # a tie: the smaller
    assert parse_sizes("8, 2,2,4") == [2, 4, 8]


def test_format_sweep_marks_one_row():
    result = {"url": "x", "threads": 4, "query": "SELECT 1", "duration": 1.0, "knee": 2,
              "sizes": [{"max_size": s, "throughput": 10.0 * s, "latency_p50": 0.001,
                         "latency_p99": 0.002, "acquire_wait_p99": 0.0,
                         "utilization": 0.9, "cycles": 10} for s in (1, 2)]}
    text = format_sweep(result)
    (marked,) = [line for line in text.splitlines() if "<- knee" in line]
    assert marked.split()[0] == "2"
