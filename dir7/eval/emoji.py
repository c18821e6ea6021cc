"""EmojiEval: does a model draw the emoji a prompt names, in the style and skin tone it names?

A small classifier (``EmojiJudge``), trained on the real images of a built emoji set (every style,
with augmentation), predicts an image's base concept, style and skin tone; a model's images for
a prompt file are scored by concept accuracy (top-1, top-5), style accuracy and skin-tone
accuracy, and by the Fréchet distance between the judge's features of the model's images and of
the real images (torchmetrics' FID with the judge as its feature extractor; the real images'
feature statistics ship with the judge, so scoring needs no data set).

    python -m dir7.eval emoji-judge --data data/emoji --out checkpoints/emoji-judge   # train the judge
    python -m dir7.eval emoji-prompts --data data/emoji                              # the prompt files
    python -m dir7.eval emoji [--checkpoint DIR] [--prompts FILE] --out report.json  # score a model

The judge's own error is measured on real images it never trained on (a fixed tenth of them,
by a hash of the image's code and style) and stored in its ``judge.json``, with the FD between
those held-out real images and the training ones: the floor a perfect model would reach.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from ..checkpoint import load_state_dict, save_state_dict
from ..data.emoji import STYLES, Shards, caption, load_records

JUDGE_DIR = Path(__file__).resolve().parent.parent.parent / "checkpoints" / "emoji-judge"
PROMPTS_SEEN = Path(__file__).with_name("emoji_prompts_seen.jsonl")
PROMPTS_HELDOUT = Path(__file__).with_name("emoji_prompts_heldout.jsonl")
PROMPTS_SHOWCASE = Path(__file__).with_name("emoji_prompts_showcase.jsonl")
# everyday things a visitor of the demo types: the candidates the model card's examples are chosen
# from by EmojiEval (python -m dir7.eval examples), one style each in turn
SHOWCASE_LABELS = (
    "cat face", "dog face", "pizza", "rocket", "red apple", "thumbs up", "sun", "grinning face", "red heart",
    "hot beverage", "octopus", "rainbow", "birthday cake", "evergreen tree", "sunflower", "fox", "panda",
    "bicycle", "taxi", "ghost", "robot", "unicorn", "snowman", "crown", "smiling face with sunglasses",
    "strawberry", "hamburger", "banana", "watermelon", "soccer ball", "guitar", "house", "airplane", "umbrella",
    "fire", "snowflake", "butterfly", "penguin", "frog", "turtle", "tulip", "cactus", "light bulb", "books",
    "camera", "alarm clock", "key", "wrapped gift", "balloon", "crab", "owl", "ice cream", "doughnut", "carrot",
    "mushroom", "four leaf clover", "hot dog", "cookie", "tiger face", "rabbit face", "elephant", "whale",
    "full moon", "cloud", "musical note", "basketball", "trophy", "t-shirt", "glasses", "bell", "hammer",
    "pencil", "teacher", "police officer", "woman astronaut", "flag: Japan", "flag: Brazil", "waving hand",
    "clapping hands", "face with tears of joy", "thinking face", "star-struck",
)
TONES = ("none", "light", "medium-light", "medium", "medium-dark", "dark", "mixed")
EVAL_TEMPLATE = "{a} in {style} style"  # a training template: held-out pairs are new pairs, not new words
JUDGE_TEST_EVERY = 10                    # one real image in ten is kept from the judge's training

Generate = Callable[[list[str], int], list[Image.Image]]


def tone_class(skin_tone: str | None) -> int:
    if not skin_tone:
        return 0
    return TONES.index(skin_tone) if "/" not in skin_tone else TONES.index("mixed")


def judge_split(record: dict, every: int = JUDGE_TEST_EVERY) -> str:
    h = int(hashlib.sha1(f"{record['code']}|{record['style']}".encode()).hexdigest(), 16)
    return "test" if h % every == 0 else "train"


class EmojiJudge(nn.Module):
    """64x64 RGB in [-1, 1] -> features [B, F] and logits for concept, style and skin tone."""

    def __init__(self, concepts: list[str], styles: list[str], width: int = 32, features: int = 256):
        super().__init__()
        self.concepts, self.styles = list(concepts), list(styles)
        self.width, self.n_features = width, features
        # small enough to train on two CPU cores in minutes: about 70M multiply-adds per image
        layers = [nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.SiLU()]  # 64 -> 32
        c_in = width
        for c in (2 * width, 4 * width, 8 * width):  # 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.SiLU(), nn.MaxPool2d(2)]
            c_in = c
        layers += [nn.Conv2d(c_in, c_in, 3, padding=1), nn.BatchNorm2d(c_in), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(c_in * 16, features), nn.SiLU())
        self.concept_head = nn.Linear(features, len(concepts))
        self.style_head = nn.Linear(features, len(styles))
        self.tone_head = nn.Linear(features, len(TONES))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {"features": f, "concept": self.concept_head(f), "style": self.style_head(f), "tone": self.tone_head(f)}

    def save(self, directory: Path, info: dict, real_stats: dict[str, torch.Tensor]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_state_dict(self.state_dict(), directory, prefix="judge")  # shards under the Hub's 10 MB
        save_file({k: v.contiguous() for k, v in real_stats.items()}, str(directory / "real_features.safetensors"))
        (directory / "judge.json").write_text(json.dumps(
            {"concepts": self.concepts, "styles": self.styles, "width": self.width, "features": self.n_features,
             **info}, indent=1))

    @classmethod
    def load(cls, directory: str | Path | None = None) -> tuple[EmojiJudge, dict, dict[str, torch.Tensor]]:
        directory = Path(directory) if directory else JUDGE_DIR
        if not (directory / "judge.json").is_file():
            raise FileNotFoundError(f"no emoji judge in {directory} (train one: python -m dir7.eval emoji-judge)")
        info = json.loads((directory / "judge.json").read_text())
        judge = cls(info["concepts"], info["styles"], info["width"], info["features"])
        judge.load_state_dict(load_state_dict(directory, prefix="judge"))
        return judge.eval(), info, load_file(str(directory / "real_features.safetensors"))


class _Features(nn.Module):
    """The judge as torchmetrics' feature extractor: float images in [0, 1] -> features."""

    def __init__(self, judge: EmojiJudge):
        super().__init__()
        self.judge = judge
        self.num_features = judge.n_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.judge.features(x * 2 - 1).double()


