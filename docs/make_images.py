"""Regenerate the example figures of README.md and docs/ from the bundled samples.

    python docs/make_images.py

Runs `landscape report` on the bundled MLP (spectrum, classify, sharpness, 2-D surface), a 1-D
eigen-direction surface, `jacobian`, and `classify` on the saddle sample, then renders every figure kind
into docs/images/ with `landscape plot`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

IMAGES = Path(__file__).resolve().parent / "images"


def landscape(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "landscape_cli", *args, "--quiet"],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "mlp.h5"
        landscape("report", "--out", str(report), "--no-plots")
        landscape(
            "surface", "--dims", "1", "--kind", "eigen", "--span", "0.3", "--out", str(report)
        )
        landscape("jacobian", "--out", str(report))
        saddle = Path(tmp) / "saddle.h5"
        landscape("classify", "sample:saddle", "--out", str(saddle))
        for path in (report, saddle):
            subprocess.run(
                [sys.executable, "-m", "landscape_cli", "plot", str(path), "--out-dir", tmp],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        for figure in sorted(Path(tmp).glob("*.png")):
            shutil.copy(figure, IMAGES / figure.name)
            print(IMAGES / figure.name)


if __name__ == "__main__":
    main()
