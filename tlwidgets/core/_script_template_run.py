# <template-part>
"""Training-script template, part: running: devices and processes, the bundle it writes (safetensors + JSON), the training loop and main().

tlwidgets.core.script joins the parts in order (see its TEMPLATE_PARTS) into one script, dropping
this header; names such as torch, nn, MODEL or CONFIG come from the parts before this one.
"""
# ruff: noqa: F821
# </template-part>
# ----------------------------------------------------------------------------- devices and processes
def cpu_has_bf16() -> bool:
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        flags = fh.read()
        return "amx_bf16" in flags or "avx512_bf16" in flags
    return False


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    if precision in ("bf16", "fp16"):
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else None


def setup_processes(requested: str | None) -> tuple[int, int, torch.device]:
    """``(rank, world size, device)``; under torchrun, joins the process group (env:// rendezvous)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if requested:
        device = torch.device(requested)
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    elif torch.backends.mps.is_available() and world == 1:
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return rank, world, device


def all_sum(values: list[float], device: torch.device, world: int) -> list[float]:
    """Sum ``values`` over all processes (every process gets the same result)."""
    t = torch.tensor(values, dtype=torch.float64, device=device if device.type != "mps" else "cpu")
    if world > 1:
        dist.all_reduce(t)
    return t.tolist()


# ----------------------------------------------------------------------------- bundles (safetensors + JSON)
_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """The safetensors format: 8-byte header length, JSON header, raw little-endian tensor bytes."""
    header: dict = {"__metadata__": {"format": BUNDLE_FORMAT, "format_version": str(BUNDLE_VERSION)}}
    blobs, offset = [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for data in blobs:
            fh.write(data)


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    by_name = {v: k for k, v in _DTYPES.items()}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = by_name[info["dtype"]]
        buf = bytearray(raw[8 + n + start:8 + n + end])
        t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"])
    return out


def strict_json(value: object) -> object:
    """JSON data without NaN or infinity (strict JSON has neither): such a float (the loss of a
    diverged run) becomes the string "NaN", "Infinity" or "-Infinity", as tlwidgets reads it."""
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def write_bundle(out: Path, model: nn.Module, config: dict, history: dict, root: str, split: tuple) -> None:
    """What ``tlwidgets.Session.save`` writes: model.safetensors, split.json, tlwidgets.json (last)."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_safetensors(state, out / "model.safetensors")
    weight = next((p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1), None)
    channels_last = weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    train_rows, val_rows = split
    (out / "split.json").write_text(json.dumps({"root": os.path.abspath(root), "classes": CLASSES,
                                                "train": train_rows, "val": val_rows}), encoding="utf-8")
    meta = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "written_by": f"training script {Path(__file__).name} ({GENERATED_BY})",
        "versions": {"tlwidgets": GENERATED_BY.split()[-1], "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "python": platform.python_version()},
        "model": {**MODEL, "memory_format": "channels_last" if channels_last else "contiguous"},
        "head": HEAD, "classes": CLASSES, "transforms": TRANSFORMS, "augment": AUGMENT, "frozen": FROZEN,
        "lr_factors": LR_FACTORS, "config": config, "history": history,
        "data": {**DATA, "root": os.path.abspath(root), "num_train": len(train_rows), "num_val": len(val_rows)},
        "weights": {"file": "model.safetensors", "num_tensors": len(state),
                    "sha256": hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()},
    }
    (out / "tlwidgets.json").write_text(json.dumps(strict_json(meta), indent=1, allow_nan=False), encoding="utf-8")