def fid_metric(judge: EmojiJudge, real_stats: dict[str, torch.Tensor] | None = None):
    """torchmetrics' FID with the judge's features; ``real_stats`` (stored sums, from
    ``feature_stats``) stand for the real images."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as e:
        raise RuntimeError("EmojiEval's FD needs torchmetrics: pip install torchmetrics") from e
    metric = FrechetInceptionDistance(feature=_Features(judge), normalize=True, reset_real_features=False)
    if real_stats is not None:
        metric.real_features_sum = real_stats["sum"].double()
        metric.real_features_cov_sum = real_stats["cov_sum"].double()
        metric.real_features_num_samples = real_stats["n"].long()
    return metric


# ---------------------------------------------------------------------------------------
# Training the judge
# ---------------------------------------------------------------------------------------


def _real_images(root: Path, records: list[dict]) -> np.ndarray:
    shards = Shards(root)
    return np.stack([shards[r] for r in records])


def _to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(images)
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Shifts of up to 4 pixels, a random scale of 0.85-1.1, blur and noise: what a generator's
    images differ from the real ones by. No flips or colour changes: they carry style and tone."""
    B = x.shape[0]
    scale = 0.85 + 0.25 * torch.rand(B, generator=g)
    shift = (torch.rand(B, 2, generator=g) - 0.5) * (8 / 32)
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    bg = torch.tensor([250 / 127.5 - 1] * 3).view(1, 3, 1, 1)
    x = F.grid_sample(x - bg, grid, align_corners=False, padding_mode="zeros") + bg
    blur = torch.rand(B, generator=g) < 0.3
    if blur.any():
        x[blur] = F.avg_pool2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return x + 0.05 * torch.rand(B, 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)


