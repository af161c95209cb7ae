"""Pretrain a VLP model on image-report pairs.

    accelerate launch recipes/pretrain.py                      # tiny model, built-in demo data, a few minutes on CPU
    accelerate launch recipes/pretrain.py --config recipes/configs/lovt.yaml --train-data my/manifest.jsonl
    accelerate launch --multi_gpu --num_processes 2 recipes/pretrain.py ...   # several processes (GPUs, or CPU/gloo)

Flags override the YAML config. The final model and processor land in OUTPUT_DIR/final; checkpoints in
OUTPUT_DIR/checkpoints (`--resume` continues from the latest); TensorBoard logs in OUTPUT_DIR/logs.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.logging import get_logger
from accelerate.utils import send_to_device, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from vlp import FeatureCache, create_model_and_processor
from vlp.configuration import HeadInput, normalize_heads
from vlp.factory import load_preset, merge
from vlp.registry import head_class, load_plugins
from vlp.training.collate import SkipCounter, VLPCollator
from vlp.training.config import PretrainConfig
from vlp.training.data import build_train_dataset, model_config_for_data

logger = get_logger("vlp.pretrain")
MODEL_INPUTS = (*(i.value for i in HeadInput), "attention_mask")  # the batch keys VLPModel.forward takes


def parse_args(argv=None) -> tuple[PretrainConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with model/data/train/output_dir sections")
    p.add_argument("--preset", help="model preset name or JSON file (model.preset)")
    p.add_argument("--heads", help="comma-separated heads to enable, e.g. lovt (model.config.heads; settings the "
                                   "config gives a named head are kept)")
    p.add_argument("--plugin", action="append", dest="plugins",
                   help="a module name or .py file to import first: heads of your own, registered with "
                        "@vlp.register_head (model.plugins; repeatable)")
    p.add_argument("--output-dir")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--train-data", help="manifest: JSONL/CSV/Parquet or a saved datasets folder (data.train)")
    p.add_argument("--image-column")
    p.add_argument("--text-column", help="the report column; 'none' trains on images alone (heads that need no report)")
    p.add_argument("--labels-column")
    p.add_argument("--image-root")
    p.add_argument("--strict", action="store_true", default=None, help="stop at the first bad row")
    p.add_argument("--streaming", action="store_true", default=None,
                   help="read the manifest as needed instead of loading it (very large manifests)")
    p.add_argument("--num-workers", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--grad-accum", type=int, help="micro-batches per step, all kept as negatives")
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"])
    p.add_argument("--grad-checkpointing", action="store_true", default=None)
    p.add_argument("--seed", type=int)
    p.add_argument("--log-every", type=int)
    p.add_argument("--save-every", type=int)
    p.add_argument("--cpu-threads", type=int, help="CPU-only runs: threads per process (default: cores / processes)")
    p.add_argument("--resume", nargs="?", const="latest",
                   help="continue from OUTPUT_DIR's latest checkpoint (or the checkpoint folder given)")
    args = p.parse_args(argv)
    config = PretrainConfig.from_yaml(args.config) if args.config else PretrainConfig()
    overrides = {
        ("model", "preset"): args.preset, ("data", "train"): args.train_data,
        ("data", "image_column"): args.image_column, ("data", "text_column"): args.text_column,
        ("data", "labels_column"): args.labels_column, ("data", "image_root"): args.image_root,
        ("data", "strict"): args.strict, ("data", "streaming"): args.streaming,
        ("data", "num_workers"): args.num_workers,
        ("train", "max_steps"): args.max_steps, ("train", "batch_size"): args.batch_size, ("train", "lr"): args.lr,
        ("train", "grad_accum"): args.grad_accum, ("train", "mixed_precision"): args.mixed_precision,
        ("train", "grad_checkpointing"): args.grad_checkpointing, ("train", "seed"): args.seed,
        ("train", "log_every"): args.log_every, ("train", "save_every"): args.save_every,
        ("train", "cpu_threads"): args.cpu_threads,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            setattr(getattr(config, section), key, value)
    if args.text_column is not None and args.text_column.lower() == "none":
        config.data.text_column = None
    if args.output_dir:
        config.output_dir = args.output_dir
    if args.heads is not None:  # these heads, with the settings the config gives them
        settings = normalize_heads(config.model.config.get("heads"))
        config.model.config["heads"] = {h: settings.get(h) for h in args.heads.split(",") if h}
    if args.plugins:
        config.model.plugins = [*config.model.plugins, *args.plugins]
    return config, args


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, embeddings' scales and the logit scale/bias (open_clip's rule)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "norm" in name or "bias" in name or "logit_" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def latest_checkpoint(output_dir: Path) -> Path | None:
    ckpts = sorted((output_dir / "checkpoints").glob("step_*"))
    ckpts = [c for c in ckpts if (c / "trainer_state.json").is_file()]
    return ckpts[-1] if ckpts else None


def save_checkpoint(accelerator: Accelerator, output_dir: Path, state: dict, keep: int) -> None:
    """Write the full training state atomically (a killed run never leaves a half checkpoint) and prune old ones."""
    final = output_dir / "checkpoints" / f"step_{state['step']:07d}"
    tmp = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in sorted((output_dir / "checkpoints").glob("step_???????"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def has_accelerator_device() -> bool:
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def cpu_threads_per_process(local_processes: int) -> int:
    """Physical cores usable by this process (its CPU affinity, when the OS reports one) shared evenly among the
    processes on this machine, at least 1. `accelerate launch` without `--cpu` sets OMP_NUM_THREADS=1, which halves
    the speed of a single CPU process on a 2-core machine; this is the share `accelerate launch --cpu` would give."""
    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        cores = min(cores, len(os.sched_getaffinity(0)))
    return max(1, cores // max(1, local_processes))


def model_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


def exclude_idle_parameters(model, with_text: bool) -> list[str]:
    """Freeze the parameters this configuration never trains (`VLPModel.idle_parameters`): left out of the
    optimizer and of DistributedDataParallel's gradient reduction, which would otherwise wait for them."""
    idle = model.idle_parameters(with_text=with_text)
    named = dict(model.named_parameters())
    for name in idle:
        named[name].requires_grad_(False)
    return idle


