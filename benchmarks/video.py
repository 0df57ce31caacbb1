"""VideoBERT tokenization benchmark: decoding, clip features, hierarchical k-means, whole-pipeline speed.

    python benchmarks/video.py [--seconds 60] [--points 30000] [--dim 1024] [--depth 3] [--branching 12] [--threads 1]

Rows (each printed as it finishes; the last line is one JSON object with every number):

1. decode frames/s of a generated 320×240 video: PyAV (``multibert.video.decode``) at the native rate, and
   resampled to 20 fps + scaled / cropped to 112 px, against the ``ffmpeg`` command line doing the same into a
   pipe (skipped with a message when ``ffmpeg`` is not on PATH);
2. clip features/s of each extractor (light at 32 px; S3D and R3D-18 with random weights at 112 px, 16 frames);
3. hierarchical k-means fit and assignment time against ``sklearn.cluster.MiniBatchKMeans`` with the same number
   of leaves (k^d) on the same features, and the share of points where the tree walk picks the nearest leaf;
4. real-time factor of the whole tokenization (decode → light features → words) at the synthetic demo's settings
   (10 fps, 15-frame clips, 32 px) and at the paper's clip timing (20 fps, 30-frame clips, 112 px).

Goals from the issue: tokenization ≥ 10× real time on 2 cores with the light extractor; k-means fit ≥ 10× faster
than MiniBatchKMeans at equal leaf count. torch and sklearn get the same number of threads (``--threads``, 1 by
default: on two shared cores a second thread slowed small tensor ops several-fold). Timings depend on the
machine's load: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.video.synthetic import draw_action, write_video  # noqa: E402
from multibert.video.decode import iter_frames  # noqa: E402
from multibert.video.features import build_extractor  # noqa: E402
from multibert.video.quantize import HierarchicalKMeans  # noqa: E402
from multibert.video.tokenize import tokenize_videos  # noqa: E402


def make_video(path: Path, seconds: float, fps: int = 30, width: int = 320, height: int = 240) -> Path:
    rng = np.random.default_rng(0)
    verbs = ["push", "lift", "rotate", "grow"]

    def frames():
        n = int(seconds * fps)
        per = 3 * fps
        for i in range(0, n, per):
            for f in draw_action(verbs[(i // per) % 4], "square", "red", min(per, n - i), height, rng):
                pad = np.full((height, width, 3), 30, np.uint8)
                pad[:, (width - height) // 2 : (width + height) // 2] = f
                yield pad

    return write_video(path, frames(), fps, codec="mpeg4")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench_decode(path: Path, seconds: float) -> dict:
    res = {}
    n, dt = timed(lambda: sum(1 for _ in iter_frames(path, fps=30, size=None)))
    res["pyav_native_fps"] = n / dt
    n, dt = timed(lambda: sum(1 for _ in iter_frames(path, fps=20, size=112)))
    res["pyav_20fps_112px_fps"] = n / dt
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        print("decode: ffmpeg not on PATH, skipping the ffmpeg rows (apt-get install -y ffmpeg to compare)")
        res["ffmpeg_native_fps"] = res["ffmpeg_20fps_112px_fps"] = None
    else:
        for key, vf, frames in (
            ("ffmpeg_native_fps", None, int(seconds * 30)),
            ("ffmpeg_20fps_112px_fps", "fps=20,scale=-2:112,crop=112:112", int(seconds * 20)),
        ):
            cmd = [ffmpeg, "-v", "error", "-threads", "0", "-i", str(path)] + (["-vf", vf] if vf else [])
            cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
            out, dt = timed(lambda: subprocess.run(cmd, capture_output=True, check=True).stdout)
            res[key] = frames / dt
    for k, v in res.items():
        print(f"decode {k}: " + ("skipped" if v is None else f"{v:,.0f} frames/s"))
    return res


def bench_features(batch: int = 8) -> dict:
    res = {}
    for name, size, frames in (("light", 32, 15), ("s3d", 112, 16), ("r3d_18", 112, 16)):
        model = build_extractor(name, random_weights=name != "light").eval()
        x = torch.randint(0, 255, (batch, frames, size, size, 3), dtype=torch.uint8)
        with torch.inference_mode():
            model(x[:1])  # warm-up
            reps = 20 if name == "light" else 1
            _, dt = timed(lambda: [model(x) for _ in range(reps)])
        res[f"{name}_clips_per_s"] = batch * reps / dt
        print(f"features {name} ({frames}×{size}²): {res[f'{name}_clips_per_s']:,.1f} clips/s")
    return res


def bench_kmeans(points: int, dim: int, depth: int, branching: int, threads: int) -> dict:
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(64, dim, generator=g) * 3
    x = centres[torch.randint(64, (points,), generator=g)] + torch.randn(points, dim, generator=g)
    leaves = branching**depth
    tree, fit_tree = timed(lambda: HierarchicalKMeans(depth, branching).fit(x, iters=20))
    words, assign_tree = timed(lambda: tree.assign(x))
    flat = tree.assign_flat(x)
    xn = x.numpy()
    mbk = MiniBatchKMeans(n_clusters=leaves, batch_size=4096, n_init=1, max_iter=20, random_state=0)
    with threadpool_limits(limits=threads):  # the same number of threads as torch
        _, fit_mbk = timed(lambda: mbk.fit(xn))
        _, assign_mbk = timed(lambda: mbk.predict(xn))
    res = dict(
        kmeans_points=points, kmeans_dim=dim, kmeans_leaves=leaves, hkm_fit_s=fit_tree, hkm_assign_s=assign_tree,
        mbk_fit_s=fit_mbk, mbk_assign_s=assign_mbk, fit_speedup=fit_mbk / fit_tree,
        assign_speedup=assign_mbk / assign_tree, tree_equals_flat=float((words == flat).float().mean()),
    )
    print(
        f"k-means {points}×{dim}, {leaves} leaves: hierarchical fit {fit_tree:.2f} s / assign {assign_tree:.3f} s; "
        f"MiniBatchKMeans fit {fit_mbk:.2f} s / assign {assign_mbk:.3f} s → fit {res['fit_speedup']:.1f}× faster; "
        f"tree walk = nearest leaf for {res['tree_equals_flat']:.1%} of points"
    )
    return res


def bench_tokenize(path: Path, seconds: float) -> dict:
    res = {}
    for key, fps, frames, size in (("rtf_demo_settings", 10.0, 15, 32), ("rtf_paper_timing_112px", 20.0, 30, 112)):
        with tempfile.TemporaryDirectory() as tmp:
            s = tokenize_videos(tmp, videos=str(path.parent), extractor="light", fps=fps, clip_frames=frames,
                                size=size, depth=2, branching=4, progress=False)
        res[key] = s.seconds_of_video / s.wall_seconds
        print(f"tokenize (light, {fps:g} fps, {frames}-frame clips, {size} px): {res[key]:.1f}× real time")
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of the generated video")
    p.add_argument("--points", type=int, default=30000)
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--branching", type=int, default=12)
    # one thread by default: on 2 shared cores two torch threads contend and run small ops several times slower
    p.add_argument("--threads", type=int, default=1, help="torch and sklearn threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        path, gen = timed(lambda: make_video(Path(tmp) / "videos" / "bench.mp4", args.seconds))
        print(f"generated a {args.seconds:g} s 320×240 30 fps video in {gen:.1f} s")
        result = {"threads": args.threads, "video_seconds": args.seconds}
        result.update(bench_decode(path, args.seconds))
        result.update(bench_features())
        result.update(bench_kmeans(args.points, args.dim, args.depth, args.branching, args.threads))
        result.update(bench_tokenize(path, args.seconds))
    result["goal_tokenize_10x_realtime"] = result["rtf_demo_settings"] >= 10
    result["goal_kmeans_fit_10x_faster"] = result["fit_speedup"] >= 10
    print(json.dumps(result))


if __name__ == "__main__":
    main()