def train_judge(data: str | Path, out: str | Path, epochs: int = 10, batch_size: int = 128, lr: float = 2e-3,
                seed: int = 0, test_every: int = JUDGE_TEST_EVERY, log=print) -> dict:
    """Train the judge on a built set's real images (one in ten kept out), store it with its own
    accuracy on the kept-out images and the real-vs-real FD floor; returns that info."""
    root = Path(data)
    records = load_records(root)
    concepts = sorted({r["concept"] for r in records})
    styles = [s for s in STYLES if any(r["style"] == s for r in records)]
    images = _real_images(root, records)
    labels = torch.tensor([[concepts.index(r["concept"]), styles.index(r["style"]), tone_class(r["skin_tone"])]
                           for r in records])
    test = torch.tensor([judge_split(r, test_every) == "test" for r in records])
    train_idx, test_idx = torch.nonzero(~test).squeeze(1), torch.nonzero(test).squeeze(1)
    if len(test_idx) < 2 or len(train_idx) < 2:
        raise ValueError(f"{root}: {len(records)} images are too few to train the judge and measure it")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    judge = EmojiJudge(concepts, styles)
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * math.ceil(len(train_idx) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        judge.train()
        order = train_idx[torch.randperm(len(train_idx), generator=g)]
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x = augment(_to_input(images[idx.numpy()]), g)
            y = labels[idx]
            pred = judge(x)
            loss = (F.cross_entropy(pred["concept"], y[:, 0], label_smoothing=0.1)
                    + F.cross_entropy(pred["style"], y[:, 1]) + F.cross_entropy(pred["tone"], y[:, 2]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log(f"epoch {epoch + 1}/{epochs}: loss {total / len(order):.3f} ({time.perf_counter() - t0:.0f} s)")
    judge.eval()
    accuracy = score_real(judge, images[test_idx.numpy()], labels[test_idx])
    # the floor, the kept-out reals against the rest, and the statistics of all real images for FD:
    # the states are sums, so each image's features are computed once
    train_stats = feature_stats(judge, images[train_idx.numpy()])
    floor = fid_metric(judge, train_stats)
    for start in range(0, len(test_idx), 256):
        floor.update(_to_input(images[test_idx[start:start + 256].numpy()]).add(1).div(2), real=False)
    stats = {"sum": train_stats["sum"] + floor.fake_features_sum,
             "cov_sum": train_stats["cov_sum"] + floor.fake_features_cov_sum,
             "n": train_stats["n"] + torch.as_tensor(floor.fake_features_num_samples)}
    info = {"trained_on": str(root), "images": len(records), "test_images": len(test_idx), "epochs": epochs,
            "seconds": round(time.perf_counter() - t0, 1), "test_accuracy": accuracy,
            "fd_real_vs_real": float(floor.compute()),
            "command": f"python -m dir7.eval emoji-judge --data {root} --out {out} --epochs {epochs}"}
    judge.save(Path(out), info, stats)
    log(json.dumps({k: info[k] for k in ("test_accuracy", "fd_real_vs_real")}))
    return info


@torch.no_grad()
def feature_stats(judge: EmojiJudge, images: np.ndarray) -> dict[str, torch.Tensor]:
    """torchmetrics' FID states for these images as the real ones: sum, sum of outer products, count."""
    metric = fid_metric(judge)
    for start in range(0, len(images), 256):
        metric.update(_to_input(images[start:start + 256]).add(1).div(2), real=True)
    return {"sum": metric.real_features_sum.clone(), "cov_sum": metric.real_features_cov_sum.clone(),
            "n": torch.as_tensor(metric.real_features_num_samples).clone()}


@torch.no_grad()
def predict(judge: EmojiJudge, x: torch.Tensor) -> dict[str, torch.Tensor]:
    outs = [judge(x[i:i + 256]) for i in range(0, len(x), 256)]
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}


def score_real(judge: EmojiJudge, images: np.ndarray, labels: torch.Tensor) -> dict[str, float]:
    out = predict(judge, _to_input(images))
    top5 = out["concept"].topk(min(5, out["concept"].shape[1]), dim=1).indices
    return {"concept_top1": (out["concept"].argmax(1) == labels[:, 0]).float().mean().item(),
            "concept_top5": (top5 == labels[:, :1]).any(1).float().mean().item(),
            "style_accuracy": (out["style"].argmax(1) == labels[:, 1]).float().mean().item(),
            "skin_tone_accuracy": (out["tone"].argmax(1) == labels[:, 2]).float().mean().item()}


# ---------------------------------------------------------------------------------------
# Prompts and scoring a model
# ---------------------------------------------------------------------------------------


def make_prompts(data: str | Path, seen: int = 400, seed: int = 0) -> tuple[list[dict], list[dict], list[dict]]:
    """Prompt lists from a built set: ``seen`` (concept, style, tone) triples of the training split
    (deterministic sample), every image of the held-out pairs, and the showcase: each of
    ``SHOWCASE_LABELS`` the set has, without a skin tone, in a training style chosen in turn."""
    records = load_records(data)

    def prompt(r):
        p = {"prompt": caption(r, EVAL_TEMPLATE), "concept": r["concept"], "style": r["style"]}
        if r["skin_tone"]:
            p["skin_tone"] = r["skin_tone"]
        return p

    train = [r for r in records if r["split"] == "train"]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(train), size=min(seen, len(train)), replace=False))
    by_label = {}
    for r in train:
        if not r["skin_tone"]:
            by_label.setdefault(r["label"], {})[r["style"]] = r
    showcase, order = [], sorted(STYLES)
    for label in SHOWCASE_LABELS:
        styles = by_label.get(label, {})
        if styles:  # the style in turn, else the next one the set draws it in
            turn = len(showcase) % len(order)
            style = min(styles, key=lambda s: (order.index(s) - turn) % len(order))
            showcase.append(prompt(styles[style]))
    return ([prompt(train[i]) for i in chosen], [prompt(r) for r in records if r["split"] == "heldout"],
            showcase)