def main(argv=None) -> int:
    config, args = parse_args(argv)
    load_plugins(config.model.plugins)
    train = config.train
    output_dir = Path(config.output_dir)
    # the model's configuration (its heads) decides what the run needs, so it is resolved before the Accelerator
    model_values = merge(load_preset(config.model.preset), config.model.config)
    dynamic = any(getattr(head_class(name), "data_dependent_graph", False)
                  for name in normalize_heads(model_values.get("heads")))
    accelerator = Accelerator(
        cpu=not has_accelerator_device(),  # without it, several CPU processes would not form a gloo group
        mixed_precision=train.mixed_precision, log_with="tensorboard", project_dir=str(output_dir / "logs"),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # idle parameters are frozen below; a head whose steps leave parameters without gradient asks DDP to look
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=dynamic)])
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                        stream=sys.stdout)
    set_seed(train.seed)
    if accelerator.device.type == "cpu":
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        torch.set_num_threads(train.cpu_threads or cpu_threads_per_process(local_processes))
        logger.info("CPU training: %d threads per process", torch.get_num_threads(), main_process_only=True)

    with accelerator.main_process_first():
        dataset = build_train_dataset(config.data, strict=config.data.strict, rank=accelerator.process_index,
                                      world_size=accelerator.num_processes)
    streaming = isinstance(dataset, torch.utils.data.IterableDataset)
    model, processor = create_model_and_processor(model_config_for_data(model_values, dataset.label_names))
    if train.grad_checkpointing:
        model.gradient_checkpointing_enable()
    idle = exclude_idle_parameters(model, with_text=config.data.text_column is not None)
    if idle:
        logger.info("%d parameters are idle in this configuration and not trained: %s", len(idle),
                    ", ".join(idle[:8]) + (", ..." if len(idle) > 8 else ""), main_process_only=True)
    collator = VLPCollator(processor, inputs=frozenset(model.batch_inputs()))
    # a streaming dataset deals rows to ranks and workers itself, so its loader is not sharded by Accelerate
    loader = DataLoader(dataset, batch_size=train.batch_size, shuffle=not streaming, drop_last=True,
                        num_workers=config.data.num_workers, collate_fn=collator,
                        persistent_workers=config.data.num_workers > 0,
                        # its own generator: a loader iterator made on --resume must not draw from the global RNG,
                        # or every dropout mask after the resume would differ from the uninterrupted run's
                        generator=torch.Generator().manual_seed(train.seed))
    optimizer = torch.optim.AdamW(param_groups(model, train.weight_decay), lr=train.lr, betas=(0.9, 0.98), eps=1e-6)
    scheduler = get_cosine_schedule_with_warmup(optimizer, train.warmup_steps, train.max_steps)
    if streaming:
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    else:
        model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    unwrapped = accelerator.unwrap_model(model)

    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0}
    if args.resume:
        ckpt = latest_checkpoint(output_dir) if args.resume == "latest" else Path(args.resume)
        if ckpt is None:
            logger.info("--resume: no checkpoint in %s yet; starting from scratch", output_dir / "checkpoints")
        else:
            accelerator.load_state(str(ckpt))
            state = json.loads((ckpt / "trainer_state.json").read_text())
            logger.info("resumed from %s at step %d", ckpt, state["step"])

    accelerator.init_trackers("pretrain", config=_flat_hparams(config))
    logger.info("training %s on %s rows: %d steps of %d x %d x %d processes", config.model.preset,
                "streamed" if streaming else len(dataset), train.max_steps, train.batch_size, train.grad_accum,
                accelerator.num_processes)
    progress = tqdm(total=train.max_steps, initial=state["step"], disable=not accelerator.is_local_main_process,
                    desc="pretrain")
    skips = SkipCounter()
    running: dict[str, list[torch.Tensor]] = {}  # each logged value since the last log (synced when logged)
    micro: list[dict] = []
    while state["step"] < train.max_steps:
        if streaming:
            dataset.set_epoch(state["epoch"])
            batches = (send_to_device(b, accelerator.device)
                       for b in itertools.islice(loader, state["batches_in_epoch"], None))
        else:
            loader.set_epoch(state["epoch"])
            batches = accelerator.skip_first_batches(loader, state["batches_in_epoch"]) \
                if state["batches_in_epoch"] else loader
        for batch in _until_any_rank_ends(accelerator, batches):
            state["batches_in_epoch"] += 1
            for index, path, reason in skips.add(batch["skipped"]):
                logger.warning("skipped row %s (%s): %s", index, path, reason, main_process_only=False)
            if not _all_have_data(accelerator, batch):
                continue
            micro.append(batch)
            if len(micro) < train.grad_accum:
                continue
            losses = train_step(accelerator, model, unwrapped, optimizer, scheduler, micro, train.max_grad_norm)
            micro = []
            state["step"] += 1
            progress.update(1)
            for name, value in losses.items():
                running.setdefault(name, []).append(value)
            if state["step"] % train.log_every == 0 or state["step"] == train.max_steps:
                # means over the steps of this window: shorter than log_every at the end or after a resume
                logs = {f"train/{k}": float(torch.stack(v).float().mean()) for k, v in running.items()}
                logs["train/lr"] = scheduler.get_last_lr()[0]
                logs["train/logit_scale"] = float(unwrapped.scale().detach())
                logs["train/skipped_rows"] = len(skips.seen)
                accelerator.log(logs, step=state["step"])
                progress.set_postfix(loss=f"{logs.get('train/loss', float('nan')):.3f}")
                running = {}
            if state["step"] % train.save_every == 0 and state["step"] < train.max_steps:
                save_checkpoint(accelerator, output_dir, state, train.keep_checkpoints)
            if state["step"] >= train.max_steps:
                break
        else:
            if state["batches_in_epoch"] == 0:
                raise ValueError(f"the training data gave no full batch of {train.batch_size} in an epoch: lower "
                                 "--batch-size or check the manifest (every row may have been skipped)")
            logger.info("epoch %d done: %s", state["epoch"], skips.summary(), main_process_only=False)
            state["epoch"] += 1
            state["batches_in_epoch"] = 0
            skips = SkipCounter()
    progress.close()
    if skips.seen:
        logger.info("partial epoch %d: %s", state["epoch"], skips.summary(), main_process_only=False)

    accelerator.wait_for_everyone()
    final = output_dir / "final"
    if accelerator.is_main_process:
        unwrapped.save_pretrained(final)
        processor.save_pretrained(final)
        logger.info("saved the final model and processor to %s", final)
    accelerator.end_training()
    return 0


