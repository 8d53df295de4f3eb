"""Writes tests/data/vqa_replies.jsonl: the labelled reply set the answer parser is scored on.

Each reply is what a chat model could send to one of medloom's multiple-choice prompts (class names as
options, A-D), in the styles models answer in: terse letters, letters with text, verbose explanations,
step-by-step reasoning, markdown, JSON, `<think>` blocks, stop tokens left in the text, Chinese and Spanish,
misspelt option texts; and the replies that must not be mapped: hedges, echoed option lists, contradictions,
refusals. Each row: the options, the reply, `label` (the letter the reply chooses, or "invalid"), `case`, and
for invalid rows the `reason`. The labels are a reader's judgement of what the reply chooses, not the question's
right answer. Run `python tests/data/make_vqa_replies.py` after editing a template.

Template fields: {L} the chosen letter and {T} its text, {M}/{U} another option's letter and text, {N}/{V} a
third, {Ty} the chosen text misspelt, {list} the options as the prompt showed them. `label`: "L" (the chosen
letter), "M", or "invalid: reason".
"""

from __future__ import annotations

import json
from pathlib import Path

QUESTIONS = [
    ["pneumonia", "pleural effusion", "pneumothorax", "no finding"],
    ["eosinophil", "lymphocyte", "monocyte", "neutrophil"],
    ["melanoma", "melanocytic nevus", "basal cell carcinoma", "benign keratosis"],
    ["glioma", "meningioma", "pituitary tumor", "no tumor"],
    ["diabetic retinopathy", "glaucoma", "cataract", "normal"],
    ["benign", "malignant"],
    ["adipose", "lymphocytes", "mucus", "tumor epithelium"],
    ["liver", "spleen", "left kidney", "pancreas"],
    ["osteoarthritis", "fracture", "normal"],
    ["cardiomegaly", "atelectasis", "edema", "consolidation"],
    ["COVID-19", "normal", "non-COVID pneumonia"],
    ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
    ["hemorrhage", "ischemic stroke", "normal"],
    ["adenomatous polyp", "hyperplastic polyp"],
    ["actinic keratosis", "dermatofibroma", "vascular lesion", "melanoma"],
]
LETTERS = "ABCD"
TYPO = {  # misspellings seen in model output (transposed, dropped or doubled letters; British spelling)
    "pneumonia": "pnuemonia",
    "non-COVID pneumonia": "non-COVID pnemonia",
    "pleural effusion": "pleural efusion",
    "pneumothorax": "pneumothroax",
    "eosinophil": "eosinophill",
    "lymphocyte": "lymphocite",
    "monocyte": "monocite",
    "neutrophil": "neutrophill",
    "melanoma": "melanomma",
    "melanocytic nevus": "melanocytic naevus",
    "basal cell carcinoma": "basal cell carcinomma",
    "benign keratosis": "benign keratoses",
    "glioma": "gliomma",
    "meningioma": "meningeoma",
    "pituitary tumor": "pituitary tumour",
    "diabetic retinopathy": "diabetic retinophaty",
    "glaucoma": "glaucomma",
    "cataract": "catarct",
    "malignant": "malignent",
    "adipose": "adipos",
    "lymphocytes": "lymphocites",
    "tumor epithelium": "tumour epithelium",
    "spleen": "spleeen",
    "left kidney": "left kidny",
    "pancreas": "pancraes",
    "osteoarthritis": "osteoarthritus",
    "fracture": "fractrue",
    "cardiomegaly": "cardiomegally",
    "atelectasis": "atelectesis",
    "consolidation": "consolodation",
    "choroidal neovascularization": "choroidal neovascularisation",
    "diabetic macular edema": "diabetic macular oedema",
    "drusen": "drussen",
    "hemorrhage": "haemorrhage",
    "ischemic stroke": "ischaemic stroke",
    "adenomatous polyp": "adenomatus polyp",
    "hyperplastic polyp": "hyperplastic pollyp",
    "actinic keratosis": "actinic keratossis",
    "dermatofibroma": "dermatofibrona",
    "vascular lesion": "vascular leison",
}

