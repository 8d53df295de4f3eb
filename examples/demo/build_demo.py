"""Build the demo loom from real medical images that ship inside pip packages, then print its summary.

Sources: pydicom / pydicom-data DICOM (CR chest and leg radiographs, head and spine CT, brain and shoulder
MR, lymph node and obstetric ultrasound, each source's body region read off its images; plus files that must
be quarantined: truncated, JPEG-LS without a decoder, a segmentation object), scikit-image's
`retina.jpg` (fundus) and `ihc.png` (pathology), and nilearn's MNI152 brain template sliced axially with
a brain mask. Usage: python examples/demo/build_demo.py OUT_DIR
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        shutil.copyfile(src, dst)


def gather(out: Path) -> None:
    import nibabel as nib
    import numpy as np
    import skimage
    from nilearn import datasets
    from pydicom.data import get_testdata_file

    data = out / "data"
    # one folder per body region, each file's region read off the image itself (its tags say none, or only
    # "Brain" in an enhanced object's frame anatomy): the demo's MAT facts must be true of its images
    dicom = {
        "chest": ["RG1_UNCR.dcm"],  # CR chest, MONOCHROME1 (BodyPartExamined CHEST)
        "leg": ["RG3_UNCR.dcm"],  # CR distal tibia (BodyPartExamined EXTREMITY)
        "ct-head": ["693_UNCR.dcm", "eCT_Supplemental.dcm"],  # axial head CT (a subdural haematoma); brain
        "ct-spine": ["CT_small.dcm"],  # axial slice through a thoracic vertebra
        "mr-brain": ["emri_small.dcm"],  # 10 frames (BodyPartExamined HEAD)
        "mr-shoulder": ["MR2_UNCR.dcm"],  # coronal shoulder (StudyDescription SHOULDER)
        "mr-unknown": ["MR_small.dcm"],  # a 64 x 64 crop, 20 mm across: no region can be told
        "ultrasound-lymph-node": ["US1_UNCR.dcm"],  # colour Doppler, "LYMPH NODE" burned in
        "ultrasound-obstetric": ["OBXXXX1A_2frame.dcm"],  # obstetric preset ("Gen-OB")
        # real files that cannot become images here, kept to show the quarantine at work
        "problems": ["MR_truncated.dcm", "emri_small_jpeg_ls_lossless.dcm", "liver.dcm"],
    }
    for folder, names in dicom.items():
        for name in names:
            link(Path(get_testdata_file(name)), data / "dicom" / folder / name)
    skdata = Path(skimage.__file__).parent / "data"
    link(skdata / "retina.jpg", data / "fundus" / "normal" / "retina.jpg")
    link(skdata / "ihc.png", data / "pathology" / "ihc" / "ihc.png")
    brain = data / "mni152" / "mni152_t1.nii.gz"
    mask = data / "mni152_masks" / "mni152_t1.nii.gz"
    if not brain.exists() or not mask.exists():
        template = datasets.load_mni152_template(resolution=2)
        brain.parent.mkdir(parents=True, exist_ok=True)
        nib.save(template, brain)
        brain_mask = datasets.load_mni152_brain_mask(resolution=2)
        mask.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.asarray(brain_mask.dataobj).astype(np.uint8), template.affine), mask)


RECIPE = """\
# The medloom demo: real medical images from pip packages (see examples/demo/build_demo.py).
name: medloom-demo
loom: ./loom
salt: medloom-demo-salt
sources:
  - name: cr-chest
    reader: dicom
    path: data/dicom/chest
    task: disease
    description: computed radiograph of the chest (pydicom-data RG1)
    license: MIT
  - name: cr-leg
    reader: dicom
    path: data/dicom/leg
    anatomy: lower limb
    task: disease
    description: computed radiograph of the leg (pydicom-data RG3)
    license: MIT
  - name: ct-head
    reader: dicom
    path: data/dicom/ct-head
    anatomy: brain
    task: disease
    window: brain
    description: axial head CT (pydicom 693_UNCR, with a subdural haematoma; eCT_Supplemental, enhanced CT)
    license: MIT
  - name: ct-spine
    reader: dicom
    path: data/dicom/ct-spine
    anatomy: spine
    task: disease
    window: bone
    description: axial CT through a thoracic vertebra (pydicom CT_small)
    license: MIT
  - name: mr-brain
    reader: dicom
    path: data/dicom/mr-brain
    task: disease
    description: brain MR, 10 frames (pydicom emri_small; HEAD in its tags)
    license: MIT
  - name: mr-shoulder
    reader: dicom
    path: data/dicom/mr-shoulder
    anatomy: upper limb
    task: disease
    description: coronal shoulder MR (pydicom-data MR2_UNCR)
    license: MIT
  - name: mr-unknown
    reader: dicom
    path: data/dicom/mr-unknown
    anatomy: unknown
    task: disease
    description: a 64 x 64 MR crop whose body region cannot be told (pydicom MR_small)
    license: MIT
  - name: ultrasound-lymph-node
    reader: dicom
    path: data/dicom/ultrasound-lymph-node
    anatomy: lymph node
    task: disease
    description: colour Doppler of a lymph node (pydicom-data US1_UNCR; text burned into the image)
    license: MIT
  - name: ultrasound-obstetric
    reader: dicom
    path: data/dicom/ultrasound-obstetric
    anatomy: pelvis
    task: disease
    description: obstetric ultrasound, 2 frames (pydicom OBXXXX1A_2frame)
    license: MIT
  - name: dicom-problems
    reader: dicom
    path: data/dicom/problems
    task: disease
    description: real DICOM files that cannot be ingested here, quarantined with reasons
    license: MIT
  - name: fundus
    reader: imagefolder
    path: data/fundus
    modality: fundus photography
    anatomy: eye
    task: disease
    description: scikit-image retina.jpg
    license: CC0
  - name: pathology
    reader: imagefolder
    path: data/pathology
    modality: pathology
    anatomy: cell
    task: cell type
    description: scikit-image ihc.png (immunohistochemistry)
    license: CC0
  - name: mni152
    reader: nifti
    path: data/mni152
    masks_dir: ../mni152_masks
    mask_label: brain
    only_mask_slices: true
    stride: 8
    axis: axial
    modality: MRI
    anatomy: brain
    task: organ segmentation
    description: MNI152 T1 template (nilearn), axial slices with the brain mask as ROI
    license: other