# ----------------------------------------------------------------------------- training
def train(args: argparse.Namespace) -> dict:
    rank, world, device = setup_processes(args.device)
    config = dict(CONFIG)
    for key, value in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr),
                       ("precision", args.precision), ("num_workers", args.workers),
                       ("max_batches_per_epoch", args.max_batches)):
        if value is not None:
            config[key] = value
    seed = config["seed"]
    model = build_model()
    history = {"batches": [], "epochs": [], "stopped": False, "config": config}
    if args.init_from:
        model.load_state_dict(load_safetensors(Path(args.init_from) / "model.safetensors"))
        previous = json.loads((Path(args.init_from) / "tlwidgets.json").read_text(encoding="utf-8")).get("history")
        if previous:
            history["batches"], history["epochs"] = previous["batches"], previous["epochs"]
    model.to(device)
    channels_last = config["channels_last"]
    if channels_last is None:  # oneDNN and tensor cores prefer channels-last convolutions
        channels_last = device.type in ("cpu", "cuda") and any(isinstance(m, nn.Conv2d) for m in model.modules())
    if channels_last:
        model.to(memory_format=torch.channels_last)
    amp = autocast_dtype(device, config["precision"])

    root, train_rows, val_rows = read_split(args)
    train_tf, eval_tf = make_transforms()
    train_ds, val_ds = ImageList(root, train_rows, train_tf), ImageList(root, val_rows, eval_tf)
    if len(train_ds) == 0:
        raise SystemExit("The training split is empty.")
    torch.manual_seed(seed)
    per_process = max(1, config["batch_size"] // world)  # the global batch size stays the notebook's
    workers = config["num_workers"]
    if workers is None:  # on a CPU the model needs every core; a GPU wants images prepared in parallel
        workers = 0 if device.type == "cpu" else min(4, os.cpu_count() or 1)
    loader_kw = {"batch_size": per_process, "num_workers": workers, "pin_memory": device.type == "cuda"}
    if world > 1:  # each process reads its own share of a seeded permutation, new every epoch
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        # a last batch of one image would break BatchNorm in training mode: leave it out
        train_loader = DataLoader(train_ds, sampler=sampler, drop_last=len(sampler) % per_process == 1, **loader_kw)
    else:  # exactly the batches the notebook drew
        sampler = None
        train_loader = DataLoader(train_ds, batch_sampler=SeededBatches(len(train_ds), per_process, seed),
                                  **{k: v for k, v in loader_kw.items() if k != "batch_size"})
    val_loader = DataLoader(Subset(val_ds, range(rank, len(val_ds), world)), shuffle=False, **loader_kw)
    steps = len(train_loader)
    if config["max_batches_per_epoch"]:
        steps = min(steps, config["max_batches_per_epoch"])

    groups = param_groups(model, config["lr"])
    if not groups:
        raise SystemExit("Every layer is frozen: nothing to train.")
    if config["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config["lr"], momentum=config["momentum"], weight_decay=config["weight_decay"])
    else:
        cls = torch.optim.Adam if config["optimizer"] == "adam" else torch.optim.AdamW
        optimizer = cls(groups, lr=config["lr"], weight_decay=config["weight_decay"])
    total = max(config["epochs"] * steps, 1)
    scheduler = None
    if config["schedule"] == "onecycle":
        kw = {}
        if config["optimizer"] == "sgd":
            kw = {"cycle_momentum": config["momentum"] > 0, "max_momentum": config["momentum"],
                  "base_momentum": min(0.85, config["momentum"])}
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups], total_steps=total, **kw)
    elif config["schedule"] == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    elif config["schedule"] == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config["step_size"], gamma=config["gamma"])
    criterion = nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"])
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and amp == torch.float16 else None
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()

    def inputs(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(device, non_blocking=True)
        return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y.to(device)

    epoch0 = history["epochs"][-1]["epoch"] if history["epochs"] else 0
    step = history["batches"][-1]["step"] if history["batches"] else 0
    if rank == 0:
        print(f"{len(train_ds)} training and {len(val_ds)} validation images, {world} process(es) on {device.type}, "
              f"{per_process} images per process and step, {steps} steps per epoch, autocast {amp}", flush=True)
    for epoch in range(1, config["epochs"] + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        frozen_batchnorm_to_eval(model)
        start = tick = time.perf_counter()
        sums = [0.0, 0.0, 0.0]  # loss * n, correct, n (all processes)
        lr = optimizer.param_groups[0]["lr"]
        for batch, (x, y) in enumerate(itertools.islice(train_loader, steps), 1):
            x, y = inputs(x, y)
            lr = optimizer.param_groups[0]["lr"]
            with autocast():
                logits = logits_of(net(x)).float()
            loss = criterion(logits, y)
            if not math.isfinite(loss.item()):
                raise SystemExit(f"loss became {loss.item()} at epoch {epoch} batch {batch}: lower the learning rate.")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            if scheduler is not None and config["schedule"] != "step":
                scheduler.step()
            step += 1
            correct = (logits.detach().argmax(1) == y).sum().item()
            b = all_sum([loss.item() * len(y), correct, len(y)], device, world)
            sums = [s + v for s, v in zip(sums, b)]
            now = time.perf_counter()
            history["batches"].append({"epoch": epoch0 + epoch, "batch": batch, "step": step, "loss": b[0] / b[2],
                                       "acc": b[1] / b[2], "lr": lr, "images_per_s": b[2] / max(now - tick, 1e-9)})
            tick = time.perf_counter()
        model.eval()
        v = [0.0, 0.0, 0.0]
        with torch.no_grad():
            for x, y in val_loader:
                x, y = inputs(x, y)
                with autocast():
                    logits = logits_of(model(x)).float()
                loss = nn.functional.cross_entropy(logits, y, label_smoothing=config["label_smoothing"], reduction="sum")
                v = [v[0] + loss.item(), v[1] + (logits.argmax(1) == y).sum().item(), v[2] + len(y)]
        v = all_sum(v, device, world)
        if config["schedule"] == "step":
            scheduler.step()
        logs = {"epoch": epoch0 + epoch, "loss": sums[0] / max(sums[2], 1), "acc": sums[1] / max(sums[2], 1),
                "val_loss": v[0] / v[2] if v[2] else float("nan"), "val_acc": v[1] / v[2] if v[2] else float("nan"),
                "lr": lr, "time_s": time.perf_counter() - start}
        history["epochs"].append(logs)
        if rank == 0:
            print(f"epoch {logs['epoch']}: loss {logs['loss']:.4f} acc {logs['acc']:.3f} "
                  f"val_loss {logs['val_loss']:.4f} val_acc {logs['val_acc']:.3f} ({logs['time_s']:.1f} s)", flush=True)

    final = {"rank": rank, "world_size": world, **history["epochs"][-1]}
    print("final metrics " + json.dumps(final), flush=True)
    if args.metrics_dir:
        Path(args.metrics_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.metrics_dir) / f"rank{rank}.json").write_text(json.dumps(final), encoding="utf-8")
    if rank == 0:
        write_bundle(Path(args.out), model, config, history, root, (train_rows, val_rows))
        out = str(Path(args.out).resolve())
        print(f"Wrote {out}: open it with tlwidgets.Session.load({out!r})", flush=True)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return final


def main(argv: list[str] | None = None) -> dict:
    return train(parse_args(argv))


if __name__ == "__main__":
    train(ARGS)
