"""ROI proposal methods (`medloom propose`): Dice and mean boundary distance against ground truth, each beside a
named baseline (Otsu's threshold, the side the method's target is on), printed as a ratio.

Real images with ground truth that ship in pip packages: nilearn's MNI152 T1 template (2 mm) and its brain mask,
every axial slice with brain in it, rendered to 8 bits as medloom renders a NIfTI slice (the template is
skull-stripped: this measures the outline, not the removal of the skull; the phantoms below have a skull).
scikit-image's retina.jpg and ihc.png ship without masks: the methods run on them and what they found is
printed (no Dice). Generated phantoms with exact masks: CT slices in Hounsfield units (body, lungs, spine,
table), T1-like heads (scalp, skull, CSF, brain), fundus photographs (field, disc, vessel tree), H&E tiles
(nuclei on eosin), mammograms (breast, a burned-in label), each with noise.

Usage: python benchmarks/propose.py [--n PHANTOMS_PER_METHOD] [--seed S]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from medloom.imaging import to_uint8
from medloom.propose import get_method
from medloom.propose.base import Refused, gray, otsu


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def boundary_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean symmetric distance between the two outlines, in pixels."""
    if not a.any() or not b.any():
        return float("nan")
    ea, eb = a & ~ndimage.binary_erosion(a), b & ~ndimage.binary_erosion(b)
    da, db = ndimage.distance_transform_edt(~ea), ndimage.distance_transform_edt(~eb)
    return float((db[ea].sum() + da[eb].sum()) / (ea.sum() + eb.sum()))


def otsu_side(img: np.ndarray, bright: bool) -> np.ndarray:
    t = otsu(img)
    return img > t if bright else img <= t


def run(method: str, pixels, values, record, label: str | None = None) -> np.ndarray | None:
    module = get_method(method)
    try:
        regions = module.propose(pixels, values, record, dict(module.DEFAULTS))
    except Refused:
        return None
    masks = [r.mask for r in regions if label is None or r.label == label]
    return np.logical_or.reduce(masks) if masks else None


def ellipse(h, w, cy, cx, ry, rx):
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def ct_phantom(rng, n=256):
    hu = np.full((n, n), -1000.0)
    body = ellipse(n, n, n * 0.5, n * 0.5, n * rng.uniform(0.3, 0.36), n * rng.uniform(0.4, 0.46))
    hu[body] = 40
    lungs = np.zeros_like(body)
    for side in (-1, 1):
        lungs |= ellipse(n, n, n * 0.48, n * (0.5 + side * 0.18), n * rng.uniform(0.14, 0.18), n * rng.uniform(0.08, 0.11))
    lungs &= body
    hu[lungs] = -850
    hu[ellipse(n, n, n * 0.72, n * 0.5, n * 0.05, n * 0.05)] = 700  # spine
    hu[int(n * 0.9) : int(n * 0.93), int(n * 0.1) : int(n * 0.9)] = 300  # the table
    hu += rng.normal(0, 25, hu.shape)
    return hu, body, lungs


def head_phantom(rng, n=192):
    img = np.zeros((n, n))
    ry, rx = n * rng.uniform(0.38, 0.43), n * rng.uniform(0.3, 0.35)
    head = ellipse(n, n, n / 2, n / 2, ry, rx)
    skull = ellipse(n, n, n / 2, n / 2, ry * 0.92, rx * 0.9)
    csf = ellipse(n, n, n / 2, n / 2, ry * 0.84, rx * 0.81)
    brain = ellipse(n, n, n / 2, n / 2, ry * 0.8, rx * 0.77)
    img[head] = 0.85  # scalp fat, bright on T1
    img[skull] = 0.08  # bone
    img[csf] = 0.2
    img[brain] = 0.6
    img[ellipse(n, n, n / 2, n / 2, ry * 0.5, rx * 0.45) & brain] = 0.75  # white matter
    img += rng.normal(0, 0.03, img.shape)
    return to_uint8(img), brain


