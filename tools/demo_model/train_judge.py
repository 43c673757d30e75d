"""Trains the judge's shape classifier on clean renders and reports its held-out accuracy.

Training objects come from the JUDGE_SEED stream of shapes.py (one or two shapes per image),
each pushed through exactly the judge's own extraction (background, foreground mask, component,
normalised 32x32 mask), so train and use see the same input. Half the training images are
blurred with a 3x3 box filter first, to make the classifier tolerant of a soft decoder.
Accuracy is measured on objects from a different seed, never trained on.

  /usr/bin/python3 tools/demo_model/train_judge.py [--images 6000] [--test 2000]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import dataset  # noqa: E402
import judge  # noqa: E402
import safetensors_io  # noqa: E402
import shapes  # noqa: E402

TEST_SEED = 4


def box_blur(img: np.ndarray) -> np.ndarray:
    p = np.pad(img.astype(np.float32), ((1, 1), (1, 1), (0, 0)), mode="edge")
    out = sum(p[dy:dy + 64, dx:dx + 64] for dy in range(3) for dx in range(3)) / 9.0
    return np.round(out).astype(np.uint8)


def object_examples(seed: int, count: int, blur_fraction: float):
    """(masks [M,32,32], shape labels [M], judged-vs-true colour and background hits)."""
    rng = np.random.default_rng(seed + 1000)
    masks, labels = [], []
    color_hits = bg_hits = objects = 0
    for s in shapes.batch(seed, count, size=shapes.LAYOUT_SIZE):
        img = box_blur(s.image) if rng.random() < blur_fraction else s.image
        bg, _, comps = judge.objects_and_background(img)
        bg_hits += bg == s.background
        # Match components to the drawn shapes by distance to the shape's cell centre.
        for m in comps[:len(s.shapes)]:
            ys, xs = np.nonzero(m)
            cx, cy = xs.mean(), ys.mean()
            k = min(range(len(s.shapes)), key=lambda i: (shapes.CELL_CENTERS[s.positions[i]][0] - cx) ** 2
                    + (shapes.CELL_CENTERS[s.positions[i]][1] - cy) ** 2)
            masks.append(judge.normalized_mask(m))
            labels.append(shapes.SHAPES.index(s.shapes[k]))
            color_hits += judge.nearest_color(np.median(img[m].astype(np.float32), axis=0)) == s.colors[k]
            objects += 1
    return np.stack(masks), np.array(labels), color_hits / max(objects, 1), bg_hits / count


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x, y, _, _ = object_examples(dataset.JUDGE_SEED, args.images, blur_fraction=0.5)
    xt, yt, color_acc, bg_acc = object_examples(TEST_SEED, args.test, blur_fraction=0.0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(judge.MASK_SIZE ** 2, 128), torch.nn.ReLU(),
                              torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, len(shapes.SHAPES)))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(0)
    for epoch in range(args.epochs):
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), 128):
            idx = perm[i:i + 128]
            loss = torch.nn.functional.cross_entropy(net(X[idx]), Y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    weights = {}
    for i, m in enumerate(linears):
        weights[f"fc{i}.weight"] = m.weight.detach().numpy().astype(np.float16)
        weights[f"fc{i}.bias"] = m.bias.detach().numpy().astype(np.float16)
    safetensors_io.save(judge.WEIGHTS, weights, {"trained_on": f"shapes.py seed {dataset.JUDGE_SEED}, "
                                                                f"{args.images} images"})
    # Accuracy of the saved (float16) weights through the numpy inference path.
    pred = judge.ShapeClassifier().logits(xt).argmax(axis=1)
    acc = float((pred == yt).mean())
    print(f"train objects {len(x)}, held-out objects {len(xt)}")
    print(f"held-out shape accuracy {acc:.4f}; colour accuracy {color_acc:.4f}; background accuracy {bg_acc:.4f}")
    for k, name in enumerate(shapes.SHAPES):
        sel = yt == k
        print(f"  {name:9} {float((pred[sel] == k).mean()):.4f} ({int(sel.sum())} objects)")


if __name__ == "__main__":
    main()
