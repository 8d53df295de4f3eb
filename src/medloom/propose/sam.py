"""A mask for each of the record's own boxes by a SAM-style promptable model (Segment Anything, MedSAM, SAM-Med2D
converted to transformers' `SamModel`), from a folder the user has (`config.json` and `model.safetensors`, as
`save_pretrained` writes them). The image as SAM prepares it (its `SamImageProcessor`'s steps): the longest side
resized to the model's `image_size` (1024), scaled to 0..1 and normalised by the mean and standard deviation of
the folder's `preprocessor_config.json` (ImageNet's when there is none), padded bottom and right; each box
(the dataset's own ROIs, which the records keep normalised) is a prompt in those coordinates, one mask asked
per box (`multimask_output=False`), its logits upscaled, cropped to the image and resized back, above 0 kept.
Each region keeps its box's label. Records with no box are refused (`no_boxes`). Score: the model's predicted
IoU for the mask.

segment_anything's own checkpoints (`sam_vit_b_01ec64.pth`) are not read: the package imports torchvision when
imported (`segment_anything/utils/transforms.py`); transformers' `convert_sam_to_hf.py` turns them into such a
folder. transformers is imported only here, offline: nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import Refused, Region
from .weights import cached, device, need_folder, sha256

VERSION = "1"
LABELS = ("the box's label",)
DEFAULTS = {"folder": "", "device": "auto", "min_share": 0.0005, "max_boxes": 64}
WHERE = (
    "give a folder with config.json and model.safetensors of a transformers SamModel (e.g. facebook/sam-vit-base "
    "saved with save_pretrained, or a segment_anything checkpoint converted by transformers' convert_sam_to_hf.py)"
)
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def suits(record: dict) -> str | None:
    if not [r for r in record.get("rois") or [] if r.get("bbox")]:
        return "a promptable model needs boxes to prompt with; this record has none"
    return None


def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))


def load(folder: str, digest: str, device_name: str):
    from ..errors import ProposeError
    from ..models.embedders import hub_offline

    hub_offline()
    try:
        from transformers import SamModel
    except ImportError:
        raise ProposeError("sam needs transformers: pip install 'transformers>=4.45' (with torch==2.13.0)") from None
    try:
        model, info = SamModel.from_pretrained(  # mismatches are reported below, by name
            folder, output_loading_info=True, local_files_only=True, ignore_mismatched_sizes=True
        )
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ProposeError(f"sam: {folder} does not load as a transformers SamModel ({type(e).__name__}: {e})") from None
    wrong = [
        f"{len(info[k])} {k.replace('_', ' ')}: {', '.join(sorted(map(str, info[k]))[:3])}"
        for k in ("missing_keys", "unexpected_keys", "mismatched_keys")
        if info.get(k)
    ]
    if wrong:
        raise ProposeError(f"sam: the weights in {folder} do not fit its config.json's SamModel: {'; '.join(wrong)}")
    config = Path(folder) / "preprocessor_config.json"
    stats = IMAGENET
    if config.is_file():
        pre = json.loads(config.read_text(encoding="utf-8"))
        stats = (pre.get("image_mean", IMAGENET[0]), pre.get("image_std", IMAGENET[1]))
    return model.eval().to(device(device_name)), stats


def prepare(params: dict) -> dict:
    from ..errors import ProposeError

    folder = need_folder("sam", "folder", params["folder"], "a transformers SamModel folder", WHERE)
    if not (folder / "config.json").is_file():
        raise ProposeError(f"sam: {folder / 'config.json'} is missing: {WHERE}")
    files = weight_files(folder)
    if not files:
        raise ProposeError(f"sam: {folder} holds no model.safetensors (nor pytorch_model.bin): {WHERE}")
    digest = sha256([folder / "config.json", *files])
    cached(load, str(folder.resolve()), digest, "cpu")
    return {**params, "folder": str(folder.resolve()), "weights_sha256": digest}


def propose(pixels: np.ndarray, values: np.ndarray | None, record: dict, params: dict) -> list[Region]:
    import torch
    from torch.nn import functional as F

    model, (mean, std) = cached(load, params["folder"], params["weights_sha256"], params["device"])
    boxes = [r for r in record.get("rois") or [] if r.get("bbox")][: params["max_boxes"]]
    if not boxes:
        raise Refused("no_boxes", "no boxes to prompt with")
    rgb = np.repeat(pixels[..., None], 3, -1) if pixels.ndim == 2 else pixels[..., :3]
    h, w = rgb.shape[:2]
    size = int(model.config.vision_config.image_size)
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    dev = next(model.parameters()).device
    x = torch.as_tensor(np.array(rgb, np.float32), device=dev).permute(2, 0, 1)[None] / 255.0
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    x = (x - torch.tensor(mean, device=dev)[:, None, None]) / torch.tensor(std, device=dev)[:, None, None]
    x = F.pad(x, (0, size - nw, 0, size - nh))
    prompts = torch.tensor([[[b[0] * nw, b[1] * nh, b[2] * nw, b[3] * nh] for b in (r["bbox"] for r in boxes)]], device=dev)
    with torch.inference_mode():
        out = model(pixel_values=x, input_boxes=prompts, multimask_output=False)
        logits = F.interpolate(out.pred_masks[0, :, 0][None], size=(size, size), mode="bilinear", align_corners=False)
        logits = F.interpolate(logits[..., :nh, :nw], size=(h, w), mode="bilinear", align_corners=False)[0]
    masks = (logits > 0).cpu().numpy()
    ious = out.iou_scores[0, :, 0].float().cpu().numpy()
    return [
        Region(r["label"] or "region", m, round(float(np.clip(iou, 0, 1)), 4))
        for r, m, iou in zip(boxes, masks, ious)
        if m.mean() >= params["min_share"]
    ]