OK, BAD = "L", "invalid"
# (case, template, label)
TEMPLATES = [
    # terse
    ("terse", "{L}", OK),
    ("terse", "{L}.", OK),
    ("terse", "({L})", OK),
    ("terse", " {l}\n", OK),
    ("terse", "{L}: {T}", OK),
    ("terse", "{L}. {T}", OK),
    ("terse", "{L}) {T}", OK),
    ("terse", "({L}) {T}", OK),
    ("terse", "{L} - {T}", OK),
    ("terse", "{Tc}", OK),
    ("terse", "{Tc}.", OK),
    ("terse", "Option {L}", OK),
    ("terse", "The answer is {L}.", OK),
    ("terse", "Answer: {L}", OK),
    ("terse", "Answer: {l}", OK),
    ("terse", "{L}. {Tc}.", OK),
    # markdown
    ("markdown", "**{L}**", OK),
    ("markdown", "**Answer:** {L}", OK),
    ("markdown", "**Answer: {L}. {Tc}**", OK),
    ("markdown", "The correct answer is **{L}. {Tc}**.", OK),
    ("markdown", "### Answer\n**{L}** - {Tc}", OK),
    ("markdown", "**Final answer:** ({L}) {T}", OK),
    ("markdown", "`{L}`", OK),
    ("markdown", "- **Answer**: {L}\n- **Confidence**: moderate", OK),
    # json
    ("json", '{{"answer": "{L}"}}', OK),
    ("json", '```json\n{{"answer": "{L}", "reason": "typical appearance of {T}"}}\n```', OK),
    ("json", "{{'answer': '{L}'}}", OK),
    ("json", '{{"choice": "{L}", "confidence": 0.82}}', OK),
    ("json", '```\n{{"final_answer": "{L}. {T}"}}\n```', OK),
    ("json", '{{"answer": "{T}"}}', OK),
    ("json", 'Here is my answer in JSON:\n```json\n{{\n  "answer": "{L}"\n}}\n```', OK),
    # reasoning blocks and stop tokens
    (
        "think",
        "<think>\nThe image shows features that could be {U} or {T}. "
        "Looking closer, the pattern fits {T} better than {U}.\n</think>\n\n{L}",
        OK,
    ),
    (
        "think",
        "<think>Option {M} is {U}, which does not match. Option {L} is {T}, consistent with the image.</think>The answer is {L}.",
        OK,
    ),
    (
        "think",
        "<think>\nLet me consider each option.\n{M}. {U}: not supported.\n"
        "{L}. {T}: supported by the findings.\n</think>\n**{L}**",
        OK,
    ),
    ("think", "<think>Hmm, {M}? No, the appearance is more like {T}.</think>\n{L}. {T}", OK),
    (
        "think",
        "<think>\nThe key features point toward {U} at first, but on closer inspection they are those of {T}. "
        "So the answer should be",
        "invalid: unfinished reasoning block",
    ),
    ("stop-token", "{L}<|im_end|>", OK),
    ("stop-token", "{L}</s>", OK),
    ("stop-token", "The answer is {L}.<|eot_id|>", OK),
    ("stop-token", "{L}<end_of_turn>", OK),
    ("stop-token", "{Tc}<|endoftext|>", OK),
    ("stop-token", "<|im_start|>assistant\n{L}<|im_end|>", OK),
    # explicit choices
    ("explicit", "I choose {L}.", OK),
    ("explicit", "I would choose option {L}.", OK),
    ("explicit", "I'd go with {L}.", OK),
    ("explicit", "{L} is correct.", OK),
    ("explicit", "{L} is the correct answer.", OK),
    ("explicit", "The correct option is {L}.", OK),
    ("explicit", "My answer is {L}.", OK),
    ("explicit", "Based on the image, the most likely answer is {L}.", OK),
    ("explicit", "I'll pick {L}, {T}.", OK),
    # multilingual
    ("chinese", "答案是 {L}", OK),
    ("chinese", "答案：{L}", OK),
    ("chinese", "选{L}", OK),
    ("chinese", "正确答案为 {L}。", OK),
    ("chinese", "根据图像特征，应该选择 {L}。", OK),
    ("chinese", "{L}项正确。", OK),
    ("chinese", "图像显示为{T}，答案是{L}。", OK),
    ("chinese", "答案：（{L}）", OK),
    ("spanish", "La respuesta es {L}.", OK),
    ("spanish", "La respuesta correcta es {L}.", OK),
    ("spanish", "Respuesta: {L}", OK),
    ("spanish", "Elijo la opción {L}.", OK),
    ("spanish", "La opción {L} es correcta.", OK),
    ("spanish", "La respuesta correcta es la {L}, {T}.", OK),
    ("spanish", "Opción {L}", OK),
    # verbose
    ("verbose", "The image shows features consistent with {T}. Therefore, the answer is {L}.", OK),
    ("verbose", "Looking at the image, I can see {T}. The answer is ({L}).", OK),
    ("verbose", "Based on the visible features, this is most consistent with {T}.", OK),
    ("verbose", "This appears to be {T}.", OK),
    ("verbose", "The findings are characteristic of {T}, so I would select option {L}.", OK),
    ("verbose", "{L}. {Tc}. The appearance in this image is typical of {T}.", OK),
    ("verbose", "The most likely diagnosis is {T} ({L}).", OK),
    ("verbose", "Answer: {L}\n\nExplanation: the image shows the typical appearance of {T}.", OK),
    ("verbose", "{Tc}, based on the morphology seen in the image.", OK),
    # reasoning without tags
    (
        "reasoning",
        "Let's analyze each option:\n{M}. {U} - this does not fit the appearance.\n"
        "{L}. {T} - this matches the image.\n\nTherefore the answer is {L}.",
        OK,
    ),
    (
        "reasoning",
        "Step 1: Look at the image. Step 2: Compare with the options. {Uc} is unlikely given the findings. "
        "The features match {T}.\n\nFinal answer: {L}",
        OK,
    ),
    ("reasoning", "Option {M} ({U}) is incorrect because the pattern is absent. Option {L} ({T}) is correct.", OK),
    ("reasoning", "First, {U} would usually look different. The image is more consistent with {T}. So the answer is {L}.", OK),
    ("reasoning", "The correct answer is {L}: {T}. {Uc} would show a different pattern.", OK),
    # rejections and explanations
    ("rejection", "No {U}. The image shows {T}.", OK),
    ("rejection", "There is no evidence of {U}; the findings suggest {T}.", OK),
    ("rejection", "This is definitely not {U}. It is {T}.", OK),
    ("rejection", "{Tc}, not {U}.", OK),
    ("rejection", "{Tc} rather than {U}.", OK),
    ("rejection", "{Uc} can be ruled out; this is {T}.", OK),
    ("rejection", "{Uc} is unlikely here. The appearance fits {T}.", OK),
    ("rejection", "It is {T}. Unlike {U}, the features here are typical.", OK),
    ("rejection", "I see no {U} in this image, so the answer is {T}.", OK),
    ("rejection", "Not {U}.", "invalid: only rejects an option"),
    ("explain", "{Tc}. {Uc} would appear differently on this image.", OK),
    ("explain", "I chose {T} because the image lacks the features of {U}.", OK),
    ("explain", "The answer is {L}. {Uc} was considered, but it is less likely.", OK),
    # self-correction
    ("correction", "{M}. Wait, actually {L}.", OK),
    ("correction", "The answer is {M}. Actually, on second thought, it's {L}.", OK),
    ("correction", "{Uc}... no wait, looking again this is {T}.", OK),
    ("correction", "I'd say {M}. Correction: {L}.", OK),
    ("correction", "{M}\n\nWait, let me reconsider. The features are those of {T}. The answer is {L}.", OK),
    ("correction", "答案是 {M}。不对，应该是 {L}。", OK),
    # near spellings
    ("near-spelling", "{Tyc}", OK),
    ("near-spelling", "The image shows {Ty}.", OK),
    ("near-spelling", "Findings consistent with {Ty}.", OK),
    # hedges
    ("hedge", "{L} or {M}", "invalid: hedges between two letters"),
    ("hedge", "It could be either {T} or {U}.", "invalid: hedges between two options"),
    ("hedge", "{L}/{M}", "invalid: hedges between two letters"),
    ("hedge", "I'm torn between {L} and {M}, probably {L} or {M}.", "invalid: hedges between two letters"),
    ("hedge", "Possibly {T} or {U}; hard to tell from this image.", "invalid: hedges between two options"),
    ("hedge", "答案可能是 {L} 或 {M}", "invalid: hedges between two letters"),
    # echoes, contradictions, refusals, nonsense
    ("echo", "{list}", "invalid: echoes the option list"),
    ("echo", "The options are:\n{list}", "invalid: echoes the option list"),
    ("echo", "{list}\n\nAnswer: {L}", OK),
    ("contradiction", "{M}: {T}", "invalid: a letter written with another option's text"),
    ("contradiction", "The answer is {M} ({T}).", "invalid: a letter written with another option's text"),
    ("contradiction", "**{M}. {Tc}**", "invalid: a letter written with another option's text"),
    ("contradiction", "{Tc} ({M})", "invalid: a letter written with another option's text"),
    ("refusal", "I'm sorry, but I can't determine the diagnosis from this image.", "invalid: refuses"),
    ("refusal", "I cannot provide a medical diagnosis. Please consult a radiologist.", "invalid: refuses"),
    ("refusal", "The image quality is too poor to answer.", "invalid: refuses"),
    ("refusal", "", "invalid: empty"),
    ("refusal", "None of the options fit this image.", "invalid: chooses none"),
    ("several", "The image shows both {T} and {U}.", "invalid: names two options"),
    ("several", "{L}, {M}", "invalid: names two letters"),
]


