# <template-part>
"""Training-script template, part: the data: reading images, the split and the image pipeline.

tlwidgets.core.script joins the parts in order (see its TEMPLATE_PARTS) into one script, dropping
this header; names such as torch, nn, MODEL or CONFIG come from the parts before this one.
"""
# ruff: noqa: F821
# </template-part>
# ----------------------------------------------------------------------------- the data
def load_rgb(path: str) -> Image.Image:
    """RGB with the EXIF orientation applied; transparency is composited on white."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA", "P") or "transparency" in im.info:
            rgba = im.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        return im.convert("RGB")


class ImageList(Dataset):
    def __init__(self, root: str, rows: list, transform: T.Compose) -> None:
        self.items = [(os.path.join(root, rel), int(label)) for rel, label in rows]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[i]
        return self.transform(load_rgb(path)), label


class SeededBatches(Sampler):
    """Every epoch a new permutation from one seeded generator, cut into batches (as tlwidgets draws them)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):  # noqa: ANN204
        return iter([b.tolist() for b in torch.randperm(self.n, generator=self.generator).split(self.batch_size)])

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)


def make_transforms() -> tuple[T.Compose, T.Compose]:
    interp = T.InterpolationMode(TRANSFORMS["interpolation"])
    crop, resize = TRANSFORMS["input_size"], TRANSFORMS["resize_size"]
    tail = [T.ToTensor(), T.Normalize(TRANSFORMS["mean"], TRANSFORMS["std"])]
    resize_tf = T.Resize(resize, interpolation=interp, antialias=True)
    steps: list = [resize_tf]
    if AUGMENT["rotation"]:
        steps.append(T.RandomRotation(float(AUGMENT["rotation"]), interpolation=interp))
    if AUGMENT["random_resized_crop"]:
        steps.append(T.RandomResizedCrop(crop, scale=(0.6, 1.0), interpolation=interp, antialias=True))
    else:
        steps.append(T.CenterCrop(crop))
    if AUGMENT["flip"]:
        steps.append(T.RandomHorizontalFlip())
    if AUGMENT["color_jitter"]:
        s = float(AUGMENT["color_jitter"])
        steps.append(T.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.1, s / 4)))
    return T.Compose([*steps, *tail]), T.Compose([resize_tf, T.CenterCrop(crop), *tail])


def read_split(args: argparse.Namespace) -> tuple[str, list, list]:
    """``(root, train rows, val rows)``; a row is ``[path relative to root, label]``."""
    if args.resplit is not None:
        return resplit(args.data or DATA["root"], args.resplit)
    split_file = Path(args.split)
    if not split_file.is_file():
        raise SystemExit(f"Split file {split_file} not found: pass --split FILE, or --resplit 0.2 to split --data anew.")
    split = json.loads(split_file.read_text(encoding="utf-8"))
    if split["classes"] != CLASSES:
        raise SystemExit(f"{split_file} lists classes {split['classes']}, this script trains {CLASSES}.")
    return args.data or split["root"], split["train"], split["val"]


def resplit(root: str, fraction: float) -> tuple[str, list, list]:
    """Every image under ``root`` (torchvision ImageFolder), ``fraction`` of each class held out, seeded."""
    folder = torchvision.datasets.ImageFolder(root)
    if folder.classes != CLASSES:
        raise SystemExit(f"{root} has class folders {folder.classes}, this script trains {CLASSES}.")
    generator = torch.Generator().manual_seed(CONFIG["seed"])
    train, val = [], []
    for label in range(len(CLASSES)):
        rows = sorted([os.path.relpath(p, root), label] for p, y in folder.samples if y == label)
        n_val = min(max(math.floor(fraction * len(rows) + 0.5), 1), len(rows) - 1) if fraction > 0 and len(rows) > 1 else 0
        order = torch.randperm(len(rows), generator=generator).tolist()
        val += sorted(rows[i] for i in order[:n_val])
        train += sorted(rows[i] for i in order[n_val:])
    return root, train, val


