"""What monitoring costs: CPU time of sampling at 10 Hz, per source.

    python bench/monitor_cost.py [--seconds 30]

Samples each source every 100 ms for the given time and divides the process CPU time spent
in sample() by the wall time: the share of one core. The Linux source reads this machine;
the tegra source reads the recorded AGX Orin (JetPack 6.0) sysfs tree from the test
fixtures (same files and parsing as on a board, without the kernel's cost of producing
them). Writes the "monitor_cost" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from results import write_section

from edge_service.monitor.linux_source import LinuxSource
from edge_service.monitor.tegra_source import TegraSource

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "unit" / "monitor"))


def cost(source, seconds: float, hz: float = 10.0) -> tuple[float, float, int]:
    """(share of one core, mean ms per sample, samples) at ``hz`` for ``seconds``."""
    period, n, cpu = 1.0 / hz, 0, 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.process_time()
        source.sample()
        cpu += time.process_time() - t0
        n += 1
        time.sleep(period)
    return cpu / seconds, cpu / n * 1e3, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    from jetson_boards import build_tree  # the test fixtures' tree builder

    rows = [
        "| source | samples | CPU per sample | share of one core at 10 Hz |",
        "|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        sources = {
            "linux (this machine)": LinuxSource(),
            "tegra (AGX Orin JP6.0 fixture tree)": TegraSource(
                root=build_tree("agx-orin-jp6.0", Path(tmp))
            ),
        }
        for name, source in sources.items():
            share, ms, n = cost(source, args.seconds)
            rows.append(f"| {name} | {n} | {ms:.3f} ms | **{share:.2%}** |")
            print(rows[-1])
            source.close()
    body = "\n".join(rows) + (
        "\n\nTarget: <= 1% of one core at 10 Hz. CPU time is the process's own "
        "(time.process_time) inside sample(), over wall time."
    )
    write_section("monitor_cost", "Monitor sampling cost", body)


if __name__ == "__main__":
    main()