def load_prompts(path: str | Path | None = None) -> list[dict]:
    path = Path(path) if path else PROMPTS_SEEN
    if not path.is_file():
        raise FileNotFoundError(f"no prompt file {path}")
    prompts = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        p = json.loads(line)
        missing = {"prompt", "concept", "style"} - set(p)
        if missing:
            raise ValueError(f"{path}:{n}: missing {sorted(missing)}")
        prompts.append(p)
    return prompts


def evaluate(prompts: list[dict], generate: Generate, judge: EmojiJudge, real_stats: dict[str, torch.Tensor],
             images_per_prompt: int = 4, seed: int = 0, batch_size: int = 64) -> dict:
    """Generate ``images_per_prompt`` images per prompt and score them; the report's top level holds
    concept_top1, concept_top5, style_accuracy, skin_tone_accuracy (over prompts that name a tone)
    and fd."""
    unknown = sorted({p["concept"] for p in prompts} - set(judge.concepts))
    if unknown:
        raise ValueError(f"concepts the judge does not know: {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    bad_styles = sorted({p["style"] for p in prompts} - set(judge.styles))
    if bad_styles:
        raise ValueError(f"styles the judge does not know: {bad_styles}; it knows {judge.styles}")
    jobs = [(p, k) for p in prompts for k in range(images_per_prompt)]
    if len(jobs) < 2:
        raise ValueError("the Fréchet distance needs at least 2 images: more prompts or --images-per-prompt")
    metric = fid_metric(judge, real_stats)
    rows = []
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start:start + batch_size]
        images = generate([p["prompt"] for p, _ in batch], seed + start)
        x = _to_input(np.stack([np.asarray(im.convert("RGB").resize((64, 64))) for im in images]))
        out = predict(judge, x)
        metric.update(x.add(1).div(2), real=False)
        for (p, _), c, s, t in zip(batch, out["concept"], out["style"], out["tone"]):
            target = judge.concepts.index(p["concept"])
            rows.append({"prompt": p["prompt"], "concept": p["concept"], "style": p["style"],
                         "skin_tone": p.get("skin_tone"), "predicted_concept": judge.concepts[int(c.argmax())],
                         "concept_top1": int(c.argmax()) == target,
                         "concept_top5": target in c.topk(min(5, len(c))).indices.tolist(),
                         "predicted_style": judge.styles[int(s.argmax())],
                         "style_correct": judge.styles[int(s.argmax())] == p["style"],
                         "predicted_skin_tone": TONES[int(t.argmax())],
                         "skin_tone_correct": int(t.argmax()) == tone_class(p.get("skin_tone"))})
    toned = [r for r in rows if r["skin_tone"]]
    return {
        "concept_top1": float(np.mean([r["concept_top1"] for r in rows])),
        "concept_top5": float(np.mean([r["concept_top5"] for r in rows])),
        "style_accuracy": float(np.mean([r["style_correct"] for r in rows])),
        "skin_tone_accuracy": float(np.mean([r["skin_tone_correct"] for r in toned])) if toned else None,
        "fd": float(metric.compute()),
        "images": len(rows), "prompts": len(prompts),
        "settings": {"images_per_prompt": images_per_prompt, "seed": seed},
        "details": rows,
    }


def real_generate(data: str | Path) -> Generate:
    """A "perfect model" for the self-check: the real image of each prompt's (concept, style, tone)."""
    records = load_records(data)
    shards = Shards(data)
    by_prompt = {}
    for r in records:
        by_prompt.setdefault(caption(r, EVAL_TEMPLATE), r)

    def generate(texts: list[str], seed: int) -> list[Image.Image]:
        return [Image.fromarray(shards[by_prompt[t]]) for t in texts]

    return generate