"""


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "demo").resolve()
    out.mkdir(parents=True, exist_ok=True)
    gather(out)
    recipe = out / "recipe.yaml"
    recipe.write_text(RECIPE)
    medloom = [sys.executable, "-m", "medloom.cli"]
    env = {**os.environ, "COLUMNS": os.environ.get("COLUMNS", "120")}
    # dicom-problems holds only files that cannot be ingested here, so ingest ends with exit 1 naming that source
    # (a source that gives no record fails the command); any other failure stops the demo
    ingest = subprocess.run([*medloom, "ingest", str(recipe)], env=env, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(ingest.stderr)
    if ingest.returncode and "no records from source(s) dicom-problems\n" not in ingest.stderr:
        raise SystemExit(f"medloom ingest failed (exit {ingest.returncode})")
    if ingest.returncode:
        print("ingest: exit 1 as intended: dicom-problems gives no record, its files are the quarantine examples")
    subprocess.run([*medloom, "stats", str(out / "loom")], check=True, env=env)
    print("quarantined inputs:")
    subprocess.run(
        [*medloom, "query", str(out / "loom"), "SELECT source, path, reason, message FROM quarantine ORDER BY source, path"],
        check=True,
        env=env,
    )
    exports = out / "loom" / "exports" / "webdataset"
    subprocess.run(
        [*medloom, "export", str(out / "loom"), "--out", str(exports), "--max-side", "256", "--overwrite"], check=True, env=env
    )
    subprocess.run([*medloom, "verify", str(exports)], check=True, env=env)
    subprocess.run([*medloom, "annotate", str(out / "loom")], check=True, env=env)
    print("annotations (a few):")
    subprocess.run(
        [
            *medloom,
            "query",
            str(out / "loom"),
            "SELECT id, caption, roi_text FROM annotations WHERE caption <> '' ORDER BY id LIMIT 4",
            "--format",
            "csv",
        ],
        check=True,
        env=env,
    )
    llava = out / "loom" / "exports" / "llava"
    subprocess.run(
        [*medloom, "export", str(out / "loom"), "--format", "llava", "--out", str(llava), "--max-side", "256"],
        check=True,
        env=env,
    )
    report = out / "loom" / "reports" / "overview.html"
    subprocess.run([*medloom, "report", str(out / "loom"), "--out", str(report)], check=True, env=env)
    print(
        f"\nrecipe: {recipe}\ncatalog: {out / 'loom' / 'catalog'}\nexport: {exports}\ntraining JSON: {llava}\n"
        f"report: {report} (opens offline)\n"
        f'try: .venv/bin/medloom query {out / "loom"} "SELECT id, modality, anatomy, width, height FROM records"\n'
        f"     .venv/bin/python -c \"import medloom; print(next(iter(medloom.load('{exports}'))))\"\n"
        f"look: .venv/bin/medloom serve {out / 'loom'}    # then open http://127.0.0.1:8765/"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