def train_step(accelerator, model, unwrapped, optimizer, scheduler, micro: list[dict], max_grad_norm) -> dict:
    """One optimizer step over `len(micro)` micro-batches. With several micro-batches and paired text, the global
    loss of each sees the cached embeddings of all the others as negatives (open_clip's `--accum-freq`); per-sample
    terms are averaged over the micro-batches. Returns the step's unweighted terms, its weighted `loss` and the
    heads' logged values, as detached tensors (no host sync)."""
    k = len(micro)
    weights = unwrapped.config.loss_weights()
    logged: dict[str, torch.Tensor] = {}
    cache = None
    paired = k > 1 and all("input_ids" in b for b in micro)
    if paired:
        with torch.no_grad(), accelerator.autocast():
            images = torch.cat([unwrapped.get_image_features(b["pixel_values"]) for b in micro])
            texts = torch.cat([unwrapped.get_text_features(b["input_ids"], b["attention_mask"], b.get("sentence_ids"))
                               for b in micro])
        starts = [0]
        for b in micro[:-1]:
            starts.append(starts[-1] + b["pixel_values"].shape[0])
    for j, batch in enumerate(micro):
        sync = contextlib.nullcontext() if j == k - 1 else accelerator.no_sync(model)
        if paired:
            cache = FeatureCache(images, texts, starts[j], num_chunks=k)
        with sync, accelerator.autocast():
            out = model(**model_inputs(batch), return_loss=True, feature_cache=cache)
            loss = sum(weights[name] * value * (1.0 if cache is not None and name.startswith("global_") else 1.0 / k)
                       for name, value in out.losses.items())
            accelerator.backward(loss)
        for name, value in {**out.losses, **out.logs}.items():
            logged[name] = logged.get(name, 0.0) + value.detach().float() / k
    logged["loss"] = sum(weights[name] * logged[name] for name in weights if name in logged)
    if max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return logged