def options_list(options: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def rows() -> list[dict]:
    out = []
    for t, (case, template, label) in enumerate(TEMPLATES):
        for k in range(3):  # each template with three different questions and choices
            options = QUESTIONS[(t * 5 + k * 7) % len(QUESTIONS)]
            n = len(options)
            pick = (t + k * 3) % n
            other = (pick + 1 + k) % n if n > 2 else 1 - pick
            if other == pick:
                other = (pick + 1) % n
            if case in ("rejection", "explain", "correction", "hedge") and options[other].startswith(("no ", "normal")):
                other = next(i for i in range(n) if i != pick and not options[i].startswith(("no ", "normal")))
            third = next(i for i in range(n) if i not in (pick, other)) if n > 2 else other
            if case == "near-spelling" and options[pick] not in TYPO:
                pick = next(i for i in range(n) if options[i] in TYPO)
                other = (pick + 1) % n
            text = template.format(
                L=LETTERS[pick],
                l=LETTERS[pick].lower(),
                T=options[pick],
                Tc=options[pick][0].upper() + options[pick][1:],
                Ty=TYPO.get(options[pick], options[pick]),
                Tyc=TYPO.get(options[pick], options[pick]).capitalize(),
                M=LETTERS[other],
                U=options[other],
                Uc=options[other][0].upper() + options[other][1:],
                N=LETTERS[third],
                V=options[third],
                list=options_list(options),
            )
            row = {"options": options, "reply": text, "case": case}
            if label == OK:
                row["label"] = LETTERS[pick]
            else:
                row["label"], row["reason"] = "invalid", label.split(": ", 1)[1]
            out.append(row)
    return out


if __name__ == "__main__":
    data = rows()
    path = Path(__file__).with_name("vqa_replies.jsonl")
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data), encoding="utf-8")
    print(f"{len(data)} replies, {sum(r['label'] == 'invalid' for r in data)} invalid -> {path}")