def fundus_phantom(rng, n=384):
    h = w = n
    fov = ellipse(h, w, n / 2, n / 2, n * 0.46, n * 0.46)
    rgb = np.zeros((h, w, 3))
    rgb[fov] = (180, 80, 30)
    dy, dx = n / 2 + rng.uniform(-0.05, 0.05) * n, n / 2 + rng.choice([-1, 1]) * n * 0.2
    disc = ellipse(h, w, dy, dx, n * 0.065, n * 0.06)
    vessels = np.zeros((h, w), bool)
    yy, xx = np.mgrid[0:h, 0:w]
    for angle in rng.uniform(0, 2 * np.pi, 8):
        bend = rng.uniform(-0.004, 0.004)
        for t in np.linspace(0, n * 0.42, 300):
            a = angle + bend * t
            cy, cx = dy + t * np.sin(a), dx + t * np.cos(a)
            r = max(1.2, 3.5 - t / (n * 0.15))
            y0, x0 = int(cy), int(cx)
            if 0 <= y0 < h and 0 <= x0 < w:
                box = (slice(max(0, y0 - 5), y0 + 6), slice(max(0, x0 - 5), x0 + 6))
                vessels[box] |= (yy[box] - cy) ** 2 + (xx[box] - cx) ** 2 <= r * r
    vessels &= fov & ~disc
    rgb[vessels] = (120, 30, 15)
    rgb[disc] = (250, 220, 160)
    rgb = ndimage.gaussian_filter(rgb, (1, 1, 0)) + rng.normal(0, 4, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), disc, vessels


def he_phantom(rng, n=256, count=40):
    rgb = np.zeros((n, n, 3))
    rgb[:] = (235, 170, 200)  # eosin pink
    nuclei = np.zeros((n, n), bool)
    for _ in range(count):
        cy, cx = rng.uniform(8, n - 8, 2)
        nuclei |= ellipse(n, n, cy, cx, rng.uniform(4, 7), rng.uniform(4, 7))
    rgb[nuclei] = (90, 60, 150)  # haematoxylin purple
    rgb = ndimage.gaussian_filter(rgb, (0.8, 0.8, 0)) + rng.normal(0, 6, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), nuclei


def mammo_phantom(rng, n=256):
    img = np.zeros((n, n))
    breast = ellipse(n, n, n / 2, 0, n * rng.uniform(0.38, 0.46), n * rng.uniform(0.5, 0.65))
    img[breast] = 0.55
    img += breast * ndimage.gaussian_filter(rng.normal(0, 0.15, img.shape), 3)
    img[int(n * 0.05) : int(n * 0.1), int(n * 0.8) : int(n * 0.95)] = 0.95  # a burned-in label
    img += rng.normal(0, 0.02, img.shape)
    return to_uint8(img), breast


def mni152() -> list[tuple[np.ndarray, np.ndarray]]:
    from nilearn import datasets

    t1 = np.asarray(datasets.load_mni152_template(resolution=2).dataobj, dtype=np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=2).dataobj) > 0
    out = []
    for z in range(t1.shape[2]):
        m = mask[:, :, z].T[::-1, ::-1]  # medloom's radiological display of an axial slice
        if m.mean() >= 0.01:
            out.append((to_uint8(t1[:, :, z].T[::-1, ::-1]), m))
    return out