def _until_any_rank_ends(accelerator: Accelerator, batches):
    """Yield batches while every process still has one, so that no process waits forever in a collective call
    for one whose data ran out (streamed shards can differ by a batch)."""
    iterator = iter(batches)
    while True:
        batch = next(iterator, None)
        if accelerator.num_processes > 1:
            has = torch.tensor(0.0 if batch is None else 1.0, device=accelerator.device)
            if accelerator.reduce(has, reduction="sum").item() < accelerator.num_processes:
                return
        if batch is None:
            return
        yield batch


def _all_have_data(accelerator: Accelerator, batch: dict) -> bool:
    """False when this process's batch, or any other process's, lost every row (all processes skip it together,
    so that no collective operation waits forever)."""
    has = torch.tensor(1.0 if "pixel_values" in batch else 0.0, device=accelerator.device)
    if accelerator.num_processes > 1:
        has = accelerator.reduce(has, reduction="sum")
        return bool(has.item() == accelerator.num_processes)
    return bool(has.item())


def _flat_hparams(config: PretrainConfig) -> dict:
    flat = {}
    for section, values in config.to_dict().items():
        if isinstance(values, dict):
            for key, value in values.items():
                flat[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
        else:
            flat[section] = values
    return flat


if __name__ == "__main__":
    sys.exit(main())
