"""What a report costs at model scale: file size and the peak memory of `report` and `plot`.

Run from the repository root (sizes and memory do not depend on how busy the machine is)::

    python benchmarks/report_size.py              # ResNet-18 (11.2M parameters), 64 images
    python benchmarks/report_size.py --quick      # cnn3-cifar (94 538 parameters)

For each of ``--save-eigenvectors`` off and on, one ``landscape report`` process writes the
report (short settings: the sizes do not depend on the number of HVPs) and one
``landscape plot`` process draws it; each process's peak resident memory is ``ru_maxrss`` from
``os.wait4``. The baseline is a process that only imports the CLI, torch and matplotlib, measured
in the same run: ``plot`` above it is what reading and drawing the report costs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

FAST = (
    "spectrum: {{trace_matvecs: 8, slq_runs: 1, slq_steps: 10, grid: 200, top_k: 5, "
    "save_eigenvectors: {vectors}}}\n"
    "sharpness: {{rho: [0.05], samples: 2, steps: 2}}\nsurface: {{points: 5}}\n"
)


def main(argv: list[str] | None = None) -> None:
    import torch
    from peers import run_child
    from workloads import build_synthetic, resnet18

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="cnn3-cifar instead of ResNet-18")
    parser.add_argument("--samples", type=int, default=64)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if args.quick:
            model, x, y = build_synthetic("cnn3-cifar", 0, quick=True)
            factory = f"{HERE / 'workloads.py'}:cnn3"
        else:
            torch.manual_seed(0)
            model = resnet18(num_classes=10)
            gen = torch.Generator().manual_seed(1)
            x = torch.randn(args.samples, 3, 32, 32, generator=gen)
            y = torch.randint(0, 10, (args.samples,), generator=gen)
            factory = f"{HERE / 'workloads.py'}:resnet18"
        n = sum(p.numel() for p in model.parameters())
        torch.save(model.state_dict(), tmp / "ckpt.pt")
        torch.save({"x": x, "y": y}, tmp / "data.pt")
        landscape = [sys.executable, "-m", "landscape_cli"]
        baseline = run_child(
            [sys.executable, "-c", "import landscape_cli.cli.app, torch, matplotlib.pyplot"], 600
        )
        print(f"{n:,} parameters, {x.shape[0]} samples; baseline process (imports only): "
              f"{baseline['peak_mb']:.0f} MB\n")  # fmt: skip
        print("| --save-eigenvectors | report file MB | MB per million parameters | "
              "`report` peak MB | `plot` peak MB | `plot` above baseline MB |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for vectors in ("false", "true"):
            config = tmp / f"fast-{vectors}.yaml"
            config.write_text(FAST.format(vectors=vectors))
            report = tmp / f"r-{vectors}.h5"
            written = run_child(
                [*landscape, "report", str(tmp / "ckpt.pt"), "--model", factory, "--data",
                 str(tmp / "data.pt"), "--config", str(config), "--out", str(report),
                 "--no-plots", "--no-html", "--quiet"],
                3600,
            )  # fmt: skip
            if written["returncode"] != 0:
                print(f"| {vectors} | report failed: {written['stderr'].strip()[-200:]} |")
                continue
            drawn = run_child([*landscape, "plot", str(report), "--quiet"], 600)
            size = report.stat().st_size / 1e6
            print(
                f"| {'on' if vectors == 'true' else 'off'} | {size:.2f} | {size / n * 1e6:.3f} | "
                f"{written['peak_mb']:.0f} | {drawn['peak_mb']:.0f} | "
                f"{drawn['peak_mb'] - baseline['peak_mb']:.0f} |"
            )


if __name__ == "__main__":
    main()