class Tally:
    def __init__(self):
        self.rows: dict[str, list] = {}

    def add(self, case: str, found, baseline, truth):
        r = self.rows.setdefault(case, [])
        f = found if found is not None else np.zeros_like(truth)
        r.append(
            (
                dice(f, truth),
                boundary_distance(f, truth),
                dice(baseline, truth),
                boundary_distance(baseline, truth),
                found is None,
            )
        )

    def print(self):
        print(f"{'case':44s} {'n':>3s} {'Dice':>6s} {'dist px':>8s} | {'Otsu Dice':>9s} {'dist px':>8s} | ratio  refused")
        for case, r in self.rows.items():
            a = np.array([x[:4] for x in r], float)
            d, bd, od, obd = np.nanmean(a, axis=0)
            refused = sum(x[4] for x in r)
            print(f"{case:44s} {len(r):3d} {d:6.3f} {bd:8.2f} | {od:9.3f} {obd:8.2f} | {d / max(od, 1e-9):5.2f}x {refused}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20, help="phantoms per method")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    tally = Tally()
    started = time.perf_counter()
    mri = {"modality": "MRI", "anatomy": "brain", "channels": 1}
    slices = mni152()
    found_all, truth_all = [], []
    for pixels, truth in slices:
        found = run("brain-mri", pixels, None, mri)
        tally.add("brain-mri: MNI152 T1 slices (real)", found, otsu_side(gray(pixels), True), truth)
        found_all.append(found if found is not None else np.zeros_like(truth))
        truth_all.append(truth)
    volume_dice = dice(np.stack(found_all), np.stack(truth_all))
    for _ in range(args.n):
        pixels, truth = head_phantom(rng)
        tally.add(
            "brain-mri: T1 head phantoms (skull, CSF)", run("brain-mri", pixels, None, mri), otsu_side(gray(pixels), True), truth
        )
        hu, body, lungs = ct_phantom(rng)
        ct = {"modality": "CT", "anatomy": "chest", "channels": 1}
        shown = to_uint8(np.clip(hu, -1000, 400))
        tally.add("body: CT phantoms (HU)", run("body", shown, hu, ct), otsu_side(gray(shown), True), body)
        tally.add("body: CT phantoms (8-bit pixels only)", run("body", shown, None, ct), otsu_side(gray(shown), True), body)
        tally.add("lung-ct: CT phantoms (HU)", run("lung-ct", shown, hu, ct), otsu_side(gray(shown), False), lungs)
        rgb, disc, vessels = fundus_phantom(rng)
        fp = {"modality": "fundus photography", "anatomy": "fundus", "channels": 3}
        tally.add("fundus: optic disc, phantoms", run("fundus", rgb, None, fp, "optic disc"), otsu_side(gray(rgb), True), disc)
        fov = gray(rgb) > 20
        tally.add(
            "fundus: retinal vessels, phantoms",
            run("fundus", rgb, None, fp, "retinal vessels"),
            otsu_side(rgb[..., 1].astype(float), False) & fov,
            vessels,
        )
        he, nuclei = he_phantom(rng)
        path = {"modality": "pathology", "anatomy": "cell", "channels": 3}
        tally.add(
            "nuclei-he: H&E phantoms (union of nuclei)", run("nuclei-he", he, None, path), otsu_side(gray(he), False), nuclei
        )
        mg, breast = mammo_phantom(rng)
        mgr = {"modality": "mammography", "anatomy": "breast", "channels": 1}
        tally.add("breast: mammogram phantoms (with a label)", run("breast", mg, None, mgr), otsu_side(gray(mg), True), breast)
    tally.print()
    print(f"brain-mri on the MNI152 volume ({len(slices)} slices): Dice {volume_dice:.3f} (goal 0.9)")
    import skimage
    from PIL import Image

    data = skimage.__file__.rsplit("/", 1)[0] + "/data/"
    retina = np.asarray(Image.open(data + "retina.jpg").convert("RGB"))
    module = get_method("fundus")
    regions = module.propose(retina, None, {"modality": "fundus photography", "channels": 3}, dict(module.DEFAULTS))
    said = ", ".join(f"{r.label} {r.mask.mean():.2%} of the image (score {r.score:.2f})" for r in regions)
    print(f"retina.jpg (no ground truth ships): {said}")
    ihc = np.asarray(Image.open(data + "ihc.png").convert("RGB"))
    module = get_method("nuclei-he")
    params = dict(module.DEFAULTS, max_nuclei=100000)
    regions = module.propose(ihc, None, {"modality": "pathology", "channels": 3}, params)
    share = np.logical_or.reduce([r.mask for r in regions]).mean()
    print(f"ihc.png (no ground truth ships): {len(regions)} nuclei, {share:.1%} of the tile")
    print(f"{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
